"""Kafka request and response frames, through kio's classes generated from Kafka's own message
definitions: no message layout is written by hand here.

A frame is a 4-byte big-endian size, then a request header (v1, or v2 for flexible versions)
and the body. Responses carry header v0 (v1 for flexible versions, except ApiVersions, whose
response header is always v0 so a client can read it before it knows what we speak).
"""
import dataclasses
import datetime
import io
import struct
import typing

from kio.index import load_payload_module, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

SIZE = struct.Struct(">i")
HEADER_PREFIX = struct.Struct(">hhi")   # api key, api version, correlation id: the same in every header
API_VERSIONS = 18


class BadFrame(Exception):
    """A request that cannot be decoded; the connection is closed after it (Kafka does too)."""


def peek_header(frame):
    """(api_key, api_version, correlation_id) of a frame body, or BadFrame."""
    if len(frame) < HEADER_PREFIX.size:
        raise BadFrame(f"a request of {len(frame)} bytes is shorter than a request header")
    return HEADER_PREFIX.unpack_from(frame, 0)


def decode_request(frame):
    """(header, request) of one frame body; BadFrame when it does not decode as the schema says.

    Bytes after the last field are ignored, as Kafka's brokers ignore them: librdkafka 2.x sends
    a few after a Metadata v12 request for all topics."""
    api_key, version, _ = peek_header(frame)
    schema = load_request_schema(api_key, version)
    header_schema = schema.__header_schema__
    try:
        header, used = entity_reader(header_schema)(frame, 0)
        request, _ = entity_reader(schema)(frame, used)
    except Exception as exc:  # noqa: BLE001 - kio raises several kinds for bad bytes; all mean the same
        raise BadFrame(f"api key {api_key} v{version} does not decode: {exc}") from None
    return header, request


def encode_response(api_key, version, correlation_id, response):
    """The whole response frame (size included)."""
    header_schema = response.__header_schema__
    out = io.BytesIO()
    out.write(b"\0\0\0\0")
    if api_key == API_VERSIONS:
        out.write(struct.pack(">i", correlation_id))
    else:
        entity_writer(header_schema)(out, header_schema(correlation_id=correlation_id))
    entity_writer(type(response))(out, response)
    data = out.getbuffer()
    SIZE.pack_into(data, 0, len(data) - 4)
    return bytes(data)


def response_class(api_key, version):
    return load_response_schema(api_key, version)


def response_module(api_key, version):
    return load_payload_module(api_key, version, EntityType.response)


# ---------------------------------------------------------------------------- building responses

_ZERO = {"int8": 0, "int16": 0, "int32": 0, "int64": 0, "uint16": 0, "float64": 0.0, "bool": False,
         "string": "", "bytes": b"", "records": None, "uuid": None, "error_code": ErrorCode.none,
         "timedelta_i32": datetime.timedelta(0), "timedelta_i64": datetime.timedelta(0),
         "datetime_i64": None}
_hints = {}


def _type_hints(cls):
    hints = _hints.get(cls)
    if hints is None:
        hints = _hints[cls] = typing.get_type_hints(cls)
    return hints


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
        return ErrorCode(int(value))
    if kafka_type in ("timedelta_i32", "timedelta_i64") and isinstance(value, int):
        return datetime.timedelta(milliseconds=value)
    return value


def build(cls, values):
    """An instance of kio class `cls` from a dict: keys the class (this version) has are used,
    others ignored, so one dict serves every version; fields not given take their schema
    default or the type's zero. Nested entities are dicts (lists of dicts for arrays)."""
    kwargs = {}
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        kafka_type = f.metadata.get("kafka_type")
        if f.name in values:
            value = values[f.name]
            if kafka_type is None:
                entity = _entity_of(hints[f.name])
                if isinstance(value, (list, tuple)):
                    value = tuple(build(entity, v) if isinstance(v, dict) else v for v in value)
                elif isinstance(value, dict):
                    value = build(entity, value)
            else:
                value = _convert(kafka_type, value)
            kwargs[f.name] = value
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        elif kafka_type is None:
            hint = hints[f.name]
            kwargs[f.name] = () if typing.get_origin(hint) is tuple else None
        else:
            optional = type(None) in typing.get_args(hints[f.name])
            kwargs[f.name] = None if optional and kafka_type in ("string", "bytes") else _ZERO[kafka_type]
    return cls(**kwargs)
