"""Codec benchmark: compression ratio, producer and consumer throughput for each
`compression.type` on realistic ~2 KB JSON trade events, in one run. Prints a Markdown table.

    PYTHONPATH=. python bench/bench_codecs.py [--records N] [--quick] [--repeat R] [--level L] [--json PATH]

One embedded broker in a temporary data dir. For each codec (none, gzip, snappy, lz4, zstd)
and each round, a fresh single-partition topic (ring.bytes 256 MiB, so every record stays in
the ring; topics are kept until the broker stops with the run) gets the same N events:

- producer: one Producer (librdkafka's defaults: batch.size 1 MB, linger.ms 5, acks=1) calls
  produce() for every event, then flush(); records/s = N / that time, MB/s counts the JSON
  value bytes (10^6 bytes per MB), not keys or framing;
- ratio: the partition's segment files once the persister has written everything, against the
  `none` row's (Kafka's RecordBatch framing on both sides, so the ratio is what a Kafka log
  would see for these batches);
- consumer: a new Consumer assigned from offset 0 reads all N with consume(1000) (decompress,
  index, one Message per record: confluent-kafka's path) and, separately, with consume_batch()
  (the batch path); each read is checked: N records, offsets 0..N-1, every value equal to what
  was sent.

The codec-only columns compress/decompress 1 MB record sections in memory (one core, no broker),
which separates the codec's cost from the broker's. Rounds: the best of R is shown.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shmlog  # noqa: E402
from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog.client.producer import _Batch  # noqa: E402
from shmlog.log import codec
from shmlog.log.segment import list_segments, partition_dir, segment_path  # noqa: E402

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
RING_BYTES = str(256 << 20)
SYMBOLS = [("AAPL", "US0378331005"), ("MSFT", "US5949181045"), ("NVDA", "US67066G1040"),
           ("AMZN", "US0231351067"), ("GOOGL", "US02079K3059"), ("META", "US30303M1027"),
           ("TSLA", "US88160R1014"), ("JPM", "US46625H1005"), ("V", "US92826C8394"), ("XOM", "US30231G1022")]
VENUES = ["XNAS", "XNYS", "ARCX", "BATS", "IEXG", "EDGX"]
DESKS = ["eq-cash-ny", "eq-cash-ldn", "eq-prog", "eq-etf", "eq-delta1"]


def trade_event(rnd, seq, t0):
    """One ~2 KB trade event as a trading system would log it: identifiers, economics, parties,
    timestamps, fees and a 10-level book snapshot around the fill."""
    symbol, isin = rnd.choice(SYMBOLS)
    px = round(rnd.uniform(20, 900), 2)
    qty = rnd.choice([100, 200, 300, 500, 1000, 2500]) * rnd.randint(1, 8)
    ts = t0 + seq * 137 + rnd.randint(0, 99)
    tick = 0.01
    event = {
        "schema": "trade.executed.v3", "seq": seq, "trade_id": f"T{ts:x}-{rnd.getrandbits(48):012x}",
        "order_id": f"O-{rnd.getrandbits(40):010x}", "parent_order_id": f"P-{rnd.getrandbits(32):08x}",
        "exec_id": f"E{rnd.getrandbits(64):016x}", "symbol": symbol, "isin": isin, "currency": "USD",
        "venue": rnd.choice(VENUES), "side": rnd.choice(["BUY", "SELL"]), "price": px, "quantity": qty,
        "notional": round(px * qty, 2), "liquidity": rnd.choice(["ADDED", "REMOVED", "ROUTED"]),
        "order_type": rnd.choice(["LIMIT", "MARKET", "PEG_MID"]), "time_in_force": rnd.choice(["DAY", "IOC"]),
        "timestamps": {"order_received": ts - rnd.randint(200, 5000), "routed": ts - rnd.randint(50, 199),
                       "executed": ts, "reported": ts + rnd.randint(1, 40)},
        "parties": {"trader": f"tr{rnd.randint(1, 400):04d}", "desk": rnd.choice(DESKS),
                    "account": f"ACC-{rnd.randint(10000, 99999)}", "broker": rnd.choice(["GSCO", "MSCO", "JPMS"]),
                    "clearing": "DTCC", "counterparty_lei": f"5493{rnd.getrandbits(56):014X}"},
        "fees": {"exchange": round(qty * 0.0030 * rnd.random(), 4), "sec": round(px * qty * 0.0000278, 4),
                 "finra_taf": round(min(qty * 0.000166, 8.3), 4), "commission": round(qty * 0.0015, 4)},
        "settlement": {"date": "2026-11-27", "cycle": "T+1", "status": "PENDING"},
        "book": {
            "bids": [[round(px - tick * (i + rnd.randint(0, 2)), 2), rnd.randint(1, 60) * 100, rnd.randint(1, 30)]
                     for i in range(10)],
            "asks": [[round(px + tick * (i + rnd.randint(0, 2)), 2), rnd.randint(1, 60) * 100, rnd.randint(1, 30)]
                     for i in range(10)],
        },
        "routing": [{"venue": v, "sent_qty": qty, "filled_qty": rnd.randint(0, qty), "latency_us": rnd.randint(40, 900)}
                    for v in rnd.sample(VENUES, 3)],
        "flags": sorted(rnd.sample(["odd_lot", "iso", "short_exempt", "algo", "dark", "opening", "closing",
                                    "cross", "riskless_principal", "agency"], 3)),
        "strategy": {"name": rnd.choice(["VWAP", "TWAP", "POV", "IS", "CLOSE"]),
                     "participation": round(rnd.random(), 3), "urgency": rnd.choice(["LOW", "MEDIUM", "HIGH"]),
                     "benchmark_px": round(px * (1 + rnd.uniform(-0.002, 0.002)), 4)},
        "compliance": {"reg_nms": True, "best_ex_checked": True, "restricted_list": False,
                       "notes": "within limits; no manual intervention; pre-trade checks passed",
                       "checks": ["credit", "fat_finger", "position", "short_locate", "price_band"]},
        "source": {"host": f"oms-{rnd.randint(1, 12):02d}.prod", "app": "oms-gateway", "version": "4.12.3",
                   "session": f"FIX.4.4:SHMLOG->{rnd.choice(['NYSE', 'NSDQ', 'ARCA'])}"},
    }
    return json.dumps(event, separators=(", ", ": ")).encode()


def make_events(n, seed=42):
    rnd = random.Random(seed)
    t0 = int(time.time() * 1000) - 3_600_000
    return [trade_event(rnd, i, t0) for i in range(n)]


def stored_bytes(conf, topic):
    admin = shmlog.AdminClient(conf)
    try:
        md = admin.list_topics(topic)
    finally:
        admin.close()
    c = shmlog.Consumer(conf)
    try:
        log_dir = c._cluster.topic(topic)["log_dirs"][0]
    finally:
        c.close()
    pdir = partition_dir(log_dir, topic, 0)
    assert md.topics[topic].partitions
    return sum(os.path.getsize(segment_path(pdir, b)) for b in list_segments(pdir))


def wait_persisted(conf, topic, n, timeout=120):
    c = shmlog.Consumer(conf)
    try:
        ring = c._cluster.ring(topic, 0)
        deadline = time.monotonic() + timeout
        while ring.persisted_offset < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: persister at {ring.persisted_offset} of {n} after {timeout}s")
            time.sleep(0.05)
    finally:
        c.close()


def produce(conf, topic, name, events, level):
    p = shmlog.Producer({**conf, "compression.type": name, "compression.level": level, "acks": 1})
    start = time.perf_counter()
    for i, value in enumerate(events):
        while True:
            try:
                p.produce(topic, value=value, key=b"%d" % (i % 1000), partition=0)
                break
            except BufferError:
                p.poll(0.005)
    left = p.flush(60)
    elapsed = time.perf_counter() - start
    p.close()
    if left:
        raise RuntimeError(f"{topic}: {left} records undelivered")
    return elapsed


def consume(conf, topic, events, batch_path):
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    n = len(events)
    got = 0
    start = time.perf_counter()
    try:
        while got < n:
            if batch_path:
                view = c.consume_batch(timeout=10)
                if view is None:
                    raise RuntimeError(f"{topic}: stalled at {got} of {n} (consume_batch)")
                offsets = view.offsets.tolist()
                values = view.values()
                if offsets != list(range(got, got + len(offsets))):
                    raise RuntimeError(f"{topic}: offsets not dense at {got}")
                for off, v in zip(offsets, values):
                    if bytes(v) != events[off]:
                        raise RuntimeError(f"{topic}: value of offset {off} differs")
                got += len(offsets)
            else:
                msgs = c.consume(1000, timeout=10)
                if not msgs:
                    raise RuntimeError(f"{topic}: stalled at {got} of {n} (consume)")
                for m in msgs:
                    if m.offset() != got or m.value() != events[got]:
                        raise RuntimeError(f"{topic}: record {got} differs (offset {m.offset()})")
                    got += 1
        elapsed = time.perf_counter() - start
    finally:
        c.close()
    return elapsed


def codec_only(name, events, level, rounds=3):
    """(compress MB/s, decompress MB/s) of 1 MB records sections, in memory."""
    if name == "none":
        return None, None
    sections, batch = [], _Batch()
    for value in events:
        batch.add(None, value, 0, None, None, len(value) + 21)
        if batch.bytes >= 1_000_000:
            sections.append(bytes(batch.encode()[0]))
            batch = _Batch()
    if len(batch):
        sections.append(bytes(batch.encode()[0]))
    total = sum(map(len, sections))
    cid = codec.codec_id(name)
    best_c = best_d = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        packed = [bytes(codec.compress(cid, s, level)) for s in sections]
        best_c = min(best_c, time.perf_counter() - t)
        t = time.perf_counter()
        for s in packed:
            codec.decompress(cid, s)
        best_d = min(best_d, time.perf_counter() - t)
    return total / best_c / 1e6, total / best_d / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--level", type=int, default=-1, help="compression.level (-1: each codec's default)")
    ap.add_argument("--quick", action="store_true", help="5,000 records, one round")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.records, args.repeat = 5_000, 1
    events = make_events(args.records)
    mb = sum(map(len, events)) / 1e6
    print(f"{args.records} events, mean {1e6 * mb / args.records:.0f} bytes of JSON, {mb:.1f} MB; "
          f"compression.level={args.level}", file=sys.stderr)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="shmlog-bench-codecs-") as d, shmlog.Broker(d) as broker:
        conf = {"bootstrap.servers": broker.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        for rnd in range(args.repeat):
            for name in CODECS:
                topic = f"codec-{name}-{rnd}"
                admin.create_topics([shmlog.NewTopic(topic, 1, config={"ring.bytes": RING_BYTES})])[topic].result()
                t_prod = produce(conf, topic, name, events, args.level)
                wait_persisted(conf, topic, args.records)
                size = stored_bytes(conf, topic)
                t_cons = consume(conf, topic, events, batch_path=False)
                t_batch = consume(conf, topic, events, batch_path=True)
                row = rows.setdefault(name, {"stored": size, "prod": t_prod, "cons": t_cons, "batch": t_batch})
                row["prod"], row["cons"], row["batch"] = (min(row["prod"], t_prod), min(row["cons"], t_cons),
                                                          min(row["batch"], t_batch))
                print(f"round {rnd + 1} {name}: produce {t_prod:.2f}s, consume {t_cons:.2f}s, "
                      f"consume_batch {t_batch:.2f}s, {size / 1e6:.1f} MB stored", file=sys.stderr)
        admin.close()
    base = rows["none"]["stored"]
    n = args.records
    out = []
    print(f"\n{n} JSON trade events of ~{1e6 * mb / n:.0f} B ({mb:.0f} MB); best of {args.repeat}; "
          f"compression.level {args.level}\n")
    print("| codec | stored MB | ratio | produce rec/s | produce MB/s | consume rec/s | consume MB/s "
          "| consume_batch MB/s | codec compress MB/s | codec decompress MB/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in CODECS:
        r = rows[name]
        comp, decomp = codec_only(name, events[:20_000], args.level)
        rec = {"codec": name, "stored_mb": r["stored"] / 1e6, "ratio": base / r["stored"],
               "produce_rps": n / r["prod"], "produce_mbps": mb / r["prod"], "consume_rps": n / r["cons"],
               "consume_mbps": mb / r["cons"], "consume_batch_mbps": mb / r["batch"],
               "codec_compress_mbps": comp, "codec_decompress_mbps": decomp}
        out.append(rec)
        fmt = (lambda v: "-" if v is None else f"{v:,.0f}")
        print(f"| {name} | {rec['stored_mb']:.1f} | {rec['ratio']:.2f} | {rec['produce_rps']:,.0f} | "
              f"{rec['produce_mbps']:.0f} | {rec['consume_rps']:,.0f} | {rec['consume_mbps']:.0f} | "
              f"{rec['consume_batch_mbps']:.0f} | {fmt(comp)} | {fmt(decomp)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": n, "mean_bytes": 1e6 * mb / n, "level": args.level, "rows": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
