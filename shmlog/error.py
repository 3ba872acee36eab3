"""shmlog.error: what confluent_kafka.error exports (its client errors), so
`from confluent_kafka.error import ...` becomes `from shmlog.error import ...`."""
from typing import Optional  # noqa: F401  (confluent_kafka.error exposes it)

from shmlog.errors import KafkaError, KafkaException
from shmlog.message import Message
from shmlog.serialization import (
    ConsumeError,
    KeyDeserializationError,
    KeySerializationError,
    ProduceError,
    SerializationError,
    ValueDeserializationError,
    ValueSerializationError,
)

__all__ = ["ConsumeError", "KafkaError", "KafkaException", "KeyDeserializationError", "KeySerializationError",
           "Message", "ProduceError", "SerializationError", "ValueDeserializationError", "ValueSerializationError"]
