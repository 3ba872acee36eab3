"""shmlog: a Kafka-semantics message broker for one host over POSIX shared memory.

The client API mirrors confluent-kafka-python; see README.md. The public names below
load on first use (PEP 562), so a broker process (`python -m shmlog.broker.supervisor`)
that imports the package never loads the client stack.
"""
import importlib

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
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shmlog' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
