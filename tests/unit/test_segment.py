"""shmlog.segment: segment files written, recovered after a crash, and read back."""
import os

import pytest

from shmlog._native import ffi, lib
from shmlog.errors import KafkaError, KafkaException
from shmlog.log import index, producer_state, retention, segment
from shmlog.log.segment import SegmentReader, SegmentWriter, recover

HEADER = lib.SHMLOG_BATCH_HEADER_BYTES


def make_batch(base_offset, count, value_bytes=20):
    """A valid RecordBatch v2 of `count` records, built with the C core as producers do."""
    values = b"".join(bytes([(base_offset + i) % 256]) * value_bytes for i in range(count))
    value_lens = ffi.new("int32_t[]", [value_bytes] * count)
    src = ffi.from_buffer(values)
    size = lib.shmlog_records_encode(ffi.NULL, 0, count, ffi.NULL, ffi.NULL, src, value_lens,
                                     ffi.NULL, 0, ffi.NULL, ffi.NULL)
    batch = bytearray(HEADER + size)
    dst = ffi.from_buffer("uint8_t[]", batch)
    assert lib.shmlog_records_encode(dst + HEADER, size, count, ffi.NULL, ffi.NULL, src, value_lens,
                                     ffi.NULL, 0, ffi.NULL, ffi.NULL) == size
    lib.shmlog_batch_write_header(dst, size, base_offset, 0, 0, count, 1000, 1000, -1, -1, -1)
    return bytes(batch)


def write_batches(writer, counts, start=0, value_bytes=20):
    """Append one batch per count, offsets dense from `start`; returns the batches."""
    batches, offset = [], start
    for count in counts:
        batch = make_batch(offset, count, value_bytes)
        writer.append(batch, offset, offset + count)
        batches.append(batch)
        offset += count
    return batches


def segment_files(path):
    return sorted(name for name in os.listdir(path) if name.endswith(".log"))


@pytest.fixture
def pdir(tmp_path):
    return str(tmp_path / "topic-0")


def test_an_empty_partition_has_log_start_and_end_offset_zero(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        assert (writer.log_start_offset, writer.log_end_offset) == (0, 0)
    assert segment.log_start_offset(pdir) == 0
    assert segment.log_end_offset(pdir) == 0


def test_the_first_segment_is_named_by_the_base_offset_of_its_first_batch(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [3, 2], start=42)
    assert segment_files(pdir) == ["00000000000000000042.log"]
    assert segment.log_start_offset(pdir) == 42
    assert segment.log_end_offset(pdir) == 47


def test_a_segment_file_holds_the_batches_byte_for_byte(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        batches = write_batches(writer, [1, 5, 2])
    with open(os.path.join(pdir, segment_files(pdir)[0]), "rb") as f:
        assert f.read() == b"".join(batches)


def test_the_writer_rolls_to_a_new_segment_before_one_would_exceed_segment_bytes(pdir):
    batch_bytes = len(make_batch(0, 4))
    with SegmentWriter(pdir, 3 * batch_bytes) as writer:
        write_batches(writer, [4] * 7)
        assert writer.log_end_offset == 28
    assert segment_files(pdir) == ["00000000000000000000.log", "00000000000000000012.log",
                                   "00000000000000000024.log"]
    sizes = [os.path.getsize(os.path.join(pdir, name)) for name in segment_files(pdir)]
    assert sizes == [3 * batch_bytes, 3 * batch_bytes, batch_bytes]


def test_a_list_of_batches_is_split_across_segments_at_batch_boundaries(pdir):
    batches = [make_batch(i * 2, 2) for i in range(5)]
    with SegmentWriter(pdir, 2 * len(batches[0])) as writer:
        writer.append(batches, 0, 10)
        assert writer.log_end_offset == 10
    assert segment_files(pdir) == ["00000000000000000000.log", "00000000000000000004.log",
                                   "00000000000000000008.log"]
    assert recover(pdir)[:2] == (0, 10)


def test_appending_below_the_log_end_offset_is_refused(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5])
        with pytest.raises(ValueError, match="below the log end offset 5"):
            writer.append(make_batch(3, 2), 3, 5)
        assert writer.log_end_offset == 5


def test_an_offset_gap_starts_a_new_segment_so_offsets_stay_dense_within_each(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5])
        write_batches(writer, [3], start=100)
        assert (writer.log_start_offset, writer.log_end_offset) == (0, 103)
    assert segment_files(pdir) == ["00000000000000000000.log", "00000000000000000100.log"]
    # Recovery cannot tell such a gap from a deleted segment: it reports it (and keeps both).
    start, end, report = recover(pdir)
    assert (start, end) == (0, 103)
    assert "offsets 5..99 are in no segment" in report and "readers skip to offset 100" in report


def test_a_reopened_writer_continues_at_the_recovered_log_end_offset(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5, 5])
    with SegmentWriter(pdir, 1 << 20) as writer:
        assert (writer.log_start_offset, writer.log_end_offset) == (0, 10)
        assert writer.recovery_report == ""
        write_batches(writer, [2], start=10)
    assert recover(pdir) == (0, 12, "")


def test_flush_makes_the_flushed_offset_reach_the_log_end_offset(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5])
        assert writer.flushed_offset == 0
        assert writer.flush() == 5
        assert writer.flushed_offset == 5


def test_a_torn_tail_is_truncated_with_a_report_naming_file_position_and_bytes(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        first, second = write_batches(writer, [3, 4])
    path = os.path.join(pdir, segment_files(pdir)[0])
    with open(path, "r+b") as f:
        f.truncate(len(first) + len(second) - 7)  # the crash cut the second batch short

    start, end, report = recover(pdir)

    assert (start, end) == (0, 3)
    assert os.path.getsize(path) == len(first)
    assert path in report
    assert f"cut {len(second) - 7} bytes at byte {len(first)}" in report
    assert "torn batch" in report


def test_a_torn_batch_header_is_truncated(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        first, _ = write_batches(writer, [3, 4])
    path = os.path.join(pdir, segment_files(pdir)[0])
    with open(path, "r+b") as f:
        f.truncate(len(first) + 10)
    assert recover(pdir)[1] == 3
    assert os.path.getsize(path) == len(first)


def test_a_corrupt_crc_in_the_middle_truncates_from_that_batch_on(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        batches = write_batches(writer, [2, 2, 2, 2])
    path = os.path.join(pdir, segment_files(pdir)[0])
    bad_at = len(batches[0]) + len(batches[1])
    with open(path, "r+b") as f:
        f.seek(bad_at + HEADER + 5)  # a flipped byte inside the third batch's records
        f.write(b"\xff")

    start, end, report = recover(pdir)

    assert end == 4
    assert os.path.getsize(path) == bad_at
    assert "CRC32C mismatch" in report
    assert f"cut {len(batches[2]) + len(batches[3])} bytes at byte {bad_at}" in report


def test_an_offset_gap_inside_a_segment_is_corruption_and_truncated(pdir):
    os.makedirs(pdir)
    good, gap = make_batch(0, 3), make_batch(7, 2)
    with open(os.path.join(pdir, segment.segment_name(0)), "wb") as f:
        f.write(good + gap)

    start, end, report = recover(pdir)

    assert (start, end) == (0, 3)
    assert "offset gap (expected base offset 3, found 7)" in report
    assert f"at byte {len(good)}" in report


def test_a_reopened_writer_reports_what_recovery_cut(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        first, _ = write_batches(writer, [3, 4])
    with open(os.path.join(pdir, segment_files(pdir)[0]), "r+b") as f:
        f.truncate(len(first) + 70)
    with SegmentWriter(pdir, 1 << 20) as writer:
        assert writer.log_end_offset == 3
        assert "cut 70 bytes" in writer.recovery_report
        write_batches(writer, [1], start=3)
    assert recover(pdir) == (0, 4, "")


def test_log_end_offset_stops_at_a_torn_tail_without_cutting_it(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        first, second = write_batches(writer, [3, 4])
    path = os.path.join(pdir, segment_files(pdir)[0])
    with open(path, "ab") as f:
        f.write(make_batch(7, 1)[:30])
    assert segment.log_end_offset(pdir) == 7
    assert os.path.getsize(path) == len(first) + len(second) + 30


def test_a_failed_write_leaves_no_partial_batch_behind(pdir, monkeypatch):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [2])
        real_writev = os.writev

        def half_then_enospc(fd, buffers):
            real_writev(fd, [bytes(buffers[0])[:25]])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "writev", half_then_enospc)
        with pytest.raises(OSError):
            writer.append(make_batch(2, 3), 2, 5)
        monkeypatch.setattr(os, "writev", real_writev)
        assert writer.log_end_offset == 2
        write_batches(writer, [3], start=2)
    assert recover(pdir) == (0, 5, "")


def test_the_reader_returns_the_batch_that_contains_the_offset(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        batches = write_batches(writer, [5, 5, 5])

    buf, frames = SegmentReader(pdir).read(7, 1)

    assert frames == [(0, 5, 5, len(batches[1]))]
    assert bytes(buf) == batches[1]


def test_the_reader_returns_consecutive_batches_up_to_max_bytes(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        batches = write_batches(writer, [1] * 10)
    size = len(batches[0])

    buf, frames = SegmentReader(pdir).read(2, 3 * size + size // 2)

    assert [f[1] for f in frames] == [2, 3, 4]
    assert [f[0] for f in frames] == [0, size, 2 * size]
    assert bytes(buf) == b"".join(batches[2:5])


def test_the_reader_returns_one_batch_even_when_it_is_larger_than_max_bytes(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        batches = write_batches(writer, [50, 50], value_bytes=100)
    buf, frames = SegmentReader(pdir).read(0, 10)
    assert len(frames) == 1 and bytes(buf) == batches[0]


def test_the_reader_returns_memoryviews_of_the_segment_file(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5])
    buf, _ = SegmentReader(pdir).read(0, 1 << 20)
    assert isinstance(buf, memoryview) and buf.readonly


def test_the_reader_continues_across_a_segment_boundary(pdir):
    batch_bytes = len(make_batch(0, 3))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        batches = write_batches(writer, [3] * 5)
    assert len(segment_files(pdir)) == 3
    reader = SegmentReader(pdir)

    offset, seen = 0, []
    while True:
        buf, frames = reader.read(offset, 1 << 20)
        if not frames:
            break
        for pos, base, count, nbytes in frames:
            seen.append(bytes(buf[pos:pos + nbytes]))
            offset = base + count

    assert seen == batches
    assert offset == 15


def test_the_reader_skips_an_offset_gap_between_segments_to_the_next_batch(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5])
        write_batches(writer, [3], start=100)
    _, frames = SegmentReader(pdir).read(50, 1 << 20)
    assert [f[1] for f in frames] == [100]


def test_reading_at_the_log_end_offset_returns_nothing(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5])
    buf, frames = SegmentReader(pdir).read(5, 1 << 20)
    assert frames == [] and len(buf) == 0


def test_reading_an_empty_partition_returns_nothing(pdir):
    buf, frames = SegmentReader(pdir).read(0, 1 << 20)
    assert frames == [] and len(buf) == 0


def test_reading_below_the_log_start_offset_raises_offset_out_of_range(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5], start=100)
    with pytest.raises(KafkaException) as caught:
        SegmentReader(pdir).read(99, 1 << 20)
    assert caught.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE


def test_the_reader_sees_batches_and_segments_written_after_it_opened(pdir):
    batch_bytes = len(make_batch(0, 2))
    writer = SegmentWriter(pdir, 2 * batch_bytes)
    write_batches(writer, [2])
    reader = SegmentReader(pdir)
    assert [f[1] for f in reader.read(0, 1 << 20)[1]] == [0]

    write_batches(writer, [2, 2, 2], start=2)  # fills the first segment, rolls to a second
    writer.close()

    assert [f[1] for f in reader.read(2, 1 << 20)[1]] == [2]
    assert [f[1] for f in reader.read(4, 1 << 20)[1]] == [4, 6]
    assert reader.read(8, 1 << 20)[1] == []


def test_the_reader_never_returns_a_partially_written_batch(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [2])
    partial = make_batch(2, 3)
    path = os.path.join(pdir, segment_files(pdir)[0])
    with open(path, "ab") as f:
        f.write(partial[:-1])
    reader = SegmentReader(pdir)

    assert reader.read(2, 1 << 20)[1] == []
    with open(path, "ab") as f:
        f.write(partial[-1:])
    assert reader.read(2, 1 << 20)[1] == [(0, 2, 3, len(partial))]


def test_a_reader_whose_map_outlived_a_write_cut_back_waits_instead_of_calling_the_segment_damaged(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [2])
    path = os.path.join(pdir, segment_files(pdir)[0])
    whole = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(make_batch(2, 3)[:-1])    # what a write that ran into ENOSPC got onto the disk
    reader = SegmentReader(pdir)
    assert reader.read(2, 1 << 20)[1] == []
    os.truncate(path, whole)              # the writer cuts it back: our map now reads zeros there

    assert reader.read(2, 1 << 20)[1] == []
    with SegmentWriter(pdir, 1 << 20) as writer:
        (batch,) = write_batches(writer, [3], start=2)
    assert reader.read(2, 1 << 20)[1] == [(0, 2, 3, len(batch))]


def test_a_second_writer_of_a_partition_directory_is_refused_until_the_first_closes(pdir):
    first = SegmentWriter(pdir, 1 << 20)
    with pytest.raises(segment.PartitionBusy, match="another writer"):
        SegmentWriter(pdir, 1 << 20)
    first.close()
    SegmentWriter(pdir, 1 << 20).close()


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


def test_a_parked_writer_holds_no_descriptor_and_continues_its_segment_at_the_next_append(pdir):
    before = open_descriptors()
    writer = SegmentWriter(pdir, 1 << 20)
    write_batches(writer, [3])
    writer.flush()
    assert writer.park() and writer.parked
    assert open_descriptors() == before
    write_batches(writer, [2], start=3)
    assert not writer.parked and writer.log_end_offset == 5
    writer.flush()
    writer.close()
    assert segment_files(pdir) == ["00000000000000000000.log"]
    assert [f[1] for f in SegmentReader(pdir).read(0, 1 << 20)[1]] == [0, 3]
    assert open_descriptors() == before


def test_a_reader_holds_no_descriptor_for_the_segments_it_maps(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, batch_bytes) as writer:
        write_batches(writer, [2] * 20)
    before = open_descriptors()
    reader = SegmentReader(pdir)
    views = [reader.read(offset, 1 << 20)[0] for offset in range(0, 40, 2)]
    assert len(segment_files(pdir)) == 20 and all(len(v) == batch_bytes for v in views)
    assert open_descriptors() == before
    reader.close()
    assert bytes(views[-1]) == make_batch(38, 2)   # a slice outlives the reader's close


def test_a_writer_with_unflushed_batches_refuses_to_park(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [3])
        assert not writer.park()
        writer.flush()
        assert writer.park()


def test_a_parked_writer_lets_another_writer_in_and_believes_the_disk_when_it_writes_again(pdir):
    writer = SegmentWriter(pdir, 1 << 20)
    write_batches(writer, [3])
    writer.flush()
    writer.park()
    with SegmentWriter(pdir, 1 << 20) as other:
        write_batches(other, [4], start=3)
        other.flush()
        with pytest.raises(segment.PartitionBusy):
            write_batches(writer, [1], start=3)
        assert writer.parked
    with pytest.raises(ValueError, match="below the log end offset 7"):
        write_batches(writer, [1], start=3)
    write_batches(writer, [1], start=7)
    writer.flush()
    writer.close()
    assert segment.log_end_offset(pdir) == 8


def test_the_reader_reports_a_damaged_older_segment(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        write_batches(writer, [2] * 4)
    with open(os.path.join(pdir, segment_files(pdir)[0]), "r+b") as f:
        f.seek(batch_bytes + 16)  # the magic byte of the second batch
        f.write(b"\x07")
    reader = SegmentReader(pdir)
    assert [f[1] for f in reader.read(0, 1 << 20)[1]] == [0]
    with pytest.raises(KafkaException) as caught:
        reader.read(2, 1 << 20)
    assert caught.value.args[0].code() == KafkaError._BAD_MSG


def test_the_sparse_index_keeps_an_entry_about_every_index_interval(pdir):
    with SegmentWriter(pdir, 1 << 24) as writer:
        write_batches(writer, [1] * 2000)
    reader = SegmentReader(pdir)
    assert [f[1] for f in reader.read(1999, 1)[1]] == [1999]
    seg = reader._segments[0]
    gaps = [b - a for a, b in zip(seg.index_positions, seg.index_positions[1:])]
    assert seg.index_positions[0] == 0
    assert gaps and all(segment.INDEX_INTERVAL_BYTES <= g < segment.INDEX_INTERVAL_BYTES + 200 for g in gaps)
    assert [f[1] for f in reader.read(1000, 1)[1]] == [1000]


# ---------------------------------------------------------------------- indexes

def make_timed_batch(base_offset, count, timestamps, value_bytes=20):
    """Like make_batch, with one timestamp per record (the batch's max timestamp is their max)."""
    values = b"".join(bytes([(base_offset + i) % 256]) * value_bytes for i in range(count))
    value_lens = ffi.new("int32_t[]", [value_bytes] * count)
    ts = ffi.new("int64_t[]", timestamps)
    src = ffi.from_buffer(values)
    base_ts = min(timestamps)
    size = lib.shmlog_records_encode(ffi.NULL, 0, count, ffi.NULL, ffi.NULL, src, value_lens, ts, base_ts,
                                     ffi.NULL, ffi.NULL)
    batch = bytearray(HEADER + size)
    dst = ffi.from_buffer("uint8_t[]", batch)
    lib.shmlog_records_encode(dst + HEADER, size, count, ffi.NULL, ffi.NULL, src, value_lens, ts, base_ts,
                              ffi.NULL, ffi.NULL)
    lib.shmlog_batch_write_header(dst, size, base_offset, 0, 0, count, base_ts, max(timestamps), -1, -1, -1)
    return bytes(batch)


def index_entries(pdir, base, time=False):
    path = (index.time_index_path if time else index.offset_index_path)(pdir, base)
    return [tuple(e) for e in index.read_entries(path, index.TIME_DTYPE if time else index.OFFSET_DTYPE).tolist()]


def test_every_segment_has_an_offset_index_and_a_time_index_beside_it(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        write_batches(writer, [2] * 5)
    names = sorted(n for n in os.listdir(pdir) if not n.endswith(".snapshot"))   # producer state: its own test
    assert names == sorted(f"{b:020d}{ext}" for b in (0, 4, 8) for ext in (".log", ".index", ".timeindex"))


def test_the_offset_index_maps_a_batchs_last_offset_to_its_position_every_index_interval(pdir):
    batch_bytes = len(make_batch(0, 3))
    with SegmentWriter(pdir, 1 << 20, index_interval_bytes=2 * batch_bytes) as writer:
        write_batches(writer, [3] * 7)
    assert index_entries(pdir, 0) == [(2, 0), (8, 2 * batch_bytes), (14, 4 * batch_bytes), (20, 6 * batch_bytes)]


def test_a_sealed_segments_time_index_ends_with_its_largest_timestamp(pdir):
    first = make_timed_batch(0, 3, [1000, 5000, 2000])
    second = make_timed_batch(3, 2, [4000, 4500])
    with SegmentWriter(pdir, len(first) + len(second)) as writer:
        writer.append(first, 0, 3)
        writer.append(second, 3, 5)
        writer.append(make_timed_batch(5, 1, [9000]), 5, 6)  # rolls: the first segment is sealed
    assert index_entries(pdir, 0, time=True) == [(5000, 2)]
    assert index_entries(pdir, 5, time=True) == [(9000, 0)]


def test_recovery_rebuilds_a_missing_index_of_an_older_segment_and_says_so(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes, index_interval_bytes=1) as writer:
        write_batches(writer, [2] * 5)
    expected = index_entries(pdir, 0), index_entries(pdir, 0, time=True)
    os.unlink(index.offset_index_path(pdir, 0))

    report = recover(pdir, index_interval_bytes=1)[2]

    assert (index_entries(pdir, 0), index_entries(pdir, 0, time=True)) == expected
    assert "00000000000000000000.log: rebuilt its indexes (00000000000000000000.index is missing)" in report


def test_recovery_rebuilds_an_index_whose_entries_do_not_match_the_log(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 3 * batch_bytes, index_interval_bytes=1) as writer:
        write_batches(writer, [2] * 5)
    expected = index_entries(pdir, 0)
    with open(index.offset_index_path(pdir, 0), "r+b") as f:
        f.seek(8 * 2 + 4)
        f.write((2 * batch_bytes + 5).to_bytes(4, "big"))  # the last entry now points inside its batch

    report = recover(pdir, index_interval_bytes=1)[2]

    assert index_entries(pdir, 0) == expected
    assert "does not match the log" in report


def test_recovery_rebuilds_the_newest_segments_indexes_from_what_survived_the_cut(pdir):
    with SegmentWriter(pdir, 1 << 20, index_interval_bytes=1) as writer:
        batches = write_batches(writer, [2, 2, 2])
    with open(os.path.join(pdir, segment_files(pdir)[0]), "r+b") as f:
        f.truncate(len(batches[0]) + len(batches[1]) + 5)
    recover(pdir, index_interval_bytes=1)
    assert index_entries(pdir, 0) == [(1, 0), (3, len(batches[0]))]


def test_recovery_removes_indexes_whose_segment_is_gone(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        write_batches(writer, [2] * 3)
    os.unlink(os.path.join(pdir, segment.segment_name(0)))
    report = recover(pdir)[2]
    assert not os.path.exists(index.offset_index_path(pdir, 0))
    assert not os.path.exists(index.time_index_path(pdir, 0))
    assert "removed an index whose segment is gone" in report


def test_a_reopened_writer_continues_the_newest_segments_indexes(pdir):
    batch_bytes = len(make_batch(0, 1))
    with SegmentWriter(pdir, 1 << 20, index_interval_bytes=batch_bytes) as writer:
        write_batches(writer, [1, 1])
    with SegmentWriter(pdir, 1 << 20, index_interval_bytes=batch_bytes) as writer:
        write_batches(writer, [1, 1], start=2)
    assert index_entries(pdir, 0) == [(i, i * batch_bytes) for i in range(4)]


def test_a_reader_far_into_a_segment_starts_from_the_offset_index_not_from_byte_zero(pdir):
    with SegmentWriter(pdir, 1 << 26) as writer:
        write_batches(writer, [10] * 3000, value_bytes=100)  # about 3.3 MB
    reader = SegmentReader(pdir)
    assert [f[1] for f in reader.read(29_995, 1)[1]] == [29_990]
    seg = reader._segments[0]
    assert seg.anchor_pos > 3 << 20 and seg.index_positions[0] == seg.anchor_pos
    assert [f[1] for f in reader.read(15, 1)[1]] == [10]  # and back again from the start
    assert seg.anchor_pos == 0


def test_a_reader_ignores_an_index_entry_that_does_not_match_the_log(pdir):
    with SegmentWriter(pdir, 1 << 26) as writer:
        write_batches(writer, [10] * 3000, value_bytes=100)
    with open(index.offset_index_path(pdir, 0), "r+b") as f:
        data = bytearray(f.read())
        for i in range(0, len(data), 8):
            data[i + 4:i + 8] = (int.from_bytes(data[i + 4:i + 8], "big") + 3).to_bytes(4, "big")
        f.seek(0)
        f.write(data)
    assert [f[1] for f in SegmentReader(pdir).read(29_995, 1)[1]] == [29_990]


# ---------------------------------------------------------------------- rolling by time

def test_a_segment_rolls_when_a_batch_is_more_than_segment_ms_newer_than_its_first(pdir):
    with SegmentWriter(pdir, 1 << 20, segment_ms=60_000) as writer:
        writer.append(make_timed_batch(0, 1, [1_000_000]), 0, 1)
        writer.append(make_timed_batch(1, 1, [1_060_000]), 1, 2)  # exactly segment.ms: no roll
        writer.append(make_timed_batch(2, 1, [1_060_001]), 2, 3)
    assert segment_files(pdir) == ["00000000000000000000.log", "00000000000000000002.log"]


def test_segment_ms_counts_from_the_first_batch_recovery_found_after_a_restart(pdir):
    with SegmentWriter(pdir, 1 << 20, segment_ms=60_000) as writer:
        writer.append(make_timed_batch(0, 1, [1_000_000]), 0, 1)
    with SegmentWriter(pdir, 1 << 20, segment_ms=60_000) as writer:
        writer.append(make_timed_batch(1, 1, [1_070_000]), 1, 2)
    assert segment_files(pdir) == ["00000000000000000000.log", "00000000000000000001.log"]


def test_a_full_offset_index_rolls_the_segment(pdir):
    with SegmentWriter(pdir, 1 << 20, index_interval_bytes=1, segment_index_bytes=24) as writer:
        write_batches(writer, [1] * 5)
    assert segment_files(pdir) == ["00000000000000000000.log", "00000000000000000003.log"]


# ---------------------------------------------------------------------- deleting segments

def test_deleting_the_oldest_segments_removes_their_logs_and_indexes(pdir):
    batch_bytes = len(make_batch(0, 2))
    with SegmentWriter(pdir, 2 * batch_bytes) as writer:
        write_batches(writer, [2] * 5)
        assert writer.delete_oldest(2) == [0, 4]
        assert writer.log_start_offset == 8
    assert sorted(n for n in os.listdir(pdir) if not n.endswith(".snapshot")) == [
        "00000000000000000008.index", "00000000000000000008.log", "00000000000000000008.timeindex"]


def test_deleting_every_segment_leaves_an_empty_one_named_by_the_log_end_offset(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [3, 4])
        assert writer.delete_oldest(1) == [0]
        assert (writer.log_start_offset, writer.log_end_offset) == (7, 7)
        write_batches(writer, [2], start=7)
    assert segment_files(pdir) == ["00000000000000000007.log"]
    assert recover(pdir) == (7, 9, "")


def test_after_deleting_everything_a_restart_continues_at_the_old_log_end_offset(pdir):
    with SegmentWriter(pdir, 1 << 20) as writer:
        write_batches(writer, [5])
        writer.delete_oldest(1)
    with SegmentWriter(pdir, 1 << 20) as writer:
        assert (writer.log_start_offset, writer.log_end_offset) == (5, 5)


def test_retention_bytes_keeps_the_newest_segments_that_fit(pdir):
    segs = [(0, 10, 100, 0), (10, 20, 100, 0), (20, 30, 100, 0), (30, 35, 50, 0)]
    assert retention.deletable(segs, 0, -1, 150, 0) == (2, "retention.bytes")
    assert retention.deletable(segs, 0, -1, 350, 0) == (0, None)


def test_retention_ms_deletes_a_prefix_of_segments_older_than_it(pdir):
    segs = [(0, 10, 1, 1000), (10, 20, 1, 5000), (20, 30, 1, 2000), (30, 35, 1, 9000)]
    assert retention.deletable(segs, 10_000, 6000, -1, 0) == (1, "retention.ms")
    assert retention.deletable(segs, 10_000, 500, -1, 0) == (4, "retention.ms")


def test_the_log_start_offset_deletes_segments_wholly_below_it(pdir):
    segs = [(0, 10, 1, 0), (10, 20, 1, 0), (20, 30, 1, 0)]
    assert retention.deletable(segs, 0, -1, -1, 15) == (1, "log start offset")
    assert retention.deletable(segs, 0, -1, -1, 30) == (3, "log start offset")


def test_an_empty_active_segment_is_never_deletable(pdir):
    segs = [(0, 10, 100, 0), (10, 10, 0, 0)]
    assert retention.deletable(segs, 10**12, 1, 0, 10) == (1, "log start offset")


def test_cleanup_policy_compact_alone_turns_time_and_size_retention_off(pdir):
    segs = [(0, 10, 100, 0), (10, 20, 100, 0)]
    assert retention.deletable(segs, 10**12, 1, 0, 0, delete_policy=False) == (0, None)


def test_the_log_start_checkpoint_round_trips(pdir):
    os.makedirs(pdir)
    assert retention.read_checkpoint(pdir) == 0
    retention.write_checkpoint(pdir, 1234)
    assert retention.read_checkpoint(pdir) == 1234


# ---------------------------------------------------------------------- offsets for times

def test_offset_for_time_finds_the_first_record_at_or_after_the_timestamp(pdir):
    batches = [make_timed_batch(0, 3, [100, 300, 200]), make_timed_batch(3, 3, [400, 500, 600])]
    with SegmentWriter(pdir, len(batches[0])) as writer:  # one batch per segment
        writer.append(batches[0], 0, 3)
        writer.append(batches[1], 3, 6)
    reader = SegmentReader(pdir)
    assert reader.offset_for_time(250) == 1
    assert reader.offset_for_time(301) == 3
    assert reader.offset_for_time(600) == 5
    assert reader.offset_for_time(601) is None
    assert reader.offset_for_time(0, min_offset=2) == 2


def test_offset_for_time_skips_sealed_segments_by_their_largest_timestamp(pdir):
    batches = [make_timed_batch(i * 2, 2, [i * 10, i * 10 + 5]) for i in range(4)]
    with SegmentWriter(pdir, len(batches[0])) as writer:
        for i, b in enumerate(batches):
            writer.append(b, i * 2, i * 2 + 2)
    for base in (0, 2):  # damaged: reading them would raise, so finding offset 5 proves they were skipped
        with open(segment.segment_path(pdir, base), "r+b") as f:
            f.write(b"\xee" * len(batches[0]))
    assert SegmentReader(pdir).offset_for_time(21) == 5


def test_recovery_rebuilds_a_time_index_whose_entry_names_the_wrong_timestamp(pdir):
    batches = [make_timed_batch(i * 2, 2, [1000 + i, 2000 + i]) for i in range(4)]
    with SegmentWriter(pdir, 3 * len(batches[0]), index_interval_bytes=1) as writer:
        for i, b in enumerate(batches):
            writer.append(b, i * 2, i * 2 + 2)
    expected = index_entries(pdir, 0, time=True)
    with open(index.time_index_path(pdir, 0), "r+b") as f:
        f.write((1500).to_bytes(8, "big"))  # still in order, but batch 0..1 has max timestamp 2000

    report = recover(pdir, index_interval_bytes=1)[2]

    assert index_entries(pdir, 0, time=True) == expected
    assert "time index entry 0 (timestamp 1500, offset 1) does not match the log" in report


CLEAN_CLOSE = segment.recovery.CLEAN_CLOSE_NAME
BIG_SEGMENT = 64 << 20


def write_past_clean_close_size(writer, start=0):
    """Batches of 10 records of 1 KB each, past the size from which a clean close is noted."""
    count = segment.writer.CLEAN_CLOSE_MIN_BYTES // 10_000 + 2
    return write_batches(writer, [10] * count, start, value_bytes=1000)


def flip_a_byte_in_the_middle(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_writer_closed_after_a_flush_is_reopened_from_its_clean_close_without_walking_the_segment(pdir):
    with SegmentWriter(pdir, BIG_SEGMENT) as writer:
        batches = write_past_clean_close_size(writer)
        writer.flush()
    assert os.path.exists(os.path.join(pdir, CLEAN_CLOSE))
    end = len(batches) * 10
    # Damage no walk would let pass: the reopened writer trusts the clean close (as Kafka trusts
    # a clean shutdown) and keeps every byte.
    flip_a_byte_in_the_middle(os.path.join(pdir, segment_files(pdir)[0]))
    with SegmentWriter(pdir, BIG_SEGMENT) as writer:
        assert (writer.log_end_offset, writer.recovery_report) == (end, "")
        assert not os.path.exists(os.path.join(pdir, CLEAN_CLOSE))
    assert recover(pdir)[1] < end   # a walk does find it


def test_a_clean_close_that_no_longer_matches_the_segment_is_ignored_and_the_tail_is_walked(pdir):
    with SegmentWriter(pdir, BIG_SEGMENT) as writer:
        batches = write_past_clean_close_size(writer)
        writer.flush()
    with open(os.path.join(pdir, segment_files(pdir)[0]), "ab") as f:
        f.write(make_batch(len(batches) * 10, 1)[:30])
    with SegmentWriter(pdir, BIG_SEGMENT) as writer:
        assert writer.log_end_offset == len(batches) * 10
        assert "cut 30 bytes" in writer.recovery_report


def test_a_writer_closed_with_records_not_flushed_leaves_no_clean_close(pdir):
    with SegmentWriter(pdir, BIG_SEGMENT) as writer:
        write_past_clean_close_size(writer)
    assert not os.path.exists(os.path.join(pdir, CLEAN_CLOSE))


def test_a_writer_reopened_from_a_clean_close_continues_the_indexes_as_a_rebuild_would_write_them(pdir):
    with SegmentWriter(pdir, BIG_SEGMENT) as writer:
        first = write_past_clean_close_size(writer)
        writer.flush()
    with SegmentWriter(pdir, BIG_SEGMENT) as writer:
        write_past_clean_close_size(writer, start=len(first) * 10)
        writer.flush()
    kept = (index_entries(pdir, 0), index_entries(pdir, 0, time=True))
    os.unlink(os.path.join(pdir, CLEAN_CLOSE))
    recover(pdir)   # rebuilds the newest segment's indexes from a walk
    assert (index_entries(pdir, 0), index_entries(pdir, 0, time=True)) == kept
    assert len(kept[0]) == 2 * len(first)   # batches of 10 KB: an entry each


def test_a_clean_close_leaves_a_producer_snapshot_at_the_log_end(pdir):
    with SegmentWriter(pdir, BIG_SEGMENT) as writer:
        batches = write_batches(writer, [3, 4])
        writer.flush()
    assert producer_state.list_snapshots(pdir) == [7]
    assert len(batches) == 2


def _cachestat(fd):
    """(dirty pages, pages under writeback) of fd's page cache, by the cachestat system call
    (Linux 6.5+); None where the kernel has none."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    cache_range = (ctypes.c_uint64 * 2)(0, 0)          # offset 0, length 0: the whole file
    stat = (ctypes.c_uint64 * 5)()                      # cache, dirty, writeback, evicted, recently evicted
    if libc.syscall(451, fd, ctypes.byref(cache_range), ctypes.byref(stat), 0) != 0:   # 451: cachestat, x86-64
        return None
    return stat[1], stat[2]


def test_a_growing_segment_has_its_writeback_started_so_little_is_left_dirty_for_the_sync_at_its_roll(tmp_path):
    pdir = str(tmp_path / "t-0")
    batch_bytes = len(make_batch(0, 64, 1000))
    with SegmentWriter(pdir, 1 << 30) as writer:
        offset = 0
        while offset * batch_bytes // 64 < 64 << 20:
            writer.append(make_batch(offset, 64, 1000), offset, offset + 64)
            offset += 64
        with open(os.path.join(pdir, "00000000000000000000.log"), "rb") as f:
            seen = _cachestat(f.fileno())
    if seen is None:
        pytest.skip("the kernel has no cachestat system call (Linux 6.5+) to count a file's dirty pages")
    dirty_bytes = seen[0] * os.sysconf("SC_PAGE_SIZE")
    assert dirty_bytes <= 16 << 20, seen   # of the 64 MiB written, none fdatasynced
