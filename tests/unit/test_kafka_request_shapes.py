"""The listener's one-partition lane reads Produce and Fetch requests in C
(csrc/fast/kafka_request.c); kio's decoding is the definition. For every served version, what
C reads is what kio decodes, the shapes the lane does not take are None, and mangled frames
never make C read something kio does not."""
import datetime
import io
import random

import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")

from kio.index import load_request_schema  # noqa: E402
from kio.serial import entity_writer  # noqa: E402

from shmlog._native import _fast  # noqa: E402
from shmlog.broker.kafka_listener import wire  # noqa: E402
from shmlog.broker.kafka_listener.server import APIS  # noqa: E402

PRODUCE_VERSIONS = range(APIS[0][0], APIS[0][1] + 1)
FETCH_VERSIONS = range(APIS[1][0], APIS[1][1] + 1)
MS = datetime.timedelta(milliseconds=1)
TOPICS = ("t", "a-topic-name-of-some-length", "ü" * 40, "x" * 249)


def frame(api_key, version, request_values, client_id="client"):
    cls = load_request_schema(api_key, version)
    header_cls = cls.__header_schema__
    out = io.BytesIO()
    entity_writer(header_cls)(out, wire.build(header_cls, {"request_api_key": api_key, "request_api_version": version,
                                                           "correlation_id": 7, "client_id": client_id}))
    entity_writer(cls)(out, wire.build(cls, request_values))
    return out.getvalue()


def produce_values(rnd, topic, records, partitions=1, topics=1, transactional_id=None):
    return {"transactional_id": transactional_id, "acks": rnd.choice((-1, 0, 1)),
            "timeout": datetime.timedelta(milliseconds=rnd.randrange(1 << 31)),
            "topic_data": [{"name": topic, "partition_data": [{"index": rnd.randrange(1 << 31), "records": records}
                                                              for _ in range(partitions)]} for _ in range(topics)]}


def fetch_values(rnd, topic, partitions=1, topics=1, session=(0, -1), forgotten=()):
    return {"cluster_id": rnd.choice((None, "cluster")), "replica_id": -1,
            "max_wait": datetime.timedelta(milliseconds=rnd.randrange(1 << 31)),
            "min_bytes": rnd.randrange(-1, 1 << 31), "max_bytes": rnd.randrange(1 << 31),
            "isolation_level": rnd.choice((0, 1)), "session_id": session[0], "session_epoch": session[1],
            "forgotten_topics_data": [{"topic": t, "partitions": (0, 1)} for t in forgotten],
            "rack_id": rnd.choice(("", "rack-1")),
            "topics": [{"topic": topic, "partitions": [
                {"partition": rnd.randrange(1 << 31), "current_leader_epoch": rnd.randrange(-1, 1 << 31),
                 "fetch_offset": rnd.randrange(1 << 63), "last_fetched_epoch": rnd.randrange(-1, 1 << 31),
                 "log_start_offset": rnd.randrange(-1, 1 << 63), "partition_max_bytes": rnd.randrange(1 << 31)}
                for _ in range(partitions)]} for _ in range(topics)]}


def kio_produce(body, version):
    _, req = wire.decode_request(body)
    td = req.topic_data[0]
    pd = td.partition_data[0]
    return (req.acks, req.timeout // MS, td.name, pd.index), bytes(pd.records)


def kio_fetch(body, version):
    _, req = wire.decode_request(body)
    t = req.topics[0]
    fp = t.partitions[0]
    return (req.max_wait // MS, req.min_bytes, req.max_bytes if version >= 3 else 0x7FFFFFFF,
            getattr(req, "isolation_level", 0), t.topic, fp.partition, fp.fetch_offset, fp.partition_max_bytes)


def c_produce(body, version):
    shape = _fast.kafka_produce_request(body, version)
    if shape is None:
        return None
    *fields, start, end = shape
    return tuple(fields), body[start:end]


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_a_one_partition_produce_is_read_as_kio_decodes_it(version):
    rnd = random.Random(version)
    for topic in TOPICS:
        for records_bytes in (0, 1, 61, 127, 128, 16383, 16384, 70_000):
            body = frame(0, version, produce_values(rnd, topic, rnd.randbytes(records_bytes)),
                         client_id=rnd.choice((None, "", "client-ü")))
            assert c_produce(body, version) == kio_produce(body, version)


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_produce_shapes_the_lane_does_not_take_are_none(version):
    rnd = random.Random(version)
    for values in (produce_values(rnd, "t", b"x", partitions=2), produce_values(rnd, "t", b"x", topics=2),
                   produce_values(rnd, "t", b"x", partitions=0), produce_values(rnd, "t", b"x", topics=0),
                   produce_values(rnd, "t", b"x", transactional_id="txn"), produce_values(rnd, "t", None),
                   produce_values(rnd, "", b"x")):
        assert _fast.kafka_produce_request(frame(0, version, values), version) is None


@pytest.mark.parametrize("version", FETCH_VERSIONS)
def test_a_one_partition_sessionless_fetch_is_read_as_kio_decodes_it(version):
    rnd = random.Random(version)
    for topic in TOPICS:
        for _ in range(20):
            body = frame(1, version, fetch_values(rnd, topic), client_id=rnd.choice((None, "", "client-ü")))
            assert _fast.kafka_fetch_request(body, version) == kio_fetch(body, version)


@pytest.mark.parametrize("version", FETCH_VERSIONS)
def test_fetch_shapes_the_lane_does_not_take_are_none(version):
    rnd = random.Random(version)
    shapes = [fetch_values(rnd, "t", partitions=2), fetch_values(rnd, "t", topics=2),
              fetch_values(rnd, "t", partitions=0), fetch_values(rnd, "t", topics=0), fetch_values(rnd, "")]
    if version >= 7:
        shapes += [fetch_values(rnd, "t", session=(0, 0)), fetch_values(rnd, "t", session=(5, 3)),
                   fetch_values(rnd, "t", session=(5, -1)), fetch_values(rnd, "t", forgotten=("u",))]
    for values in shapes:
        assert _fast.kafka_fetch_request(frame(1, version, values), version) is None


def mangled(rnd, body):
    """body truncated or with bytes changed; its api key and version (what the listener looks at
    before the lane) stay."""
    body = bytearray(body)
    how = rnd.randrange(3)
    if how == 0:
        return bytes(body[:rnd.randrange(4, len(body))])
    for _ in range(rnd.randrange(1, 4)):
        at = rnd.randrange(4, len(body))
        body[at] = rnd.randrange(256) if how == 1 else body[at] ^ (1 << rnd.randrange(8))
    return bytes(body)


@pytest.mark.parametrize("api_key", [0, 1])
def test_mangled_frames_are_never_read_other_than_kio_reads_them(api_key):
    rnd = random.Random(api_key)
    versions = PRODUCE_VERSIONS if api_key == 0 else FETCH_VERSIONS
    read = c_produce if api_key == 0 else _fast.kafka_fetch_request
    reference = kio_produce if api_key == 0 else kio_fetch
    checked = 0
    for _ in range(3000):
        version = rnd.choice(versions)
        values = produce_values(rnd, "topic", rnd.randbytes(40)) if api_key == 0 else fetch_values(rnd, "topic")
        body = mangled(rnd, frame(api_key, version, values))
        ours = read(body, version)
        if ours is None:
            continue
        try:
            theirs = reference(body, version)
        except wire.BadFrame:
            continue    # a tagged field kio reads (Fetch's cluster id) and Kafka's brokers skip when unknown
        assert ours == theirs
        checked += 1
    assert checked > 300
