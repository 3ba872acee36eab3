"""SASL for the Kafka listener: PLAIN and SCRAM-SHA-256/512 (RFC 5802, RFC 7677) as Kafka
speaks them inside SaslAuthenticate, and the salted credentials they are checked against.

Credentials live in <data_dir>/meta/sasl-credentials.json (mode 0600), one entry per user and
SCRAM mechanism: salt, iterations, StoredKey and ServerKey, never the password (Kafka stores
the same). `shmlog users set` writes them (docs/kafka-protocol.md); the listener rereads the file
on every authentication, so a change takes effect for the next connection. PLAIN is checked
against the user's SCRAM credential (the password is salted and hashed the same way and the
StoredKeys compared), so one credential serves both.

The exchanges are pure state machines with no I/O: `Scram.step(client_message)` returns the
server's next message, or raises AuthFailed.
"""
import base64
import hashlib
import hmac
import json
import os
import secrets

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
PLAIN = "PLAIN"
DEFAULT_ITERATIONS = 4096   # Kafka's default for kafka-configs --add-config SCRAM-...=[password=...]
MIN_ITERATIONS = 4096       # Kafka's minimum
CREDENTIALS_FILE = os.path.join("meta", "sasl-credentials.json")


class AuthFailed(Exception):
    pass


# ---------------------------------------------------------------------------- credentials

def _keys(hash_name, password, salt, iterations):
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    return hashlib.new(hash_name, client_key).digest(), hmac.new(salted, b"Server Key", hash_name).digest()


def make_credential(mechanism, password, iterations=DEFAULT_ITERATIONS, salt=None):
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown SCRAM mechanism {mechanism!r}: use one of {', '.join(MECHANISMS)}")
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"iterations={iterations}: at least {MIN_ITERATIONS}")
    salt = salt or secrets.token_bytes(32)
    stored, server = _keys(MECHANISMS[mechanism], password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return {"salt": b64(salt), "iterations": iterations, "stored_key": b64(stored), "server_key": b64(server)}


def credentials_path(data_dir):
    return os.path.join(data_dir, CREDENTIALS_FILE)


def load(data_dir):
    """{user: {mechanism: credential}}; {} when there is no file."""
    try:
        with open(credentials_path(data_dir)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def set_user(data_dir, user, password, mechanisms=tuple(MECHANISMS), iterations=DEFAULT_ITERATIONS):
    """Store (or replace) user's credentials for mechanisms; written atomically, mode 0600."""
    if not user or "\0" in user:
        raise ValueError("a user name must be non-empty text without NUL")
    data = load(data_dir)
    data[user] = {m: make_credential(m, password, iterations) for m in mechanisms}
    _save(data_dir, data)


def delete_user(data_dir, user):
    data = load(data_dir)
    found = data.pop(user, None) is not None
    _save(data_dir, data)
    return found


def _save(data_dir, data):
    path = credentials_path(data_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- exchanges

def check_plain(credentials, message):
    """PLAIN's one message, `authzid NUL user NUL password`: the user name, or AuthFailed."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise AuthFailed("malformed PLAIN message")
    authzid, user, password = (p.decode(errors="replace") for p in parts)
    if authzid and authzid != user:
        raise AuthFailed("an authorization id other than the user is not supported")
    for mechanism, cred in (credentials.get(user) or {}).items():
        if mechanism in MECHANISMS:
            stored, _ = _keys(MECHANISMS[mechanism], password, base64.b64decode(cred["salt"]), cred["iterations"])
            if hmac.compare_digest(stored, base64.b64decode(cred["stored_key"])):
                return user
            break
    raise AuthFailed("authentication failed: invalid user name or password")


def _attrs(text):
    out = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise AuthFailed("malformed SCRAM message")
        out[part[0]] = part[2:]
    return out


class Scram:
    """One SCRAM exchange (server side): step() with the client-first message, then with the
    client-final one; `user` is set once it succeeded."""

    def __init__(self, mechanism, credentials, nonce_suffix=None):
        """nonce_suffix: the server's part of the nonce (random unless given: known-answer tests)."""
        self.nonce_suffix = nonce_suffix or secrets.token_urlsafe(24)
        self.hash_name = MECHANISMS[mechanism]
        self.mechanism = mechanism
        self.credentials = credentials
        self.state = "first"
        self.user = None

    def step(self, message):
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise AuthFailed("SCRAM messages are UTF-8") from None
        if self.state == "first":
            return self._first(text)
        if self.state == "final":
            return self._final(text)
        raise AuthFailed("the SCRAM exchange is over")

    def _first(self, text):
        if not text.startswith(("n,", "y,")):
            raise AuthFailed("SCRAM channel binding is not supported")
        gs2_end = text.index(",", 2) + 1 if "," in text[2:] else -1
        if gs2_end < 0:
            raise AuthFailed("malformed SCRAM client-first message")
        self.gs2_header, self.client_first_bare = text[:gs2_end], text[gs2_end:]
        attrs = _attrs(self.client_first_bare)
        if "n" not in attrs or "r" not in attrs:
            raise AuthFailed("malformed SCRAM client-first message")
        user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
        cred = (self.credentials.get(user) or {}).get(self.mechanism)
        if cred is None:
            raise AuthFailed("authentication failed: invalid user name or password")
        self.cred, self.candidate = cred, user
        self.nonce = attrs["r"] + self.nonce_suffix
        self.server_first = f"r={self.nonce},s={cred['salt']},i={cred['iterations']}"
        self.state = "final"
        return self.server_first.encode()

    def _final(self, text):
        self.state = "done"
        if ",p=" not in text:
            raise AuthFailed("malformed SCRAM client-final message")
        without_proof, proof = text.rsplit(",p=", 1)
        attrs = _attrs(without_proof)
        if attrs.get("r") != self.nonce:
            raise AuthFailed("SCRAM nonce mismatch")
        if base64.b64decode(attrs.get("c", "")) != self.gs2_header.encode():
            raise AuthFailed("SCRAM channel binding mismatch")
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        stored = base64.b64decode(self.cred["stored_key"])
        signature = hmac.new(stored, auth_message, self.hash_name).digest()
        try:
            client_proof = base64.b64decode(proof, validate=True)
        except ValueError:
            raise AuthFailed("malformed SCRAM proof") from None
        if len(client_proof) != len(signature):
            raise AuthFailed("authentication failed: invalid user name or password")
        client_key = bytes(a ^ b for a, b in zip(client_proof, signature))
        if not hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(), stored):
            raise AuthFailed("authentication failed: invalid user name or password")
        self.user = self.candidate
        server_signature = hmac.new(base64.b64decode(self.cred["server_key"]), auth_message, self.hash_name).digest()
        return b"v=" + base64.b64encode(server_signature)
