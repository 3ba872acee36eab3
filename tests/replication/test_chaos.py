"""Chaos over replication: a keyed acks=all load on a topic of replication factor 3
(min.insync.replicas=2) while log dirs fill up and come back and the persister and mirrors are
SIGKILLed at random. Afterwards: no acknowledged record lost or moved, no per-key order
violation, and nothing a consumer saw during the run has vanished. Each log dir is a small
tmpfs this test mounts (skipped, with the reason, where mounting is not allowed).

SHMLOG_REPLICATION_CHAOS_S (default 6) is how long the chaos lasts; SHMLOG_CHAOS_SEED replays
a run's random choices (the seed is printed). The load is RATE_PER_S keyed records a second,
at most RECORDS of them, on disks sized to hold them twice over."""
import os
import random
import signal
import threading
import time

import shmlog
from shmlog import TopicPartition

from .conftest import WAIT_S, create, fill, mirror_pid, persister_pid, wait_isr, warm_up

CHAOS_S = float(os.environ.get("SHMLOG_REPLICATION_CHAOS_S", "6"))
KEYS = 8
# The load is paced and bounded so that each replica's log fits its disk whatever the machine's
# speed: a log that fills its disk by itself leaves no replica able to take the lead.
RATE_PER_S = 1000
RECORDS = int(RATE_PER_S * (CHAOS_S + 34))
LOG_BYTES_PER_RECORD = 300          # a 210-byte record in a batch of one or two, with headers
DISK_BYTES = max(24 << 20, 2 * RECORDS * LOG_BYTES_PER_RECORD)


def test_keyed_acks_all_over_three_replicas_survives_failing_dirs_and_killed_processes(
        mounts, replicated, data_dir):
    seed = int(os.environ.get("SHMLOG_CHAOS_SEED") or int.from_bytes(os.urandom(4), "big"))
    rnd = random.Random(seed)
    disks = mounts(3, size=DISK_BYTES)
    conf, admin, _ = replicated(disks, replica_lag_time_max_ms=400)
    create(admin, "c", replication_factor=3, config={"min.insync.replicas": "2"})
    warm_up(conf, admin, "c", [0, 1, 2])

    stop = threading.Event()
    acked, failed, seen = [], [0], []

    def produce():
        p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 1, "message.timeout.ms": 20000})
        seq = [0] * KEYS
        keys = random.Random(seed)

        def report(err, msg):
            if err is None:
                acked.append((msg.offset(), msg.value()))
            else:
                failed[0] += 1
        started = time.monotonic()
        for n in range(RECORDS):
            if stop.is_set():
                break
            k = keys.randrange(KEYS)
            p.produce("c", b"k%d:%d:" % (k, seq[k]) + b"x" * 200, key=b"k%d" % k, on_delivery=report)
            seq[k] += 1
            due = started + (n + 1) / RATE_PER_S
            p.poll(0)
            while time.monotonic() < due and not stop.is_set():
                p.poll(due - time.monotonic())
        p.flush(WAIT_S)

    def consume():
        c = shmlog.Consumer({**conf, "group.id": "live", "enable.auto.commit": False})
        c.assign([TopicPartition("c", 0, 0)])
        while not stop.is_set():
            for m in c.consume(500, 0.1):
                if m.error() is None:
                    seen.append((m.offset(), m.value()))
        c.close()

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    history = [f"seed {seed}"]
    full = None
    deadline = time.monotonic() + CHAOS_S
    while time.monotonic() < deadline:
        action = rnd.choice(["fill", "free", "kill-mirror", "kill-persister"])
        if action == "fill" and full is None:
            i = rnd.randrange(3)
            full = (i, fill(disks[i]))
            history.append(f"filled log dir {i}")
        elif action == "free" and full is not None:
            os.unlink(full[1])
            history.append(f"freed log dir {full[0]}")
            full = None
        elif action == "kill-mirror":
            i = rnd.randrange(3)
            pid = mirror_pid(data_dir, i)
            if pid:
                os.kill(pid, signal.SIGKILL)
                history.append(f"SIGKILLed the mirror of log dir {i}")
        elif action == "kill-persister":
            pid = persister_pid(data_dir)
            if pid:
                os.kill(pid, signal.SIGKILL)
                history.append("SIGKILLed the persister")
        time.sleep(rnd.uniform(0.1, 0.5))   # not synchronisation: chaos comes at random moments
    if full is not None:
        os.unlink(full[1])
        history.append(f"freed log dir {full[0]}")
    wait_isr(admin, "c", [0, 1, 2], timeout=60)
    stop.set()
    for t in threads:
        t.join(WAIT_S + 30)
    where = "\n".join(history)

    c = shmlog.Consumer({**conf, "group.id": "final", "enable.auto.commit": False})
    high = c.get_watermark_offsets(TopicPartition("c", 0))[1]
    c.assign([TopicPartition("c", 0, 0)])
    final = {}
    while not final or max(final) < high - 1:
        msgs = c.consume(5000, 1.0)
        if not msgs and c.position([TopicPartition("c", 0)])[0].offset >= high:
            break
        for m in msgs:
            assert m.error() is None, m.error()
            final[m.offset()] = m.value()
    c.close()

    lost = [(o, v[:12]) for o, v in acked if final.get(o) != v]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost or moved: {lost[:5]}\n{where}"
    vanished = [(o, v[:12]) for o, v in seen if final.get(o) != v]
    assert not vanished, f"{len(vanished)} records a consumer saw have vanished: {vanished[:5]}\n{where}"
    last = {}
    for offset in sorted(final):
        if final[offset] == b"warm-up":
            continue
        key, seq = final[offset].split(b":")[:2]
        assert int(seq) > last.get(key, -1), f"{key}: {seq} after {last[key]} at offset {offset}\n{where}"
        last[key] = int(seq)
    assert len(acked) > 100, f"only {len(acked)} records acknowledged\n{where}"
    print(f"replication chaos {CHAOS_S:g}s: {len(acked)} acknowledged, {failed[0]} failed, {len(final)} in the log, "
          f"{len(seen)} seen by the live consumer; 0 lost, 0 order violations, 0 vanished\n{where}")
