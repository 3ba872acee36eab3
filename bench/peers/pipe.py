"""multiprocessing.Pipe(duplex=False): send_bytes() / recv_bytes(), one record per call."""
import struct

from peers._common import (
    LATENCY_INTERVAL_NS,
    MONO,
    Checker,
    latency_result,
    now_ns,
    pace,
    precise_sleep,
    wait_go,
)

NAME = "mp.Pipe"
WORKLOADS = ("records", "latency")


def available():
    return None


def open_channel(ctx, row, workdir):
    r, w = ctx.Pipe(duplex=False)

    def close():
        r.close()
        w.close()
    return (r, w), close


def _extra(r):
    extra = 0
    while r.poll(0.05):
        r.recv_bytes()
        extra += 1
    return extra


def produce_records(params, ready, go, chan):
    _, w = chan
    n, rb = params["n"], params["record_bytes"]
    pad = b"x" * (rb - 8)
    send = w.send_bytes
    t0 = wait_go(ready, go)
    for i in range(n):
        send(i.to_bytes(8, "little") + pad)
    t_done = now_ns(MONO)
    return {"t_start": t0, "t_done": t_done}


def consume_records(params, ready, go, chan):
    r, _ = chan
    n = params["n"]
    ck = Checker()
    recv = r.recv_bytes
    wait_go(ready, go)
    while ck.expected < n:
        v = recv()
        seq = int.from_bytes(v[:8], "little")
        if seq != ck.expected:
            ck.gap(seq)
        ck.nbytes += len(v)
        ck.expected += 1
    t_last = now_ns(MONO)
    return ck.result(t_last, _extra(r))


def produce_latency(params, ready, go, chan):
    _, w = chan
    n = params["n"]
    precise_sleep()
    pad = b"x" * (params["record_bytes"] - 16)
    pack, send = struct.Struct("<qq").pack, w.send_bytes
    t0 = wait_go(ready, go)
    for i in range(n):
        pace(t0 + i * LATENCY_INTERVAL_NS)
        send(pack(i, now_ns(MONO)) + pad)
    return {"t_start": t0, "t_done": now_ns(MONO)}


def consume_latency(params, ready, go, chan):
    r, _ = chan
    n = params["n"]
    ck = Checker()
    recv = r.recv_bytes
    lat = []
    wait_go(ready, go)
    while ck.expected < n:
        v = recv()
        t = now_ns(MONO)
        ck.timed(v, t, lat)
    t_last = now_ns(MONO)
    return latency_result(ck, lat, t_last, _extra(r))
