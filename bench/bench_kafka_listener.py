"""Kafka listener benchmark: confluent-kafka (librdkafka) producing and consuming through the
Kafka listener over loopback TCP, next to shmlog's shared-memory client, in one run.

    PYTHONPATH=. python bench/bench_kafka_listener.py [--records N] [--sizes 100,2048] [--json PATH]

One embedded broker (listeners=PLAINTEXT://127.0.0.1:0) in a temporary data dir. For each value
size, four runs on fresh single-partition topics (ring.bytes 256 MiB):

- produce: N records of that size with produce() then flush() (acks=1, linger.ms 5, the clients'
  default batch.size), by confluent-kafka.Producer through TCP and by shmlog.Producer through
  shared memory; records/s = N / time from the first produce() to flush() returning;
- consume: a Consumer assigned from offset 0 reads all N (consume(1000) in a loop): by
  confluent-kafka.Consumer through TCP (Fetch responses) and by shmlog.Consumer through shared
  memory; each read is checked (N records, offsets 0..N-1, the size of every value).

Numbers are for one run on this machine; the Kafka listener is one Python process with a
thread per connection, so its throughput is bounded by that process's core.
"""
import argparse
import json
import os
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--sizes", default="100,2048")
    ap.add_argument("--json")
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
    print("| client | value bytes | produce records/s | consume records/s |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['client']} | {r['value_bytes']} | {r['produce_records_per_s']:,} | "
              f"{r['consume_records_per_s']:,} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
