"""The one-partition Produce and Fetch (handlers.produce_one, fetch_one): what a client producing
to or consuming from one partition sends, answered by the rules of the full handlers
(produce_topics, fetch_topics) with less around them. Their answers are the full handlers', and
what they do not take they leave untouched for the full handlers. Served in this process by the
listener's own classes against a running broker."""
import datetime
import socket
import struct
import time

import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")

from shmlog._native import lib  # noqa: E402
from shmlog.broker.kafka_listener import handlers, lanes, server, wire  # noqa: E402
from shmlog.log.batch import HEADER  # noqa: E402
from tests.conftest import create_topic  # noqa: E402
from tests.integration.test_kafka_listener import good_batch, start_with_listener  # noqa: E402
from tests.unit.test_kafka_request_shapes import frame  # noqa: E402

CORRELATION_ID = 7
TIMEOUT_MS = 30_000
PRODUCE_VERSIONS = (3, 7, 9)
FETCH_VERSIONS = (4, 11, 12)


@pytest.fixture
def listener(start_broker, data_dir):
    """(the broker, a listener Connection served by hand in this process)."""
    b = start_with_listener(start_broker)
    srv = server.Server(data_dir)
    srv.advertised = ("127.0.0.1", 9092)
    with socket.create_server(("127.0.0.1", 0)) as ls:
        client = socket.create_connection(ls.getsockname())
        accepted, addr = ls.accept()
    conn = server.Connection(srv, accepted, addr)
    yield b, conn
    conn.close("test over")
    client.close()
    srv.logs.close()
    b.admin.close()


def encoded(version, body):
    return b"".join(bytes(p) for p in wire.encode_response(0, version, CORRELATION_ID,
                                                           wire.build(wire.response_class(0, version), body)))


def answer(out, version):
    """The response frame's bytes of what produce_one or produce_topics returned."""
    if isinstance(out, handlers.Pending):
        out = server.Deferred(out, 0, version, CORRELATION_ID).finish()
    elif isinstance(out, dict):
        out = server.encode_response(0, version, CORRELATION_ID, out)
    return b"".join(bytes(p) for p in out)


def full(conn, topic, records, acks):
    out = handlers.produce_topics(conn, ((topic, (lanes.ProducePartition(0, records),)),), acks, TIMEOUT_MS)
    return out.result() if isinstance(out, handlers.Pending) else out


def high_watermark(conn, topic):
    return conn.logs.ring(topic, 0).high_watermark


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
@pytest.mark.parametrize("acks", [1, -1])
@pytest.mark.parametrize("timestamp_type", ["CreateTime", "LogAppendTime"])
def test_a_one_batch_produce_is_answered_byte_for_byte_as_the_full_handler_answers_it(listener, version, acks,
                                                                                      timestamp_type):
    b, conn = listener
    create_topic(b.admin, "t", 1, message_timestamp_type=timestamp_type)
    batch = good_batch(b"v" * 100)
    body = full(conn, "t", batch, acks)
    lean = answer(handlers.produce_one(conn, version, CORRELATION_ID, "t", 0, batch, acks, TIMEOUT_MS), version)
    stamp = conn.logs.ring("t", 0).map.last_log_append_time   # the lean append's, if the topic stamps one
    entry = body["responses"][0]["partition_responses"][0]
    assert entry["error_code"] == 0 and entry["base_offset"] == 0
    assert (entry["log_append_time"] is None) == (timestamp_type == "CreateTime")
    entry.update(base_offset=1, log_append_time=handlers.log_append_time(stamp))
    assert lean == encoded(version, body)


def test_an_acks_0_one_batch_produce_is_appended_and_not_answered(listener):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    assert handlers.produce_one(conn, 9, CORRELATION_ID, "t", 0, good_batch(), 0, TIMEOUT_MS) is None
    assert high_watermark(conn, "t") == 1


def idempotent_batch():
    batch = bytearray(good_batch())
    fields = list(HEADER.unpack_from(batch, 0))
    fields[9], fields[10], fields[11] = 1000, 0, 0   # producer id, epoch, base sequence
    HEADER.pack_into(batch, 0, *fields)
    struct.pack_into(">I", batch, 17, lib.shmlog_crc32c(0, bytes(batch[21:]), len(batch) - 21))
    return bytes(batch)


def corrupt_batch():
    batch = bytearray(good_batch())
    batch[-1] ^= 0xFF
    return bytes(batch)


DECLINED = {
    "two batches": (lambda: good_batch() + good_batch(), 1, 0, 2),
    "a batch whose CRC does not match": (corrupt_batch, 1, 2, 0),            # CORRUPT_MESSAGE
    "an idempotent producer's batch": (idempotent_batch, 1, 0, 1),
    "acks=2": (good_batch, 2, 42, 0),                                         # INVALID_REQUEST
}


@pytest.mark.parametrize("case", DECLINED)
def test_what_the_one_batch_path_does_not_take_it_leaves_untouched_for_the_full_handler(listener, case):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    make, acks, code, appended = DECLINED[case]
    records = make()
    assert handlers.produce_one(conn, 9, CORRELATION_ID, "t", 0, records, acks, TIMEOUT_MS) is handlers.NOT_TAKEN
    assert high_watermark(conn, "t") == 0
    body = lanes.serve(conn, 0, 9, CORRELATION_ID, wire_frame(records, acks))
    assert body["responses"][0]["partition_responses"][0]["error_code"] == code
    assert high_watermark(conn, "t") == appended


def test_an_unknown_partition_is_left_to_the_full_handler(listener):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    assert handlers.produce_one(conn, 9, CORRELATION_ID, "t", 1, good_batch(), 1, TIMEOUT_MS) is handlers.NOT_TAKEN
    assert handlers.produce_one(conn, 9, CORRELATION_ID, "nope", 0, good_batch(), 1, TIMEOUT_MS) is handlers.NOT_TAKEN


def test_a_topic_deleted_and_created_again_is_produced_to_in_its_new_log(listener):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    for _ in range(3):
        handlers.produce_one(conn, 9, CORRELATION_ID, "t", 0, good_batch(), 1, TIMEOUT_MS)
    b.admin.delete_topics(["t"])["t"].result(10)
    create_topic(b.admin, "t", 1)
    handlers.produce_one(conn, 9, CORRELATION_ID, "t", 0, good_batch(), 1, TIMEOUT_MS)
    assert high_watermark(conn, "t") == 1


def wire_frame(records, acks):
    return frame(0, 9, {"transactional_id": None, "acks": acks, "timeout": datetime.timedelta(milliseconds=TIMEOUT_MS),
                        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": records}]}]})


# ---------------------------------------------------------------------------- Fetch

def produced(conn, topic, n):
    for i in range(n):
        assert not isinstance(handlers.produce_one(conn, 9, CORRELATION_ID, topic, 0, good_batch(b"%d" % i), 1,
                                                   TIMEOUT_MS), dict)


def fetch_lean(conn, version, offset, partition_max_bytes=1 << 20, max_wait_ms=0, isolation=0, partition=0,
               min_bytes=1):
    out = handlers.fetch_one(conn, version, CORRELATION_ID, "t", partition, offset, partition_max_bytes, max_wait_ms,
                             min_bytes, 1 << 20, isolation)
    return out if out is handlers.NOT_TAKEN else b"".join(bytes(p) for p in out)


def fetch_full(conn, version, offset, partition_max_bytes=1 << 20, isolation=0, partition=0, max_wait_ms=0,
               min_bytes=1):
    topics = (lanes.FetchTopic("t", (lanes.FetchPartition(partition, offset, partition_max_bytes),)),)
    total, out = handlers.fetch_topics(conn, topics, max_wait_ms / 1000, min_bytes, 1 << 20, isolation)
    body = {"error_code": 0, "session_id": 0, "responses": out, "record_bytes": total}
    return b"".join(bytes(p) for p in server.encode_response(1, version, CORRELATION_ID, body)), body


@pytest.mark.parametrize("version", FETCH_VERSIONS)
@pytest.mark.parametrize("where", ["from the start", "from the middle", "one batch at most", "at the end"])
@pytest.mark.parametrize("isolation", [0, 1])
def test_a_one_partition_fetch_is_answered_byte_for_byte_as_the_full_handler_answers_it(listener, version, where,
                                                                                        isolation):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    produced(conn, "t", 5)
    offset, partition_max_bytes = {"from the start": (0, 1 << 20), "from the middle": (2, 1 << 20),
                                   "one batch at most": (1, 1), "at the end": (5, 1 << 20)}[where]
    lean = fetch_lean(conn, version, offset, partition_max_bytes, isolation=isolation)
    full, body = fetch_full(conn, version, offset, partition_max_bytes, isolation=isolation)
    assert body["responses"][0]["partitions"][0]["error_code"] == 0
    assert lean == full


def producing_on_first_wait(conn):
    """Make the connection's first wait for records produce one first; returns the waits made."""
    wait = conn.wait_for_data
    waits = []

    def produce_then_wait(watch, timeout_s):
        waits.append(timeout_s)
        if len(waits) == 1:
            produced(conn, "t", 1)
        wait(watch, timeout_s)

    conn.wait_for_data = produce_then_wait
    return waits


def test_a_fetch_at_the_end_answers_with_the_record_produced_while_it_waits(listener):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    produced(conn, "t", 1)
    waits = producing_on_first_wait(conn)
    lean = fetch_lean(conn, 12, 1, max_wait_ms=30_000)
    assert len(waits) == 1
    assert lean == fetch_full(conn, 12, 1)[0]


@pytest.mark.parametrize("path", ["one partition", "full"])
def test_a_fetch_waits_until_min_bytes_of_records_are_there(listener, path):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    produced(conn, "t", 1)
    waits = producing_on_first_wait(conn)
    two_batches = 2 * len(good_batch(b"0"))
    if path == "one partition":
        answer = fetch_lean(conn, 12, 0, max_wait_ms=30_000, min_bytes=two_batches)
        assert answer == fetch_full(conn, 12, 0)[0]
    body = fetch_full(conn, 12, 0, max_wait_ms=30_000, min_bytes=two_batches)[1]
    assert len(waits) == 1
    assert len(bytes(body["responses"][0]["partitions"][0]["records"])) == two_batches


@pytest.mark.parametrize("path", ["one partition", "full"])
def test_a_fetch_whose_min_bytes_never_come_answers_with_what_there_is_after_max_wait(listener, path):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    produced(conn, "t", 1)
    started = time.monotonic()
    if path == "one partition":
        answer = fetch_lean(conn, 12, 0, max_wait_ms=300, min_bytes=1 << 20)
        assert answer == fetch_full(conn, 12, 0)[0]
    else:
        body = fetch_full(conn, 12, 0, max_wait_ms=300, min_bytes=1 << 20)[1]
        assert len(bytes(body["responses"][0]["partitions"][0]["records"])) == len(good_batch(b"0"))
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("case", ["an unknown partition", "an offset past the end"])
def test_what_the_one_partition_fetch_does_not_take_it_leaves_to_the_full_handler(listener, case):
    b, conn = listener
    create_topic(b.admin, "t", 1)
    produced(conn, "t", 2)
    partition, offset, code = {"an unknown partition": (1, 0, 3), "an offset past the end": (0, 9, 1)}[case]
    assert fetch_lean(conn, 12, offset, partition=partition) is handlers.NOT_TAKEN
    assert fetch_full(conn, 12, offset, partition=partition)[1]["responses"][0]["partitions"][0]["error_code"] == code
