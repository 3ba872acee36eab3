"""Wait strategies for a consumer with nothing to read: a policy beside the read loop.

The consumer calls `wait(readers, timeout_s)` after a fetch found nothing; it returns when a
reader may have something (or the timeout passed) and the consumer fetches again.

BlockingWait spins briefly, then sleeps on the consumer's doorbell futex (woken by the
publishing producer). A futex wake-up costs tens of microseconds on a VM, a spin that sees
the record a fraction of one, so while records keep coming within spin_max_ns of a wait
starting the spin is adaptive, and bounded by a CPU share (spin_share of the wall time,
kept as a budget that refills with time and that each spin spends):

- the gap from a wait's start to the record that ended it is tracked (a moving average);
- when the budget covers spinning through that gap (fast streams), the wait spins up to
  1.5x the gap before sleeping;
- when it does not (a stream too slow to spin through at that share, e.g. 10k records/s at
  25 %), the wait sleeps first, on the futex with a timeout, until shortly before the record
  is due, and spins only the last stretch (what the budget allows per gap); a record that
  comes early wakes it through the futex as before. The calling thread's timer slack is set
  to 1 us for this (prctl PR_SET_TIMERSLACK), and the timed sleep is asked to end earlier by
  how late such sleeps ended here (a moving average: 20-30 us on a VM, where a sleep that
  ends as late as that finds the record already there and pays the futex wake-up);
- records further apart than spin_max_ns, or none at all, are waited for asleep (an idle
  consumer sleeps in 100 ms slices and spins nothing worth mentioning).

BusySpinWait spins without sleeping, for the lowest latency at the cost of a core.

Both spin in C (shmlog_wait_any: one load of a publish mark per ring and a `pause` per
iteration, the GIL released), not in Python, and only watch the rings (set their doorbell bit,
which makes a publishing producer issue a futex wake) for the sleeping part.
"""
import os
import time
import weakref

from shmlog._native import ffi, lib

MAX_SLEEP_NS = 100_000_000  # stuck claims and metadata changes are re-checked this often
SPIN_MIN_NS = 5_000         # what BlockingWait spins before sleeping when nothing suggests more
SPIN_MAX_NS = 200_000       # records further apart than this are waited for asleep
SPIN_MARGIN_NS = 20_000
SPIN_SHARE = 0.25           # at most this share of the wall time spent spinning (BlockingWait)
SPIN_BUDGET_MAX_NS = 1_000_000  # unspent budget kept for a burst after a quiet spell
PRESLEEP_MIN_NS = 60_000    # a timed sleep shorter than this ends too late to be worth taking
GAP_WEIGHT = 4              # moving averages (gap, timer lateness): each new value counts 1/GAP_WEIGHT
TIMER_SLACK_NS = 1_000
PR_SET_TIMERSLACK = 29


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


def _release_slot(doorbell, slot, pid):
    if os.getpid() == pid:   # a forked child's copy of the consumer holds no slot of its own
        doorbell.release(slot)


class BlockingWait:
    def __init__(self, doorbell, spin_min_ns=SPIN_MIN_NS, spin_max_ns=SPIN_MAX_NS, spin_share=SPIN_SHARE):
        self.doorbell = doorbell
        self.slot = doorbell.acquire()
        # A consumer dropped without close() gives its slot back when it is collected.
        self._release_slot = weakref.finalize(self, _release_slot, doorbell, self.slot, os.getpid())
        self.spin_min_ns, self.spin_max_ns, self.spin_share = spin_min_ns, spin_max_ns, spin_share
        self.spin_ns = spin_min_ns     # the spin of the last fast wait, for those without a doorbell slot
        self.gap_ns = None             # moving average of wait start -> record, while records come
        self.budget_ns = 0             # spin time the share allows now
        self.refilled_ns = time.monotonic_ns()
        self.spun_ns = 0               # total spin time spent (tests and statistics)
        self.timer_late_ns = 0         # moving average of how much later than asked a timed sleep ended
        self._slack_set = False
        self._rings = _Rings()

    def _refill(self, now):
        self.budget_ns = min(SPIN_BUDGET_MAX_NS,
                             self.budget_ns + int((now - self.refilled_ns) * self.spin_share))
        self.refilled_ns = now

    def _spent(self, ns):
        self.budget_ns -= ns
        self.spun_ns += ns

    def _note_gap(self, rc, waited):
        if rc != lib.SHMLOG_WAIT_TIMEOUT and waited <= self.spin_max_ns:
            g = self.gap_ns
            self.gap_ns = waited if g is None else g + (waited - g) // GAP_WEIGHT
        else:
            self.gap_ns = None     # records further apart than the cap, or none at all

    def _precise_timers(self):
        if not self._slack_set:
            self._slack_set = True
            try:
                import ctypes
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)
            except (OSError, AttributeError):
                pass   # the default 50 us slack: pre-sleeps end later, the futex wake still comes

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
                time.sleep(min(timeout_ns / 1e9, 0.001))
            return
        now = time.monotonic_ns()
        self._refill(now)
        gap = self.gap_ns
        bell, slot = self.doorbell.ptr, self.slot
        if gap is None:
            spin = min(self.spin_min_ns, max(self.budget_ns, 0))
            rc = lib.shmlog_wait_any(bell, slot, rings.rings, rings.cursors, rings.n, spin, timeout_ns, rings.waited)
            waited = rings.waited[0]
            self._spent(min(spin, waited))
            self._note_gap(rc, waited)
            return
        want = gap + gap // 2 + SPIN_MARGIN_NS
        if want <= self.budget_ns or gap < PRESLEEP_MIN_NS:
            # Spin through the gap (a fast stream; or too short a gap to sleep through at all):
            # what the budget allows, then the futex.
            spin = min(want, max(self.budget_ns, 0))
            self.spin_ns = spin
            rc = lib.shmlog_wait_any(bell, slot, rings.rings, rings.cursors, rings.n, spin, timeout_ns, rings.waited)
            waited = rings.waited[0]
            self._spent(min(spin, waited))
            self._note_gap(rc, waited)
            return
        # Too slow a stream to spin through at this share: sleep until shortly before the
        # record is due, spin the rest. Spinning from `gap - window` to `gap + window` costs
        # 2 * window per gap, and the share allows share * gap.
        self._precise_timers()
        window = max(self.spin_min_ns, int(gap * self.spin_share) // 2)
        presleep = min(max(gap - window - self.timer_late_ns, 0), timeout_ns)
        rc = lib.shmlog_wait_any(bell, slot, rings.rings, rings.cursors, rings.n, 0, presleep, rings.waited)
        slept = rings.waited[0]
        if rc == lib.SHMLOG_WAIT_TIMEOUT:
            late = min(max(slept - presleep, 0), gap // 2)   # one descheduling must not make it skip the sleep
            self.timer_late_ns += (late - self.timer_late_ns) // GAP_WEIGHT
        if rc != lib.SHMLOG_WAIT_TIMEOUT or slept >= timeout_ns:
            self._note_gap(rc, slept)
            return
        spin = min(2 * window, max(self.budget_ns, 0))
        rc = lib.shmlog_wait_any(bell, slot, rings.rings, rings.cursors, rings.n, spin, timeout_ns - slept,
                                 rings.waited)
        waited = rings.waited[0]
        self._spent(min(spin, waited))
        self._note_gap(rc, slept + waited)

    def close(self):
        self._release_slot()
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
