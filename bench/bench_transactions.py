"""Transactions: producer throughput by transaction size, and the exactly-once pipeline.

    PYTHONPATH=. python bench/bench_transactions.py [--quick] [--markdown bench/results/bench_transactions.md]

1. Producer. One process produces records of 100 B and 2 KB to a 1-partition topic:
   non-transactional (acks=1, and acks=all as a transactional producer's records are durable
   before its commit), then transactional with 1, 100 and 10,000 records per transaction
   (begin, produce, commit_transaction, which flushes first). records/s from the first
   produce() to the last delivery report / commit. All rows in one run, one broker each.
2. Pipeline. `--pipeline-records` keyed records of 100 B in a 4-partition topic, a
   Pipeline of 2 workers (batch_size 1000) copying them to an output topic:
   at_least_once vs exactly_once, records/s from start until the output (read with
   read_committed) holds them all.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shmlog  # noqa: E402
from shmlog.pipeline import Pipeline  # noqa: E402


def copy(msg):
    return msg.value()


def producer_run(bootstrap, topic, value, records, txn_size, acks):
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    if txn_size:
        conf["transactional.id"] = f"bench-{topic}"
    else:
        conf["acks"] = acks
    p = shmlog.Producer(conf)
    if txn_size:
        p.init_transactions()
    start = time.perf_counter()
    sent = 0
    while sent < records:
        n = min(txn_size or records, records - sent)
        if txn_size:
            p.begin_transaction()
        for _ in range(n):
            while True:
                try:
                    p.produce(topic, value)
                    break
                except BufferError:
                    p.poll(0.01)
        if txn_size:
            p.commit_transaction()
        sent += n
    p.flush()
    elapsed = time.perf_counter() - start
    p.close()
    return records / elapsed


def bench_producer(quick):
    rows = []
    counts = {0: 200_000, 1: 1_000, 100: 50_000, 10_000: 200_000}
    if quick:
        counts = {k: v // 10 for k, v in counts.items()}
    with tempfile.TemporaryDirectory() as d, shmlog.Broker(d) as b:
        admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        for size in (100, 2048):
            value = b"x" * size
            cases = [("non-transactional acks=1", 0, "1"), ("non-transactional acks=all", 0, "all"),
                     ("transactional, 1 record/txn", 1, None), ("transactional, 100 records/txn", 100, None),
                     ("transactional, 10000 records/txn", 10_000, None)]
            for i, (name, txn_size, acks) in enumerate(cases):
                topic = f"p{size}-{i}"
                admin.create_topics([shmlog.NewTopic(topic, 1, config={"ring.bytes": str(64 << 20)})])[topic].result()
                rate = producer_run(b.bootstrap_servers, topic, value, counts[txn_size], txn_size, acks)
                rows.append((f"{size} B", name, counts[txn_size], rate))
                print(f"{size:5d} B  {name:34s} {counts[txn_size]:8d} records  {rate:12,.0f} records/s", flush=True)
        admin.close()
    return rows


def bench_pipeline(records, quick):
    rows = []
    for guarantee in ("at_least_once", "exactly_once"):
        with tempfile.TemporaryDirectory() as d, shmlog.Broker(d, group_initial_rebalance_delay_ms=0) as b:
            conf = {"bootstrap.servers": b.bootstrap_servers}
            admin = shmlog.AdminClient(conf)
            for t in ("in", "out"):
                admin.create_topics([shmlog.NewTopic(t, 4, config={"ring.bytes": str(32 << 20)})])[t].result()
            p = shmlog.Producer({**conf, "acks": 1})
            for i in range(records):
                while True:
                    try:
                        p.produce("in", b"v" * 100, key=b"k%d" % (i % 64))
                        break
                    except BufferError:
                        p.poll(0.01)
            p.flush()
            p.close()
            c = shmlog.Consumer({**conf, "isolation.level": "read_committed"})
            c.assign([shmlog.TopicPartition("out", q, 0) for q in range(4)])
            start = time.perf_counter()
            with Pipeline({**conf, "auto.offset.reset": "earliest"}, ["in"], copy, group_id="bench", workers=2,
                          batch_size=1000, output_topic="out", processing_guarantee=guarantee):
                seen = 0
                while seen < records:
                    seen += sum(1 for m in c.consume(10_000, timeout=1.0) if m.error() is None)
                elapsed = time.perf_counter() - start
            c.close()
            admin.close()
            rate = records / elapsed
            rows.append((guarantee, records, rate))
            print(f"pipeline {guarantee:14s} {records:8d} records  {rate:12,.0f} records/s", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the records")
    ap.add_argument("--pipeline-records", type=int, default=200_000)
    ap.add_argument("--markdown", help="also write the tables to this file")
    args = ap.parse_args()
    producer_rows = bench_producer(args.quick)
    pipeline_rows = bench_pipeline(args.pipeline_records // (10 if args.quick else 1), args.quick)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| record | producer | records | records/s |\n| --- | --- | ---: | ---: |\n")
            for size, name, n, rate in producer_rows:
                f.write(f"| {size} | {name} | {n:,} | {rate:,.0f} |\n")
            f.write("\n| pipeline (2 workers, batch 1000, 100 B) | records | records/s |\n| --- | ---: | ---: |\n")
            for guarantee, n, rate in pipeline_rows:
                f.write(f"| {guarantee} | {n:,} | {rate:,.0f} |\n")


if __name__ == "__main__":
    main()
