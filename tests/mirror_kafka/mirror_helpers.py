"""Running `shmlog mirror run` as a real process, and reading whole topics, for the mirror tests."""
import os
import signal
import subprocess
import sys
import time

from shmlog import clients

DEADLINE_S = 90.0


def start_mirror(tmp_path, source, target, topics, name, *extra):
    log = open(tmp_path / f"mirror-{name}-{time.monotonic_ns()}.log", "wb")
    cmd = [sys.executable, "-m", "shmlog.cli", "mirror", "run", "--source", source, "--target", target,
           "--name", name, *[a for t in topics for a in ("--topic", t)], *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log_path = log.name
    log.close()
    return proc


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(60)
    return proc.returncode


def mirror_log(proc):
    with open(proc.log_path, "rb") as f:
        return f.read().decode(errors="replace")


def wait_until(condition, what, timeout_s=DEADLINE_S, procs=()):
    """Poll condition() until it holds; fail naming `what` (and any mirror's log that died) otherwise."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"mirror exited ({p.returncode}) while waiting for {what}:\n{mirror_log(p)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def high_watermarks(conf, topic, partitions, timeout_s=30.0):
    """Each partition's high watermark as a fetch response gives it. (Tansu answers ListOffsets
    "latest" with the last batch's base offset + 1, not the log end, so get_watermark_offsets
    without cached=True is wrong there; a Fetch carries the right one.)"""
    lib = clients.library(conf)
    if lib.__name__ == "shmlog":
        c = lib.Consumer(conf)
        try:
            return [c.get_watermark_offsets(lib.TopicPartition(topic, p))[1] for p in range(partitions)]
        finally:
            c.close()
    c = lib.Consumer({**conf, "group.id": "watermarks", "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    try:
        c.assign([lib.TopicPartition(topic, p, lib.OFFSET_END) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while True:
            highs = [c.get_watermark_offsets(lib.TopicPartition(topic, p), cached=True)[1] for p in range(partitions)]
            if all(h >= 0 for h in highs):
                return highs
            assert time.monotonic() < deadline, f"no fetch response for every partition of {topic}: {highs}"
            c.consume(1000, 0.05)
    finally:
        c.close()


def read_all(conf, topic, partitions, expected, timeout_s=DEADLINE_S):
    """Every record of topic (read_committed) as {partition: [(key, value, headers, timestamp)]},
    once `expected` records were read (fails after timeout_s)."""
    lib = clients.library(conf)
    c = lib.Consumer({**conf, "group.id": "reader", "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
    out = {p: [] for p in range(partitions)}
    try:
        c.assign([lib.TopicPartition(topic, p, lib.OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        n = 0
        while n < expected:
            assert time.monotonic() < deadline, f"read {n} of {expected} records of {topic}"
            for m in c.consume(10_000, 0.5):
                if m.error() is None:
                    out[m.partition()].append((m.key(), m.value(), sorted(m.headers() or []), m.timestamp()[1]))
                    n += 1
        for m in c.consume(10_000, 0.5):   # nothing more may come: a duplicate would show here
            if m.error() is None:
                out[m.partition()].append((m.key(), m.value(), sorted(m.headers() or []), m.timestamp()[1]))
    finally:
        c.close()
    return out
