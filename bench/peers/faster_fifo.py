"""faster-fifo Queue: put() / get() one record per call (its pickling default, like mp.Queue)."""
import queue as queue_mod
import struct

from peers._common import (
    LATENCY_INTERVAL_NS,
    MONO,
    STALL_S,
    Checker,
    latency_result,
    now_ns,
    pace,
    precise_sleep,
    wait_go,
)

NAME = "faster-fifo"
WORKLOADS = ("records", "latency")
MAX_SIZE_BYTES = 64 * 1024 * 1024


def available():
    try:
        import faster_fifo  # noqa: F401
    except ImportError:
        return "faster-fifo is not installed (pip install faster-fifo)"
    return None


def open_channel(ctx, row, workdir):
    import faster_fifo
    q = faster_fifo.Queue(max_size_bytes=MAX_SIZE_BYTES)

    def close():
        q.close()
    return q, close


def _put(q, v):
    while True:
        try:
            q.put(v, timeout=STALL_S)
            return
        except queue_mod.Full:
            continue


def _extra(q):
    extra = 0
    try:
        while True:
            q.get(timeout=0.05)
            extra += 1
    except queue_mod.Empty:
        pass
    return extra


def produce_records(params, ready, go, q):
    n, rb = params["n"], params["record_bytes"]
    pad = b"x" * (rb - 8)
    put = q.put
    t0 = wait_go(ready, go)
    for i in range(n):
        v = i.to_bytes(8, "little") + pad
        try:
            put(v, timeout=STALL_S)
        except queue_mod.Full:
            _put(q, v)
    return {"t_start": t0, "t_done": now_ns(MONO)}


def consume_records(params, ready, go, q):
    n = params["n"]
    ck = Checker()
    get = q.get
    wait_go(ready, go)
    try:
        while ck.expected < n:
            v = get(timeout=STALL_S)
            seq = int.from_bytes(v[:8], "little")
            if seq != ck.expected:
                ck.gap(seq)
            ck.nbytes += len(v)
            ck.expected += 1
    except queue_mod.Empty:
        pass
    t_last = now_ns(MONO)
    return ck.result(t_last, _extra(q))


def produce_latency(params, ready, go, q):
    n = params["n"]
    precise_sleep()
    pad = b"x" * (params["record_bytes"] - 16)
    pack = struct.Struct("<qq").pack
    t0 = wait_go(ready, go)
    for i in range(n):
        pace(t0 + i * LATENCY_INTERVAL_NS)
        _put(q, pack(i, now_ns(MONO)) + pad)
    return {"t_start": t0, "t_done": now_ns(MONO)}


def consume_latency(params, ready, go, q):
    n = params["n"]
    ck = Checker()
    get = q.get
    lat = []
    wait_go(ready, go)
    try:
        while ck.expected < n:
            v = get(timeout=STALL_S)
            t = now_ns(MONO)
            ck.timed(v, t, lat)
    except queue_mod.Empty:
        pass
    t_last = now_ns(MONO)
    return latency_result(ck, lat, t_last, _extra(q))
