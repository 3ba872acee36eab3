"""The listener's settings, from the broker config the supervisor parsed and validated
(shmlog/config.py holds the keys and their rules)."""
import ipaddress
from dataclasses import dataclass

from shmlog.config import listener_address


@dataclass(frozen=True)
class Settings:
    listener: str
    host: str
    port: int
    advertised_host: str
    advertised_port: int
    allow_insecure: bool
    max_connections: int
    request_max_bytes: int

    @property
    def loopback(self):
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def settings(broker):
    """Settings from the broker config dict (as the supervisor's metadata reply carries it)."""
    host, port = listener_address(broker["listeners"])
    advertised = broker.get("advertised.listeners")
    a_host, a_port = listener_address(advertised) if advertised else (None, None)
    return Settings(listener=broker["listeners"], host=host, port=port, advertised_host=a_host,
                    advertised_port=a_port, allow_insecure=bool(broker.get("shmlog.listener.allow.insecure")),
                    max_connections=int(broker.get("max.connections") or 1000),
                    request_max_bytes=int(broker.get("socket.request.max.bytes") or 104_857_600))
