"""A producer stopped (SIGSTOP, Ctrl-Z, a debugger) while it holds a claim is passed after
shmlog.claim.timeout.ms, and when it resumes it fails that batch without writing over anyone.

The child is a real producer process (spawn). It produces acknowledged batches, arms the C
core's pause point (`shmlog_debug_set_pause_point`: the append raises SIGSTOP on itself at
that point, holding its claim) and produces one more batch. At

    2  after the claim CAS (slot OWNED, nothing copied)
    3  in the middle of copying the records
    5  after the copy and the CRC, before the commit CAS

the claim is OWNED: readers blocked behind it fence it once it is older than their timeout,
other producers carry on, and the child, once continued, reports _MSG_TIMED_OUT for every
record of that batch, writes nothing that a reader sees, and produces again.
"""
import multiprocessing
import os
import signal
import threading
import time

import psutil
import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, KafkaError, TopicPartition
from shmlog._native import ffi, lib
from shmlog.client.cluster import Cluster

pytestmark = pytest.mark.crash

SPAWN = multiprocessing.get_context("spawn")
CHILD_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 20.0
CLAIM_TIMEOUT_MS = 200
RING_BYTES = 1 << 16


def stalling_producer(bootstrap, topic, batch_size, point, conn):
    """Runs in a spawned process: one acknowledged batch, one that stops itself at `point`,
    then (after SIGCONT) one more acknowledged batch."""
    import shmlog
    from shmlog._native import lib

    reports = []

    def on_delivery(err, msg):
        reports.append((err.code() if err is not None else None, msg.offset(), msg.value()))

    producer = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 600000,
                                "batch.num.messages": batch_size})

    def one_batch(tag):
        for i in range(batch_size):
            producer.produce(topic, value=b"%s-%d-%d|" % (tag, os.getpid(), i) + b"." * 40, partition=0,
                             on_delivery=on_delivery)
        producer.flush(30)
        out = list(reports)
        reports.clear()
        return out

    conn.send(("acked", one_batch(b"ok")))
    lib.shmlog_debug_set_pause_point(point)
    conn.send(("stalled-batch", one_batch(b"stalled")))
    conn.send(("again", one_batch(b"again"), len(producer)))
    producer.close(10)


def start_child(conf, topic, batch_size, point):
    reader, writer = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=stalling_producer, daemon=True,
                          args=(conf["bootstrap.servers"], topic, batch_size, point, writer))
    child.start()
    writer.close()
    return child, reader


def recv(conn, what, timeout_s=CHILD_TIMEOUT_S):
    assert conn.poll(timeout_s), f"no {what} from the child within {timeout_s}s"
    return conn.recv()


def wait_until(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def wait_stopped(child):
    proc = psutil.Process(child.pid)
    wait_until(lambda: proc.status() == psutil.STATUS_STOPPED, CHILD_TIMEOUT_S, "the child to stop itself")


def produce_acked(conf, topic, values, **extra):
    acked, errors = [], []

    def on_delivery(err, msg):
        (errors if err is not None else acked).append(err if err is not None else (msg.offset(), msg.value()))

    producer = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0, **extra})
    try:
        for v in values:
            producer.produce(topic, value=v, partition=0, on_delivery=on_delivery)
        assert producer.flush(30) == 0
    finally:
        producer.close(10)
    assert errors == []
    return acked


def read_until(consumer, last_offset, timeout_s=READ_TIMEOUT_S):
    out = []
    deadline = time.monotonic() + timeout_s
    while not out or out[-1][0] < last_offset:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"consumer hung after {out[-1][:1] if out else None}, waiting for {last_offset}"
        msg = consumer.poll(min(remaining, 0.5))
        if msg is not None:
            assert msg.error() is None, msg.error()
            out.append((msg.offset(), msg.value()))
    return out


def consumer_from_beginning(conf, topic, group="stall-check"):
    consumer = shmlog.Consumer({**conf, "group.id": group, "check.crcs": True,
                                "shmlog.claim.timeout.ms": CLAIM_TIMEOUT_MS})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return consumer


def ring_frames(conf, topic):
    """Every published frame of partition 0 from the ring's start, CRC-checked by the C core:
    [(base_offset, record_count, is_control)]."""
    cluster = Cluster(conf["bootstrap.servers"], "test")
    try:
        ring = cluster.ring(topic, 0)
        cursor = ffi.new("shmlog_cursor *")
        lib.shmlog_ring_start(ring.map, cursor)
        frames = ffi.new("shmlog_frame_ref[]", 256)
        out = []
        while True:
            n = lib.shmlog_ring_fetch(ring.map, cursor, ffi.NULL, 0, frames, 256, 1)
            assert n >= 0, f"ring fetch failed: {n}"
            if n == 0:
                break
            base = ffi.cast("uint8_t *", ring.mapping.ptr)
            out += [(f.base_offset, f.record_count, bool(base[f.map_pos + 22] & 0x20)) for f in frames[0:n]]
        assert (cursor.position, cursor.next_offset) == ring.end(), "something below the tail is unpublished"
        return out
    finally:
        cluster.close()


@pytest.mark.parametrize("point", [2, 3, 5])
def test_a_stopped_producer_is_passed_and_fails_its_batch_when_it_resumes(conf, admin, point):
    topic = "stall"
    admin.create_topics([shmlog.NewTopic(topic, 1, config={"ring.bytes": str(RING_BYTES)})])[topic].result()
    batch = 7
    child, conn = start_child(conf, topic, batch, point)
    try:
        tag, acked = recv(conn, "acknowledgements")
        assert tag == "acked" and [(e, o) for e, o, _ in acked] == [(None, o) for o in range(batch)]
        wait_stopped(child)

        # Others carry on: a consumer passes the stalled claim once it is older than its timeout.
        others = produce_acked(conf, topic, [b"other-%d" % i for i in range(20)])
        assert [o for o, _ in others] == list(range(2 * batch, 2 * batch + 20)), "the claim's offsets stay taken"
        consumer = consumer_from_beginning(conf, topic)
        try:
            got = read_until(consumer, others[-1][0])
            assert got == [(o, v) for _, o, v in acked] + others

            os.kill(child.pid, signal.SIGCONT)
            tag, stalled = recv(conn, "the stalled batch's reports")
            assert tag == "stalled-batch" and len(stalled) == batch
            assert {e for e, _, _ in stalled} == {KafkaError._MSG_TIMED_OUT}
            tag, again, queued = recv(conn, "the next batch's reports")
            assert queued == 0 and {e for e, _, _ in again} == {None}
            first = 2 * batch + 20
            assert [o for _, o, _ in again] == list(range(first, first + batch))
            # The resumed producer wrote nothing a reader sees: the tail reader gets only `again`.
            assert read_until(consumer, first + batch - 1) == [(o, v) for _, o, v in again]
        finally:
            consumer.close()
        child.join(CHILD_TIMEOUT_S)
        assert child.exitcode == 0

        fresh = consumer_from_beginning(conf, topic, "fresh")
        try:
            everything = [(o, v) for _, o, v in acked] + others + [(o, v) for _, o, v in again]
            assert read_until(fresh, everything[-1][0]) == everything
            assert fresh.poll(0) is None
        finally:
            fresh.close()
        frames = ring_frames(conf, topic)
        assert (batch, batch, True) in frames, "the passed claim is an empty control batch over its offsets"
        assert [f[0] for f in frames] == sorted({f[0] for f in frames})
        assert sum(f[1] for f in frames) == 3 * batch + 20, "offsets are dense"
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
        conn.close()


def test_writers_are_held_back_at_a_passed_claim_until_its_producer_resumes(conf, admin):
    """The stalled producer may still be copying into its claim when it resumes, so its region is
    not reused meanwhile: other producers can write a ring's worth past it, then wait for it."""
    topic = "held"
    admin.create_topics([shmlog.NewTopic(topic, 1, config={"ring.bytes": str(RING_BYTES)})])[topic].result()
    child, conn = start_child(conf, topic, 3, 3)
    try:
        recv(conn, "acknowledgements")
        wait_stopped(child)
        consumer = consumer_from_beginning(conf, topic)
        values = [b"lap-%05d|" % i + b"x" * 200 for i in range(3 * RING_BYTES // 256)]
        result = {}
        writer = threading.Thread(target=lambda: result.setdefault("acked", produce_acked(
            conf, topic, values, **{"max.block.ms": 60000})))
        writer.start()
        try:
            # Readers pass the claim and read everything written so far.
            got = read_until(consumer, 3 * 2 + 10)
            ring = Cluster(conf["bootstrap.servers"], "test")
            try:
                r = ring.ring(topic, 0)
                wait_until(lambda: r.header.release.space_waiters > 0, 30, "the writers to wait for space")
                held_at = r.header.release.release_position
                assert r.header.release.fenced_claims == 1
                assert held_at <= max(s.claim_position for s in r.producer_slots()
                                      if r.slot_state(s) == lib.SHMLOG_SLOT_FENCED)
            finally:
                ring.close()
            assert writer.is_alive(), "the writers lapped the ring over a claim its producer may still write"
            os.kill(child.pid, signal.SIGCONT)
            writer.join(60)
            assert not writer.is_alive()
            tag, stalled = recv(conn, "the stalled batch's reports")
            assert {e for e, _, _ in stalled} == {KafkaError._MSG_TIMED_OUT}
            recv(conn, "the next batch's reports")
            assert len(result["acked"]) == len(values)
            got += read_until(consumer, result["acked"][-1][0], timeout_s=60)
            assert [v for _, v in got if v.startswith(b"lap-")] == values
        finally:
            consumer.close()
            writer.join(60)
        child.join(CHILD_TIMEOUT_S)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
        conn.close()
