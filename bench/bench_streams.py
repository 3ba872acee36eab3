"""shmlog.streams throughput: records/s of three topologies over records already in the input
topic, at-least-once vs exactly-once, 1 and 2 workers, 100 B and 2 KB values.

    PYTHONPATH=. python bench/bench_streams.py [--records 50000] [--partitions 2]

Topologies (docs/streams.md):
  stateless   filter -> apply -> apply -> to_topic             (fused, no state)
  count       count per key -> to_topic                        (a store and its changelog)
  vwap        group_by(symbol) -> 1-minute tumbling agg -> final -> apply -> to_topic
              (a repartition topic, a window store)

With --quix-python Q/bin/python (a virtual environment with `pip install quixstreams`), each
topology also runs in Quix Streams (bench/peers/quix_streams.py) on the same input, through the
broker's Kafka listener, next to shmlog's at-least-once 1-worker row.

The clock starts when the first worker is assigned its partitions and stops when the workers
have processed every input record (and, for vwap, every repartitioned record). Each row is
one run; the machine's other load shows in the spread between runs.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from streams_functions import keep, notional, slim  # noqa: E402

import shmlog  # noqa: E402
from shmlog.streams import App, Sum  # noqa: E402

SYMBOLS = [f"S{i}" for i in range(20)]


def values(n, size, seed=0):
    rng = random.Random(seed)
    pad = "x" * max(0, size - 90)
    base = int(time.time() * 1000) - 3_600_000
    out = []
    for i in range(n):
        v = {"symbol": rng.choice(SYMBOLS), "price": rng.randint(90, 110), "qty": rng.randint(1, 100), "pad": pad}
        out.append((f"T{rng.randrange(1000)}", json.dumps(v).encode(), base + i))
    return out


def vwap(w):
    return {"start": w["start"], "vwap": w["value"]["n"] / w["value"]["q"]}


def build(kind, conf, app_id, guarantee, state_dir):
    app = App({**conf, "application.id": app_id, "processing.guarantee": guarantee, "state.dir": state_dir})
    sdf = app.stream("input")
    if kind == "stateless":
        sdf.filter(keep).apply(notional).apply(slim).to_topic(f"{app_id}-out")
    elif kind == "count":
        sdf.count().to_topic(f"{app_id}-out")
    else:
        (sdf.apply(notional).group_by("symbol").tumbling_window(60_000, grace_ms=60_000)
            .agg(n=Sum("notional"), q=Sum("qty")).final().apply(vwap).to_topic(f"{app_id}-out"))
    return app


def run_one(conf, kind, guarantee, workers, records, state_root, tag):
    app_id = f"b-{kind}-{guarantee}-{workers}-{tag}"
    app = build(kind, conf, app_id, guarantee, os.path.join(state_root, app_id))
    target = records * (2 if kind == "vwap" else 1)
    runner = app.runner(workers=workers, batch_size=1000)
    runner.start()
    try:
        while not runner.assignments:
            time.sleep(0.01)
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while runner.stats()["processed"] < target:
            if time.monotonic() > deadline or runner.error is not None:
                raise RuntimeError(f"{app_id}: processed {runner.stats()['processed']} of {target}")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        runner.stop()
        runner.join()
    return records / elapsed


def run_quix(python, bootstrap, kind, records, state_dir):
    peer = os.path.join(os.path.dirname(__file__), "peers", "quix_streams.py")
    done = subprocess.run([python, peer, bootstrap, kind, str(records), state_dir], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])["records_per_s"]


def listener_address(admin):
    deadline = time.monotonic() + 60
    while True:
        status = admin._cluster.control.request("status")["kafka_listener"]
        if status is not None:
            return f"{status['host']}:{status['port']}"
        if time.monotonic() > deadline:
            raise RuntimeError("the Kafka listener did not come up in 60 s")
        time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--sizes", default="100,2048")
    ap.add_argument("--kinds", default="stateless,count,vwap")
    ap.add_argument("--quix-python", metavar="PYTHON", help="a Python with quixstreams installed: adds its rows")
    args = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="bench-streams-")
    try:
        listeners = {"listeners": "PLAINTEXT://127.0.0.1:0"} if args.quix_python else {}
        with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0, **listeners) as broker:
            conf = {"bootstrap.servers": broker.bootstrap_servers}
            admin = shmlog.AdminClient(conf)
            kafka_address = listener_address(admin) if args.quix_python else None
            print(f"# {args.records} records per row, input topic of {args.partitions} partitions, "
                  f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
            print(f"{'topology':10} {'value':>6} {'guarantee':14} {'workers':>7} {'records/s':>11}")
            for size in (int(s) for s in args.sizes.split(",")):
                admin.delete_topics(["input"])["input"].result() if "input" in admin.list_topics().topics else None
                admin.create_topics([shmlog.NewTopic("input", args.partitions)])["input"].result()
                producer = shmlog.Producer({**conf, "linger.ms": 5})
                for key, value, ts in values(args.records, size):
                    while True:
                        try:
                            producer.produce("input", key=key, value=value, timestamp=ts)
                            break
                        except BufferError:
                            producer.poll(0.01)
                producer.flush()
                for kind in args.kinds.split(","):
                    for guarantee in ("at_least_once", "exactly_once"):
                        for workers in (1, 2):
                            rate = run_one(conf, kind, guarantee, workers, args.records,
                                           os.path.join(data_dir, "state"), str(size))
                            print(f"{kind:10} {size:>6} {guarantee:14} {workers:>7} {rate:>11,.0f}", flush=True)
                    if args.quix_python:
                        rate = run_quix(args.quix_python, kafka_address, kind, args.records,
                                        os.path.join(data_dir, f"quix-{kind}-{size}"))
                        shown = f"{rate:>11,.0f}" if isinstance(rate, float) else rate
                        print(f"{kind:10} {size:>6} {'quix ALO':14} {1:>7} {shown:>11}", flush=True)
            admin.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
