"""The log cleaner (shmlog/log/cleaner.py) on real segment files: what a reader sees after a clean."""
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shmlog._native import ffi, lib
from shmlog.log import cleaner, codec, control_record, retention
from shmlog.log.batch import ATTR_CONTROL, ATTR_TRANSACTIONAL, HEADER, HEADER_BYTES, BatchWalker, RecordsBuilder
from shmlog.log.partition_reader import _decode_records
from shmlog.log.segment import SegmentReader, SegmentWriter, list_segments, recover

NOW_MS = 10_000_000
FORCE = cleaner.Policy(min_cleanable_dirty_ratio=0.0, delete_retention_ms=1000)


def keyed_batch(base_offset, records, producer_id=-1, attributes=0, compression=0):
    """A RecordBatch v2 of (key, value, timestamp) records with dense offsets from base_offset."""
    builder = RecordsBuilder()
    for key, value, ts in records:
        builder.add(key, value, ts, None, 0)
    section, base_ts, max_ts = builder.encode()
    if compression:
        section, used = codec.compress_records(bytes(section), compression)
        attributes |= used
    batch = bytearray(HEADER_BYTES + len(section))
    batch[HEADER_BYTES:] = section
    lib.shmlog_batch_write_header(ffi.from_buffer("uint8_t[]", batch), len(section), base_offset, 0, attributes,
                                  len(records), base_ts, max_ts, producer_id, 0 if producer_id >= 0 else -1,
                                  base_offset if producer_id >= 0 else -1)
    return bytes(batch)


def write_log(pdir, batches_of_records, segment_bytes=4096, **kw):
    """Append one batch per list of records; returns the next offset. The last segment stays active."""
    offset = 0
    with SegmentWriter(pdir, segment_bytes) as writer:
        for records in batches_of_records:
            writer.append(keyed_batch(offset, records, **kw), offset, offset + len(records))
            offset += len(records)
        writer.flush()
    return offset


def read_all(pdir):
    """[(offset, key, value)] of every record a reader finds in the segment files, oldest first."""
    out, walker = [], BatchWalker()
    with SegmentReader(pdir) as reader:
        offset = reader.log_start_offset
        while True:
            buf, frames = reader.read(offset, 1 << 16)
            if not frames:
                return out
            offset = _decode_records(walker, buf, frames, offset, out)


def sealed_end(pdir):
    return list_segments(pdir)[-1]


@pytest.fixture
def pdir(tmp_path):
    return str(tmp_path / "topic-0")


def test_a_clean_keeps_only_the_latest_record_of_each_key_at_its_original_offset(pdir):
    write_log(pdir, [[(b"k%d" % (i % 5), b"v%d" % i, NOW_MS) for i in range(j * 10, j * 10 + 10)]
                     for j in range(20)], segment_bytes=1024)
    before = read_all(pdir)
    end = sealed_end(pdir)
    result = cleaner.clean(pdir, FORCE, NOW_MS)
    assert result is not None and result.records_removed > 0 and result.bytes_reclaimed > 0
    after = read_all(pdir)
    latest = {}
    for offset, key, value in before:
        if offset < end:
            latest[key] = (offset, key, value)
    expected = sorted(latest.values()) + [r for r in before if r[0] >= end]
    assert after == expected


def test_offsets_read_after_a_clean_strictly_increase(pdir):
    write_log(pdir, [[(b"k%d" % (i % 3), b"v", NOW_MS) for i in range(8)] for _ in range(40)], segment_bytes=512)
    cleaner.clean(pdir, FORCE, NOW_MS)
    offsets = [o for o, _, _ in read_all(pdir)]
    assert offsets == sorted(set(offsets))


def test_a_tombstone_stays_until_delete_retention_ms_then_goes(pdir):
    write_log(pdir, [[(b"a", b"1", NOW_MS), (b"b", b"2", NOW_MS)], [(b"a", None, NOW_MS)], [(b"c", b"3", NOW_MS)]],
              segment_bytes=1)   # one batch per segment
    cleaner.clean(pdir, FORCE, NOW_MS)
    assert [(k, v) for _, k, v in read_all(pdir)] == [(b"b", b"2"), (b"a", None), (b"c", b"3")]
    cleaner.clean(pdir, FORCE, NOW_MS + 1001, force=True)
    assert [(k, v) for _, k, v in read_all(pdir)] == [(b"b", b"2"), (b"c", b"3")]


def test_segments_younger_than_min_compaction_lag_ms_are_not_cleaned(pdir):
    write_log(pdir, [[(b"a", b"1", NOW_MS)], [(b"a", b"2", NOW_MS)], [(b"a", b"3", NOW_MS)]], segment_bytes=1)
    lagging = FORCE._replace(min_compaction_lag_ms=60_000)
    assert cleaner.clean(pdir, lagging, NOW_MS + 1000) is None
    assert len(read_all(pdir)) == 3
    assert cleaner.clean(pdir, lagging, NOW_MS + 60_000) is not None
    assert [v for _, _, v in read_all(pdir)] == [b"2", b"3"]


def test_a_partition_below_min_cleanable_dirty_ratio_is_not_cleaned_until_max_compaction_lag_ms(pdir):
    write_log(pdir, [[(b"a", b"1", NOW_MS)], [(b"a", b"2", NOW_MS)], [(b"b", b"3", NOW_MS)]], segment_bytes=1)
    cleaner.clean(pdir, FORCE, NOW_MS)
    with SegmentWriter(pdir, 1) as writer:   # one more dirty segment, small against the clean part
        writer.append(keyed_batch(3, [(b"a", b"4", NOW_MS)]), 3, 4)
        writer.append(keyed_batch(4, [(b"z", b"5", NOW_MS)]), 4, 5)
        writer.flush()
    strict = FORCE._replace(min_cleanable_dirty_ratio=0.9, max_compaction_lag_ms=5000)
    assert cleaner.plan(pdir, strict, NOW_MS).dirty_ratio < 0.9
    assert cleaner.clean(pdir, strict, NOW_MS + 10) is None
    assert cleaner.clean(pdir, strict, NOW_MS + 5001) is not None
    assert [v for _, _, v in read_all(pdir)] == [b"3", b"4", b"5"]


def test_the_active_segment_is_never_rewritten(pdir):
    write_log(pdir, [[(b"a", b"%d" % i, NOW_MS)] for i in range(5)], segment_bytes=1 << 20)
    assert len(list_segments(pdir)) == 1
    assert cleaner.clean(pdir, FORCE, NOW_MS, force=True) is None
    assert len(read_all(pdir)) == 5


def test_compressed_batches_are_cleaned_and_stay_compressed(pdir):
    write_log(pdir, [[(b"k%d" % (i % 4), b"x" * 50, NOW_MS) for i in range(20)] for _ in range(6)],
              segment_bytes=256, compression=codec.codec_id("gzip"))
    cleaner.clean(pdir, FORCE, NOW_MS)
    got = read_all(pdir)
    assert len({k for _, k, _ in got}) == 4
    assert len(got) < 6 * 20


def test_control_batches_and_a_producers_last_batch_are_kept(pdir):
    with SegmentWriter(pdir, 1) as writer:
        writer.append(keyed_batch(0, [(b"a", b"1", NOW_MS)], producer_id=7), 0, 1)
        writer.append(keyed_batch(1, [(b"a", b"2", NOW_MS)], producer_id=7), 1, 2)
        marker = keyed_batch(2, [(b"\0\0\0\0", b"", NOW_MS)], producer_id=7, attributes=ATTR_CONTROL | 0x10)
        writer.append(marker, 2, 3)
        writer.append(keyed_batch(3, [(b"a", b"3", NOW_MS)], producer_id=8), 3, 4)
        writer.append(keyed_batch(4, [(b"b", b"4", NOW_MS)]), 4, 5)
        writer.flush()
    cleaner.clean(pdir, FORCE, NOW_MS)
    with SegmentReader(pdir) as reader:
        frames = []
        offset = 0
        while True:
            _, found = reader.read(offset, 1 << 16)
            if not found:
                break
            frames += [(base, count) for _, base, count, _ in found]
            offset = found[-1][1] + found[-1][2]
    # every batch keeps its base offset; producer 7's emptied last batch and the marker stay
    assert [base for base, _ in frames] == [0, 1, 2, 3, 4]
    assert [v for _, _, v in read_all(pdir)] == [b"3", b"4"]


def test_a_crash_before_the_swap_leaves_the_old_segment_and_recover_swaps_removes_the_rest(pdir):
    write_log(pdir, [[(b"a", b"%d" % i, NOW_MS)] for i in range(4)], segment_bytes=1)
    before = read_all(pdir)
    base = list_segments(pdir)[0]
    # the state after .cleaned files were renamed to .swap and the process died
    open(os.path.join(pdir, f"{base:020d}.log.swap"), "wb").write(b"garbage")
    open(os.path.join(pdir, f"{base:020d}.index.cleaned"), "wb").write(b"x")
    notes = cleaner.recover_swaps(pdir)
    assert notes and not [n for n in os.listdir(pdir) if n.endswith((".swap", ".cleaned"))]
    assert read_all(pdir) == before
    recover(pdir)


def test_a_segment_deleted_by_retention_during_a_clean_stays_deleted(pdir):
    write_log(pdir, [[(b"a", b"%d" % i, NOW_MS)] for i in range(4)], segment_bytes=1)
    base = list_segments(pdir)[0]
    cleaner._write_cleaned(pdir, base, [], 4096)
    os.unlink(os.path.join(pdir, f"{base:020d}.log"))
    assert cleaner._swap_in(pdir, base) is False
    assert base not in list_segments(pdir)
    assert not [n for n in os.listdir(pdir) if n.endswith((".swap", ".cleaned"))]


def test_a_reader_that_mapped_a_segment_before_the_swap_keeps_reading_it(pdir):
    write_log(pdir, [[(b"a", b"%d" % i, NOW_MS)] for i in range(4)], segment_bytes=1)
    with SegmentReader(pdir) as reader:
        buf, frames = reader.read(0, 1 << 16)
        cleaner.clean(pdir, FORCE, NOW_MS)
        assert len(frames) == 1 and bytes(buf[:8]) == (0).to_bytes(8, "big")
        # moving on, it finds the rewritten segments
        _, later = reader.read(1, 1 << 16)
        assert later and later[0][1] >= 1


def test_recovery_accepts_cleaned_segments_with_offset_gaps(pdir):
    write_log(pdir, [[(b"a", b"%d" % i, NOW_MS), (b"b", b"x", NOW_MS)] for i in range(6)], segment_bytes=200)
    cleaner.clean(pdir, FORCE, NOW_MS)
    before = read_all(pdir)
    _, end, report = recover(pdir)
    assert "cannot be read" not in report and "damaged" not in report and "in no segment" not in report
    assert read_all(pdir) == before


# ---------------------------------------------------------------------- the model

record = st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"]),
                   st.one_of(st.none(), st.binary(min_size=0, max_size=12)),
                   st.integers(NOW_MS - 5000, NOW_MS))


@settings(max_examples=int(os.environ.get("SHMLOG_COMPACTION_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(record, min_size=1, max_size=6), min_size=1, max_size=40),
       segment_bytes=st.sampled_from([1, 200, 600, 4096]),
       retention_ms=st.sampled_from([0, 2000, 10_000]),
       passes=st.integers(1, 3),
       merge_bytes=st.sampled_from([0, 300, 1000, 1 << 20]))
def test_after_cleaning_a_reader_sees_the_latest_value_of_each_key_at_unchanged_offsets(
        tmp_path_factory, batches, segment_bytes, retention_ms, passes, merge_bytes):
    pdir = str(tmp_path_factory.mktemp("model") / "t-0")
    write_log(pdir, batches, segment_bytes=segment_bytes)
    everything = read_all(pdir)
    active = sealed_end(pdir)
    policy = FORCE._replace(delete_retention_ms=retention_ms, segment_bytes=merge_bytes)
    for _ in range(passes):
        cleaner.clean(pdir, policy, NOW_MS, force=True)
    got = read_all(pdir)
    # the model: below the active segment, each key's latest record, a tombstone only while young
    timestamps = {}
    offset = 0
    for records in batches:
        for _, _, ts in records:
            timestamps[offset] = ts
            offset += 1
    latest = {}
    for off, key, value in everything:
        if off < active:
            latest[key] = (off, key, value)
    expected = sorted(r for r in latest.values()
                      if r[2] is not None or timestamps[r[0]] >= NOW_MS - retention_ms)
    expected += [r for r in everything if r[0] >= active]
    assert got == expected
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets))


def test_log_cleaner_io_max_bytes_per_second_slows_a_clean_to_that_rate(pdir):
    write_log(pdir, [[(b"k%d" % (i % 3), b"x" * 200, NOW_MS) for i in range(10)] for _ in range(30)],
              segment_bytes=4096)
    total = sum(s.size for s in cleaner.plan(pdir, FORCE, NOW_MS).segments)
    rate = total / 0.5   # reading alone takes 0.5 s at this rate
    result = cleaner.clean(pdir, FORCE, NOW_MS, throttle=cleaner.Throttle(rate))
    assert result.seconds >= 0.45


# ---------------------------------------------------------------------- transactions

def marker_batch(offset, producer_id, commit, ts=NOW_MS):
    section, base_ts, max_ts = control_record.marker_records(commit, ts)
    batch = bytearray(HEADER_BYTES + len(section))
    batch[HEADER_BYTES:] = section
    lib.shmlog_batch_write_header(ffi.from_buffer("uint8_t[]", batch), len(section), offset, 0,
                                  control_record.MARKER_ATTRIBUTES, 1, base_ts, max_ts, producer_id, 0, -1)
    return bytes(batch)


def write_batches(pdir, batches):
    """[(batch bytes, record count)] appended one segment each; the last segment stays active."""
    offset = 0
    with SegmentWriter(pdir, 1) as writer:
        for batch, count in batches:
            writer.append(batch, offset, offset + count)
            offset += count
        writer.flush()


def batch_records(pdir):
    """{base offset: records count} of every batch in the segment files (empty batches too)."""
    out, offset = {}, 0
    with SegmentReader(pdir) as reader:
        while True:
            buf, found = reader.read(offset, 1 << 16)
            if not found:
                return out
            out.update((base, HEADER.unpack_from(buf, pos)[12]) for pos, base, _, _ in found)
            offset = found[-1][1] + found[-1][2]


def test_records_of_an_aborted_transaction_are_removed_and_its_abort_marker_kept(pdir):
    tx = ATTR_TRANSACTIONAL
    write_batches(pdir, [(keyed_batch(0, [(b"a", b"1", NOW_MS)]), 1),
                         (keyed_batch(1, [(b"a", b"aborted", NOW_MS)], producer_id=5, attributes=tx), 1),
                         (marker_batch(2, 5, commit=False), 1),
                         (keyed_batch(3, [(b"b", b"2", NOW_MS)]), 1)])
    control_record.append_aborted(pdir, 5, 0, 1, 1, 1)
    cleaner.clean(pdir, FORCE, NOW_MS + 10_000, force=True)
    assert read_all(pdir) == [(0, b"a", b"1"), (3, b"b", b"2")]   # the aborted value did not replace a's
    assert batch_records(pdir)[2] == 1


def test_a_commit_marker_goes_after_delete_retention_ms_once_no_record_of_its_transaction_is_left(pdir):
    tx = ATTR_TRANSACTIONAL
    write_batches(pdir, [(keyed_batch(0, [(b"x", b"first", NOW_MS)]), 1),
                         (keyed_batch(1, [(b"a", b"1", NOW_MS)], producer_id=5, attributes=tx), 1),
                         (marker_batch(2, 5, commit=True), 1),
                         (keyed_batch(3, [(b"b", b"2", NOW_MS)], producer_id=6, attributes=tx), 1),
                         (marker_batch(4, 6, commit=True), 1),
                         (keyed_batch(5, [(b"a", b"3", NOW_MS)]), 1),
                         (keyed_batch(6, [(b"z", b"last", NOW_MS)]), 1)])
    cleaner.clean(pdir, FORCE, NOW_MS, force=True)
    assert batch_records(pdir)[2] == batch_records(pdir)[4] == 1   # younger than delete.retention.ms: kept
    cleaner.clean(pdir, FORCE, NOW_MS + 1001, force=True)
    markers = batch_records(pdir)
    assert markers[2] == 0 and markers[4] == 1   # 6's transaction still holds b's latest value
    assert read_all(pdir) == [(0, b"x", b"first"), (3, b"b", b"2"), (5, b"a", b"3"), (6, b"z", b"last")]


def test_a_transaction_without_a_marker_yet_holds_the_clean_back_before_its_segment(pdir):
    write_batches(pdir, [(keyed_batch(0, [(b"a", b"1", NOW_MS)]), 1),
                         (keyed_batch(1, [(b"a", b"2", NOW_MS)]), 1),
                         (keyed_batch(2, [(b"a", b"open", NOW_MS)], producer_id=5, attributes=ATTR_TRANSACTIONAL), 1),
                         (keyed_batch(3, [(b"a", b"4", NOW_MS)]), 1),
                         (keyed_batch(4, [(b"b", b"5", NOW_MS)]), 1)])
    result = cleaner.clean(pdir, FORCE, NOW_MS, force=True)
    assert result.cleaned_up_to == 2
    assert [o for o, _, _ in read_all(pdir)] == [1, 2, 3, 4]


def test_a_fenced_producers_late_batch_is_removed_as_aborted_without_a_marker_after_it(pdir):
    write_batches(pdir, [(keyed_batch(0, [(b"a", b"1", NOW_MS)]), 1),
                         (marker_batch(1, 5, commit=False), 1),
                         (keyed_batch(2, [(b"a", b"late", NOW_MS)], producer_id=5, attributes=ATTR_TRANSACTIONAL), 1),
                         (keyed_batch(3, [(b"b", b"2", NOW_MS)]), 1)])
    control_record.append_aborted(pdir, 5, 0, 0, control_record.OPEN_ENDED, 0)
    result = cleaner.clean(pdir, FORCE, NOW_MS, force=True)
    assert result.cleaned_up_to == 3
    assert read_all(pdir) == [(0, b"a", b"1"), (3, b"b", b"2")]


def test_the_throttle_gives_at_most_one_second_of_credit_after_a_long_idle_spell():
    import time
    throttle = cleaner.Throttle(1000)
    throttle.last -= 100          # as if the cleaner had been idle for 100 s
    started = time.monotonic()
    throttle.account(1500)        # one second of credit covers 1000 bytes; the rest waits
    assert time.monotonic() - started >= 0.45


# ---------------------------------------------------------------------- merging small cleaned segments

def segment_ranges(pdir):
    """[(base, end offset, size)] of every sealed segment, as its batches say."""
    from shmlog.log.segment.format import _Mapped, _walk, segment_path
    out = []
    for base in list_segments(pdir)[:-1]:
        mapped = _Mapped.of_path(segment_path(pdir, base))
        try:
            _, end, bad = _walk(mapped, base, True, gaps=True)
            assert bad is None
            out.append((base, end, mapped.size))
        finally:
            mapped.close()
    return out


def test_small_cleaned_segments_are_merged_into_segments_of_at_most_segment_bytes(pdir):
    write_log(pdir, [[(b"k%d" % (i % 4), b"v%d" % i, NOW_MS)] for i in range(60)], segment_bytes=1)
    before = read_all(pdir)
    cleaner.clean(pdir, FORCE, NOW_MS)                     # one segment each: the first pass only shrinks them
    sealed = len(list_segments(pdir)) - 1
    result = cleaner.clean(pdir, FORCE._replace(segment_bytes=400), NOW_MS, force=True)
    assert result.segments_merged > 0
    ranges = segment_ranges(pdir)
    assert len(ranges) < sealed
    assert all(size <= 400 for _, _, size in ranges)
    assert all(end <= next_base for (_, end, _), (next_base, _, _) in zip(ranges, ranges[1:]))   # no overlap
    end = sealed_end(pdir)
    latest = {}
    for offset, key, value in before:
        if offset < end:
            latest[key] = (offset, key, value)
    assert read_all(pdir) == sorted(latest.values()) + [r for r in before if r[0] >= end]
    _, _, report = recover(pdir)
    assert report == ""


def test_every_offset_of_a_merged_segment_is_found_by_a_reader_seeking_to_it(pdir):
    write_log(pdir, [[(b"k%d" % i, b"v%d" % i, NOW_MS)] for i in range(40)], segment_bytes=1)
    cleaner.clean(pdir, FORCE._replace(segment_bytes=1 << 20), NOW_MS, force=True)
    assert len(list_segments(pdir)) == 2                   # all sealed ones in one, the active one
    with SegmentReader(pdir) as reader:
        for offset in range(39):
            _, frames = reader.read(offset, 1)
            assert frames[0][1] == offset


def test_a_checkpoint_past_the_log_end_after_a_truncation_makes_the_whole_log_dirty(pdir):
    write_log(pdir, [[(b"a", b"%d" % i, NOW_MS)] for i in range(6)], segment_bytes=1)
    retention.write_checkpoint(pdir, 1000, cleaner.CHECKPOINT_NAME)   # as left before the log was cut back
    plan = cleaner.plan(pdir, FORCE, NOW_MS)
    assert plan.first_dirty == 0 and plan.due
    cleaner.clean(pdir, FORCE, NOW_MS)
    assert [v for _, _, v in read_all(pdir)] == [b"4", b"5"]


def test_segments_of_a_compact_delete_topic_are_not_merged():
    assert cleaner.policy_for({"cleanup.policy": "compact", "segment.bytes": 4096}).segment_bytes == 4096
    assert cleaner.policy_for({"cleanup.policy": "compact,delete", "segment.bytes": 4096}).segment_bytes == 0
