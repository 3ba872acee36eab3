"""Peers for bench_core.py: the same workloads over other local IPC mechanisms, in the same run.

One module per peer. Each module has:

    NAME                     label in the table
    WORKLOADS                the row kinds it runs: "records" (per-record 100 B / 2 KB),
                             "latency" (100 B paced at 10k/s), "batch" (batch 100 B / 2 KB)
    available() -> str|None  None, or why the peer cannot run here (package or binary missing)
    VARIANTS                 optional: [(label, opts), ...] when one module gives several rows
    open_channel(ctx, row, workdir) -> (chan, close)
                             in the parent, per row: whatever both children need (picklable,
                             passed as a Process argument) and a function that frees it again
    produce_<kind>(params, ready, go, chan) -> {"t_start", "t_done"}
    consume_<kind>(params, ready, go, chan) -> Checker.result(...)   (see _common.py)

bench_core.py runs the producer and the consumer in separate `spawn` processes pinned to
different cores, exactly as for shmlog and multiprocessing.Queue.
"""
import importlib

ALL = ["pipe", "zmq_ipc", "faster_fifo", "c_ring", "redis_streams"]
ALIASES = {"zmq": "zmq_ipc", "pyzmq": "zmq_ipc", "redis": "redis_streams", "ffifo": "faster_fifo",
           "fifo": "faster_fifo", "cring": "c_ring", "ring": "c_ring", "mp.pipe": "pipe"}


def load(name):
    return importlib.import_module(f"peers.{name}")


def variants(mod):
    return getattr(mod, "VARIANTS", [(mod.NAME, {})])
