"""Consumer and Producer behaviours confluent-kafka users rely on: partition EOF events, the
rebalance protocol, group metadata, incremental assignment rules and context managers."""
import time

import pytest

import shmlog
from shmlog import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from tests.conftest import create_topic, stop_leftover_broker

DEADLINE_S = 30.0


@pytest.fixture
def broker(data_dir):
    with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0) as b:
        yield b
    stop_leftover_broker(data_dir)


def produce(conf, topic, n, partition=0):
    with Producer({**conf, "linger.ms": 0}) as p:
        for i in range(n):
            p.produce(topic, str(i).encode(), partition=partition)


def poll_until(consumer, predicate, what):
    """Poll until predicate(msg) holds for a returned message; returns every message seen."""
    seen = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        seen.append(msg)
        if predicate(msg):
            return seen
    raise AssertionError(f"no {what} within {DEADLINE_S} s; saw {[(m.error(), m.offset()) for m in seen]}")


def is_eof(msg):
    return msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF


def joined(consumer):
    poll_until_assigned = time.monotonic() + DEADLINE_S
    while not consumer.assignment():
        assert time.monotonic() < poll_until_assigned, "the consumer was never assigned"
        consumer.poll(0.2)


def test_partition_eof_is_reported_once_per_arrival_at_the_end(conf, admin):
    create_topic(admin, "t")
    produce(conf, "t", 3)
    with Consumer({**conf, "group.id": "g", "enable.partition.eof": True}) as c:
        c.assign([TopicPartition("t", 0, 0)])
        seen = poll_until(c, is_eof, "EOF")
        assert [m.offset() for m in seen] == [0, 1, 2, 3]
        assert (seen[-1].topic(), seen[-1].partition()) == ("t", 0)
        assert c.poll(0.2) is None  # nothing new: no second EOF
        produce(conf, "t", 2)
        seen = poll_until(c, is_eof, "second EOF")
        assert [(m.offset(), is_eof(m)) for m in seen] == [(3, False), (4, False), (5, True)]


def test_an_empty_partition_reports_eof_at_once(conf, admin):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g", "enable.partition.eof": True}) as c:
        c.assign([TopicPartition("t", 0, 0)])
        (msg,) = poll_until(c, is_eof, "EOF")
        assert msg.offset() == 0


def test_without_enable_partition_eof_no_eof_event_is_returned(conf, admin):
    create_topic(admin, "t")
    produce(conf, "t", 1)
    with Consumer({**conf, "group.id": "g"}) as c:
        c.assign([TopicPartition("t", 0, 0)])
        assert poll_until(c, lambda m: True, "a record")[0].offset() == 0
        assert c.poll(0.3) is None


def test_consume_returns_eof_events_among_the_records(conf, admin):
    create_topic(admin, "t")
    produce(conf, "t", 2)
    with Consumer({**conf, "group.id": "g", "enable.partition.eof": True}) as c:
        c.assign([TopicPartition("t", 0, 0)])
        got = []
        deadline = time.monotonic() + DEADLINE_S
        while not any(is_eof(m) for m in got) and time.monotonic() < deadline:
            got.extend(c.consume(10, 0.5))
        assert [(m.offset(), is_eof(m)) for m in got] == [(0, False), (1, False), (2, True)]


def test_an_eof_event_is_not_stored_as_a_consumed_offset(conf, admin):
    create_topic(admin, "t")
    produce(conf, "t", 3)
    with Consumer({**conf, "group.id": "g", "enable.partition.eof": True, "auto.offset.reset": "earliest",
                   "enable.auto.commit": False}) as c:
        c.subscribe(["t"])
        poll_until(c, is_eof, "EOF")
        c.commit(asynchronous=False)
        assert c.committed([TopicPartition("t", 0)])[0].offset == 3


def test_rebalance_protocol_is_none_until_subscribed_then_the_assignors(conf, admin):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "eager"}) as c:
        assert c.rebalance_protocol() == "NONE"
        c.subscribe(["t"])
        assert c.rebalance_protocol() == "EAGER"
    with Consumer({**conf, "group.id": "coop", "partition.assignment.strategy": "cooperative-sticky"}) as c:
        c.subscribe(["t"])
        assert c.rebalance_protocol() == "COOPERATIVE"


def test_incremental_assign_in_an_eager_group_raises_state_error(conf, admin):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"}) as c:
        c.subscribe(["t"])
        joined(c)
        for call in (c.incremental_assign, c.incremental_unassign):
            with pytest.raises(KafkaException) as raised:
                call([TopicPartition("t", 0)])
            assert raised.value.args[0].code() == KafkaError._STATE
            assert "EAGER" in raised.value.args[0].str()


def test_incremental_assign_works_without_a_group_subscription(conf, admin):
    create_topic(admin, "t", partitions=2)
    with Consumer({**conf, "group.id": "g"}) as c:
        c.incremental_assign([TopicPartition("t", 0, 0)])
        c.incremental_assign([TopicPartition("t", 1, 0)])
        assert sorted(tp.partition for tp in c.assignment()) == [0, 1]


def test_consumer_group_metadata_names_the_group_member_and_generation(conf, admin):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"}) as c:
        before = c.consumer_group_metadata()
        assert (before.group_id, before.generation_id, before.member_id) == ("g", -1, "")
        c.subscribe(["t"])
        joined(c)
        meta = c.consumer_group_metadata()
        assert meta.group_id == "g" and meta.member_id == c.memberid() and meta.generation_id >= 1


def test_consumer_group_metadata_needs_a_group_id(conf, admin):
    with Consumer(conf) as c, pytest.raises(KafkaException) as raised:
        c.consumer_group_metadata()
    assert raised.value.args[0].code() == KafkaError._UNKNOWN_GROUP


def test_leaving_a_consumer_with_block_closes_it(conf, admin):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g"}) as c:
        c.assign([TopicPartition("t", 0, 0)])
    with pytest.raises(RuntimeError, match="closed"):
        c.poll(0)


def test_leaving_a_producer_with_block_delivers_what_was_queued(conf, admin):
    create_topic(admin, "t")
    reports = []
    with Producer({**conf, "linger.ms": 60_000}) as p:  # nothing would go out before the block ends
        for _ in range(5):
            p.produce("t", b"v", on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert reports == [(None, i) for i in range(5)]
