"""Clients an application never closes, as confluent-kafka's may be left: a dropped producer is
collected and gives its ring slot back, and a process that ends with open clients ends cleanly
(their finalizers run after the interpreter's exit handlers and must still find their rings
mapped: real child processes)."""
import gc
import os
import subprocess
import sys
import threading
import time
import weakref

import pytest

import shmlog
from shmlog._native import lib, shm
from shmlog._native.ring import Doorbell
from tests.conftest import collect_until_ended, create_topic, stop_leftover_broker

pytestmark = pytest.mark.timeout(120)

CHILD = """
import sys
import shmlog

data_dir, own_broker = sys.argv[1], sys.argv[2] == "own"
broker = shmlog.Broker(data_dir, **{"ring.bytes": 16 << 20}).start() if own_broker else None
conf = {"bootstrap.servers": shmlog.Broker(data_dir).bootstrap_servers}
admin = shmlog.AdminClient(conf)
admin.create_topics([shmlog.NewTopic("t", 1)])["t"].result()
producer = shmlog.Producer({**conf, "linger.ms": 0})   # no linger thread: collected at exit
for i in range(1000):
    producer.produce("t", b"%d" % i)
producer.flush()
consumer = shmlog.Consumer({**conf, "group.id": "g"})
consumer.assign([shmlog.TopicPartition("t", 0, 0)])
got = 0
while got < 1000:
    got += len(consumer.consume(1000, 10))
batch = consumer.consume_batch(1000, 0.1)   # a ring view that stays open
if own_broker:
    broker.stop()
print("ok", got, flush=True)
# producer, consumer, batch and admin are left for the interpreter's exit to collect
"""


def run_child(data_dir, mode):
    return subprocess.run([sys.executable, "-X", "faulthandler", "-c", CHILD, data_dir, mode],
                          capture_output=True, text=True, timeout=90)


def test_a_process_leaving_its_clients_open_exits_cleanly_while_the_broker_runs(broker):
    done = run_child(broker.data_dir, "shared")
    assert "Fatal Python error" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok 1000")


def test_a_process_leaving_its_clients_open_exits_cleanly_after_its_broker_stopped(data_dir):
    done = run_child(data_dir, "own")
    stop_leftover_broker(data_dir)
    assert "Fatal Python error" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok 1000")


@pytest.mark.parametrize("extra", [{}, {"enable.idempotence": True}], ids=["plain", "idempotent"])
def test_producers_dropped_without_close_give_their_ring_slots_back(conf, admin, extra):
    create_topic(admin, "few-slots", **{"ring.slots": "2"})
    before = set(threading.enumerate())   # clients of earlier tests in this process are not ours to judge
    for i in range(8):   # four times the ring's producer slots, one after the other
        producer = shmlog.Producer({**conf, **extra})   # lingers (linger.ms 5): a thread of its own
        producer.produce("few-slots", b"%d" % i)
        assert producer.flush(10) == 0
        del producer
        lingering = [t for t in threading.enumerate() if t.name == "shmlog-linger" and t not in before]
        assert not collect_until_ended(lingering, 10)
    consumer = shmlog.Consumer({**conf, "group.id": "g"})
    consumer.assign([shmlog.TopicPartition("few-slots", 0, 0)])
    got = []
    while len(got) < 8:
        got += [m.value() for m in consumer.consume(8, 10) if m.error() is None]
    consumer.close()
    assert got == [b"%d" % i for i in range(8)]


def test_a_subscribed_consumer_dropped_without_close_leaves_its_group(conf, admin):
    create_topic(admin, "shared", partitions=2)
    group_conf = {**conf, "group.id": "g", "session.timeout.ms": 60000, "heartbeat.interval.ms": 100}
    keeper = shmlog.Consumer(group_conf)
    keeper.subscribe(["shared"])
    with_keeper = set(threading.enumerate())
    dropped = shmlog.Consumer(group_conf)
    dropped.subscribe(["shared"])
    dropped_threads = [t for t in threading.enumerate() if t not in with_keeper]
    deadline = time.monotonic() + 30
    while not (keeper.assignment() and dropped.assignment()):   # one partition each
        assert time.monotonic() < deadline, "the two consumers never shared the partitions"
        keeper.poll(0.05)
        dropped.poll(0.05)
    del dropped
    assert not collect_until_ended(dropped_threads, 30), "the dropped consumer's threads did not end"
    # Well within session.timeout.ms: the member left when its consumer went, not when it timed out.
    while len(keeper.assignment()) < 2:
        assert time.monotonic() < deadline, f"the survivor has {keeper.assignment()} only"
        keeper.poll(0.05)
    members = admin.describe_consumer_groups(["g"])["g"].result().members
    assert len(members) == 1
    keeper.close()


def test_a_consumer_dropped_while_holding_a_zero_copy_view_does_not_hold_the_ring_back(conf, admin):
    create_topic(admin, "pinned", **{"ring.bytes": "65536"})
    producer = shmlog.Producer({**conf, "linger.ms": 0, "max.block.ms": 5000})   # held back: fails in 5 s
    for i in range(100):
        producer.produce("pinned", b"%d" % i)
    assert producer.flush(10) == 0
    consumer = shmlog.Consumer({**conf, "group.id": "g"})
    consumer.assign([shmlog.TopicPartition("pinned", 0, 0)])
    view = None
    while not view:
        view = consumer.consume_batch(10, 10)    # pins the ring where the view starts
    del consumer, view
    gc.collect()
    value = b"v" * 1000
    for _ in range(2000):    # 2 MB through a 64 KiB ring: 30 laps past the dropped view
        producer.produce("pinned", value)
    assert producer.flush(30) == 0
    producer.close()


def test_consumers_dropped_without_close_give_their_doorbell_slots_back(broker, conf, admin):
    create_topic(admin, "sleepers")
    for _ in range(20):
        consumer = shmlog.Consumer({**conf, "group.id": "g"})
        consumer.assign([shmlog.TopicPartition("sleepers", 0, 0)])
        assert consumer.poll(0.001) is None   # sleeps on its slot
        del consumer
        gc.collect()
    bell = Doorbell.open(shm.doorbell_name(shm.namespace(broker.data_dir)))
    held = [i for i in range(lib.SHMLOG_DOORBELL_SLOTS) if bell.header.slots[i].pid == os.getpid()]
    bell.close()
    assert held == []


def test_a_consumer_with_a_stats_cb_dropped_without_close_is_collected(conf, admin):
    create_topic(admin, "observed")
    before = set(threading.enumerate())
    reports = []
    consumer = shmlog.Consumer({**conf, "group.id": "g", "statistics.interval.ms": 100, "stats_cb": reports.append})
    consumer.subscribe(["observed"])
    while not reports:   # the statistics thread has nudged poll() at least once
        consumer.poll(0.1)
    gone = weakref.ref(consumer)
    threads = [t for t in threading.enumerate() if t.name.startswith("shmlog-") and t not in before]
    del consumer
    assert not collect_until_ended(threads, 30), "still running"
    assert gone() is None
    assert admin.describe_consumer_groups(["g"])["g"].result().members == []
