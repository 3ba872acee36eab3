"""The sequence check in the ring's append path (csrc/core/append.c, docs/exactly-once.md):
an idempotent batch is checked against its producer slot's sequence record before anything is
claimed, on a real shared-memory ring."""
import os

import pytest

from shmlog._native import ffi, lib, procs
from shmlog._native.ring import Ring
from shmlog._native.shm import unlink
from shmlog.log.batch import HEADER

PID, STARTED = procs.me()
NEXT = lib.SHMLOG_SEQUENCE_NEXT
PRODUCER = 7


@pytest.fixture
def ring(request):
    name = f"/shmlog.idem{os.getpid()}.{abs(hash(request.node.name)) % 10**8}"
    unlink(name)
    r = Ring.create(name, 65536, "t", 1, 0)
    yield r
    r.close()
    unlink(name)


def records(count):
    values = b"".join(b"v%03d" % i for i in range(count))
    lens = ffi.new("int32_t[]", [4] * count)
    size = lib.shmlog_records_encode(ffi.NULL, 0, count, ffi.NULL, ffi.NULL, values, lens, ffi.NULL, 0, ffi.NULL,
                                     ffi.NULL)
    out = bytearray(size)
    lib.shmlog_records_encode(ffi.from_buffer(out), size, count, ffi.NULL, ffi.NULL, values, lens, ffi.NULL, 0,
                              ffi.NULL, ffi.NULL)
    return out


def append(ring, slot, count, sequence=NEXT, producer_id=PRODUCER, epoch=0):
    data = records(count)
    out = ffi.new("uint64_t *")
    rc = lib.shmlog_ring_append(ring.map, slot, ffi.from_buffer(data), len(data), count, 0, 0, 0, producer_id, epoch,
                                sequence, 0, ffi.NULL, out)
    return rc if rc < 0 else out[0]


def headers(ring):
    """(base offset, producer id, epoch, base sequence) of every batch in the ring."""
    cursor = ffi.new("shmlog_cursor *")
    cursor.position, cursor.next_offset = 0, ring.map.header.descriptor.start_offset
    frames = ffi.new("shmlog_frame_ref[]", 64)
    n = ring.fetch(cursor, ffi.NULL, 0, frames, 64, 1)
    view = ring.mapping.view()
    try:
        found = []
        for i in range(max(n, 0)):
            fields = HEADER.unpack_from(view, frames[i].map_pos)
            found.append((fields[0], fields[9], fields[10], fields[11]))
        return found
    finally:
        view.release()


def slot_of(ring, token=1):
    return lib.shmlog_producer_slot_acquire(ring.map, PID, STARTED, token)


def test_consecutive_batches_carry_consecutive_sequences(ring):
    slot = slot_of(ring)
    assert [append(ring, slot, n) for n in (3, 1, 2)] == [0, 3, 4]
    assert headers(ring) == [(0, PRODUCER, 0, 0), (3, PRODUCER, 0, 3), (4, PRODUCER, 0, 4)]
    record = ring.map.sequences[slot]
    assert (record.producer_id, record.last_sequence, record.last_offset) == (PRODUCER, 5, 5)


def test_a_batch_sent_again_is_refused_as_a_duplicate_and_nothing_is_appended(ring):
    slot = slot_of(ring)
    append(ring, slot, 3)
    append(ring, slot, 2)
    for sequence in (0, 3):
        assert append(ring, slot, 2 if sequence else 3, sequence) == lib.SHMLOG_EDUPLICATE
    assert ring.end()[1] == 5
    assert append(ring, slot, 1, 5) == 5   # the next one is taken


def test_a_gap_in_the_sequences_is_refused_as_out_of_order(ring):
    slot = slot_of(ring)
    append(ring, slot, 2)
    assert append(ring, slot, 1, 3) == lib.SHMLOG_ESEQUENCE
    assert ring.end()[1] == 2


def test_an_epoch_older_than_one_seen_for_the_producer_id_is_fenced(ring):
    zombie, successor = slot_of(ring, 1), slot_of(ring, 2)
    assert append(ring, zombie, 1, epoch=0) == 0
    assert append(ring, successor, 1, 0, epoch=1) == 1
    assert append(ring, zombie, 1, epoch=0) == lib.SHMLOG_EEPOCH
    assert ring.end()[1] == 2


def test_a_new_epoch_starts_its_sequences_again(ring):
    slot = slot_of(ring)
    append(ring, slot, 4)
    assert append(ring, slot, 1, 0, epoch=1) == 4
    assert ring.map.sequences[slot].producer_epoch == 1


def test_appends_without_a_producer_id_are_not_checked_nor_recorded(ring):
    slot = slot_of(ring)
    assert [append(ring, slot, 1, -1, producer_id=-1, epoch=-1) for _ in range(2)] == [0, 1]
    assert headers(ring) == [(0, -1, -1, -1), (1, -1, -1, -1)]
    assert ring.map.sequences[slot].producer_id == -1


def test_sequences_wrap_from_int32_max_to_zero(ring):
    slot = slot_of(ring)
    ring.seed_sequence(slot, PRODUCER, 0, 2**31 - 2, 99)
    ring.map.next_sequence = 2**31 - 1
    assert append(ring, slot, 3) == 0
    assert headers(ring)[0][3] == 2**31 - 1
    assert ring.map.sequences[slot].last_sequence == 1
    assert append(ring, slot, 1, 2**31 - 1) == lib.SHMLOG_EDUPLICATE
    assert append(ring, slot, 1) == 3


def test_a_record_seeded_from_the_log_refuses_what_the_log_holds(ring):
    # What a producer does in a restarted broker's ring before sending its unconfirmed batches.
    slot = slot_of(ring)
    ring.seed_sequence(slot, PRODUCER, 0, 9, 41)
    assert append(ring, slot, 5, 5) == lib.SHMLOG_EDUPLICATE
    assert append(ring, slot, 2, 10) == 0
    assert ring.map.sequences[slot].last_sequence == 11


def test_a_released_slot_forgets_its_producer(ring):
    slot = slot_of(ring, 5)
    append(ring, slot, 1)
    assert lib.shmlog_producer_slot_release(ring.map, slot, 5) == 0
    assert ring.map.sequences[slot].producer_id == -1


def test_a_first_sequence_other_than_0_from_a_producer_the_partition_knows_nothing_of_is_unknown_producer_id(ring):
    slot = slot_of(ring)
    assert append(ring, slot, 1, 5) == lib.SHMLOG_EUNKNOWNPRODUCER
    assert ring.end()[1] == 0 and ring.map.sequences[slot].producer_id == -1
    assert append(ring, slot, 1, 0) == 0


def test_a_new_epoch_whose_first_sequence_is_not_0_is_out_of_order(ring):
    slot = slot_of(ring)
    append(ring, slot, 2)
    assert append(ring, slot, 1, 3, epoch=1) == lib.SHMLOG_ESEQUENCE
    assert append(ring, slot, 1, 0, epoch=1) == 2


def test_a_record_seeded_from_the_log_takes_the_sequence_after_the_logs_last_one(ring):
    # A producer whose state the log kept (its .snapshot files) goes on past 0 in a new ring.
    slot = slot_of(ring)
    ring.seed_sequence(slot, PRODUCER, 0, 41, 99)
    assert append(ring, slot, 1, 42) == 0
