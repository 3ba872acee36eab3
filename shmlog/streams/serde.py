"""Turning record bytes into Python values and back, by name or by object.

A deserializer is "bytes" (or None: the bytes as they are), "str", "json", "int" or "double"
(Kafka's big-endian Long/Double), a shmlog/confluent-kafka Deserializer (called with a
SerializationContext), or any callable(bytes) -> value. Serializers mirror them; "json" is the
default for values a step writes to a topic, "bytes" for keys (str keys are UTF-8 encoded).
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import orjson

from shmlog.serialization import Deserializer, MessageField, SerializationContext, Serializer

_LONG = struct.Struct(">q")
_DOUBLE = struct.Struct(">d")


def _to_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"a 'bytes' serializer takes bytes or str, not {type(value).__name__}: "
                    f"name a serializer such as 'json'")


_DESERIALIZERS: dict[str, Callable[[bytes], Any]] = {
    "bytes": lambda b: b,
    "str": lambda b: b.decode(),
    "json": orjson.loads,
    "int": lambda b: _LONG.unpack(b)[0],
    "double": lambda b: _DOUBLE.unpack(b)[0],
}
_SERIALIZERS: dict[str, Callable[[Any], bytes | None]] = {
    "bytes": _to_bytes,
    "str": lambda v: str(v).encode(),
    "json": orjson.dumps,
    "int": _LONG.pack,
    "double": _DOUBLE.pack,
}


def _resolve(spec, by_name, base, what, topic, field):
    """One rule for both directions: a name from by_name, an instance of base (a shmlog or
    confluent-kafka (De)Serializer, called with a SerializationContext) or a callable; None
    always passes through (tombstones, absent keys)."""
    if spec is None:
        spec = "bytes"
    if isinstance(spec, str):
        try:
            fn = by_name[spec]
        except KeyError:
            raise ValueError(f"unknown {what} {spec!r}: one of {sorted(by_name)}, a {base.__name__} "
                             f"or a callable") from None
    elif isinstance(spec, base):
        ctx = SerializationContext(topic, MessageField.KEY if field == "key" else MessageField.VALUE)
        return lambda data: spec(data, ctx)
    elif callable(spec):
        fn = spec
    else:
        raise TypeError(f"a {what} is a name, a {base.__name__} or a callable, not {spec!r}")
    return lambda data: None if data is None else fn(data)


def deserializer(spec: Any, topic: str, field: str) -> Callable[[bytes | None], Any]:
    return _resolve(spec, _DESERIALIZERS, Deserializer, "deserializer", topic, field)


def serializer(spec: Any, topic: str, field: str) -> Callable[[Any], bytes | None]:
    return _resolve(spec, _SERIALIZERS, Serializer, "serializer", topic, field)


def key_bytes(key: Any) -> bytes | None:
    """A key a step computed (group_by) as record-key bytes: bytes as they are, str UTF-8, others str()."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return str(key).encode()
