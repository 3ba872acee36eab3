"""The listener's response writer against kio's: byte for byte the same for every response
class the listener can send (every served API version), empty, filled, and with tagged fields
set; and a response split into parts is the same frame as one written whole."""
import dataclasses
import datetime
import io
import uuid

import pytest

pytest.importorskip("kio")

from kio.schema.errors import ErrorCode  # noqa: E402
from kio.serial import entity_writer  # noqa: E402
from kio.serial._introspect import (  # noqa: E402
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)

from shmlog.broker.kafka_listener import server, wire  # noqa: E402

SERVED = sorted({(key, v) for key, (lo, hi, _) in server.APIS.items() for v in range(lo, hi + 1)} | {(18, 0)})

VALUES = {"int8": 3, "int16": 300, "int32": 70_000, "int64": 1 << 40, "uint16": 65_000, "uint32": 1 << 31,
          "uint64": 1 << 60, "float64": 2.5, "bool": True, "string": "naïve topic", "bytes": b"\x00\x01\xff",
          "records": bytes(range(200)), "uuid": uuid.UUID(int=(1 << 100) + 7),
          "error_code": ErrorCode.not_leader_or_follower, "timedelta_i32": datetime.timedelta(milliseconds=1500),
          "timedelta_i64": datetime.timedelta(milliseconds=90_000),
          "datetime_i64": datetime.datetime(2026, 12, 4, 12, 0, 0, 123000, tzinfo=datetime.timezone.utc)}


def filled(cls, tagged, depth=0):
    """An instance of kio class cls with every field given a non-default value (arrays of two),
    tagged fields too when `tagged`."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if get_field_tag(f) is not None and not tagged:
            continue
        kind = classify_field(f)
        if isinstance(kind, EntityTupleField):
            kwargs[f.name] = tuple(filled(kind.type_, tagged, depth + 1) for _ in range(2 if depth < 3 else 0))
        elif isinstance(kind, EntityField):
            kwargs[f.name] = None if is_optional(f) and depth % 2 else filled(kind.type_, tagged, depth + 1)
        else:
            value = VALUES[get_schema_field_type(f)]
            kwargs[f.name] = (value, value) if isinstance(kind, PrimitiveTupleField) else value
    return cls(**kwargs)


def kio_bytes(entity):
    out = io.BytesIO()
    entity_writer(type(entity))(out, entity)
    return out.getvalue()


def ours(entity):
    out = io.BytesIO()
    wire.writer(type(entity))(out, entity)
    return out.getvalue()


@pytest.mark.parametrize("api_key,version", SERVED)
def test_every_response_the_listener_sends_is_written_as_kio_writes_it(api_key, version):
    cls = wire.response_class(api_key, version)
    for entity in (wire.build(cls, {}), filled(cls, tagged=False), filled(cls, tagged=True)):
        assert ours(entity) == kio_bytes(entity)
    header = cls.__header_schema__(correlation_id=123456)
    assert ours(header) == kio_bytes(header)


def test_a_fetch_response_split_into_parts_is_the_frame_written_whole():
    records = bytes(range(256)) * 1024    # over SEPARATE_PART_BYTES: a part of its own
    body = {"error_code": 0, "session_id": 9, "responses": [{"topic": t, "partitions": [
        {"partition_index": p, "error_code": 0, "high_watermark": 10, "last_stable_offset": 10,
         "log_start_offset": 0, "aborted_transactions": None, "preferred_read_replica": -1,
         "records": memoryview(records)[p:]} for p in range(2)]} for t in ("a", "b")]}
    for version in (4, 11, 12):
        response = wire.build(wire.response_class(1, version), body)
        whole = wire.encode_response(1, version, 77, response)
        parts = wire.encode_response(1, version, 77, response, split=True)
        assert len(whole) == 1 and len(parts) > 1
        assert b"".join(bytes(p) for p in parts) == bytes(whole[0])
        frame = bytes(whole[0])
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
