"""Core benchmark: one producer process -> one consumer process through shmlog, next to the
same workloads over multiprocessing.Queue and the peers in bench/peers/ (mp.Pipe, pyzmq ipc,
faster-fifo, Redis Streams, a plain C shared-memory ring). Prints a Markdown table (numbers,
not a test).

    PYTHONPATH=. python bench/bench_core.py [--records N] [--quick] [--repeat R] [--json PATH]
                                            [--only TEXT] [--profile] [--peers A,B,C] [--plot PNG]

Every row runs on a fresh single-partition topic (ring.bytes 256 MiB) of an embedded broker in
a temporary data dir, with the producer and the consumer in separate `spawn` processes pinned
to different cores. Throughput is measured end to end: from the producer's first call (after a
start signal both sides wait for) to the consumer receiving the last record, on the system-wide
CLOCK_MONOTONIC. The consumer checks it got exactly the expected records with dense offsets
(and that each record's payload carries its own sequence number); a row that does not is
reported as FAILED. See bench/README.md for what each row measures.
"""
import argparse
import datetime
import json
import os
import platform
import queue as queue_mod
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

# Runs as a plain script: make `import shmlog` find the package next to bench/ without PYTHONPATH.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # bench/, for the peers package

import multiprocessing  # noqa: E402

import shmlog  # noqa: E402

RING_BYTES = "268435456"           # 256 MiB, as a topic config string
RING_BUDGET = 0.85 * int(RING_BYTES)  # bytes one row may put into its ring (see ring_cap)
PER_RECORD_FRAMING = 24            # generous per-record bytes in a ring beyond the value
BATCH_CHUNK = 8192                 # records per produce_values call
LATENCY_INTERVAL_NS = 100_000      # 10k records/s
LATENCY_WARMUP = 200               # first records of a latency row not counted in percentiles
STALL_S = 20.0                     # a consumer that sees nothing for this long gives up
ROW_TIMEOUT_S = 180.0              # the parent gives up on a row after this long
SETUP_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 30.0             # the parent waits this long between rows for the persister

now_ns = time.clock_gettime_ns
MONO = time.CLOCK_MONOTONIC

# The helpers every child uses live in bench/peers/_common.py, so that the peer modules share them.
import peers  # noqa: E402
from peers._common import Checker  # noqa: E402,F401
from peers._common import child_setup as _child_setup  # noqa: E402
from peers._common import cpu_at_go as _cpu_at_go  # noqa: E402
from peers._common import latency_result as _latency_result
from peers._common import pace as _pace
from peers._common import precise_sleep as _precise_sleep
from peers._common import wait_go as _wait_go

# Peers known to --peers: bench/peers/__init__.py's list plus the ones added after it.
PEER_NAMES = peers.ALL + [m for m in ("iceoryx2_peer",) if m not in peers.ALL]
PEER_ALIASES = dict(peers.ALIASES, iceoryx2="iceoryx2_peer", iox2="iceoryx2_peer", iceoryx="iceoryx2_peer")

SHMLOG_KINDS = ("records", "batch", "latency", "fsync")
FSYNC_DIR = "/var/tmp"             # default --data-dir: the broker's segments go to a real disk
QUEUE_KINDS = ("queue_records", "queue_latency")


# ---------------------------------------------------------------------------- child helpers

def child_main(role, kind, params, cpu, ready, go, results, mpq):
    try:
        _child_setup(cpu)
        if kind.startswith("peer:"):          # "peer:<module>:<records|latency|batch>"
            _, mod, sub = kind.split(":")
            fn = getattr(peers.load(mod), ("produce_" if role == "producer" else "consume_") + sub)
        else:
            fn = {("producer", "records"): shm_produce_records, ("consumer", "records"): shm_consume_records,
                  ("producer", "batch"): shm_produce_values, ("consumer", "batch"): shm_consume_batch,
                  ("producer", "latency"): shm_produce_latency, ("consumer", "latency"): shm_consume_latency,
                  ("producer", "fsync"): shm_produce_fsync, ("consumer", "fsync"): shm_consume_records,
                  ("producer", "queue_records"): q_produce_records,
                  ("consumer", "queue_records"): q_consume_records,
                  ("producer", "queue_latency"): q_produce_latency,
                  ("consumer", "queue_latency"): q_consume_latency,
                  }[(role, kind)]
        if params.get("profile"):
            import cProfile
            import io
            import pstats
            prof = cProfile.Profile()
            out = prof.runcall(fn, params, ready, go, mpq)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
            out["profile"] = text.getvalue()
        else:
            out = fn(params, ready, go, mpq)
        out["cpu_s"] = time.process_time() - _cpu_at_go[0]
        out["role"] = role
        results.put(out)
    except BaseException:
        results.put({"role": role, "error": traceback.format_exc()})





# ---------------------------------------------------------------------------- shmlog: per-record API

def shm_produce_records(params, ready, go, _):
    n, rb, topic = params["n"], params["record_bytes"], params["topic"]
    p = shmlog.Producer({"bootstrap.servers": params["bootstrap"], "acks": 1, "linger.ms": 5,
                         "batch.num.messages": 10000})
    pad = b"x" * (rb - 8)
    produce, poll = p.produce, p.poll
    t0 = _wait_go(ready, go)
    for i in range(n):
        try:
            produce(topic, i.to_bytes(8, "little") + pad)
        except BufferError:          # local queue full: serve reports and retry, as with confluent-kafka
            poll(0.05)
            produce(topic, i.to_bytes(8, "little") + pad)
        if not i & 4095:
            poll(0)
    p.flush()
    t_done = now_ns(MONO)
    p.close()
    return {"t_start": t0, "t_done": t_done}


def shm_produce_fsync(params, ready, go, _):
    """acks=all: every delivery report fires only once the persister has the record in its
    segment file and fdatasync'ed. produce() is pipelined (it never waits for a report), so the
    persister groups many batches into one fdatasync; the row ends when flush() returns, i.e.
    when the last record is on disk (the parent takes the later of that and the consumer's
    last record)."""
    n, rb, topic = params["n"], params["record_bytes"], params["topic"]
    p = shmlog.Producer({"bootstrap.servers": params["bootstrap"], "acks": "all", "linger.ms": 5,
                         "batch.size": 1 << 20, "batch.num.messages": 10000,
                         "buffer.memory": 128 << 20})   # up to 128 MiB awaiting their fsync (default 32 MiB)
    pad = b"x" * (rb - 8)
    state = {"errors": 0, "acked": 0, "first_error": None}

    def on_delivery(err, msg):
        if err is not None:
            state["errors"] += 1
            if state["first_error"] is None:
                state["first_error"] = f"{err} (offset {msg.offset()})"
        else:
            state["acked"] += 1

    produce, poll = p.produce, p.poll
    t0 = _wait_go(ready, go)
    for i in range(n):
        value = i.to_bytes(8, "little") + pad
        while True:
            try:
                produce(topic, value, on_delivery=on_delivery)
                break
            except BufferError:      # records awaiting their fsync fill the local queue: serve reports
                poll(0.01)
        if not i & 1023:
            poll(0)
    left = p.flush(ROW_TIMEOUT_S)
    t_done = now_ns(MONO)
    p.close()
    if left or state["errors"] or state["acked"] != n:
        raise RuntimeError(f"acks=all: {state['acked']:,} of {n:,} acknowledged, {state['errors']} delivery "
                           f"errors (first: {state['first_error']}), {left} still queued after flush")
    return {"t_start": t0, "t_done": t_done, "acked": state["acked"]}


def _consumer(params, busy=False):
    c = shmlog.Consumer({"bootstrap.servers": params["bootstrap"], "shmlog.busy.poll": busy})
    c.assign([shmlog.TopicPartition(params["topic"], 0, shmlog.OFFSET_BEGINNING)])
    return c


def _extra_records(c):
    """Anything beyond the expected count is an error too: look briefly for more."""
    extra = 0
    while True:
        m = c.poll(0.05)
        if m is None:
            return extra
        extra += 1


def shm_consume_records(params, ready, go, _):
    n = params["n"]
    c = _consumer(params)
    ck = Checker()
    poll = c.poll
    t_last = None
    _wait_go(ready, go)
    last_seen = time.monotonic()
    while ck.expected < n:
        m = poll(1.0)
        if m is None:
            if time.monotonic() - last_seen > STALL_S:
                break
            continue
        if m.error() is not None:
            ck.gap(ck.expected)
            continue
        off = m.offset()
        if off != ck.expected:
            ck.gap(off)
        ck.nbytes += len(m.value())
        ck.expected += 1
        if not ck.expected & 1023:
            last_seen = time.monotonic()
    t_last = now_ns(MONO)
    extra = _extra_records(c)
    c.close()
    return ck.result(t_last, extra)


# ---------------------------------------------------------------------------- shmlog: batch API

def shm_produce_values(params, ready, go, _):
    n, rb, topic = params["n"], params["record_bytes"], params["topic"]
    p = shmlog.Producer({"bootstrap.servers": params["bootstrap"], "acks": 1})
    values = np.full((BATCH_CHUNK, rb), ord("x"), np.uint8)
    seq = np.arange(BATCH_CHUNK, dtype="<u8")
    produce_values = p.produce_values
    t0 = _wait_go(ready, go)
    for start in range(0, n, BATCH_CHUNK):
        k = min(BATCH_CHUNK, n - start)
        values[:k, :8] = (seq[:k] + start).view(np.uint8).reshape(k, 8)   # each record carries its offset
        produce_values(topic, values[:k])
    p.flush()
    t_done = now_ns(MONO)
    p.close()
    return {"t_start": t0, "t_done": t_done}


def shm_consume_batch(params, ready, go, _):
    n, rb = params["n"], params["record_bytes"]
    dtype = np.dtype((np.void, rb))
    c = _consumer(params)
    ck = Checker()
    views = copied = 0
    _wait_go(ready, go)
    last_seen = time.monotonic()
    while ck.expected < n:
        view = c.consume_batch(65536, timeout=1.0)
        if view is None:
            if time.monotonic() - last_seen > STALL_S:
                break
            continue
        last_seen = time.monotonic()
        k = len(view)
        offs = view.offsets
        first = int(offs[0])
        if first != ck.expected or int(offs[-1]) != first + k - 1 or (k > 2 and not (np.diff(offs) == 1).all()):
            ck.gap(first)
        runs = view.value_arrays(dtype)                # zero-copy strided views into the ring, one per batch
        if not view.zero_copy:
            copied += 1                                # read from segments or decompressed: copies
        # spot-check content: first and last record carry their own offset in their first 8 bytes
        if (int.from_bytes(runs[0][0].tobytes()[:8], "little") != first
                or int.from_bytes(runs[-1][-1].tobytes()[:8], "little") != first + k - 1):
            ck.gap(first)
        ck.nbytes += int(view.value_lengths.sum())
        ck.expected = first + k
        views += 1
    t_last = now_ns(MONO)
    extra = 0
    while True:
        v = c.consume_batch(65536, timeout=0.05)
        if v is None:
            break
        extra += len(v)
    c.close()
    out = ck.result(t_last, extra)
    out["views"] = views
    out["copied_views"] = copied
    return out


# ---------------------------------------------------------------------------- shmlog: one-way latency

def shm_produce_latency(params, ready, go, _):
    n, topic = params["n"], params["topic"]
    _precise_sleep()
    p = shmlog.Producer({"bootstrap.servers": params["bootstrap"], "acks": 1, "linger.ms": 0})
    pad = b"x" * (params["record_bytes"] - 16)
    pack, produce = struct.Struct("<qq").pack, p.produce
    t0 = _wait_go(ready, go)
    for i in range(n):
        _pace(t0 + i * LATENCY_INTERVAL_NS)
        produce(topic, pack(i, now_ns(MONO)) + pad)
        if not i & 1023:
            p.poll(0)
    p.flush()
    t_done = now_ns(MONO)
    p.close()
    return {"t_start": t0, "t_done": t_done}



def shm_consume_latency(params, ready, go, _):
    n = params["n"]
    c = _consumer(params, busy=params["busy"])
    ck = Checker()
    unpack = struct.Struct("<qq").unpack_from
    lat = []
    _wait_go(ready, go)
    last_seen = time.monotonic()
    while ck.expected < n:
        m = c.poll(1.0)
        if m is None:
            if time.monotonic() - last_seen > STALL_S:
                break
            continue
        t = now_ns(MONO)
        last_seen = time.monotonic()
        v = m.value()
        seq, sent = unpack(v)
        lat.append(t - sent)
        if m.offset() != ck.expected or seq != ck.expected:
            ck.gap(m.offset())
        ck.nbytes += len(v)
        ck.expected += 1
    t_last = now_ns(MONO)
    extra = _extra_records(c)
    c.close()
    return _latency_result(ck, lat, t_last, extra)


# ---------------------------------------------------------------------------- multiprocessing.Queue

def q_produce_records(params, ready, go, q):
    n, rb = params["n"], params["record_bytes"]
    pad = b"x" * (rb - 8)
    put = q.put
    t0 = _wait_go(ready, go)
    for i in range(n):
        put(i.to_bytes(8, "little") + pad)
    t_done = now_ns(MONO)   # put() only hands records to the feeder thread...
    q.close()
    q.join_thread()          # ...which is done when this returns (so its CPU time is counted)
    return {"t_start": t0, "t_done": t_done}


def q_consume_records(params, ready, go, q):
    n = params["n"]
    ck = Checker()
    get = q.get          # blocking get() without timeout: Queue's fastest path (the parent guards hangs)
    _wait_go(ready, go)
    while ck.expected < n:
        v = get()
        seq = int.from_bytes(v[:8], "little")
        if seq != ck.expected:
            ck.gap(seq)
        ck.nbytes += len(v)
        ck.expected += 1
    t_last = now_ns(MONO)
    extra = 0
    try:
        while True:
            q.get(timeout=0.05)
            extra += 1
    except queue_mod.Empty:
        pass
    return ck.result(t_last, extra)


def q_produce_latency(params, ready, go, q):
    n = params["n"]
    _precise_sleep()
    pad = b"x" * (params["record_bytes"] - 16)
    pack, put = struct.Struct("<qq").pack, q.put
    t0 = _wait_go(ready, go)
    for i in range(n):
        _pace(t0 + i * LATENCY_INTERVAL_NS)
        put(pack(i, now_ns(MONO)) + pad)
    t_done = now_ns(MONO)
    q.close()
    q.join_thread()
    return {"t_start": t0, "t_done": t_done}


def q_consume_latency(params, ready, go, q):
    n = params["n"]
    ck = Checker()
    lat = []
    _wait_go(ready, go)
    while ck.expected < n:
        v = q.get()
        t = now_ns(MONO)
        ck.timed(v, t, lat)
    t_last = now_ns(MONO)
    extra = 0
    try:
        while True:
            q.get(timeout=0.05)
            extra += 1
    except queue_mod.Empty:
        pass
    return _latency_result(ck, lat, t_last, extra)


# ---------------------------------------------------------------------------- parent side

_stop = threading.Event()


def _on_signal(signum, frame):
    """Ctrl-C / SIGTERM in the parent. The flag survives even if the KeyboardInterrupt is
    swallowed somewhere (a __del__, a callback), so the next check still stops the run."""
    _stop.set()
    raise KeyboardInterrupt


def _check_stop():
    if _stop.is_set():
        raise KeyboardInterrupt


def pick_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        return cpus[0], cpus[1]
    return None, None


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "cpu_model": model,
            "kernel": platform.release(), "python": platform.python_version(), "numpy": np.__version__,
            "shmlog": shmlog.__version__}


def ring_cap(record_bytes):
    """Most records of this size one row puts in its ring. The row's records all fit in the
    256 MiB ring, so the numbers are the shared-memory path, not persister back-pressure
    (and a broker without a running persister can still run every row)."""
    return int(RING_BUDGET // (record_bytes + PER_RECORD_FRAMING))


def plan(args):
    n = args.records if args.records else (50_000 if args.quick else 1_000_000)
    n_lat = args.latency_records if args.latency_records else (5_000 if args.quick else 20_000)
    n2k = max(1, min(n // 3, ring_cap(2048)))
    rows = []

    def row(workload, peer, kind, rb, count, **extra):
        rows.append({"workload": workload, "peer": peer, "kind": kind, "record_bytes": rb,
                     "records": count, **extra})

    def peer_rows(workload, sub, rb, count, **extra):
        for name in peer_mods:
            mod = peers.load(name)
            if sub in mod.WORKLOADS:
                for label, opts in peers.variants(mod):
                    if sub not in opts.get("only", mod.WORKLOADS):   # a variant may run only some rows
                        continue
                    row(workload, label, f"peer:{name}:{sub}", rb, count * getattr(mod, "RECORDS_FACTOR", 1),
                        peer_mod=name, opts=opts, **extra)

    use_queue = "queue" in args.peer_list
    peer_mods = [m for m in args.peer_list if m != "queue" and m not in args.skipped]
    row("per-record 100 B", "shmlog", "records", 100, min(n, ring_cap(100)))
    if use_queue:
        row("per-record 100 B", "mp.Queue", "queue_records", 100, n)
    peer_rows("per-record 100 B", "records", 100, n)
    row("per-record 2 KB", "shmlog", "records", 2048, n2k)
    if use_queue:
        row("per-record 2 KB", "mp.Queue", "queue_records", 2048, n2k)
    peer_rows("per-record 2 KB", "records", 2048, n2k)
    row("batch 100 B", "shmlog", "batch", 100, min(4 * n, ring_cap(100)))
    peer_rows("batch 100 B", "batch", 100, min(4 * n, ring_cap(100)))
    row("batch 2 KB", "shmlog", "batch", 2048, min(n, ring_cap(2048)))
    peer_rows("batch 2 KB", "batch", 2048, min(n, ring_cap(2048)))
    # acks=all next to Redis with an append-only file (fsync every second), same run, same records
    row("acks=all fsync 2 KB", "shmlog", "fsync", 2048, n2k, until_acked=True)
    peer_rows("acks=all fsync 2 KB", "fsync", 2048, n2k, until_acked=True)
    row("latency 100 B @10k/s", "shmlog", "latency", 100, n_lat, busy=False)
    row("latency 100 B @10k/s", "shmlog busy-poll", "latency", 100, n_lat, busy=True)
    if use_queue:
        row("latency 100 B @10k/s", "mp.Queue", "queue_latency", 100, n_lat)
    peer_rows("latency 100 B @10k/s", "latency", 100, n_lat)
    if args.only:
        rows = [r for r in rows if any(s in f"{r['workload']} {r['peer']}" for s in args.only)]
    return rows


class Runner:
    def __init__(self, ctx, broker, cpus, workdir, profile=False):
        self.ctx = ctx
        self.workdir = workdir           # temp dir for the peers' files (sockets, the C ring's .so)
        self.broker = broker
        self.cpus = cpus
        self.profile = profile
        self.procs = []
        self.admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        self.topic_seq = 0
        self.drainer = None

    def kill_children(self):
        started = [proc for proc in self.procs if proc.pid is not None]
        for proc in started:
            if proc.is_alive():
                proc.terminate()
        for proc in started:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self.procs = []

    def run(self, row):
        kind = row["kind"]
        uses_shm = kind in SHMLOG_KINDS
        params = {"n": row["records"], "record_bytes": row["record_bytes"], "busy": row.get("busy", False),
                  "bootstrap": self.broker.bootstrap_servers, "opts": row.get("opts") or {},
                  "profile": self.profile}
        topic = None
        if uses_shm:
            self.topic_seq += 1
            topic = params["topic"] = f"bench-{self.topic_seq}"
            self.admin.create_topics([shmlog.NewTopic(topic, 1, config={"ring.bytes": RING_BYTES})])[topic].result()
        ctx = self.ctx
        peer_close = None
        if kind.startswith("peer:"):    # the peer's channel (a pipe, a socket path, a ring, a redis-server)
            mpq, peer_close = peers.load(row["peer_mod"]).open_channel(ctx, row, self.workdir)
        else:
            mpq = ctx.Queue() if kind in QUEUE_KINDS else None
        results = ctx.Queue()
        go = ctx.Event()
        readies = {"producer": ctx.Event(), "consumer": ctx.Event()}
        cpu = {"producer": self.cpus[0], "consumer": self.cpus[1]}
        try:
            self.procs = [ctx.Process(target=child_main, name=f"bench-{role}",
                                      args=(role, row["kind"], params, cpu[role], readies[role], go, results, mpq))
                          for role in ("consumer", "producer")]
            for proc in self.procs:
                proc.start()
            out, error = {}, None
            deadline = time.monotonic() + SETUP_TIMEOUT_S
            while not all(e.is_set() for e in readies.values()) and error is None:
                error = self._check(results, out, deadline, "setup")
            if error is None:
                broker_cpu = self._broker_cpu()
                go.set()
                deadline = time.monotonic() + ROW_TIMEOUT_S
                while len(out) < 2 and error is None:
                    error = self._check(results, out, deadline, "run")
                out["broker_cpu_s"] = self._broker_cpu() - broker_cpu
            for proc in self.procs:
                proc.join(30)
        finally:
            self.kill_children()
            results.close()
            if peer_close is not None:
                try:
                    peer_close()
                except Exception as exc:
                    print(f"  could not close {row['peer']}: {exc}", file=sys.stderr)
            elif mpq is not None:
                mpq.close()
            if topic is not None:
                try:
                    self._drain(topic)
                    self.admin.delete_topics([topic])[topic].result()
                except Exception as exc:   # reported, the run goes on; the broker's exit unlinks it anyway
                    print(f"  could not delete topic {topic}: {exc}", file=sys.stderr)
        return self._summarize(row, out, error)

    def _broker_cpu(self):
        """CPU seconds used so far by the supervisor and its children (the persister)."""
        try:
            import psutil
            sup = psutil.Process(self.broker.process.pid)
            total = 0.0
            for proc in [sup] + sup.children(recursive=True):
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            return total
        except Exception:
            return float("nan")

    def _drain(self, topic):
        """Untimed, between rows: wait until the persister has this row's records on disk (an
        acks=all marker is delivered only after everything before it), so its backlog does not
        compete with the next row for the CPUs, and it is not writing when the topic goes."""
        if self.drainer is None:
            self.drainer = shmlog.Producer({"bootstrap.servers": self.broker.bootstrap_servers, "acks": "all",
                                            "linger.ms": 0})
        self.drainer.produce(topic, b"")
        if self.drainer.flush(DRAIN_TIMEOUT_S):
            self.drainer.purge()
            print(f"(persister still behind after {DRAIN_TIMEOUT_S:g} s)", end=" ", file=sys.stderr)

    def close(self):
        if self.drainer is not None:
            try:
                self.drainer.close(1.0)
            except Exception:
                pass
        try:
            self.admin.close()
        except Exception:
            pass

    def _check(self, results, out, deadline, phase):
        _check_stop()
        try:
            msg = results.get(timeout=0.2)
        except queue_mod.Empty:
            msg = None
        if msg is not None:
            if "error" in msg:
                return f"{msg['role']} failed:\n{msg['error']}"
            out[msg["role"]] = msg
            return None
        for proc in self.procs:
            if not proc.is_alive() and proc.name.split("-")[1] not in out:
                try:   # it may have put its result just before exiting
                    msg = results.get(timeout=1.0)
                    if "error" in msg:
                        return f"{msg['role']} failed:\n{msg['error']}"
                    out[msg["role"]] = msg
                    return None
                except queue_mod.Empty:
                    return f"{proc.name} exited with code {proc.exitcode} during {phase}"
        if time.monotonic() > deadline:
            return f"timed out during {phase} (got {sorted(out)})"
        return None

    def _summarize(self, row, out, error):
        res = dict(row)
        res.pop("kind")
        res.pop("peer_mod", None)
        res["ok"] = False
        prod, cons = out.get("producer"), out.get("consumer")
        if error is None and prod and cons:
            n = row["records"]
            problems = []
            if cons["count"] != n:
                problems.append(f"stopped at record {cons['count']:,} of {n:,}")
            if cons["gaps"]:
                problems.append(f"{cons['gaps']} offset gaps, first {cons['first_gap']}")
            if cons["extra"]:
                problems.append(f"{cons['extra']} records beyond the expected {n}")
            t_end = cons["t_last"]
            if row.get("until_acked"):   # acks=all rows: until the last record is also acknowledged
                t_end = max(t_end, prod["t_done"])
            elapsed = (t_end - prod["t_start"]) / 1e9
            res["seconds"] = round(elapsed, 4)
            res["records_per_s"] = round(cons["count"] / elapsed, 1) if elapsed > 0 else None
            res["mb_per_s"] = round(cons["nbytes"] / elapsed / 1e6, 2) if elapsed > 0 else None
            res["producer_seconds"] = round((prod["t_done"] - prod["t_start"]) / 1e9, 4)
            if elapsed > 0:   # CPU use over the row's wall time: 100 = one core busy throughout
                res["producer_cpu_pct"] = round(100 * prod["cpu_s"] / elapsed)
                res["consumer_cpu_pct"] = round(100 * cons["cpu_s"] / elapsed)
                if out.get("broker_cpu_s") == out.get("broker_cpu_s"):   # not NaN
                    res["broker_cpu_pct"] = round(100 * out["broker_cpu_s"] / elapsed)
            if "latency_ns" in cons and cons["latency_ns"]:
                res["_latency_us"] = np.asarray(cons["latency_ns"], dtype=np.float64) / 1e3
                res.update(latency_stats(res["_latency_us"]))
            if "views" in cons:
                res["views"] = cons["views"]
                res["copied_views"] = cons["copied_views"]
            for side in ("producer", "consumer"):
                if "profile" in out[side]:
                    res[side + "_profile"] = out[side]["profile"]
            res["ok"] = not problems
            if problems:
                res["error"] = "; ".join(problems)
        else:
            res["error"] = error or "missing results"
        return res


def latency_stats(lat_us):
    p50, p99, p999 = np.percentile(lat_us, [50, 99, 99.9])
    return {"p50_us": round(float(p50), 1), "p99_us": round(float(p99), 1), "p999_us": round(float(p999), 1),
            "max_us": round(float(lat_us.max()), 1), "mean_us": round(float(lat_us.mean()), 1),
            "latency_samples": len(lat_us)}


def aggregate(runs):
    """One row from its repeated runs: the run with the median records/s (throughput rows), or
    all runs' latency samples pooled (latency rows). Any failed run fails the row."""
    failed = [r for r in runs if not r["ok"]]
    if failed:
        res = dict(failed[0])
    else:
        ranked = sorted(runs, key=lambda r: r["records_per_s"])
        res = dict(ranked[len(ranked) // 2])
        rates = [r["records_per_s"] for r in runs]
        res["runs"] = len(runs)
        res["records_per_s_runs"] = rates
        res["spread_pct"] = round(100 * (max(rates) - min(rates)) / res["records_per_s"], 1)
        if "_latency_us" in res:
            res.update(latency_stats(np.concatenate([r["_latency_us"] for r in runs])))
            res["p50_us_runs"] = [r["p50_us"] for r in runs]
            res["p99_us_runs"] = [r["p99_us"] for r in runs]
    res.pop("_latency_us", None)
    return res


def add_ratios(rows):
    """On every peer row: shmlog's figure for the same workload divided by the peer's. Throughput:
    records/s, shmlog / peer (above 1: shmlog is faster). Latency: p50, shmlog (blocking wait) /
    peer (below 1: shmlog is faster)."""
    def find(workload, peer):
        return next((r for r in rows if r["workload"] == workload and r["peer"] == peer and r["ok"]), None)

    for r in rows:
        if r["peer"].startswith("shmlog") or not r["ok"]:
            continue
        base = find(r["workload"], "shmlog")
        if base is None:
            continue
        if r["workload"].startswith("latency"):
            if r.get("p50_us"):
                r["ratio"] = round(base["p50_us"] / r["p50_us"], 3)
                r["ratio_of"] = "p50 latency, shmlog / peer (below 1: shmlog is faster)"
        elif r.get("records_per_s"):
            r["ratio"] = round(base["records_per_s"] / r["records_per_s"], 3)
            r["ratio_of"] = "records/s, shmlog / peer (above 1: shmlog is faster)"


def fmt_num(x, digits=0):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def markdown(rows):
    head = ("| workload | peer | records | records/s | spread | MB/s | p50 / p99 µs | p99.9 / max µs | "
            "shmlog / peer | check |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lat = p9 = ratio = "-"
        if "p50_us" in r:
            lat = f"{r['p50_us']:,.1f} / {r['p99_us']:,.1f}"
            p9 = f"{r['p999_us']:,.1f} / {r['max_us']:,.1f}"
        if "ratio" in r:
            ratio = f"{r['ratio']:.3g}× " + ("(p50)" if r["workload"].startswith("latency") else "(rec/s)")
        check = "ok" if r["ok"] else "FAILED: " + r.get("error", "").splitlines()[0][:80]
        spread = f"±{r['spread_pct'] / 2:.0f}%" if r.get("runs", 1) > 1 else "-"
        lines.append(f"| {r['workload']} | {r['peer']} | {r['records']:,} | {fmt_num(r.get('records_per_s'))} | "
                     f"{spread} | {fmt_num(r.get('mb_per_s'), 1)} | {lat} | {p9} | {ratio} | {check} |")
    return "\n".join(lines)


def select_peers(ap, text):
    """--peers a,b,c -> (names to run, {name: why skipped}). 'queue' is multiprocessing.Queue."""
    names = ["queue"] + PEER_NAMES
    if text is None or text.strip().lower() == "all":
        chosen = names
    else:
        chosen = []
        for part in text.split(","):
            part = part.strip().lower()
            if not part or part in ("none", "shmlog"):
                continue
            part = {"mp.queue": "queue", "mp_queue": "queue", "q": "queue"}.get(part, PEER_ALIASES.get(part, part))
            if part not in names:
                ap.error(f"--peers: unknown peer {part!r}; choose from {', '.join(names)}")
            if part not in chosen:
                chosen.append(part)
    skipped = {}
    for name in chosen:
        if name == "queue":
            continue
        try:
            reason = peers.load(name).available()
        except Exception as exc:    # an import error in the peer module itself
            reason = f"{type(exc).__name__}: {exc}"
        if reason:
            skipped[name] = reason
    return chosen, skipped


def stop_peer_servers():
    """Helper servers a peer started (redis-server) and has not stopped yet: stop them."""
    if "peers.redis_streams" in sys.modules:
        sys.modules["peers.redis_streams"].stop_all()


def peer_leftovers():
    """The C ring's /dev/shm objects of this process still there (each row unlinks its own)."""
    left = []
    for mod in ("peers.c_ring", "peers.iceoryx2_peer"):
        if mod in sys.modules:
            left += sys.modules[mod].leftovers()
    return left


def plot(rows, path, header):
    """Horizontal bar chart, one panel per workload: records/s (throughput) or p50 µs (latency)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install matplotlib); no PNG written", file=sys.stderr)
        return False
    workloads = []
    for r in rows:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
    groups = [(w, [r for r in rows if r["workload"] == w and r["ok"]]) for w in workloads]
    groups = [(w, g) for w, g in groups if g]
    if not groups:
        print("--plot: no successful rows to plot", file=sys.stderr)
        return False
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 1.2 + sum(0.32 * len(g) + 0.6 for _, g in groups)),
                             gridspec_kw={"height_ratios": [len(g) + 1 for _, g in groups]}, squeeze=False)
    for ax, (w, g) in zip(axes[:, 0], groups):
        lat = w.startswith("latency")
        vals = [r["p50_us"] if lat else r["records_per_s"] for r in g]
        labels = [r["peer"] for r in g]
        colors = ["tab:blue" if r["peer"].startswith("shmlog") else "tab:gray" for r in g]
        y = range(len(g))
        ax.barh(y, vals, color=colors)
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(vals) * 1.25)     # linear from 0, so bar lengths compare honestly
        ax.set_title(f"{w}: " + ("p50 one-way latency, µs (lower is better); p99 in brackets" if lat
                                 else "records/s end to end (higher is better)"), fontsize=9, loc="left")
        for yi, v, r in zip(y, vals, g):
            ax.text(v, yi, f" {v:,.1f} ({r['p99_us']:,.0f})" if lat else f" {v:,.0f}", va="center", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(header.replace(" — ", "\n", 1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def fs_type(path):
    """File system type of the mount holding path (from /proc/mounts), e.g. 'ext4' or 'tmpfs'."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mnt = parts[1].replace("\\040", " ")
                    if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                        best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def shm_leftovers(data_dir):
    """This run's shared-memory objects still in /dev/shm (others' brokers are not our business)."""
    from shmlog._native import shm
    return shm.names_in_namespace(shm.namespace(data_dir))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=0,
                    help="records N of the per-record 100 B rows (default 1000000, --quick 50000); 2 KB rows "
                         "use N/3, batch 100 B 4N, batch 2 KB N; every shmlog row is capped to fit its 256 MiB ring")
    ap.add_argument("--latency-records", type=int, default=0, help="records per latency row (20000; --quick 5000)")
    ap.add_argument("--quick", action="store_true", help="small sizes, one round: the whole run in seconds")
    ap.add_argument("--repeat", type=int, default=0,
                    help="rounds over all rows (default 3, --quick 1); throughput rows report the median "
                         "run, latency rows pool all runs' samples")
    ap.add_argument("--json", metavar="PATH", help="also write the rows (and the machine) as JSON")
    ap.add_argument("--only", action="append", metavar="TEXT",
                    help="run only rows whose 'workload peer' contains TEXT (repeatable)")
    ap.add_argument("--profile", action="store_true",
                    help="run each producer and consumer under cProfile (slower!); stats go to stderr. "
                         "Combine with --only to pick rows")
    ap.add_argument("--peers", metavar="A,B,C",
                    help="peers to run next to shmlog (default: all): queue (multiprocessing.Queue), "
                         + ", ".join(PEER_NAMES) + " (or iceoryx2); 'none' for shmlog only")
    ap.add_argument("--data-dir", default=FSYNC_DIR, metavar="DIR",
                    help="where the embedded broker's temporary data dir (segment files) is created; "
                         "default /var/tmp, a real disk, so the acks=all row measures fdatasync (not tmpfs)")
    ap.add_argument("--plot", metavar="PATH",
                    help="write a PNG bar chart to PATH (needs matplotlib) and the Markdown table next to "
                         "it (PATH with .md), e.g. bench/results/bench_core.png")
    args = ap.parse_args(argv)

    args.repeat = args.repeat or (1 if args.quick else 3)
    args.peer_list, args.skipped = select_peers(ap, args.peers)
    for name, reason in args.skipped.items():
        print(f"skipping peer {name}: {reason}", file=sys.stderr)
    rows = plan(args)
    info = machine_info()
    info["data_dir_fs"] = fs_type(args.data_dir)
    if info["data_dir_fs"] in ("tmpfs", "ramfs"):
        print(f"warning: --data-dir {args.data_dir} is {info['data_dir_fs']}: the acks=all row's fdatasync "
              f"does not reach a disk", file=sys.stderr)
    cpus = pick_cpus()
    ctx = multiprocessing.get_context("spawn")
    load_before = os.getloadavg()
    left = []
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:   # left ignored when started with SIGINT ignored
        signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    results, runs = [], []
    started = time.monotonic()
    interrupted = False
    runner = None
    try:
        with tempfile.TemporaryDirectory(prefix="shmlog-bench-", dir=args.data_dir) as data_dir, \
                tempfile.TemporaryDirectory(prefix="shmlog-bench-peers-", dir=args.data_dir) as peer_dir:
            broker = shmlog.Broker(data_dir)
            try:
                broker.start()
                runner = Runner(ctx, broker, cpus, peer_dir, profile=args.profile)
                print(f"broker up at {broker.bootstrap_servers}; producer on cpu {cpus[0]}, consumer on cpu "
                      f"{cpus[1]}", file=sys.stderr)
                # Whole rounds, one after the other, so a burst of outside load hits one run of
                # each row rather than every run of one row.
                plan_runs = [(rnd, i, row) for rnd in range(args.repeat) for i, row in enumerate(rows)]
                runs[:] = [[] for _ in rows]
                for rnd, i, row in plan_runs:
                    _check_stop()
                    t = time.monotonic()
                    print(f"[{rnd + 1}/{args.repeat}] {row['workload']} / {row['peer']} ({row['records']:,} records)...",
                          end=" ", file=sys.stderr, flush=True)
                    try:
                        res = runner.run(row)
                    except Exception as exc:   # e.g. the broker went away: that row fails, the run goes on
                        res = dict(row, ok=False, error=f"{type(exc).__name__}: {exc}")
                        res.pop("kind")
                        res.pop("peer_mod", None)
                    runs[i].append(res)
                    print(f"{'ok' if res['ok'] else 'FAILED'} in {time.monotonic() - t:.1f}s", file=sys.stderr)
                    if not res["ok"]:
                        print(res.get("error", ""), file=sys.stderr)
                        _check_stop()   # a Ctrl-C to the whole process group also stops the broker
                        if broker.process is None or broker.process.poll() is not None:
                            print("the broker exited: stopping here", file=sys.stderr)
                            break
                    for side in ("producer", "consumer"):
                        if side + "_profile" in res:
                            print(f"cProfile of the {side} process (whole run incl. setup; waiting for the "
                                  f"start signal shows as lock acquire):\n" + res[side + "_profile"],
                                  file=sys.stderr)
                results = [aggregate(r) for r in runs if r]
            except KeyboardInterrupt:
                interrupted = True
                results = [aggregate(r) for r in runs if r]
                signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not cut the cleanup short
                print("\ninterrupted: stopping children and the broker...", file=sys.stderr)
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if runner is not None:
                    runner.kill_children()
                    runner.close()
                stop_peer_servers()
                broker.stop()
                left = shm_leftovers(data_dir) + peer_leftovers()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    total = time.monotonic() - started
    add_ratios(results)

    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    header = (f"shmlog bench_core — {stamp} — {info['nproc']} CPUs ({info['cpu_model']}), Linux {info['kernel']}, "
              f"Python {info['python']}, NumPy {info['numpy']}; producer cpu {cpus[0]}, consumer cpu {cpus[1]}; "
              f"broker data dir in {args.data_dir} ({info['data_dir_fs']}); "
              f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
              f"{total:.0f} s{' (INTERRUPTED)' if interrupted else ''}")
    table = markdown(results)
    notes = "".join(f"\n\nSkipped peer {name}: {reason}." for name, reason in args.skipped.items())
    print(header + "\n")
    print(table + notes)
    if args.plot:
        md_path = os.path.splitext(args.plot)[0] + ".md"
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        with open(md_path, "w") as f:
            f.write(f"{header}\n\n{table}{notes}\n")
        if plot(results, args.plot, header):
            print(f"wrote {args.plot} and {md_path}", file=sys.stderr)
        else:
            print(f"wrote {md_path}", file=sys.stderr)
    if left:
        print(f"\nWARNING: shared-memory objects left behind: {', '.join(left)}", file=sys.stderr)
    if args.json:
        doc = {"date": stamp, "machine": info, "args": vars(args), "seconds": round(total, 1),
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "shm_left_behind": left,
               "interrupted": interrupted, "rows": [{k: v for k, v in r.items() if not k.endswith("_profile")}
                                                    for r in results]}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    if interrupted:
        return 130
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
