"""`shmlog schemas serve` obeys the broker's access policy (docs/security.md): each connection's
user is found in the kernel's TCP table and admitted only as the control channel would admit it.

Real processes: a broker, the server (`python -m shmlog.cli schemas serve`) and, for another
user, a forked child of this test that drops to that uid and talks HTTP (the suite runs as
root, the broker's owner; these tests skip where setuid is not permitted). Binds other than
loopback are refused before the server needs a broker.
"""
import base64
import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request

import pytest

import shmlog
from tests.conftest import stop_leftover_broker
from tests.helpers import NOBODY, as_user, registry_url, serve_registry, setuid_works, stop_registry

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA = json.dumps({"type": "record", "name": "Trade", "fields": [{"name": "symbol", "type": "string"}]})


AS_ANOTHER_USER = pytest.mark.skipif(
    not setuid_works(), reason="acting as another user needs root and setuid (the suite runs as root in CI)")


# ---------------------------------------------------------------------------- processes

class Server:
    def __init__(self, data_dir, *args):
        self.proc = serve_registry(data_dir, "--port", "0", *args)
        self.url = registry_url(self.proc)
        self.rc = self.stderr = None

    def stop(self):
        if self.rc is None:
            self.rc, self.stderr = stop_registry(self.proc)
        return self.stderr


@pytest.fixture
def serve(data_dir):
    """serve(*args) -> a running Server for data_dir; all stopped after the test (exit status 0)."""
    started = []

    def start(*args):
        started.append(Server(data_dir, *args))
        return started[-1]
    yield start
    for server in started:
        server.stop()
        assert server.rc == 0, f"`shmlog schemas serve` exited {server.rc}: {server.stderr}"


@pytest.fixture
def broker_with(data_dir):
    """broker_with(**configs) -> a running shmlog.Broker for data_dir, stopped after the test."""
    brokers = []

    def start(**configs):
        brokers.append(shmlog.Broker(data_dir, **configs).__enter__())
        return brokers[-1]
    yield start
    for b in brokers:
        b.__exit__(None, None, None)
    stop_leftover_broker(data_dir)


def call(url, method, path, body=None, auth=None):
    """(status, parsed JSON body) of one request on its own connection; auth: "user:password"."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": CONTENT_TYPE} if data else {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            assert exc.headers["WWW-Authenticate"].startswith("Basic realm="), exc.headers
        return exc.code, json.loads(exc.read())


def calls(url, requests):
    return [call(url, *request) for request in requests]


def refusal_lines(stderr):
    return [line for line in stderr.splitlines() if "refused a connection" in line]


# ---------------------------------------------------------------------------- the tests

def test_the_owner_is_admitted(broker_with, serve):
    broker_with()
    server = serve()
    assert call(server.url, "POST", "/subjects/trades-value/versions", {"schema": SCHEMA}) == (200, {"id": 1})
    assert call(server.url, "GET", "/subjects") == (200, ["trades-value"])
    assert refusal_lines(server.stop()) == []


@AS_ANOTHER_USER
def test_another_user_is_refused_with_403_and_never_reaches_the_registry(broker_with, serve, data_dir):
    broker_with()
    server = serve()
    knocks = 10
    started = time.monotonic()
    answers = as_user(NOBODY, NOBODY, calls, server.url,
                      [("POST", "/subjects/stolen-value/versions", {"schema": SCHEMA})]
                      + [("GET", "/subjects")] * (knocks - 1), must_return=True)
    elapsed = time.monotonic() - started
    real = os.path.realpath(data_dir)
    for status, body in answers:
        assert status == 403
        assert body["error_code"] == 40301
        assert body["message"].startswith(f"user nobody (uid {NOBODY}) is not allowed to use the shmlog broker "
                                          f"for {real} (owner root, uid 0)"), body
    assert call(server.url, "GET", "/subjects") == (200, [])   # the refused register did not happen
    lines = refusal_lines(server.stop())
    # Logged, but at most one line a second however fast the refused user knocks.
    assert lines and len(lines) <= 1 + int(elapsed), lines
    assert all(f"user nobody (uid {NOBODY}) is not allowed" in line for line in lines), lines


@AS_ANOTHER_USER
@pytest.mark.parametrize("configs", [{"shmlog.allowed.users": "nobody"}, {"shmlog.allowed.groups": "nogroup"}],
                         ids=["allowed-users", "allowed-groups"])
def test_users_the_broker_allows_are_admitted(broker_with, serve, configs):
    broker_with(**configs)
    server = serve()
    assert as_user(NOBODY, NOBODY, call, server.url, "POST", "/subjects/trades-value/versions",
                   {"schema": SCHEMA}, must_return=True) == [200, {"id": 1}]
    assert call(server.url, "GET", "/subjects") == (200, ["trades-value"])
    assert refusal_lines(server.stop()) == []


@AS_ANOTHER_USER
def test_a_user_of_another_group_is_refused_when_only_a_group_is_allowed(broker_with, serve):
    broker_with(**{"shmlog.allowed.groups": "nogroup"})
    server = serve()
    status, body = as_user(65533, 65533, call, server.url, "GET", "/subjects", must_return=True)
    assert status == 403 and body["error_code"] == 40301
    assert body["message"].startswith("user uid 65533 is not allowed"), body


def test_ipv6_loopback_is_checked_as_well(broker_with, serve):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    broker_with()
    server = serve("--host", "::1")
    assert server.url.startswith("http://[::1]:")
    assert call(server.url, "GET", "/subjects") == (200, [])


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_bind_other_than_loopback_without_the_flag_fails_to_start_with_one_line(data_dir, host):
    # No broker: the refusal comes first.
    proc = serve_registry(data_dir, "--port", "0", "--host", host)
    out, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 1, err
    assert out == b""
    assert err.count("\n") == 1, err
    assert err.startswith(f"shmlog: error: refusing to listen on {host}, not a loopback address"), err
    assert "--allow-remote-unauthenticated" in err


@AS_ANOTHER_USER
def test_allow_remote_unauthenticated_warns_and_still_checks_users_of_this_host(broker_with, serve):
    broker_with()
    server = serve("--host", "0.0.0.0", "--allow-remote-unauthenticated")
    port = server.url.rsplit(":", 1)[1]
    local = f"http://127.0.0.1:{port}"
    assert call(local, "GET", "/subjects") == (200, [])
    status, body = as_user(NOBODY, NOBODY, call, local, "GET", "/subjects", must_return=True)
    assert status == 403 and body["error_code"] == 40301
    stderr = server.stop()
    assert "warning: listening on 0.0.0.0, not loopback, with --allow-remote-unauthenticated" in stderr


# ---------------------------------------------------------------------------- HTTP basic auth

@pytest.fixture
def auth_file(tmp_path):
    path = tmp_path / "registry-users"
    path.write_text("# user:sha256 of the password\n"
                    f"alice:{hashlib.sha256(b'correct horse').hexdigest()}\n"
                    f"bob:{hashlib.sha256('pässwörd'.encode()).hexdigest().upper()}\n")
    return str(path)


def test_basic_auth_file_requires_a_listed_users_password(broker_with, serve, auth_file):
    broker_with()
    server = serve("--basic-auth-file", auth_file)
    assert call(server.url, "GET", "/subjects")[0] == 401
    assert call(server.url, "GET", "/subjects", auth="alice:wrong")[0] == 401
    assert call(server.url, "GET", "/subjects", auth="mallory:correct horse")[0] == 401
    status, body = call(server.url, "POST", "/subjects/trades-value/versions", {"schema": SCHEMA}, auth="bob:x")
    assert (status, body["error_code"]) == (401, 401)
    assert call(server.url, "POST", "/subjects/trades-value/versions", {"schema": SCHEMA},
                auth="bob:pässwörd") == (200, {"id": 1})
    assert call(server.url, "GET", "/subjects", auth="alice:correct horse") == (200, ["trades-value"])


@AS_ANOTHER_USER
def test_basic_auth_does_not_admit_a_user_the_broker_refuses(broker_with, serve, auth_file):
    broker_with()
    server = serve("--basic-auth-file", auth_file)
    status, body = as_user(NOBODY, NOBODY, call, server.url, "GET", "/subjects", None, "alice:correct horse",
                           must_return=True)
    assert status == 403 and body["error_code"] == 40301


def test_confluents_client_authenticates_with_basic_auth_user_info(broker_with, serve, auth_file):
    ck = pytest.importorskip("confluent_kafka.schema_registry")
    from confluent_kafka.schema_registry.error import SchemaRegistryError as CError
    broker_with()
    server = serve("--basic-auth-file", auth_file)
    with ck.SchemaRegistryClient({"url": server.url}) as anonymous:
        with pytest.raises(CError) as info:
            anonymous.get_subjects()
        assert info.value.http_status_code == 401
    with ck.SchemaRegistryClient({"url": server.url,
                                  "basic.auth.user.info": "alice:correct horse"}) as alice:
        schema_id = alice.register_schema("trades-value", ck.Schema(SCHEMA, "AVRO"))
        assert alice.get_subjects() == ["trades-value"]
        assert alice.get_schema(schema_id).schema_str == SCHEMA


@pytest.mark.parametrize("text, words", [("alice:not-a-digest\n", "line 1: expected USER:SHA256"),
                                         ("# nobody\n", "names no user")])
def test_a_bad_basic_auth_file_fails_to_start_with_one_line(data_dir, tmp_path, text, words):
    path = tmp_path / "users"
    path.write_text(text)
    proc = serve_registry(data_dir, "--port", "0", "--basic-auth-file", str(path))
    out, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert err.startswith("shmlog: error: --basic-auth-file: ") and words in err, err


def test_basic_auth_allows_a_bind_other_than_loopback_with_a_warning(broker_with, serve, auth_file):
    broker_with()
    server = serve("--host", "0.0.0.0", "--basic-auth-file", auth_file)
    local = f"http://127.0.0.1:{server.url.rsplit(':', 1)[1]}"
    assert call(local, "GET", "/subjects")[0] == 401
    assert call(local, "GET", "/subjects", auth="alice:correct horse") == (200, [])
    assert "peers on other hosts are admitted by HTTP basic authentication alone" in server.stop()


# ---------------------------------------------------------------------------- identifying TCP peers

def test_a_connected_peer_is_identified_and_a_closed_one_is_not():
    """shmlog.security.tcp_peer_uid on real loopback connections: the peer's uid while its socket
    is open; once it is closed (an orphan the kernel lists with uid 0) it is not trusted."""
    from shmlog import security
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted:
            assert security.tcp_peer_uid(accepted) == os.geteuid()
            client.close()
            with pytest.raises(LookupError, match="closed"):
                security.tcp_peer_uid(accepted)
