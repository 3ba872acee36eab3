"""The README's first command: producers and consumers in separate processes exchange
keyed records through an embedded broker, then the demo checks and reports.

    python -m shmlog.demo [--records N] [--producers P] [--partitions K] [--value-bytes B]
"""
import argparse
import multiprocessing
import os
import struct
import tempfile
import time

import shmlog

TOPIC = "trades"


def produce(bootstrap, producer_id, records, value_bytes, ready, go):
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 2})
    pad = b"x" * max(0, value_bytes - 16)
    ready.set()
    go.wait()
    for seq in range(records):
        trade_id = b"trade-%d-%d" % (producer_id, seq % 1000)
        p.produce(TOPIC, key=trade_id, value=struct.pack("<qq", seq, time.time_ns()) + pad)
        if seq % 10000 == 0:
            p.poll(0)
    p.flush()
    p.close()


def consume(bootstrap, partitions, expected, results):
    c = shmlog.Consumer({"bootstrap.servers": bootstrap})
    c.assign([shmlog.TopicPartition(TOPIC, p, shmlog.OFFSET_BEGINNING) for p in partitions])
    last_seq = {}
    received = out_of_order = 0
    latencies = []
    while received < expected:
        batch = c.consume(10000, timeout=30)
        if not batch:
            break
        now = time.time_ns()
        for m in batch:
            seq, sent_ns = struct.unpack_from("<qq", m.value())
            key = m.key()
            if last_seq.get(key, -1) >= seq:
                out_of_order += 1
            last_seq[key] = seq
        latencies.append((now - sent_ns) / 1000)
        received += len(batch)
    c.close()
    results.put((received, out_of_order, latencies))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000, help="records per producer")
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--value-bytes", type=int, default=100)
    args = ap.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="shmlog-demo-") as data_dir, shmlog.Broker(data_dir) as broker:
        bootstrap = broker.bootstrap_servers
        admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([shmlog.NewTopic(TOPIC, args.partitions)])[TOPIC].result()
        admin.close()
        print(f"broker up at {bootstrap}: topic {TOPIC!r} with {args.partitions} partitions")
        total = args.records * args.producers
        # Which partition each key lands in is Kafka's murmur2 rule, so count per consumer up front.
        from shmlog.partitioner import murmur2_partition
        per_partition = [0] * args.partitions
        for pid in range(args.producers):
            for seq in range(args.records):
                per_partition[murmur2_partition(b"trade-%d-%d" % (pid, seq % 1000), args.partitions)] += 1
        groups = [list(range(i, args.partitions, args.consumers)) for i in range(args.consumers)]
        results = ctx.Queue()
        go = ctx.Event()
        readies = [ctx.Event() for _ in range(args.producers)]
        consumers = [ctx.Process(target=consume, args=(bootstrap, g, sum(per_partition[p] for p in g), results))
                     for g in groups]
        producers = [ctx.Process(target=produce, args=(bootstrap, i, args.records, args.value_bytes, readies[i], go))
                     for i in range(args.producers)]
        for proc in consumers + producers:
            proc.start()
        for r in readies:
            r.wait()
        start = time.perf_counter()
        go.set()
        outcomes = [results.get() for _ in consumers]
        elapsed = time.perf_counter() - start
        for proc in consumers + producers:
            proc.join()
        received = sum(o[0] for o in outcomes)
        disorder = sum(o[1] for o in outcomes)
        lat = sorted(x for o in outcomes for x in o[2])
        print(f"{args.producers} producer processes sent {total:,} keyed records of {args.value_bytes} B; "
              f"{args.consumers} consumer processes received {received:,}")
        print(f"throughput: {received / elapsed:,.0f} records/s ({received * args.value_bytes / elapsed / 1e6:,.1f} MB/s)"
              f" in {elapsed:.2f}s")
        if lat:
            print(f"batch latency (produce to consume): p50 {lat[len(lat) // 2]:,.0f} us, "
                  f"p99 {lat[int(len(lat) * 0.99)]:,.0f} us")
        ok = received == total and disorder == 0
        print(f"check: {'OK' if ok else 'FAILED'} - no loss: {received == total}, per-key order kept: {disorder == 0}")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
