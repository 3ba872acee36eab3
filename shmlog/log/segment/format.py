"""Segment files by name, and the batch checks and walk every reader of them shares.

A partition directory holds `<base offset, 20 digits>.log` files (the package docstring
describes the layout and its invariants). This module names and lists them, and checks
and walks their batches: what the writer, the reader, recovery and `shmlog dump-log`
all build on.
"""
import os
import re
import time

from shmlog._native import ffi, lib
from shmlog._native.shm import map_readonly
from shmlog.log import index
from shmlog.log.batch import HEADER, HEADER_BYTES, LENGTH_FIELD_END, MAGIC

SUFFIX = ".log"
_NAME = re.compile(r"^(\d{20})\.log$")
_SIDE_FILE = re.compile(r"^(\d{20})\.(index|timeindex)(\.tmp)?$")

INDEX_INTERVAL_BYTES = 4096            # Kafka's index.interval.bytes default


def partition_dir(log_dir, topic, partition):
    return os.path.join(log_dir, f"{topic}-{partition}")


def segment_name(base_offset):
    return f"{base_offset:020d}{SUFFIX}"


def segment_path(partition_dir, base_offset):
    return os.path.join(partition_dir, segment_name(base_offset))


def list_segments(partition_dir):
    """Base offsets of the segment files in partition_dir, ascending; [] if it does not exist."""
    try:
        names = os.listdir(partition_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)


def _now_ms():
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------- batch checks

class _BadBatch(Exception):
    """The bytes at a position are not a complete, valid batch.

    torn: the batch is merely incomplete (fewer bytes than its header promises), which at
    the tail of the newest segment means "still being written" to a reader and "cut by a
    crash" to recovery; anything else is corruption.
    """

    def __init__(self, reason, torn, batch=None):
        super().__init__(reason)
        self.reason = reason
        self.torn = torn
        self.batch = batch  # (batch_bytes, base_offset, offset_count) when the header is sound and the
        #                     batch fits (a CRC mismatch, an offset gap): a walk can step over it


def _check_batch(buf, ptr, pos, end, expected_base, check_crc, gaps=False):
    """(batch_bytes, base_offset, offset_count, max_timestamp) of the batch at pos, or raise _BadBatch.

    offset_count is lastOffsetDelta + 1, the offsets the batch accounts for (what the
    ring's frame refs call record_count; a repaired dead claim is a control batch with
    zero records that still accounts for its offsets). expected_base None skips the
    dense-offset check (a batch found through an index entry). gaps=True takes expected_base
    as a floor rather than the exact base: a sealed segment that the log cleaner rewrote
    (shmlog/log/cleaner.py) keeps its batches' offsets but not every batch.
    """
    room = end - pos
    if room < HEADER_BYTES:
        raise _BadBatch(f"torn batch header ({room} of {HEADER_BYTES} bytes present)", True)
    base, length, _, magic, _, _, last_delta, _, max_ts = HEADER.unpack_from(buf, pos)[:9]
    batch_bytes = LENGTH_FIELD_END + length
    if length < HEADER_BYTES - LENGTH_FIELD_END or magic != MAGIC or last_delta < 0:
        raise _BadBatch(f"invalid batch header (length {length}, magic {magic}, "
                        f"lastOffsetDelta {last_delta})", False)
    if batch_bytes > room:
        raise _BadBatch(f"torn batch (its header says {batch_bytes} bytes, {room} present)", True)
    rc = lib.shmlog_batch_verify(ptr + pos, batch_bytes, 1 if check_crc else 0)
    if rc == lib.SHMLOG_ECRC:
        raise _BadBatch(f"CRC32C mismatch in the batch at base offset {base}", False,
                        (batch_bytes, base, last_delta + 1))
    if rc != lib.SHMLOG_OK:
        raise _BadBatch(f"invalid batch header at base offset {base}", False)
    if expected_base is not None and (base < expected_base if gaps else base != expected_base):
        raise _BadBatch(f"offset gap (expected base offset {expected_base}, found {base})", False,
                        (batch_bytes, base, last_delta + 1))
    return batch_bytes, base, last_delta + 1, max_ts


MAP_ATTEMPTS = 8


class _Mapped:
    """A read-only map of a file (a memoryview; no descriptor kept, so thousands of mapped
    segments cost none) plus a cffi pointer into it; empty files map to nothing."""

    __slots__ = ("mm", "ptr", "size", "ino")

    def __init__(self, fd, size):
        self.size = size
        self.ino = os.fstat(fd).st_ino   # a cleaned segment is swapped in as a new file under the same name
        if size == 0:
            self.mm, self.ptr = b"", ffi.NULL
        else:
            self.mm = map_readonly(fd, size)
            self.ptr = ffi.from_buffer("uint8_t[]", self.mm)

    @classmethod
    def of_path(cls, path):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for _ in range(MAP_ATTEMPTS - 1):
                try:
                    return cls(fd, os.fstat(fd).st_size)
                except ValueError:
                    continue   # cut between fstat and mmap (a writer cutting a failed write back)
            return cls(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def close(self):
        """Let go of the map: it is unmapped now, or when the last zero-copy slice a caller
        holds goes."""
        if self.size:
            ffi.release(self.ptr)
        self.mm, self.ptr, self.size = b"", ffi.NULL, 0


def _walk(mapped, expected_base, check_crc, on_batch=None, start=0, on_bad=None, gaps=False):
    """Walk a segment from byte `start` (0: its start): (valid_bytes, next_offset, _BadBatch or None).

    on_batch(position, batch_bytes, last_offset, max_timestamp) is called for each valid batch.
    expected_base is the base offset of the batch at `start` (None: whatever it is). With
    on_bad(position, _BadBatch), a batch that can be stepped over (a CRC mismatch or an offset
    gap behind a sound header) is reported there and the walk goes on after it; otherwise
    the walk stops at the first bad batch. gaps: see _check_batch (True for sealed segments).
    """
    pos, next_offset = start, expected_base
    buf, ptr, end = mapped.mm, mapped.ptr, mapped.size
    while pos < end:
        try:
            batch_bytes, base, count, max_ts = _check_batch(buf, ptr, pos, end, next_offset, check_crc, gaps)
        except _BadBatch as bad:
            if on_bad is None or bad.batch is None:
                return pos, next_offset, bad
            on_bad(pos, bad)
            batch_bytes, base, count = bad.batch
            pos += batch_bytes
            next_offset = base + count
            continue
        if on_batch is not None:
            on_batch(pos, batch_bytes, base + count - 1, max_ts)
        pos += batch_bytes
        next_offset = base + count
    return pos, next_offset, None


def _batch_matches(mapped, position, last_offset):
    """True if a complete batch ending at last_offset starts at position."""
    try:
        _, base, count, _ = _check_batch(mapped.mm, mapped.ptr, position, mapped.size, None, False)
    except _BadBatch:
        return False
    return base + count - 1 == last_offset


def _batch_max_timestamp(mapped, offset_entries, base, last_offset):
    """Max timestamp of the batch ending at last_offset (found through the offset index), or None."""
    hit = index.lookup_offset(offset_entries, base, last_offset)
    pos = hit[1] if hit is not None else 0
    expected = None if hit is not None else base
    while pos < mapped.size:
        try:
            batch_bytes, first, count, max_ts = _check_batch(mapped.mm, mapped.ptr, pos, mapped.size, expected, False,
                                                             gaps=True)
        except _BadBatch:
            return None
        if first + count - 1 >= last_offset:
            return max_ts if first + count - 1 == last_offset else None
        pos += batch_bytes
        expected = first + count
    return None


def _unlink_segment(partition_dir, base):
    for path in (segment_path(partition_dir, base), index.offset_index_path(partition_dir, base),
                 index.time_index_path(partition_dir, base)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def log_start_offset(partition_dir):
    """First offset on disk: the oldest segment's base offset (0 when there is none)."""
    bases = list_segments(partition_dir)
    return bases[0] if bases else 0


def log_end_offset(partition_dir, check_crc=False):
    """The offset after the last complete batch on disk (0 when there is no segment).

    Read-only: a torn or corrupt tail ends the log here without being cut (recover()
    does that, in the persister). check_crc=True stops where recovery will cut.
    """
    bases = list_segments(partition_dir)
    if not bases:
        return 0
    try:
        mapped = _Mapped.of_path(segment_path(partition_dir, bases[-1]))
    except FileNotFoundError:
        return log_end_offset(partition_dir, check_crc)  # retention or a roll changed the listing
    try:
        return _walk(mapped, bases[-1], check_crc)[1]
    finally:
        mapped.close()
