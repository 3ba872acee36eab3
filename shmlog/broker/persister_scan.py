"""Which partitions the persister looks at in a round: work proportional to the *active* ones.

A broker with 10,000 idle partitions must not cost the persister a Python call per partition
per round. The persister keeps an active set; a partition is in it while it has something to
do (see `quiet`), and otherwise it is found again by:
  - one C pass over every ring header (shmlog_rings_moved, csrc/core/scan.c): its tail moved
    past the persister's cursor, an acks=all or space waiter, or a flush request above the
    flushed offset;
  - its doorbell watch bit: an idle ring keeps the persister's watch bit set, so the first
    publish into it wakes the persister (an active ring's bit is cleared: while records flow the
    persister runs on its timer, and producers do not pay a futex wake per publish). Before it
    sleeps the persister looks for a publish that rang while it was awake (`idle_moved`): over
    every ring only when its doorbell sequence moved since the last look, else over the rings
    whose watch bit went up since then;
  - retention, on a timer of its own (the soonest `retention_due` of all partitions, so the
    full pass over them runs once per log.retention.check.interval.ms).
"""
from shmlog._native import ffi, lib

INT64_MAX = 2**63 - 1
# While some partitions are active (records flow: a round every 5 ms) the pass over every ring
# runs at most this often: a publish into an idle ring also wakes us through its watch bit, and
# the pass is only how we learn which ring (10,000 headers take a millisecond or two).
MIN_SCAN_INTERVAL_S = 0.02
# A partition leaves the active set only after it has been quiet this long: a producer that
# publishes a batch every few hundred microseconds would otherwise make every round end with it
# quiet, its watch bit up, and the next publish wake us again (a wake-up per batch).
QUIET_GRACE_S = 0.05


def quiet(part, now):
    """Nothing for the persister to do in `part` until its ring moves (the scan sees that)."""
    if part.failed:
        return True
    if now < part.retry_at or part.rewrite_from is not None:
        return False
    if part.ring.header.replication.replica_count > 1:
        return False   # followers' fsynced words move its high watermark: looked at every round
    unflushed = part.writer.log_end_offset > part.flushed
    if unflushed and (part.flush_ms < INT64_MAX or part.flush_messages < INT64_MAX
                      or part.persist.flush_requested_offset > part.flushed):
        return False   # flush.ms / flush.messages, or a pipelined acks=all request, will fdatasync it
    return part.cursor.position == part.ring.header.claim.tail_position


class ActiveSet:
    """The persister's partitions: all of them, as C arrays for the scan, and the active ones."""

    def __init__(self):
        self.parts = []
        self.active = set()
        self.quiet_since = {}   # active partition -> when it was first seen quiet
        self.slot = -1
        self._rings = self._cursors = self._out = None
        self.next_retention = 0.0
        self.last_scan = float("-inf")
        self.looked_seq = None  # doorbell sequence read before the last look whose finds were taken up
        self.fresh = []         # partitions whose watch bit went up since then

    def reset(self, parts, slot):
        """The partitions changed (metadata refresh, a doorbell slot): every one is looked at
        once more, and the idle ones' watch bits are set again for `slot`."""
        self.parts = list(parts)
        self.slot = slot
        n = len(self.parts)
        self._rings = ffi.new("shmlog_ring_handle *[]", [p.ring.map for p in self.parts] or 1)
        self._cursors = ffi.new("shmlog_cursor *[]", [p.cursor for p in self.parts] or 1)
        self._out = ffi.new("uint32_t[]", max(n, 1))
        self.active = set(self.parts)
        self.quiet_since = {}
        self.next_retention = 0.0
        self.looked_seq, self.fresh = None, []
        for part in self.parts:
            self.watch(part, False)

    def watch(self, part, on):
        if self.slot >= 0:
            lib.shmlog_doorbell_watch(part.ring.map, self.slot, 1 if on else 0)

    def moved(self, parts=None):
        """The partitions (of `parts`, by default all) whose rings say there is something to do
        (one C pass)."""
        if parts is None:
            parts, rings, cursors, out = self.parts, self._rings, self._cursors, self._out
        else:
            rings = ffi.new("shmlog_ring_handle *[]", [p.ring.map for p in parts] or 1)
            cursors = ffi.new("shmlog_cursor *[]", [p.cursor for p in parts] or 1)
            out = ffi.new("uint32_t[]", max(len(parts), 1))
        if not parts:
            return []
        n = lib.shmlog_rings_moved(rings, cursors, len(parts), out)
        return [parts[out[i]] for i in range(n)]

    def look(self, seq):
        """The idle partitions that moved, looked for after reading the doorbell sequence `seq`.
        A publish into a watched ring rings the doorbell, so if nothing rang since the last look
        only the rings watched since then can hold a publish that rang nobody (it came before
        their watch bit went up); otherwise every ring is looked at."""
        fresh, self.fresh = self.fresh, []
        return self.moved(fresh) if seq is not None and seq == self.looked_seq else self.moved()

    def idle_moved(self, seq):
        """`look`, before the persister sleeps on `seq`: what it finds stays idle, so the next
        look is a whole one."""
        found = self.look(seq)
        self.looked_seq = None if found else seq
        return found

    def due(self, now, seq=None):
        """The partitions to pump this round: the active ones and those the scan finds moved.
        seq: the doorbell sequence, read before (None: no doorbell slot, every ring is looked at)."""
        if self.active and now - self.last_scan < MIN_SCAN_INTERVAL_S:
            return list(self.active)
        self.last_scan = now
        found = self.look(seq)
        self.looked_seq = seq   # what it found is active now
        for part in found:
            if part not in self.active and not part.failed:
                self.active.add(part)
                self.watch(part, False)   # records flow: the timer drives it, not each publish
        return list(self.active)

    def settle(self, now):
        """Drop the partitions that stayed quiet for QUIET_GRACE_S; their watch bits go up so a
        publish wakes us."""
        for part in list(self.active):
            if not quiet(part, now):
                self.quiet_since.pop(part, None)
                continue
            since = self.quiet_since.setdefault(part, now)
            if part.failed or now - since >= QUIET_GRACE_S:
                self.quiet_since.pop(part, None)
                self.active.discard(part)
                self.watch(part, not part.failed)   # a failed log dir's ring is nothing for us to do
                if not part.failed:
                    self.fresh.append(part)

    def retention_due(self, now):
        """All partitions once the soonest retention check is due, else none."""
        if now < self.next_retention:
            return []
        return self.parts

    def retention_done(self):
        self.next_retention = min((p.retention_due for p in self.parts), default=float("inf"))

    def forget(self, parts):
        """Stopping, or the doorbell changed: clear our watch bits on `parts` (those still
        open; a closed one's ring is unmapped), and look at nothing until the next reset."""
        for part in parts:
            self.watch(part, False)
        self.parts, self.active, self.quiet_since = [], set(), {}
        self.looked_seq, self.fresh = None, []
        self._rings = self._cursors = self._out = None
