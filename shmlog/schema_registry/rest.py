"""Confluent Schema Registry's REST API over a SchemaRegistryClient (`shmlog schemas serve`).

Any Schema Registry client - confluent_kafka.schema_registry.SchemaRegistryClient and its
Avro/JSON/Protobuf serializers, Java's KafkaAvroSerializer, curl - talks to the registry
kept in a shmlog broker's `_schemas` topic through this server. The state is the client's:
every request catches up with the topic first, and writes go through the client's flock,
so the server, other servers and in-process clients of the same data dir see one registry.

Endpoints (paths, bodies, status and error codes as Confluent's server):

    GET    /subjects                          ?deleted ?deletedOnly ?subjectPrefix
    GET    /subjects/{s}/versions             ?deleted ?deletedOnly
    POST   /subjects/{s}/versions             register {"schema","schemaType","references"} -> {"id"}
    POST   /subjects/{s}                      look up a schema under s
    DELETE /subjects/{s}                      ?permanent
    GET    /subjects/{s}/versions/{v}         v a number, latest or -1; ?deleted
    GET    /subjects/{s}/versions/{v}/schema  the schema text alone
    GET    /subjects/{s}/versions/{v}/referencedby
    DELETE /subjects/{s}/versions/{v}         ?permanent
    GET    /schemas/ids/{id}                  (+ /schema, /subjects, /versions)
    GET    /schemas/types
    POST   /compatibility/subjects/{s}/versions/{v}   ?verbose; and .../versions (every version the level checks)
    GET|PUT /config, GET|PUT|DELETE /config/{s}        ?defaultToGlobal
    GET|PUT /mode, GET|PUT|DELETE /mode/{s}            READWRITE only
    GET    /contexts, GET /

Responses are application/vnd.schemaregistry.v1+json; errors are {"error_code", "message"}
with Confluent's codes (40401 subject not found, 40402 version not found, 40403 schema not
found, 409 incompatible, 42201 invalid schema, 42203 invalid compatibility level, ...).

Access (docs/security.md): the server admits only the users the broker's policy admits to its
control channel (shmlog.security.Policy: the owner, shmlog.allowed.users, members of
shmlog.allowed.groups and shmlog.shared.group). TCP has no SO_PEERCRED, so the user of each
accepted connection is found in the kernel's table of TCP sockets (/proc/net/tcp, tcp6: the
peer's socket and its uid; shmlog.security.tcp_peer_uid). A refused user, or a peer that cannot
be identified, gets 403 with error code 40301 on every request of the connection and never
reaches the registry; the server logs one line a second at most about refusals. A peer on
another host cannot be identified, so the server binds only to loopback unless told
`allow_remote=True` (`shmlog schemas serve --allow-remote-unauthenticated`) or given basic-auth
users: then processes of this host are still held to the policy, and peers on other hosts are
admitted without authentication, or by their password alone. With `basic_auth`
(`--basic-auth-file`: `user:sha256hex` lines; confluent's clients send `basic.auth.user.info`)
every request needs those credentials too (401 without); the peer check comes first. Requests
whose Host or Origin header names another host are refused (403) on a loopback server, so a
web page cannot reach it through DNS rebinding or a cross-site form.
"""
import base64
import hashlib
import hmac
import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from shmlog import security
from shmlog.errors import KafkaException, reason_of
from shmlog.schema_registry import (
    COMPATIBILITY_LEVELS,
    DEFAULT_COMPATIBILITY,
    SCHEMA_TYPES,
    Schema,
    SchemaReference,
    SchemaRegistryError,
)

__all__ = ["RegistryServer", "RemoteBindRefused", "CONTENT_TYPE", "is_loopback_bind", "load_basic_auth"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY = 16 * 1024 * 1024
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class RemoteBindRefused(ValueError):
    """A bind to an address other than loopback without allow_remote=True or basic_auth."""


class _HttpError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _not_found():
    return _HttpError(404, 404, "HTTP 404 Not Found")


def _flag(query, name):
    return query.get(name, ["false"])[-1].strip().lower() == "true"


def _is_loopback_host(host):
    host = host.strip()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_bind(host):
    """Whether host (an address or a name; to listen on, or a peer's) is loopback only."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in _LOOPBACK_NAMES
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def remote_bind_refusal(host):
    return (f"refusing to listen on {host}, not a loopback address: the server cannot tell which user a peer on "
            f"another host is, so anyone who reaches the port could read and change the registry; listen on "
            f"127.0.0.1 (the default), require passwords with --basic-auth-file, or accept that with "
            f"--allow-remote-unauthenticated; {security.DOCS}")


def load_basic_auth(path):
    """{user: sha256 hex of the password} from a file of `user:sha256hex` lines (blank lines and
    lines starting with # are skipped). ValueError naming the line for anything else."""
    users = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, digest = line.rpartition(":")
            digest = digest.strip().lower()
            if not sep or not user or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"{path} line {number}: expected USER:SHA256 (the password's SHA-256 in 64 hex "
                                 f"digits, as `printf %s PASSWORD | sha256sum` prints)")
            if user in users:
                raise ValueError(f"{path} line {number}: user {user!r} appears twice")
            users[user] = digest
    if not users:
        raise ValueError(f"{path} names no user (expected USER:SHA256 lines)")
    return users


def _basic_auth_ok(users, header):
    """Whether an Authorization header carries the user and password of one of users."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    expected = users.get(user) if sep else None
    offered = hashlib.sha256(password.encode("utf-8")).hexdigest()
    # Compared in constant time even for an unknown user, so timing tells nothing about the names.
    return hmac.compare_digest(offered, expected or "0" * 64) and expected is not None


def _schema_fields(schema):
    out = {"schema": schema.schema_str}
    if schema.schema_type != "AVRO":
        out["schemaType"] = schema.schema_type
    if schema.references:
        out["references"] = [r.to_dict() for r in schema.references]
    return out


def _schema_from_body(body):
    if not isinstance(body, dict):
        raise _HttpError(422, 422, "Unprocessable entity: the body must be a JSON object")
    text = body.get("schema")
    if not isinstance(text, str) or not text.strip():
        raise _HttpError(422, 42201, "Invalid schema: empty or missing \"schema\"")
    schema_type = (body.get("schemaType") or "AVRO").upper()
    if schema_type not in SCHEMA_TYPES:
        raise _HttpError(422, 42201, f"Invalid schema type {schema_type!r}: this registry stores "
                         f"{', '.join(SCHEMA_TYPES)} schemas")
    for unsupported in ("metadata", "ruleSet"):
        if body.get(unsupported):
            raise _HttpError(422, 42201, f"Invalid schema: {unsupported} (data contracts) is not supported by "
                             f"this registry")
    refs = []
    for r in body.get("references") or ():
        try:
            refs.append(SchemaReference(r["name"], r["subject"], r["version"]))
        except (KeyError, TypeError, ValueError):
            raise _HttpError(422, 42201, f"Invalid schema reference {r!r}: needs name, subject and "
                             f"version") from None
    return Schema(text, schema_type, refs)


class _Api:
    """The endpoints, over one SchemaRegistryClient (its own locks make it thread-safe)."""

    def __init__(self, client):
        self.sr = client

    # ---------------------------------------------------------------- helpers over the client's state

    def _caught_up(self):
        self.sr._catch_up()

    def _all_versions(self, subject):
        return sorted(self.sr._versions.get(subject, {}))

    def _deleted_versions(self, subject):
        return sorted(v for v, (_, deleted) in self.sr._versions.get(subject, {}).items() if deleted)

    def _version_body(self, subject, version):
        reg = self.sr._registered(subject, version)
        return {"subject": subject, "version": version, "id": reg.schema_id, **_schema_fields(reg.schema)}

    # ---------------------------------------------------------------- routing

    def handle(self, method, segments, query, body):
        head = segments[0] if segments else ""
        rest = segments[1:]
        if head == "" and not rest:
            return self._only(method, "GET", lambda: {})
        if head == "subjects":
            return self._subjects(method, rest, query, body)
        if head == "schemas":
            return self._schemas(method, rest, query)
        if head == "compatibility" and len(rest) >= 3 and rest[0] == "subjects" and rest[2] == "versions":
            if len(rest) == 3:
                return self._only(method, "POST", lambda: self._compatibility(rest[1], None, query, body))
            if len(rest) == 4:
                return self._only(method, "POST", lambda: self._compatibility(rest[1], rest[3], query, body))
        if head == "config" and len(rest) <= 1:
            return self._config(method, rest[0] if rest else None, query, body)
        if head == "mode" and len(rest) <= 1:
            return self._mode(method, rest[0] if rest else None, body)
        if head == "contexts" and not rest:
            return self._only(method, "GET", lambda: ["."])
        raise _not_found()

    @staticmethod
    def _only(method, allowed, action):
        if method != allowed:
            raise _HttpError(405, 405, "HTTP 405 Method Not Allowed")
        return action()

    # ---------------------------------------------------------------- /subjects

    def _subjects(self, method, rest, query, body):
        sr = self.sr
        if not rest:
            def list_subjects():
                with sr._lock:
                    self._caught_up()
                    prefix = query.get("subjectPrefix", [""])[-1]
                    if _flag(query, "deletedOnly") or _flag(query, "deleted_only"):
                        names = [s for s in sr._versions if self._deleted_versions(s)]
                    elif _flag(query, "deleted"):
                        names = [s for s in sr._versions if sr._versions[s]]
                    else:
                        names = [s for s in sr._versions if sr._live(s)]
                    return sorted(s for s in names if s.startswith(prefix))
            return self._only(method, "GET", list_subjects)
        subject = rest[0]
        if len(rest) == 1:
            if method == "POST":
                schema = _schema_from_body(body)
                with sr._lock:
                    reg = sr.lookup_schema(subject, schema)
                    return self._version_body(subject, reg.version)
            if method == "DELETE":
                return sr.delete_subject(subject, permanent=_flag(query, "permanent"))
            raise _HttpError(405, 405, "HTTP 405 Method Not Allowed")
        if rest[1] != "versions":
            raise _not_found()
        if len(rest) == 2:
            if method == "GET":
                with sr._lock:
                    self._caught_up()
                    if _flag(query, "deletedOnly") or _flag(query, "deleted_only"):
                        versions = self._deleted_versions(subject)
                    elif _flag(query, "deleted"):
                        versions = self._all_versions(subject)
                    else:
                        versions = sr._live(subject)
                    if not versions:
                        raise SchemaRegistryError(404, 40401, f"Subject '{subject}' not found.")
                    return versions
            if method == "POST":
                return {"id": sr.register_schema(subject, _schema_from_body(body))}
            raise _HttpError(405, 405, "HTTP 405 Method Not Allowed")
        version = rest[2]
        if len(rest) == 3:
            if method == "GET":
                with sr._lock:
                    self._caught_up()
                    v = sr._resolve_version(subject, version, include_deleted=_flag(query, "deleted"))
                    return self._version_body(subject, v)
            if method == "DELETE":
                return sr.delete_version(subject, version, permanent=_flag(query, "permanent"))
            raise _HttpError(405, 405, "HTTP 405 Method Not Allowed")
        if len(rest) == 4 and rest[3] == "schema":
            def raw():
                with sr._lock:
                    self._caught_up()
                    v = sr._resolve_version(subject, version, include_deleted=_flag(query, "deleted"))
                    return _Raw(sr._registered(subject, v).schema.schema_str)
            return self._only(method, "GET", raw)
        if len(rest) == 4 and rest[3] == "referencedby":
            def referenced_by():
                with sr._lock:
                    self._caught_up()
                    v = sr._resolve_version(subject, version)
                    ids = set()
                    for versions in sr._versions.values():
                        for schema_id, deleted in versions.values():
                            refs = sr._schemas[schema_id].references
                            if not deleted and any(r.subject == subject and r.version == v for r in refs):
                                ids.add(schema_id)
                    return sorted(ids)
            return self._only(method, "GET", referenced_by)
        raise _not_found()

    # ---------------------------------------------------------------- /schemas

    def _schemas(self, method, rest, query):
        sr = self.sr
        if rest == ["types"]:
            return self._only(method, "GET", lambda: sorted(SCHEMA_TYPES))
        if len(rest) < 2 or rest[0] != "ids" or len(rest) > 3:
            raise _not_found()
        try:
            schema_id = int(rest[1])
        except ValueError:
            raise _HttpError(404, 404, "HTTP 404 Not Found") from None
        tail = rest[2] if len(rest) == 3 else None

        def pairs():
            with sr._lock:
                self._caught_up()
                deleted = _flag(query, "deleted")
                return [(s, v) for s, versions in sorted(sr._versions.items())
                        for v, (sid, gone) in sorted(versions.items()) if sid == schema_id and (deleted or not gone)]

        if tail is None:
            return self._only(method, "GET", lambda: _schema_fields(sr.get_schema(schema_id)))
        if tail == "schema":
            return self._only(method, "GET", lambda: _Raw(sr.get_schema(schema_id).schema_str))
        if tail in ("subjects", "versions"):
            def listing():
                sr.get_schema(schema_id)  # 40403 for an unknown id
                found = pairs()
                subject = query.get("subject", [None])[-1]
                if subject is not None:
                    found = [(s, v) for s, v in found if s == subject]
                if tail == "subjects":
                    return sorted({s for s, _ in found})
                return [{"subject": s, "version": v} for s, v in found]
            return self._only(method, "GET", listing)
        raise _not_found()

    # ---------------------------------------------------------------- /compatibility

    def _compatibility(self, subject, version, query, body):
        schema = _schema_from_body(body)
        problems = self.sr.check_compatibility(subject, schema, version)
        out = {"is_compatible": not problems}
        if _flag(query, "verbose"):
            out["messages"] = problems
        return out

    # ---------------------------------------------------------------- /config and /mode

    def _config(self, method, subject, query, body):
        sr = self.sr
        if method == "GET":
            with sr._lock:
                self._caught_up()
                if subject is None:
                    return {"compatibilityLevel": sr._config.get(None, DEFAULT_COMPATIBILITY)}
                if subject in sr._config:
                    return {"compatibilityLevel": sr._config[subject]}
                if _flag(query, "defaultToGlobal"):
                    return {"compatibilityLevel": sr._config.get(None, DEFAULT_COMPATIBILITY)}
                raise SchemaRegistryError(404, 40408, f"Subject '{subject}' does not have subject-level "
                                          f"compatibility configured")
        if method == "PUT":
            if not isinstance(body, dict):
                raise _HttpError(422, 422, "Unprocessable entity: the body must be a JSON object")
            level = body.get("compatibility", body.get("compatibilityLevel"))
            if level is None:
                raise SchemaRegistryError(422, 42203, f"Invalid compatibility level: give \"compatibility\", "
                                          f"one of {', '.join(COMPATIBILITY_LEVELS)}")
            return {"compatibility": sr.set_compatibility(subject, level)}
        if method == "DELETE":
            return {"compatibilityLevel": sr.delete_compatibility(subject)}
        raise _HttpError(405, 405, "HTTP 405 Method Not Allowed")

    def _mode(self, method, subject, body):
        if method in ("GET", "DELETE"):
            return {"mode": "READWRITE"}
        if method == "PUT":
            mode = body.get("mode") if isinstance(body, dict) else None
            if mode != "READWRITE":
                raise _HttpError(422, 42204, f"Invalid mode {mode!r}: this registry is always READWRITE")
            return {"mode": mode}
        raise _HttpError(405, 405, "HTTP 405 Method Not Allowed")


class _Raw(str):
    """A response body sent as it is (the /schema endpoints), not JSON-encoded."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shmlog-schema-registry"

    def log_message(self, format, *args):
        if self.server.access_log is not None:
            self.server.access_log(f"{self.address_string()} {format % args}")

    def setup(self):
        super().setup()
        # Who is at the other end is decided once, when the connection is accepted (as the
        # control channel's SO_PEERCRED): None (admitted) or the refusal's message.
        self.refusal = self.server.admit(self.connection, self.client_address)

    def _send(self, status, payload):
        data = payload.encode() if isinstance(payload, _Raw) else orjson.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status, code, message):
        self._send(status, {"error_code": code, "message": message})

    def _refuse(self):
        """403 for a peer the policy does not admit; its body is read (so that closing does not
        reset the connection before the answer is read) but never looked at."""
        self.close_connection = True
        self._refuse_body()
        self._error(403, 40301, self.refusal)

    def _refuse_body(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY:
            while length > 0:
                chunk = self.rfile.read(min(length, 65536))
                if not chunk:
                    break
                length -= len(chunk)

    def _unauthorized(self):
        """401 for a request without valid basic-auth credentials (as Confluent's server)."""
        self.close_connection = True
        self._refuse_body()
        data = orjson.dumps({"error_code": 401, "message": "Unauthorized: this registry needs HTTP basic "
                             "authentication (a client's basic.auth.user.info=USER:PASSWORD)"})
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="shmlog-schema-registry", charset="UTF-8"')
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self, method):
        if self.refusal is not None:
            self._refuse()
            return
        users = self.server.basic_auth
        if users is not None and not _basic_auth_ok(users, self.headers.get("Authorization")):
            self._unauthorized()
            return
        try:
            if self.server.loopback_only:
                host = self.headers.get("Host", "")
                origin = self.headers.get("Origin")
                if (host and not _is_loopback_host(host)) or \
                        (origin and origin != "null" and not _is_loopback_host(urlsplit(origin).netloc)):
                    raise _HttpError(403, 40301, "Forbidden: this registry only answers requests for a loopback "
                                     "host")
            body = None
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                raise _HttpError(400, 400, "HTTP 400 Bad Request: invalid Content-Length")
            if length > MAX_BODY:
                raise _HttpError(413, 413, f"HTTP 413 Payload Too Large (at most {MAX_BODY} bytes)")
            if length:
                raw = self.rfile.read(length)
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise _HttpError(400, 400, f"Invalid JSON in the request body: {exc}") from None
            url = urlsplit(self.path)
            segments = [unquote(s) for s in url.path.strip("/").split("/")] if url.path.strip("/") else []
            query = parse_qs(url.query, keep_blank_values=True)
            result = self.server.api.handle(method, segments, query, body)
        except _HttpError as exc:
            self._error(exc.status, exc.code, exc.message)
        except SchemaRegistryError as exc:
            self._error(exc.http_status_code, exc.error_code, exc.error_message)
        except (KafkaException, OSError) as exc:
            self._error(500, 50001, f"Error in the backend data store: {reason_of(exc)}")
        except Exception as exc:  # a bug here must not kill the server: report it to the caller
            self._error(500, 500, f"Internal server error: {type(exc).__name__}: {exc}")
        else:
            self._send(200, result)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")


class RegistryServer(ThreadingHTTPServer):
    """An HTTP server answering Confluent's Schema Registry API from `client`.

    RegistryServer(client, host="127.0.0.1", port=8081): bound on construction (port 0
    picks a free one; .url says which); serve_forever() or start() (a daemon thread) to
    answer, shutdown() and server_close() to stop. The client stays the caller's to close.

    policy: the broker's shmlog.security.Policy (default: one admitting only this process's
    user), applied to every connection's peer; data_dir names the broker in refusals. A host
    other than loopback raises RemoteBindRefused unless allow_remote or basic_auth.
    basic_auth ({user: sha256 hex of the password}, load_basic_auth) makes every request need
    those credentials as well (401 without). log(line) gets the refusals (at most one line a
    second) and the warnings of a bind other than loopback; access_log(line) one line per request.
    """

    daemon_threads = True
    allow_reuse_address = True
    REFUSAL_LOG_INTERVAL_S = 1.0

    def __init__(self, client, host="127.0.0.1", port=8081, access_log=None, policy=None, data_dir=None,
                 allow_remote=False, log=None, basic_auth=None):
        self.loopback_only = is_loopback_bind(host)
        if not self.loopback_only and not allow_remote and not basic_auth:
            raise RemoteBindRefused(remote_bind_refusal(host))
        self.basic_auth = dict(basic_auth) if basic_auth else None
        self.api = _Api(client)
        self.access_log = access_log
        self.policy = security.Policy({}) if policy is None else policy
        self.data_dir = data_dir
        self.allow_remote = allow_remote
        self.log = log
        self._refusals = [float("-inf"), 0]   # when a refusal was last logged, how many since
        self._refusals_lock = threading.Lock()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)
        self._thread = None
        if not self.loopback_only and log is not None:
            if self.basic_auth is None:
                log(f"warning: listening on {host}, not loopback, with --allow-remote-unauthenticated: peers on "
                    f"other hosts are not authenticated and can read and change the registry ({security.DOCS})")
            else:
                log(f"warning: listening on {host}, not loopback: peers on other hosts are admitted by HTTP basic "
                    f"authentication alone, whose passwords cross the network in clear text (no TLS; "
                    f"{security.DOCS})")

    # ---------------------------------------------------------------- who may connect

    def admit(self, sock, address):
        """None if the connection's peer may use the registry, else why not (logged)."""
        where = f"{address[0]}:{address[1]}" if address else "an unknown address"
        try:
            uid = security.tcp_peer_uid(sock)
        except LookupError as exc:
            return self._refused(f"cannot tell which user connected from {where} ({exc}): refused; "
                                 f"{security.DOCS}")
        except (OSError, ValueError) as exc:
            return self._refused(f"cannot tell which user connected from {where} (reading the kernel's TCP "
                                 f"table failed: {exc}): refused; {security.DOCS}")
        if uid is None:
            if not self.loopback_only and (self.allow_remote or self.basic_auth is not None) \
                    and not is_loopback_bind(address[0] if address else "::1"):
                return None  # a peer on another host: admitted by basic auth or unauthenticated, as chosen
            return self._refused(f"cannot tell which user connected from {where} (no socket of this host is its "
                                 f"peer: it closed, or it is in another network namespace): refused; "
                                 f"{security.DOCS}")
        if security.allows_uid(self.policy, uid):
            return None
        broker = f"for {self.data_dir}" if self.data_dir else "of this registry"
        return self._refused(f"user {security.user_name(uid)} is not allowed to use the shmlog broker {broker} "
                             f"(owner {security.user_name(self.policy.owner, inner=True)}); {security.DOCS}",
                             where)

    def _refused(self, message, where=None):
        if self.log is not None:
            now = time.monotonic()
            with self._refusals_lock:
                last, quiet = self._refusals
                if now - last >= self.REFUSAL_LOG_INTERVAL_S:
                    self._refusals = [now, 0]
                else:
                    self._refusals[1] += 1
                    return message
            self.log(f"refused a connection{' from ' + where if where else ''}: {message}"
                     + (f" ({quiet} more refused since the last report)" if quiet else ""))
        return message

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, name="schema-registry-http", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()
