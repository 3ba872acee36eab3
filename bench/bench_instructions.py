"""Instructions per record, counted by valgrind's callgrind: numbers that do not drift with machine
load (a busy neighbour changes how long a record takes, not how many instructions it executes).

    PYTHONPATH=. python bench/bench_instructions.py [--records N2] [--quick] [--json PATH] [--only TEXT]

For every workload a small client script (this file, run with --client) runs under
`valgrind --tool=callgrind` twice, once with N1 and once with N2 records (default 20,000 and
120,000), against an embedded broker that this script starts *outside* valgrind, in a temporary
data dir under /var/tmp. Instructions per record = (Ir(N2) - Ir(N1)) / (N2 - N1): interpreter
start-up, imports, connecting, topic look-up and close cancel out. Ir is the total of the
callgrind output files' "summary:"/"totals:" lines (all threads of the client process: the
producer's linger thread and pyzmq's I/O thread are in it; the broker's processes are not).
Records that a client reads (poll(), consume_batch()) are produced by this script before the
client starts, outside valgrind. The callgrind files go to a temporary directory that is removed.

Prints a Markdown table to stdout (progress to stderr) and, for the produce() and poll() 100 B
runs, the top functions by self Ir per record (the difference of the two runs, function by
function, as `callgrind_annotate --inclusive=no` would list them). See bench/README.md, "Instructions per record (callgrind)".
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)   # `import shmlog` finds the package next to bench/ without PYTHONPATH

BATCH_CHUNK = 65536                 # records per produce_values() call
CLIENT_TIMEOUT_S = 1800             # one valgrind run may take this long before it is killed
TOP_FUNCTIONS = 8
PRODUCER_CONF = {"acks": 1, "linger.ms": 5, "batch.num.messages": 10000}   # as bench_core.py's per-record rows

# name, client kind, record bytes, how the parent preloads the topic (None: the client writes it)
WORKLOADS = [
    ("produce() 100 B", "produce", 100, None),
    # Under valgrind (~50x slower) linger.ms=5 closes a batch every ~100 records instead of at
    # batch.num.messages; with linger.ms=1000 batches close at 10,000 records, as they do natively.
    ("produce() 100 B, linger.ms=1000", "produce_linger1000", 100, None),
    # Idempotence (docs/exactly-once.md) forces acks=all: its cost, next to acks=all without it.
    ("produce() 100 B, linger.ms=1000, acks=all", "produce_acks_all", 100, None),
    ("produce() 100 B, linger.ms=1000, acks=all, enable.idempotence", "produce_idempotent", 100, None),
    ("poll() 100 B", "poll", 100, "produce"),
    ("produce() 2 KB", "produce", 2048, None),
    ("poll() 2 KB", "poll", 2048, "produce"),
    ("produce_values() 100 B", "produce_values", 100, None),
    ("consume_batch() + value_arrays() 100 B", "consume_batch", 100, "produce_values"),
    ("pyzmq PUSH/PULL ipc send()+recv() 100 B", "zmq", 100, None),
    ("pyzmq PUSH/PULL ipc send()+recv() 2 KB", "zmq", 2048, None),
]
# rows added up from the ones above: a record's whole trip, next to pyzmq's send()+recv() of one record
SUMS = [
    ("produce() + poll() 100 B", ("produce() 100 B", "poll() 100 B"), "pyzmq PUSH/PULL ipc send()+recv() 100 B"),
    ("produce() + poll() 2 KB", ("produce() 2 KB", "poll() 2 KB"), "pyzmq PUSH/PULL ipc send()+recv() 2 KB"),
    ("produce_values() + consume_batch() 100 B", ("produce_values() 100 B", "consume_batch() + value_arrays() 100 B"),
     "pyzmq PUSH/PULL ipc send()+recv() 100 B"),
]
ANNOTATE = ("produce() 100 B", "poll() 100 B", "produce() 2 KB", "poll() 2 KB")
# the C functions behind the Python calls (csrc/fast/producer_core.c, consumer_core.c): their inclusive Ir is the call's C work
ENTRY_FUNCTIONS = ("producer_produce", "consumer_poll")


# ---------------------------------------------------------------------------- the clients (under valgrind)

def client_produce(a, linger_ms=PRODUCER_CONF["linger.ms"], **conf):
    import shmlog
    p = shmlog.Producer(dict(PRODUCER_CONF, **{"bootstrap.servers": a.bootstrap, "linger.ms": linger_ms}, **conf))
    produce, poll = p.produce, p.poll
    topic, value = a.topic, b"x" * a.record_bytes     # one value object: the count is produce()'s, not bytes()'s
    for _ in range(a.n):
        try:
            produce(topic, value)
        except BufferError:        # local queue full: serve reports and retry (does not happen at these sizes)
            poll(0.05)
            produce(topic, value)
    left = p.flush(60)
    p.close()
    return {"records": a.n, "left_after_flush": left}


def _consumer(a):
    import shmlog
    c = shmlog.Consumer({"bootstrap.servers": a.bootstrap})
    c.assign([shmlog.TopicPartition(a.topic, 0, shmlog.OFFSET_BEGINNING)])
    return c


def client_poll(a):
    c = _consumer(a)
    poll = c.poll
    got = nbytes = bad = 0
    last = -1
    for _ in range(a.n):
        m = poll(10.0)
        if m is None or m.error() is not None:
            bad += 1
            continue
        nbytes += len(m.value())
        got += 1
    if got:
        last = m.offset()
    c.close()
    return {"records": got, "bad": bad, "last_offset": last, "nbytes": nbytes}


def client_produce_values(a):
    import numpy as np

    import shmlog
    p = shmlog.Producer({"bootstrap.servers": a.bootstrap, "acks": 1})
    values = np.full((BATCH_CHUNK, a.record_bytes), ord("x"), np.uint8)
    for start in range(0, a.n, BATCH_CHUNK):
        p.produce_values(a.topic, values[:min(BATCH_CHUNK, a.n - start)])
    left = p.flush(60)
    p.close()
    return {"records": a.n, "left_after_flush": left}


def client_consume_batch(a):
    import numpy as np
    dtype = np.dtype((np.void, a.record_bytes))
    c = _consumer(a)
    got = views = runs = 0
    last = -1
    while got < a.n:
        view = c.consume_batch(65536, timeout=10.0)
        if view is None:
            break
        for r in view.value_arrays(dtype):     # zero-copy strided views into the ring
            got += len(r)
            runs += 1
        last = int(view.offsets[-1])
        views += 1
    c.close()
    return {"records": got, "views": views, "runs": runs, "last_offset": last}


def client_zmq(a):
    import zmq
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for s in (push, pull):
        s.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDHWM, a.n + 1000)    # send all N before the first recv: nothing may block
    pull.setsockopt(zmq.RCVHWM, a.n + 1000)
    pull.setsockopt(zmq.RCVTIMEO, 60000)
    push.bind(a.endpoint)
    pull.connect(a.endpoint)
    send, recv = push.send, pull.recv
    value = b"x" * a.record_bytes
    for _ in range(a.n):
        send(value)
    got = nbytes = 0
    for _ in range(a.n):
        nbytes += len(recv())
        got += 1
    push.close()
    pull.close()
    ctx.term()
    return {"records": got, "nbytes": nbytes}


CLIENTS = {"produce": client_produce, "produce_linger1000": lambda a: client_produce(a, 1000), "poll": client_poll, "produce_values": client_produce_values,
           "produce_acks_all": lambda a: client_produce(a, 1000, acks="all", **{"enable.idempotence": False}),
           "produce_idempotent": lambda a: client_produce(a, 1000, acks="all", **{"enable.idempotence": True}),
           "consume_batch": client_consume_batch, "zmq": client_zmq}


def client_main(a):
    out = CLIENTS[a.client](a)
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------- callgrind files

def callgrind_total(paths):
    """Sum of the Ir totals of callgrind output files (one per thread with --separate-threads=yes)."""
    total = 0
    for path in paths:
        summary = totals = None
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    summary = int(line.split()[1])
                elif line.startswith("totals:"):
                    totals = int(line.split()[1])
        value = summary if summary is not None else totals
        if value is None:
            raise RuntimeError(f"no summary:/totals: line in {path}")
        total += value
    return total


def callgrind_costs(paths):
    """Self Ir per (object, function), summed over the files (threads): what `callgrind_annotate
    --inclusive=no` lists, read straight from the files (names may be compressed as "(id) name").
    The cost line after a calls= line is the callee's inclusive cost: not self cost, but summed
    per callee name into `calls` (inclusive Ir of calls into that function, from any caller)."""
    costs, calls = {}, {}
    for path in paths:
        names = {"ob": {}, "fn": {}}
        ob = fn = cfn = None
        skip_next = False
        with open(path) as f:
            for line in f:
                c = line[:1]
                if c.isdigit() or c in "+-*":
                    parts = line.split()
                    if skip_next:
                        skip_next = False
                        if len(parts) > 1 and cfn is not None and cfn != fn:   # not a recursive call
                            calls[cfn] = calls.get(cfn, 0) + int(parts[1])
                        continue
                    if len(parts) > 1 and fn is not None:
                        key = (ob, fn)
                        costs[key] = costs.get(key, 0) + int(parts[1])
                    continue
                if "=" not in line:
                    continue
                tag, _, val = line.rstrip("\n").partition("=")
                if tag == "calls":
                    skip_next = True
                    continue
                kind = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn"}.get(tag)
                if kind is None:
                    continue
                m = re.match(r"\((\d+)\)(?: (.*))?$", val)
                if m:
                    if m.group(2) is not None:
                        names[kind][m.group(1)] = m.group(2)
                    name = names[kind].get(m.group(1), val)
                else:
                    name = val
                if tag == "ob":
                    ob = name
                elif tag == "fn":
                    fn = name
                elif tag == "cfn":
                    cfn = name
    return costs, calls


def short_object(ob):
    base = os.path.basename(ob or "???")
    return base.split(".cpython-")[0] + ".so" if ".cpython-" in base else base


def thread_files(prefix):
    d, base = os.path.split(prefix)
    threads = sorted(os.path.join(d, f) for f in os.listdir(d) if re.fullmatch(re.escape(base) + r"-\d+", f))
    if threads:     # with --separate-threads=yes callgrind also leaves an empty file without the suffix
        return threads
    return [prefix] if os.path.exists(prefix) else []


# ---------------------------------------------------------------------------- the parent

def _die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_client(kind, n, rb, cg_dir, tag, bootstrap="", topic="", endpoint=""):
    prefix = os.path.join(cg_dir, f"callgrind.{tag}")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}", "--separate-threads=yes",
           "--trace-children=no", sys.executable, os.path.abspath(__file__), "--client", kind,
           "--n", str(n), "--record-bytes", str(rb), "--bootstrap", bootstrap, "--topic", topic,
           "--endpoint", endpoint]
    # shmlog imports NumPy, whose OpenBLAS starts worker threads that spin-wait: under valgrind those
    # spins are counted, and how long they spin depends on time. One BLAS thread: no workers.
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        out, err = proc.communicate(timeout=CLIENT_TIMEOUT_S)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)       # our own child's session
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"client {kind} n={n} exited with {proc.returncode}:\n{err[-3000:]}")
    result = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    files = thread_files(prefix)
    if not files:
        raise RuntimeError(f"client {kind} n={n}: no callgrind output\n{err[-2000:]}")
    per_thread = [callgrind_total([f]) for f in files]
    return {"n": n, "ir": sum(per_thread), "ir_threads": per_thread, "seconds": round(time.monotonic() - t, 1),
            "result": result, "files": files}


def check_result(kind, n, res):
    r = res["result"] or {}
    if r.get("records") != n:
        return f"client saw {r.get('records')} of {n} records ({r})"
    if kind in ("poll", "consume_batch") and r.get("last_offset") != n - 1:
        return f"last offset {r.get('last_offset')}, expected {n - 1}"
    if kind.startswith("produce") and r.get("left_after_flush"):
        return f"{r['left_after_flush']} records left after flush()"
    return None


def ring_bytes_for(n, rb):
    """A power-of-two ring that holds all n records with room to spare (min. 64 MiB), so the
    readers read from shared memory, never from segment files, and no producer waits for space."""
    need = int(n * (rb + 64) * 1.3)
    size = 64 << 20
    while size < need:
        size <<= 1
    return size


class Bench:
    def __init__(self, broker, cg_dir):
        import shmlog
        self.shmlog = shmlog
        self.broker = broker
        self.cg_dir = cg_dir
        self.admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        self.seq = 0

    def new_topic(self, n, rb):
        self.seq += 1
        topic = f"instr-{self.seq}"
        nt = self.shmlog.NewTopic(topic, 1, config={"ring.bytes": str(ring_bytes_for(n, rb))})
        self.admin.create_topics([nt])[topic].result()
        return topic

    def preload(self, how, topic, n, rb):
        shmlog = self.shmlog
        bs = self.broker.bootstrap_servers
        if how == "produce":        # the same producer and config as the produce() client, outside valgrind
            p = shmlog.Producer(dict(PRODUCER_CONF, **{"bootstrap.servers": bs}))
            value = b"x" * rb
            for _ in range(n):
                try:
                    p.produce(topic, value)
                except BufferError:
                    p.poll(0.05)
                    p.produce(topic, value)
        else:
            import numpy as np
            p = shmlog.Producer({"bootstrap.servers": bs, "acks": 1})
            values = np.full((BATCH_CHUNK, rb), ord("x"), np.uint8)
            for start in range(0, n, BATCH_CHUNK):
                p.produce_values(topic, values[:min(BATCH_CHUNK, n - start)])
        if p.flush(60):
            raise RuntimeError("preload: records left after flush()")
        p.close()

    def drain_and_delete(self, topic):
        """Wait (acks=all marker) until the persister has the topic on disk, then delete it. The
        marker's producer is closed *before* the delete: closing a producer after a topic it wrote
        to was deleted segfaults in Producer.close() -> Ring.release_producer_slot (the ring is
        no longer mapped)."""
        try:
            drainer = self.shmlog.Producer({"bootstrap.servers": self.broker.bootstrap_servers,
                                            "acks": "all", "linger.ms": 0})
            drainer.produce(topic, b"")
            if drainer.flush(60):
                drainer.purge()
            drainer.close(1.0)
            self.admin.delete_topics([topic])[topic].result()
        except Exception as exc:
            print(f"  could not delete topic {topic}: {exc}", file=sys.stderr)

    def run(self, name, kind, rb, preload, n):
        tag = f"{self.seq + 1}-{kind}-{rb}-{n}"
        if kind == "zmq":
            endpoint = "ipc://" + os.path.join(self.cg_dir, f"zmq-{tag}.ipc")
            res = run_client(kind, n, rb, self.cg_dir, tag, endpoint=endpoint)
        else:
            topic = self.new_topic(n, rb)
            try:
                if preload:
                    self.preload(preload, topic, n, rb)
                res = run_client(kind, n, rb, self.cg_dir, tag, bootstrap=self.broker.bootstrap_servers,
                                 topic=topic)
            finally:
                self.drain_and_delete(topic)
        res["error"] = check_result(kind, n, res)
        return res

    def close(self):
        pass


def per_record(c1, c2, dn):
    """Self Ir per record of every (object, function): run N2 minus run N1, over N2 - N1."""
    return {key: (c2.get(key, 0) - c1.get(key, 0)) / dn for key in set(c1) | set(c2)}


def top_functions(diff, k=TOP_FUNCTIONS):
    return [(f"{fn} ({short_object(ob)})", v) for (ob, fn), v in sorted(diff.items(), key=lambda kv: -kv[1])[:k]]


def by_object(diff):
    out = {}
    for (ob, _), v in diff.items():
        out[short_object(ob)] = out.get(short_object(ob), 0) + v
    return sorted(((k, v) for k, v in out.items() if abs(v) >= 0.5), key=lambda kv: -kv[1])


def fmt(x, digits=0):
    if x is None:
        return "—"
    return "0" if abs(x) < 0.5 else f"{x:,.{digits}f}"


def markdown(rows):
    lines = ["| workload | instructions / record | of which in other threads | ratio to pyzmq (same size) |",
             "|---|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['workload']} | FAILED: {r['error']} | | |")
            continue
        other = r.get("other_threads_per_record")
        ratio = r.get("ratio_to_pyzmq")
        lines.append(f"| {r['workload']} | {fmt(r['ir_per_record'])} | {fmt(other)} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}'} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=0,
                    help="N2, records of the longer run (default 120000, --quick 30000); N1 = N2 / 6")
    ap.add_argument("--quick", action="store_true", help="N2 = 30000: a smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write every run's Ir and the top functions as JSON")
    ap.add_argument("--only", action="append", metavar="TEXT",
                    help="only workloads whose name contains TEXT (repeatable)")
    ap.add_argument("--data-dir", default="/var/tmp", metavar="DIR",
                    help="where the broker's temporary data dir and the callgrind temp dir go (default /var/tmp)")
    # client mode (what runs under valgrind)
    ap.add_argument("--client", choices=sorted(CLIENTS), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--record-bytes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    ap.add_argument("--topic", default="", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        return client_main(args)

    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    n2 = args.records or (30000 if args.quick else 120000)
    n1 = max(1, n2 // 6)
    if n2 <= n1:
        ap.error("--records must be at least 2")
    workloads = WORKLOADS
    if args.only:
        workloads = [w for w in WORKLOADS if any(s in w[0] for s in args.only)]
    skipped = {}
    try:
        import zmq  # noqa: F401
    except ImportError:
        skipped["pyzmq"] = "pyzmq is not installed (pip install pyzmq)"
        workloads = [w for w in workloads if w[1] != "zmq"]
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}", file=sys.stderr)
    if not workloads:
        print("no workload selected", file=sys.stderr)
        return 2

    import shmlog
    from shmlog._native import shm
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    vg = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    rows, annotations, interrupted, left = [], {}, False, []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shmlog-instr-", dir=args.data_dir) as data_dir, \
            tempfile.TemporaryDirectory(prefix="shmlog-callgrind-", dir=args.data_dir) as cg_dir:
        broker = shmlog.Broker(data_dir)
        bench = None
        try:
            broker.start()
            bench = Bench(broker, cg_dir)
            print(f"broker up at {broker.bootstrap_servers} (not under valgrind); N1 = {n1:,}, N2 = {n2:,}",
                  file=sys.stderr)
            for name, kind, rb, preload in workloads:
                runs = []
                for n in (n1, n2):
                    print(f"{name}, {n:,} records under callgrind...", end=" ", file=sys.stderr, flush=True)
                    try:
                        res = bench.run(name, kind, rb, preload, n)
                    except Exception as exc:    # that workload fails, the run goes on
                        res = {"n": n, "ir": 0, "ir_threads": [], "seconds": 0, "result": None, "files": [],
                               "error": f"{type(exc).__name__}: {exc}"}
                    print(f"{res['ir']:,} Ir in {res['seconds']} s{' FAILED: ' + res['error'] if res['error'] else ''}",
                          file=sys.stderr)
                    runs.append(res)
                    if res["error"]:
                        break
                row = {"workload": name, "record_bytes": rb, "n1": n1, "n2": n2,
                       "runs": [{k: v for k, v in r.items() if k != "files"} for r in runs]}
                err = next((r["error"] for r in runs if r["error"]), None)
                if err:
                    row["error"] = err
                else:
                    a, b = runs
                    dn = n2 - n1
                    row["ir_per_record"] = (b["ir"] - a["ir"]) / dn
                    row["main_thread_per_record"] = (b["ir_threads"][0] - a["ir_threads"][0]) / dn
                    row["other_threads_per_record"] = row["ir_per_record"] - row["main_thread_per_record"]
                    if name in ANNOTATE:
                        (c1, k1), (c2, k2) = callgrind_costs(a["files"]), callgrind_costs(b["files"])
                        diff = per_record(c1, c2, dn)
                        top, objs = top_functions(diff), by_object(diff)
                        entry = {f: (k2.get(f, 0) - k1.get(f, 0)) / dn for f in ENTRY_FUNCTIONS if f in k2}
                        annotations[name] = (top, objs, entry)
                        row["inclusive_entry_per_record"] = entry
                        row["top_functions"] = [{"function": f, "ir_per_record": v} for f, v in top]
                        row["by_object"] = [{"object": o, "ir_per_record": v} for o, v in objs]
                rows.append(row)
                for f in os.listdir(cg_dir):     # this workload's callgrind files are read: remove them
                    if f.startswith("callgrind."):
                        os.unlink(os.path.join(cg_dir, f))
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping the broker...", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if bench is not None:
                bench.close()
            broker.stop()
            left = shm.names_in_namespace(shm.namespace(data_dir))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    by_name = {r["workload"]: r for r in rows}
    for name, parts, peer in SUMS:
        if all(p in by_name and "ir_per_record" in by_name[p] for p in parts):
            rows.append({"workload": name, "sum_of": list(parts),
                         "ir_per_record": sum(by_name[p]["ir_per_record"] for p in parts),
                         "other_threads_per_record": sum(by_name[p]["other_threads_per_record"] for p in parts),
                         "peer": peer})
    by_name = {r["workload"]: r for r in rows}
    for r in rows:
        peer = by_name.get(r.get("peer"))
        if peer and "ir_per_record" in peer and "ir_per_record" in r and peer["ir_per_record"] > 0:
            r["ratio_to_pyzmq"] = r["ir_per_record"] / peer["ir_per_record"]

    import platform
    header = (f"shmlog bench_instructions — {time.strftime('%Y-%m-%d %H:%M %Z')} — {vg}, Python "
              f"{platform.python_version()}, {platform.machine()}; N1 = {n1:,}, N2 = {n2:,}; "
              f"{time.monotonic() - started:.0f} s{' (INTERRUPTED)' if interrupted else ''}")
    print(header + "\n")
    print(markdown(rows))
    for name, reason in skipped.items():
        print(f"\nSkipped {name}: {reason}.")
    for name, (top, objs, entry) in annotations.items():
        print(f"\n{name}: top {len(top)} functions by self Ir per record (run N2 minus run N1, all threads)\n")
        print("| function (object) | Ir / record |\n|---|---:|")
        for f, v in top:
            print(f"| `{f}` | {v:,.0f} |")
        print(f"\n{name}: self Ir per record by object: "
              + ", ".join(f"{o} {v:,.0f}" for o, v in objs)
              + "".join(f"; inclusive Ir per record of {f}() (the C function behind the call) {v:,.0f}"
                        for f, v in entry.items()))
    if left:
        print(f"\nWARNING: shared-memory objects left behind: {', '.join(left)}", file=sys.stderr)
    if args.json:
        doc = {"header": header, "valgrind": vg, "n1": n1, "n2": n2, "rows": rows, "skipped": skipped,
               "shm_left_behind": left, "interrupted": interrupted}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    if interrupted:
        return 130
    return 0 if rows and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
