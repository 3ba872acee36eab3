"""`shmlog bench`: produce, consume, end-to-end, latency and keyed-trade workloads against a
shmlog broker, measured and checked while they run (the click command is shmlog/cli/bench.py,
the user guide docs/cli.md#shmlog-bench).

One run: a fresh topic (on an embedded broker in a temporary data dir, or on the broker of
`--bootstrap`), producer and consumer *processes* (multiprocessing `spawn`) that connect,
map their partitions' rings and then start on a common signal, and a parent that shows
progress, tells the consumers where the log ends once the producers are done, and merges what
the children report into one `BenchResult`.

Every value starts with a 24-byte header, `HEADER` = (producer id, key index, sequence number,
send time in CLOCK_MONOTONIC ns). Consumers check while they read: offsets of each partition
dense from 0, each producer's sequence numbers per partition (per key, for `trades`) dense and
increasing, no record beyond the log end; the parent checks counts (sent == in the log ==
read). Latency is `receive time - send time` on the system-wide CLOCK_MONOTONIC, kept in
`LatencyHistogram`, an HDR-style log-linear histogram.
"""
import dataclasses
import json
import math
import os
import queue as queue_mod
import shutil
import signal
import struct
import tempfile
import threading
import time
import traceback

import numpy as np

WORKLOADS = ("produce", "consume", "e2e", "latency", "trades")
CONSUMING_WORKLOADS = ("consume", "e2e", "latency", "trades")
APIS = ("record", "batch")
WAITS = ("blocking", "busy")
ACKS = ("0", "1", "all")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
VALUE_FORMATS = ("struct", "json")

HEADER = struct.Struct("<iiqq")        # producer id, key index, sequence number, send time (monotonic ns)
TRADE = struct.Struct("<iiqqdic")      # HEADER + price, quantity, side
MIN_RECORD_BYTES = HEADER.size
MIN_TRADE_STRUCT_BYTES = TRADE.size
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AVGO", "JPM", "V", "XOM", "UNH", "MA",
           "JNJ", "PG", "HD", "COST", "ABBV", "MRK", "ADBE", "CRM", "PEP", "KO", "NFLX", "AMD", "INTC", "CSCO",
           "ORCL", "IBM", "QCOM", "TXN", "BA")

DEFAULT_RECORDS = {"produce": 1_000_000, "consume": 1_000_000, "e2e": 1_000_000, "latency": 50_000,
                   "trades": 500_000}
DEFAULT_PARTITIONS = {"trades": 8}
DEFAULT_PROCESSES = {"trades": 2}
DEFAULT_LATENCY_RATE_PER_S = 10_000
LATENCY_WARMUP_RECORDS = 200           # first records each latency consumer reads: not in the histogram
BATCH_RECORDS = 8192                   # records per produce_values() call (keyed trades: TRADE_BATCH_RECORDS)
TRADE_BATCH_RECORDS = 1024
CONSUME_BATCH_RECORDS = 65536
POLL_TIMEOUT_S = 0.1
PROGRESS_EVERY = 1024                  # records between updates of a child's progress counter (a power of two)
STAMP_EVERY = 256                      # unpaced producers refresh the send time in their values this often
CHECK_CHUNK = 4096                     # per-record consumers check offsets and sequences this many at a time
PROGRESS_INTERVAL_S = 0.1
STALL_S = 30.0                         # a consumer that gets nothing for this long gives up
SETUP_TIMEOUT_S = 60.0
SETUP_PER_CHILD_S = 5.0
FLUSH_TIMEOUT_S = 120.0
BUFFER_FULL_POLL_S = 1.0               # produce() raised BufferError: poll(1) (serve reports), then retry
RUN_TIMEOUT_S = 3600.0
DRAIN_TIMEOUT_S = 60.0               # after the run: how long to wait for the persister to catch up
EXTRA_RECORDS_WAIT_S = 0.05            # after the log end: how long a consumer looks for records that should not exist
MAX_RING_BYTES = 256 << 20
MIN_RING_BYTES = 1 << 20
RING_OVERHEAD_PER_RECORD_BYTES = 48    # generous framing per record when sizing a topic's rings
MAX_PROBLEMS = 5                       # examples of failed checks each child reports

now_ns = time.monotonic_ns


class BenchError(Exception):
    """A run that could not be carried out (no broker, a child that crashed, a timeout)."""


# ---------------------------------------------------------------------------- configuration

@dataclasses.dataclass
class BenchConfig:
    workload: str
    record_bytes: int = 100
    records: int = None                # total over all producers; None with duration_s
    duration_s: float = None
    partitions: int = None             # None: the workload's default
    producers: int = None
    consumers: int = None
    acks: str = "1"
    compression: str = "none"
    api: str = "record"
    wait: str = "blocking"
    spin_share: float = None           # blocking wait: the consumers' shmlog.wait.spin.share (None: default)
    rate_per_s: int = None             # total over all producers; None: as fast as possible
    value_format: str = "struct"       # trades only
    bootstrap: str = None              # None: an embedded broker in a temporary data dir
    pin: bool = None                   # one CPU per child; None: when the children fit the usable CPUs
    ring_bytes: int = None             # ring.bytes of the bench topic; None: ring_bytes_for()
    fanout: bool = False               # every consumer reads every partition (else each reads its share)

    def resolved(self):
        """A copy with the workload's defaults filled in (does not validate)."""
        c = dataclasses.replace(self)
        if c.partitions is None:
            c.partitions = DEFAULT_PARTITIONS.get(c.workload, 1)
        if c.producers is None:
            c.producers = DEFAULT_PROCESSES.get(c.workload, 1)
        if c.consumers is None:
            c.consumers = 0 if c.workload == "produce" else min(c.partitions, DEFAULT_PROCESSES.get(c.workload, 1))
        if c.rate_per_s is None and c.workload == "latency":
            c.rate_per_s = DEFAULT_LATENCY_RATE_PER_S
        if c.records is None and c.duration_s is None:
            c.records = DEFAULT_RECORDS[c.workload]
        if c.pin is None:
            c.pin = c.producers + c.consumers <= len(usable_cpus())
        return c


def validate(config):
    """Problems with a resolved config as [(option name, message)]; empty when it can run."""
    c = config
    bad = []
    if c.workload not in WORKLOADS:
        bad.append(("workload", f"unknown workload {c.workload!r}; choose from {', '.join(WORKLOADS)}"))
        return bad
    if c.records is not None and c.duration_s is not None:
        bad.append(("--records", "--records and --duration are mutually exclusive"))
    if c.workload == "consume" and c.duration_s is not None:
        bad.append(("--duration", "the consume workload reads a preloaded log of --records N records; "
                                  "--duration does not apply"))
    if c.workload == "consume" and c.rate_per_s is not None:
        bad.append(("--rate", "the consume workload reads a preloaded log as fast as it can; --rate does not apply"))
    if c.workload == "produce" and c.consumers:
        bad.append(("--consumers", "the produce workload has no consumers"))
    if c.workload in CONSUMING_WORKLOADS and c.consumers < 1:
        bad.append(("--consumers", f"the {c.workload} workload needs at least 1 consumer"))
    if c.bootstrap is not None and c.wait == "busy" and _on_kafka(c.bootstrap):
        bad.append(("--wait", "busy-polling is shmlog's shared-memory reader; a Kafka cluster is read through "
                              "confluent-kafka's fetches (use --wait blocking)"))
    if c.consumers > c.partitions and not c.fanout:
        bad.append(("--consumers", f"{c.consumers} consumers for {c.partitions} partitions: each consumer "
                                   f"reads whole partitions, so at most --partitions {c.partitions} (or --fanout: "
                                   f"each reads them all)"))
    minimum = min_record_bytes(c)
    if c.record_bytes < minimum:
        bad.append(("--record-bytes", f"{c.record_bytes} is too small: every record carries a "
                                      f"{minimum}-byte header here (at least {minimum})"))
    if c.ring_bytes is not None and (c.ring_bytes < 65536 or c.ring_bytes & (c.ring_bytes - 1)):
        bad.append(("--ring-bytes", f"{c.ring_bytes} is not a power of two of at least 65536"))
    if c.records is not None and c.records < c.producers:
        bad.append(("--records", f"{c.records} records for {c.producers} producers: at least one each"))
    return bad


def usable_cpus():
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def pin_child(config, slot):
    """Pin child `slot` to a CPU of its own (round robin when there are more children than CPUs)."""
    if config.pin and hasattr(os, "sched_setaffinity"):
        cpus = usable_cpus()
        os.sched_setaffinity(0, {cpus[slot % len(cpus)]})


def min_record_bytes(config):
    if config.workload == "trades" and config.value_format == "struct":
        return MIN_TRADE_STRUCT_BYTES
    return MIN_RECORD_BYTES


def split_records(total, parts):
    """`total` records over `parts` producers, as even as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def consumer_partitions(config, index):
    """Partitions consumer `index` reads: p with p % consumers == index (manual assignment);
    all of them with fanout."""
    if config.fanout:
        return list(range(config.partitions))
    return [p for p in range(config.partitions) if p % config.consumers == index]


def readers_per_record(config):
    """How many consumers read each record."""
    return config.consumers if config.fanout else 1


def ring_bytes_for(config):
    """ring.bytes of the bench topic: --ring-bytes, else the whole run in the ring when it fits
    256 MiB a partition."""
    if config.ring_bytes is not None:
        return config.ring_bytes
    if config.records is None:
        return 64 << 20
    per_partition = math.ceil(config.records / config.partitions)
    value_bytes = max(config.record_bytes, 140 if config.value_format == "json" else 0)
    need = int(per_partition * (value_bytes + RING_OVERHEAD_PER_RECORD_BYTES + 8) * 1.25)
    need = min(max(need, MIN_RING_BYTES), MAX_RING_BYTES)
    return 1 << (need - 1).bit_length()


# ---------------------------------------------------------------------------- HDR-style histogram

class LatencyHistogram:
    """HDR-style log-linear histogram of non-negative integer values (nanoseconds): exact below
    2048, then 1024 linear sub-buckets per power of two, so every value is recorded with a
    relative error below 1/1024 (three significant digits, as HdrHistogram's default)."""

    SUB_BUCKET_BITS = 10
    SUB_BUCKETS = 1 << SUB_BUCKET_BITS          # 1024 per power of two
    LINEAR_LIMIT = 2 * SUB_BUCKETS              # values below this have a bucket each
    MAX_SHIFT = 53                              # values up to 2**63

    def __init__(self):
        self.counts = np.zeros(self.LINEAR_LIMIT + self.MAX_SHIFT * self.SUB_BUCKETS, np.int64)
        self.max_value = 0
        self.min_value = None
        self.total = 0
        self.sum = 0

    @classmethod
    def bucket_index(cls, values):
        v = np.maximum(np.asarray(values, dtype=np.int64), 0)
        _, exponent = np.frexp(v.astype(np.float64))           # v < 2**exponent: exponent = bit length
        shift = np.maximum(exponent.astype(np.int64) - (cls.SUB_BUCKET_BITS + 1), 0)
        top = v >> shift                                       # in [1024, 2048) once shift > 0
        return np.where(shift == 0, v, cls.LINEAR_LIMIT + (shift - 1) * cls.SUB_BUCKETS + top - cls.SUB_BUCKETS)

    @classmethod
    def bucket_upper(cls, index):
        """The largest value that falls in bucket `index` (HdrHistogram's highest equivalent value)."""
        if index < cls.LINEAR_LIMIT:
            return int(index)
        shift = (index - cls.LINEAR_LIMIT) // cls.SUB_BUCKETS + 1
        top = (index - cls.LINEAR_LIMIT) % cls.SUB_BUCKETS + cls.SUB_BUCKETS
        return ((top + 1) << shift) - 1

    def record_values(self, values):
        v = np.asarray(values, dtype=np.int64)
        if not len(v):
            return
        v = np.maximum(v, 0)
        self.counts += np.bincount(self.bucket_index(v), minlength=len(self.counts))
        self.max_value = max(self.max_value, int(v.max()))
        low = int(v.min())
        self.min_value = low if self.min_value is None else min(self.min_value, low)
        self.total += len(v)
        self.sum += int(v.sum())

    def merge(self, other):
        self.counts += other.counts
        self.max_value = max(self.max_value, other.max_value)
        if other.min_value is not None:
            self.min_value = other.min_value if self.min_value is None else min(self.min_value, other.min_value)
        self.total += other.total
        self.sum += other.sum

    def value_at_percentile(self, percentile):
        """The value `percentile` % of the samples are at or below (bucket upper edge, at most max)."""
        if not self.total:
            return None
        rank = max(1, math.ceil(self.total * percentile / 100.0))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(self.bucket_upper(index), self.max_value)

    def to_wire(self):
        """A compact picklable form (non-zero buckets only) for a child's result."""
        nz = np.flatnonzero(self.counts)
        return {"index": nz.tolist(), "count": self.counts[nz].tolist(), "max": self.max_value,
                "min": self.min_value, "total": self.total, "sum": self.sum}

    @classmethod
    def from_wire(cls, wire):
        h = cls()
        h.counts[np.asarray(wire["index"], dtype=np.int64)] = wire["count"]
        h.max_value, h.min_value, h.total, h.sum = wire["max"], wire["min"], wire["total"], wire["sum"]
        return h

    def summary_us(self):
        """p50 / p99 / p99.9 / max / mean in microseconds, and the sample count."""
        if not self.total:
            return None
        us = lambda ns: round(ns / 1000.0, 1)   # noqa: E731
        return {"p50_us": us(self.value_at_percentile(50)), "p99_us": us(self.value_at_percentile(99)),
                "p99_9_us": us(self.value_at_percentile(99.9)), "max_us": us(self.max_value),
                "mean_us": us(self.sum / self.total), "min_us": us(self.min_value), "samples": self.total}


# ---------------------------------------------------------------------------- child processes

@dataclasses.dataclass
class Job:
    """What one child process does (pickled to it by `spawn`)."""
    role: str                          # "producer" or "consumer"
    index: int
    config: BenchConfig
    topic: str
    bootstrap: str
    records: int = None                # producer: how many (None: until the deadline)
    partitions: tuple = ()             # consumer: which


class Shared:
    """The parent's signals and counters, shared with every child."""

    def __init__(self, ctx, children, partitions):
        self.ready = ctx.Array("b", children, lock=False)
        self.progress = ctx.Array("q", children, lock=False)      # records sent / read so far, per child
        self.end_offsets = ctx.Array("q", [-1] * partitions, lock=False)
        self.go_produce = ctx.Event()
        self.go_consume = ctx.Event()
        self.stop = ctx.Event()
        self.results = ctx.Queue()


def child_main(job, slot, shared):
    """Entry point of every child: run the job, put its result (or its traceback) on the queue."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's business
    exit_with_parent()
    pin_child(job.config, slot)
    try:
        run = produce_records if job.role == "producer" else consume_records
        out = run(job, slot, shared)
    except BaseException as exc:
        out = {"error": error_line(exc)}
    out.update(role=job.role, index=job.index, slot=slot)
    shared.results.put(out)


def error_line(exc):
    """What a child reports of the exception that ended it: one line. The errors a run can
    meet (BenchError, KafkaException, BufferError, OSError) as their message; anything else
    also names its type and the line that raised it."""
    from shmlog.errors import KafkaException, reason_of
    text = " ".join(reason_of(exc).split())
    if isinstance(exc, BenchError):
        return text
    if isinstance(exc, (KafkaException, BufferError, OSError)):
        return f"{type(exc).__name__}: {text}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(exc).__name__}: {text}{where}"


def exit_with_parent():
    """A child process that outlives its parent exits (the parent was killed before cleaning up)."""
    parent = os.getppid()

    def watchdog():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watchdog, name="bench-watchdog", daemon=True).start()


def precise_timer():
    """1 us timer slack (default 50 us), so pacing sleeps wake close to their target."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)   # PR_SET_TIMERSLACK
    except Exception:
        pass


def _wait_go(shared, slot, event):
    shared.ready[slot] = 1
    while not event.wait(0.5):
        if shared.stop.is_set():
            raise BenchError("stopped before the start")
    return now_ns(), time.process_time()


def _map_rings(client, topic, partitions):
    """Map the partitions' rings into this process before the clock starts, as a running
    application has them: a fresh ring's first mapping faults in (and the kernel zeroes) every
    page of it (bench/README.md: 0.2 s for 256 MiB), once per ring. A Kafka client has no rings."""
    cluster = getattr(client, "_cluster", None)
    for p in partitions if cluster is not None else ():
        cluster.ring(topic, p)


def _pace(target_ns):
    rem = target_ns - now_ns()
    if rem > 0:
        time.sleep(rem / 1e9)


# ---------------------------------------------------------------------------- producers

def _on_kafka(bootstrap):
    """Whether bootstrap.servers names a Kafka cluster (run through confluent-kafka; shmlog.clients decides)."""
    from shmlog import clients
    return clients.is_kafka(bootstrap)


def producer_conf(job):
    c = job.config
    paced = c.rate_per_s is not None
    conf = {"bootstrap.servers": job.bootstrap, "acks": c.acks, "compression.type": c.compression,
            "linger.ms": 0 if paced else 5, "batch.num.messages": 10000}
    if not _on_kafka(job.bootstrap):
        conf["max.block.ms"] = int(FLUSH_TIMEOUT_S * 1000)   # shmlog's; librdkafka has no such key
    return conf


def produce_records(job, slot, shared):
    from shmlog import clients
    c = job.config
    if c.rate_per_s:
        precise_timer()
    producer = clients.Producer(producer_conf(job))
    source = TradeSource(job) if c.workload == "trades" else PlainSource(job)
    interval_ns = int(1e9 * c.producers / c.rate_per_s) if c.rate_per_s else 0
    _map_rings(producer, job.topic, range(c.partitions))
    t_start, cpu_start = _wait_go(shared, slot, shared.go_produce)
    deadline = t_start + int(c.duration_s * 1e9) if c.duration_s is not None else None
    send = _send_batches if c.api == "batch" else _send_records
    sent = send(producer, job, source, shared, slot, t_start, deadline, interval_ns)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    t_done = now_ns()
    cpu_s = time.process_time() - cpu_start
    shared.progress[slot] = sent
    producer.close()
    problems = [f"producer {job.index}: {remaining} records not delivered within {FLUSH_TIMEOUT_S:g} s"] \
        if remaining else []
    return {"sent": sent, "bytes": source.bytes, "t_start": t_start, "t_done": t_done, "cpu_s": cpu_s,
            "problems": problems}


def _send_records(producer, job, source, shared, slot, t_start, deadline, interval_ns):
    """The per-record API: one produce() per record, poll(0) now and then (as confluent-kafka)."""
    if isinstance(source, PlainSource):
        return _send_plain_records(producer, job, source, shared, slot, t_start, deadline, interval_ns)
    topic, limit, stop = job.topic, job.records, shared.stop
    produce, poll, make = producer.produce, producer.poll, source.record
    i = 0
    while True:
        if limit is not None:
            if i >= limit:
                break
        elif now_ns() >= deadline:
            break
        if interval_ns:
            _pace(t_start + i * interval_ns)
        partition, key, value = make(i)
        try:
            produce(topic, value, key, partition)
        except BufferError:
            _produce_when_room(producer, job, stop, topic, value, key, partition)
        i += 1
        if not i % PROGRESS_EVERY:
            poll(0)
            shared.progress[slot] = i
            if stop.is_set():
                break
    return i


def _send_plain_records(producer, job, source, shared, slot, t_start, deadline, interval_ns):
    """PlainSource's records, built with as little Python per record as a user's own loop
    (PlainSource.record's layout): unpaced, the send time in the values is refreshed every
    STAMP_EVERY records (at most that many records early, so latency errs high); paced, it
    is taken for each record."""
    topic, limit, stop = job.topic, job.records, shared.stop
    produce, poll = producer.produce, producer.poll
    partitions, seqs = source.partitions, source.seqs
    prefix = HEADER.pack(job.index, 0, 0, 0)[:8]
    tail = now_ns().to_bytes(8, "little") + source.pad
    i = 0
    while True:
        if limit is not None:
            if i >= limit:
                break
        elif now_ns() >= deadline:
            break
        if interval_ns:
            _pace(t_start + i * interval_ns)
            tail = now_ns().to_bytes(8, "little") + source.pad
        if partitions == 1:
            partition, seq = 0, i
        else:
            partition = (job.index + i) % partitions
            seq = seqs[partition]
            seqs[partition] = seq + 1
        value = prefix + seq.to_bytes(8, "little") + tail
        try:
            produce(topic, value, None, partition)
        except BufferError:
            _produce_when_room(producer, job, stop, topic, value, None, partition)
        i += 1
        if not i % STAMP_EVERY:
            tail = now_ns().to_bytes(8, "little") + source.pad
            if not i % PROGRESS_EVERY:
                poll(0)
                shared.progress[slot] = i
                if stop.is_set():
                    break
    if partitions == 1:
        seqs[0] = i
    source.bytes = i * source.record_bytes
    return i


def _produce_when_room(producer, job, stop, topic, value, key, partition):
    """produce() after a BufferError (the local queue is full: at acks=all the records wait
    for the persister's fsync): serve delivery reports with poll(1) and retry, as
    confluent-kafka's own examples do, until it fits; fail after FLUSH_TIMEOUT_S (the
    max.block.ms the bench gives its producers)."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    while True:
        producer.poll(BUFFER_FULL_POLL_S)
        try:
            producer.produce(topic, value, key, partition)
            return
        except BufferError as exc:
            if stop.is_set():
                raise BenchError("stopped while the local queue was full") from None
            if time.monotonic() >= deadline:
                raise BenchError(f"the local queue stayed full for {FLUSH_TIMEOUT_S:g} s "
                                 f"({len(producer):,} records awaiting delivery): {exc}") from None


def _send_batches(producer, job, source, shared, slot, t_start, deadline, interval_ns):
    """The batch API: produce_values() of up to BATCH_RECORDS records (1 when paced for latency)."""
    topic, limit, stop = job.topic, job.records, shared.stop
    chunk = 1 if interval_ns and job.config.workload == "latency" else source.batch_records
    i = 0
    while not stop.is_set():
        if limit is not None:
            k = min(chunk, limit - i)
            if k <= 0:
                break
        else:
            if now_ns() >= deadline:
                break
            k = chunk
        if interval_ns:
            _pace(t_start + i * interval_ns)
        partition, keys, values = source.batch(i, k)
        producer.produce_values(topic, values, keys=keys, partition=partition)
        i += k
        shared.progress[slot] = i
    return i


class PlainSource:
    """Unkeyed records of exactly record_bytes, round-robin over the partitions, each with HEADER."""

    batch_records = BATCH_RECORDS

    def __init__(self, job):
        c = job.config
        self.producer_id = job.index
        self.partitions = c.partitions
        self.record_bytes = c.record_bytes
        self.seqs = [0] * c.partitions          # next sequence number per partition
        self.pad = b"x" * (c.record_bytes - HEADER.size)
        self.rows = None
        self.bytes = 0

    def record(self, i):
        p = (self.producer_id + i) % self.partitions
        seq = self.seqs[p]
        self.seqs[p] = seq + 1
        self.bytes += self.record_bytes
        return p, None, HEADER.pack(self.producer_id, 0, seq, now_ns()) + self.pad

    def batch(self, i, k):
        """k records for one partition as a NumPy array of fixed-size rows."""
        if self.rows is None:
            self.rows = np.zeros(self.batch_records, header_dtype(self.record_bytes))
            self.rows["producer"] = self.producer_id
            self.rows.view(np.uint8).reshape(len(self.rows), -1)[:, HEADER.size:] = ord("x")
        p = (self.producer_id + i // self.batch_records) % self.partitions
        rows = self.rows[:k]
        rows["seq"] = np.arange(self.seqs[p], self.seqs[p] + k)
        rows["sent_ns"] = now_ns()
        self.seqs[p] += k
        self.bytes += k * self.record_bytes
        return p, None, rows.view(np.uint8).reshape(k, self.record_bytes)


def header_dtype(record_bytes):
    """HEADER as a NumPy structured dtype of record_bytes (the rest: padding)."""
    fields = [("producer", "<i4"), ("key", "<i4"), ("seq", "<i8"), ("sent_ns", "<i8")]
    if record_bytes > HEADER.size:
        fields.append(("pad", f"V{record_bytes - HEADER.size}"))
    return np.dtype(fields)


class TradeSource:
    """Keyed trades: key = a ticker symbol (the partitioner places it), value = a trade as a
    fixed struct (TRADE, padded to record_bytes) or as JSON, with a sequence number per symbol."""

    batch_records = TRADE_BATCH_RECORDS

    def __init__(self, job):
        c = job.config
        self.producer_id = job.index
        self.json = c.value_format == "json"
        self.keys = [s.encode() for s in SYMBOLS]
        self.seqs = [0] * len(SYMBOLS)
        self.pad = b"" if self.json else b"x" * (c.record_bytes - TRADE.size)
        self.bytes = 0

    def record(self, i):
        k = (i * 7 + self.producer_id) % len(SYMBOLS)   # 7: coprime with 32, so symbols interleave
        seq = self.seqs[k]
        self.seqs[k] = seq + 1
        price = 100.0 + (seq % 5000) * 0.01
        qty = 100 * (1 + seq % 10)
        side = b"B" if seq & 1 else b"S"
        if self.json:
            value = (b'{"producer":%d,"symbol":"%s","key":%d,"seq":%d,"sent_ns":%d,"price":%.2f,"qty":%d,'
                     b'"side":"%s"}' % (self.producer_id, self.keys[k], k, seq, now_ns(), price, qty, side))
        else:
            value = TRADE.pack(self.producer_id, k, seq, now_ns(), price, qty, side) + self.pad
        self.bytes += len(value)
        return -1, self.keys[k], value

    def batch(self, i, k):
        keys, values = [], []
        for j in range(i, i + k):
            _, key, value = self.record(j)
            keys.append(key)
            values.append(value)
        return -1, keys, values


# ---------------------------------------------------------------------------- consumers

def consumer_conf(job):
    if _on_kafka(job.bootstrap):
        return {"bootstrap.servers": job.bootstrap, "group.id": "shmlog-bench", "enable.auto.commit": False}
    conf = {"bootstrap.servers": job.bootstrap, "shmlog.busy.poll": job.config.wait == "busy"}
    if job.config.spin_share is not None:
        conf["shmlog.wait.spin.share"] = job.config.spin_share
    return conf


def consume_records(job, slot, shared):
    from shmlog import clients
    lib = clients.library(job.bootstrap)
    c = job.config
    consumer = clients.Consumer(consumer_conf(job))
    consumer.assign([lib.TopicPartition(job.topic, p, lib.OFFSET_BEGINNING) for p in job.partitions])
    check = (TradeCheck if c.workload == "trades" else SequenceCheck)(job)
    read = _read_batches if c.api == "batch" else _read_records
    _map_rings(consumer, job.topic, job.partitions)
    t_start, cpu_start = _wait_go(shared, slot, shared.go_consume)
    t_last = read(consumer, check, shared, slot)
    cpu_s = time.process_time() - cpu_start
    shared.progress[slot] = check.count
    check.extra = _count_extra(consumer, c.api)
    consumer.close()
    return {"count": check.count, "bytes": check.bytes, "t_start": t_start, "t_last": t_last, "cpu_s": cpu_s,
            "problems": check.report(), "histogram": check.histogram().to_wire()}


class _EndWatch:
    """When a consumer is done: every partition of it read up to the end offset the parent set."""

    def __init__(self, job, shared):
        self.partitions = job.partitions
        self.shared = shared
        self.ends = {p: -1 for p in job.partitions}

    def refresh(self):
        if min(self.ends.values()) < 0:
            self.ends = {p: self.shared.end_offsets[p] for p in self.partitions}

    def done(self, next_offsets):
        self.refresh()
        return all(e >= 0 and next_offsets[p] >= e for p, e in self.ends.items())


def _read_records(consumer, check, shared, slot):
    """The per-record API: poll() one record at a time. Returns the time the last one arrived."""
    if type(check) is SequenceCheck:
        return _read_plain_records(consumer, check, shared, slot)
    poll, record = consumer.poll, check.record
    watch = _EndWatch(check.job, shared)
    next_offsets = check.next_offsets
    t_last = last_seen = now_ns()
    n = 0
    while True:
        msg = poll(POLL_TIMEOUT_S)
        if msg is None:
            if watch.done(next_offsets) or _given_up(shared, last_seen):
                return t_last
            continue
        t_last = now_ns()
        if msg.error() is not None:
            check.problem(f"partition {msg.partition()}: {msg.error().str()}")
            continue
        record(msg.partition(), msg.offset(), msg.key(), msg.value(), t_last)
        n += 1
        if not n % PROGRESS_EVERY:
            shared.progress[slot] = n
            last_seen = t_last
        if next_offsets[msg.partition()] == watch.ends[msg.partition()] and watch.done(next_offsets):
            return t_last


def _read_plain_records(consumer, check, shared, slot):
    """poll() one record at a time, checking its offset and keeping its value: the values'
    checks run on CHECK_CHUNK records at a time with NumPy (SequenceCheck.chunk), so the
    consumer's rate is poll()'s, not the checks'. Every STAMP_EVERY-th record read (every
    record in the latency workload) gets its receive time: a latency sample, and the time of
    the last record within STAMP_EVERY records when the end was not known yet."""
    poll = consumer.poll
    watch = _EndWatch(check.job, shared)
    next_offsets = check.next_offsets
    parts = {p: ([], []) for p in check.job.partitions}     # values, (index, receive time)
    sample = 0 if check.job.config.workload == "latency" else STAMP_EVERY - 1

    def check_all():
        if current is not None:
            next_offsets[current] = expected
        for p, (values, received) in parts.items():
            if values:
                check.chunk(p, values, received)
                parts[p] = ([], [])

    current = end = expected = None
    t_last = last_seen = now_ns()
    n = 0
    while True:
        msg = poll(POLL_TIMEOUT_S)
        if msg is None:
            check_all()
            current = None
            if watch.done(next_offsets) or _given_up(shared, last_seen):
                return t_last
            continue
        if msg.error() is not None:
            check_all()
            current = None
            check.problem(f"partition {msg.partition()}: {msg.error().str()}")
            continue
        p = msg.partition()
        if p != current:
            if p not in parts:
                check.problem(f"got partition {p}, which it was not assigned")
                continue
            if current is not None:
                next_offsets[current] = expected
            current, end, expected = p, watch.ends[p], next_offsets[p]
            values, received = parts[p]
        offset = msg.offset()
        if offset != expected:
            check.problem(f"partition {p}: offset {offset} where {expected} was next")
        expected = offset + 1
        values.append(msg.value())
        n += 1
        if not n & sample:
            t_last = now_ns()
            received.append((len(values) - 1, t_last))
        if not n & (CHECK_CHUNK - 1):
            last_seen = t_last
            check_all()
            current = None
            shared.progress[slot] = n
            watch.refresh()
        elif expected == end:
            t_last = now_ns()
            check_all()
            current = None
            if watch.done(next_offsets):
                return t_last


def _read_batches(consumer, check, shared, slot):
    """The batch API: consume_batch() views of up to CONSUME_BATCH_RECORDS records."""
    watch = _EndWatch(check.job, shared)
    next_offsets = check.next_offsets
    t_last = last_seen = now_ns()
    while True:
        view = consumer.consume_batch(CONSUME_BATCH_RECORDS, timeout=POLL_TIMEOUT_S)
        if view is None or not len(view):
            if watch.done(next_offsets) or _given_up(shared, last_seen):
                return t_last
            continue
        t_last = last_seen = now_ns()
        check.view(view, t_last)
        shared.progress[slot] = check.count
        if watch.done(next_offsets):
            return t_last


def _given_up(shared, last_seen_ns):
    return shared.stop.is_set() or now_ns() - last_seen_ns > STALL_S * 1e9


def _count_extra(consumer, api):
    """Records beyond the log end the parent announced: there must be none."""
    extra = 0
    while True:
        if api == "batch":
            view = consumer.consume_batch(CONSUME_BATCH_RECORDS, timeout=EXTRA_RECORDS_WAIT_S)
            if view is None or not len(view):
                return extra
            extra += len(view)
        else:
            msg = consumer.poll(EXTRA_RECORDS_WAIT_S)
            if msg is None:
                return extra
            extra += msg.error() is None


class SequenceCheck:
    """Offsets of each partition dense from 0; each producer's sequence numbers per partition
    dense and increasing (so: no loss, no duplicate, no reordering); latency samples."""

    def __init__(self, job):
        self.job = job
        self.next_offsets = {p: 0 for p in job.partitions}
        self.next_seq = {}                    # (partition, producer, key) -> next sequence number
        self.count = self.bytes = self.extra = 0
        self.problems = []
        self.failures = 0
        self.latency = job.config.workload != "consume"     # a preloaded log has no meaningful latency
        self.warmup = LATENCY_WARMUP_RECORDS if job.config.workload == "latency" else 0
        self.latencies = []
        self.dtype = header_dtype(job.config.record_bytes)

    def problem(self, text):
        self.failures += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"consumer {self.job.index}: {text}")

    def offset(self, partition, offset):
        expected = self.next_offsets.get(partition)
        if expected is None:
            self.problem(f"got partition {partition}, which it was not assigned")
            return
        if offset != expected:
            self.problem(f"partition {partition}: offset {offset} where {expected} was next")
        self.next_offsets[partition] = offset + 1

    def sequence(self, partition, producer, key, seq):
        slot = (partition, producer, key)
        expected = self.next_seq.get(slot, 0)
        if seq != expected:
            self.problem(f"partition {partition}: producer {producer}{self._key_text(key)} sequence number "
                         f"{seq} where {expected} was next")
        self.next_seq[slot] = seq + 1

    def _key_text(self, key):
        return ""

    def record(self, partition, offset, key, value, now):
        self.offset(partition, offset)
        producer, k, seq, sent = HEADER.unpack_from(value)
        self.sequence(partition, producer, k, seq)
        self.count += 1
        self.bytes += len(value)
        if self.latency:
            self.latencies.append(now - sent)

    def chunk(self, partition, values, received):
        """Check the values of records read one at a time (their offsets were checked as
        they came), in bulk; received: [(index into values, receive time)], latency samples."""
        k = len(values)
        size = self.dtype.itemsize
        data = b"".join(values)
        self.count += k
        self.bytes += len(data)
        rows = np.frombuffer(data, self.dtype) if len(data) == k * size else None
        if rows is None or not self._sequences_ok(partition, rows):
            self._sequences_one_by_one(partition, values)
            return
        if self.latency and received:
            at = np.asarray(received, dtype=np.int64)
            self.latencies.append(at[:, 1] - rows["sent_ns"][at[:, 0]])

    def _sequences_ok(self, partition, rows):
        """Each producer's sequence numbers in rows dense and following the last seen (then
        noted as seen); False, noting nothing, when not."""
        producers, seqs = rows["producer"], rows["seq"]
        ids = [int(producers[0])] if (producers == producers[0]).all() else np.unique(producers).tolist()
        nexts = {}
        for producer in ids:
            s = seqs if len(ids) == 1 else seqs[producers == producer]
            if int(s[0]) != self.next_seq.get((partition, producer, 0), 0) or \
                    (len(s) > 1 and not (np.diff(s) == 1).all()):
                return False
            nexts[(partition, producer, 0)] = int(s[-1]) + 1
        self.next_seq.update(nexts)
        return True

    def _sequences_one_by_one(self, partition, values):
        """The slow path that names what is wrong, as record() does."""
        for value in values:
            if len(value) != self.dtype.itemsize or len(value) < HEADER.size:
                self.problem(f"partition {partition}: a value of {len(value)} bytes, not {self.dtype.itemsize}")
                continue
            producer, key, seq, _ = HEADER.unpack_from(value)
            self.sequence(partition, producer, key, seq)

    def view(self, view, now):
        k = len(view)
        offsets = view.offsets
        first = int(offsets[0])
        self.offset(view.partition, first)
        if int(offsets[-1]) != first + k - 1 or (k > 2 and not (np.diff(offsets) == 1).all()):
            self.problem(f"partition {view.partition}: offsets {first}..{int(offsets[-1])} not dense in one view")
        self.next_offsets[view.partition] = int(offsets[-1]) + 1
        try:
            rows = view.values_as(self.dtype)
        except ValueError as exc:
            self.problem(f"partition {view.partition}: {exc}")
            self.count += k
            return
        producers = rows["producer"]
        seqs = rows["seq"]
        ids = [int(producers[0])] if (producers == producers[0]).all() else np.unique(producers).tolist()
        for producer in ids:
            s = seqs if len(ids) == 1 else seqs[producers == producer]
            self.sequence(view.partition, producer, 0, int(s[0]))
            if len(s) > 1 and not (np.diff(s) == 1).all():
                self.problem(f"partition {view.partition}: producer {producer} sequence numbers not dense "
                             f"in {int(s[0])}..{int(s[-1])}")
            self.next_seq[(view.partition, producer, 0)] = int(s[-1]) + 1
        self.count += k
        self.bytes += int(view.value_lengths.sum())
        if self.latency:
            self.latencies.append(now - rows["sent_ns"])

    def histogram(self):
        h = LatencyHistogram()
        if self.latencies:
            parts = [np.atleast_1d(np.asarray(x, dtype=np.int64)) for x in self.latencies] \
                if isinstance(self.latencies[0], np.ndarray) else [np.asarray(self.latencies, dtype=np.int64)]
            samples = np.concatenate(parts)
            h.record_values(samples[self.warmup:] if len(samples) > 10 * self.warmup else samples)
        return h

    def report(self):
        out = list(self.problems)
        if self.failures > len(self.problems):
            out.append(f"consumer {self.job.index}: and {self.failures - len(self.problems)} more failed checks")
        return out


class TradeCheck(SequenceCheck):
    """Trades: per-key order (each producer's sequence numbers per symbol dense and increasing),
    the key matching the symbol in the value, and each symbol in one partition only."""

    def __init__(self, job):
        super().__init__(job)
        import orjson
        self.loads = orjson.loads
        self.json = job.config.value_format == "json"
        self.symbols = [s.encode() for s in SYMBOLS]
        self.partition_of = {}

    def _key_text(self, key):
        return f" symbol {SYMBOLS[key]}" if 0 <= key < len(SYMBOLS) else f" symbol #{key}"

    def record(self, partition, offset, key, value, now):
        self.offset(partition, offset)
        if self.json:
            trade = self.loads(value)
            producer, k, seq, sent = trade["producer"], trade["key"], trade["seq"], trade["sent_ns"]
        else:
            producer, k, seq, sent = HEADER.unpack_from(value)
        if not 0 <= k < len(SYMBOLS) or bytes(key) != self.symbols[k]:
            self.problem(f"partition {partition} offset {offset}: key {bytes(key)!r} but trade of symbol #{k}")
        elif self.partition_of.setdefault(k, partition) != partition:
            self.problem(f"symbol {SYMBOLS[k]} in partitions {self.partition_of[k]} and {partition}")
        self.sequence(partition, producer, k, seq)
        self.count += 1
        self.bytes += len(value)
        self.latencies.append(now - sent)

    def view(self, view, now):
        offsets = view.offsets.tolist()
        for offset, key, value in zip(offsets, view.keys(), view.values()):
            self.record(view.partition, offset, key, bytes(value), now)


# ---------------------------------------------------------------------------- the parent

@dataclasses.dataclass
class BenchResult:
    config: BenchConfig
    topic: str
    records_sent: int = 0
    records_in_log: int = 0
    records_read: int = 0
    bytes_sent: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    producer_seconds: float = 0.0
    consumer_seconds: float = 0.0
    producer_cpu_pct: list = dataclasses.field(default_factory=list)
    consumer_cpu_pct: list = dataclasses.field(default_factory=list)
    broker_cpu_pct: float = None       # supervisor + persister over the timed phase
    persister_cpu_pct: float = None    # the persister alone, over the timed phase
    persister_s_per_gb: float = None   # the persister's CPU seconds (timed phase and drain) per GB of values
    ring_bytes: int = None
    latency: dict = None
    problems: list = dataclasses.field(default_factory=list)
    data_dir: str = None
    shm_left_behind: list = dataclasses.field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self):
        return not self.problems and not self.interrupted

    @property
    def records(self):
        """The records the throughput figure counts: read, or sent for produce-only."""
        return self.records_sent if self.config.workload == "produce" else self.records_read

    @property
    def bytes(self):
        return self.bytes_sent if self.config.workload == "produce" else self.bytes_read

    @property
    def records_per_s(self):
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self):
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def to_dict(self):
        c = self.config
        return {
            "workload": c.workload, "ok": self.ok, "interrupted": self.interrupted,
            "config": {"record_bytes": c.record_bytes, "records": c.records, "duration_s": c.duration_s,
                       "partitions": c.partitions, "producers": c.producers, "consumers": c.consumers,
                       "acks": c.acks, "compression": c.compression, "api": c.api, "wait": c.wait,
                       "spin_share": c.spin_share, "fanout": c.fanout,
                       "rate_per_s": c.rate_per_s,
                       "value_format": c.value_format if c.workload == "trades" else None,
                       "bootstrap": c.bootstrap},
            "topic": self.topic,
            "records_sent": self.records_sent, "records_in_log": self.records_in_log,
            "records_read": self.records_read, "bytes_sent": self.bytes_sent, "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 6), "producer_seconds": round(self.producer_seconds, 6),
            "consumer_seconds": round(self.consumer_seconds, 6),
            "records_per_s": round(self.records_per_s, 1), "mb_per_s": round(self.mb_per_s, 3),
            "cpu_pct": {"producers": self.producer_cpu_pct, "consumers": self.consumer_cpu_pct,
                        "broker": self.broker_cpu_pct, "persister": self.persister_cpu_pct},
            "persister_cpu_s_per_gb": self.persister_s_per_gb, "ring_bytes": self.ring_bytes,
            "pinned": c.pin,
            "latency_us": self.latency,
            "problems": self.problems,
            "data_dir": self.data_dir, "shm_left_behind": self.shm_left_behind,
        }


def run(config, on_progress=None):
    """Run one benchmark (a resolved, validated BenchConfig); returns a BenchResult.

    on_progress(phase, records_done, records_total, seconds_done, seconds_total) is called
    about every PROGRESS_INTERVAL_S; phase is "preload", "run" or "drain"."""
    from shmlog.broker import launcher as broker_mod
    config = config.resolved()
    data_dir = None
    broker = None
    if config.bootstrap is None:
        data_dir = tempfile.mkdtemp(prefix="shmlog-bench-")
        # A private, temporary broker: its INFO lines would only interleave with the progress output.
        broker = broker_mod.Broker(data_dir, shmlog_log_level="WARNING")
    result = BenchResult(config, topic=f"bench-{config.workload}-{os.getpid()}-{time.time_ns() % 10**9}",
                         data_dir=data_dir)
    try:
        if broker is not None:
            broker.start()
        bootstrap = config.bootstrap or broker.bootstrap_servers
        _with_topic(config, bootstrap, result, on_progress)
    finally:
        if broker is not None:
            broker.stop()
            result.shm_left_behind = _remove_leftovers(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)
    if result.shm_left_behind:
        result.problems.append(f"shared memory left behind: {', '.join(result.shm_left_behind)}")
    return result


def _remove_leftovers(data_dir):
    from shmlog._native import shm
    left = shm.names_in_namespace(shm.namespace(data_dir))
    for name in left:
        shm.unlink(name)
    return left


def _broker_cpu_s(bootstrap):
    """CPU seconds the broker's (supervisor, persister) used so far (None if unknown)."""
    try:
        import psutil

        from shmlog.broker import launcher as broker_mod
        from shmlog.control import SCHEME
        st = broker_mod.status(bootstrap[len(SCHEME):] if bootstrap.startswith(SCHEME) else bootstrap)
        out = []
        for pid in (st.get("pid"), st.get("persister_pid")):
            t = psutil.Process(pid).cpu_times() if pid is not None else None
            out.append(t.user + t.system if t is not None else 0.0)
        return tuple(out)
    except Exception:
        return None


def _with_topic(config, bootstrap, result, on_progress):
    from shmlog import clients
    lib = clients.library(bootstrap)
    kafka = _on_kafka(bootstrap)
    admin = lib.AdminClient({"bootstrap.servers": bootstrap})
    try:
        result.ring_bytes = ring_bytes_for(config)
        topic_config = {} if kafka else {"ring.bytes": str(result.ring_bytes)}
        admin.create_topics([lib.NewTopic(result.topic, config.partitions, config=topic_config)])[result.topic].result()
        run = Run(config, bootstrap, result, on_progress)
        try:
            run.execute()
        finally:
            if not result.interrupted and not kafka:
                _drain(bootstrap, result.topic, config.partitions)
                run.persister_cost()
            try:
                admin.delete_topics([result.topic])[result.topic].result()
            except Exception as exc:
                if not result.interrupted:   # after Ctrl-C the broker may be gone too (same process group)
                    result.problems.append(f"could not delete topic {result.topic}: {error_line(exc)}")
    finally:
        admin.close()


def _drain(bootstrap, topic, partitions):
    """Untimed, after the run: wait until the persister has the topic's records on disk (an
    acks=all marker per partition is delivered only after everything before it), so it is not
    writing when the topic is deleted or the broker stops."""
    import shmlog
    producer = None
    try:
        producer = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
        for p in range(partitions):
            producer.produce(topic, b"", partition=p)
        if producer.flush(DRAIN_TIMEOUT_S):
            producer.purge()
    except Exception:
        pass     # the run's result stands; deleting the topic reports what is wrong
    finally:
        if producer is not None:
            producer.close(1.0)


def _kafka_end_offsets(bootstrap, topic, partitions, timeout_s=FLUSH_TIMEOUT_S):
    """[(log start, high watermark)] of a Kafka topic as Fetch responses carry them: the
    watermarks every Kafka-protocol broker reports with its records (some, such as Tansu,
    answer ListOffsets "latest" with the last batch's base offset + 1 instead of the log end)."""
    from shmlog import clients
    lib = clients.library(bootstrap)
    consumer = clients.Consumer({"bootstrap.servers": bootstrap, "group.id": "shmlog-bench-end",
                                 "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    try:
        consumer.assign([lib.TopicPartition(topic, p, lib.OFFSET_END) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while True:
            marks = [consumer.get_watermark_offsets(lib.TopicPartition(topic, p), cached=True)
                     for p in range(partitions)]
            if all(high >= 0 for _, high in marks):
                return marks
            if time.monotonic() > deadline:
                raise BenchError(f"no Fetch response for every partition of {topic} within {timeout_s:g} s")
            consumer.consume(10_000, 0.05)
    finally:
        consumer.close()


class Run:
    """The parent's side of one run: start the children, signal, watch, collect, check."""

    def __init__(self, config, bootstrap, result, on_progress):
        self.config = c = config
        self.bootstrap = bootstrap
        self.result = result
        self.on_progress = on_progress or (lambda *a: None)
        import multiprocessing
        self.ctx = multiprocessing.get_context("spawn")
        self.jobs = self._jobs()
        self.shared = Shared(self.ctx, len(self.jobs), c.partitions)
        self.procs = []
        self.outputs = {}
        self.started_ns = None
        self.broker_cpu = None           # (CPU seconds, monotonic ns) of the broker when the timed phase starts

    def _jobs(self):
        c = self.config
        counts = split_records(c.records, c.producers) if c.records is not None else [None] * c.producers
        jobs = [Job("producer", i, c, self.result.topic, self.bootstrap, records=counts[i])
                for i in range(c.producers)]
        jobs += [Job("consumer", i, c, self.result.topic, self.bootstrap, partitions=tuple(consumer_partitions(c, i)))
                 for i in range(c.consumers)]
        return jobs

    def slots(self, role):
        return [s for s, j in enumerate(self.jobs) if j.role == role]

    def execute(self):
        try:
            self.procs = [self.ctx.Process(target=child_main, args=(job, slot, self.shared),
                                           name=f"shmlog-bench-{job.role}-{job.index}", daemon=True)
                          for slot, job in enumerate(self.jobs)]
            self._start_children()
            self._wait_ready()
            self._run_phases()
            self._summarize()
        except KeyboardInterrupt:
            self.result.interrupted = True
            self.result.problems.append("interrupted")
        finally:
            self.shared.stop.set()
            self._reap()

    def _start_children(self):
        """Start every child with SIGINT ignored from its first instruction on (an ignored signal
        stays ignored across exec), so a Ctrl-C while they import is the parent's alone."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in self.procs:
                proc.start()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _wait_ready(self):
        # Each spawned child imports shmlog and NumPy: on a loaded machine 32 of them take a while.
        timeout_s = SETUP_TIMEOUT_S + SETUP_PER_CHILD_S * len(self.jobs)
        deadline = time.monotonic() + timeout_s
        while not all(self.shared.ready):
            self._collect(0.05)
            if time.monotonic() > deadline:
                raise BenchError(f"children not ready within {timeout_s:g} s")

    def _run_phases(self):
        c = self.config
        producers, consumers = self.slots("producer"), self.slots("consumer")
        total = c.records
        self.started_ns = now_ns()
        if c.workload == "consume":
            self.shared.go_produce.set()
            self._watch("preload", producers, total, lambda: self._done(producers))
            self._set_end_offsets()
            self._timed_phase_starts()
            self.shared.go_consume.set()
            self._watch("run", consumers, total, lambda: self._done(consumers))
            self._timed_phase_ends()
            return
        self._timed_phase_starts()
        self.shared.go_consume.set()          # consumers first: they wait on an empty log
        self.shared.go_produce.set()
        watched = producers if c.workload == "produce" else consumers
        self._watch("run", watched, total, lambda: self._done(producers))
        if consumers:
            self._set_end_offsets()
            self._watch("drain", consumers, self._records_in_log() * readers_per_record(c),
                        lambda: self._done(consumers))
        else:
            self._set_end_offsets()
        self._timed_phase_ends()

    def _timed_phase_starts(self):
        self.started_ns = now_ns()
        self.broker_cpu = (_broker_cpu_s(self.bootstrap), now_ns())

    def _timed_phase_ends(self):
        """Broker CPU over the timed phase: 100 = one core busy throughout."""
        cpu0, t0 = self.broker_cpu
        cpu1, t1 = _broker_cpu_s(self.bootstrap), now_ns()
        if cpu0 is not None and cpu1 is not None and t1 > t0:
            seconds = (t1 - t0) / 1e9
            self.result.broker_cpu_pct = round(100 * (sum(cpu1) - sum(cpu0)) / seconds)
            self.result.persister_cpu_pct = round(100 * (cpu1[1] - cpu0[1]) / seconds)

    def persister_cost(self):
        """After the drain: the persister's CPU seconds since the timed phase began per GB of
        values sent (its work for this run, including what it wrote after the timed phase)."""
        cpu0 = self.broker_cpu[0] if self.broker_cpu else None
        cpu1 = _broker_cpu_s(self.bootstrap)
        if cpu0 is not None and cpu1 is not None and self.result.bytes_sent and self.config.workload != "consume":
            self.result.persister_s_per_gb = round((cpu1[1] - cpu0[1]) / (self.result.bytes_sent / 1e9), 2)

    def _done(self, slots):
        return all(s in self.outputs for s in slots)

    def _watch(self, phase, slots, records_total, finished):
        """Collect results until finished(), reporting progress; fail on a child's error or death."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        duration = self.config.duration_s
        next_report = 0.0
        while not finished():
            self._collect(0.02)
            now = time.monotonic()
            if now >= next_report:
                elapsed = (now_ns() - self.started_ns) / 1e9
                done = sum(self.shared.progress[s] for s in slots)
                self.on_progress(phase, done, records_total, elapsed, duration if phase == "run" else None)
                next_report = now + PROGRESS_INTERVAL_S
            if now > deadline:
                raise BenchError(f"{phase} did not finish within {RUN_TIMEOUT_S:g} s")
        elapsed = (now_ns() - self.started_ns) / 1e9
        done = sum(self.shared.progress[s] for s in slots)
        self.on_progress(phase, done, records_total if records_total is not None else done, elapsed,
                         duration if phase == "run" else None)

    def _collect(self, timeout_s):
        try:
            out = self.shared.results.get(timeout=timeout_s)
        except queue_mod.Empty:
            for slot, proc in enumerate(self.procs):
                if slot not in self.outputs and not proc.is_alive():
                    try:
                        out = self.shared.results.get(timeout=1.0)   # it may have put its result just before exiting
                        break
                    except queue_mod.Empty:
                        raise BenchError(f"{self.jobs[slot].role} {self.jobs[slot].index} exited with code "
                                         f"{proc.exitcode} without a result") from None
            else:
                return
        if "error" in out:
            raise BenchError(f"{out['role']} {out['index']} failed: {out['error']}")
        self.outputs[out["slot"]] = out

    def _end_offsets(self):
        from shmlog import clients
        if _on_kafka(self.bootstrap):
            return _kafka_end_offsets(self.bootstrap, self.result.topic, self.config.partitions)
        consumer = clients.Consumer({"bootstrap.servers": self.bootstrap})
        lib = clients.library(self.bootstrap)
        try:
            return [consumer.get_watermark_offsets(lib.TopicPartition(self.result.topic, p))
                    for p in range(self.config.partitions)]
        finally:
            consumer.close()

    def _set_end_offsets(self):
        marks = self._end_offsets()
        self.watermarks = marks
        for p, (_, high) in enumerate(marks):
            self.shared.end_offsets[p] = high

    def _records_in_log(self):
        return sum(high - low for low, high in self.watermarks)

    def _reap(self):
        for proc in self.procs:
            if proc.pid is not None:
                proc.join(5)
        for proc in self.procs:
            if proc.pid is not None and proc.is_alive():
                proc.kill()
                proc.join(5)
        self.shared.results.close()
        self.shared.results.join_thread()

    def _summarize(self):
        r, c = self.result, self.config
        prods = [self.outputs[s] for s in self.slots("producer")]
        cons = [self.outputs[s] for s in self.slots("consumer")]
        r.records_sent = sum(o["sent"] for o in prods)
        r.bytes_sent = sum(o["bytes"] for o in prods)
        r.records_in_log = self._records_in_log()
        r.records_read = sum(o["count"] for o in cons)
        r.bytes_read = sum(o["bytes"] for o in cons)
        p_start, p_done = min(o["t_start"] for o in prods), max(o["t_done"] for o in prods)
        r.producer_seconds = (p_done - p_start) / 1e9
        r.producer_cpu_pct = [round(100 * o["cpu_s"] / max((o["t_done"] - o["t_start"]) / 1e9, 1e-9)) for o in prods]
        if cons:
            c_start, c_last = min(o["t_start"] for o in cons), max(o["t_last"] for o in cons)
            r.consumer_seconds = (c_last - c_start) / 1e9
            r.consumer_cpu_pct = [round(100 * o["cpu_s"] / max((o["t_last"] - o["t_start"]) / 1e9, 1e-9))
                                  for o in cons]
            hist = LatencyHistogram()
            for o in cons:
                hist.merge(LatencyHistogram.from_wire(o["histogram"]))
            r.latency = hist.summary_us()
        if c.workload == "produce":
            r.seconds = r.producer_seconds
        elif c.workload == "consume":
            r.seconds = r.consumer_seconds
        else:
            r.seconds = (max(o["t_last"] for o in cons) - p_start) / 1e9
        r.problems.extend(count_problems(r))
        for o in prods + cons:
            r.problems.extend(o["problems"])
        extra = sum(o.get("extra", 0) for o in cons)
        if extra:
            r.problems.append(f"{extra} records read beyond the log end")


def count_problems(result):
    """Counts that must agree: asked == sent == in the log (== read, when consumers read)."""
    c, r = result.config, result
    out = []
    if c.records is not None and r.records_sent != c.records:
        out.append(f"sent {r.records_sent:,} records of {c.records:,}")
    if r.records_in_log != r.records_sent:
        out.append(f"the log holds {r.records_in_log:,} records, the producers sent {r.records_sent:,}")
    readers = readers_per_record(c)
    if c.workload in CONSUMING_WORKLOADS and r.records_read != r.records_in_log * readers:
        out.append(f"read {r.records_read:,} records of the {r.records_in_log:,} in the log"
                   + (f" x {readers} consumers" if readers > 1 else ""))
    return out


# ---------------------------------------------------------------------------- output

def describe(config):
    """One line: what ran."""
    c = config
    amount = f"{c.records:,} records" if c.records is not None else f"{c.duration_s:g} s"
    size = f"{c.record_bytes} B" if not (c.workload == "trades" and c.value_format == "json") else "JSON"
    procs = f"{c.producers} producer{'s' if c.producers != 1 else ''}"
    if c.consumers:
        procs += f", {c.consumers} consumer{'s' if c.consumers != 1 else ''} ({c.wait} wait" \
                 + (", each reading every partition)" if c.fanout else ")")
    rate = f", paced at {c.rate_per_s:,}/s" if c.rate_per_s else ""
    rate += ", pinned" if c.pin else ""
    return (f"shmlog bench {c.workload}: {amount} of {size}, {c.partitions} partition{'s' if c.partitions != 1 else ''}, "
            f"{procs}, acks={c.acks}, compression={c.compression}, api={c.api}{rate}")


def _cpu_text(pcts):
    return " ".join(f"{p}" for p in pcts) if pcts else "-"


def format_table(result):
    """The human-readable result: throughput table, latency table, check line."""
    r, c = result, result.config
    lines = [describe(c), ""]
    rows = [("producers", r.records_sent, r.bytes_sent, r.producer_seconds, _cpu_text(r.producer_cpu_pct))]
    if c.consumers:
        rows.append(("consumers", r.records_read, r.bytes_read, r.consumer_seconds, _cpu_text(r.consumer_cpu_pct)))
    if c.workload not in ("produce", "consume"):
        rows.append(("end to end", r.records_read, r.bytes_read, r.seconds, "-"))
    if r.broker_cpu_pct is not None:
        rows.append(("broker", None, None, None, f"{r.broker_cpu_pct}"))
    if r.persister_cpu_pct is not None:
        rows.append(("persister", None, None, None, f"{r.persister_cpu_pct}"))
    head = ("", "records", "seconds", "records/s", "MB/s", "cpu %")
    body = []
    for name, n, nbytes, secs, cpu in rows:
        if n is None:
            body.append((name, "", "", "", "", cpu))
            continue
        body.append((name, f"{n:,}", f"{secs:.3f}", f"{n / secs:,.0f}" if secs > 0 else "-",
                     f"{nbytes / secs / 1e6:,.1f}" if secs > 0 else "-", cpu))
    lines.append(_columns(head, body))
    lines.append("")
    lines.extend(row_notes(r))
    if r.latency:
        lat = r.latency
        title = "one-way latency" if c.workload == "latency" else "produce->consume latency (incl. queueing)"
        lines.append("")
        lines.append(_columns(("latency (us)", "p50", "p99", "p99.9", "max", "mean", "samples"),
                              [(title, f"{lat['p50_us']:,.1f}", f"{lat['p99_us']:,.1f}", f"{lat['p99_9_us']:,.1f}",
                                f"{lat['max_us']:,.1f}", f"{lat['mean_us']:,.1f}", f"{lat['samples']:,}")]))
    lines.append("")
    lines.append(check_line(r))
    return "\n".join(lines)


def row_notes(result):
    """What each row of the table includes, in words."""
    r, c = result, result.config
    per_record = c.api == "record"
    notes = []
    if per_record and c.workload != "trades":
        send = ("produce() per record of a new value (a 24-byte header: producer, sequence number, send time "
                + ("taken per record" if c.rate_per_s else f"refreshed every {STAMP_EVERY} records") + "), "
                f"poll(0) every {PROGRESS_EVERY:,}")
        read = (f"poll() per record; its offset checked at once, sequence numbers every {CHECK_CHUNK:,} "
                "records in bulk")
    elif per_record:
        send = "produce() per keyed trade (built in Python)"
        read = "poll() per record; offsets, keys and per-key order checked per record"
    else:
        send = f"produce_values() of up to {BATCH_RECORDS:,} records (one NumPy array)"
        read = "consume_batch() views; offsets and sequence numbers checked per view"
    notes.append(f"producers   start signal -> last flush() returned: {send}")
    if c.consumers:
        notes.append(f"consumers   start signal -> last record read: {read}")
    if c.workload not in ("produce", "consume"):
        notes.append("end to end  first send -> last record read")
    if c.bootstrap is None or not _on_kafka(c.bootstrap):
        notes.append("rings       mapped by every producer and consumer before the start signal, as in a running "
                     "application (a fresh ring's first mapping has the kernel zero its pages, once per ring)")
    if r.ring_bytes and c.workload != "consume":
        per_partition = r.bytes_sent / max(c.partitions, 1)
        times = per_partition / r.ring_bytes
        if times > 1:
            notes.append(f"            persister on the path: {times:.1f}x the {_size_text(r.ring_bytes)} ring "
                         "per partition, so ring space comes back only as the persister writes it to disk")
        else:
            notes.append(f"            the run fits the {_size_text(r.ring_bytes)} ring: the persister writes "
                         "beside it, not on its path")
    cpus = len(usable_cpus())
    placed = f"pinned, one CPU each (of {cpus})" if c.pin else f"not pinned (the scheduler places them on {cpus} CPUs)"
    notes.append(f"cpu %       of one core, over each process's own timed span; producers and consumers {placed}; "
                 "the broker's processes are never pinned")
    if r.persister_s_per_gb is not None:
        notes.append(f"persister   {r.persister_s_per_gb:.2f} CPU seconds per GB of values (timed phase and "
                     "the drain after it)")
    return notes


def _size_text(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,} B"


def check_line(result):
    r, c = result, result.config
    if not r.ok:
        return "check: FAILED - " + "; ".join(p.splitlines()[0] for p in r.problems)
    what = [f"{r.records_sent:,} sent = {r.records_in_log:,} in the log"]
    if c.consumers:
        what[0] += f" = {r.records_read:,} read"
        what.append("offsets dense in every partition")
        what.append("per-key order kept" if c.workload == "trades" else "per-producer order kept")
    return "check: OK - " + ", ".join(what)


def _columns(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([fmt(head)] + [fmt(row) for row in rows])


def to_json(result):
    return json.dumps(result.to_dict(), indent=2)
