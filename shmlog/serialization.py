"""Serializers and deserializers, as confluent_kafka.serialization has them.

The byte layouts are Kafka's, so records move between shmlog and Kafka unchanged:

| class | bytes | Kafka's Java twin |
| --- | --- | --- |
| StringSerializer(codec) | the encoded text (UTF-8 by default) | StringSerializer |
| IntegerSerializer | 4 bytes, big-endian two's complement | IntegerSerializer |
| LongSerializer | 8 bytes, big-endian two's complement | LongSerializer |
| DoubleSerializer | 8 bytes, IEEE 754 big-endian | DoubleSerializer |
| JSONSerializer | UTF-8 JSON text (orjson) | the JSON a Java app writes by hand or with Jackson |
| NumpySerializer | a `.npy` image: magic, version, dtype/shape/order header, data | (none; numpy.load) |

`None` serializes to `None` (a null key or value) and back, as in Kafka. A value that
cannot be serialized raises SerializationError naming the field (`field` holds its path,
e.g. `legs[2].price`); inside a SerializingProducer/DeserializingConsumer it arrives as
Key/ValueSerializationError or Key/ValueDeserializationError, as confluent-kafka raises them.
Avro and Protobuf serializers live in shmlog.schema_registry.
"""
from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from shmlog.errors import KafkaError, KafkaException, reason_of

if TYPE_CHECKING:
    from shmlog._types import HeadersType
    from shmlog.message import Message

__all__ = [
    "MessageField", "SerializationContext", "SerializationError", "Serializer", "Deserializer",
    "StringSerializer", "StringDeserializer", "IntegerSerializer", "IntegerDeserializer",
    "LongSerializer", "LongDeserializer", "DoubleSerializer", "DoubleDeserializer",
    "JSONSerializer", "JSONDeserializer", "NumpySerializer", "NumpyDeserializer",
    "ConsumeError", "ProduceError", "KeySerializationError", "ValueSerializationError",
    "KeyDeserializationError", "ValueDeserializationError",
]


class MessageField:
    """Which part of a record a serializer is working on."""
    NONE = "none"
    KEY = "key"
    VALUE = "value"


class SerializationContext:
    """What a serializer is told about the record: topic, field (MessageField) and headers."""

    __slots__ = ("topic", "field", "headers")

    def __init__(self, topic: str | None, field: str, headers: HeadersType | None = None) -> None:
        self.topic = topic
        self.field = field
        self.headers = headers

    def __repr__(self):
        return f"SerializationContext(topic={self.topic!r}, field={self.field!r})"


def _where(ctx):
    if ctx is None:
        return ""
    return f" ({ctx.field} of topic {ctx.topic!r})" if ctx.topic is not None else f" ({ctx.field})"


class SerializationError(KafkaException):
    """A value that cannot be (de)serialized. `field` is the path of the offending field
    inside the value (`legs[2].price`), or None when the whole value is at fault."""

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class _ClientError(KafkaException):
    """confluent_kafka.error._KafkaClientError: a KafkaError plus the cause and the message."""

    def __init__(self, kafka_error: KafkaError, exception: BaseException | None = None,
                 kafka_message: Message | None = None) -> None:
        super().__init__(kafka_error)
        self.exception = exception
        self.kafka_message = kafka_message

    @property
    def code(self) -> int:  # type: ignore[override]
        return self.args[0].code()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.args[0].name()


class ConsumeError(_ClientError):
    """A consumed record the DeserializingConsumer could not hand out."""


class ProduceError(_ClientError):
    """A record the SerializingProducer could not send."""


def _field_of(exception):
    return getattr(exception, "field", None)


class KeyDeserializationError(ConsumeError, SerializationError):
    def __init__(self, exception: BaseException | None = None, kafka_message: Message | None = None) -> None:
        super().__init__(KafkaError(KafkaError._KEY_DESERIALIZATION, reason_of(exception)),
                         exception=exception, kafka_message=kafka_message)
        self.field = _field_of(exception)


class ValueDeserializationError(ConsumeError, SerializationError):
    def __init__(self, exception: BaseException | None = None, kafka_message: Message | None = None) -> None:
        super().__init__(KafkaError(KafkaError._VALUE_DESERIALIZATION, reason_of(exception)),
                         exception=exception, kafka_message=kafka_message)
        self.field = _field_of(exception)


class KeySerializationError(ProduceError, SerializationError):
    def __init__(self, exception: BaseException | None = None, kafka_message: Message | None = None) -> None:
        super().__init__(KafkaError(KafkaError._KEY_SERIALIZATION, reason_of(exception)),
                         exception=exception, kafka_message=kafka_message)
        self.field = _field_of(exception)


class ValueSerializationError(ProduceError, SerializationError):
    def __init__(self, exception: BaseException | None = None, kafka_message: Message | None = None) -> None:
        super().__init__(KafkaError(KafkaError._VALUE_SERIALIZATION, reason_of(exception)),
                         exception=exception, kafka_message=kafka_message)
        self.field = _field_of(exception)


class Serializer:
    """Turns an object into bytes: `serializer(obj, ctx)`."""

    __slots__ = ()

    def __call__(self, obj: Any, ctx: SerializationContext | None = None) -> bytes | None:
        raise NotImplementedError


class Deserializer:
    """Turns bytes back into an object: `deserializer(data, ctx)`."""

    __slots__ = ()

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        raise NotImplementedError


# ---------------------------------------------------------------------- strings

class StringSerializer(Serializer):
    """str -> bytes in `codec` (Kafka's StringSerializer is UTF-8)."""

    __slots__ = ("codec",)

    def __init__(self, codec: str = "utf_8") -> None:
        "".encode(codec)  # an unknown codec fails here, not on the first record
        self.codec = codec

    def __call__(self, obj: Any, ctx: SerializationContext | None = None) -> bytes | None:
        if obj is None:
            return None
        if not isinstance(obj, str):
            raise SerializationError(f"StringSerializer: expected str, got {type(obj).__name__}{_where(ctx)}")
        try:
            return obj.encode(self.codec)
        except UnicodeError as exc:
            raise SerializationError(f"StringSerializer: {exc}{_where(ctx)}") from None


class StringDeserializer(Deserializer):
    __slots__ = ("codec",)

    def __init__(self, codec: str = "utf_8") -> None:
        "".encode(codec)
        self.codec = codec

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        if value is None:
            return None
        try:
            return str(value, self.codec)
        except UnicodeError as exc:
            raise SerializationError(f"StringDeserializer: {exc}{_where(ctx)}") from None


# ---------------------------------------------------------------------- numbers

class _Fixed(Serializer):
    __slots__ = ()
    fmt = None
    low = high = None
    kind = ""

    def __call__(self, obj: Any, ctx: SerializationContext | None = None) -> bytes | None:
        if obj is None:
            return None
        if isinstance(obj, bool) or not isinstance(obj, (int, np.integer)):
            raise SerializationError(f"{type(self).__name__}: expected an int, got {type(obj).__name__}{_where(ctx)}")
        if not self.low <= obj <= self.high:
            raise SerializationError(f"{type(self).__name__}: {obj} does not fit a {self.kind} "
                                     f"[{self.low}, {self.high}]{_where(ctx)}")
        return self.fmt.pack(obj)


class _FixedDeserializer(Deserializer):
    __slots__ = ()
    fmt = None

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        if value is None:
            return None
        if len(value) != self.fmt.size:
            raise SerializationError(f"{type(self).__name__}: expected {self.fmt.size} bytes, got "
                                     f"{len(value)}{_where(ctx)}")
        return self.fmt.unpack(value)[0]


class IntegerSerializer(_Fixed):
    """int -> 4 bytes big-endian (Kafka's IntegerSerializer)."""
    __slots__ = ()
    fmt, low, high, kind = struct.Struct(">i"), -(1 << 31), (1 << 31) - 1, "32-bit signed integer"


class IntegerDeserializer(_FixedDeserializer):
    __slots__ = ()
    fmt = struct.Struct(">i")


class LongSerializer(_Fixed):
    """int -> 8 bytes big-endian (Kafka's LongSerializer)."""
    __slots__ = ()
    fmt, low, high, kind = struct.Struct(">q"), -(1 << 63), (1 << 63) - 1, "64-bit signed integer"


class LongDeserializer(_FixedDeserializer):
    __slots__ = ()
    fmt = struct.Struct(">q")


class DoubleSerializer(Serializer):
    """float -> 8 bytes IEEE 754 big-endian (Kafka's DoubleSerializer)."""

    __slots__ = ()
    fmt = struct.Struct(">d")

    def __call__(self, obj: Any, ctx: SerializationContext | None = None) -> bytes | None:
        if obj is None:
            return None
        if isinstance(obj, bool) or not isinstance(obj, (int, float, np.floating, np.integer)):
            raise SerializationError(f"DoubleSerializer: expected a float, got {type(obj).__name__}{_where(ctx)}")
        try:
            return self.fmt.pack(obj)
        except (OverflowError, struct.error) as exc:
            raise SerializationError(f"DoubleSerializer: {exc}{_where(ctx)}") from None


class DoubleDeserializer(_FixedDeserializer):
    __slots__ = ()
    fmt = struct.Struct(">d")


# ---------------------------------------------------------------------- JSON

def _json_problem(obj, default, option, path=""):
    """(path, reason) of the first part of obj orjson refuses, or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str) and not (option & orjson.OPT_NON_STR_KEYS):
                return path or "(root)", f"key {k!r} is a {type(k).__name__}, not a str"
            found = _json_problem(v, default, option, f"{path}.{k}" if path else str(k))
            if found:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _json_problem(v, default, option, f"{path}[{i}]")
            if found:
                return found
        return None
    try:
        orjson.dumps(obj, default=default, option=option)
    except (TypeError, orjson.JSONEncodeError) as exc:
        return path or "(root)", str(exc)
    return None


class JSONSerializer(Serializer):
    """An object -> UTF-8 JSON with orjson (schemaless; for JSON Schema use a registry).

    to_dict(obj, ctx) turns application objects into JSON-ready ones first; `default` and
    `option` are orjson's (NumPy arrays, dataclasses, datetimes and UUIDs work as is).
    """

    __slots__ = ("to_dict", "default", "option")

    def __init__(self, to_dict: Callable[[Any, SerializationContext | None], Any] | None = None,
                 default: Callable[[Any], Any] | None = None, option: int = orjson.OPT_SERIALIZE_NUMPY) -> None:
        self.to_dict = to_dict
        self.default = default
        self.option = option

    def __call__(self, obj: Any, ctx: SerializationContext | None = None) -> bytes | None:
        if obj is None:
            return None
        if self.to_dict is not None:
            obj = self.to_dict(obj, ctx)
        try:
            return orjson.dumps(obj, default=self.default, option=self.option)
        except (TypeError, orjson.JSONEncodeError) as exc:
            found = _json_problem(obj, self.default, self.option)
            path, reason = found if found else (None, str(exc))
            where = f"field {path!r}: " if path else ""
            raise SerializationError(f"JSONSerializer: {where}{reason}{_where(ctx)}", field=path) from None


class JSONDeserializer(Deserializer):
    """UTF-8 JSON -> Python objects with orjson; from_dict(obj, ctx) builds application objects."""

    __slots__ = ("from_dict",)

    def __init__(self, from_dict: Callable[[Any, SerializationContext | None], Any] | None = None) -> None:
        self.from_dict = from_dict

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        if value is None:
            return None
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"JSONDeserializer: invalid JSON: {exc}{_where(ctx)}") from None
        return self.from_dict(obj, ctx) if self.from_dict is not None else obj


# ---------------------------------------------------------------------- NumPy

_NPY_MAGIC = b"\x93NUMPY"
_NPY_PREFIX = 10  # magic (6), version (2), header length (2, little-endian) for version 1.0


class NumpySerializer(Serializer):
    """A NumPy array -> the bytes of a `.npy` file (dtype, shape and order header, then the data).

    The header is padded so the data starts 64 bytes in: a consumer's NumpyDeserializer
    builds the array over the value without copying it. Object arrays are refused (they
    hold pointers, not data). `dtype`/`shape` given here are enforced on every array.
    """

    __slots__ = ("dtype", "shape")

    def __init__(self, dtype: Any = None, shape: tuple[int, ...] | None = None) -> None:
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.shape = None if shape is None else tuple(shape)

    def __call__(self, obj: Any, ctx: SerializationContext | None = None) -> bytes | None:
        if obj is None:
            return None
        if not isinstance(obj, np.ndarray):
            if isinstance(obj, (np.generic, list, tuple)):
                obj = np.asarray(obj)
            else:
                raise SerializationError(f"NumpySerializer: expected a numpy.ndarray, got {type(obj).__name__}"
                                         f"{_where(ctx)}")
        if obj.dtype.hasobject:
            raise SerializationError(f"NumpySerializer: dtype {obj.dtype} holds Python objects{_where(ctx)}",
                                     field=_object_field(obj.dtype))
        if self.dtype is not None and obj.dtype != self.dtype:
            raise SerializationError(f"NumpySerializer: dtype {obj.dtype} is not the declared {self.dtype}"
                                     f"{_where(ctx)}")
        if self.shape is not None and obj.shape != self.shape:
            raise SerializationError(f"NumpySerializer: shape {obj.shape} is not the declared {self.shape}"
                                     f"{_where(ctx)}")
        out = io.BytesIO()
        np.lib.format.write_array(out, obj, allow_pickle=False)
        return out.getvalue()


def _object_field(dtype):
    if dtype.names:
        for name in dtype.names:
            if dtype.fields[name][0].hasobject:
                return name
    return None


class NumpyDeserializer(Deserializer):
    """`.npy` bytes -> a read-only NumPy array over the value itself (np.frombuffer: no copy).

    Only the small header is parsed into Python objects; the array shares memory with
    the value (a bytes object from poll(), or a zero-copy memoryview from consume_batch()),
    so it stays valid as long as that value does.
    """

    __slots__ = ("dtype",)

    def __init__(self, dtype: Any = None) -> None:
        self.dtype = None if dtype is None else np.dtype(dtype)

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        if value is None:
            return None
        view = memoryview(value).cast("B")
        if len(view) < _NPY_PREFIX or bytes(view[:6]) != _NPY_MAGIC:
            raise SerializationError(f"NumpyDeserializer: not a .npy image (bad magic){_where(ctx)}")
        major = view[6]
        if major == 1:
            hlen, start = int.from_bytes(view[8:10], "little"), 10
        elif major in (2, 3):
            hlen, start = int.from_bytes(view[8:12], "little"), 12
        else:
            raise SerializationError(f"NumpyDeserializer: unsupported .npy version {major}{_where(ctx)}")
        try:
            header = io.BytesIO(bytes(view[:start + hlen]))
            np.lib.format.read_magic(header)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(header, max_header_size=1 << 20)
        except (ValueError, SyntaxError) as exc:
            raise SerializationError(f"NumpyDeserializer: bad .npy header: {exc}{_where(ctx)}") from None
        if dtype.hasobject:
            raise SerializationError(f"NumpyDeserializer: dtype {dtype} holds Python objects{_where(ctx)}")
        if self.dtype is not None and dtype != self.dtype:
            raise SerializationError(f"NumpyDeserializer: dtype {dtype} is not the expected {self.dtype}{_where(ctx)}")
        count = math.prod(shape)
        offset = start + hlen
        if len(view) - offset != count * dtype.itemsize:
            raise SerializationError(f"NumpyDeserializer: {len(view) - offset} data bytes for shape {shape} of "
                                     f"{dtype} ({count * dtype.itemsize} expected){_where(ctx)}")
        if count == 0:
            return np.empty(shape, dtype)
        arr = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
        return arr.reshape(shape, order="F" if fortran else "C")


class SerializerBuilder:
    """confluent-kafka's (experimental) base of serializer builders, for names' sake: shmlog's
    SerializingProducer takes built serializers (key.serializer / value.serializer), not
    builders, and refuses key.serializer.builder as an unknown configuration property."""

    __slots__ = []

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        raise NotImplementedError


class DeserializerBuilder:
    """The deserializing counterpart of SerializerBuilder (likewise not taken by shmlog's
    DeserializingConsumer)."""

    __slots__ = []

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        raise NotImplementedError


__all__ += ["SerializerBuilder", "DeserializerBuilder"]
