"""Compaction benchmark: the log cleaner's speed and what it costs others. Prints numbers; not a test.

    PYTHONPATH=. python bench/bench_compaction.py [--records N] [--keys K] [--commits C]
        [--produce-seconds S] [--data-dir DIR]

Rows:
- cleaner throughput: a partition of --records records of 100-byte values over --keys keys
  (batches of 100 records, about 16 segments of at most 64 MiB) written with the segment writer, then one
  forced clean (shmlog.log.cleaner.clean, in this process); MB/s of input segments read.
- producer throughput while the cleaner runs vs while it does not, in one run of one broker:
  a producer (acks=1, 100-byte values, linger.ms 5) on a delete-policy topic while the
  cleaner process compacts a backlog topic (made cleanable by altering its
  min.compaction.lag.ms), in pairs of 0.5 s windows, the cleaner stopped (SIGSTOP) in the
  first and running in the second, for up to --produce-seconds; the ratio of the means.
- start-up time of a broker whose __consumer_offsets saw --commits commits (100 partitions
  per commit request), before compaction (log.cleaner.enable=false) and after the cleaner
  compacted it: the time from Broker.start() to its ready line, and how many records the
  group coordinator replayed.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import shmlog
from shmlog import TopicPartition
from shmlog._native import ffi, lib
from shmlog.broker import cleaner as cleaner_process
from shmlog.log import cleaner
from shmlog.log.batch import HEADER_BYTES, RecordsBuilder
from shmlog.log.segment import SegmentWriter, list_segments

VALUE = b"v" * 100


def batch(base, keys):
    b = RecordsBuilder()
    now = time.time_ns() // 1_000_000
    for k in keys:
        b.add(k, VALUE, now, None, 0)
    section, base_ts, max_ts = b.encode()
    out = bytearray(HEADER_BYTES + len(section))
    out[HEADER_BYTES:] = section
    lib.shmlog_batch_write_header(ffi.from_buffer("uint8_t[]", out), len(section), base, 0, 0, len(keys), base_ts,
                                  max_ts, -1, -1, -1)
    return bytes(out)


def cleaner_throughput(root, records, keys):
    pdir = os.path.join(root, "bench-0")
    t0 = time.monotonic()
    segment_bytes = min(64 << 20, max(1 << 20, records * 130 // 16))   # about 16 segments, at most 64 MiB
    with SegmentWriter(pdir, segment_bytes) as w:
        for base in range(0, records, 100):
            ks = [b"key-%09d" % ((base + i) * 7919 % keys) for i in range(100)]
            w.append(batch(base, ks), base, base + 100)
        w.flush()
    written = time.monotonic() - t0
    bases = list_segments(pdir)
    size = sum(os.path.getsize(os.path.join(pdir, f"{b:020d}.log")) for b in bases[:-1])
    policy = cleaner.Policy(0.0, 0, 2**63 - 1, 86_400_000)
    result = cleaner.clean(pdir, policy, force=True, dedupe_buffer_bytes=max(128 << 20, keys * 24 * 2))
    print(f"cleaner throughput: {records} records / {keys} keys of 100 B, {len(bases) - 1} sealed segments "
          f"({size / 1e6:.0f} MB, written in {written:.1f} s); clean: {result.seconds:.2f} s, "
          f"{result.bytes_read / 1e6 / result.seconds:.1f} MB/s of input, {result.records_removed} records and "
          f"{result.bytes_reclaimed / 1e6:.0f} MB removed")
    shutil.rmtree(pdir)


def produce_window(p, topic, seconds):
    """Records/s one producer enqueues during `seconds` (waiting for ring space included)."""
    n, start = 0, time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        for _ in range(200):
            try:
                p.produce(topic, value=VALUE)
            except BufferError:
                p.poll(0.001)
                continue
            n += 1
        p.poll(0)
    return n / (time.monotonic() - start)


def producer_while_cleaning(root, backlog_records, seconds, throttle, window_s=0.5):
    """Paired windows: while the cleaner process compacts the backlog, it is stopped (SIGSTOP)
    for one window and running for the next, and the producer's rate is taken in each; the
    pairs are seconds apart at most, so the host's other load, which moves the rate far more
    than the cleaner on a shared machine, weighs on both sides alike."""
    import signal

    import psutil

    from shmlog.broker import launcher
    data = os.path.join(root, "produce")
    configs = {"log.cleaner.backoff.ms": 50}
    if throttle:
        configs["log.cleaner.io.max.bytes.per.second"] = throttle
    with shmlog.Broker(data, **configs) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        futures = admin.create_topics([
            shmlog.NewTopic("load", 1, config={"ring.bytes": str(64 << 20), "segment.bytes": str(256 << 20),
                                               "retention.bytes": str(512 << 20)}),
            shmlog.NewTopic("backlog", 1, config={"cleanup.policy": "compact", "segment.bytes": str(8 << 20),
                                                  "min.compaction.lag.ms": str(2**62)})])
        for f in futures.values():
            f.result()
        p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 5})
        for i in range(backlog_records):
            while True:
                try:
                    p.produce("backlog", key=b"k%07d" % (i % (backlog_records // 10)), value=VALUE)
                    break
                except BufferError:
                    p.poll(0.01)
        p.flush(60)
        p.close()
        pid = launcher.status(b.data_dir)["cleaner_pid"]
        cleaner_cpu = psutil.Process(pid)
        p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 5})
        produce_window(p, "load", 1.0)   # warm-up
        resource = shmlog.admin.ConfigResource("topic", "backlog", set_config={"min.compaction.lag.ms": "0"})
        for f in admin.alter_configs([resource]).values():
            f.result()
        used = sum(cleaner_cpu.cpu_times()[:2])
        while sum(cleaner_cpu.cpu_times()[:2]) - used < 0.2:   # the clean has begun
            time.sleep(0.01)

        def done():
            return (((cleaner_process.read(b.data_dir) or {}).get("partitions") or {}).get("backlog-0") or {}).get(
                "last_clean_ms")

        pairs = []
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not done():
                os.kill(pid, signal.SIGSTOP)
                stopped = produce_window(p, "load", window_s)
                os.kill(pid, signal.SIGCONT)
                before = sum(cleaner_cpu.cpu_times()[:2])
                running = produce_window(p, "load", window_s)
                pairs.append((stopped, running, sum(cleaner_cpu.cpu_times()[:2]) - before))
        finally:
            os.kill(pid, signal.SIGCONT)
        p.flush(60)
        p.close()
        while not done():
            time.sleep(0.05)
        st = cleaner_process.read(b.data_dir)["partitions"]["backlog-0"]
        admin.close()
    idle = sum(a for a, _, _ in pairs) / len(pairs)
    busy = sum(b for _, b, _ in pairs) / len(pairs)
    cpu = sum(c for _, _, c in pairs) / (len(pairs) * window_s)
    ratios = sorted(b / a for a, b, _ in pairs)
    print(f"producer throughput (acks=1, 100 B) while the cleaner compacts {backlog_records} records vs while it "
          f"is stopped, {len(pairs)} pairs of {window_s} s windows: {busy / 1e3:.0f} vs {idle / 1e3:.0f} k records/s "
          f"= {100 * busy / idle:.0f} % (median pair {100 * ratios[len(ratios) // 2]:.0f} %); the cleaner used "
          f"{100 * cpu:.0f} % of a CPU in its windows; the whole clean took {st['last_clean']['seconds']:.1f} s; "
          f"log.cleaner.io.max.bytes.per.second {throttle or 'unlimited'}")
    shutil.rmtree(data)


def startup_after_commits(root, commits):
    data = os.path.join(root, "offsets")
    configs = {"offsets.topic.segment.bytes": 1 << 20, "log.cleaner.enable": False,
               "group.initial.rebalance.delay.ms": 0}
    with shmlog.Broker(data, **configs) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        admin.create_topics([shmlog.NewTopic("t", 100, config={"ring.bytes": "65536"})])["t"].result()
        admin.close()
        c = shmlog.Consumer({**conf, "group.id": "g"})
        for i in range(commits // 100):
            c.commit(offsets=[TopicPartition("t", p, i) for p in range(100)], asynchronous=False)
        c.close()

    def timed_start(**extra):
        t0 = time.monotonic()
        b = shmlog.Broker(data, **{**configs, **extra}).start()
        took = time.monotonic() - t0
        return b, took

    b, before = timed_start()
    b.stop()
    b, _ = timed_start(**{"log.cleaner.enable": True, "log.cleaner.backoff.ms": 50})
    from shmlog.broker.coordinator import offsets_partition
    name = f"__consumer_offsets-{offsets_partition('g')}"
    pdir = os.path.join(data, "logs", name) if os.path.isdir(os.path.join(data, "logs")) else os.path.join(data, name)
    while True:
        st = ((cleaner_process.read(b.data_dir) or {}).get("partitions") or {}).get(name) or {}
        bases = list_segments(pdir)
        if st.get("cleans") and len(bases) > 1 and st.get("first_dirty_offset") == bases[-1]:
            break
        time.sleep(0.05)
    b.stop()
    b, after = timed_start()
    b.stop()
    size = sum(os.path.getsize(os.path.join(pdir, f)) for f in os.listdir(pdir) if f.endswith(".log"))
    print(f"broker start-up with {commits} commits in __consumer_offsets: {before:.2f} s before compaction, "
          f"{after:.2f} s after (that partition now {size / 1e6:.1f} MB on disk)")
    shutil.rmtree(data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--commits", type=int, default=1_000_000)
    ap.add_argument("--produce-seconds", type=float, default=15.0)
    ap.add_argument("--data-dir", default="/var/tmp")
    ap.add_argument("--throttle", type=float, default=0, help="log.cleaner.io.max.bytes.per.second (0: none)")
    ap.add_argument("--only", choices=("throughput", "producer", "startup"))
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="shmlog-bench-compaction-", dir=args.data_dir)
    try:
        if args.only in (None, "throughput"):
            cleaner_throughput(root, args.records, args.keys)
        if args.only in (None, "producer"):
            producer_while_cleaning(root, args.backlog, args.produce_seconds, args.throttle)
        if args.only in (None, "startup"):
            startup_after_commits(root, args.commits)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
