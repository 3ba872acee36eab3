"""One partition of a Kafka Fetch read from its ring (shmlog_ring_fetch_partition): the
watermarks, which whole batches a reply carries, and where the reader reads on."""
import os
import struct

import pytest

from shmlog._native import ffi, lib
from shmlog._native.ring import Ring
from shmlog._native.shm import unlink
from tests.unit.test_ring import append, encode

CAPACITY = 1 << 20
FRAMES = 8


@pytest.fixture
def ring(request):
    name = f"/shmlog.test{os.getpid()}.{abs(hash(request.node.name)) % 10**8}"
    unlink(name)
    r = Ring.create(name, CAPACITY, "t", 1, 0, start_offset=0)
    r.slot = r.acquire_producer_slot()
    yield r
    r.close()
    unlink(name)


def fetch(ring, offset, max_bytes=1 << 20, dst_bytes=1 << 20, read_committed=False, hint=None):
    io = ffi.new("shmlog_partition_fetch *")
    io.fetch_offset, io.max_bytes, io.read_committed = offset, max_bytes, read_committed
    if hint is not None:
        io.hint_valid = 1
        io.hint.position, io.hint.next_offset = hint
    dst = bytearray(dst_bytes)
    frames = ffi.new("shmlog_frame_ref[]", FRAMES)
    n = lib.shmlog_ring_fetch_partition(ring.map, io, ffi.from_buffer(dst), len(dst), frames, FRAMES)
    return n, io, bytes(dst[:max(n, 0)])


def base_offsets(data):
    out, pos = [], 0
    while pos < len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        out.append(base)
        pos += 12 + length
    return out


def fill(ring, batches, values_per_batch=1, size=10):
    for _ in range(batches):
        append(ring, ring.slot, [b"v" * size] * values_per_batch)


def test_a_reader_gets_the_batches_from_the_one_holding_its_offset_and_where_to_read_on(ring):
    fill(ring, 3, values_per_batch=2)
    n, io, data = fetch(ring, 3)
    assert base_offsets(data) == [2, 4] and n == len(data)
    assert (io.log_start_offset, io.high_watermark, io.last_stable_offset) == (0, 6, 6)
    assert io.whole and (io.next.position, io.next.next_offset) == ring.end() == (io.end.position, io.end.next_offset)


def test_the_first_batch_is_kept_whatever_its_size_and_no_more_past_max_bytes(ring):
    fill(ring, 3, size=100)
    n, io, data = fetch(ring, 0, max_bytes=1)
    assert base_offsets(data) == [0] and not io.whole
    one = n
    n, io, data = fetch(ring, 0, max_bytes=2 * one)
    assert base_offsets(data) == [0, 1] and not io.whole


def test_more_batches_than_a_frame_table_holds_are_read_on_in_one_call(ring):
    fill(ring, 3 * FRAMES + 1)
    n, io, data = fetch(ring, 0)
    assert base_offsets(data) == list(range(3 * FRAMES + 1)) and io.whole


def test_a_read_committed_reader_gets_nothing_at_or_past_the_last_stable_offset(ring):
    fill(ring, 4)
    ring.set_txn(2, 0)       # a transaction open from offset 2
    n, io, data = fetch(ring, 0, read_committed=True)
    assert base_offsets(data) == [0, 1] and io.last_stable_offset == 2 and not io.whole
    assert fetch(ring, 2, read_committed=True)[0] == 0
    assert base_offsets(fetch(ring, 2)[2]) == [2, 3]


def test_offsets_below_the_log_start_or_past_the_high_watermark_are_out_of_range(ring):
    fill(ring, 2)
    assert fetch(ring, 3)[1].out_of_range
    assert fetch(ring, -1)[1].out_of_range
    n, io, _ = fetch(ring, 2)
    assert n == 0 and not io.out_of_range and io.high_watermark == 2


def test_no_budget_gives_the_watermarks_and_no_records(ring):
    fill(ring, 2)
    n, io, _ = fetch(ring, 0, max_bytes=0)
    assert n == 0 and io.high_watermark == 2 and not io.out_of_range


def test_a_first_batch_larger_than_the_destination_asks_for_its_size(ring):
    fill(ring, 1, size=1000)
    n, io, _ = fetch(ring, 0, dst_bytes=100)
    assert n == lib.SHMLOG_ESMALL and io.needed_bytes == len(encode([b"v" * 1000])) + 61


def test_a_hint_naming_the_offset_is_where_the_read_starts_and_another_is_passed_over(ring):
    fill(ring, 3)
    located = ring.locate(1)
    at_one = (located.position, located.next_offset)
    assert base_offsets(fetch(ring, 1, hint=at_one)[2]) == [1, 2]
    assert base_offsets(fetch(ring, 2, hint=at_one)[2]) == [2]    # a hint for offset 1: located instead
    inside_a_frame = (at_one[0] + 64, 1)    # no frame starts there: the read trusts the hint and finds nothing
    assert fetch(ring, 1, hint=inside_a_frame)[0] == 0
