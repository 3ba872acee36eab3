"""Replication benchmark: what replication.factor=3 costs, and how long a failover takes.
Prints numbers; not a test.

    PYTHONPATH=. python bench/bench_replication.py [--data-dir DIR] [--records N] [--seconds S]
                                                   [--failovers N] [--failover-only]

Rows (one embedded broker over three log dirs under --data-dir, default /var/tmp: one disk
here, so the three replicas share its bandwidth and its fdatasyncs):

- throughput, acks=all, 2048-byte values, replication.factor 1 and 3 in the same run and
  alternating (1, 3, 1, 3): one producer, `produce()` + `poll(0)`, linger.ms 5, batch.size
  1 MiB, --records records per run; the time runs to the last delivery report.
- latency, acks=all: a steady 1000 records/s keyed stream (linger.ms 0) of 2048-byte values
  for --seconds, RF 1 then RF 3: produce -> delivery report p50/p99/max after a 1 s warm-up.
- failover (needs root to mount a tmpfs per log dir; skipped otherwise): RF 3,
  min.insync.replicas 2, replica.lag.time.max.ms 1000, a steady 1000 records/s acks=all
  stream; the leader's log dir is filled (ENOSPC) and the time from the fill to the first
  acknowledged record produced after it is measured, --failovers times (the disk is freed
  and the partition settles between rounds).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shmlog  # noqa: E402

VALUE = os.urandom(2048)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def throughput(conf, topic, records):
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 5, "batch.size": 1 << 20,
                         "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 2_000_000})
    errors = []
    start = time.monotonic()
    for i in range(records):
        while True:
            try:
                p.produce(topic, VALUE, on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.01)
        if i % 256 == 0:
            p.poll(0)
    assert p.flush(300) == 0 and not errors, errors[:3]
    elapsed = time.monotonic() - start
    return records / elapsed, records * len(VALUE) / elapsed / 1e6


def latency(conf, topic, seconds, rate=1000):
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0})
    lat = []
    t0 = time.monotonic()
    n = int(seconds * rate)
    for i in range(n):
        due = t0 + i / rate
        while True:
            now = time.monotonic()
            if now >= due:
                break
            p.poll(min(due - now, 0.001))
        sent = time.monotonic()
        p.produce(topic, VALUE, key=b"k%d" % (i % 100),
                  on_delivery=lambda err, msg, sent=sent: lat.append((sent, time.monotonic() - sent, err)))
    assert p.flush(60) == 0
    errs = [e for _, _, e in lat if e]
    assert not errs, errs[:3]
    kept = [d * 1000 for s, d, _ in lat if s - t0 >= 1.0]
    return pct(kept, 0.5), pct(kept, 0.99), max(kept)


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True)
    return done.returncode == 0, done.stderr.strip()


def failovers(base, rounds):
    disks = [os.path.join(base, f"disk{i}") for i in range(3)]
    mounted = []
    try:
        for d in disks:
            ok, why = mount_tmpfs(d, 64 << 20)
            if not ok:
                return f"skipped: cannot mount a tmpfs ({why})"
            mounted.append(d)
        data = os.path.join(base, "fo-data")
        times = []
        with shmlog.Broker(data, log_dirs=",".join(disks), replica_lag_time_max_ms=1000) as b:
            conf = {"bootstrap.servers": b.bootstrap_servers}
            admin = shmlog.AdminClient(conf)
            admin.create_topics([shmlog.NewTopic("fo", 1, replication_factor=3,
                                                 config={"min.insync.replicas": "2"})])["fo"].result()

            def state():
                return admin.list_topics("fo").topics["fo"].partitions[0]

            def settle():
                # A replica whose log dir failed rejoins the ISR once it copied records produced
                # after it failed (docs/replication.md): a trickle of records while we wait.
                deadline = time.monotonic() + 60
                while len(state().isrs) < 3:
                    assert time.monotonic() < deadline, "the ISR did not recover"
                    p.produce("fo", VALUE, on_delivery=lambda err, msg: None)
                    p.poll(0.05)

            p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0, "message.timeout.ms": 30000})
            # Warm-up: a new partition's ISR is all its replicas before its mirrors have even started;
            # one acknowledged record means every follower is copying.
            p.produce("fo", VALUE)
            assert p.flush(60) == 0
            for _ in range(rounds):
                settle()
                leader = state().leader
                acks = []
                for _ in range(200):   # a running stream before the failure
                    p.produce("fo", VALUE, on_delivery=lambda err, msg: None)
                    p.poll(0.001)
                filler = os.path.join(disks[leader], "filler")
                fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    while os.write(fd, b"\0" * 4096):
                        pass
                except OSError:
                    pass
                os.close(fd)
                failed_at = time.monotonic()
                deadline = failed_at + 30
                while not acks and time.monotonic() < deadline:
                    p.produce("fo", VALUE, on_delivery=lambda err, msg, acks=acks: err is None and
                              acks.append(time.monotonic()))
                    p.poll(0.001)
                p.flush(30)
                if acks:
                    times.append((acks[0] - failed_at) * 1000)
                new_leader = state().leader
                os.unlink(filler)
                print(f"  failover {len(times)}: leader {leader} -> {new_leader}, first ack after "
                      f"{times[-1]:.1f} ms" if acks else "  no ack within 30 s", flush=True)
            admin.close()
        return (f"{len(times)} failovers: time to first ack p50 {pct(times, 0.5):.1f} ms, "
                f"p99 {pct(times, 0.99):.1f} ms, max {max(times):.1f} ms")
    finally:
        for d in mounted:
            subprocess.run(["umount", "-l", d])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/var/tmp")
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--failovers", type=int, default=5)
    ap.add_argument("--failover-only", action="store_true", help="only the failover rounds")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="shmlog-bench-repl-", dir=args.data_dir)
    try:
        if args.failover_only:
            print(f"# failover only; load {os.getloadavg()[0]:.2f}")
            print(failovers(base, args.failovers))
            return
        data = os.path.join(base, "data")
        dirs = ",".join(os.path.join(base, f"log{i}") for i in range(3))
        print(f"# replication bench: 3 log dirs on one disk under {args.data_dir}; load {os.getloadavg()[0]:.2f}")
        with shmlog.Broker(data, log_dirs=dirs) as b:
            conf = {"bootstrap.servers": b.bootstrap_servers}
            admin = shmlog.AdminClient(conf)
            for rf in (1, 3):
                for name in (f"tp{rf}a", f"tp{rf}b", f"lat{rf}"):
                    admin.create_topics([shmlog.NewTopic(name, 1, replication_factor=rf)])[name].result()
            time.sleep(2)   # mirrors start and followers join the ISR (not a measurement)
            rows = {1: [], 3: []}
            for run in ("a", "b"):
                for rf in (1, 3):
                    os.sync()
                    rows[rf].append(throughput(conf, f"tp{rf}{run}", args.records))
            print("| acks=all 2 KB | records/s | MB/s |\n| --- | --- | --- |")
            for rf in (1, 3):
                rps = statistics.mean(r[0] for r in rows[rf])
                mbs = statistics.mean(r[1] for r in rows[rf])
                print(f"| RF={rf} | {rps:,.0f} | {mbs:.1f} |")
            print("\n| 1000 records/s keyed 2 KB, acks=all | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- |")
            for rf in (1, 3):
                os.sync()
                p50, p99, mx = latency(conf, f"lat{rf}", args.seconds)
                print(f"| RF={rf} | {p50:.2f} | {p99:.2f} | {mx:.2f} |")
            admin.close()
        print("\nfailover (leader's log dir filled, tmpfs per log dir):")
        print(failovers(base, args.failovers))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
