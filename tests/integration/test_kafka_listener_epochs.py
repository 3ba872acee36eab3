"""OffsetForLeaderEpoch over the Kafka listener: clients check their position against where
the leader epoch ends in the log (KIP-320)."""
import io
import struct

import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
ck = pytest.importorskip("confluent_kafka")

from kio.schema.offset_for_leader_epoch.v4 import request as oreq  # noqa: E402
from kio.schema.offset_for_leader_epoch.v4.response import OffsetForLeaderEpochResponse  # noqa: E402
from kio.schema.request_header.v2 import RequestHeader  # noqa: E402
from kio.schema.response_header.v1 import ResponseHeader  # noqa: E402
from kio.serial import entity_reader, entity_writer  # noqa: E402

from tests.conftest import create_topic  # noqa: E402
from tests.integration.test_kafka_listener import exchange, kconf, produce_tcp, start_with_listener  # noqa: E402


@pytest.fixture
def kbroker(start_broker):
    b = start_with_listener(start_broker)
    yield b
    b.admin.close()


def offset_for_leader_epoch(b, asks):
    """asks: [(topic, partition, current_leader_epoch, leader_epoch)] -> {(topic, p): (code, epoch, end)}."""
    by_topic = {}
    for t, p, current, epoch in asks:
        by_topic.setdefault(t, []).append(oreq.OffsetForLeaderPartition(partition=p, current_leader_epoch=current,
                                                                         leader_epoch=epoch))
    req = oreq.OffsetForLeaderEpochRequest(replica_id=-1, topics=tuple(
        oreq.OffsetForLeaderTopic(topic=t, partitions=tuple(ps)) for t, ps in by_topic.items()))
    out = io.BytesIO()
    entity_writer(RequestHeader)(out, RequestHeader(request_api_key=23, request_api_version=4, correlation_id=1,
                                                    client_id="test"))
    entity_writer(oreq.OffsetForLeaderEpochRequest)(out, req)
    body = out.getvalue()
    reply = exchange(int(b.kafka_bootstrap.rsplit(":", 1)[1]), struct.pack(">i", len(body)) + body)
    _, used = entity_reader(ResponseHeader)(reply, 0)
    resp, _ = entity_reader(OffsetForLeaderEpochResponse)(reply, used)
    return {(t.topic, p.partition): (int(p.error_code), p.leader_epoch, p.end_offset)
            for t in resp.topics for p in t.partitions}


def test_the_current_leader_epoch_ends_at_the_log_end_and_unknown_partitions_are_named(kbroker):
    create_topic(kbroker.admin, "t", 1)
    produce_tcp(kbroker, "t", [b"x"] * 7)
    got = offset_for_leader_epoch(kbroker, [("t", 0, -1, 0), ("nope", 0, -1, 0)])
    assert got[("t", 0)] == (0, 0, 7)
    assert got[("nope", 0)][0] == 3   # UNKNOWN_TOPIC_OR_PARTITION


def test_a_current_leader_epoch_other_than_the_partitions_is_fenced_or_unknown(kbroker):
    create_topic(kbroker.admin, "t", 1)
    assert offset_for_leader_epoch(kbroker, [("t", 0, 3, 0)])[("t", 0)][0] == 76   # UNKNOWN_LEADER_EPOCH


def test_confluent_kafka_detects_a_position_past_the_end_of_its_leader_epoch_as_log_truncation(kbroker):
    create_topic(kbroker.admin, "t", 1)
    produce_tcp(kbroker, "t", [b"x"] * 5)
    c = ck.Consumer(kconf(kbroker, **{"group.id": "g", "auto.offset.reset": "error"}))
    c.assign([ck.TopicPartition("t", 0, 20, leader_epoch=0)])
    errors = []
    for _ in range(40):
        m = c.poll(0.25)
        if m is not None and m.error():
            errors.append(m.error())
            break
    c.close()
    assert len(errors) == 1 and "truncation detected" in errors[0].str()
    assert "broker end offset is 5" in errors[0].str()
