"""The listener's response templates (shmlog/broker/kafka_listener/templates.py) against kio:
for every served version, the patched copy is byte for byte what kio encodes, and the shapes it
does not keep are left to kio."""
import datetime
import os
import random

import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")

from shmlog.broker.kafka_listener import templates, wire  # noqa: E402
from shmlog.broker.kafka_listener.server import APIS  # noqa: E402

PRODUCE_VERSIONS = range(APIS[0][0], APIS[0][1] + 1)
FETCH_VERSIONS = range(APIS[1][0], APIS[1][1] + 1)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def kio(api_key, version, correlation_id, body):
    parts = wire.encode_response(api_key, version, correlation_id,
                                 wire.build(wire.response_class(api_key, version), body))
    return b"".join(bytes(p) for p in parts)


def joined(parts):
    return b"".join(bytes(p) for p in parts)


def produce_body(rnd, topic):
    append_time = None if rnd.random() < 0.5 else EPOCH + datetime.timedelta(milliseconds=rnd.randrange(1 << 41))
    return {"responses": [{"name": topic, "partition_responses": [
        {"index": rnd.randrange(1 << 31), "error_code": rnd.choice((0, 1, 6, 87)),
         "base_offset": rnd.randrange(-1, 1 << 62), "log_start_offset": rnd.randrange(-1, 1 << 62),
         "log_append_time": append_time}]}]}


def fetch_body(rnd, topic, records):
    return {"error_code": rnd.choice((0, 70)), "session_id": rnd.randrange(1 << 31), "record_bytes": len(records),
            "responses": [{"topic": topic, "partitions": [
                {"partition_index": rnd.randrange(1 << 31), "error_code": rnd.choice((0, 1, 3)),
                 "high_watermark": rnd.randrange(-1, 1 << 62), "last_stable_offset": rnd.randrange(-1, 1 << 62),
                 "log_start_offset": rnd.randrange(-1, 1 << 62), "aborted_transactions": None,
                 "preferred_read_replica": -1, "records": records}]}]}


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_a_one_partition_produce_response_is_what_kio_encodes(version):
    rnd = random.Random(version)
    for topic in ("t", "a-topic-name-of-some-length", "ü" * 40):
        for _ in range(20):
            body, correlation_id = produce_body(rnd, topic), rnd.randrange(1 << 31)
            assert joined(templates.encode(0, version, correlation_id, body)) == kio(0, version, correlation_id, body)


@pytest.mark.parametrize("version", FETCH_VERSIONS)
@pytest.mark.parametrize("records_bytes", [0, 1, 61, 127, 128, 16383, 16384, 70_000])
def test_a_one_partition_fetch_response_is_what_kio_encodes(version, records_bytes):
    rnd = random.Random(version * 100_003 + records_bytes)
    for topic in ("t", "another-topic"):
        records = os.urandom(records_bytes)
        for view in (records, memoryview(bytearray(records))):
            body, correlation_id = fetch_body(rnd, topic, view), rnd.randrange(1 << 31)
            parts = templates.encode(1, version, correlation_id, body)
            assert joined(parts) == kio(1, version, correlation_id, body)
            assert all(len(p) for p in parts)   # the connection's sendmsg loop takes no empty part


@pytest.mark.parametrize("change", [
    lambda b: b["responses"][0]["partition_responses"].append(dict(b["responses"][0]["partition_responses"][0])),
    lambda b: b["responses"].append({"name": "u", "partition_responses": []}),
    lambda b: b["responses"][0]["partition_responses"][0].update(error_message="refused"),
    lambda b: b["responses"][0]["partition_responses"][0].update(record_errors=[]),
])
def test_produce_responses_of_other_shapes_are_left_to_kio(change):
    body = produce_body(random.Random(1), "t")
    change(body)
    assert templates.encode(0, 9, 7, body) is None


@pytest.mark.parametrize("change", [
    lambda b: b["responses"][0]["partitions"].append(dict(b["responses"][0]["partitions"][0])),
    lambda b: b["responses"].append({"topic": "u", "partitions": []}),
    lambda b: b["responses"][0]["partitions"][0].update(aborted_transactions=[{"producer_id": 1, "first_offset": 0}]),
    lambda b: b["responses"][0]["partitions"][0].update(preferred_read_replica=2),
    lambda b: b.update(throttle_time_ms=5),
    lambda b: b.update(responses=[]),
])
def test_fetch_responses_of_other_shapes_are_left_to_kio(change):
    body = fetch_body(random.Random(1), "t", b"abc")
    change(body)
    assert templates.encode(1, 12, 7, body) is None
