"""SaslHandshake and SaslAuthenticate: a SASL listener serves nothing but ApiVersions and these
two until the client has authenticated (server.Connection enforces it); the exchanges
themselves are sasl.py's."""
from shmlog.broker.kafka_listener import sasl

NONE = 0
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
SASL_APIS = (17, 18, 36)   # SaslHandshake, ApiVersions, SaslAuthenticate


def sasl_handshake(conn, req, version):
    enabled = conn.server.settings.sasl_mechanisms
    if conn.principal is not None or conn.sasl_exchange is not None:
        return {"error_code": ILLEGAL_SASL_STATE, "mechanisms": enabled}
    if req.mechanism not in enabled:
        conn.close_after_reply = True
        return {"error_code": UNSUPPORTED_SASL_MECHANISM, "mechanisms": enabled}
    conn.sasl_mechanism = req.mechanism
    return {"error_code": NONE, "mechanisms": enabled}


def sasl_authenticate(conn, req, version):
    fail = {"auth_bytes": b"", "session_lifetime": 0}
    if conn.sasl_mechanism is None or conn.principal is not None:
        conn.close_after_reply = True
        return {**fail, "error_code": ILLEGAL_SASL_STATE, "error_message": "SaslHandshake first"}
    credentials = sasl.load(conn.server.data_dir)
    try:
        if conn.sasl_mechanism == sasl.PLAIN:
            conn.principal = sasl.check_plain(credentials, req.auth_bytes)
            out = b""
        else:
            if conn.sasl_exchange is None:
                conn.sasl_exchange = sasl.Scram(conn.sasl_mechanism, credentials)
            out = conn.sasl_exchange.step(req.auth_bytes)
            conn.principal = conn.sasl_exchange.user
    except sasl.AuthFailed as exc:
        conn.close_after_reply = True
        conn.log_refusal(f"SASL {conn.sasl_mechanism} authentication failed: {exc}")
        return {**fail, "error_code": SASL_AUTHENTICATION_FAILED, "error_message": str(exc)}
    return {"error_code": NONE, "error_message": None, "auth_bytes": out, "session_lifetime": 0}
