"""Memory benchmark: what an idle partition costs, and whether a long-reading consumer stays flat.
Prints numbers (Markdown tables); not a test.

    PYTHONPATH=. python bench/bench_memory.py [--quick] [--json PATH] [--data-dir DIR]
                                              [--partitions 32,128,256] [--ring-bytes B]
                                              [--records N] [--mode concurrent|preload]

(a) Idle partitions. One embedded broker (`shmlog.Broker`) in a fresh data dir under --data-dir
    (default /var/tmp). After it is up and settled, the bench records the memory of the broker's
    processes (the supervisor and all its children: the persister...) and the namespace's
    objects in /dev/shm; then it creates topics so that the broker has 32, then 128, then 256
    partitions in all (--partitions; topics of up to 32 partitions, ring.bytes --ring-bytes,
    default 1 MiB, the smallest power of two above the 64 KiB minimum that holds a 2 KB record
    comfortably), waits until the numbers settle (no change for 1 s, at most 10 s), and
    records again. Nothing is produced: the partitions are idle. Per step it prints, divided by
    the number of partitions added since the baseline:
      - /dev/shm: allocated bytes (st_blocks x 512) of the namespace's objects, and their size;
      - the broker processes' PSS and USS (psutil memory_full_info, summed over processes), and
        their PSS outside any /dev/shm mapping (from /proc/PID/smaps), so that ring pages a
        broker process touched are not counted twice;
      - open file descriptors of the broker processes and bytes in the data dir;
      - cost = /dev/shm allocated + PSS outside /dev/shm (what an idle partition uses now), and
        worst case = /dev/shm size + PSS outside /dev/shm (what it uses once every page of its
        ring has been written: tmpfs pages are not freed when the ring wraps), both against
        the target ring.bytes + 64 KiB.
    A warm-up topic is created and deleted before the baseline (not measured).
(b) A consumer reading 1 GiB: a producer process writes --records records of 2048 bytes
    (default 524,288 = 1 GiB of values) to a one-partition topic (ring.bytes 64 MiB, so the
    ring wraps 16 times), either while the consumer reads (--mode concurrent, the default) or
    all of it before the consumer starts (--mode preload: the consumer then reads most of it
    back from the segment files). The consumer, in its own process, reads everything twice
    over: once with the per-record `poll()` API and once with `consume_batch()` (each from
    offset 0, in separate processes), and samples its own memory every --sample-every records
    (16,384 by default, 32 samples per GiB): RSS and its parts RssAnon (heap: what a leak
    grows), RssFile and RssShmem (ring and file pages mapped in, bounded by the ring and the
    page cache) from /proc/self/status. It prints first / max / last and last - first.
    Producer and consumer are pinned to different CPUs, as in bench_core.py.

`--quick`: 16 and 64 partitions, 65,536 records (128 MiB). Exit status 0 when every check passed
(all records read, in order), else 1. The broker is stopped and its data dir removed at the end;
any /dev/shm object of its namespace still there is listed.
"""
import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402

import shmlog  # noqa: E402
from shmlog._native import shm  # noqa: E402

SPAWN = multiprocessing.get_context("spawn")
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
VALUE_BYTES = 2048
TOPIC_MAX_PARTITIONS = 32
CHILD_TIMEOUT_S = 300.0


# ---------------------------------------------------------------------------- measuring

def broker_procs(broker):
    try:
        sup = psutil.Process(broker.process.pid)
        return [sup] + sup.children(recursive=True)
    except psutil.Error:
        return []


def smaps_pss_outside_shm(pid):
    """PSS (bytes) of every mapping of pid except files under /dev/shm (rings, doorbell)."""
    total = 0
    inside = False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):       # a mapping header line
                    parts = line.split()
                    inside = len(parts) >= 6 and parts[5].startswith("/dev/shm/")
                elif first == "Pss:" and not inside:
                    total += int(line.split()[1]) * KIB
    except OSError:
        pass
    return total


def shm_usage(ns):
    alloc = size = count = 0
    for name in shm.names_in_namespace(ns):
        try:
            st = os.stat(os.path.join(shm.SHM_DIR, name.lstrip("/")))
        except OSError:
            continue
        alloc += st.st_blocks * 512
        size += st.st_size
        count += 1
    return {"shm_alloc": alloc, "shm_size": size, "shm_objects": count}


def dir_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def snapshot(broker, ns):
    out = {"pss": 0, "uss": 0, "rss": 0, "pss_outside_shm": 0, "fds": 0, "procs": 0}
    for proc in broker_procs(broker):
        try:
            mem = proc.memory_full_info()
            out["pss"] += mem.pss
            out["uss"] += mem.uss
            out["rss"] += mem.rss
            out["fds"] += proc.num_fds()
            out["pss_outside_shm"] += smaps_pss_outside_shm(proc.pid)
            out["procs"] += 1
        except psutil.Error:
            pass
    out.update(shm_usage(ns))
    out["data_dir_bytes"] = dir_bytes(broker.data_dir)
    return out


def settled(broker, ns, quiet_s=1.0, max_s=10.0):
    """Snapshot once the broker's memory and /dev/shm have not changed for quiet_s (max max_s)."""
    deadline = time.monotonic() + max_s
    last = snapshot(broker, ns)
    stable_since = time.monotonic()
    keys = ("pss", "uss", "shm_alloc", "pss_outside_shm")
    while time.monotonic() < deadline:
        time.sleep(0.25)
        cur = snapshot(broker, ns)
        if any(abs(cur[k] - last[k]) > 4 * KIB for k in keys):
            stable_since = time.monotonic()
        last = cur
        if time.monotonic() - stable_since >= quiet_s:
            break
    return last


# ---------------------------------------------------------------------------- (a) idle partitions

def drain(bootstrap, topic):
    """Untimed: wait until the persister has everything of topic on disk (an acks=all marker is
    acknowledged only after all before it), so that deleting the topic does not race it."""
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    p.produce(topic, b"")
    left = p.flush(60)
    if left:
        p.purge()
        print(f"  (persister still behind on {topic} after 60 s)", file=sys.stderr)
    p.close()


def idle_partitions(broker, admin, ns, steps, ring_bytes):
    # warm-up (not measured): one topic created and deleted, so that the code paths and buffers
    # of topic creation in the broker's processes are in place before the baseline
    admin.create_topics([shmlog.NewTopic("warm-up", 2, config={"ring.bytes": str(ring_bytes)})])["warm-up"].result()
    time.sleep(0.5)
    admin.delete_topics(["warm-up"])["warm-up"].result()
    base = settled(broker, ns)
    rows = []
    have = 0
    topic_seq = 0
    for target in steps:
        while have < target:
            k = min(TOPIC_MAX_PARTITIONS, target - have)
            topic_seq += 1
            name = f"idle-{topic_seq}"
            admin.create_topics([shmlog.NewTopic(name, k, config={"ring.bytes": str(ring_bytes)})])[name].result()
            have += k
        snap = settled(broker, ns)
        d = {k: snap[k] - base[k] for k in base if isinstance(base[k], int)}
        per = {k: d[k] / have for k in d}
        cost = per["shm_alloc"] + per["pss_outside_shm"]
        worst = per["shm_size"] + per["pss_outside_shm"]      # once every page of the ring was written
        rows.append({"worst_case_per_partition": worst, "worst_ok": worst <= ring_bytes + 64 * KIB,"partitions": have, "topics": topic_seq, "ring_bytes": ring_bytes, "baseline": base,
                     "after": snap, "per_partition": per, "cost_per_partition": cost,
                     "target_per_partition": ring_bytes + 64 * KIB,
                     "ok": cost <= ring_bytes + 64 * KIB})
        print(f"  {have} idle partitions: {cost / KIB:,.1f} KiB each (target {(ring_bytes + 64 * KIB) / KIB:,.0f} KiB)",
              file=sys.stderr, flush=True)
    for i in range(1, topic_seq + 1):
        admin.delete_topics([f"idle-{i}"])[f"idle-{i}"].result()
    return rows


# ---------------------------------------------------------------------------- (b) long read

def _pin(index):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})


def _status_mem():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1]) * KIB
    return out


def producer_main(bootstrap, topic, records, ready, go, results):
    try:
        _pin(0)
        p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 5,
                             "batch.num.messages": 10000})
        pad = b"x" * (VALUE_BYTES - 8)
        ready.set()
        go.wait(60)
        t0 = time.monotonic()
        for i in range(records):
            v = i.to_bytes(8, "little") + pad
            while True:
                try:
                    p.produce(topic, v)
                    break
                except BufferError:
                    p.poll(0.01)
            if not i & 4095:
                p.poll(0)
        left = p.flush(CHILD_TIMEOUT_S)
        p.close()
        results.put({"role": "producer", "seconds": time.monotonic() - t0, "left": left})
    except BaseException:
        results.put({"role": "producer", "error": traceback.format_exc()})


def consumer_main(bootstrap, topic, records, api, sample_every, ready, go, results):
    try:
        _pin(1)
        c = shmlog.Consumer({"bootstrap.servers": bootstrap})
        c.assign([shmlog.TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
        samples = [dict(_status_mem(), records=0)]
        ready.set()
        go.wait(60)
        t0 = time.monotonic()
        expected = 0
        bad = 0
        nbytes = 0
        next_sample = sample_every
        last_seen = time.monotonic()
        while expected < records:
            if api == "poll":
                m = c.poll(1.0)
                if m is None or m.error() is not None:
                    if time.monotonic() - last_seen > 30:
                        break
                    continue
                if m.offset() != expected:
                    bad += 1
                    expected = m.offset()
                nbytes += len(m.value())
                expected += 1
            else:
                view = c.consume_batch(8192, timeout=1.0)
                if view is None:
                    if time.monotonic() - last_seen > 30:
                        break
                    continue
                k = len(view)
                first = int(view.offsets[0])
                if first != expected:
                    bad += 1
                nbytes += int(view.value_lengths.sum())
                expected = first + k
                del view
            last_seen = time.monotonic()
            if expected >= next_sample:
                samples.append(dict(_status_mem(), records=expected))
                next_sample += sample_every
        seconds = time.monotonic() - t0
        samples.append(dict(_status_mem(), records=expected))
        c.close()
        results.put({"role": "consumer", "api": api, "count": expected, "bad": bad, "nbytes": nbytes,
                     "seconds": seconds, "samples": samples})
    except BaseException:
        results.put({"role": "consumer", "error": traceback.format_exc()})


def _collect(results, procs, want):
    import queue
    out = {}
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while len(out) < want:
        try:
            msg = results.get(timeout=0.5)
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"a child failed (exit codes {[p.exitcode for p in procs]})") from None
            continue
        if "error" in msg:
            raise RuntimeError(f"{msg['role']} failed:\n{msg['error']}")
        out[msg["role"]] = msg
    return out


def long_read(broker, admin, records, sample_every, mode, topic_seq):
    bootstrap = broker.bootstrap_servers
    topic = f"read-{topic_seq}"
    admin.create_topics([shmlog.NewTopic(topic, 1, config={"ring.bytes": str(64 * MIB)})])[topic].result()
    rows = []
    try:
        if mode == "preload":
            ready, go, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
            prod = SPAWN.Process(target=producer_main, args=(bootstrap, topic, records, ready, go, results))
            prod.start()
            ready.wait(60)
            go.set()
            _collect(results, [prod], 1)
            prod.join(30)
        for api in ("poll", "consume_batch"):
            print(f"  consumer ({api}) reading {records:,} records of {VALUE_BYTES} B ({mode})...",
                  file=sys.stderr, flush=True)
            ready_c, ready_p, go, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
            procs = [SPAWN.Process(target=consumer_main,
                                   args=(bootstrap, topic, records, api, sample_every, ready_c, go, results))]
            if mode == "concurrent":
                procs.append(SPAWN.Process(target=producer_main,
                                           args=(bootstrap, topic, records, ready_p, go, results)))
            else:
                ready_p.set()
            for p in procs:
                p.start()
            ready_c.wait(60)
            ready_p.wait(60)
            go.set()
            try:
                out = _collect(results, procs, len(procs))
            finally:
                for p in procs:
                    p.join(30)
                    if p.is_alive():
                        p.kill()
            cons = out["consumer"]
            problems = []
            if cons["count"] != records:
                problems.append(f"read {cons['count']:,} of {records:,}")
            if cons["bad"]:
                problems.append(f"{cons['bad']} offset gaps")
            s = cons["samples"]
            after_first = s[1] if len(s) > 1 else s[0]      # first sample after sample_every records
            row = {"api": api, "mode": mode, "records": records, "gib": cons["nbytes"] / GIB,
                   "seconds": cons["seconds"], "records_per_s": cons["count"] / cons["seconds"],
                   "samples": s, "check": "; ".join(problems) or "ok"}
            for key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                vals = [x[key] for x in s[1:]] or [s[0][key]]
                row[key] = {"before": s[0][key], "first": after_first[key], "max": max(vals), "last": s[-1][key],
                            "growth": s[-1][key] - after_first[key]}
            rows.append(row)
            if mode == "concurrent":       # the next API reads a fresh topic
                drain(bootstrap, topic)
                admin.delete_topics([topic])[topic].result()
                topic_seq += 1
                topic = f"read-{topic_seq}"
                admin.create_topics([shmlog.NewTopic(topic, 1, config={"ring.bytes": str(64 * MIB)})])[topic].result()
    finally:
        drain(bootstrap, topic)
        admin.delete_topics([topic])[topic].result()
    return rows


# ---------------------------------------------------------------------------- main

def mib(x):
    return f"{x / MIB:,.1f}"


def kib(x):
    return f"{x / KIB:,.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="/var/tmp", help="where the broker's temporary data dir goes")
    ap.add_argument("--partitions", default="", help="comma-separated totals of idle partitions (32,128,256)")
    ap.add_argument("--ring-bytes", type=int, default=MIB, help="ring.bytes of the idle partitions (1 MiB)")
    ap.add_argument("--records", type=int, default=0, help="2048-byte records the consumer reads (524288 = 1 GiB)")
    ap.add_argument("--sample-every", type=int, default=16384, help="records between RSS samples")
    ap.add_argument("--mode", choices=("concurrent", "preload"), default="concurrent",
                    help="produce while the consumer reads (default), or everything before")
    ap.add_argument("--quick", action="store_true", help="16,64 partitions; 65,536 records (128 MiB)")
    ap.add_argument("--json", metavar="PATH", help="also write everything (with all samples) as JSON")
    args = ap.parse_args(argv)
    steps = [int(x) for x in (args.partitions or ("16,64" if args.quick else "32,128,256")).split(",")]
    records = args.records or (65_536 if args.quick else 524_288)
    sample_every = args.sample_every if not args.quick or args.sample_every != 16384 else 4096

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    root = tempfile.mkdtemp(prefix="shmlog-bench-memory-", dir=args.data_dir)
    data_dir = os.path.join(root, "data")
    ns = shm.namespace(data_dir)
    idle, reads, left = [], [], []
    try:
        with shmlog.Broker(data_dir) as broker:
            admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
            try:
                print(f"(a) idle partitions, ring.bytes {args.ring_bytes:,}: {steps}", file=sys.stderr, flush=True)
                idle = idle_partitions(broker, admin, ns, steps, args.ring_bytes)
                print(f"(b) one consumer reading {records:,} x {VALUE_BYTES} B", file=sys.stderr, flush=True)
                reads = long_read(broker, admin, records, sample_every, args.mode, 1)
            finally:
                admin.close()
        left = shm.names_in_namespace(ns)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = time.monotonic() - started

    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"shmlog bench_memory — {stamp} — {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
          f"{platform.python_version()}, shmlog {shmlog.__version__}; data dir in {args.data_dir}; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; {total:.0f} s\n")
    if idle:
        b = idle[0]["baseline"]
        print(f"(a) Idle partitions (ring.bytes {args.ring_bytes:,} = {kib(args.ring_bytes)} KiB; target per "
              f"partition: ring + 64 KiB = {kib(args.ring_bytes + 64 * KIB)} KiB). Baseline, no topics: "
              f"{b['procs']} broker processes, PSS {mib(b['pss'])} MiB (outside /dev/shm {mib(b['pss_outside_shm'])}), "
              f"USS {mib(b['uss'])} MiB, /dev/shm {kib(b['shm_alloc'])} KiB in {b['shm_objects']} objects. "
              f"Per idle partition (growth over the baseline / partitions):\n")
        print("| partitions | /dev/shm allocated KiB | /dev/shm size KiB | PSS KiB | USS KiB | PSS outside /dev/shm KiB "
              "| fds | data dir KiB | cost KiB (shm allocated + PSS outside) | worst case KiB (shm size + PSS outside) "
              "| target KiB | idle | worst case |")
        print("|" + "---:|" * 11 + "---|---|")
        for r in idle:
            p = r["per_partition"]
            print(f"| {r['partitions']} | {kib(p['shm_alloc'])} | {kib(p['shm_size'])} | {kib(p['pss'])} | "
                  f"{kib(p['uss'])} | {kib(p['pss_outside_shm'])} | {p['fds']:.2f} | {kib(p['data_dir_bytes'])} | "
                  f"{kib(r['cost_per_partition'])} | {kib(r['worst_case_per_partition'])} | "
                  f"{kib(r['target_per_partition'])} | "
                  f"{'ok' if r['ok'] else 'OVER by ' + kib(r['cost_per_partition'] - r['target_per_partition']) + ' KiB'} | "
                  f"{'ok' if r['worst_ok'] else 'OVER by ' + kib(r['worst_case_per_partition'] - r['target_per_partition']) + ' KiB'} |")
        print()
    if reads:
        print(f"(b) One consumer reading {records:,} records of {VALUE_BYTES} B "
              f"({records * VALUE_BYTES / GIB:.2f} GiB of values; {reads[0]['mode']}; ring.bytes 64 MiB), its own "
              f"memory sampled every {sample_every:,} records; MiB; 'first' is the sample after the first "
              f"{sample_every:,} records, growth = last - first:\n")
        print("| API | records/s | RSS first / max / last | RSS growth | RssAnon first / max / last | RssAnon growth "
              "| RssShmem last | RssFile last | check |")
        print("|---|---:|---|---:|---|---:|---:|---:|---|")
        for r in reads:
            v, a = r["VmRSS"], r["RssAnon"]
            print(f"| {r['api']} | {r['records_per_s']:,.0f} | {mib(v['first'])} / {mib(v['max'])} / {mib(v['last'])} "
                  f"| {mib(v['growth'])} | {mib(a['first'])} / {mib(a['max'])} / {mib(a['last'])} | {mib(a['growth'])} "
                  f"| {mib(r['RssShmem']['last'])} | {mib(r['RssFile']['last'])} | {r['check']} |")
    if left:
        print(f"\nWARNING: shared-memory objects left behind: {', '.join(left)}", file=sys.stderr)
    if args.json:
        doc = {"date": stamp, "seconds": round(total, 1), "args": vars(args), "idle_partitions": idle,
               "long_read": reads, "shm_left_behind": left, "loadavg_before": load_before,
               "loadavg_after": os.getloadavg()[0]}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    ok = all(r["check"] == "ok" for r in reads) and not left
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
