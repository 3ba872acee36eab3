"""Redis Streams on a local redis-server (Debian's package), started by the bench for each row on
a unix socket in the run's temp dir: once with persistence off, once with appendonly yes +
appendfsync everysec. Producer: XADD, pipelined (per-record rows: PIPELINE records per round
trip) or one per call (latency row). Consumer: XREAD BLOCK, up to 1000 entries per call."""
import os
import shutil
import struct
import subprocess
import time

from peers._common import (
    LATENCY_INTERVAL_NS,
    MONO,
    STALL_S,
    Checker,
    latency_result,
    now_ns,
    pace,
    pdeathsig_preexec,
    precise_sleep,
    wait_go,
)

NAME = "redis"
WORKLOADS = ("records", "latency", "fsync")
# "fsync" is bench_core's "acks=all fsync 2 KB" row: only the append-only-file variant runs it.
VARIANTS = [("redis streams", {"aof": False, "only": ("records", "latency")}),
            ("redis streams aof everysec", {"aof": True})]
STREAM = "bench"
PIPELINE = 1000          # XADDs per pipeline round trip
READ_COUNT = 1000        # entries per XREAD
_seq = [0]
_servers = {}            # pid -> Popen, servers started and not yet stopped (parent)


def available():
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis Python package is not installed (pip install redis)"
    if not shutil.which("redis-server"):
        return "redis-server not found (Debian: apt-get install -y redis-server)"
    import tempfile
    try:                       # can it start here? (one throw-away server on a unix socket)
        with tempfile.TemporaryDirectory(prefix="shmlog-bench-redis-probe-") as d:
            _, close = open_channel(None, {"opts": {}}, d)
            close()
    except Exception as exc:
        return str(exc).strip()[:300]
    return None


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    _servers.pop(proc.pid, None)


def stop_all():
    for proc in list(_servers.values()):
        _stop(proc)


def open_channel(ctx, row, workdir):
    import redis
    _seq[0] += 1
    d = os.path.join(workdir, f"redis-{_seq[0]}")
    os.mkdir(d)
    sock = os.path.join(d, "redis.sock")
    aof = row.get("opts", {}).get("aof", False)
    cmd = ["redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d,
           "--save", "", "--daemonize", "no", "--logfile", os.path.join(d, "redis.log"),
           "--appendonly", "yes" if aof else "no"]
    if aof:
        cmd += ["--appendfsync", "everysec"]
    with open(os.path.join(d, "stderr.log"), "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, preexec_fn=pdeathsig_preexec)
    _servers[proc.pid] = proc

    def close():
        _stop(proc)
        shutil.rmtree(d, ignore_errors=True)

    deadline = time.monotonic() + 10
    while True:
        try:
            if redis.Redis(unix_socket_path=sock).ping():
                break
        except (redis.ConnectionError, FileNotFoundError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log = ""
            for name in ("stderr.log", "redis.log"):
                try:
                    with open(os.path.join(d, name)) as f:
                        log += f.read()[-300:].strip() + " "
                except OSError:
                    pass
            code = proc.poll()
            close()
            raise RuntimeError(f"redis-server did not start (exit code {code}): {log.strip()}")
        time.sleep(0.02)
    return sock, close


def _client(sock):
    import redis
    return redis.Redis(unix_socket_path=sock, socket_timeout=STALL_S + 5)


def _read_all(r, params, on_value):
    """XREAD from the start until n entries arrived or nothing came for STALL_S; then look for extras."""
    n = params["n"]
    last = "0-0"
    got = 0
    block_ms = int(STALL_S * 1000)
    while got < n:
        resp = r.xread({STREAM: last}, count=READ_COUNT, block=block_ms)
        if not resp:
            break
        entries = resp[0][1]
        for _id, fields in entries:
            on_value(fields[b"v"])
        got += len(entries)
        last = entries[-1][0]
    t_last = now_ns(MONO)
    resp = r.xread({STREAM: last}, count=READ_COUNT, block=50)
    extra = len(resp[0][1]) if resp else 0
    return t_last, extra


def produce_records(params, ready, go, sock):
    n, rb = params["n"], params["record_bytes"]
    r = _client(sock)
    r.ping()
    pad = b"x" * (rb - 8)
    pipe = r.pipeline(transaction=False)
    t0 = wait_go(ready, go)
    for start in range(0, n, PIPELINE):
        for i in range(start, min(n, start + PIPELINE)):
            pipe.xadd(STREAM, {"v": i.to_bytes(8, "little") + pad})
        pipe.execute()
    t_done = now_ns(MONO)
    r.close()
    return {"t_start": t0, "t_done": t_done}


def consume_records(params, ready, go, sock):
    r = _client(sock)
    r.ping()
    ck = Checker()

    def on_value(v):
        seq = int.from_bytes(v[:8], "little")
        if seq != ck.expected:
            ck.gap(seq)
        ck.nbytes += len(v)
        ck.expected += 1

    wait_go(ready, go)
    t_last, extra = _read_all(r, params, on_value)
    r.close()
    return ck.result(t_last, extra)


def produce_fsync(params, ready, go, sock):
    """The acks=all row: the same pipelined XADDs, against the server with appendonly yes +
    appendfsync everysec (a reply means the entry is in the AOF buffer; the fsync follows
    within a second, in a background thread)."""
    return produce_records(params, ready, go, sock)


def consume_fsync(params, ready, go, sock):
    return consume_records(params, ready, go, sock)


def produce_latency(params, ready, go, sock):
    n = params["n"]
    precise_sleep()
    r = _client(sock)
    r.ping()
    pad = b"x" * (params["record_bytes"] - 16)
    pack, xadd = struct.Struct("<qq").pack, r.xadd
    t0 = wait_go(ready, go)
    for i in range(n):
        pace(t0 + i * LATENCY_INTERVAL_NS)
        xadd(STREAM, {"v": pack(i, now_ns(MONO)) + pad})
    t_done = now_ns(MONO)
    r.close()
    return {"t_start": t0, "t_done": t_done}


def consume_latency(params, ready, go, sock):
    r = _client(sock)
    r.ping()
    ck = Checker()
    lat = []

    def on_value(v):
        t = now_ns(MONO)
        ck.timed(v, t, lat)

    wait_go(ready, go)
    t_last, extra = _read_all(r, params, on_value)
    r.close()
    return latency_result(ck, lat, t_last, extra)
