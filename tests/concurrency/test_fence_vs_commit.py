"""fence vs commit: a repairer fences a live producer's claim (OWNED -> FENCED) while the
producer commits it (OWNED -> COMMITTING); docs/architecture.md, "Stalled producers".

Exactly one wins each claim. If the producer wins, its batch is published with its records
and CRC32C and the fence attempt changes nothing; if the repairer wins, the producer's append
returns SHMLOG_EFENCED, its slot is IDLE again, and the claim is published by the repairer
as an empty control batch over the claim's offsets. Never both, never neither: the producer
checks each of its claims as soon as it is published, and the two sides' counts of fences
must agree.

A spawned producer process appends batches to a real ring in shared memory until the test
process, the repairer fencing every claim it sees OWNED with a zero timeout, has won
FENCES_WANTED fences (or BUDGET_S passed: on a busy host the two may rarely overlap).
"""
import multiprocessing
import time

import pytest

from tests.concurrency import core_override

core_override.install()  # before anything loads the C core

from shmlog._native import ffi, lib  # noqa: E402
from shmlog._native.ring import Ring  # noqa: E402

pytestmark = pytest.mark.concurrency

SPAWN = multiprocessing.get_context("spawn")
CAPACITY = 1 << 22
MAX_ROUNDS = 200_000
MIN_ROUNDS = 2000
FENCES_WANTED = 200
BUDGET_S = 30.0
RECORD_BYTES = 32768      # a long copy widens the window in which the claim is OWNED
START_TIMEOUT_S = 60.0
PUBLISH_SPINS = 10_000_000


def published_frame(ring, position, offset):
    """(attributes, records) of the frame published at position, CRC-checked; None if it never is."""
    for _ in range(PUBLISH_SPINS):
        if ring.has_data(position):
            break
    else:
        return None
    cursor = ffi.new("shmlog_cursor *", {"position": position, "next_offset": offset})
    frames = ffi.new("shmlog_frame_ref[1]")
    n = lib.shmlog_ring_fetch(ring.map, cursor, ffi.NULL, 0, frames, 1, 1)
    if n != 1:
        return ("fetch failed", n)
    batch = ffi.cast("uint8_t *", ring.mapping.ptr) + frames[0].map_pos
    return batch[22] & lib.SHMLOG_ATTR_CONTROL, frames[0].record_count


def is_padding(ring, position):
    """Whether the frame published at position is end-of-ring padding (its frame word's flag)."""
    at = ring.data_offset + position % CAPACITY
    return bool(int.from_bytes(bytes(ring.mapping.mm[at:at + 4]), "little") & lib.SHMLOG_FRAME_PADDING_FLAG)


def committing_producer(ring_name, stop, ready, done, conn):
    ring = Ring.open(ring_name, "fence", 0)
    slot = ring.acquire_producer_slot()
    conn.send(slot)
    ready.wait(START_TIMEOUT_S)
    records = ffi.new("uint8_t[]", RECORD_BYTES)
    out = ffi.new("uint64_t *")
    won = fenced = 0
    problems = []
    s = ring.map.producers[slot]
    rounds = offsets = 0
    for i in range(MAX_ROUNDS):
        if stop.is_set() and i >= MIN_ROUNDS:
            break
        rounds += 1
        count = 1 + i % 3
        offsets += count
        rc = lib.shmlog_ring_append(ring.map, slot, records, RECORD_BYTES, count, 0, 0, 0, -1, -1, -1,
                                    5_000_000_000, ffi.NULL, out)
        if rc >= 0:
            won += 1
            frame = published_frame(ring, rc, out[0])
            if frame != (0, count):
                problems.append(f"round {i}: committed at {rc} but the frame there is {frame}")
        elif rc == lib.SHMLOG_EFENCED:
            fenced += 1
            if Ring.slot_state(s) != lib.SHMLOG_SLOT_IDLE:
                problems.append(f"round {i}: fenced, but the slot was left in state {Ring.slot_state(s)}")
            frame = published_frame(ring, s.claim_position, s.claim_offset)
            if frame != (lib.SHMLOG_ATTR_CONTROL, count):
                problems.append(f"round {i}: fenced at {s.claim_position} but the frame there is {frame}")
        else:
            problems.append(f"round {i}: append returned {rc}")
            break
        lib.shmlog_ring_release_to(ring.map, ring.end()[0])  # no persister: everything is ours to reuse
    done.set()
    conn.send((rounds, offsets, won, fenced, problems, ring.end()[1], ring.header.release.fenced_claims))
    ring.release_producer_slot(slot)
    ring.close()


def test_a_fence_and_a_commit_of_the_same_claim_never_both_succeed(shm_name):
    name = shm_name("ring")
    owner = Ring.create(name, CAPACITY, "fence", 1, 0)
    ready, done, stop = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    reader, writer = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=committing_producer, args=(name, stop, ready, done, writer), daemon=True)
    child.start()
    writer.close()
    try:
        assert reader.poll(START_TIMEOUT_S), "the producer did not start"
        slot = reader.recv()
        s = owner.map.producers[slot]
        fences_won = 0
        ready.set()
        deadline = time.monotonic() + BUDGET_S
        while not done.is_set():
            if Ring.slot_state(s) == lib.SHMLOG_SLOT_OWNED:
                position = s.claim_position
                if lib.shmlog_ring_fence_stalled(owner.map, slot, position, 0, ffi.NULL) == 0:
                    # A fenced end-of-ring padding claim is published as padding and its owner
                    # simply claims again: only fences of claims with records reach the producer.
                    fences_won += not is_padding(owner, position)
            if fences_won >= FENCES_WANTED or time.monotonic() > deadline:
                stop.set()
        assert reader.poll(START_TIMEOUT_S), "the producer did not report"
        rounds, offsets, won, fenced, problems, next_offset, fenced_claims = reader.recv()
        child.join(START_TIMEOUT_S)
        assert child.exitcode == 0
        assert problems == []
        assert won + fenced == rounds
        assert fenced == fences_won, "every fence the repairer won is one the producer saw, and no other"
        assert won > 0 and fenced > 0, (won, fenced)  # the race was run for real: both sides won sometimes
        assert next_offset == offsets, "fenced claims keep their offsets: dense"
        assert fenced_claims == 0, "every fence was acknowledged"
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
        reader.close()
        owner.close()
