"""bench_sustained.py: shmlog as a user runs it (longer than a ring, persister on), next to the
in-ring rows and pyzmq in the same run; scaling with processes; latency under load; the
blocking wait's CPU share against its latency.

    PYTHONPATH=. python bench/bench_sustained.py [--quick] [--json PATH] [--only TEXT ...]
                                                 [--data-dir DIR] [--scale 2,8,32]

Every shmlog row is one `shmlog bench` run (shmlog/cli/benchmark.py: producer and consumer
processes, checks of every record, the table's notes say what each row includes) against ONE
embedded broker whose data dir is under --data-dir (default /var/tmp, a real disk), so the
persister writes real segment files. Rows:

- in-ring rows: the run fits its 256 MiB ring (the persister writes beside it);
- sustained rows: a 16 MiB ring and a run of 20x it or more, so producers get ring space only
  as the persister frees it (its CPU seconds per GB of values is a column);
- disk: the data dir's buffered write bandwidth (1 MiB write()s of a 1 GiB file, no fsync,
  timed to the last write's return), the reference of the sustained 2 KB row; and the same
  timed to an fdatasync after the last write (what the device itself takes);
- memory: writing 256 MiB this process never touched, then the same again: what fresh page
  cache (the persister's segments) costs per byte on this machine next to memory in use;
- pyzmq ipc per-record 100 B: bench/bench_core.py's row in a subprocess (same run);
- latency at 10k/s (busy-poll, blocking), and blocking under load: while a background
  producer process saturates another topic's partition with produce_values() batches;
- the blocking wait at 1k, 10k, 100k records/s: the consumer's CPU % and p50/p99;
- scale: N->1, 1->N (every consumer reads the partition), N->N on one partition and on N
  partitions, for N in --scale; records/s and p99 (latency includes queueing);
- the Pipeline (shmlog.pipeline, the README's job: a function per record, outputs produced,
  offsets committed after delivery) with 1, 2, 4 workers over a preloaded 4-partition topic,
  timed from the group being ready until the output topic holds every output;
- a consumer group of 1, 2, 4 member processes (consume(10000), auto-commit) reading a
  preloaded 4-partition topic, timed from the start signal (the join included).

Output: a Markdown table on stdout (progress on stderr); --json writes every row.
"""
import argparse
import json
import math
import mmap
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shmlog  # noqa: E402
from shmlog.cli import benchmark as bm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SUSTAINED_RING = 16 << 20
IN_RING = 256 << 20


def rows(quick, scale):
    q = (lambda full, small: small if quick else full)   # noqa: E731
    sustained_100 = math.ceil(21 * SUSTAINED_RING / 100)         # values alone 21x the ring
    out = [
        ("in-ring per-record 100 B", dict(workload="e2e", records=q(1_000_000, 200_000), ring_bytes=IN_RING)),
        ("sustained per-record 100 B", dict(workload="e2e", records=q(sustained_100, sustained_100 // 4),
                                            ring_bytes=SUSTAINED_RING if not quick else SUSTAINED_RING // 4)),
        ("in-ring batch 100 B", dict(workload="e2e", api="batch", records=q(2_000_000, 500_000), ring_bytes=IN_RING)),
        ("sustained batch 100 B", dict(workload="e2e", api="batch", records=q(10_000_000, 2_000_000),
                                       ring_bytes=SUSTAINED_RING)),
        ("in-ring batch 2 KB", dict(workload="e2e", api="batch", record_bytes=2048, records=q(100_000, 30_000),
                                    ring_bytes=IN_RING)),
        ("sustained batch 2 KB acks=1", dict(workload="e2e", api="batch", record_bytes=2048,
                                             records=q(400_000, 100_000), ring_bytes=SUSTAINED_RING)),
        ("latency 10k/s busy-poll", dict(workload="latency", wait="busy", records=q(30_000, 5_000))),
        ("latency 10k/s blocking", dict(workload="latency", records=q(30_000, 5_000))),
        ("latency 10k/s blocking, another partition saturated", dict(workload="latency", records=q(30_000, 5_000),
                                                                      load=True)),
    ]
    for rate in (1_000, 10_000, 100_000):
        out.append((f"blocking wait at {rate // 1000}k/s", dict(workload="latency", rate_per_s=rate,
                                                                records=q(min(rate * 3, 300_000), rate // 2))))
    n_records = q(400_000, 60_000)
    for n in scale:
        out += [
            (f"scale {n}->1, 1 partition", dict(workload="e2e", producers=n, consumers=1, partitions=1,
                                                records=n_records)),
            (f"scale 1->{n}, 1 partition", dict(workload="e2e", producers=1, consumers=n, partitions=1,
                                                fanout=True, records=n_records // n * 2)),
            (f"scale {n}->{n}, 1 partition", dict(workload="e2e", producers=n, consumers=n, partitions=1,
                                                  fanout=True, records=n_records // n * 2)),
            (f"scale {n}->{n}, {n} partitions", dict(workload="e2e", producers=n, consumers=n, partitions=n,
                                                     records=n_records)),
        ]
    for w in (1, 2, 4):
        out.append((f"pipeline {w} worker{'s' if w > 1 else ''}", dict(pipeline=w, records=q(100_000, 8_000))))
    for m in (1, 2, 4):
        out.append((f"group of {m} consuming", dict(group=m, records=q(2_000_000, 400_000))))
    return out


def saturate(bootstrap, topic, stop):
    """The background load: produce_values() of 8,192 x 100 B as fast as the ring takes them."""
    import numpy as np
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    values = np.zeros((8192, 100), np.uint8)
    n = 0
    while not stop.is_set():
        p.produce_values(topic, values, partition=0)
        n += len(values)
    p.flush(60)
    p.close()


def pipeline_fn(msg):
    """The pipeline rows' function: one output record per input, its value."""
    return msg.value()


def preload(bootstrap, topic, partitions, records):
    admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([shmlog.NewTopic(topic, partitions, config={"ring.bytes": str(IN_RING // 4)})])[topic].result()
    admin.close()
    import numpy as np
    p = shmlog.Producer({"bootstrap.servers": bootstrap})
    per = records // partitions
    for part in range(partitions):
        values = np.zeros((per, 100), np.uint8)
        for i in range(0, per, 8192):
            p.produce_values(topic, values[i:i + 8192], partition=part)
    p.flush(60)
    p.close()
    return per * partitions


def _high(consumer, topic, partitions):
    return sum(consumer.get_watermark_offsets(shmlog.TopicPartition(topic, p))[1] for p in range(partitions))


def _delete(bootstrap, *topics):
    admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics(list(topics)).values():
        f.result()
    admin.close()


def pipeline_row(name, bootstrap, workers, records, partitions=4):
    """Pipeline (README's job) with `workers` worker processes: records/s from the group being
    ready until the output topic holds one record per input."""
    from shmlog.pipeline import Pipeline
    src, out = f"pipe-in-{workers}", f"pipe-out-{workers}"
    n = preload(bootstrap, src, partitions, records)
    admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([shmlog.NewTopic(out, partitions, config={"ring.bytes": str(IN_RING // 4)})])[out].result()
    admin.close()
    watch = shmlog.Consumer({"bootstrap.servers": bootstrap})
    conf = {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest"}   # the input is preloaded
    try:
        with Pipeline(conf, [src], pipeline_fn, group_id=f"pipe-{workers}", workers=workers, output_topic=out) as p:
            p.wait_ready(60)
            t0 = time.monotonic()
            deadline = t0 + 600
            while _high(watch, out, partitions) < n and time.monotonic() < deadline:
                time.sleep(0.01)     # polling the output's watermarks, not synchronisation
            seconds = time.monotonic() - t0
            done = _high(watch, out, partitions)
    finally:
        watch.close()
    _delete(bootstrap, src, out)
    return {"row": name, "ok": done == n, "problems": [] if done == n else [f"{done} of {n} outputs"],
            "records": n, "records_per_s": n / seconds, "mb_per_s": n * 100 / seconds / 1e6}


def group_member(bootstrap, topic, group, counter, ready, go, total):
    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    with ready.get_lock():
        ready.value += 1
    go.wait(60)
    while counter.value < total:
        msgs = c.consume(10000, 0.1)
        if msgs:
            with counter.get_lock():
                counter.value += len(msgs)
    c.close()


def group_row(name, bootstrap, members, records, partitions=4):
    """A consumer group of `members` processes (consume(10000), auto-commit) reading a
    preloaded topic: records/s from the start signal until the members read them all (the
    group's join is in it)."""
    topic = f"group-in-{members}"
    n = preload(bootstrap, topic, partitions, records)
    ctx = multiprocessing.get_context("spawn")
    counter, ready, go = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Event()
    procs = [ctx.Process(target=group_member, args=(bootstrap, topic, f"g-{members}", counter, ready, go, n))
             for _ in range(members)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 120
    while ready.value < members and time.monotonic() < deadline:   # imports and connects: untimed
        time.sleep(0.01)
    t0 = time.monotonic()
    go.set()
    for proc in procs:
        proc.join(600)
    seconds = time.monotonic() - t0
    _delete(bootstrap, topic)
    return {"row": name, "ok": counter.value == n, "problems": [] if counter.value == n else
            [f"read {counter.value} of {n}"], "records": n, "records_per_s": n / seconds,
            "mb_per_s": n * 100 / seconds / 1e6}


def disk_write_bandwidth(directory, total=1 << 30, chunk=1 << 20, synced=False):
    """write() bandwidth of a fresh file in directory (bytes/s): buffered (timed to the last
    write's return), or with `synced` timed to an fdatasync after the last write (what the
    device takes, as `dd conv=fdatasync`)."""
    path = os.path.join(directory, "write-bandwidth.tmp")
    block = os.urandom(chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.monotonic()
        for _ in range(total // chunk):
            os.write(fd, block)
        if synced:
            os.fdatasync(fd)
        seconds = time.monotonic() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    return total / seconds


def memory_touch_bandwidth(total=256 << 20, chunk=1 << 20):
    """(bytes/s writing memory this process never touched, bytes/s writing it again): on a VM whose
    host backs guest memory lazily or takes back what the guest frees (free page reporting), the
    first pass costs a host fault per page. On such a VM, the page cache a segment file takes as the
    persister extends it is that kind of memory while free memory is plentiful."""
    area = mmap.mmap(-1, total)
    block = b"\xa5" * chunk
    try:
        rates = []
        for _ in range(2):
            t0 = time.monotonic()
            for at in range(0, total, chunk):
                area[at:at + chunk] = block
            rates.append(total / (time.monotonic() - t0))
    finally:
        area.close()
    return rates[0], rates[1]


def zmq_row(quick, data_dir):
    """bench_core.py's per-record 100 B rows (shmlog and pyzmq ipc) in a subprocess."""
    out = os.path.join(data_dir, "core.json")
    cmd = [sys.executable, os.path.join(HERE, "bench_core.py"), "--only", "per-record 100 B", "--peers", "zmq",
           "--repeat", "1", "--records", str(200_000 if quick else 1_000_000), "--data-dir", data_dir, "--json", out]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0 or not os.path.exists(out):
        return {"error": (run.stderr or run.stdout).strip().splitlines()[-1:]}
    with open(out) as f:
        doc = json.load(f)
    return {r["peer"]: r.get("records_per_s") for r in doc["rows"]}


def run_row(name, spec, bootstrap, data_dir):
    spec = dict(spec)
    if "pipeline" in spec:
        return pipeline_row(name, bootstrap, spec["pipeline"], spec["records"])
    if "group" in spec:
        return group_row(name, bootstrap, spec["group"], spec["records"])
    load = spec.pop("load", False)
    config = bm.BenchConfig(bootstrap=bootstrap, **spec).resolved()
    problems = bm.validate(config)
    if problems:
        return {"row": name, "error": "; ".join(m for _, m in problems)}
    stop = proc = None
    if load:
        admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([shmlog.NewTopic("load", 1, config={"ring.bytes": str(SUSTAINED_RING)})])["load"].result()
        admin.close()
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        proc = ctx.Process(target=saturate, args=(bootstrap, "load", stop), daemon=True)
        proc.start()
    try:
        r = bm.run(config)
    finally:
        if proc is not None:
            stop.set()
            proc.join(60)
            admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
            admin.delete_topics(["load"])["load"].result()
            admin.close()
    d = r.to_dict()
    lat = r.latency or {}
    return {"row": name, "ok": r.ok, "problems": r.problems, "records": r.records, "records_per_s": r.records_per_s,
            "mb_per_s": r.mb_per_s, "producer_cpu_pct": r.producer_cpu_pct, "consumer_cpu_pct": r.consumer_cpu_pct,
            "persister_cpu_pct": r.persister_cpu_pct,
            # per GB only where there are GBs: a paced row's persister CPU is mostly its idle wake-ups
            "persister_s_per_gb": r.persister_s_per_gb if r.bytes_sent >= 50e6 else None,
            "ring_times": round(r.bytes_sent / config.partitions / r.ring_bytes, 1) if r.ring_bytes else None,
            "p50_us": lat.get("p50_us"), "p99_us": lat.get("p99_us"), "pinned": config.pin, "config": d["config"]}


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, list):
        return " ".join(str(x) for x in v) if len(v) <= 4 else f"{min(v)}..{max(v)}"
    return f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--only", action="append", metavar="TEXT", help="rows whose name contains TEXT")
    ap.add_argument("--data-dir", default="/var/tmp")
    ap.add_argument("--scale", default="2,8,32", help="process counts of the scale rows (none: no scale rows)")
    ap.add_argument("--no-peers", action="store_true", help="skip the pyzmq row")
    args = ap.parse_args()
    scale = [] if args.scale == "none" else [int(x) for x in args.scale.split(",")]
    selected = [(n, s) for n, s in rows(args.quick, scale) if not args.only or any(t in n for t in args.only)]
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = []
    with tempfile.TemporaryDirectory(prefix="shmlog-sustained-", dir=args.data_dir) as tmp:
        disk = disk_write_bandwidth(tmp, total=(256 << 20) if args.quick else (1 << 30))
        disk_synced = disk_write_bandwidth(tmp, total=(256 << 20) if args.quick else (1 << 30), synced=True)
        print(f"disk buffered write: {disk / 1e9:.2f} GB/s, with fdatasync {disk_synced / 1e9:.2f} GB/s",
              file=sys.stderr)
        touch_first, touch_again = memory_touch_bandwidth()
        zmq = {} if args.no_peers else zmq_row(args.quick, tmp)
        print(f"bench_core per-record 100 B: {zmq}", file=sys.stderr)
        broker = shmlog.Broker(os.path.join(tmp, "broker"), shmlog_log_level="WARNING")
        broker.start()
        try:
            for name, spec in selected:
                print(f"{name} ...", file=sys.stderr, flush=True)
                try:
                    res = run_row(name, spec, broker.bootstrap_servers, tmp)
                except (bm.BenchError, shmlog.KafkaException, OSError) as exc:
                    res = {"row": name, "error": bm.error_line(exc)}
                print(f"  {res.get('records_per_s', 0):,.0f} records/s {res.get('error') or ''}", file=sys.stderr)
                results.append(res)
        finally:
            broker.stop()
    load_after = os.getloadavg()
    by = {r["row"]: r for r in results}
    print(f"bench_sustained {started}, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after{' (quick)' if args.quick else ''}\n")
    print("| row | records | records/s | MB/s | x ring | p50 / p99 us | cpu % prod / cons / persister "
          "| persister s/GB | ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['row']} | error: {r['error']} |||||||")
            continue
        if "ring_times" not in r:
            print(f"| {r['row']} | {r['records']:,} | {fmt(r['records_per_s'])} | {fmt(r['mb_per_s'], 1)} | - | - | - "
                  f"| - | {'OK' if r['ok'] else 'FAILED: ' + '; '.join(r['problems'])} |")
            continue
        print(f"| {r['row']} | {r['records']:,} | {fmt(r['records_per_s'])} | {fmt(r['mb_per_s'], 1)} | "
              f"{fmt(r['ring_times'], 1)} | {fmt(r['p50_us'], 1)} / {fmt(r['p99_us'], 1)} | "
              f"{fmt(r['producer_cpu_pct'])} / {fmt(r['consumer_cpu_pct'])} / {fmt(r['persister_cpu_pct'])} | "
              f"{fmt(r['persister_s_per_gb'], 2)} | {'OK' if r['ok'] else 'FAILED: ' + '; '.join(r['problems'])} |")
    print(f"| disk buffered write (1 MiB write()s) | - | - | {disk / 1e6:,.0f} | - | - | - | - | - |")
    print(f"| disk write + fdatasync (1 MiB write()s) | - | - | {disk_synced / 1e6:,.0f} | - | - | - | - | - |")
    print(f"| memory written for the first time (256 MiB, 1 MiB writes) | - | - | {touch_first / 1e6:,.0f} | - | - "
          f"| - | - | - |")
    print(f"| the same memory written again | - | - | {touch_again / 1e6:,.0f} | - | - | - | - | - |")
    for peer, rate in zmq.items():
        print(f"| bench_core per-record 100 B, {peer} | - | {fmt(rate) if isinstance(rate, float) else rate} "
              f"| - | - | - | - | - | - |")
    ratios = []

    def ratio(label, a, b, want):
        if a in by and b is not None and by[a].get("records_per_s") and b:
            x = by[a]["records_per_s"] / b
            ratios.append(f"- {label}: {x:.2f} (target {want})")

    ratio("sustained per-record 100 B / pyzmq ipc", "sustained per-record 100 B", zmq.get("pyzmq ipc"), ">= 2")
    if "in-ring per-record 100 B" in by:
        ratio("sustained / in-ring per-record 100 B", "sustained per-record 100 B",
              by["in-ring per-record 100 B"]["records_per_s"], ">= 0.85")
    if "sustained batch 2 KB acks=1" in by:
        mb = by["sustained batch 2 KB acks=1"]["mb_per_s"] * 1e6
        ratios.append(f"- sustained batch 2 KB / disk buffered write: {mb / disk:.2f} (target >= 0.90)")
        ratios.append(f"- sustained batch 2 KB / disk write + fdatasync: {mb / disk_synced:.2f} (what the device "
                      "takes; the persister starts writeback as it writes and fdatasyncs every segment it seals)")
        ratios.append(f"- sustained batch 2 KB / memory written for the first time: {mb / touch_first:.2f} (the "
                      "persister's page cache is such memory while free memory lasts)")
    if ratios:
        print("\nRatios (same run):\n" + "\n".join(ratios))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"started": started, "load_before": load_before, "load_after": load_after,
                       "disk_write_bytes_per_s": disk, "disk_synced_write_bytes_per_s": disk_synced,
                       "memory_first_touch_bytes_per_s": touch_first, "memory_touched_again_bytes_per_s": touch_again,
                       "bench_core": zmq, "rows": results}, f, indent=2)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
