"""shmlog: a Kafka-semantics message broker for one host over POSIX shared memory.

The client API mirrors confluent-kafka-python; see README.md. The public names below
load on first use (PEP 562), so a broker process (`python -m shmlog.broker.supervisor`)
that imports the package never loads the client stack. Every name confluent_kafka exports
is here (docs/compatibility.md); its submodules' twins are shmlog.admin, shmlog.error,
shmlog.serialization and shmlog.aio.
"""
import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "AdminClient": "shmlog.client.admin", "ConfigResource": "shmlog.client.admin",
    "NewPartitions": "shmlog.client.admin", "NewTopic": "shmlog.client.admin",
    "Broker": "shmlog.broker.launcher",
    "Consumer": "shmlog.client.consumer", "RecordBatchView": "shmlog.client.consumer",
    "Producer": "shmlog.client.producer",
    "DeserializingConsumer": "shmlog.client.serializing", "SerializingProducer": "shmlog.client.serializing",
    "KafkaError": "shmlog.errors", "KafkaException": "shmlog.errors",
    **{name: "shmlog.message" for name in (
        "Message", "TopicPartition", "OFFSET_BEGINNING", "OFFSET_END", "OFFSET_INVALID", "OFFSET_STORED",
        "TIMESTAMP_CREATE_TIME", "TIMESTAMP_LOG_APPEND_TIME", "TIMESTAMP_NOT_AVAILABLE")},
    **{name: "shmlog.model" for name in (
        "AcknowledgeType", "ConcurrentModificationException", "ConsumerGroupState", "ConsumerGroupTopicPartitions",
        "ConsumerGroupType", "DeserializingShareConsumer", "ElectionType", "IllegalStateException",
        "IsolationLevel", "Messages", "Node", "ShareConsumer", "TopicCollection", "TopicPartitionInfo", "Uuid")},
}

# confluent_kafka's submodules that its `from confluent_kafka import *` brings in too.
_SUBMODULES = ("admin", "aio", "error", "serialization")

# Public names of confluent_kafka that shmlog deliberately lacks, and why (AttributeError says so).
_ABSENT = {
    "kafkatest": "confluent_kafka.kafkatest is the harness of Apache Kafka's system tests (verifiable "
                 "producer and consumer driven by Kafka's ducktape suite); it has no shmlog counterpart",
}

__all__ = sorted([*_HOMES, "admin", "aio", "consistent", "fnv1a", "libversion", "murmur2", "version"])


def version() -> tuple[str, int]:
    """(version string, version int 0xMMmmrr00), as confluent_kafka.version()."""
    major, minor, patch = (int(p) for p in __version__.split(".")[:3])
    return __version__, (major << 24) | (minor << 16) | (patch << 8)


def libversion() -> tuple[str, int]:
    """shmlog has no librdkafka: its C core ships with it, so this is version()."""
    return version()


def murmur2(key: bytes, partition_count: int) -> int:
    """The partition librdkafka's murmur2 partitioner (Kafka's Java default) picks for key."""
    from shmlog._native import lib
    return lib.shmlog_murmur2_partition(key, len(key), partition_count)


def consistent(key: bytes, partition_count: int) -> int:
    """The partition librdkafka's consistent (CRC32) partitioner picks for key."""
    import zlib
    return (zlib.crc32(key) & 0xFFFFFFFF) % partition_count


def fnv1a(key: bytes, partition_count: int) -> int:
    """The partition librdkafka's fnv1a partitioner picks for key: abs() of the hash as a signed
    32-bit int, modulo the count."""
    from shmlog._native import lib
    h = lib.shmlog_fnv1a(key, len(key)) & 0xFFFFFFFF
    return abs(h - (1 << 32) if h >> 31 else h) % partition_count


if TYPE_CHECKING:  # what the lazy names are, for type checkers (py.typed); never run
    from shmlog import admin, aio, error, serialization  # noqa: F401
    from shmlog.broker.launcher import Broker  # noqa: F401
    from shmlog.client.admin import AdminClient, ConfigResource, NewPartitions, NewTopic  # noqa: F401
    from shmlog.client.consumer import Consumer, RecordBatchView  # noqa: F401
    from shmlog.client.producer import Producer  # noqa: F401
    from shmlog.client.serializing import DeserializingConsumer, SerializingProducer  # noqa: F401
    from shmlog.errors import KafkaError, KafkaException  # noqa: F401
    from shmlog.message import (  # noqa: F401
        OFFSET_BEGINNING,
        OFFSET_END,
        OFFSET_INVALID,
        OFFSET_STORED,
        TIMESTAMP_CREATE_TIME,
        TIMESTAMP_LOG_APPEND_TIME,
        TIMESTAMP_NOT_AVAILABLE,
        Message,
        TopicPartition,
    )
    from shmlog.model import (  # noqa: F401
        AcknowledgeType,
        ConcurrentModificationException,
        ConsumerGroupState,
        ConsumerGroupTopicPartitions,
        ConsumerGroupType,
        DeserializingShareConsumer,
        ElectionType,
        IllegalStateException,
        IsolationLevel,
        Messages,
        Node,
        ShareConsumer,
        TopicCollection,
        TopicPartitionInfo,
        Uuid,
    )
else:
    # The lazy loading, hidden from type checkers, which see the names themselves above: a
    # module __getattr__ would make every misspelt name Any to them.
    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            if name in _SUBMODULES:
                return importlib.import_module(f"shmlog.{name}")
            if name in _ABSENT:
                raise AttributeError(f"module 'shmlog' has no attribute {name!r}: {_ABSENT[name]}")
            raise AttributeError(f"module 'shmlog' has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_HOMES) | set(_SUBMODULES))
