"""fetch-with-copy vs a process scribbling on the batch: what a copy returns is what was checked.

Any process that maps a ring can write into it. A reader that copies batches out (the
persister, whose copy is what reaches the segment files) must get, for every batch it is
handed, bytes that passed the checks as they are in the copy: base offset the one expected,
length and CRC32C sound. Checking shared memory and then copying it leaves a window in which
the copy takes bytes nobody checked (the base offset is not under the CRC); a batch written
to disk with such a header once named a segment after a random offset and stopped the
persister (tests/crash/test_shm_fuzz.py, batch_headers).

A spawned process flips the base offset of a published batch between its true value and a
wrong one as fast as it can, while this process fetches the batch with a copy many times.
"""
import multiprocessing
import struct
import time

import pytest

from tests.concurrency import core_override

core_override.install()  # before anything loads the C core

from shmlog._native import ffi, layout, lib  # noqa: E402
from shmlog._native.ring import Ring  # noqa: E402

pytestmark = pytest.mark.concurrency

SPAWN = multiprocessing.get_context("spawn")
CAPACITY = 65536
START_TIMEOUT_S = 60.0
FETCHES_WANTED = 200_000
BUDGET_S = 20.0
WRONG_BASE = struct.pack(">q", 1 << 58)
TRUE_BASE = struct.pack(">q", 0)


def scribbler(ring_name, at, started, stop):
    ring = Ring.open(ring_name, "scribbled", 0)
    mm = ring.mapping.mm
    started.set()
    try:
        while not stop.is_set():
            for _ in range(1000):
                mm[at:at + 8] = WRONG_BASE
                mm[at:at + 8] = TRUE_BASE
    finally:
        ring.close()


def fetch_copies_while_scribbled(ring):
    """Fetches the ring's one batch with a copy until enough of each outcome was seen."""
    buf = bytearray(CAPACITY)
    dst = ffi.from_buffer(buf)
    frames = ffi.new("shmlog_frame_ref[1]")
    cursor = ffi.new("shmlog_cursor *")
    outcomes = {"handed_out": 0, "refused": 0}
    wrong = []
    deadline = time.monotonic() + BUDGET_S
    fetches = 0
    while (fetches < FETCHES_WANTED or not outcomes["refused"]) and time.monotonic() < deadline:
        cursor.position, cursor.next_offset = 0, 0
        n = lib.shmlog_ring_fetch(ring.map, cursor, dst, len(buf), frames, 1, lib.SHMLOG_FETCH_CHECK_CRC)
        fetches += 1
        if n == 1:
            outcomes["handed_out"] += 1
            copied_base, = struct.unpack_from(">q", buf, frames[0].dst_pos)
            if copied_base != 0 or frames[0].base_offset != 0:
                wrong.append((copied_base, frames[0].base_offset))
        elif n == lib.SHMLOG_ECORRUPT:
            outcomes["refused"] += 1
        else:
            pytest.fail(f"fetch returned {n}")
    return outcomes, wrong


def test_a_batch_copied_out_of_the_ring_is_handed_out_only_with_the_base_offset_it_was_checked_with(shm_name):
    name = shm_name("ring")
    ring = Ring.create(name, CAPACITY, "scribbled", 1, 0)
    slot = ring.acquire_producer_slot()
    try:
        assert ring.append_fixed(slot, 16, bytes(16 * 48), 48, 0, 1000, ffi.NULL) == 0
        base_field = ring.data_offset + layout.FRAME_PREFIX_BYTES + lib.SHMLOG_BATCH_OFF_BASE_OFFSET
        started, stop = SPAWN.Event(), SPAWN.Event()
        child = SPAWN.Process(target=scribbler, args=(name, base_field, started, stop), daemon=True)
        child.start()
        try:
            assert started.wait(START_TIMEOUT_S), "the scribbler did not start"
            outcomes, wrong = fetch_copies_while_scribbled(ring)
        finally:
            stop.set()
            child.join(START_TIMEOUT_S)
        assert child.exitcode == 0
        assert wrong == [], f"{len(wrong)} copies handed out with a base offset other than the one checked " \
                            f"(copy, frame table): {wrong[:5]}"
        # The race was run for real: the scribble was seen (refused) and missed (handed out).
        assert outcomes["handed_out"] > 0 and outcomes["refused"] > 0, outcomes
    finally:
        ring.release_producer_slot(slot)
        ring.close()
