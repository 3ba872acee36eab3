"""The listener's connection loop with pipelined requests, large frames and large fetches:
responses come back in request order, an acks=all Produce only once its records are fsynced
(while the Produce requests behind it are appended meanwhile), a request larger than the
read-ahead buffer arrives whole, and a Fetch goes on past one ring fetch's frame table."""
import datetime
import io
import os
import socket
import struct
import time

import pytest

import shmlog

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
ck = pytest.importorskip("confluent_kafka")

from kio.schema.api_versions.v0.request import ApiVersionsRequest  # noqa: E402
from kio.schema.fetch.v12 import request as freq  # noqa: E402
from kio.schema.fetch.v12.response import FetchResponse  # noqa: E402
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData  # noqa: E402
from kio.schema.produce.v9.response import ProduceResponse  # noqa: E402
from kio.schema.request_header.v1 import RequestHeader as RequestHeaderV1  # noqa: E402
from kio.schema.request_header.v2 import RequestHeader  # noqa: E402
from kio.schema.response_header.v1 import ResponseHeader  # noqa: E402
from kio.serial import entity_reader, entity_writer  # noqa: E402

from shmlog.broker.kafka_listener import handlers, server  # noqa: E402
from tests.conftest import create_topic  # noqa: E402
from tests.integration.test_kafka_listener import good_batch, recv_exact, start_with_listener  # noqa: E402


@pytest.fixture
def kbroker(start_broker):
    b = start_with_listener(start_broker)
    yield b
    b.admin.close()


def connect(b):
    return socket.create_connection(("127.0.0.1", int(b.kafka_bootstrap.rsplit(":", 1)[1])), timeout=30)


def frame(api_key, version, correlation_id, request, header=RequestHeader):
    out = io.BytesIO()
    entity_writer(header)(out, header(request_api_key=api_key, request_api_version=version,
                                      correlation_id=correlation_id, client_id="pipelining"))
    entity_writer(type(request))(out, request)
    body = out.getvalue()
    return struct.pack(">i", len(body)) + body


def produce_frame(correlation_id, records, acks):
    return frame(0, 9, correlation_id, ProduceRequest(
        transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=30),
        topic_data=(TopicProduceData(name="t", partition_data=(PartitionProduceData(index=0, records=records),)),)))


def read_reply(sock):
    return recv_exact(sock, struct.unpack(">i", recv_exact(sock, 4))[0])


def produce_reply(reply):
    header, used = entity_reader(ResponseHeader)(reply, 0)
    resp, _ = entity_reader(ProduceResponse)(reply, used)
    part = resp.responses[0].partition_responses[0]
    return header.correlation_id, int(part.error_code), part.base_offset


def flushed_offset(b, topic="t"):
    status = b.admin._cluster.control.request("status")
    return [x["flushed_offset"] for x in status["partitions"] if x["topic"] == topic][0]


def test_pipelined_acks_all_produce_requests_are_answered_in_order_each_once_its_records_are_fsynced(kbroker):
    create_topic(kbroker.admin, "t", 1)
    frames = [produce_frame(i, good_batch(b"v%d" % i), -1) for i in range(1, 21)]
    frames.append(frame(18, 0, 21, ApiVersionsRequest(), header=RequestHeaderV1))   # not a Produce: in order too
    frames += [produce_frame(i, good_batch(b"v%d" % i), -1) for i in range(22, 32)]
    with connect(kbroker) as s:
        s.sendall(b"".join(frames))   # all at once: the listener reads them while earlier fsyncs are pending
        offset = 0
        for i in range(1, 32):
            reply = read_reply(s)
            if i == 21:
                assert struct.unpack_from(">i", reply, 0)[0] == 21   # ApiVersions: header v0
                continue
            assert produce_reply(reply) == (i, 0, offset)
            # The flushed offset only grows: once this answer is here, it covers the record.
            assert flushed_offset(kbroker) > offset
            offset += 1
    c = shmlog.Consumer({"bootstrap.servers": kbroker.bootstrap_servers, "group.id": "g"})
    c.assign([shmlog.TopicPartition("t", 0, 0)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 30 and time.monotonic() < deadline:
        got += [m.value() for m in c.consume(100, 0.5) if not m.error()]
    c.close()
    assert got == [b"v%d" % i for i in list(range(1, 21)) + list(range(22, 32))]


def test_requests_larger_than_the_read_ahead_buffer_arrive_whole_between_small_ones(kbroker):
    create_topic(kbroker.admin, "t", 1)
    big = [os.urandom(server.READ_BUFFER_BYTES * k + 123) for k in (3, 20)]
    values = [big[0], b"small", big[1], b"small again"]
    with connect(kbroker) as s:
        s.sendall(b"".join(produce_frame(i, good_batch(v), 1) for i, v in enumerate(values)))
        assert [produce_reply(read_reply(s)) for _ in values] == [(i, 0, i) for i in range(len(values))]
    c = ck.Consumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "g", "enable.auto.commit": False})
    c.assign([ck.TopicPartition("t", 0, 0)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(values) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == values


def fetch_batches(sock, offset, partition_max_bytes):
    """One Fetch v12 of t-0: [(base offset, batch bytes)] of the records returned."""
    req = freq.FetchRequest(max_wait=datetime.timedelta(milliseconds=10), min_bytes=1, isolation_level=0,
                            session_id=0, session_epoch=-1, forgotten_topics_data=(), topics=(freq.FetchTopic(
                                topic="t", partitions=(freq.FetchPartition(
                                    partition=0, fetch_offset=offset, partition_max_bytes=partition_max_bytes),)),))
    sock.sendall(frame(1, 12, 1, req))
    reply = read_reply(sock)
    _, used = entity_reader(ResponseHeader)(reply, 0)
    resp, _ = entity_reader(FetchResponse)(reply, used)
    records = resp.responses[0].partitions[0].records or b""
    out, pos = [], 0
    while pos < len(records):
        base, length = struct.unpack_from(">qi", records, pos)
        out.append((base, records[pos:pos + 12 + length]))
        pos += 12 + length
    return out


def test_a_fetch_goes_on_past_a_frame_tables_worth_of_small_batches_and_keeps_to_its_max_bytes(kbroker):
    create_topic(kbroker.admin, "t", 1)
    n = handlers.FRAMES_PER_FETCH * 2 + 50     # one-record batches: one per Produce request
    with connect(kbroker) as s:
        s.sendall(b"".join(produce_frame(i, good_batch(b"x%04d" % i), 1) for i in range(n)))
        assert [produce_reply(read_reply(s))[1:] for _ in range(n)] == [(0, i) for i in range(n)]
        batches = fetch_batches(s, 0, 1 << 20)
        assert [base for base, _ in batches] == list(range(n))
        size = len(batches[0][1])
        assert all(len(b) == size for _, b in batches)
        # partition_max_bytes keeps the response to whole batches within it (at least one).
        assert [base for base, _ in fetch_batches(s, 7, size * 300 + size // 2)] == list(range(7, 307))
        assert [base for base, _ in fetch_batches(s, 3, 1)] == [3]
        assert fetch_batches(s, 100, 1 << 20) == batches[100:]


def test_fetch_responses_of_many_large_batches_are_read_whole_by_confluent_kafka(kbroker):
    create_topic(kbroker.admin, "t", 1)
    values = [os.urandom(4000) for _ in range(400)]     # 1.6 MB: responses over SPLIT_RESPONSE_BYTES
    p = shmlog.Producer({"bootstrap.servers": kbroker.bootstrap_servers, "linger.ms": 5})
    for v in values:
        p.produce("t", value=v, partition=0)
    p.flush(30)
    c = ck.Consumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "g", "enable.auto.commit": False})
    c.assign([ck.TopicPartition("t", 0, 0)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(values) and time.monotonic() < deadline:
        got += [(m.offset(), m.value()) for m in c.consume(500, 0.5) if not m.error()]
    c.close()
    assert got == list(enumerate(values))
