"""100 producer processes, and 80 zero-copy readers (more than the old 64 of each), on one partition.

Real processes (forked from this test, each with its own Producer or Consumer) hold their
producer slot or reader pin at the same time: a barrier keeps every child inside the partition
until the test has looked at the ring. Before ring.slots a ring had 64 of each and the 65th
process got "all 64 producer slots are taken by live processes".
"""
import multiprocessing
import time

import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog.client.cluster import Cluster

FORK = multiprocessing.get_context("fork")
PRODUCERS = 100
READERS = 80
RECORDS_EACH = 10
TIMEOUT_S = 120.0


def producing_child(bootstrap, topic, index, holding, leave, results):
    try:
        producer = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0})
        for i in range(RECORDS_EACH):
            producer.produce(topic, value=b"p%03d-%02d" % (index, i), partition=0)
        left = producer.flush(60)
        results.put((index, left))
        holding.wait(TIMEOUT_S)  # the slot is still ours: the test counts the taken slots now
        leave.wait(TIMEOUT_S)
        producer.close(10)
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
        results.put((index, repr(exc)))
        raise


def reading_child(bootstrap, topic, index, holding, leave, results):
    try:
        consumer = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{index}"})
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        view = consumer.consume_batch(1000, timeout=60)
        results.put((index, (len(view), view.zero_copy) if view is not None else None))
        holding.wait(TIMEOUT_S)  # the view (and its pin) is still held
        leave.wait(TIMEOUT_S)
        consumer.close()
    except BaseException as exc:  # noqa: BLE001
        results.put((index, repr(exc)))
        raise


def run_children(target, n, conf, topic, look):
    holding, leave = FORK.Barrier(n + 1), FORK.Barrier(n + 1)
    results = FORK.Queue()
    children = [FORK.Process(target=target, args=(conf["bootstrap.servers"], topic, i, holding, leave, results),
                             daemon=True) for i in range(n)]
    try:
        for child in children:
            child.start()
        got = dict(results.get(timeout=TIMEOUT_S) for _ in range(n))
        holding.wait(TIMEOUT_S)
        seen = look()
        leave.wait(TIMEOUT_S)
        for child in children:
            child.join(TIMEOUT_S)
        assert [c.exitcode for c in children] == [0] * n
        return got, seen
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join(10)


def taken(conf, topic, table):
    cluster = Cluster(conf["bootstrap.servers"], "test")
    try:
        ring = cluster.ring(topic, 0)
        rows = ring.producer_slots() if table == "producers" else ring.pins()
        owners = [s.pid for s in rows if (s.pid if table == "producers" else s.in_use)]
        return ring.slot_count, len(owners)
    finally:
        cluster.close()


@pytest.fixture
def many_topic(admin):
    # 4 MiB ring: by default 64 slots; ring.slots raises it for this topic only.
    admin.create_topics([shmlog.NewTopic("many", 1, config={"ring.bytes": str(4 << 20),
                                                            "ring.slots": "256"})])["many"].result()
    return "many"


def test_100_producer_processes_hold_slots_on_one_partition_at_once(conf, many_topic):
    got, (slot_count, holding) = run_children(producing_child, PRODUCERS, conf, many_topic,
                                              lambda: taken(conf, many_topic, "producers"))
    assert got == {i: 0 for i in range(PRODUCERS)}, "every producer delivered all of its records"
    assert slot_count == 256 and holding == PRODUCERS
    consumer = shmlog.Consumer({**conf, "group.id": "check", "check.crcs": True})
    try:
        consumer.assign([TopicPartition(many_topic, 0, OFFSET_BEGINNING)])
        records = []
        deadline = time.monotonic() + 60
        while len(records) < PRODUCERS * RECORDS_EACH and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None:
                assert msg.error() is None, msg.error()
                records.append((msg.offset(), msg.value()))
    finally:
        consumer.close()
    assert [o for o, _ in records] == list(range(PRODUCERS * RECORDS_EACH)), "offsets dense"
    assert sorted(v for _, v in records) == sorted(b"p%03d-%02d" % (p, i) for p in range(PRODUCERS)
                                                  for i in range(RECORDS_EACH))


def test_80_zero_copy_readers_hold_pins_on_one_partition_at_once(conf, many_topic):
    producer = shmlog.Producer({**conf, "acks": 1})
    for i in range(50):
        producer.produce(many_topic, value=b"r%02d" % i, partition=0)
    assert producer.flush(30) == 0
    producer.close(10)
    got, (slot_count, holding) = run_children(reading_child, READERS, conf, many_topic,
                                              lambda: taken(conf, many_topic, "pins"))
    assert got == {i: (50, True) for i in range(READERS)}, "every reader got a zero-copy view of all 50"
    assert slot_count == 256 and holding == READERS
