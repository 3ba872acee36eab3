"""Helpers shared by bench_core.py and the peer modules: start signal, sequence check, pacing.

They live here (not in bench_core) so that a peer module imported in a `spawn` child uses the
same objects as bench_core's child_main (bench_core runs there as `__mp_main__`)."""
import os
import signal
import struct
import time

from shmlog.cli.benchmark import exit_with_parent  # noqa: F401 (re-exported)
from shmlog.cli.benchmark import precise_timer as precise_sleep  # noqa: F401 (re-exported)

now_ns = time.clock_gettime_ns
MONO = time.CLOCK_MONOTONIC

LATENCY_INTERVAL_NS = 100_000      # 10k records/s
LATENCY_WARMUP = 200               # first records of a latency row not counted in percentiles
STALL_S = 20.0                     # a consumer that sees nothing for this long gives up
SETUP_TIMEOUT_S = 60.0

cpu_at_go = [0.0]


def child_setup(cpu):
    """Common start of every child: Ctrl-C is the parent's business, pin, die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})   # before any thread starts, so threads inherit it
    exit_with_parent()


def pace(target):
    """Sleep (releasing the GIL) until CLOCK_MONOTONIC >= target."""
    rem = target - now_ns(MONO)
    if rem > 0:
        time.sleep(rem / 1e9)


def wait_go(ready, go):
    ready.set()
    if not go.wait(SETUP_TIMEOUT_S):
        raise RuntimeError("no start signal from the parent")
    cpu_at_go[0] = time.process_time()   # this process's CPU (all threads) from the start on
    return now_ns(MONO)


class Checker:
    """Counts records and checks offsets (or sequence numbers) are exactly 0, 1, 2, ..."""

    __slots__ = ("expected", "gaps", "first_gap", "nbytes")

    def __init__(self):
        self.expected = self.gaps = self.nbytes = 0
        self.first_gap = None

    def gap(self, got):
        self.gaps += 1
        if self.first_gap is None:
            self.first_gap = (self.expected, int(got))
        self.expected = int(got)

    _unpack_timed = struct.Struct("<qq").unpack_from

    def timed(self, value, arrived_ns, latencies_ns):
        """A latency record (sequence number, CLOCK_MONOTONIC send time) arrived at arrived_ns:
        check its sequence number and log its one-way latency."""
        seq, sent = self._unpack_timed(value)
        latencies_ns.append(arrived_ns - sent)
        if seq != self.expected:
            self.gap(seq)
        self.nbytes += len(value)
        self.expected += 1

    def result(self, t_last, extra=0):
        return {"count": self.expected,
                "gaps": self.gaps, "first_gap": self.first_gap, "extra": extra, "nbytes": self.nbytes,
                "t_last": t_last}


def latency_result(ck, lat, t_last, extra):
    out = ck.result(t_last, extra)
    out["latency_ns"] = lat[LATENCY_WARMUP:] if len(lat) > 2 * LATENCY_WARMUP else lat
    return out


def pdeathsig_preexec():
    """preexec_fn for helper servers: own session (no terminal Ctrl-C), SIGTERM when we die."""
    os.setsid()
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:
        pass
