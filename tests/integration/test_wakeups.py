"""Who wakes whom: the persister's wake policy and the consumers' wait strategies.

The persister sleeps on a timer while records flow (not once per published batch); what needs
it promptly wakes its doorbell slot directly: an acks=all producer, a producer short of ring
space, a ring more than a quarter unpersisted. A blocking consumer spins briefly before it
sleeps, and sleeps for real when idle. Real processes; bounds are generous, never timings.
"""
import multiprocessing
import os
import resource
import time

import psutil
import pytest

import shmlog
import shmlog.client.cluster
from shmlog import TopicPartition
from shmlog._native import ffi, lib
from shmlog._native.ring import Doorbell, Ring
from shmlog._native.shm import unlink
from tests.conftest import create_topic
from tests.unit.test_ring import encode

CAPACITY = 65536


def persister_of(broker):
    for child in psutil.Process(broker.process.pid).children(recursive=True):
        if "shmlog.broker.persister" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no persister process")


def wait_until(check, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.001)


def cluster_ring(conf, topic):
    cluster = shmlog.client.cluster.Cluster(conf["bootstrap.servers"], "test")
    return cluster, cluster.ring(topic, 0)


def wakeups(proc):
    """Voluntary context switches of every thread: how often the process went to sleep."""
    return sum(psutil.Process(t.id).num_ctx_switches().voluntary for t in proc.threads())


# ---------------------------------------------------------------------------- the persister

@pytest.fixture
def persister(broker):
    return persister_of(broker)


def test_the_persister_does_not_wake_per_batch_under_acks_1_but_persists_within_its_bound(conf, admin, persister):
    topic = create_topic(admin, "flow", 1)
    cluster, ring = cluster_ring(conf, topic)
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    p.produce(topic, b"warm-up")
    p.flush(10)
    wait_until(lambda: ring.persisted_offset >= 1, 10, "the first record persisted")
    n = 2000
    before = wakeups(persister)
    next_at = time.perf_counter()
    for i in range(n):               # one batch every 200 us: 10 s of per-batch wake-ups before
        while time.perf_counter() < next_at:
            pass
        next_at += 0.0002
        p.produce(topic, b"%d" % i)
    p.flush(10)
    wait_until(lambda: ring.persisted_offset >= n + 1, 5, "everything persisted after the producer stopped")
    woke = wakeups(persister) - before
    assert woke < n // 4, f"the persister woke {woke} times for {n} batches"
    p.close()
    cluster.close()


def test_an_idle_ring_is_persisted_soon_after_its_first_record(conf, admin):
    topic = create_topic(admin, "idle", 1)
    cluster, ring = cluster_ring(conf, topic)
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    for i in range(3):   # each after the persister went back to watching the idle ring
        p.produce(topic, b"%d" % i)
        p.flush(10)
        wait_until(lambda: ring.persisted_offset >= i + 1, 5, f"record {i} persisted")
    p.close()
    cluster.close()


def test_records_to_idle_partitions_in_turn_are_each_persisted_soon(conf, admin):
    # The idle persister looks at every ring only when its doorbell rang since its last look
    # (persister_scan.py): each record here comes when the persister has gone idle, or is going
    # idle (the delays straddle its 50 ms grace), into a ring nobody wrote for a while.
    partitions = 40
    topic = create_topic(admin, "idle-turns", partitions)
    cluster = shmlog.client.cluster.Cluster(conf["bootstrap.servers"], "test")
    rings = [cluster.ring(topic, p) for p in range(partitions)]
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    for turn, partition in enumerate([(i * 7) % partitions for i in range(partitions)]):
        time.sleep((turn % 5) * 0.03)   # not synchronisation: where in the persister's idling the record lands
        p.produce(topic, b"%d" % turn, partition=partition)
        p.flush(10)
        wait_until(lambda: rings[partition].persisted_offset >= 1, 5, f"the record to partition {partition} persisted")
    p.close()
    cluster.close()


def test_an_acks_all_producer_gets_its_fsync_while_acks_1_records_flow(conf, admin):
    topic = create_topic(admin, "mixed", 1)
    cluster, ring = cluster_ring(conf, topic)
    fast = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    durable = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0})
    reports = []
    started = time.monotonic()
    for i in range(200):
        fast.produce(topic, b"flow-%d" % i)
        if i % 20 == 0:
            durable.produce(topic, b"durable-%d" % i, on_delivery=lambda e, m: reports.append((e, m.offset())))
            assert durable.flush(10) == 0
            offset = reports[-1][1]
            assert reports[-1][0] is None and ring.flushed_offset > offset
    assert len(reports) == 10
    # Ten fsync round trips; a persister that waited for its timer would still pass, but one
    # that never heard the waiter would take max.block.ms-sized slices (100 ms) per report.
    assert time.monotonic() - started < 5
    fast.flush(10)
    fast.close()
    durable.close()
    cluster.close()


def test_an_acks_all_producer_that_never_waits_still_gets_its_records_fsynced(conf, admin):
    """Pipelined acks=all: poll(0) only, never flush(): the producer's flush request is enough
    for the persister to fdatasync (group commit) and the reports to arrive."""
    create_topic(admin, "pipelined", 1)
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 1})
    reports = []
    for i in range(200):
        p.produce("pipelined", b"%d" % i, on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    wait_until(lambda: p.poll(0) is not None and len(reports) == 200, 10, "200 acks=all reports from poll(0)")
    assert reports == [(None, i) for i in range(200)]
    cluster, ring = cluster_ring(conf, "pipelined")
    assert ring.flushed_offset >= 200 and ring.header.persist.flush_requested_offset == 200
    cluster.close()
    p.close()


def test_a_producer_blocked_on_a_full_ring_proceeds(conf, admin):
    topic = create_topic(admin, "small", 1, ring_bytes=CAPACITY)
    cluster, ring = cluster_ring(conf, topic)
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0, "max.block.ms": 20000})
    value = os.urandom(4000)
    n = 400                          # about 25 times the ring
    for i in range(n):
        p.produce(topic, value)
    assert p.flush(30) == 0
    wait_until(lambda: ring.persisted_offset >= n, 10, "everything persisted")
    p.close()
    cluster.close()
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
    got = 0
    while got < n:
        batch = c.consume(1000, timeout=10)
        assert batch, f"only {got} of {n} records read back"
        assert all(m.error() is None and m.value() == value for m in batch)
        got += len(batch)
    c.close()


# ---------------------------------------------------------------------------- the C wake paths

@pytest.fixture
def ring_and_bell(request):
    tag = f"{os.getpid()}.{abs(hash(request.node.name)) % 10**8}"
    ring_name, bell_name = f"/shmlog.test{tag}.r", f"/shmlog.test{tag}.b"
    unlink(ring_name)
    unlink(bell_name)
    ring = Ring.create(ring_name, CAPACITY, "t", 1, 0, start_offset=0)
    bell = Doorbell.create(bell_name)
    yield ring, bell
    ring.close()
    bell.mapping.close()
    unlink(ring_name)
    unlink(bell_name)


def append(ring, bell, slot, value, timeout_ms=0):
    records = encode([value])
    return ring.append(slot, ffi.from_buffer(records), len(records), 1, 0, 0, timeout_ms, bell.ptr)


def test_publishes_do_not_wake_an_unwatching_persister_until_a_quarter_of_the_ring_is_unpersisted(ring_and_bell):
    ring, bell = ring_and_bell
    persister = bell.acquire()
    ring.header.persist.persister_slot = persister + 1
    slot = lib.shmlog_producer_slot_acquire(ring.map, os.getpid(), 0, 1)
    seq = lib.shmlog_doorbell_sequence(bell.ptr, persister)
    wakes = []
    for i in range(40):              # 40 frames of 1 KiB: past 16 KiB (a quarter) once
        append(ring, bell, slot, b"x" * 960)
        wakes.append(lib.shmlog_doorbell_sequence(bell.ptr, persister) - seq)
    assert wakes[0] == 0
    assert wakes[-1] == 1, wakes     # exactly one wake, at the crossing
    crossing = wakes.index(1)
    assert ring.end()[0] >= CAPACITY // 4 and crossing < 20


def test_an_acks_all_waiter_and_a_producer_short_of_space_wake_the_persister_slot(ring_and_bell):
    ring, bell = ring_and_bell
    persister = bell.acquire()
    consumer = bell.acquire()
    ring.header.persist.persister_slot = persister + 1
    slot = lib.shmlog_producer_slot_acquire(ring.map, os.getpid(), 0, 1)
    lib.shmlog_doorbell_watch(ring.map, consumer, 1)    # a consumer sleeping on the ring
    append(ring, bell, slot, b"r")
    p0 = lib.shmlog_doorbell_sequence(bell.ptr, persister)
    c0 = lib.shmlog_doorbell_sequence(bell.ptr, consumer)
    assert lib.shmlog_ring_wait_flushed(ring.map, 0, 1_000_000, bell.ptr) == lib.SHMLOG_EAGAIN
    assert lib.shmlog_doorbell_sequence(bell.ptr, persister) > p0       # the persister was told
    assert lib.shmlog_doorbell_sequence(bell.ptr, consumer) == c0       # the consumer left asleep
    lib.shmlog_doorbell_watch(ring.map, consumer, 0)
    # Fill the ring (nothing is persisted or released), then one more append waits for space.
    with pytest.raises(shmlog.KafkaException):
        for _ in range(100):
            append(ring, bell, slot, b"y" * 4000)
    p1 = lib.shmlog_doorbell_sequence(bell.ptr, persister)
    with pytest.raises(shmlog.KafkaException):
        append(ring, bell, slot, b"y" * 4000, timeout_ms=5)
    assert lib.shmlog_doorbell_sequence(bell.ptr, persister) > p1


def test_a_garbage_persister_slot_in_the_ring_header_is_ignored(ring_and_bell):
    ring, bell = ring_and_bell
    ring.header.persist.persister_slot = 0xFFFFFFFF
    slot = lib.shmlog_producer_slot_acquire(ring.map, os.getpid(), 0, 1)
    for _ in range(40):
        append(ring, bell, slot, b"x" * 960)
    assert lib.shmlog_ring_wait_flushed(ring.map, 0, 1_000_000, bell.ptr) == lib.SHMLOG_EAGAIN


# ---------------------------------------------------------------------------- consumers

def _child_produce_paced(bootstrap, topic, n, interval_s):
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0})
    next_at = time.perf_counter()
    for i in range(n):
        while time.perf_counter() < next_at:
            pass
        next_at += interval_s
        p.produce(topic, b"%d" % i)
    p.flush(10)
    p.close()


@pytest.mark.parametrize("busy", [False, True])
def test_a_consumer_gets_every_record_of_a_paced_stream_from_another_process(conf, topic, busy):
    c = shmlog.Consumer({**conf, "shmlog.busy.poll": busy})
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
    n = 3000
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child_produce_paced, args=(conf["bootstrap.servers"], topic, n, 0.0001))
    proc.start()
    got = []
    while len(got) < n:
        m = c.poll(20)
        assert m is not None, f"only {len(got)} of {n} records"
        got.append(m.value())
    proc.join(30)
    assert got == [b"%d" % i for i in range(n)]
    assert c.poll(0.05) is None
    c.close()


def test_a_blocking_consumer_idles_without_spinning_after_a_stream_stops(conf, topic):
    """After a fast stream the adaptive spin is at its longest; idle, it must fall back to sleeping."""
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
    n = 2000
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child_produce_paced, args=(conf["bootstrap.servers"], topic, n, 0.0001))
    proc.start()
    for i in range(n):
        assert c.poll(20) is not None
    proc.join(30)
    assert c.poll(0.5) is None       # the spin shrinks over these waits
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    assert c.poll(2.0) is None
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.05 * elapsed, f"{cpu:.3f} s of CPU in {elapsed:.2f} s idle"
    c.close()
