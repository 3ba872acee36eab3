"""The README's first command: keyed trade events from several producer processes go through a
consumer group of worker processes (shmlog.pipeline), which check each trade and forward it
to an output topic; the demo then checks the output and reports.

    python -m shmlog.demo [--records N] [--producers P] [--workers W] [--partitions K]
                          [--value-bytes B] [--paced-records M] [--paced-rate R]

Two phases through the same pipeline:

- throughput: the producers send as fast as they can; printed: trades per second from the
  first send to the last record read from the output topic. Records queue behind the
  backlog this builds, so their latency here is mostly waiting time (printed too, in ms).
- latency at light load: one more producer process sends a few thousand trades at a modest
  rate (--paced-rate); printed: the one-way latency from produce() to the worker's function
  (in another process), and on to the reader of the output topic. The first records are
  left out as warm-up.

Checked over both phases: no loss (every trade of every producer reaches the output),
per-key order (the trades of each trade id arrive in the order they were produced) and that
the group committed every input offset. Exit status 1 when the check fails.
"""
import argparse
import math
import multiprocessing
import struct
import sys
import tempfile
import time

import shmlog
import shmlog.client.admin
from shmlog.errors import KafkaException, reason_of
from shmlog.pipeline import Pipeline

TOPIC = "trades"
CHECKED = "trades.checked"
GROUP = "trade-checkers"
HEADER = struct.Struct("<iqq")        # producer id, sequence number, produce time (monotonic ns)
STAMP = struct.Struct("<q")           # appended by the worker: when it handled the trade
WARMUP_RECORDS = 100                  # first paced records: not in the light-load latency
READ_TIMEOUT_S = 120.0


def produce(bootstrap, producer_id, records, value_bytes, ready, go, rate_per_s=None):
    """One producer process: `records` keyed trades, as fast as it can or paced at rate_per_s."""
    paced = rate_per_s is not None
    if paced:
        from shmlog.cli.benchmark import precise_timer
        precise_timer()                # sleeps wake within ~1 us of their target, not 50 us
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0 if paced else 2})
    pad = b"x" * max(0, value_bytes - HEADER.size)
    interval_ns = int(1e9 / rate_per_s) if paced else 0
    ready.set()
    go.wait()
    start = time.monotonic_ns()
    for seq in range(records):
        if paced:
            wait_ns = start + seq * interval_ns - time.monotonic_ns()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
        trade_id = b"trade-%d-%d" % (producer_id, seq % 1000)
        while True:
            try:
                p.produce(TOPIC, key=trade_id, value=HEADER.pack(producer_id, seq, time.monotonic_ns()) + pad)
                break
            except BufferError:
                p.poll(0.01)
        if seq % 10000 == 0:
            p.poll(0)
    p.flush()
    p.close()


def check_trade(msg):
    """The workers' function: validate one trade, stamp it, forward it (same key)."""
    value = msg.value()
    producer_id, seq, _ = HEADER.unpack_from(value)
    if not msg.key().startswith(b"trade-%d-" % producer_id):
        raise ValueError(f"trade {msg.key()!r} carries producer id {producer_id}")
    return value[:HEADER.size] + STAMP.pack(time.monotonic_ns())


class OutputReader:
    """Reads the output topic from the beginning across both phases: which trades arrived,
    per-key order, and latencies (ns) per producer id."""

    def __init__(self, bootstrap, partitions):
        self.consumer = shmlog.Consumer({"bootstrap.servers": bootstrap})
        self.consumer.assign([shmlog.TopicPartition(CHECKED, p, shmlog.OFFSET_BEGINNING) for p in range(partitions)])
        self.seen, self.last_seq, self.disorder = set(), {}, 0
        self.to_worker, self.end_to_end = {}, {}      # producer id -> [ns]

    def read_until(self, expected, timeout_s=READ_TIMEOUT_S):
        """Read until `expected` distinct trades in all (or the timeout); True when reached."""
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < expected and time.monotonic() < deadline:
            batch = self.consumer.consume(10000, timeout=0.1)
            now = time.monotonic_ns()
            for m in batch:
                if m.error() is not None:
                    continue
                producer_id, seq, sent = HEADER.unpack_from(m.value())
                (handled,) = STAMP.unpack_from(m.value(), HEADER.size)
                if self.last_seq.get(m.key(), -1) >= seq:
                    self.disorder += 1
                self.last_seq[m.key()] = seq
                self.seen.add((producer_id, seq))
                self.to_worker.setdefault(producer_id, []).append(handled - sent)
                self.end_to_end.setdefault(producer_id, []).append(now - sent)
        return len(self.seen) >= expected

    def latencies(self, producer_ids, skip=0):
        """(produce -> worker, produce -> reader) samples of these producers, sorted."""
        pick = lambda table: sorted(x for i in producer_ids for x in table.get(i, [])[skip:])  # noqa: E731
        return pick(self.to_worker), pick(self.end_to_end)

    def close(self):
        self.consumer.close()


def pct(sorted_values, q):
    """Nearest-rank percentile of sorted values (nan when there are none)."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(len(sorted_values) * q) - 1)]


def micro_sign():
    """µ when stdout can print it, else u."""
    try:
        "\u00b5".encode(sys.stdout.encoding or "ascii")
        return "\u00b5"
    except (UnicodeEncodeError, LookupError):
        return "u"


def duration(ns):
    """A duration in the unit that suits it: 45.2 µs, 410.3 ms, 1.52 s."""
    if ns != ns:
        return "-"
    if ns < 1e6:
        return f"{ns / 1e3:,.1f} {micro_sign()}s"
    if ns < 1e9:
        return f"{ns / 1e6:,.1f} ms"
    return f"{ns / 1e9:,.2f} s"


def run_producers(ctx, bootstrap, specs):
    """Start one producer process per (producer id, records, value bytes, rate), wait until
    all are ready, start them together; returns (processes, start time in perf_counter s)."""
    go = ctx.Event()
    readies = [ctx.Event() for _ in specs]
    procs = [ctx.Process(target=produce, args=(bootstrap, pid, n, value_bytes, ready, go, rate))
             for (pid, n, value_bytes, rate), ready in zip(specs, readies)]
    for proc in procs:
        proc.start()
    for ready in readies:
        ready.wait()
    start = time.perf_counter()
    go.set()
    return procs, start


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser():
    ap = argparse.ArgumentParser(
        prog="python -m shmlog.demo", description=__doc__.split("\n\n")[0],
        epilog="Prints the throughput at full load and the latency at light load, then the check; "
               "exit status 1 when the check fails.")
    ap.add_argument("--records", type=positive, default=100_000, metavar="N",
                    help="trades each producer sends in the throughput phase (default: %(default)s)")
    ap.add_argument("--producers", type=positive, default=2, metavar="P",
                    help="producer processes in the throughput phase (default: %(default)s)")
    ap.add_argument("--workers", type=positive, default=2, metavar="W",
                    help="worker processes in the consumer group (default: %(default)s)")
    ap.add_argument("--partitions", type=positive, default=4, metavar="K",
                    help="partitions of the input and the output topic (default: %(default)s)")
    ap.add_argument("--value-bytes", type=positive, default=100, metavar="B",
                    help=f"size of each trade's value in bytes; the first {HEADER.size} are its header, so "
                         f"smaller values are sent as {HEADER.size} B (default: %(default)s)")
    ap.add_argument("--paced-records", type=positive, default=2_000, metavar="M",
                    help=f"trades sent at light load to measure latency, after {WARMUP_RECORDS} more "
                         f"for warm-up (default: %(default)s)")
    ap.add_argument("--paced-rate", type=positive, default=2_000, metavar="R",
                    help="trades per second at light load (default: %(default)s)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KafkaException as exc:
        print(f"python -m shmlog.demo: error: {reason_of(exc)}", file=sys.stderr)
        return 1


def run(args):
    ctx = multiprocessing.get_context("spawn")
    paced_id = args.producers                   # the light-load producer's id, after the others'
    paced_total = args.paced_records + WARMUP_RECORDS
    value_bytes = max(args.value_bytes, HEADER.size)
    with tempfile.TemporaryDirectory(prefix="shmlog-demo-") as data_dir, \
            shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=200, shmlog_log_level="WARNING") as broker:
        bootstrap = broker.bootstrap_servers
        conf = {"bootstrap.servers": bootstrap}
        admin = shmlog.AdminClient(conf)
        for name in (TOPIC, CHECKED):
            admin.create_topics([shmlog.NewTopic(name, args.partitions)])[name].result()
        print(f"broker up at {bootstrap}: topics {TOPIC!r} and {CHECKED!r}, {args.partitions} partitions each")

        pipeline = Pipeline({**conf, "auto.offset.reset": "earliest"}, [TOPIC], check_trade, group_id=GROUP,
                            workers=args.workers, output_topic=CHECKED, producer_conf={"acks": 1})
        pipeline.start()
        reader = None
        try:
            desc = pipeline.wait_ready(60)
            print(f"consumer group {GROUP!r}: {len(desc.members)} worker processes ({desc.partition_assignor}): "
                  + ", ".join(f"{m.host} has partitions {sorted(tp.partition for tp in m.assignment.topic_partitions)}"
                              for m in desc.members))
            reader = OutputReader(bootstrap, args.partitions)

            # Phase 1: throughput, every producer as fast as it can.
            loaded = args.records * args.producers
            procs, start = run_producers(ctx, bootstrap, [(i, args.records, value_bytes, None)
                                                          for i in range(args.producers)])
            reader.read_until(loaded)
            elapsed = time.perf_counter() - start
            for proc in procs:
                proc.join()
            loaded_read = len(reader.seen)

            # Phase 2: latency at light load, one paced producer through the same pipeline.
            procs, _ = run_producers(ctx, bootstrap, [(paced_id, paced_total, value_bytes, args.paced_rate)])
            reader.read_until(loaded + paced_total, timeout_s=READ_TIMEOUT_S + paced_total / args.paced_rate)
            for proc in procs:
                proc.join()
        finally:
            if reader is not None:
                reader.close()
            pipeline.stop()
            stats = pipeline.join()

        total = loaded + paced_total
        request = [shmlog.client.admin.ConsumerGroupTopicPartitions(GROUP)]
        committed = admin.list_consumer_group_offsets(request)[GROUP].result()
        lag = sum(row.lag or 0 for row in admin.list_consumer_group_lag(GROUP).result())
        admin.close()
        all_committed = sum(tp.offset for tp in committed.topic_partitions) == total and lag == 0

        full_worker, _ = reader.latencies(range(args.producers))
        light_worker, light_reader = reader.latencies([paced_id], skip=WARMUP_RECORDS)
        print(f"throughput at full load: {loaded_read / elapsed:,.0f} trades/s end to end "
              f"({loaded_read * value_bytes / elapsed / 1e6:,.1f} MB/s): {args.producers} producer processes "
              f"sent {loaded:,} trades of {value_bytes} B as fast as they could, {args.workers} workers "
              f"checked and forwarded them, read back in {elapsed:.2f} s")
        print(f"  under full load records queue behind the backlog: produce() to the worker "
              f"p50 {duration(pct(full_worker, 0.5))}, p99 {duration(pct(full_worker, 0.99))}")
        print(f"latency at light load (paced {args.paced_rate:,} trades/s): p50 {duration(pct(light_worker, 0.5))}, "
              f"p99 {duration(pct(light_worker, 0.99))} - produce() to the worker's function, across processes")
        print(f"  on through the output topic to its reader: p50 {duration(pct(light_reader, 0.5))}, "
              f"p99 {duration(pct(light_reader, 0.99))} ({len(light_worker):,} trades)")
        no_loss = len(reader.seen) == total
        ok = no_loss and reader.disorder == 0 and all_committed
        print(f"check: {'OK' if ok else 'FAILED'} - no loss: {no_loss}, per-key order kept: "
              f"{reader.disorder == 0}, every input offset committed: {all_committed} "
              f"({stats['processed']:,} processed, {len(reader.seen):,} of {total:,} trades forwarded)")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
