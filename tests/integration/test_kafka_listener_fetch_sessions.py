"""Fetch sessions (KIP-227) on the Kafka listener: a session is created, then incremental
fetches name only what changed and get back only partitions with something new."""
import datetime
import io
import socket
import struct

import pytest

import shmlog

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
kafka = pytest.importorskip("kafka")

from kio.schema.fetch.v12 import request as freq  # noqa: E402
from kio.schema.fetch.v12.response import FetchResponse  # noqa: E402
from kio.schema.request_header.v2 import RequestHeader  # noqa: E402
from kio.schema.response_header.v1 import ResponseHeader  # noqa: E402
from kio.serial import entity_reader, entity_writer  # noqa: E402

from tests.conftest import create_topic  # noqa: E402
from tests.integration.test_kafka_listener import recv_exact, start_with_listener  # noqa: E402


@pytest.fixture
def kbroker(start_broker):
    b = start_with_listener(start_broker)
    yield b
    b.admin.close()


class Client:
    """One TCP connection sending Fetch v12 requests."""

    def __init__(self, b):
        self.sock = socket.create_connection(("127.0.0.1", int(b.kafka_bootstrap.rsplit(":", 1)[1])), timeout=10)
        self.correlation = 0

    def fetch(self, session_id, epoch, wanted=(), forgotten=()):
        """wanted: [(topic, partition, fetch_offset)] -> (error, session id, {(topic, p): (hw, [values])})."""
        by_topic = {}
        for t, p, offset in wanted:
            by_topic.setdefault(t, []).append(freq.FetchPartition(partition=p, fetch_offset=offset,
                                                                  partition_max_bytes=1 << 20))
        req = freq.FetchRequest(max_wait=datetime.timedelta(milliseconds=10), min_bytes=1, session_id=session_id,
                                session_epoch=epoch, topics=tuple(freq.FetchTopic(topic=t, partitions=tuple(ps))
                                                                  for t, ps in by_topic.items()),
                                forgotten_topics_data=tuple(freq.ForgottenTopic(topic=t, partitions=(p,))
                                                            for t, p in forgotten))
        self.correlation += 1
        out = io.BytesIO()
        entity_writer(RequestHeader)(out, RequestHeader(request_api_key=1, request_api_version=12,
                                                        correlation_id=self.correlation, client_id="sessions"))
        entity_writer(freq.FetchRequest)(out, req)
        body = out.getvalue()
        self.sock.sendall(struct.pack(">i", len(body)) + body)
        reply = recv_exact(self.sock, struct.unpack(">i", recv_exact(self.sock, 4))[0])
        _, used = entity_reader(ResponseHeader)(reply, 0)
        resp, _ = entity_reader(FetchResponse)(reply, used)
        parts = {(t.topic, p.partition_index): (p.high_watermark, p.records) for t in resp.responses
                 for p in t.partitions}
        return int(resp.error_code), resp.session_id, parts

    def close(self):
        self.sock.close()


def produce(b, partition, n):
    p = shmlog.Producer({"bootstrap.servers": b.bootstrap_servers})
    for i in range(n):
        p.produce("t", value=b"v%d" % i, partition=partition)
    p.flush(10)


def test_an_incremental_fetch_returns_only_the_partitions_with_something_new(kbroker):
    create_topic(kbroker.admin, "t", 3)
    produce(kbroker, 0, 2)
    c = Client(kbroker)
    code, sid, parts = c.fetch(0, 0, [("t", 0, 0), ("t", 1, 0), ("t", 2, 0)])
    assert code == 0 and sid > 0
    assert set(parts) == {("t", 0), ("t", 1), ("t", 2)}, "the session's first response is full"
    code, sid2, parts = c.fetch(sid, 1, [("t", 0, 2)])    # partition 0 was read up to offset 2
    assert (code, sid2, parts) == (0, sid, {}), "nothing new anywhere"
    produce(kbroker, 2, 3)
    code, _, parts = c.fetch(sid, 2)
    assert set(parts) == {("t", 2)} and parts[("t", 2)][0] == 3 and parts[("t", 2)][1]
    c.close()


def test_a_forgotten_partition_is_no_longer_fetched_in_the_session(kbroker):
    create_topic(kbroker.admin, "t", 2)
    c = Client(kbroker)
    _, sid, _ = c.fetch(0, 0, [("t", 0, 0), ("t", 1, 0)])
    c.fetch(sid, 1, forgotten=[("t", 1)])
    produce(kbroker, 1, 1)
    produce(kbroker, 0, 1)
    _, _, parts = c.fetch(sid, 2)
    assert set(parts) == {("t", 0)}
    c.close()


def test_a_session_goes_on_over_a_new_connection(kbroker):
    create_topic(kbroker.admin, "t", 1)
    first = Client(kbroker)
    _, sid, _ = first.fetch(0, 0, [("t", 0, 0)])
    first.close()
    produce(kbroker, 0, 1)
    second = Client(kbroker)
    code, sid2, parts = second.fetch(sid, 1)
    second.close()
    assert (code, sid2) == (0, sid) and parts[("t", 0)][0] == 1


def test_an_unknown_session_or_a_wrong_epoch_is_refused_with_kafkas_codes(kbroker):
    create_topic(kbroker.admin, "t", 1)
    c = Client(kbroker)
    _, sid, _ = c.fetch(0, 0, [("t", 0, 0)])
    assert c.fetch(sid, 5)[0] == 71          # INVALID_FETCH_SESSION_EPOCH
    assert c.fetch(sid ^ 0x5A5A, 1)[0] == 70  # FETCH_SESSION_ID_NOT_FOUND
    code, sid_final, parts = c.fetch(sid, -1, [("t", 0, 0)])
    assert (code, sid_final) == (0, 0) and ("t", 0) in parts, "epoch -1: a sessionless full fetch"
    assert c.fetch(sid, 1)[0] == 70, "epoch -1 closed the session"
    c.close()


def test_kafka_python_consumes_several_partitions_through_fetch_sessions(kbroker):
    create_topic(kbroker.admin, "t", 3)
    for p in range(3):
        produce(kbroker, p, 5)
    c = kafka.KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, enable_auto_commit=False,
                            consumer_timeout_ms=10000)
    c.assign([kafka.TopicPartition("t", p) for p in range(3)])
    for p in range(3):
        c.seek(kafka.TopicPartition("t", p), 0)
    got = set()
    for m in c:
        got.add((m.partition, m.offset))
        if len(got) == 15:
            break
    produce(kbroker, 1, 2)
    for m in c:
        got.add((m.partition, m.offset))
        if len(got) == 17:
            break
    c.close()
    assert got == {(p, o) for p in range(3) for o in range(5)} | {(1, 5), (1, 6)}
