"""The step functions of bench_streams.py's topologies, shared with its Quix Streams peer (which
runs in its own virtual environment, without shmlog: this module imports nothing)."""


def keep(v):
    return v["qty"] > 5


def notional(v):
    return {**v, "notional": v["price"] * v["qty"]}


def slim(v):
    return {"symbol": v["symbol"], "notional": v["notional"], "qty": v["qty"]}
