"""Wait strategies for a consumer with nothing to read: a policy beside the read loop.

The consumer calls `wait(readers, timeout_s)` after a fetch found nothing; it returns when a
reader may have something (or the timeout passed) and the consumer fetches again.

BlockingWait spins briefly, then sleeps on the consumer's doorbell futex (woken by the
publishing producer). The spin is adaptive: it starts short and grows to cover the gap between
records while they keep coming within SPIN_MAX_NS of a wait starting (a futex wake-up costs
tens of microseconds on a VM, a spin that sees the record a fraction of one); it shrinks again
when the records stop, so an idle consumer does not spin at all worth mentioning (it sleeps
in 100 ms slices). BusySpinWait spins without sleeping, for the lowest latency at the cost of
a core.

Both spin in C (shmlog_wait_any: one load of a publish mark per ring and a `pause` per
iteration, the GIL released), not in Python, and only watch the rings (set their doorbell bit,
which makes a publishing producer issue a futex wake) for the sleeping part.
"""
from shmlog._native import ffi, lib

MAX_SLEEP_NS = 100_000_000  # stuck claims and metadata changes are re-checked this often
SPIN_MIN_NS = 5_000         # what BlockingWait spins before sleeping when nothing suggests more
SPIN_MAX_NS = 200_000       # records further apart than this are waited for asleep
SPIN_MARGIN_NS = 20_000


class _Rings:
    """The C arrays (ring handles, cursors) for a list of readers, rebuilt when the list changes."""

    __slots__ = ("readers", "rings", "cursors", "n", "waited")

    def __init__(self):
        self.readers = None
        self.waited = ffi.new("int64_t *")

    def prepare(self, readers):
        """False if a reader has something without looking at the rings (decoded records
        pending, or it reads from the segment files); else the arrays are ready."""
        for r in readers:
            if r.pending or not r.on_ring:
                return False
        if readers != self.readers:   # identity of the readers; the list keeps them alive
            self.rings = ffi.new("shmlog_ring_handle *[]", [r.ring.map for r in readers])
            self.cursors = ffi.new("shmlog_cursor *[]", [r.cursor for r in readers])
            self.n = len(readers)
            self.readers = list(readers)
        return True


class BlockingWait:
    def __init__(self, doorbell, spin_min_ns=SPIN_MIN_NS, spin_max_ns=SPIN_MAX_NS):
        self.doorbell = doorbell
        self.slot = doorbell.acquire()
        self.spin_min_ns, self.spin_max_ns = spin_min_ns, spin_max_ns
        self.spin_ns = spin_min_ns
        self._rings = _Rings()

    def wait(self, readers, timeout_s):
        if timeout_s <= 0:
            return
        timeout_ns = min(int(timeout_s * 1e9), MAX_SLEEP_NS)
        rings = self._rings
        if not rings.prepare(readers):
            return
        if self.slot < 0:   # no doorbell slot: spin, then poll every millisecond
            rc = lib.shmlog_wait_any(ffi.NULL, -1, rings.rings, rings.cursors, rings.n, self.spin_ns,
                                     self.spin_ns, rings.waited)
            if rc == lib.SHMLOG_WAIT_TIMEOUT:
                import time
                time.sleep(min(timeout_ns / 1e9, 0.001))
            return
        spin = self.spin_ns
        rc = lib.shmlog_wait_any(self.doorbell.ptr, self.slot, rings.rings, rings.cursors, rings.n, spin,
                                 timeout_ns, rings.waited)
        waited = rings.waited[0]
        if rc == lib.SHMLOG_WAIT_SPUN:
            return
        if rc == lib.SHMLOG_WAIT_WOKEN and waited <= self.spin_max_ns:
            # The record came soon after we gave up spinning: spin long enough next time.
            self.spin_ns = min(self.spin_max_ns, max(spin, waited + waited // 2 + SPIN_MARGIN_NS))
        else:
            # Records further apart than the cap, or none at all: spinning would not pay.
            self.spin_ns = max(self.spin_min_ns, spin // 2)

    def close(self):
        self.doorbell.release(self.slot)
        self.slot = -1


class BusySpinWait:
    def __init__(self, doorbell):
        self._rings = _Rings()

    def wait(self, readers, timeout_s):
        if timeout_s <= 0:
            return
        rings = self._rings
        if not rings.prepare(readers):
            return
        spin = min(int(timeout_s * 1e9), MAX_SLEEP_NS)
        lib.shmlog_wait_any(ffi.NULL, -1, rings.rings, rings.cursors, rings.n, spin, spin, rings.waited)

    def close(self):
        pass
