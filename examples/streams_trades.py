"""The worked example of docs/streams.md: trades keyed by trade id, a running position per trade
id, and a per-minute VWAP per symbol, exactly once.

    python examples/streams_trades.py          # embedded broker, 20,000 trades, 2 workers
"""
import json
import random
import sys
import tempfile
import time

import shmlog
from shmlog.streams import App, Sum


def position(trade, state):
    """The trade id's running position: bought minus sold quantity."""
    signed = trade["qty"] if trade["side"] == "buy" else -trade["qty"]
    total = state.get("position", 0) + signed
    state.set("position", total)
    return {"trade_id": trade["trade_id"], "position": total}


def with_notional(trade):
    return {**trade, "notional": trade["price"] * trade["qty"]}


def vwap(window):
    totals = window["value"]
    return {"start": window["start"], "end": window["end"],
            "vwap": totals["notional"] / totals["volume"], "volume": totals["volume"]}


def build(conf, state_dir=None, guarantee="exactly_once", grace_ms=5_000):
    app = App({**conf, "application.id": "trades-analytics", "processing.guarantee": guarantee,
               **({"state.dir": state_dir} if state_dir else {})})
    trades = app.stream("trades")                                   # JSON values, key = trade id
    trades.apply(position, stateful=True, name="position").to_topic("positions")
    (trades.apply(with_notional)
           .group_by("symbol")                                      # re-keyed by symbol
           .tumbling_window(60_000, grace_ms=grace_ms)
           .agg(notional=Sum("notional"), volume=Sum("qty"))
           .final()                                                 # one result per closed minute
           .apply(vwap)
           .to_topic("vwap"))
    return app


def main(n=20_000):
    with tempfile.TemporaryDirectory() as data_dir, shmlog.Broker(data_dir) as broker:
        conf = {"bootstrap.servers": broker.bootstrap_servers}
        shmlog.AdminClient(conf).create_topics([shmlog.NewTopic("trades", 4)])["trades"].result()
        producer, rng, start = shmlog.Producer(conf), random.Random(1), int(time.time() * 1000) - 3_600_000
        for i in range(n):
            trade_id = f"T{rng.randrange(500)}"
            producer.produce("trades", key=trade_id, timestamp=start + i * 30, value=json.dumps(
                {"trade_id": trade_id, "symbol": rng.choice(["ACME", "INIT", "GLOB"]), "price": rng.uniform(90, 110),
                 "qty": rng.randint(1, 100), "side": rng.choice(["buy", "sell"])}))
        producer.flush()
        runner = build(conf, state_dir=f"{data_dir}/state").runner(workers=2)
        consumer = shmlog.Consumer({**conf, "group.id": "reader", "auto.offset.reset": "earliest"})
        consumer.subscribe(["vwap"])
        with runner:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is not None and msg.error() is None:
                    print(msg.key().decode(), json.loads(msg.value()))
                if runner.stats()["processed"] >= 2 * n:
                    break
        consumer.close()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
