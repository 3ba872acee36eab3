"""Kafka request and response frames, through kio's classes generated from Kafka's own message
definitions: no message layout is written by hand here.

A frame is a 4-byte big-endian size, then a request header (v1, or v2 for flexible versions)
and the body. Responses carry header v0 (v1 for flexible versions, except ApiVersions, whose
response header is always v0 so a client can read it before it knows what we speak).

kio's schema classes, readers and writers are looked up once per (api key, version) and kept
(kio resolves a class by name on every lookup); `warm` loads those of the versions current
clients negotiate ahead of their first request. A response is encoded into parts: the small
fields coalesced into byte arrays, each record batch payload (Fetch) left as the buffer it
was read into, so the connection hands them to sendmsg without joining them into one copy.
"""
import dataclasses
import datetime
import io
import struct
import typing

from kio.index import load_payload_module, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.serial._implicit_defaults import get_tagged_field_default
from kio.serial._introspect import EntityField, EntityTupleField, classify_field, get_field_tag, is_optional
from kio.serial._serialize import get_field_writer
from kio.static.constants import EntityType

SIZE = struct.Struct(">i")
HEADER_PREFIX = struct.Struct(">hhi")   # api key, api version, correlation id: the same in every header
API_VERSIONS = 18
SEPARATE_PART_BYTES = 16 << 10          # a written value at least this long becomes a part of its own
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)   # kio's timestamps are datetimes


class BadFrame(Exception):
    """A request that cannot be decoded; the connection is closed after it (Kafka does too)."""


def peek_header(frame):
    """(api_key, api_version, correlation_id) of a frame body, or BadFrame."""
    if len(frame) < HEADER_PREFIX.size:
        raise BadFrame(f"a request of {len(frame)} bytes is shorter than a request header")
    return HEADER_PREFIX.unpack_from(frame, 0)


_request_codecs = {}     # (api key, version) -> (header reader, body reader)
_response_codecs = {}    # (api key, version) -> (response class, header class, header writer)


def _request_codec(api_key, version):
    codec = _request_codecs.get((api_key, version))
    if codec is None:
        schema = load_request_schema(api_key, version)
        codec = _request_codecs[(api_key, version)] = (entity_reader(schema.__header_schema__),
                                                       entity_reader(schema))
    return codec


def decode_request(frame):
    """(header, request) of one frame body; BadFrame when it does not decode as the schema says.

    Bytes after the last field are ignored, as Kafka's brokers ignore them: librdkafka 2.x sends
    a few after a Metadata v12 request for all topics."""
    api_key, version, _ = peek_header(frame)
    read_header, read_body = _request_codec(api_key, version)
    try:
        header, used = read_header(frame, 0)
        request, _ = read_body(frame, used)
    except Exception as exc:  # noqa: BLE001 - kio raises several kinds for bad bytes; all mean the same
        raise BadFrame(f"api key {api_key} v{version} does not decode: {exc}") from None
    return header, request


class Parts:
    """A kio Writable collecting a response as a list of buffers: small writes coalesced into
    byte arrays, a value of SEPARATE_PART_BYTES or more (record batches) kept as given."""
    __slots__ = ("parts", "small", "size")

    def __init__(self):
        self.small = bytearray(4)     # the frame's size, filled in by encode_response
        self.parts = [self.small]
        self.size = 0

    def write(self, data):
        n = len(data)
        self.size += n
        if n >= SEPARATE_PART_BYTES:
            self.parts.append(data)
            self.small = bytearray()
            self.parts.append(self.small)
        else:
            self.small += data
        return n


def _response_codec(api_key, version):
    codec = _response_codecs.get((api_key, version))
    if codec is None:
        cls = load_response_schema(api_key, version)
        codec = _response_codecs[(api_key, version)] = (cls, cls.__header_schema__,
                                                        writer(cls.__header_schema__))
    return codec


# ---------------------------------------------------------------------------- writing entities

_writers = {}
_INT32 = struct.Struct(">i")
_SMALL_UVARINTS = [bytes([n]) for n in range(128)]


def _uvarint(n):
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _array_writer(item, flexible):
    if flexible:   # compact array: length + 1 as an unsigned varint, 0 for null
        def write_array(out, items):
            if items is None:
                out.write(b"\0")
                return
            n = len(items) + 1
            out.write(_SMALL_UVARINTS[n] if n < 128 else _uvarint(n))
            for x in items:
                item(out, x)
    else:
        def write_array(out, items):
            if items is None:
                out.write(b"\xff\xff\xff\xff")
                return
            out.write(_INT32.pack(len(items)))
            for x in items:
                item(out, x)
    return write_array


def writer(cls):
    """A writer of kio entity class cls, byte for byte what kio's entity_writer(cls) writes (see
    tests/unit/test_kafka_listener_wire.py), in about half its time: the layout is kio's (its
    field list, kinds and primitive writers); what is skipped is kio's per-entity work that a
    response rarely needs: a temporary buffer for the tagged fields of every flexible entity
    when none differs from its default (an entity with one that does is written by kio's
    writer), and length values built as checked kio integer types for every array."""
    w = _writers.get(cls)
    if w is not None:
        return w
    flexible = cls.__flexible__
    plain, tags = [], []
    for f in dataclasses.fields(cls):
        if get_field_tag(f) is not None:
            tags.append((f.name, f.default if f.default is not dataclasses.MISSING else get_tagged_field_default(f)))
            continue
        kind = classify_field(f)
        if isinstance(kind, EntityTupleField):
            field_writer = _array_writer(writer(kind.type_), flexible)
        elif isinstance(kind, EntityField) and not is_optional(f):
            field_writer = writer(kind.type_)
        else:   # primitives, arrays of them and nullable entities: kio's own writer
            field_writer = get_field_writer(f, flexible=flexible, is_request_header=False, is_tag=False)
        plain.append((f.name, field_writer))
    plain, tags = tuple(plain), tuple(tags)
    kio_writer = entity_writer(cls)

    def write_fields(out, entity):
        for name, field_writer in plain:
            field_writer(out, getattr(entity, name))

    def write_flexible(out, entity):
        for name, default in tags:
            value = getattr(entity, name)
            if value is not default and value != default:
                kio_writer(out, entity)
                return
        for name, field_writer in plain:
            field_writer(out, getattr(entity, name))
        out.write(b"\0")   # no tagged fields

    w = _writers[cls] = write_flexible if flexible else write_fields
    return w


def encode_response(api_key, version, correlation_id, response, split=False):
    """The whole response frame (size included), as a list of buffers to send in order: one,
    or with split (worth it for large record payloads only: a Python write per field is
    slower than BytesIO's) the record batches as parts of their own."""
    _, header_cls, write_header = _response_codec(api_key, version)
    out = Parts() if split else io.BytesIO(b"\0\0\0\0")
    if not split:
        out.seek(4)
    if api_key == API_VERSIONS:
        out.write(SIZE.pack(correlation_id))
    else:
        write_header(out, header_cls(correlation_id=correlation_id))
    writer(type(response))(out, response)
    if split:
        SIZE.pack_into(out.parts[0], 0, out.size)
        return [p for p in out.parts if len(p)]
    data = out.getbuffer()
    SIZE.pack_into(data, 0, len(data) - 4)
    return [data]


def response_class(api_key, version):
    return _response_codec(api_key, version)[0]


def response_module(api_key, version):
    return load_payload_module(api_key, version, EntityType.response)


def warm(versions):
    """Load and prepare the codecs of (api key, version) pairs ahead of their first request."""
    for api_key, version in versions:
        _request_codec(api_key, version)
        cls = response_class(api_key, version)
        writer(cls)
        _plan(cls)


# ---------------------------------------------------------------------------- building responses

_ZERO = {"int8": 0, "int16": 0, "int32": 0, "int64": 0, "uint16": 0, "float64": 0.0, "bool": False,
         "string": "", "bytes": b"", "records": None, "uuid": None, "error_code": ErrorCode.none,
         "timedelta_i32": datetime.timedelta(0), "timedelta_i64": datetime.timedelta(0),
         "datetime_i64": None}
_ERROR_CODES = {int(code): code for code in ErrorCode}
_CONVERTED = ("error_code", "timedelta_i32", "timedelta_i64")
_plans = {}
_KEEP = object()    # a field with a schema default: left out of the constructor's arguments


def _entity_of(hint):
    """The kio entity class inside `tuple[X, ...]`, `X` or `X | None`, else None."""
    for arg in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(arg):
            return arg
        for inner in typing.get_args(arg):
            if dataclasses.is_dataclass(inner):
                return inner
    return None


def _convert(kafka_type, value):
    if kafka_type == "error_code" and not isinstance(value, ErrorCode):
        code = _ERROR_CODES.get(value)
        return code if code is not None else ErrorCode(int(value))
    if kafka_type in ("timedelta_i32", "timedelta_i64") and isinstance(value, int):
        return datetime.timedelta(milliseconds=value)
    return value


def _plan(cls):
    """Per field of kio class cls: (name, kafka type, nested entity class, value when not given)."""
    plan = _plans.get(cls)
    if plan is not None:
        return plan
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        kafka_type = f.metadata.get("kafka_type")
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            missing = _KEEP
        elif kafka_type is None:
            missing = () if typing.get_origin(hints[f.name]) is tuple else None
        else:
            optional = type(None) in typing.get_args(hints[f.name])
            missing = None if optional and kafka_type in ("string", "bytes") else _ZERO[kafka_type]
        plan.append((f.name, kafka_type, _entity_of(hints[f.name]) if kafka_type is None else None, missing))
    plan = _plans[cls] = tuple(plan)
    return plan


def build(cls, values):
    """An instance of kio class `cls` from a dict: keys the class (this version) has are used,
    others ignored, so one dict serves every version; fields not given take their schema
    default or the type's zero. Nested entities are dicts (lists of dicts for arrays)."""
    kwargs = {}
    for name, kafka_type, entity, missing in _plans.get(cls) or _plan(cls):
        if name in values:
            value = values[name]
            if kafka_type is None:
                if isinstance(value, (list, tuple)):
                    value = tuple(build(entity, v) if isinstance(v, dict) else v for v in value)
                elif isinstance(value, dict):
                    value = build(entity, value)
            elif kafka_type in _CONVERTED:
                value = _convert(kafka_type, value)
            kwargs[name] = value
        elif missing is not _KEEP:
            kwargs[name] = missing
    return cls(**kwargs)
