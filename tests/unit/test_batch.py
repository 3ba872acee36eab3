"""shmlog.log.batch: the header accessors and the one Python batch decode loop (BatchWalker)."""
import pytest

from shmlog._native import ffi, lib
from shmlog.log import codec
from shmlog.log.batch import (
    ATTR_COMPRESSION_MASK,
    ATTR_CONTROL,
    ATTR_TRANSACTIONAL,
    COMPRESSED,
    CORRUPT,
    HEADER,
    HEADER_BYTES,
    HEADER_PREFIX,
    OFF_LAST_OFFSET_DELTA,
    RECORDS,
    SKIP,
    BatchWalker,
    RecordsBuilder,
    attributes_of,
    base_offset_of,
    carries_records,
    max_timestamp_of,
    record_count_of,
)
from shmlog.log.segment import SegmentReader, SegmentWriter

TS = 1_700_000_000_000


def make_batch(base, values, attributes=0, codec_name=None, offsets=None):
    """A RecordBatch v2 holding `values` (keys b"k<offset>"), as the producer builds it.

    codec_name compresses the records section; offsets > len(values) makes the batch account
    for more offsets than it holds records (as a repaired claim: zero records, N offsets).
    """
    builder = RecordsBuilder()
    for i, value in enumerate(values):
        builder.add(b"k%d" % (base + i), value, TS + i, None, len(value))
    section, base_ts, max_ts = builder.encode() if values else (b"", TS, TS)
    if codec_name is not None:
        section, codec_bits = codec.compress_records(bytes(section), codec.codec_id(codec_name))
        assert codec_bits, "the test values must compress"
        attributes |= codec_bits
    batch = bytearray(HEADER_BYTES + len(section))
    batch[HEADER_BYTES:] = section
    ptr = ffi.from_buffer(batch)
    lib.shmlog_batch_write_header(ptr, len(section), base, 0, attributes, len(values), base_ts, max_ts, -1, -1, -1)
    if offsets is not None and offsets != len(values):
        batch[OFF_LAST_OFFSET_DELTA:OFF_LAST_OFFSET_DELTA + 4] = (offsets - 1).to_bytes(4, "big")
        crc = lib.shmlog_crc32c(0, ptr + lib.SHMLOG_BATCH_OFF_ATTRIBUTES, len(batch) - lib.SHMLOG_BATCH_OFF_ATTRIBUTES)
        batch[lib.SHMLOG_BATCH_OFF_CRC:lib.SHMLOG_BATCH_OFF_CRC + 4] = crc.to_bytes(4, "big")
    return bytes(batch)


def frames_of(*batches):
    """(buffer, frames) as a fetch returns them: the batches back to back, and per batch
    (position, base offset, offset count, batch bytes)."""
    buf, frames = bytearray(), []
    for batch in batches:
        base, length, *_, last_delta = HEADER_PREFIX.unpack_from(batch, 0)
        frames.append((len(buf), base, last_delta + 1, len(batch)))
        buf += batch
    return buf, frames


def a_log():
    """Offsets 0-2 plain, 3 a transaction marker, 4-6 a repaired claim (no records), 7-9
    compressed, 10-11 plain."""
    return [
        make_batch(0, [b"a", b"b", b"c"]),
        make_batch(3, [b"\0\0\0\0\0\0"], ATTR_CONTROL | ATTR_TRANSACTIONAL),
        make_batch(4, [], ATTR_CONTROL, offsets=3),
        make_batch(7, [b"x" * 300, b"y" * 300, b"z" * 300], codec_name="gzip"),
        make_batch(10, [b"j", b"k"]),
    ]


def walk(walker, buf, frames, wanted):
    """The walk as (decision, index, wanted while yielded, offsets of the refs or the refs)."""
    out = []
    for decision, i, attributes, refs in walker.walk(buf, frames, wanted):
        assert attributes == attributes_of(buf, frames[i][0])
        got = [int(o) for o in refs["offset"]] if decision == RECORDS else refs
        out.append((decision, i, walker.wanted, got))
    return out


def test_the_header_accessors_read_what_the_header_struct_reads():
    batch = make_batch(42, [b"v1", b"v2"], ATTR_TRANSACTIONAL)
    fields = HEADER.unpack_from(batch, 0)
    assert (base_offset_of(batch), attributes_of(batch), record_count_of(batch), max_timestamp_of(batch)) == \
        (fields[0], fields[5], fields[12], fields[8]) == (42, ATTR_TRANSACTIONAL, 2, TS + 1)
    assert HEADER_PREFIX.unpack_from(batch, 0) == fields[:7]
    padded = b"\xff" * 5 + batch
    assert (base_offset_of(padded, 5), attributes_of(padded, 5), record_count_of(padded, 5)) == \
        (42, ATTR_TRANSACTIONAL, 2)


@pytest.mark.parametrize("attributes, count, carries", [
    (0, 1, True), (ATTR_TRANSACTIONAL, 5, True), (codec.GZIP, 2, True),
    (ATTR_CONTROL, 1, False), (ATTR_CONTROL | ATTR_TRANSACTIONAL, 1, False), (0, 0, False), (ATTR_CONTROL, 0, False),
])
def test_carries_records_is_false_for_control_and_empty_batches(attributes, count, carries):
    assert carries_records(attributes, count) is carries


def test_the_walk_decides_each_batch_and_ends_past_the_last():
    buf, frames = frames_of(*a_log())
    walker = BatchWalker()
    assert walk(walker, buf, frames, 0) == [
        (RECORDS, 0, 0, [0, 1, 2]),
        (SKIP, 1, 3, None),          # a control batch (transaction marker)
        (SKIP, 2, 4, None),          # an empty batch that accounts for offsets 4-6
        (COMPRESSED, 3, 7, None),
        (RECORDS, 4, 10, [10, 11]),
    ]
    assert walker.wanted == 12


def test_the_refs_of_a_batch_point_into_it():
    buf, frames = frames_of(*a_log())
    walker = BatchWalker()
    seen = {}
    for decision, i, _, refs in walker.walk(buf, frames, 0):
        if decision == RECORDS:
            pos = frames[i][0]
            for off, ts, kp, kl, vp, vl, _, _ in refs.tolist():
                seen[off] = (bytes(buf[pos + kp:pos + kp + kl]), bytes(buf[pos + vp:pos + vp + vl]), ts)
    assert seen == {0: (b"k0", b"a", TS), 1: (b"k1", b"b", TS + 1), 2: (b"k2", b"c", TS + 2),
                    10: (b"k10", b"j", TS), 11: (b"k11", b"k", TS + 1)}


def test_a_compressed_batch_is_handed_to_the_caller_whole():
    buf, frames = frames_of(*a_log())
    (decision, i, attributes, refs), = [d for d in BatchWalker().walk(buf, frames, 7) if d[0] != SKIP][:1]
    assert (decision, i, attributes & ATTR_COMPRESSION_MASK, refs) == (COMPRESSED, 3, codec.GZIP, None)
    pos, _, _, nbytes = frames[i]
    records, refs = codec.decode_compressed_batch(memoryview(buf)[pos:pos + nbytes], True)
    assert [int(o) for o in refs["offset"]] == [7, 8, 9]
    assert bytes(records[refs[1]["value_pos"]:refs[1]["value_pos"] + 300]) == b"y" * 300


def test_batches_below_wanted_are_passed_over_and_one_straddling_it_is_indexed_whole():
    buf, frames = frames_of(*a_log())
    walker = BatchWalker()
    # 1 lies inside the first batch: it is indexed whole, and wanted says where the caller's records start
    assert walk(walker, buf, frames, 1)[0] == (RECORDS, 0, 1, [0, 1, 2])
    # 5 lies inside the empty batch: everything before it is passed over without a decision
    assert walk(walker, buf, frames, 5) == [(SKIP, 2, 5, None), (COMPRESSED, 3, 7, None), (RECORDS, 4, 10, [10, 11])]
    assert walk(walker, buf, frames, 11) == [(RECORDS, 4, 11, [10, 11])]
    assert walk(walker, buf, frames, 12) == [] and walker.wanted == 12
    assert walk(walker, buf, frames, 20) == [] and walker.wanted == 20


def test_a_caller_that_stops_at_a_batch_finds_its_start_in_wanted():
    buf, frames = frames_of(*a_log())
    walker = BatchWalker()
    stop = next(i for decision, i, _, _ in walker.walk(buf, frames, 0) if decision == COMPRESSED)
    assert (stop, walker.wanted) == (3, 7)
    stop = next(i for decision, i, _, _ in walker.walk(buf, frames, 0) if decision == SKIP)
    assert (stop, walker.wanted) == (1, 3)


def test_a_corrupt_batch_is_reported_with_the_c_error_and_the_walk_goes_on_if_asked():
    batches = a_log()
    bad = bytearray(batches[0])
    bad[-2] ^= 0xFF   # the last record's value (its headers count follows): the CRC no longer matches
    buf, frames = frames_of(bytes(bad), *batches[1:])
    assert walk(BatchWalker(check_crc=True), buf, frames, 0)[0] == (CORRUPT, 0, 0, lib.SHMLOG_ECRC)
    assert walk(BatchWalker(check_crc=False), buf, frames, 0)[0][0] == RECORDS
    assert [d[0] for d in walk(BatchWalker(), buf, frames, 0)] == [CORRUPT, SKIP, SKIP, COMPRESSED, RECORDS]


def test_the_scratch_refs_grow_to_the_largest_batch_and_a_garbage_count_is_refused():
    values = [b"v%d" % i for i in range(50)]
    buf, frames = frames_of(make_batch(0, values))
    walker = BatchWalker(scratch_records=4)
    (decision, _, _, refs), = walker.walk(buf, frames, 0)
    assert decision == RECORDS and len(refs) == 50 and len(walker.refs) >= 50
    # A record count larger than the batch has bytes: no allocation of that size, the C index says corrupt.
    lying = bytearray(make_batch(0, [b"v"]))
    lying[lib.SHMLOG_BATCH_OFF_RECORD_COUNT:lib.SHMLOG_BATCH_OFF_RECORD_COUNT + 4] = (1 << 30).to_bytes(4, "big")
    buf, frames = frames_of(bytes(lying))
    (decision, _, _, rc), = BatchWalker(check_crc=False).walk(buf, frames, 0)
    assert decision == CORRUPT and rc < 0


def test_the_walk_takes_what_segment_reads_return(tmp_path):
    pdir = str(tmp_path / "t-0")
    batches = a_log()
    with SegmentWriter(pdir, 1 << 20) as writer:
        for batch in batches:
            base, _, *_, last_delta = HEADER_PREFIX.unpack_from(batch, 0)
            writer.append(batch, base, base + last_delta + 1)
    with SegmentReader(pdir) as reader:
        buf, frames = reader.read(5, 1 << 20)
        walker = BatchWalker()
        # from the batch holding offset 5 on
        assert walk(walker, buf, frames, 5) == [(SKIP, 0, 5, None), (COMPRESSED, 1, 7, None),
                                                (RECORDS, 2, 10, [10, 11])]
        assert walker.wanted == 12
        del buf
