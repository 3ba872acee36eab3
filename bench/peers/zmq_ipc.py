"""pyzmq PUSH -> PULL over ipc:// (a unix socket in the run's temp dir), one record per send()."""
import os
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

NAME = "pyzmq ipc"
WORKLOADS = ("records", "latency")
_seq = [0]


def available():
    try:
        import zmq  # noqa: F401
    except ImportError:
        return "pyzmq is not installed (pip install pyzmq)"
    return None


def open_channel(ctx, row, workdir):
    _seq[0] += 1
    path = os.path.join(workdir, f"zmq-{_seq[0]}.ipc")

    def close():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return "ipc://" + path, close


def _push(endpoint):
    import zmq
    zctx = zmq.Context()
    s = zctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 5000)
    s.bind(endpoint)
    return zctx, s


def _pull(endpoint):
    import zmq
    zctx = zmq.Context()
    s = zctx.socket(zmq.PULL)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(STALL_S * 1000))
    s.connect(endpoint)
    return zctx, s


def _extra(s):
    import zmq
    extra = 0
    while s.poll(50, zmq.POLLIN):
        s.recv()
        extra += 1
    return extra


def produce_records(params, ready, go, endpoint):
    n, rb = params["n"], params["record_bytes"]
    zctx, s = _push(endpoint)
    pad = b"x" * (rb - 8)
    send = s.send
    t0 = wait_go(ready, go)
    for i in range(n):
        send(i.to_bytes(8, "little") + pad)
    t_done = now_ns(MONO)
    s.close()            # LINGER: waits until queued messages are handed to the peer
    zctx.term()
    return {"t_start": t0, "t_done": t_done}


def consume_records(params, ready, go, endpoint):
    import zmq
    n = params["n"]
    zctx, s = _pull(endpoint)
    ck = Checker()
    recv = s.recv
    wait_go(ready, go)
    try:
        while ck.expected < n:
            v = recv()
            seq = int.from_bytes(v[:8], "little")
            if seq != ck.expected:
                ck.gap(seq)
            ck.nbytes += len(v)
            ck.expected += 1
    except zmq.Again:        # nothing for STALL_S: report what arrived
        pass
    t_last = now_ns(MONO)
    extra = _extra(s)
    s.close()
    zctx.term()
    return ck.result(t_last, extra)


def produce_latency(params, ready, go, endpoint):
    n = params["n"]
    precise_sleep()
    zctx, s = _push(endpoint)
    pad = b"x" * (params["record_bytes"] - 16)
    pack, send = struct.Struct("<qq").pack, s.send
    t0 = wait_go(ready, go)
    for i in range(n):
        pace(t0 + i * LATENCY_INTERVAL_NS)
        send(pack(i, now_ns(MONO)) + pad)
    t_done = now_ns(MONO)
    s.close()
    zctx.term()
    return {"t_start": t0, "t_done": t_done}


def consume_latency(params, ready, go, endpoint):
    import zmq
    n = params["n"]
    zctx, s = _pull(endpoint)
    ck = Checker()
    recv = s.recv
    lat = []
    wait_go(ready, go)
    try:
        while ck.expected < n:
            v = recv()
            t = now_ns(MONO)
            ck.timed(v, t, lat)
    except zmq.Again:
        pass
    t_last = now_ns(MONO)
    extra = _extra(s)
    s.close()
    zctx.term()
    return latency_result(ck, lat, t_last, extra)
