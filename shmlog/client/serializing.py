"""SerializingProducer and DeserializingConsumer, as confluent-kafka has them.

The config takes `key.serializer`/`value.serializer` (producer) or `key.deserializer`/
`value.deserializer` (consumer) next to the client's own keys. A failure raises
Key/ValueSerializationError (produce) or Key/ValueDeserializationError (poll), carrying
the serializer's SerializationError (`.exception`, and `.field` naming the field) and, when
consuming, the raw message (`.kafka_message`), whose offset is already consumed, as in
confluent-kafka: the application decides whether to skip it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmlog.client.consumer import Consumer
from shmlog.client.producer import Producer
from shmlog.serialization import (
    ConsumeError,
    KeyDeserializationError,
    KeySerializationError,
    MessageField,
    SerializationContext,
    ValueDeserializationError,
    ValueSerializationError,
)

if TYPE_CHECKING:
    from shmlog._types import Config, DeliveryCallback, HeadersType
    from shmlog.client.consumer import RecordBatchView
    from shmlog.message import Message

__all__ = ["SerializingProducer", "DeserializingConsumer"]


def _split(conf, kwargs, names):
    conf = dict(conf or {})
    conf.update(kwargs)
    taken = {name: conf.pop(name, None) for name in names}
    for name, fn in taken.items():
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable (a Serializer/Deserializer), not {type(fn).__name__}")
    return conf, taken


class SerializingProducer(Producer):
    """A Producer whose produce() serializes key and value first (confluent_kafka.SerializingProducer)."""

    def __init__(self, conf: Config | None = None, **kwargs: Any) -> None:
        conf, taken = _split(conf, kwargs, ("key.serializer", "value.serializer"))
        self._key_serializer = taken["key.serializer"]
        self._value_serializer = taken["value.serializer"]
        super().__init__(conf)

    def produce(self, topic: str, key: Any = None, value: Any = None, partition: int = -1,  # type: ignore[override]
                on_delivery: DeliveryCallback | None = None, timestamp: int = 0, headers: HeadersType | None = None,
                callback: DeliveryCallback | None = None) -> None:
        ctx = SerializationContext(topic, MessageField.KEY, headers)
        if self._key_serializer is not None:
            try:
                key = self._key_serializer(key, ctx)
            except Exception as exc:
                raise KeySerializationError(exc) from exc
        ctx.field = MessageField.VALUE
        if self._value_serializer is not None:
            try:
                value = self._value_serializer(value, ctx)
            except Exception as exc:
                raise ValueSerializationError(exc) from exc
        super().produce(topic, value=value, key=key, partition=partition, on_delivery=on_delivery,
                        timestamp=timestamp, headers=headers, callback=callback)


class DeserializingConsumer(Consumer):
    """A Consumer whose poll() deserializes key and value (confluent_kafka.DeserializingConsumer)."""

    def __init__(self, conf: Config | None = None, **kwargs: Any) -> None:
        conf, taken = _split(conf, kwargs, ("key.deserializer", "value.deserializer"))
        self._key_deserializer = taken["key.deserializer"]
        self._value_deserializer = taken["value.deserializer"]
        super().__init__(conf)

    def poll(self, timeout: float | None = -1) -> Message | None:
        msg = super().poll(timeout)
        if msg is None:
            return None
        if msg.error() is not None:
            raise ConsumeError(msg.error(), kafka_message=msg)
        ctx = SerializationContext(msg.topic(), MessageField.VALUE, msg.headers())
        if self._value_deserializer is not None:
            try:
                msg.set_value(self._value_deserializer(msg.value(), ctx))
            except Exception as exc:
                raise ValueDeserializationError(exception=exc, kafka_message=msg) from exc
        if self._key_deserializer is not None:
            ctx.field = MessageField.KEY
            try:
                msg.set_key(self._key_deserializer(msg.key(), ctx))
            except Exception as exc:
                raise KeyDeserializationError(exception=exc, kafka_message=msg) from exc
        return msg

    def consume(self, num_messages: int = 1, timeout: float | None = -1) -> list[Message]:
        """Not with deserializers, as in confluent-kafka: use poll()."""
        raise NotImplementedError("Batch consumption does not support the use of deserializers")

    def consume_batch(self, max_records: int = 65536, timeout: float | None = None) -> RecordBatchView | None:
        """Raw zero-copy views bypass the deserializers: use a plain Consumer for them."""
        raise NotImplementedError("consume_batch hands out raw bytes: use a Consumer, or poll() here")
