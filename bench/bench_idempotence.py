"""Idempotence overhead on produce: the same records produced with enable.idempotence on and off,
acks=all both (idempotence forces it), alternating in one run against one broker.

    PYTHONPATH=. python bench/bench_idempotence.py [--records N] [--rounds R] [--value-bytes B]

Each round times produce() of N records plus the flush() that waits for their fsync, once per
mode, in alternating order (so drift of the machine hits both alike); per mode the median
records/s of the rounds is printed, and the overhead of idempotence is 1 - on/off. Not a test:
numbers, not pass/fail (target: overhead <= 5 %, docs/exactly-once.md).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # shmlog next to bench/

import shmlog  # noqa: E402

TOPIC = "bench-idempotence"


def one_run(bootstrap, idempotent, records, value):
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": idempotent,
                         "linger.ms": 5, "batch.num.messages": 10000, "queue.buffering.max.messages": 0})
    assert (p._producer_id >= 0) == idempotent
    start = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                p.produce(TOPIC, value, partition=0)
                break
            except BufferError:   # buffer.memory full of records awaiting their fsync
                p.poll(0.001)
    left = p.flush(120)
    took = time.perf_counter() - start
    p.close()
    if left:
        raise RuntimeError(f"{left} records not delivered")
    return records / took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--value-bytes", type=int, default=100)
    a = ap.parse_args()
    value = b"x" * a.value_bytes
    rates = {True: [], False: []}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d, shmlog.Broker(d, ring_bytes=1 << 26) as b:
        admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        admin.create_topics([shmlog.NewTopic(TOPIC, 1)])[TOPIC].result()
        admin.close()
        one_run(b.bootstrap_servers, False, 20_000, value)   # warm-up: page cache, ring pages
        for r in range(a.rounds):
            for mode in ((True, False) if r % 2 == 0 else (False, True)):
                rates[mode].append(one_run(b.bootstrap_servers, mode, a.records, value))
                print(f"round {r + 1}: idempotence {'on ' if mode else 'off'} {rates[mode][-1]:,.0f} records/s",
                      file=sys.stderr)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"| produce() {a.value_bytes} B, acks=all, {a.records:,} records x {a.rounds} rounds | records/s (median) |")
    print("| --- | --- |")
    print(f"| enable.idempotence=false | {off:,.0f} |")
    print(f"| enable.idempotence=true | {on:,.0f} |")
    print(f"| overhead | {100 * (1 - on / off):.1f} % |")


if __name__ == "__main__":
    main()
