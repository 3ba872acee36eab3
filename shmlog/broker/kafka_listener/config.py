"""The listener's settings, from the broker config the supervisor parsed and validated
(shmlog/config.py holds the keys and their rules); the TLS context of an SSL listener."""
import ipaddress
import ssl
from dataclasses import dataclass

from shmlog.config import listener_parts


class ListenerConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    listener: str
    protocol: str
    host: str
    port: int
    advertised_host: str
    advertised_port: int
    allow_insecure: bool
    max_connections: int
    request_max_bytes: int
    keystore: str
    key_password: str
    truststore: str
    client_auth: str
    sasl_mechanisms: tuple

    @property
    def loopback(self):
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def tls(self):
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self):
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def settings(broker):
    """Settings from the broker config dict (as the supervisor's metadata reply carries it)."""
    protocol, host, port = listener_parts(broker["listeners"])
    advertised = broker.get("advertised.listeners")
    _, a_host, a_port = listener_parts(advertised) if advertised else (None, None, None)
    return Settings(listener=broker["listeners"], protocol=protocol, host=host, port=port, advertised_host=a_host,
                    advertised_port=a_port, allow_insecure=bool(broker.get("shmlog.listener.allow.insecure")),
                    max_connections=int(broker.get("max.connections") or 1000),
                    request_max_bytes=int(broker.get("socket.request.max.bytes") or 104_857_600),
                    keystore=broker.get("ssl.keystore.location"), key_password=broker.get("ssl.key.password"),
                    truststore=broker.get("ssl.truststore.location"),
                    client_auth=broker.get("ssl.client.auth") or "none",
                    sasl_mechanisms=_names(broker.get("sasl.enabled.mechanisms") or ()))


def _names(value):
    return tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip())


def check(s):
    """Why these settings cannot be served (ListenerConfigError), checked by the supervisor before it
    starts anything, so a broker with a listener it cannot serve does not start."""
    if not s.loopback and not s.tls and not s.sasl and not s.allow_insecure:
        raise ListenerConfigError(f"listeners={s.listener} binds beyond loopback without SASL or TLS; use a "
                                  f"SASL_SSL://, SSL:// or SASL_PLAINTEXT:// listener or set "
                                  f"shmlog.listener.allow.insecure=true")
    if s.sasl and not s.sasl_mechanisms:
        raise ListenerConfigError(f"listeners={s.listener} needs sasl.enabled.mechanisms")
    if s.tls:
        ssl_context(s)
    elif s.keystore or s.truststore:
        raise ListenerConfigError(f"ssl.keystore.location/ssl.truststore.location are set but listeners="
                                  f"{s.listener} is not an SSL:// listener")


def ssl_context(s):
    """The server-side TLS context of an SSL listener (Python's ssl module, TLS 1.2 or later)."""
    if not s.keystore:
        raise ListenerConfigError(f"listeners={s.listener} needs ssl.keystore.location (a PEM file with the "
                                  f"certificate chain and private key)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(s.keystore, password=s.key_password)
    except (OSError, ssl.SSLError) as exc:
        raise ListenerConfigError(f"ssl.keystore.location={s.keystore}: cannot load the certificate chain and "
                                  f"private key: {exc}") from None
    if s.client_auth != "none":
        if not s.truststore:
            raise ListenerConfigError(f"ssl.client.auth={s.client_auth} needs ssl.truststore.location (PEM CA "
                                      f"certificates)")
        try:
            ctx.load_verify_locations(cafile=s.truststore)
        except (OSError, ssl.SSLError) as exc:
            raise ListenerConfigError(f"ssl.truststore.location={s.truststore}: cannot load: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if s.client_auth == "required" else ssl.CERT_OPTIONAL
    return ctx
