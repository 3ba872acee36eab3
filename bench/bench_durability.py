"""Durability benchmark: what acks=all costs. Prints numbers (a Markdown table); not a test.

    PYTHONPATH=. python bench/bench_durability.py [--data-dir DIR] [--quick] [--json PATH]

Rows (each on a fresh topic of one embedded broker whose data dir is created inside
--data-dir, default /var/tmp, so it measures *that* disk):

- disk: the disk itself, for reference: 1 MiB writes, each followed by fdatasync (what one
  group commit of ~1 MiB costs), and 64 MiB written with one fdatasync at the end.
- throughput, acks=all and acks=1, in the same run and alternating (all, 1, all, 1, ...):
  --producers processes (default 2), each producing --records records of 2048-byte values
  with the ordinary `Producer.produce()` API (linger.ms 5, batch.size 1 MiB) to its own
  partition and serving delivery reports with poll(); the time runs from a start signal to
  the last delivery report of the last producer. One unreported acks=1 run warms up first
  (page faults of fresh rings, imports, the disk's first extents). acks=all reports fire only after the
  persister's fdatasync, so its number includes writing 2 KB records to the segment files
  and the group-committed fdatasyncs.
- latency, acks=all (and acks=1 for comparison): a steady 1000 records/s keyed stream (100
  keys, 4 partitions, linger.ms 0) of 2048-byte values for --latency-seconds. Each value
  carries its send time (CLOCK_MONOTONIC, the same clock in every process). "end to end" is
  send -> a consumer in another process has the record (consumers see a record once it is in
  the ring; acks do not delay them); "ack" is send -> the delivery report, which for acks=all
  fires once the record is in the segment file and fdatasync'ed. The producer is pinned to
  the first CPU, the consumer to the second, both with 1 us timer slack (as in
  bench_core.py); between sends the producer sleeps, or with acks=all waits in poll() on the
  flushed-offset futex. p50/p99/p99.9/max over all records after a 1 s warm-up.

Latency runs first; every row starts after an (untimed) os.sync(), so no row pays for
writing back page cache an earlier row dirtied. The persister runs on the same cores as the
producers. The header gives the load average before and after: on a shared machine other
processes' load moves the numbers, the latency tails most. The exit status is 1 if a row's
check failed (records missing or out of order, delivery errors), else 0.
"""
import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shmlog  # noqa: E402

VALUE_BYTES = 2048
SPAWN = multiprocessing.get_context("spawn")
ROW_TIMEOUT_S = 300.0
now_ns = time.monotonic_ns


# ---------------------------------------------------------------------------- disk

def disk_row(directory, total_mib):
    path = os.path.join(directory, "bench-disk-probe")
    chunk = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = now_ns()
        for _ in range(total_mib):
            os.write(fd, chunk)
            os.fdatasync(fd)
        per_sync = total_mib * (1 << 20) / ((now_ns() - t0) / 1e9)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        t0 = now_ns()
        for _ in range(64):
            os.write(fd, chunk)
        os.fdatasync(fd)
        bulk = 64 * (1 << 20) / ((now_ns() - t0) / 1e9)
    finally:
        os.close(fd)
        os.unlink(path)
    return per_sync, bulk


# ---------------------------------------------------------------------------- children

def _result(results, procs, timeout):
    """The next result a child puts, failing early when a child died without one."""
    import queue
    deadline = time.monotonic() + timeout
    while True:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"a child process failed (exit codes {[p.exitcode for p in procs]}) "
                                   f"or {timeout}s passed") from None


# ---------------------------------------------------------------------------- throughput

def throughput_producer(bootstrap, topic, partition, records, acks, ready, go, results):
    import shmlog

    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "batch.size": 1 << 20})
    value = b"v" * VALUE_BYTES
    state = {"ok": 0, "errors": 0, "last": -1, "disorder": 0}

    def on_delivery(err, msg):
        if err is not None:
            state["errors"] += 1
            return
        state["ok"] += 1
        if msg.offset() <= state["last"]:
            state["disorder"] += 1
        state["last"] = msg.offset()

    produce = p.produce
    ready.set()
    go.wait()
    start = now_ns()
    for i in range(records):
        try:
            produce(topic, value, partition=partition, on_delivery=on_delivery)
        except BufferError:  # buffer.memory of records await their reports: serve some
            p.poll(1)
            produce(topic, value, partition=partition, on_delivery=on_delivery)
        if not i % 2000:
            p.poll(0)
    left = p.flush(ROW_TIMEOUT_S)
    end = now_ns()
    p.close()
    results.put((start, end, state, left))


def throughput_row(broker, admin, name, acks, producers, records):
    bootstrap = broker.bootstrap_servers
    admin.create_topics([shmlog.NewTopic(name, producers, config={"ring.bytes": str(64 << 20)})])[name].result()
    ready = [SPAWN.Event() for _ in range(producers)]
    go, results = SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=throughput_producer, args=(bootstrap, name, i, records, acks, ready[i], go, results))
             for i in range(producers)]
    for proc in procs:
        proc.start()
    for event in ready:
        event.wait(60)
    go.set()
    outs = [_result(results, procs, ROW_TIMEOUT_S) for _ in procs]
    for proc in procs:
        proc.join(60)
    start = min(o[0] for o in outs)
    end = max(o[1] for o in outs)
    total = producers * records
    ok = sum(o[2]["ok"] for o in outs)
    problems = []
    if ok != total:
        problems.append(f"{total - ok} of {total} not delivered")
    if any(o[2]["errors"] for o in outs):
        problems.append(f"{sum(o[2]['errors'] for o in outs)} delivery errors")
    if any(o[2]["disorder"] for o in outs):
        problems.append("delivery reports out of offset order")
    seconds = (end - start) / 1e9
    return {"row": f"throughput acks={acks}", "records": total, "seconds": seconds,
            "records_per_s": total / seconds, "mb_per_s": total * VALUE_BYTES / seconds / 1e6,
            "check": "; ".join(problems) or "ok"}


# ---------------------------------------------------------------------------- latency

def _child_setup(cpu):
    """Pin to one CPU (when there are two or more) and ask for 1 us timer slack, as bench_core does."""
    if cpu is not None and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[cpu]})
    from shmlog.cli.benchmark import precise_timer
    precise_timer()


def latency_producer(bootstrap, topic, seconds, rate, ready, go, results, acks="all"):
    import shmlog

    _child_setup(0)
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 0})
    acked = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append(now_ns() - struct.unpack_from(">q", msg.value())[0])

    pad = b"p" * (VALUE_BYTES - 8)
    interval = 1_000_000_000 // rate
    count = seconds * rate
    ready.set()
    go.wait()
    t0 = now_ns() + 10_000_000
    for i in range(count):
        due = t0 + i * interval
        while True:
            wait = due - now_ns()
            if wait <= 0:
                break
            if len(p):
                p.poll(wait / 1e9)  # acks=all: sleeps on the flushed-offset futex, reports when fsynced
            else:
                time.sleep(wait / 1e9)
        p.produce(topic, struct.pack(">q", now_ns()) + pad, key=b"key-%d" % (i % 100), on_delivery=on_delivery)
        p.poll(0)
    p.flush(60)
    p.close()
    results.put(("producer", acked, errors, count))


def latency_consumer(bootstrap, topic, partitions, count, ready, results):
    import shmlog
    from shmlog import OFFSET_BEGINNING, TopicPartition

    _child_setup(1)
    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench"})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    ready.set()
    lat, seen, deadline = [], 0, time.monotonic() + ROW_TIMEOUT_S
    while seen < count and time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is None or msg.error() is not None:
            continue
        lat.append(now_ns() - struct.unpack_from(">q", msg.value())[0])
        seen += 1
    c.close()
    results.put(("consumer", lat, seen))


def percentiles(samples_ns, warmup):
    s = sorted(samples_ns[warmup:])
    if not s:
        return {}
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] / 1000  # noqa: E731
    return {"p50_us": pick(0.50), "p99_us": pick(0.99), "p999_us": pick(0.999), "max_us": s[-1] / 1000,
            "mean_us": statistics.fmean(s) / 1000, "samples": len(s)}


def latency_row(broker, admin, name, seconds, rate=1000, partitions=4, acks="all"):
    bootstrap = broker.bootstrap_servers
    admin.create_topics([shmlog.NewTopic(name, partitions)])[name].result()
    ready_p, ready_c, go, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    count = seconds * rate
    cons = SPAWN.Process(target=latency_consumer, args=(bootstrap, name, partitions, count, ready_c, results))
    prod = SPAWN.Process(target=latency_producer, args=(bootstrap, name, seconds, rate, ready_p, go, results, acks))
    cons.start()
    prod.start()
    ready_p.wait(60)
    ready_c.wait(60)
    go.set()
    out = dict((r[0], r[1:]) for r in (_result(results, (prod, cons), ROW_TIMEOUT_S + seconds) for _ in range(2)))
    prod.join(60)
    cons.join(60)
    acks_ns, errors, sent = out["producer"]
    e2e, seen = out["consumer"]
    problems = []
    if errors:
        problems.append(f"{len(errors)} delivery errors")
    if len(acks_ns) != sent:
        problems.append(f"{sent - len(acks_ns)} of {sent} not acknowledged")
    if seen != sent:
        problems.append(f"consumer saw {seen} of {sent}")
    return [{"row": f"latency acks={acks}, end to end (send -> consumer)", **percentiles(e2e, rate),
             "check": "; ".join(problems) or "ok"},
            {"row": f"latency acks={acks}, ack (send -> delivery report" + (" after fsync)" if acks == "all" else ")"),
             **percentiles(acks_ns, rate), "check": "; ".join(problems) or "ok"}]


# ---------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="/var/tmp", help="directory on the disk to measure (default /var/tmp)")
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--records", type=int, default=250_000, help="records per producer per throughput run")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs per acks setting")
    ap.add_argument("--latency-seconds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="50k records per producer, 1 run, 5 s of latency")
    ap.add_argument("--json", help="also write the rows as JSON to this path")
    args = ap.parse_args(argv)
    if args.quick:
        args.records, args.repeat, args.latency_seconds = 50_000, 1, 5

    root = tempfile.mkdtemp(prefix="shmlog-bench-durability-", dir=args.data_dir)
    rows = []
    load_before = os.getloadavg()[0]
    try:
        per_sync, bulk = disk_row(root, 256 if not args.quick else 64)
        rows.append({"row": "disk: 1 MiB write + fdatasync, repeated", "mb_per_s": per_sync / 1e6, "check": "ok"})
        rows.append({"row": "disk: 64 MiB written, one fdatasync", "mb_per_s": bulk / 1e6, "check": "ok"})
        with shmlog.Broker(os.path.join(root, "data")) as broker:
            admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
            # Latency first, before the throughput rows leave gigabytes for writeback; os.sync()
            # between rows (untimed) so no row pays for the page cache another one dirtied.
            for acks in ("all", "1"):
                os.sync()
                print(f"latency acks={acks}: {args.latency_seconds} s at 1000 records/s", file=sys.stderr, flush=True)
                rows.extend(latency_row(broker, admin, f"latency-{acks}", args.latency_seconds, acks=acks))
            print("warm-up (not reported)", file=sys.stderr, flush=True)
            throughput_row(broker, admin, "warm-up", "1", args.producers, min(args.records, 20_000))
            admin.delete_topics(["warm-up"])["warm-up"].result()
            runs = {"all": [], "1": []}
            for r in range(args.repeat):
                for acks in ("all", "1"):
                    os.sync()
                    print(f"throughput acks={acks}, run {r + 1}/{args.repeat}", file=sys.stderr, flush=True)
                    runs[acks].append(throughput_row(broker, admin, f"tp-{acks}-{r}", acks, args.producers,
                                                     args.records))
                    admin.delete_topics([f"tp-{acks}-{r}"])[f"tp-{acks}-{r}"].result()
            for acks in ("all", "1"):
                ordered = sorted(runs[acks], key=lambda row: row["records_per_s"])
                median = dict(ordered[len(ordered) // 2])
                median["runs_records_per_s"] = [round(row["records_per_s"]) for row in runs[acks]]
                median["check"] = "; ".join(sorted({row["check"] for row in runs[acks]}))
                rows.insert(2 + ("all", "1").index(acks), median)
            admin.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nshmlog {shmlog.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"data dir on {args.data_dir}, {VALUE_BYTES}-byte values, {args.producers} producers x "
          f"{args.records:,} records per throughput run; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after\n")
    print("| row | records/s | MB/s | p50 µs | p99 µs | p99.9 µs | max µs | check |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else ""  # noqa: E731
    for row in rows:
        extra = f" (runs: {', '.join(f'{v:,}' for v in row['runs_records_per_s'])})" if "runs_records_per_s" in row \
            else ""
        cells = [fmt(row.get("records_per_s"), ",.0f"), fmt(row.get("mb_per_s"), ",.1f")]
        cells += [fmt(row.get(k), ",.0f") for k in ("p50_us", "p99_us", "p999_us", "max_us")]
        print(f"| {row['row']}{extra} | {' | '.join(cells)} | {row['check']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(row["check"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
