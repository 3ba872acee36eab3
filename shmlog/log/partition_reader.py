"""Reading a partition across its segment files and its ring: every record, oldest first
(read_partition), and the offset for a timestamp (offset_for_time)."""
import os

from shmlog._native import ffi, lib
from shmlog.errors import KafkaError, error
from shmlog.log.batch import COMPRESSED, CORRUPT, SKIP, BatchWalker, max_timestamp_of
from shmlog.log.segment import SegmentReader, first_offset_at_or_after, list_segments


def read_partition(ring, partition_dir, max_bytes=1 << 20):
    """Every record of a partition, oldest first, as (offset, key, value): the segment files
    (what the persister wrote), then the ring (what it has not yet written)."""
    out = []
    seg = SegmentReader(partition_dir) if os.path.isdir(partition_dir) and list_segments(partition_dir) else None
    offset = seg.log_start_offset if seg is not None else ring.start()[1]
    buf = bytearray(max_bytes)
    walker = BatchWalker(check_crc=1)
    frames = ffi.new("shmlog_frame_ref[]", 256)
    cursor = ffi.new("shmlog_cursor *")
    try:
        while True:
            loc = ring.locate(offset)
            if loc is not None:
                cursor.position, cursor.next_offset = loc.position, loc.next_offset
                n = ring.fetch(cursor, ffi.from_buffer(buf), len(buf), frames, 256, 1)
                if n == lib.SHMLOG_ESMALL:
                    buf = bytearray(max(frames[0].batch_bytes, len(buf) * 2))
                    continue
                if n > 0:
                    found = [(f.dst_pos, f.base_offset, f.record_count, f.batch_bytes) for f in frames[0:n]]
                    offset = _decode_records(walker, buf, found, offset, out)
                    continue
                if n == 0:
                    return out
            if seg is None:
                return out
            data, found = seg.read(offset, max_bytes)
            if not found:
                return out
            offset = _decode_records(walker, data, found, offset, out)
    finally:
        if seg is not None:
            seg.close()


def _decode_records(walker, buf, frames, wanted, out):
    """Append the keyed records of frames at or past `wanted` to out; returns the offset to go on from."""
    for decision, i, _, refs in walker.walk(buf, frames, wanted):
        if decision == SKIP:
            continue
        pos, base, _, nbytes = frames[i]
        if decision == CORRUPT:
            raise error(KafkaError._BAD_MSG, f"corrupt batch at offset {base}")
        records, bias = buf, pos
        if decision == COMPRESSED:
            from shmlog.log import codec  # only when a batch needs it: the supervisor does not load the codecs
            try:
                records, refs = codec.decode_compressed_batch(memoryview(buf)[pos:pos + nbytes], True)
            except codec.CodecError as exc:
                raise error(KafkaError._BAD_MSG, f"corrupt batch at offset {base}: {exc}") from None
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
