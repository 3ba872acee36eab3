"""Reading a whole partition, oldest first, across its segment files and its ring."""
import os

import numpy as np

from shmlog._native import ffi, layout, lib
from shmlog.errors import KafkaError, error
from shmlog.log.segment import SegmentReader, list_segments


def read_partition(ring, partition_dir, max_bytes=1 << 20):
    """Every record of a partition, oldest first, as (offset, key, value): the segment files
    (what the persister wrote), then the ring (what it has not yet written)."""
    out = []
    seg = SegmentReader(partition_dir) if os.path.isdir(partition_dir) and list_segments(partition_dir) else None
    offset = seg.log_start_offset if seg is not None else ring.start()[1]
    buf = bytearray(max_bytes)
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
                    offset = _decode_records(buf, found, offset, out)
                    continue
                if n == 0:
                    return out
            if seg is None:
                return out
            data, found = seg.read(offset, max_bytes)
            if not found:
                return out
            offset = _decode_records(data, found, offset, out)
    finally:
        if seg is not None:
            seg.close()


def _decode_records(buf, frames, wanted, out):
    src = ffi.from_buffer(buf)
    for pos, base, count, nbytes in frames:
        if base + count <= wanted:
            continue
        attributes = buf[pos + 21] << 8 | buf[pos + 22]
        if attributes & layout.ATTR_CONTROL or bytes(buf[pos + 57:pos + 61]) == b"\0\0\0\0":
            wanted = max(wanted, base + count)
            continue
        refs = np.empty(count, layout.RECORD_REF_DTYPE)
        n = lib.shmlog_batch_index(src + pos, nbytes, ffi.from_buffer("shmlog_record_ref[]", refs), count, 1)
        if n < 0:
            raise error(KafkaError._BAD_MSG, f"corrupt batch at offset {base}")
        for off, _, kp, kl, vp, vl, _, _ in refs[:n].tolist():
            if off >= wanted and kl >= 0:
                out.append((off, bytes(buf[pos + kp:pos + kp + kl]),
                            None if vl < 0 else bytes(buf[pos + vp:pos + vp + vl])))
        wanted = base + count
    return wanted
