"""Plain C single-producer single-consumer shared-memory ring (c_ring.c), compiled with cc at
run time into the run's temp dir and driven through ctypes: the physical-limit reference for
the batch rows. Producer and consumer each make one ctypes call that runs the whole row in C."""
import ctypes
import os
import shutil
import subprocess
import time

from peers._common import MONO, STALL_S, now_ns, wait_go

NAME = "C ring"
WORKLOADS = ("batch",)
RING_CAP_SLOTS = 1 << 13           # slots in the ring (8192): 0.9 MiB at 100 B, 16.1 MiB at 2 KB
RECORDS_FACTOR = 10                # rows run 10x shmlog's batch record count, so a row lasts milliseconds
BATCH = 1024                       # at most this many records per head publish (an eighth of the ring)
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c_ring.c")
_built = {}
_seq = [0]
_live = set()                      # shm names created and not yet unlinked (parent)


def available():
    if not shutil.which("cc"):
        return "no C compiler (cc) on PATH"
    return None


def _slot(rb):
    return 8 + ((rb + 7) & ~7)


def _build(workdir):
    so = _built.get(workdir)
    if so is None:
        so = os.path.join(workdir, "c_ring.so")
        proc = subprocess.run(["cc", "-O2", "-march=native", "-shared", "-fPIC", "-o", so, SRC, "-lrt"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"cc failed: {proc.stderr.strip()[:400]}")
        _built[workdir] = so
    return so


def _lib(so):
    lib = ctypes.CDLL(so)
    u64, u32, vp, cp = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_char_p
    lib.ring_create.argtypes, lib.ring_create.restype = [cp, u64], ctypes.c_int
    lib.ring_unlink.argtypes, lib.ring_unlink.restype = [cp], ctypes.c_int
    lib.ring_attach.argtypes, lib.ring_attach.restype = [cp, u64], vp
    lib.ring_detach.argtypes, lib.ring_detach.restype = [vp, u64], None
    lib.ring_pending.argtypes, lib.ring_pending.restype = [vp], u64
    lib.ring_produce.argtypes, lib.ring_produce.restype = [vp, u64, u32, u32, u64], u64
    p64 = ctypes.POINTER(u64)
    lib.ring_consume.argtypes, lib.ring_consume.restype = [vp, u64, u32, u64, p64, p64, p64], u64
    return lib


def open_channel(ctx, row, workdir):
    so = _build(workdir)
    lib = _lib(so)
    _seq[0] += 1
    name = f"/shmlog-bench-cring-{os.getpid()}-{_seq[0]}"
    cap = RING_CAP_SLOTS * _slot(row["record_bytes"])
    rc = lib.ring_create(name.encode(), cap)
    if rc != 0:
        raise RuntimeError(f"ring_create({name}) failed: {rc}")
    _live.add(name)

    def close():
        lib.ring_unlink(name.encode())
        _live.discard(name)
    return {"so": so, "name": name, "cap": cap}, close


def leftovers():
    """This process's ring objects still in /dev/shm."""
    prefix = f"shmlog-bench-cring-{os.getpid()}-"
    try:
        return [f for f in os.listdir("/dev/shm") if f.startswith(prefix)]
    except OSError:
        return []


def _attach(chan):
    lib = _lib(chan["so"])
    p = lib.ring_attach(chan["name"].encode(), chan["cap"])
    if not p:
        raise RuntimeError(f"ring_attach({chan['name']}) failed")
    return lib, p


def produce_batch(params, ready, go, chan):
    lib, p = _attach(chan)
    t0 = wait_go(ready, go)
    done = lib.ring_produce(p, params["n"], params["record_bytes"], BATCH, int(STALL_S * 1e9))
    t_done = now_ns(MONO)
    lib.ring_detach(p, chan["cap"])
    if done != params["n"]:
        raise RuntimeError(f"producer stalled after {done} records")
    return {"t_start": t0, "t_done": t_done}


def consume_batch(params, ready, go, chan):
    lib, p = _attach(chan)
    nbytes, gaps, first = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_uint64()
    wait_go(ready, go)
    count = lib.ring_consume(p, params["n"], params["record_bytes"], int(STALL_S * 1e9),
                             ctypes.byref(nbytes), ctypes.byref(gaps), ctypes.byref(first))
    t_last = now_ns(MONO)
    time.sleep(0.05)                 # anything beyond n is an error too: look briefly for more
    extra = lib.ring_pending(p) // (8 + ((params["record_bytes"] + 7) & ~7))
    lib.ring_detach(p, chan["cap"])
    return {"count": count, "gaps": gaps.value,
            "first_gap": None if not gaps.value else (first.value, None),
            "extra": extra, "nbytes": nbytes.value, "t_last": t_last}
