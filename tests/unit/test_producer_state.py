"""Producer state of a partition log (shmlog/log/producer_state.py): built from the batches'
producer fields, kept in <offset>.snapshot files by the segment writer, rebuilt from the
newest usable snapshot plus the batches after it."""
import os

import pytest

from shmlog._native import ffi, lib
from shmlog.log import producer_state
from shmlog.log.segment import SegmentWriter

HEADER = lib.SHMLOG_BATCH_HEADER_BYTES


def make_batch(base_offset, count, producer_id=-1, epoch=-1, sequence=-1):
    values = b"x" * (8 * count)
    lens = ffi.new("int32_t[]", [8] * count)
    size = lib.shmlog_records_encode(ffi.NULL, 0, count, ffi.NULL, ffi.NULL, values, lens, ffi.NULL, 0, ffi.NULL,
                                     ffi.NULL)
    batch = bytearray(HEADER + size)
    dst = ffi.from_buffer("uint8_t[]", batch)
    lib.shmlog_records_encode(dst + HEADER, size, count, ffi.NULL, ffi.NULL, values, lens, ffi.NULL, 0, ffi.NULL,
                              ffi.NULL)
    lib.shmlog_batch_write_header(dst, size, base_offset, 0, 0, count, 1000, 1000, producer_id, epoch, sequence)
    return bytes(batch)


@pytest.fixture
def pdir(tmp_path):
    return str(tmp_path / "topic-0")


def write(writer, batches):
    """batches: (count, producer_id, sequence) appended at the log end."""
    for count, producer_id, sequence in batches:
        base = writer.log_end_offset
        writer.append(make_batch(base, count, producer_id, 0 if producer_id >= 0 else -1, sequence), base, base + count)


def summary(state):
    return {pid: (e.producer_epoch, e.last_sequence, e.last_offset) for pid, e in state.producers.items()}


def test_the_state_holds_each_producers_last_sequence_and_offset(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write(writer, [(3, 5, 0), (2, -1, -1), (4, 6, 0), (2, 5, 3)])
        assert summary(writer.producers) == {5: (0, 4, 10), 6: (0, 3, 8)}
    assert summary(producer_state.load(pdir)) == {5: (0, 4, 10), 6: (0, 3, 8)}


def test_a_snapshot_is_written_when_a_segment_rolls_and_holds_the_batches_below_it(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        write(writer, [(2, 1, 0), (2, 1, 2), (2, 2, 0)])
    assert producer_state.list_snapshots(pdir) == [4]
    assert summary(producer_state.read_snapshot(pdir, 4)) == {1: (0, 3, 3)}


def test_a_snapshot_read_back_equals_the_state_written(pdir):
    state = producer_state.ProducerState(20, {})
    state.update(10, 14, 0, 123, 77, 3, 2**31 - 2)   # wraps: last sequence 2
    os.makedirs(pdir)
    producer_state.write_snapshot(pdir, state)
    back = producer_state.read_snapshot(pdir, 20)
    assert back.producers == state.producers and summary(back) == {77: (3, 2, 14)}


def test_the_state_after_a_restart_equals_the_state_before_it(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 3 * batch_bytes) as writer:
        write(writer, [(2, 1, 0), (2, 2, 0), (2, 1, 2), (2, 2, 2), (2, 3, 0)])
        before = summary(writer.producers)
    with SegmentWriter(pdir, 3 * batch_bytes) as writer:
        assert summary(writer.producers) == before


def test_a_snapshot_that_fails_its_crc_is_passed_over_for_the_batches(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        write(writer, [(2, 1, 0), (2, 1, 2), (2, 1, 4)])
    newest = producer_state.list_snapshots(pdir)[-1]
    path = producer_state.snapshot_path(pdir, newest)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(producer_state.BadSnapshot, match="CRC32C"):
        producer_state.read_snapshot(pdir, newest)
    assert summary(producer_state.load(pdir)) == {1: (0, 5, 5)}


def test_after_a_host_crash_cut_the_log_snapshots_above_its_end_are_dropped_and_the_state_rebuilt(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        write(writer, [(2, 1, 0), (2, 1, 2), (2, 1, 4)])
        writer.snapshot_producers()
    assert producer_state.list_snapshots(pdir)[-1] == 6
    # What a host crash leaves when un-fsynced writes are lost: the newest segment torn short.
    newest = os.path.join(pdir, "00000000000000000004.log")
    with open(newest, "r+b") as f:
        f.truncate(batch_bytes - 5)
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        assert writer.log_end_offset == 4
        assert summary(writer.producers) == {1: (0, 3, 3)}
    assert all(offset <= 4 for offset in producer_state.list_snapshots(pdir))


def test_only_the_newest_snapshots_are_kept(pdir):
    batch_bytes = len(make_batch(0, 1))
    with SegmentWriter(pdir, batch_bytes) as writer:
        write(writer, [(1, 1, i) for i in range(6)])
    assert producer_state.list_snapshots(pdir) == [4, 5]


def test_retention_keeps_the_state_of_producers_whose_batches_it_deletes(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        write(writer, [(2, 1, 0), (2, 2, 0), (2, 2, 2)])
        writer.delete_oldest(2)
    assert summary(producer_state.load(pdir)) == {1: (0, 1, 1), 2: (0, 3, 5)}


def test_the_batches_after_a_snapshot_are_read_from_the_offset_index_entry_not_from_the_segments_start(pdir):
    with SegmentWriter(pdir, 1 << 20, index_interval_bytes=1) as writer:
        write(writer, [(2, 1, 0), (2, 1, 2), (2, 1, 4)])
        writer.snapshot_producers()              # at offset 6
        write(writer, [(3, 9, 0), (1, 9, 3)])
    # A walk from byte 0 would stop at once: only the snapshot and the index get past it.
    with open(os.path.join(pdir, "00000000000000000000.log"), "r+b") as f:
        f.seek(16)                               # the first batch's magic byte
        f.write(b"\x07")
    assert summary(producer_state.load(pdir)) == {1: (0, 5, 5), 9: (0, 3, 9)}
