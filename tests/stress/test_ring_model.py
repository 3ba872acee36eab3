"""A stateful model test of one partition ring against a plain Python list.

Hypothesis drives a real Ring (real shared memory, the real C core) in this process with
random sequences of: appends of random batches, reads through several independent cursors
(copying and zero-copy fetches, small buffers, few frames per call), releases of space (up
to the slowest cursor, or past it so slow cursors get overwritten), persisted-position
publication, dead producers' claims that get repaired, live producers' claims that stall, are
passed (fenced) and later resume, and cursors re-placed with locate().
After every step the ring must agree with the model:

- offsets dense: every appended record gets the next offset; a repaired dead claim's
  offsets are accounted for and never returned;
- every cursor reads exactly the model's records from its offset on, in order;
- an append with timeout 0 fails with "ring full" exactly when the model says the space
  between the tail and release_position + capacity is too small (padding included),
  and a batch larger than the ring fails as too large;
- release_position never moves back, past the tail, or past what release_to was asked;
- a cursor the producers lapped is told so (overwritten), never handed newer bytes;
- release_position never passes a fenced claim whose producer has not resumed, so the bytes
  that producer writes into its records section when it resumes land on no one's records;
  locate() and start() find a cursor exactly when the offset is still in the ring.

SHMLOG_HYPOTHESIS_EXAMPLES (default 150) and SHMLOG_HYPOTHESIS_STEPS (default 80) set the
number of examples and steps per example; raise them for longer runs.

Below the model, deterministic tests build two states the random walk is unlikely to reach
(stale payload of the previous lap at the tail; a dead claim attempt beside a live claim).
"""
import itertools
import os
import struct
import time

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from shmlog._native import ffi, layout, lib, procs
from shmlog._native.ring import STUCK_CLAIM_GRACE_S, Ring
from shmlog._native.shm import unlink
from shmlog.errors import KafkaError, KafkaException

pytestmark = pytest.mark.stress

CAP = 65536
CURSORS = 3
DEAD_PID = 2 ** 22 + 1  # above Linux's largest pid_max: never a live process
_names = itertools.count()


def align(n):
    return (n + layout.FRAME_ALIGN - 1) // layout.FRAME_ALIGN * layout.FRAME_ALIGN


def encode(values):
    lens = ffi.new("int32_t[]", [len(v) for v in values])
    blob = b"".join(values)
    args = (len(values), ffi.NULL, ffi.NULL, blob, lens, ffi.NULL, 0, ffi.NULL, ffi.NULL)
    size = lib.shmlog_records_encode(ffi.NULL, 0, *args)
    out = bytearray(size)
    assert lib.shmlog_records_encode(ffi.from_buffer(out), size, *args) == size
    return out


def frame_bytes(records_bytes):
    return align(layout.FRAME_PREFIX_BYTES + layout.BATCH_HEADER_BYTES + records_bytes)


def values_of(sizes, max_records):
    """Batches of values: a random head (so values differ) and a filler of a chosen size."""
    value = st.tuples(st.binary(max_size=12), sizes).map(lambda t: t[0] + bytes([len(t[0]) + 65]) * t[1])
    return st.lists(value, min_size=1, max_size=max_records)


small_batches = values_of(st.integers(0, 300), 30)
large_batches = values_of(st.one_of(st.integers(2000, 9000), st.integers(20000, 33000)), 3)


class RingModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.ring = None
        self.name = None

    # ------------------------------------------------------------------ model state
    #   frames: [(position, frame_bytes, base_offset, count, values or None)] in ring order;
    #           values None for padding (count 0) and for a repaired dead claim.
    #   tail / next_offset: what the claim word must hold.

    @initialize(start_offset=st.sampled_from([0, 1, 2 ** 40 + 7]))
    def create(self, start_offset):
        self.name = f"/shmlog.model{os.getpid()}.{next(_names)}"
        unlink(self.name)
        self.ring = Ring.create(self.name, CAP, "model", 1, 0, start_offset=start_offset)
        self.slot = self.ring.acquire_producer_slot()
        self.start_offset = start_offset
        self.frames = []
        self.tail = 0
        self.next_offset = start_offset
        self.last_release = 0
        self.stalled = []  # [(slot, owner token, position, frame bytes)]: passed, not yet resumed
        self.cursors = []
        for _ in range(CURSORS):
            cursor = ffi.new("shmlog_cursor *")
            lib.shmlog_ring_start(self.ring.map, cursor)
            assert (cursor.position, cursor.next_offset) == (0, start_offset)
            self.cursors.append(cursor)
        self.dst = bytearray(CAP)
        self.frame_refs = ffi.new("shmlog_frame_ref[]", 64)
        self.record_refs = ffi.new("shmlog_record_ref[]", 4096)

    def teardown(self):
        if self.ring is not None:
            self.ring.close()
        if self.name is not None:
            unlink(self.name)

    # ------------------------------------------------------------------ model helpers

    def release_position(self):
        return self.ring.header.release.release_position

    def fits(self, position, nbytes, release):
        return position + nbytes <= release + CAP

    def intact(self, position):
        return self.tail <= position + CAP

    def expected_records(self, from_offset):
        out = []
        for _, _, base, count, values in self.frames:
            if values is None or base + count <= from_offset:
                continue
            out += [(base + i, v) for i, v in enumerate(values) if base + i >= from_offset]
        return out

    def oldest_intact_data_frame(self):
        """The oldest intact batch that carries records (not padding, not a repaired claim)."""
        for pos, _, base, count, values in self.frames:
            if values is not None and self.intact(pos):
                return pos, base
        return self.tail, self.next_offset

    def frame_holding(self, offset):
        for frame in self.frames:
            if frame[2] <= offset < frame[2] + frame[3]:
                return frame
        return None

    def plan_claim(self, nbytes, release):
        """(padding bytes claimed, whether the frame fits) for a claim of nbytes at the tail."""
        idx = self.tail % CAP
        pad = CAP - idx if idx + nbytes > CAP else 0
        if pad and not self.fits(self.tail, pad, release):
            return 0, False
        return pad, self.fits(self.tail + pad, nbytes, release)

    def note_padding(self, pad):
        if pad:
            self.frames.append((self.tail, pad, self.next_offset, 0, None))
            self.tail += pad

    # ------------------------------------------------------------------ rules

    @rule(values=small_batches)
    def append_small(self, values):
        self.append(values)

    @rule(values=large_batches)
    def append_large(self, values):
        self.append(values)

    @rule(values=large_batches)
    def append_large_again(self, values):  # a second rule doubles the odds: fill and lap the ring
        self.append(values)

    def append(self, values):
        records = encode(values)
        nbytes = frame_bytes(len(records))
        if nbytes > CAP:
            event("append: too large")
            with pytest.raises(KafkaException) as exc:
                self.ring.append(self.slot, ffi.from_buffer(records), len(records), len(values), 0, 0, 0, ffi.NULL)
            assert exc.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
            return
        try:
            base = self.ring.append(self.slot, ffi.from_buffer(records), len(records), len(values), 0, 0, 0,
                                    ffi.NULL)
        except KafkaException as exc:
            assert exc.args[0].code() == KafkaError._MSG_TIMED_OUT and "ring full" in str(exc)
            base = None
        # release_position only grows, and the C core's last look at it is what decided.
        pad, fits = self.plan_claim(nbytes, self.release_position())
        self.note_padding(pad)
        event("append: " + ("padded, " if pad else "") + ("appended" if fits else "ring full"))
        assert (base is not None) == fits, (
            f"append of {nbytes} bytes at tail {self.tail} with release {self.release_position()}: "
            f"{'succeeded' if base is not None else 'refused'}, model says {'fits' if fits else 'full'}")
        if base is None:
            return
        assert base == self.next_offset
        self.frames.append((self.tail, nbytes, base, len(values), list(values)))
        self.tail += nbytes
        self.next_offset += len(values)

    @rule(extra=st.integers(0, 1000))
    def append_too_big(self, extra):
        records = encode([b"z" * (CAP + extra)])
        with pytest.raises(KafkaException) as exc:
            self.ring.append(self.slot, ffi.from_buffer(records), len(records), 1, 0, 0, 0, ffi.NULL)
        assert exc.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE

    @rule(count=st.integers(1, 50), records_bytes=st.integers(0, 2000))
    def dead_claim(self, count, records_bytes):
        """Forge what a producer SIGKILLed after its claim CAS leaves, then repair it."""
        nbytes = frame_bytes(records_bytes)
        if self.tail % CAP + nbytes > CAP or not self.fits(self.tail, nbytes, self.release_position()):
            return
        slot = lib.shmlog_producer_slot_acquire(self.ring.map, DEAD_PID, 1, 99)
        assert slot >= 0
        dead = self.ring.map.producers[slot]
        dead.claim_position, dead.claim_offset = self.tail, self.next_offset
        dead.claim_frame_bytes, dead.claim_record_count = nbytes, count
        dead.state = lib.SHMLOG_SLOT_OWNED
        self.ring.header.claim.tail_position = self.tail + nbytes
        self.ring.header.claim.next_offset = self.next_offset + count
        position = self.tail
        self.frames.append((self.tail, nbytes, self.next_offset, count, None))
        self.tail += nbytes
        self.next_offset += count
        assert not self.ring.has_data(position)
        assert self.ring.repair_if_stuck(position, ffi.NULL)
        assert self.ring.has_data(position)
        assert (dead.state, dead.pid) == (lib.SHMLOG_SLOT_IDLE, 0)

    @rule(count=st.integers(1, 50), records_bytes=st.integers(0, 2000))
    def stalled_claim(self, count, records_bytes):
        """Forge what a live producer stopped after its claim CAS leaves (its slot OWNED since long
        ago), and have a reader pass it: fenced, published as an empty control batch, held."""
        nbytes = frame_bytes(records_bytes)
        if len(self.stalled) >= 3 or self.tail % CAP + nbytes > CAP or \
                not self.fits(self.tail, nbytes, self.release_position()):
            return
        pid, started = procs.me()
        token = 1000 + next(_names)
        slot = lib.shmlog_producer_slot_acquire(self.ring.map, pid, started, token)
        assert slot >= 0
        live = self.ring.map.producers[slot]
        live.claim_position, live.claim_offset = self.tail, self.next_offset
        live.claim_frame_bytes, live.claim_record_count = nbytes, count
        live.claim_unix_ns = 0
        live.state = lib.SHMLOG_SLOT_OWNED
        self.ring.header.claim.tail_position = self.tail + nbytes
        self.ring.header.claim.next_offset = self.next_offset + count
        position = self.tail
        self.frames.append((self.tail, nbytes, self.next_offset, count, None))
        self.tail += nbytes
        self.next_offset += count
        assert self.ring.repair_if_stuck(position, ffi.NULL, claim_timeout_ms=1)
        assert self.ring.has_data(position)
        assert live.state == lib.SHMLOG_SLOT_FENCED
        self.stalled.append((slot, token, position, nbytes))
        event("stalled claim passed")

    @rule(which=st.integers(0, 2), fill=st.integers(0, 255))
    def stalled_producer_resumes(self, which, fill):
        """The stopped producer continues: it copies the rest of its records into its claim (the
        only bytes it may write before its commit CAS), loses the CAS and acknowledges the fence."""
        if not self.stalled:
            return
        slot, token, position, nbytes = self.stalled.pop(which % len(self.stalled))
        records_at = self.ring.data_offset + position % CAP + layout.FRAME_PREFIX_BYTES + layout.BATCH_HEADER_BYTES
        end = self.ring.data_offset + position % CAP + nbytes
        ffi.memmove(ffi.cast("uint8_t *", self.ring.mapping.ptr) + records_at, bytes([fill]) * (end - records_at),
                    end - records_at)
        assert lib.shmlog_producer_slot_unfence(self.ring.map, slot) == 1
        assert lib.shmlog_producer_slot_release(self.ring.map, slot, token) == 0
        event("stalled producer resumed")

    @rule(which=st.integers(0, CURSORS - 1), calls=st.integers(1, 4), max_frames=st.integers(1, 64),
          dst_bytes=st.sampled_from([0, 200, 4096, CAP]))
    def read(self, which, calls, max_frames, dst_bytes):
        """Up to `calls` fetches; dst_bytes 0 is the zero-copy (locate-only) fetch."""
        cursor = self.cursors[which]
        start_offset = cursor.next_offset
        got = []
        for _ in range(calls):
            overwritten = not self.intact(cursor.position)
            dst = ffi.from_buffer(self.dst) if dst_bytes else ffi.NULL
            before = (cursor.position, cursor.next_offset)
            n = self.ring.fetch(cursor, dst, dst_bytes, self.frame_refs, max_frames, 1)
            if overwritten:
                event("read: cursor lapped")
                assert n == lib.SHMLOG_EOVERWRITTEN, f"lapped cursor at {before} got {n}"
                assert (cursor.position, cursor.next_offset) == before
                return
            if n == lib.SHMLOG_ESMALL:
                event("read: buffer too small")
                assert (cursor.position, cursor.next_offset) == before
                assert self.frame_refs[0].batch_bytes > dst_bytes
                break
            assert n >= 0
            for f in self.frame_refs[0:n]:
                base_ptr = ffi.cast("uint8_t *", self.ring.mapping.ptr) + f.map_pos if not dst_bytes else \
                    ffi.from_buffer(self.dst) + f.dst_pos
                k = lib.shmlog_batch_index(base_ptr, f.batch_bytes, self.record_refs, 4096, 1)
                assert k >= 0, f"batch at offset {f.base_offset} fails to decode: {k}"
                raw = ffi.buffer(base_ptr, f.batch_bytes)
                for r in self.record_refs[0:k]:
                    got.append((r.offset, bytes(raw[r.value_pos:r.value_pos + r.value_len])))
            if n == 0:
                break
        stop = cursor.next_offset
        assert got == [(o, v) for o, v in self.expected_records(start_offset) if o < stop]

    @rule(which=st.integers(0, CURSORS - 1))
    def read_to_end(self, which):
        cursor = self.cursors[which]
        if not self.intact(cursor.position):
            return
        start_offset = cursor.next_offset
        self.read(which, 1000, 64, CAP)
        assert (cursor.position, cursor.next_offset) == (self.tail, self.next_offset)
        assert cursor.next_offset >= start_offset

    @rule(which=st.integers(0, CURSORS - 1), back=st.integers(0, 2 ** 16))
    def relocate(self, which, back):
        """Place a cursor with locate(): it must succeed exactly while the offset is in the ring."""
        offset = max(self.start_offset, self.next_offset - back)
        cursor = self.ring.locate(offset)
        holder = self.frame_holding(offset)
        in_ring = offset == self.next_offset or (holder is not None and self.intact(holder[0]))
        if holder is None or holder[4] is not None:  # inside a repaired claim only soundness is promised
            assert (cursor is not None) == in_ring, f"locate({offset}) -> {cursor}, in ring: {in_ring}"
        event(f"locate: {'found' if cursor is not None else 'fell out'}")
        if cursor is None:
            return
        assert in_ring and cursor.next_offset <= offset and self.intact(cursor.position)
        self.cursors[which].position, self.cursors[which].next_offset = cursor.position, cursor.next_offset

    @rule(which=st.integers(0, CURSORS - 1))
    def restart_from_start(self, which):
        lib.shmlog_ring_start(self.ring.map, self.cursors[which])

    @rule(fraction=st.floats(0, 1), past_readers=st.booleans())
    def release_space(self, fraction, past_readers):
        """release_to a frame boundary: at most the slowest intact cursor, or anywhere."""
        limit = self.tail
        if not past_readers:
            limit = min([c.position for c in self.cursors if self.intact(c.position)] + [self.tail])
        boundaries = [0] + [pos + nbytes for pos, nbytes, *_ in self.frames if pos + nbytes <= limit]
        target = boundaries[int(fraction * (len(boundaries) - 1))]
        before = self.release_position()
        returned = lib.shmlog_ring_release_to(self.ring.map, target)
        after = self.release_position()
        assert returned == after
        assert before <= after <= max(before, target)

    @rule(fraction=st.floats(0, 1))
    def persist(self, fraction):
        """What the persister publishes; a producer waiting for room may release up to it."""
        done = [(pos + nbytes, base + count) for pos, nbytes, base, count, _ in self.frames]
        if not done:
            return
        position, offset = done[int(fraction * (len(done) - 1))]
        if position < self.ring.header.persist.persisted_position:
            return
        lib.shmlog_ring_publish_persisted(self.ring.map, position, offset, offset)

    @rule()
    def persist_everything(self):
        """The persister caught up: the next append that lacks room takes all of it."""
        self.persist(1.0)

    @rule(which=st.integers(0, CURSORS - 1))
    def catch_up_and_release(self, which):
        """One reader catches up, then space is released up to the slowest reader."""
        self.read_to_end(which)
        self.release_space(1.0, False)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def claim_matches_model(self):
        if self.ring is None:
            return
        assert self.ring.end() == (self.tail, self.next_offset)

    @invariant()
    def release_is_bounded(self):
        if self.ring is None:
            return
        release = self.release_position()
        assert self.last_release <= release <= self.tail, (self.last_release, release, self.tail)
        assert self.tail - release <= CAP
        self.last_release = release
        assert all(release <= position for _, _, position, _ in self.stalled), "released past a passed claim"
        assert self.ring.header.release.fenced_claims == len(self.stalled)

    @invariant()
    def start_is_the_oldest_intact_batch(self):
        """start() lands on an intact batch boundary no later than the oldest intact batch
        that carries records (it may skip a repaired claim's empty batch, or not)."""
        if self.ring is None:
            return
        start = self.ring.start()
        boundaries = {(pos, base) for pos, _, base, count, _ in self.frames if count and self.intact(pos)}
        assert start in boundaries | {(self.tail, self.next_offset)}, f"start() {start} is no batch boundary"
        assert start <= self.oldest_intact_data_frame()

    @invariant()
    def offsets_are_dense(self):
        if self.ring is None:
            return
        expected = self.start_offset
        for pos, nbytes, base, count, values in self.frames:
            assert base == expected and (values is None or len(values) == count)
            expected += count
        assert expected == self.next_offset


EXAMPLES = int(os.environ.get("SHMLOG_HYPOTHESIS_EXAMPLES", "150"))
STEPS = int(os.environ.get("SHMLOG_HYPOTHESIS_STEPS", "80"))

RingModel.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                                       database=None, suppress_health_check=[HealthCheck.too_slow])
test_ring_matches_the_list_model = RingModel.TestCase


# ---------------------------------------------------------------------------- stale bytes of an older lap
#
# A frame word is taken as published when it carries the lap of the position being read.
# Bytes at a position that was the *inside* of a frame one lap earlier are payload, not a
# frame word: nothing stops them from reading as "this lap, length n". A reader at the tail
# (nothing claimed yet), or at a claim whose producer is still copying, then takes them for a
# published frame. The tests below build that state deterministically in one process.

LAP1_FRAME_BYTES = 576  # the first frame of lap 1; the tail then sits at CAP + 528


def ring_with_stale_bytes_at_the_tail(name, image_at_tail):
    """A ring whose lap-0 payload holds `image_at_tail` exactly where the lap-1 tail ends up,
    fully released (as a persister would after reading everything). Returns (ring, cursor at tail)."""
    unlink(name)
    ring = Ring.create(name, CAP, "stale", 1, 0)
    slot = ring.acquire_producer_slot()

    def append(values):
        records = encode(values)
        return ring.append(slot, ffi.from_buffer(records), len(records), len(values), 0, 0, 0, ffi.NULL)

    n = 2000
    value_at = layout.FRAME_PREFIX_BYTES + layout.BATCH_HEADER_BYTES + len(encode([b"\0" * n])) - n - 1
    value = bytearray(n)
    at = LAP1_FRAME_BYTES - value_at
    value[at:at + len(image_at_tail)] = image_at_tail
    append([bytes(value)])
    while CAP - ring.end()[0] >= LAP1_FRAME_BYTES:  # fill lap 0 so the next frame pads to lap 1
        append([b"f" * min(3000, CAP - ring.end()[0] - 80)])
    ring.header.release.release_position = ring.end()[0]
    filler = LAP1_FRAME_BYTES - layout.FRAME_PREFIX_BYTES - layout.BATCH_HEADER_BYTES
    append([b"g" * (filler - (len(encode([b"g" * filler])) - filler))])
    cursor = ffi.new("shmlog_cursor *")
    cursor.position, cursor.next_offset = ring.end()
    assert cursor.position == CAP + LAP1_FRAME_BYTES
    return ring, cursor


def stale_frame_image(base_offset, values):
    """What a published frame of lap 1 holding `values` at base_offset looks like."""
    records = encode(values)
    batch = bytearray(layout.BATCH_HEADER_BYTES + len(records))
    batch[layout.BATCH_HEADER_BYTES:] = records
    lib.shmlog_batch_write_header(ffi.from_buffer(batch), len(records), base_offset, 0, 0, len(values), 0, 0,
                                  -1, -1, -1)
    length = frame_bytes(len(records))
    return struct.pack("<II", length, 1) + bytes(batch) + bytes(length - 8 - len(batch))



def test_payload_of_the_previous_lap_at_the_tail_is_not_a_published_frame():
    name = f"/shmlog.model{os.getpid()}.{next(_names)}"
    ring, cursor = ring_with_stale_bytes_at_the_tail(name, struct.pack("<II", 256, 1) * 4)
    try:
        frames = ffi.new("shmlog_frame_ref[]", 8)
        assert not ring.has_data(cursor.position)
        # Today: SHMLOG_ECORRUPT, which consumers raise as _BAD_MSG and the persister takes as
        # a corrupt ring ("persisting of this partition is stuck"), on a healthy ring.
        assert lib.shmlog_ring_fetch(ring.map, cursor, ffi.NULL, 0, frames, 8, 1) == 0
    finally:
        ring.close()
        unlink(name)


def test_a_value_that_looks_like_a_frame_is_never_read_back_as_records_nobody_produced():
    name = f"/shmlog.model{os.getpid()}.{next(_names)}"
    # The offset the tail will have: 1 + the fill frames + 1 (known after building; built twice).
    probe, cursor = ring_with_stale_bytes_at_the_tail(name, b"")
    next_offset = cursor.next_offset
    probe.close()
    ring, cursor = ring_with_stale_bytes_at_the_tail(name, stale_frame_image(next_offset, [b"never produced"]))
    try:
        frames = ffi.new("shmlog_frame_ref[]", 8)
        # Today: one frame, CRC32C valid, base offset as expected: a record nobody produced.
        assert lib.shmlog_ring_fetch(ring.map, cursor, ffi.NULL, 0, frames, 8, 1) == 0
    finally:
        ring.close()
        unlink(name)


# ---------------------------------------------------------------------------- a dead claim attempt and a live claim


def test_a_dead_producers_failed_claim_attempt_is_not_repaired_over_a_live_claim():
    """A producer SIGKILLed after writing its intent but before its CAS (crash point 1) leaves
    a CLAIMING slot at (tail, next offset). The next live producer claims that very position;
    until it marks its slot OWNED its slot is CLAIMING too. Repairing then would write the dead
    attempt's sizes (here 50 offsets, 4096 bytes) over the live producer's claim (3, 128)."""
    name = f"/shmlog.model{os.getpid()}.{next(_names)}"
    unlink(name)
    ring = Ring.create(name, CAP, "race", 1, 0)
    try:
        live_slot = ring.acquire_producer_slot()  # this process: alive
        records = encode([b"before"])
        ring.append(live_slot, ffi.from_buffer(records), len(records), 1, 0, 0, 0, ffi.NULL)
        pos, off = ring.end()
        dead_slot = lib.shmlog_producer_slot_acquire(ring.map, DEAD_PID, 1, 99)
        dead, live = ring.map.producers[dead_slot], ring.map.producers[live_slot]
        dead.claim_position, dead.claim_offset, dead.claim_frame_bytes, dead.claim_record_count = pos, off, 4096, 50
        dead.state = lib.SHMLOG_SLOT_CLAIMING
        live.claim_position, live.claim_offset, live.claim_frame_bytes, live.claim_record_count = pos, off, 128, 3
        live.state = lib.SHMLOG_SLOT_CLAIMING  # its CAS won, the OWNED store is next
        ring.header.claim.tail_position, ring.header.claim.next_offset = pos + 128, off + 3
        assert not ring.repair_if_stuck(pos, ffi.NULL)
        deadline = time.monotonic() + 2 * STUCK_CLAIM_GRACE_S
        while time.monotonic() < deadline:  # outwait the grace period the code under test applies
            time.sleep(STUCK_CLAIM_GRACE_S / 4)
        assert not ring.repair_if_stuck(pos, ffi.NULL), "a live producer's claim was repaired away"
        assert live.state == lib.SHMLOG_SLOT_CLAIMING
    finally:
        ring.close()
        unlink(name)
