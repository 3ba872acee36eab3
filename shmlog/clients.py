"""The one place that decides which client library a bootstrap.servers string is for.

    from shmlog.clients import Producer, Consumer, AdminClient
    p = Producer({"bootstrap.servers": servers})   # shm:///data/dir -> shmlog; host:port -> Kafka

bootstrap.servers names a shmlog broker when its first entry is `shm://...` or an absolute
path (what Broker.bootstrap_servers gives); it names a Kafka cluster when every entry is
`host:port` (optionally with librdkafka's PLAINTEXT://, SSL://, SASL_PLAINTEXT:// or
SASL_SSL:// prefix). Anything else is refused with a ValueError that says which form was
expected. For a shmlog broker the classes are shmlog's own; for a Kafka cluster they are
confluent-kafka's with shmlog's batch calls added (shmlog.client.kafka). shmlog.pipeline,
the schema registry client, `shmlog bench` and `shmlog mirror` go through here, so the same code runs on both
(docs/migration.md).

shmlog.Producer(conf) itself stays shmlog's client: a Kafka cluster there is refused with an
error that points here.
"""
from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any

SHM_SCHEME = "shm://"
# librdkafka's broker list entry: [PROTOCOL://]host:port, with the protocols it knows.
_HOST_PORT = re.compile(r"^(?:(?:PLAINTEXT|SSL|SASL|SASL_PLAINTEXT|SASL_SSL)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
                        r":(\d{1,5})$", re.IGNORECASE)

# The names each library provides, under shmlog's names.
NAMES = ("Producer", "Consumer", "AdminClient", "NewTopic", "TopicPartition", "KafkaError", "KafkaException",
         "ConsumerGroupTopicPartitions", "ConsumerGroupState", "SerializingProducer", "DeserializingConsumer",
         "OFFSET_BEGINNING", "OFFSET_END", "OFFSET_INVALID", "OFFSET_STORED")


def bootstrap_of(conf_or_servers: Any) -> str:
    if isinstance(conf_or_servers, dict):
        servers = conf_or_servers.get("bootstrap.servers")
    else:
        servers = conf_or_servers
    if not servers:
        raise ValueError("bootstrap.servers is missing: give a shmlog broker (shm:///path/to/data_dir) or a "
                         "Kafka cluster (host:port[,host:port])")
    return str(servers)


def is_kafka(conf_or_servers: Any) -> bool:
    """True when bootstrap.servers names a Kafka cluster, False for a shmlog broker."""
    servers = bootstrap_of(conf_or_servers)
    entries = [e.strip() for e in servers.split(",") if e.strip()]
    if entries and (entries[0].startswith(SHM_SCHEME) or entries[0].startswith("/")):
        return False
    if entries and all(_HOST_PORT.match(e) and 0 < int(_HOST_PORT.match(e).group(2)) < 65536 for e in entries):
        return True
    raise ValueError(f"bootstrap.servers={servers!r} names neither a shmlog broker (shm:///path/to/data_dir) "
                     f"nor a Kafka cluster (host:port[,host:port])")


def library(conf_or_servers: Any) -> ModuleType:
    """The module whose NAMES serve this bootstrap.servers: shmlog, or shmlog.client.kafka."""
    return importlib.import_module("shmlog.client.kafka" if is_kafka(conf_or_servers) else "shmlog")


def admin_types(conf_or_servers: Any) -> ModuleType:
    """The module with ConfigResource, ConfigEntry, ConfigSource and AlterConfigOpType for this
    bootstrap.servers: shmlog.admin, or confluent_kafka.admin."""
    return importlib.import_module("confluent_kafka.admin" if is_kafka(conf_or_servers) else "shmlog.admin")


def _get(name: str, conf: Any) -> Any:
    lib = library(conf)
    if lib.__name__ == "shmlog.client.kafka" or name not in ("SerializingProducer", "DeserializingConsumer"):
        return getattr(lib, name)
    return getattr(importlib.import_module("shmlog.client.serializing"), name)


def Producer(conf: dict[str, Any], **kwargs: Any) -> Any:  # noqa: N802 - a factory standing for the class
    return _get("Producer", conf)(conf, **kwargs)


def Consumer(conf: dict[str, Any], **kwargs: Any) -> Any:  # noqa: N802
    return _get("Consumer", conf)(conf, **kwargs)


def AdminClient(conf: dict[str, Any], **kwargs: Any) -> Any:  # noqa: N802
    return _get("AdminClient", conf)(conf, **kwargs)


def SerializingProducer(conf: dict[str, Any]) -> Any:  # noqa: N802
    return _get("SerializingProducer", conf)(conf)


def DeserializingConsumer(conf: dict[str, Any]) -> Any:  # noqa: N802
    return _get("DeserializingConsumer", conf)(conf)
