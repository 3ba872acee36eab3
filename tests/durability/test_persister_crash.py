"""SIGKILL the persister while producers run: the supervisor restarts it, nothing is lost or
duplicated, and producers only ever wait (back-pressure on a full ring), never fail.

Producer processes (two with acks=all, one with acks=1) write keyed records into a topic
whose 64 KiB rings fill in a few milliseconds without a persister, so every kill leaves
producers blocked on a full ring, batches half-written to a segment, and batches on disk
that the ring does not yet say are persisted. After SHMLOG_PERSISTER_KILLS kills (default
6) at random moments the producers flush, and everything is read back from the beginning
(mostly from the segment files): every record exactly once, in each producer's order, at the
offset its delivery report gave.
"""
import multiprocessing
import os
import random
import signal
import time

import pytest

from shmlog.broker import launcher as broker_mod

from .conftest import create_topic, read_all, wait_for, wait_recovered

pytestmark = pytest.mark.crash

SPAWN = multiprocessing.get_context("spawn")
KILLS = max(1, int(os.environ.get("SHMLOG_PERSISTER_KILLS", "6")))
CHILD_TIMEOUT_S = 120.0


def producer_main(bootstrap, topic, tag, acks, stop, results):
    import shmlog

    reports = []

    def on_delivery(err, msg):
        reports.append((None if err is None else str(err), msg.partition(), msg.offset(), msg.value()))

    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 1, "batch.size": 8192,
                         "max.block.ms": 60000, "message.timeout.ms": 120000})
    seq = 0
    while not stop.is_set():
        p.produce(topic, b"%s:%d:" % (tag, seq) + b"x" * 200, key=b"k%d" % (seq % 8), on_delivery=on_delivery)
        seq += 1
        if seq % 50 == 0:
            p.poll(0)
    left = p.flush(CHILD_TIMEOUT_S)
    p.close()
    results.put((tag, seq, left, reports))


def persister_pid(data_dir, not_in):
    pid = broker_mod.status(data_dir).get("persister_pid")
    return pid if pid and pid not in not_in else None


def test_killing_the_persister_under_load_loses_and_duplicates_nothing(data_dir, start_broker):
    rnd = random.Random(os.getpid())
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", 2, ring_bytes=65536, segment_bytes=100_000)
    stop, results = SPAWN.Event(), SPAWN.Queue()
    producers = [SPAWN.Process(target=producer_main, args=(conf["bootstrap.servers"], "t", tag, acks, stop, results))
                 for tag, acks in ((b"a", "all"), (b"b", "all"), (b"c", 1))]
    for proc in producers:
        proc.start()
    killed = []
    try:
        for _ in range(KILLS):
            pid = wait_for(lambda: persister_pid(data_dir, killed), "the supervisor to (re)start the persister")
            before = sum(p["persisted_offset"] for p in broker_mod.status(data_dir)["partitions"])
            wait_for(lambda: sum(p["persisted_offset"] for p in broker_mod.status(data_dir)["partitions"]) > before,
                     "the persister to persist something under load")
            time.sleep(rnd.uniform(0, 0.05))  # not synchronisation: it picks a random moment of the work
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        wait_for(lambda: persister_pid(data_dir, killed), "the supervisor to restart the persister a last time")
    finally:
        stop.set()
        outcome = {}
        for _ in producers:
            tag, sent, left, reports = results.get(timeout=CHILD_TIMEOUT_S)
            outcome[tag] = (sent, left, reports)
        for proc in producers:
            proc.join(CHILD_TIMEOUT_S)

    expected = {}
    for tag, (sent, left, reports) in outcome.items():
        assert left == 0 and len(reports) == sent, f"producer {tag}: {left} undelivered of {sent}"
        errors = [r for r in reports if r[0] is not None]
        assert not errors, f"producer {tag} got delivery errors: {errors[:3]}"
        for _, partition, offset, value in reports:
            expected[(partition, offset)] = value
    got = read_all(conf, "t", (0, 1))
    print(f"{len(got)} records, {KILLS} persister kills")
    assert len(got) == len({(p, o) for p, o, _ in got}), "an offset was read twice"
    assert {(p, o): v for p, o, v in got} == expected
    order = {}
    for p, o, v in got:
        tag, seq = v.split(b":")[:2]
        assert int(seq) > order.get((p, tag), -1), f"{tag}:{seq} out of order in partition {p}"
        order[(p, tag)] = int(seq)


def test_a_second_persister_for_the_same_data_dir_waits_instead_of_writing(data_dir, start_broker):
    import subprocess
    import sys
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    wait_recovered(conf, "t")  # the broker's persister holds the lock: it has opened the partition
    second = subprocess.Popen([sys.executable, "-m", "shmlog.broker.persister", broker.data_dir],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        line = second.stderr.readline().decode()
        assert "another persister still runs" in line and "waiting for it" in line
        assert second.poll() is None
    finally:
        second.kill()
        second.wait()
        second.stderr.close()
