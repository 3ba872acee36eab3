"""A producer SIGKILLed inside an append must not wedge, corrupt or hide anything.

Each test runs a real producer process (multiprocessing spawn context) against a real
broker. The child produces a few batches that are acknowledged (acks=1), sends the
acknowledged (offset, value) pairs to the parent over a pipe, arms the C core's crash
point (`shmlog_debug_set_crash_point`) and produces one more batch: the C core raises
SIGKILL inside `shmlog_ring_append` at

    1  after the slot intent, before the claim CAS   (nothing claimed)
    2  after the claim CAS                          (space and offsets claimed)
    3  in the middle of copying the records
    4  after the CRC, before the publishing store

The parent then checks what the log contract promises: the child died by SIGKILL, a new
producer can append, and a consumer reading from the beginning returns exactly the
acknowledged records and the new ones, in order, with the offsets their delivery reports
gave, without hanging on the dead claim (its offsets are an empty control batch that is
skipped, never returned).
"""
import multiprocessing
import os
import signal
import time

import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog._native import ffi, lib
from shmlog._native.ring import Ring
from shmlog.client.cluster import Cluster
from shmlog.log.batch import ATTR_CONTROL

pytestmark = pytest.mark.crash

SPAWN = multiprocessing.get_context("spawn")
CHILD_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 20.0
RING_BYTES = 1 << 20

# What the claim consumed: at point 1 the CAS never ran, so neither bytes nor offsets moved.
CLAIMS_OFFSETS = {1: False, 2: True, 3: True, 4: True}


# ---------------------------------------------------------------------------- the child

def crashing_producer(bootstrap, topic, partition, ok_batches, batch_size, value_bytes, point, conn):
    """Runs in a spawned process: acknowledged batches, then one batch that dies at `point`."""
    import shmlog
    from shmlog._native import lib

    acked, errors = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append((msg.offset(), msg.value()))

    # One flush = one batch of exactly batch_size records (linger never fires on its own).
    producer = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 600000,
                                "batch.num.messages": batch_size})
    pad = b"." * max(0, value_bytes - 24)
    for b in range(ok_batches):
        for i in range(batch_size):
            producer.produce(topic, value=b"ok-%d-%d-%d|" % (os.getpid(), b, i) + pad, partition=partition,
                             on_delivery=on_delivery)
        producer.flush(30)
    conn.send(("acked", acked, errors, len(producer)))
    lib.shmlog_debug_set_crash_point(point)
    for i in range(batch_size):
        producer.produce(topic, value=b"doomed-%d-%d|" % (os.getpid(), i) + pad, partition=partition)
    producer.flush(30)
    conn.send(("survived",))  # the crash point did not fire: the parent fails the test


# ---------------------------------------------------------------------------- helpers

def create_topic(admin, name, partitions, ring_bytes):
    """As tests/conftest.py's helper (conftest is not importable as a module)."""
    admin.create_topics([shmlog.NewTopic(name, partitions, config={"ring.bytes": str(ring_bytes)})])[name].result()
    return name


def recv(conn, timeout_s, what):
    assert conn.poll(timeout_s), f"no {what} from the child within {timeout_s}s"
    return conn.recv()


def run_crashing_child(conf, topic, partition, ok_batches, batch_size, point, value_bytes=32):
    """Start the child, collect what it had acknowledged, assert it died by SIGKILL."""
    reader, writer = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=crashing_producer, daemon=True,
                          args=(conf["bootstrap.servers"], topic, partition, ok_batches, batch_size, value_bytes,
                                point, writer))
    child.start()
    writer.close()
    try:
        tag, acked, errors, queued = recv(reader, CHILD_TIMEOUT_S, "acknowledgements")
        assert tag == "acked"
        assert errors == [] and queued == 0, f"child's good batches failed: {errors}"
        assert len(acked) == ok_batches * batch_size
        child.join(CHILD_TIMEOUT_S)
        assert child.exitcode is not None, "crashing producer did not exit"
        leftover = None
        if reader.poll(0):  # readable means a message or EOF (the write end died with the child)
            try:
                leftover = reader.recv()
            except EOFError:
                pass
        assert leftover is None, f"crash point {point} did not fire: child said {leftover}"
        assert child.exitcode == -signal.SIGKILL, f"child exit code {child.exitcode}, expected SIGKILL"
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
        reader.close()
    return acked


def produce_acked(conf, topic, partition, values):
    """Produce with acks=1 in this process; returns [(offset, value)] from the delivery reports."""
    acked, errors = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append((msg.offset(), msg.value()))

    producer = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    try:
        for v in values:
            producer.produce(topic, value=v, partition=partition, on_delivery=on_delivery)
        assert producer.flush(30) == 0
    finally:
        producer.close(10)
    assert errors == []
    return acked


def read_until(consumer, last_offset, timeout_s=READ_TIMEOUT_S, partition=None):
    """Poll until a record at last_offset arrives; returns [(partition, offset, value)]."""
    out = []
    deadline = time.monotonic() + timeout_s
    while not out or out[-1][1] < last_offset:
        remaining = deadline - time.monotonic()
        assert remaining > 0, (f"consumer hung: got {len(out)} records, last "
                               f"{out[-1][:2] if out else None}, waiting for offset {last_offset}")
        msg = consumer.poll(min(remaining, 1.0))
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        out.append((msg.partition(), msg.offset(), msg.value()))
    return out


def beginning_consumer(conf, topic, partitions=(0,)):
    consumer = shmlog.Consumer({**conf, "group.id": "crash-check", "check.crcs": True})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


def assert_log_is(records, expected):
    """records: [(partition, offset, value)] as read; expected: [(offset, value)] acknowledged."""
    offsets = [o for _, o, _ in records]
    assert offsets == sorted(set(offsets)), "offsets must strictly increase (no duplicates, no reordering)"
    garbage = [(o, v) for _, o, v in records if not v.startswith(b"ok-") and not v.startswith(b"new-")]
    assert not garbage, f"consumer returned records nobody acknowledged: {garbage[:3]}"
    assert [(o, v) for _, o, v in records] == expected


def wait_until(condition, timeout_s, what):
    """Poll a condition on shared state another process (the supervisor) changes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.005)


def slots_in_use(ring):
    """(slot, pid, state) of every producer slot that is not free."""
    return [(i, s.pid, Ring.slot_state(s)) for i, s in enumerate(ring.producer_slots())
            if s.pid or Ring.slot_state(s)]


# ---------------------------------------------------------------------------- tests

@pytest.mark.parametrize("batch_size, ok_batches, value_bytes", [(1, 3, 32), (17, 2, 100), (400, 2, 600)],
                         ids=["batch1", "batch17", "batch400"])
@pytest.mark.parametrize("point", [1, 2, 3, 4])
def test_a_producer_killed_inside_an_append_leaves_a_readable_dense_log(conf, admin, point, batch_size,
                                                                         ok_batches, value_bytes):
    topic = create_topic(admin, "crash", 1, ring_bytes=RING_BYTES)
    # A consumer already tailing the partition must get past the dead claim too.
    tail = beginning_consumer(conf, topic)
    try:
        acked = run_crashing_child(conf, topic, 0, ok_batches, batch_size, point, value_bytes)
        assert [o for o, _ in acked] == list(range(len(acked))), "acknowledged offsets must be dense from 0"

        new = produce_acked(conf, topic, 0, [b"new-%d" % i for i in range(5)])
        first_new = len(acked) + (batch_size if CLAIMS_OFFSETS[point] else 0)
        # The dead claim's offsets are accounted for (skipped), not reused: the log stays dense.
        assert [o for o, _ in new] == list(range(first_new, first_new + 5))

        fresh = beginning_consumer(conf, topic)
        try:
            records = read_until(fresh, new[-1][0])
            assert_log_is(records, acked + new)
            low, high = fresh.get_watermark_offsets(TopicPartition(topic, 0))
            assert (low, high) == (0, new[-1][0] + 1)
            assert fresh.position([TopicPartition(topic, 0)])[0].offset == high
            assert fresh.poll(0) is None  # nothing after the end: the dead batch never shows up late
        finally:
            fresh.close()
        assert_log_is(read_until(tail, new[-1][0]), acked + new)
    finally:
        tail.close()


@pytest.mark.parametrize("point", [2, 3, 4])
def test_the_supervisor_repairs_a_dead_claim_with_no_reader_and_no_next_producer(conf, admin, point):
    """No client touches the partition after the crash: the broker alone (the supervisor's
    housekeeping or its persister) must turn the claim into an empty control batch and free the
    slot, before any new producer or consumer shows up."""
    topic = create_topic(admin, "lonely", 1, ring_bytes=RING_BYTES)
    acked = run_crashing_child(conf, topic, 0, 1, 9, point)
    cluster = Cluster(conf["bootstrap.servers"], "test")
    try:
        ring = cluster.ring(topic, 0)
        wait_until(lambda: slots_in_use(ring) == [], 10, lambda: f"the supervisor's repair: {slots_in_use(ring)}")
        cursor = ffi.new("shmlog_cursor *")
        frames = ffi.new("shmlog_frame_ref[]", 16)
        assert lib.shmlog_ring_fetch(ring.map, cursor, ffi.NULL, 0, frames, 16, 1) == 2
        repaired = frames[1]
        assert (repaired.base_offset, repaired.record_count) == (len(acked), 9)
        assert ffi.cast("uint8_t *", ring.mapping.ptr)[repaired.map_pos + 22] & ATTR_CONTROL
        assert (cursor.position, cursor.next_offset) == ring.end()  # nothing left unpublished
    finally:
        cluster.close()
    new = produce_acked(conf, topic, 0, [b"new-0"])
    assert new == [(len(acked) + 9, b"new-0")]
    consumer = beginning_consumer(conf, topic)
    try:
        assert_log_is(read_until(consumer, new[-1][0]), acked + new)
    finally:
        consumer.close()


def test_a_dead_producer_does_not_stop_live_producers_on_other_partitions(conf, admin):
    topic = create_topic(admin, "mixed", 2, ring_bytes=RING_BYTES)
    acked = run_crashing_child(conf, topic, 0, 2, 5, 3)
    other = produce_acked(conf, topic, 1, [b"new-p1-%d" % i for i in range(20)])
    assert [o for o, _ in other] == list(range(20))
    new = produce_acked(conf, topic, 0, [b"new-p0"])
    consumer = beginning_consumer(conf, topic, partitions=(0, 1))
    try:
        got = {0: [], 1: []}
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(got[0]) < len(acked) + 1 or len(got[1]) < 20:
            assert time.monotonic() < deadline, f"consumer hung: {len(got[0])}, {len(got[1])}"
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None
                got[msg.partition()].append((msg.offset(), msg.value()))
        assert got[0] == acked + new and got[1] == other
        assert new[0][0] == len(acked) + 5
    finally:
        consumer.close()


def test_repeated_crashes_at_every_point_keep_one_consistent_log(conf, admin):
    """Several producers die in a row on one partition, interleaved with good appends; every
    dead producer's slot is eventually freed, so crashes cannot exhaust the slot table."""
    topic = create_topic(admin, "again", 1, ring_bytes=RING_BYTES)
    expected, next_offset = [], 0
    for round_, (point, size) in enumerate([(4, 3), (1, 5), (2, 1), (3, 40), (1, 2), (2, 7), (4, 1), (3, 2)]):
        acked = run_crashing_child(conf, topic, 0, 1, size, point)
        assert [o for o, _ in acked] == list(range(next_offset, next_offset + size))
        next_offset += size + (size if CLAIMS_OFFSETS[point] else 0)
        new = produce_acked(conf, topic, 0, [b"new-%d" % round_])
        assert new == [(next_offset, b"new-%d" % round_)]
        next_offset += 1
        expected += acked + new
    consumer = beginning_consumer(conf, topic)
    try:
        assert_log_is(read_until(consumer, expected[-1][0]), expected)
    finally:
        consumer.close()
    cluster = Cluster(conf["bootstrap.servers"], "test")
    try:
        ring = cluster.ring(topic, 0)
        wait_until(lambda: slots_in_use(ring) == [], 10,
                   lambda: f"every dead producer's slot to be freed: {slots_in_use(ring)}")
    finally:
        cluster.close()
