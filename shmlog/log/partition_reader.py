"""Reading a partition across its segment files and its ring: every record, oldest first
(read_partition), and the offset for a timestamp (offset_for_time)."""
import os

from shmlog._native import ffi, lib
from shmlog.errors import KafkaError, KafkaException, error, reason_of
from shmlog.log.batch import COMPRESSED, CORRUPT, SKIP, BatchWalker, max_timestamp_of
from shmlog.log.cleaner import read_checkpoint
from shmlog.log.segment import SegmentReader, first_offset_at_or_after, list_segments


def read_partition(ring, partition_dir, max_bytes=1 << 20, on_corrupt=None):
    """Every record of a partition, oldest first, as (offset, key, value): the segment files
    (what the persister wrote), then the ring (what it has not yet written).

    A corrupt batch raises KafkaException(_BAD_MSG), unless on_corrupt is given: then it is
    called with what was skipped (a batch that fails its CRC; the rest of a segment whose
    batches cannot be walked) and the read goes on after it. The supervisor replays its
    internal topics so: a damaged byte must not keep the broker from starting.
    """
    out = []
    seg = SegmentReader(partition_dir) if os.path.isdir(partition_dir) and list_segments(partition_dir) else None
    offset = seg.log_start_offset if seg is not None else ring.start()[1]
    # Below the log cleaner's checkpoint the segments hold the compacted records: read them there.
    cleaned_below = read_checkpoint(partition_dir) if seg is not None else 0
    buf = bytearray(max_bytes)
    walker = BatchWalker(check_crc=1)
    frames = ffi.new("shmlog_frame_ref[]", 256)
    cursor = ffi.new("shmlog_cursor *")
    try:
        while True:
            loc = ring.locate(offset) if offset >= cleaned_below else None
            if loc is not None:
                cursor.position, cursor.next_offset = loc.position, loc.next_offset
                try:
                    n = ring.fetch(cursor, ffi.from_buffer(buf), len(buf), frames, 256, 1)
                except KafkaException as exc:
                    if on_corrupt is None:
                        raise
                    on_corrupt(f"{reason_of(exc)}; nothing after offset {offset} is read")
                    return out
                if n == lib.SHMLOG_ESMALL:
                    buf = bytearray(max(frames[0].batch_bytes, len(buf) * 2))
                    continue
                if n > 0:
                    found = [(f.dst_pos, f.base_offset, f.record_count, f.batch_bytes) for f in frames[0:n]]
                    offset = _decode_records(walker, buf, found, offset, out, on_corrupt)
                    continue
                if n == 0:
                    return out
            if seg is None:
                return out
            try:
                data, found = seg.read(offset, max_bytes)
            except KafkaException as exc:
                if on_corrupt is None or exc.args[0].code() != KafkaError._BAD_MSG:
                    raise
                resume = _after_damage(partition_dir, ring, offset)
                if resume is None:
                    on_corrupt(f"{reason_of(exc)}; nothing readable follows offset {offset}")
                    return out
                on_corrupt(f"{reason_of(exc)}; skipped offsets {offset}..{resume - 1}")
                offset = resume
                continue
            if not found:
                if offset < cleaned_below:
                    cleaned_below = 0   # past the segments: the ring holds the rest
                    continue
                return out
            offset = _decode_records(walker, data, found, offset, out, on_corrupt)
    finally:
        if seg is not None:
            seg.close()


def _after_damage(partition_dir, ring, offset):
    """Where reading can go on after a segment that fails at offset: the next segment's base
    offset, else the oldest offset still in the ring; None if neither lies past offset."""
    later = [base for base in list_segments(partition_dir) if base > offset]
    if later:
        return later[0]
    first = ring.start()[1]
    return first if first > offset else None


def _decode_records(walker, buf, frames, wanted, out, on_corrupt=None):
    """Append the keyed records of frames at or past `wanted` to out; returns the offset to go on from."""
    for decision, i, _, refs in walker.walk(buf, frames, wanted):
        if decision == SKIP:
            continue
        pos, base, count, nbytes = frames[i]
        if decision == CORRUPT:
            if on_corrupt is None:
                raise error(KafkaError._BAD_MSG, f"corrupt batch at offset {base}")
            on_corrupt(f"skipped the corrupt batch at offsets {base}..{base + count - 1} (it fails its CRC32C "
                       f"or its records do not decode)")
            continue
        records, bias = buf, pos
        if decision == COMPRESSED:
            from shmlog.log import codec  # only when a batch needs it: the supervisor does not load the codecs
            try:
                records, refs = codec.decode_compressed_batch(memoryview(buf)[pos:pos + nbytes], True)
            except codec.CodecError as exc:
                if on_corrupt is None:
                    raise error(KafkaError._BAD_MSG, f"corrupt batch at offset {base}: {exc}") from None
                on_corrupt(f"skipped the corrupt batch at offsets {base}..{base + count - 1}: {exc}")
                continue
            bias = 0
        first = walker.wanted
        for off, _, kp, kl, vp, vl, _, _ in refs.tolist():
            if off >= first and kl >= 0:
                kp += bias
                vp += bias
                out.append((off, bytes(records[kp:kp + kl]), None if vl < 0 else bytes(records[vp:vp + vl])))
    return walker.wanted


# ---------------------------------------------------------------------- offsets for times

def _ring_offset_for_time(ring, offset, timestamp):
    """Scan a partition ring from offset: ("found", offset), ("end", None) or ("behind", None)."""
    cursor = ring.locate(offset)
    if cursor is None:
        return "behind", None
    frames = ffi.new("shmlog_frame_ref[]", 256)
    buf = bytearray(1 << 20)
    while True:
        n = ring.fetch(cursor, ffi.from_buffer(buf), len(buf), frames, 256, 0)
        if n == lib.SHMLOG_ESMALL:
            buf = bytearray(max(frames[0].batch_bytes, 2 * len(buf)))
            continue
        if n == lib.SHMLOG_EOVERWRITTEN:
            return "behind", None
        if n <= 0:
            return "end", None
        for f in frames[0:n]:
            if f.base_offset + f.record_count <= offset:
                continue
            if max_timestamp_of(buf, f.dst_pos) >= timestamp:
                found = first_offset_at_or_after(memoryview(buf)[f.dst_pos:f.dst_pos + f.batch_bytes], timestamp,
                                                 offset)
                if found is not None:
                    return "found", found


def offset_for_time(partition_dir, ring, timestamp):
    """Kafka's ListOffsets by timestamp for one partition: the earliest offset at or above the
    log start offset whose record timestamp is >= timestamp, else -1 (OFFSET_END).

    The segments are searched first (time index, then offset index, then batch headers);
    what is not on disk yet is searched in the ring. timestamp -2 / -1 ask for the log
    start / end offset, as in Kafka.
    """
    low = ring.log_start_offset
    if timestamp == -2:
        return low
    if timestamp == -1:
        return ring.end()[1]
    offset = low
    with SegmentReader(partition_dir) as segments:
        for _ in range(16):  # each round: the persister moved what we missed in the ring to disk
            found = segments.offset_for_time(timestamp, offset)
            if found is not None:
                return found
            offset = max(offset, segments.log_end_offset)
            state, found = _ring_offset_for_time(ring, offset, timestamp)
            if state == "found":
                return found
            if state == "end":
                return -1
    return -1
