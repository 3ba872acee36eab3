"""Segment files: the on-disk part of a partition log, as Kafka lays it out.

A partition directory `<log dir>/<topic>-<partition>/` holds `<base offset, 20 digits>.log`
files, each with an offset index (`.index`) and a time index (`.timeindex`) beside it (see
shmlog/index.py). A `.log` is Kafka RecordBatch v2 bytes back to back, exactly as producers
wrote them into the ring (without the ring's 8-byte frame prefix), so a segment can be read,
copied or compared batch for batch. The file name is the base offset of its first batch.

Invariants, relied on by recovery and readers:
- inside a segment, offsets are dense: a batch's base offset is the previous batch's
  base + lastOffsetDelta + 1, and the first batch's base is the file name;
- between segments there may be a gap (data a previous run lost is logged and skipped; a
  new segment starts at the next offset the ring holds), never an overlap;
- only the newest segment is ever appended to, and a segment is sealed (final time index
  entry, indexes fsynced) and fdatasync'ed before the writer moves on to the next one, so
  after a crash only the newest can have a torn tail;
- the newest segment always exists once anything was written, even when retention deleted
  every record: its name then records the log end offset, so offsets continue after a
  restart instead of starting over.

The persister is the only writer (SegmentWriter); consumers that fell behind the ring read
with SegmentReader from other processes while the persister appends.
"""
import bisect
import errno
import mmap
import os
import re
import struct
import time

import numpy as np

from shmlog._native import ffi, lib
from shmlog.errors import KafkaError, error
from shmlog.log import index

SUFFIX = ".log"
_NAME = re.compile(r"^(\d{20})\.log$")
_SIDE_FILE = re.compile(r"^(\d{20})\.(index|timeindex)(\.tmp)?$")

HEADER_BYTES = lib.SHMLOG_BATCH_HEADER_BYTES  # 61
_LENGTH_FIELD_END = 12  # base offset (8) + batch length (4): not counted in the batch length
_MAGIC = lib.SHMLOG_BATCH_MAGIC
# base offset, batch length, partition leader epoch, magic, crc, attributes, lastOffsetDelta,
# base timestamp, max timestamp
_PREFIX = struct.Struct(">qiibIhi")
_HEADER = struct.Struct(">qiibIhiqq")
_MAX_TS = struct.Struct(">q")
_MAX_TS_AT = lib.SHMLOG_BATCH_OFF_MAX_TIMESTAMP
_ATTR_LOG_APPEND_TIME = lib.SHMLOG_ATTR_LOG_APPEND_TIME
_ATTR_CONTROL = lib.SHMLOG_ATTR_CONTROL
_ATTR_COMPRESSION = lib.SHMLOG_ATTR_COMPRESSION_MASK

INDEX_INTERVAL_BYTES = 4096            # Kafka's index.interval.bytes default
SEGMENT_INDEX_BYTES = 10 * 1024 * 1024  # Kafka's segment.index.bytes default
NO_ROLL_MS = 2**63 - 1
JUMP_MIN_BYTES = 1 << 20   # a reader scans forward rather than jump through the index for less
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_EMPTY = memoryview(b"")


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

    def __init__(self, reason, torn):
        super().__init__(reason)
        self.reason = reason
        self.torn = torn


def _check_batch(buf, ptr, pos, end, expected_base, check_crc):
    """(batch_bytes, base_offset, offset_count, max_timestamp) of the batch at pos, or raise _BadBatch.

    offset_count is lastOffsetDelta + 1, the offsets the batch accounts for (what the
    ring's frame refs call record_count; a repaired dead claim is a control batch with
    zero records that still accounts for its offsets). expected_base None skips the
    dense-offset check (a batch found through an index entry).
    """
    room = end - pos
    if room < HEADER_BYTES:
        raise _BadBatch(f"torn batch header ({room} of {HEADER_BYTES} bytes present)", True)
    base, length, _, magic, _, _, last_delta, _, max_ts = _HEADER.unpack_from(buf, pos)
    batch_bytes = _LENGTH_FIELD_END + length
    if length < HEADER_BYTES - _LENGTH_FIELD_END or magic != _MAGIC or last_delta < 0:
        raise _BadBatch(f"invalid batch header (length {length}, magic {magic}, "
                        f"lastOffsetDelta {last_delta})", False)
    if batch_bytes > room:
        raise _BadBatch(f"torn batch (its header says {batch_bytes} bytes, {room} present)", True)
    rc = lib.shmlog_batch_verify(ptr + pos, batch_bytes, 1 if check_crc else 0)
    if rc == lib.SHMLOG_ECRC:
        raise _BadBatch(f"CRC32C mismatch in the batch at base offset {base}", False)
    if rc != lib.SHMLOG_OK:
        raise _BadBatch(f"invalid batch header at base offset {base}", False)
    if expected_base is not None and base != expected_base:
        raise _BadBatch(f"offset gap (expected base offset {expected_base}, found {base})", False)
    return batch_bytes, base, last_delta + 1, max_ts


class _Mapped:
    """A read-only mmap of a file plus a cffi pointer into it; empty files map to nothing."""

    __slots__ = ("mm", "ptr", "size")

    def __init__(self, fd, size):
        self.size = size
        if size == 0:
            self.mm, self.ptr = b"", ffi.NULL
        else:
            self.mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            self.ptr = ffi.from_buffer("uint8_t[]", self.mm)

    @classmethod
    def of_path(cls, path):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return cls(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def close(self):
        if self.size:
            ffi.release(self.ptr)
            try:
                self.mm.close()
            except BufferError:
                pass  # a caller still holds a zero-copy slice; the map goes when it does
        self.mm, self.ptr, self.size = b"", ffi.NULL, 0


def _walk(mapped, expected_base, check_crc, on_batch=None):
    """Walk a segment from its start: (valid_bytes, next_offset, _BadBatch or None).

    on_batch(position, batch_bytes, last_offset, max_timestamp) is called for each valid batch.
    """
    pos, next_offset = 0, expected_base
    buf, ptr, end = mapped.mm, mapped.ptr, mapped.size
    while pos < end:
        try:
            batch_bytes, base, count, max_ts = _check_batch(buf, ptr, pos, end, next_offset, check_crc)
        except _BadBatch as bad:
            return pos, next_offset, bad
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
            batch_bytes, first, count, max_ts = _check_batch(mapped.mm, mapped.ptr, pos, mapped.size, expected, False)
        except _BadBatch:
            return None
        if first + count - 1 >= last_offset:
            return max_ts if first + count - 1 == last_offset else None
        pos += batch_bytes
        expected = first + count
    return None


def first_offset_at_or_after(batch, timestamp, min_offset=0):
    """The first offset >= min_offset in one batch whose record timestamp is >= timestamp, or None."""
    from shmlog._native.layout import RECORD_REF_DTYPE
    view = memoryview(batch).cast("B") if not isinstance(batch, memoryview) or batch.format != "B" else batch
    base, length, _, _, _, attributes, last_delta, _, max_ts = _HEADER.unpack_from(view, 0)
    count = struct.unpack_from(">i", view, lib.SHMLOG_BATCH_OFF_RECORD_COUNT)[0]
    if attributes & _ATTR_CONTROL or count <= 0 or max_ts < timestamp or base + last_delta < min_offset:
        return None
    if attributes & _ATTR_LOG_APPEND_TIME:
        return max(base, min_offset)  # every record carries the batch's append time
    refs = np.empty(count, RECORD_REF_DTYPE)
    if attributes & _ATTR_COMPRESSION:
        from shmlog.log.codec import index_compressed_batch
        _, n = index_compressed_batch(view[:_LENGTH_FIELD_END + length], refs, False)
    else:
        src = ffi.from_buffer(view)
        n = lib.shmlog_batch_index(src, _LENGTH_FIELD_END + length, ffi.from_buffer("shmlog_record_ref[]", refs),
                                   count, 0)
        if n < 0:
            raise error(KafkaError._BAD_MSG, f"corrupt record batch at offset {base}")
    refs = refs[:n]
    hits = np.flatnonzero((refs["timestamp"] >= timestamp) & (refs["offset"] >= min_offset))
    return int(refs["offset"][hits[0]]) if len(hits) else None


# ---------------------------------------------------------------------- recovery

class SegmentInfo:
    """What the writer keeps about each segment: retention reads it."""

    __slots__ = ("base", "size", "max_timestamp", "path")

    def __init__(self, partition_dir, base, size=0, max_timestamp=index.NO_TIMESTAMP):
        self.base = base
        self.size = size
        self.max_timestamp = max_timestamp
        self.path = segment_path(partition_dir, base)

    def largest_timestamp(self):
        """Kafka's rule: the largest record timestamp, else the file's modification time (ms)."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        try:
            return os.stat(self.path).st_mtime_ns // 1_000_000
        except FileNotFoundError:
            return _now_ms()


class _Recovered:
    __slots__ = ("log_start", "log_end", "notes", "segments", "builder", "first_timestamp")


def recover(partition_dir, index_interval_bytes=INDEX_INTERVAL_BYTES):
    """Make partition_dir a valid log again after a crash.

    Every batch of the newest segment is checked (bounds, CRC32C, dense offsets) and the
    segment is cut at the first bad one: after a crash only its tail can be torn, and a
    batch that fails its CRC or breaks the offset sequence cannot be trusted, nor can
    anything after it. Its indexes are rebuilt from what remains. Older segments were
    sealed and fdatasync'ed when the log rolled past them, so only their first header is
    checked (a mismatch there is reported, not cut: it is media damage, and cutting would
    throw away every newer segment) and their indexes are rebuilt only when missing or
    failing a sanity check. Index files without a log are removed.

    Returns (log_start_offset, log_end_offset, report); report says exactly what was cut,
    rebuilt or found ("" when the log was clean).
    """
    rec = _recover(partition_dir, index_interval_bytes)
    return rec.log_start, rec.log_end, "; ".join(rec.notes)


def _recover(partition_dir, interval):
    rec = _Recovered()
    rec.notes, rec.segments, rec.builder, rec.first_timestamp = [], [], None, None
    bases = list_segments(partition_dir)
    _remove_orphans(partition_dir, set(bases), rec.notes)
    for base in bases[:-1]:
        path = segment_path(partition_dir, base)
        size = os.path.getsize(path)
        if size == 0:
            # Holds no offsets; left by an interrupted roll. Keeping it would hide the next
            # segment's base from readers that look for the segment containing an offset.
            _unlink_segment(partition_dir, base)
            rec.notes.append(f"{path}: removed an empty segment that was not the newest")
            continue
        problem = _first_header_problem(path, base)
        if problem:
            rec.notes.append(f"{path}: {problem}; older segment left as is, reads from it will fail")
        rec.segments.append(SegmentInfo(partition_dir, base, size, _check_sealed_indexes(partition_dir, base,
                                                                                         interval, rec.notes)))
    if not bases:
        rec.log_start = rec.log_end = 0
        return rec
    newest = bases[-1]
    rec.log_end, size, rec.builder, rec.first_timestamp, note = _recover_newest(partition_dir, newest, interval)
    if note:
        rec.notes.append(note)
    rec.segments.append(SegmentInfo(partition_dir, newest, size, rec.builder.max_ts))
    rec.log_start = rec.segments[0].base
    return rec


def _remove_orphans(partition_dir, bases, notes):
    try:
        names = os.listdir(partition_dir)
    except FileNotFoundError:
        return
    for name in names:
        m = _SIDE_FILE.match(name)
        if m and (m.group(3) or int(m.group(1)) not in bases):
            os.unlink(os.path.join(partition_dir, name))
            if not m.group(3):
                notes.append(f"{os.path.join(partition_dir, name)}: removed an index whose segment is gone")


def _first_header_problem(path, base):
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        return f"shorter than one batch header ({len(head)} bytes)"
    first, length, _, magic, _, _, last_delta = _PREFIX.unpack_from(head, 0)
    if magic != _MAGIC or length < HEADER_BYTES - _LENGTH_FIELD_END or last_delta < 0:
        return "its first batch header is invalid"
    if first != base:
        return f"its first batch has base offset {first}, the file name says {base}"
    return None


def _check_sealed_indexes(partition_dir, base, interval, notes):
    """Rebuild a sealed segment's indexes if missing or insane; returns its largest timestamp."""
    path = segment_path(partition_dir, base)
    mapped = _Mapped.of_path(path)
    try:
        try:
            offsets = index.read_entries(index.offset_index_path(partition_dir, base), index.OFFSET_DTYPE)
            times = index.read_entries(index.time_index_path(partition_dir, base), index.TIME_DTYPE)
            problem = index.sanity_problem(offsets, times, base, mapped.size,
                                           lambda pos, last: _batch_matches(mapped, pos, last),
                                           lambda ts, last: _batch_max_timestamp(mapped, offsets, base, last) == ts)
        except FileNotFoundError as exc:
            problem = f"{os.path.basename(exc.filename)} is missing"
        if problem is None:
            return int(times["ts"][-1]) if len(times) else index.NO_TIMESTAMP
        builder, offset_entries, time_entries = _build_index(mapped, base, interval, check_crc=False)
        try:
            index.write_index_files(partition_dir, base, offset_entries, time_entries)
        except OSError as exc:
            # Readers check every entry and cope without one; the next recovery tries again.
            notes.append(f"{path}: its indexes need a rebuild ({problem}) but writing them failed: {exc}")
            return builder.max_ts
        notes.append(f"{path}: rebuilt its indexes ({problem})")
        return builder.max_ts
    finally:
        mapped.close()


def _build_index(mapped, base, interval, check_crc, seal=True):
    """Index entries for a segment's valid prefix: (builder, offset entries, time entries)."""
    builder = index.IndexBuilder(base, interval)
    offset_entries, time_entries = [], []

    def note(pos, batch_bytes, last_offset, max_ts):
        o, t = builder.note(pos, batch_bytes, last_offset, max_ts)
        if o is not None:
            offset_entries.append(o)
        if t is not None:
            time_entries.append(t)

    _walk(mapped, base, check_crc, note)
    if seal:
        final = builder.final_time_entry()
        if final is not None:
            time_entries.append(final)
    return builder, offset_entries, time_entries


def _recover_newest(partition_dir, base, interval):
    """Cut the newest segment at its first bad batch and rebuild its indexes.

    Returns (log_end_offset, size, index builder, first batch's max timestamp or None, note or None).
    """
    path = segment_path(partition_dir, base)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        mapped = _Mapped(fd, size)
        try:
            builder = index.IndexBuilder(base, interval)
            offset_entries, time_entries, first = [], [], []

            def note(pos, batch_bytes, last_offset, max_ts):
                if not first:
                    first.append(max_ts)
                o, t = builder.note(pos, batch_bytes, last_offset, max_ts)
                if o is not None:
                    offset_entries.append(o)
                if t is not None:
                    time_entries.append(t)

            valid, end_offset, bad = _walk(mapped, base, True, note)
        finally:
            mapped.close()
        message = None
        if bad is not None:
            os.ftruncate(fd, valid)
            os.fsync(fd)  # the new length must be durable before anything is appended after it
            message = (f"{path}: cut {size - valid} bytes at byte {valid} of {size} ({bad.reason}); "
                       f"log end offset is now {end_offset}")
        try:
            # Not fsynced: the newest segment's indexes are rebuilt by every recovery.
            index.write_index_files(partition_dir, base, offset_entries, time_entries, durable=False)
        except OSError as exc:
            index.empty_index_files(partition_dir, base)  # sparser is fine, stale is not
            message = "; ".join(filter(None, [message, f"{path}: could not rebuild its indexes ({exc}); "
                                                       f"they start empty"]))
        return end_offset, valid, builder, (first[0] if first else None), message
    finally:
        os.close(fd)


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


# ---------------------------------------------------------------------- writing

def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _byte_views(buffers):
    views = []
    for b in buffers:
        v = b if isinstance(b, memoryview) else memoryview(b)
        if v.format != "B" or v.ndim != 1:
            v = v.cast("B")
        if v.nbytes:
            views.append(v)
    return views


def _write_all(fd, views):
    """writev every view, in IOV_MAX slices, resuming after short writes."""
    i = 0
    while i < len(views):
        written = os.writev(fd, views[i:i + _IOV_MAX])
        if written <= 0:
            raise OSError(errno.EIO, "writev wrote nothing")
        while written:
            n = views[i].nbytes
            if written >= n:
                written -= n
                i += 1
            else:
                views[i] = views[i][written:]
                written = 0


class SegmentWriter:
    """Appends whole batches to a partition's newest segment; the persister's side of the log.

    Rolls to a new segment before one would exceed segment_bytes, when the incoming
    batch's timestamp is more than segment_ms past the segment's first batch (Kafka's
    segment.ms rule; by wall clock when batches carry no timestamp), when the indexes
    reach segment_index_bytes, or when an offset would not fit the index's 32-bit
    relative offsets. Not thread-safe, and there must be one writer per partition
    directory (the persister).
    """

    def __init__(self, partition_dir, segment_bytes, segment_ms=NO_ROLL_MS, index_interval_bytes=INDEX_INTERVAL_BYTES,
                 segment_index_bytes=SEGMENT_INDEX_BYTES, segment_jitter_ms=0):
        self.partition_dir = partition_dir
        self.segment_bytes = int(segment_bytes)
        self.segment_ms = int(segment_ms)
        self.segment_jitter_ms = int(segment_jitter_ms)
        self.index_interval_bytes = int(index_interval_bytes)
        self.segment_index_bytes = int(segment_index_bytes)
        created = not os.path.isdir(partition_dir)
        os.makedirs(partition_dir, exist_ok=True)
        rec = _recover(partition_dir, self.index_interval_bytes)
        self._log_end_offset, self.recovery_report = rec.log_end, "; ".join(rec.notes)
        self._segments = rec.segments
        self._fd = None
        self._index = None
        self._active_base = None
        self._size = 0              # bytes in the active segment that hold whole batches
        self._torn = False          # a failed write may have left bytes past _size
        self._dir_dirty = created   # a directory entry is not yet durable
        self._parent_dirty = created
        self._first_timestamp = None   # max timestamp of the active segment's first batch
        self._created_ms = _now_ms()
        self._jitter = 0
        if self._segments:
            self._open_active(self._segments[-1].base, rec.builder)
            self._first_timestamp = rec.first_timestamp
        # What recovery found may still sit only in the page cache of a crashed run.
        self._dirty = bool(self._segments)
        self._flushed_offset = self.log_start_offset if self._dirty else self._log_end_offset

    @property
    def log_end_offset(self):
        return self._log_end_offset

    @property
    def log_start_offset(self):
        """The oldest segment's base offset (0 when there is none)."""
        return self._segments[0].base if self._segments else 0

    @property
    def flushed_offset(self):
        """Offsets below this are fdatasync'ed (as of the last flush())."""
        return self._flushed_offset

    @property
    def active_segment(self):
        return None if self._active_base is None else segment_path(self.partition_dir, self._active_base)

    def segments(self):
        """[(base offset, end offset, size in bytes, largest timestamp)], oldest first."""
        out = []
        for i, info in enumerate(self._segments):
            end = self._segments[i + 1].base if i + 1 < len(self._segments) else self._log_end_offset
            out.append((info.base, end, info.size, info.largest_timestamp()))
        return out

    def _open_active(self, base, builder):
        path = segment_path(self.partition_dir, base)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            self._index = index.SegmentIndex(self.partition_dir, base, self.index_interval_bytes,
                                             self.segment_index_bytes, builder=builder, truncate=False)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise
        self._active_base = base
        self._size = os.fstat(self._fd).st_size

    def append(self, data, base_offset, next_offset):
        """Append whole batches starting at base_offset; the log end becomes next_offset.

        data is one buffer (one or more batches back to back) or a list of them, each
        starting at a batch boundary; the writer may roll between any two batches, and
        writes with writev, so ring slices need not be copied together first.
        base_offset above the log end offset starts a new segment (offsets a previous run
        lost must not look dense); below it is refused: the log never rewrites offsets.
        On OSError nothing partial stays in the file; log_end_offset tells how far
        earlier pieces got, and the call can be retried with the rest.
        """
        pieces = _byte_views(data if isinstance(data, (list, tuple)) else [data])
        if not pieces:
            return
        if base_offset < self._log_end_offset:
            raise ValueError(f"{self.partition_dir}: batch at base offset {base_offset} is below the "
                             f"log end offset {self._log_end_offset}")
        if next_offset <= base_offset:
            raise ValueError(f"{self.partition_dir}: next offset {next_offset} must be above base offset "
                             f"{base_offset}")
        first = _PREFIX.unpack_from(pieces[0], 0)[0] if pieces[0].nbytes >= _PREFIX.size else None
        if first != base_offset:
            raise ValueError(f"{self.partition_dir}: data starts with base offset {first}, not {base_offset}")
        self._cut_torn_write()
        if self._fd is None or base_offset > self._log_end_offset:
            self._roll(base_offset)
        chunk, notes, chunk_bytes = [], [], 0
        now_ms = None
        for piece in pieces:
            pos, n = 0, piece.nbytes
            while pos < n:
                if n - pos < HEADER_BYTES:
                    raise ValueError(f"{self.partition_dir}: {n - pos} bytes at the end of a piece are not a batch")
                base, length, _, _, _, _, last_delta, _, max_ts = _HEADER.unpack_from(piece, pos)
                batch_bytes = _LENGTH_FIELD_END + length
                if length < HEADER_BYTES - _LENGTH_FIELD_END or pos + batch_bytes > n:
                    raise ValueError(f"{self.partition_dir}: the batch at base offset {base} does not fit its piece")
                last = base + last_delta
                if self._size + chunk_bytes:
                    if now_ms is None:
                        now_ms = _now_ms()
                    if self._should_roll(chunk_bytes, batch_bytes, last, max_ts, now_ms):
                        if chunk:
                            self._write(chunk, chunk_bytes, base, notes)
                            chunk, notes, chunk_bytes = [], [], 0
                        self._roll(base)
                if self._size + chunk_bytes == 0 and self._first_timestamp is None:
                    self._first_timestamp = max_ts
                chunk.append(piece if (pos == 0 and batch_bytes == n) else piece[pos:pos + batch_bytes])
                notes.append((self._size + chunk_bytes, batch_bytes, last, max_ts))
                chunk_bytes += batch_bytes
                pos += batch_bytes
        self._write(chunk, chunk_bytes, next_offset, notes)

    def _should_roll(self, chunk_bytes, batch_bytes, last_offset, max_ts, now_ms):
        if self._size + chunk_bytes + batch_bytes > self.segment_bytes:
            return True
        if last_offset - self._active_base > index.INT32_MAX or self._index.full():
            return True
        if self.segment_ms >= NO_ROLL_MS:
            return False
        first = self._first_timestamp
        waited = max_ts - first if first is not None and first >= 0 and max_ts >= 0 else now_ms - self._created_ms
        return waited > self.segment_ms - self._jitter

    def _write(self, views, nbytes, end_offset, notes):
        try:
            _write_all(self._fd, views)
        except OSError:
            self._torn = True
            try:
                self._cut_torn_write()
            except OSError:
                pass  # retried before the next append
            if self._size == 0:
                self._first_timestamp = None
            raise
        self._size += nbytes
        self._log_end_offset = end_offset
        self._dirty = True
        info = self._segments[-1]
        info.size = self._size
        for position, batch_bytes, last_offset, max_ts in notes:
            self._index.note(position, batch_bytes, last_offset, max_ts)
        info.max_timestamp = self._index.max_timestamp

    def _cut_torn_write(self):
        # A short or failed write (ENOSPC, EIO) left part of a batch: cut it so the file
        # only ever holds whole batches and O_APPEND continues at a batch boundary.
        if self._torn:
            os.ftruncate(self._fd, self._size)
            self._torn = False

    def _close_active(self):
        """Seal and close the active segment (or remove it when empty)."""
        if self._fd is None:
            return
        if self._size == 0:
            # An empty active segment holds no offsets: replace it, do not keep it around.
            os.close(self._fd)
            self._index.close()
            _unlink_segment(self.partition_dir, self._active_base)
            self._segments.pop()
        else:
            # Recovery only walks the newest segment, so one we leave must be whole on disk,
            # its indexes included (retention.ms reads its largest timestamp from them).
            self._index.seal()
            os.fdatasync(self._fd)
            os.close(self._fd)
            self._index.close()
        self._fd, self._index, self._active_base = None, None, None
        self._size = 0

    def _roll(self, base_offset):
        """Make a new, empty segment named base_offset the active one."""
        self._close_active()
        path = segment_path(self.partition_dir, base_offset)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            new_index = index.SegmentIndex(self.partition_dir, base_offset, self.index_interval_bytes,
                                           self.segment_index_bytes)
        except OSError:
            os.close(fd)
            _unlink_segment(self.partition_dir, base_offset)
            raise
        self._fd, self._index, self._active_base = fd, new_index, base_offset
        self._size = 0
        self._first_timestamp = None
        self._created_ms = _now_ms()
        self._jitter = int.from_bytes(os.urandom(8), "big") % self.segment_jitter_ms if self.segment_jitter_ms > 0 \
            else 0
        self._dir_dirty = True
        self._segments.append(SegmentInfo(self.partition_dir, base_offset))
        if self._log_end_offset < base_offset:
            self._log_end_offset = base_offset
            if self._flushed_offset < base_offset and not self._dirty:
                self._flushed_offset = base_offset  # nothing below it will ever be written

    def configure(self, segment_bytes=None, segment_ms=None, index_interval_bytes=None, segment_index_bytes=None,
                  segment_jitter_ms=None):
        """New topic settings; they apply from the next append (indexes: from the next segment)."""
        if segment_bytes is not None:
            self.segment_bytes = int(segment_bytes)
        if segment_ms is not None:
            self.segment_ms = int(segment_ms)
        if segment_jitter_ms is not None:
            self.segment_jitter_ms = int(segment_jitter_ms)
        if index_interval_bytes is not None:
            self.index_interval_bytes = int(index_interval_bytes)
            if self._index is not None:
                self._index.set_interval(self.index_interval_bytes)
        if segment_index_bytes is not None:
            self.segment_index_bytes = int(segment_index_bytes)

    def delete_oldest(self, count):
        """Delete the `count` oldest segments (retention); returns their base offsets.

        Deleting every segment first rolls a new, empty one at the log end offset, so the
        directory keeps recording where offsets continue. The directory is fsynced after.
        """
        if count <= 0 or not self._segments:
            return []
        if count >= len(self._segments):
            if self._size:
                self._roll(self._log_end_offset)
                self.flush()
            count = len(self._segments) - 1  # the empty active segment stays: it records the log end
        gone = self._segments[:count]
        for info in gone:
            _unlink_segment(self.partition_dir, info.base)
        del self._segments[:count]
        _fsync_dir(self.partition_dir)
        return [info.base for info in gone]

    def flush(self):
        """fdatasync the active segment (and the directory after a roll); returns flushed_offset."""
        if self._fd is not None and self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False
        if self._dir_dirty:
            _fsync_dir(self.partition_dir)
            self._dir_dirty = False
        if self._parent_dirty:
            _fsync_dir(os.path.dirname(os.path.abspath(self.partition_dir)))
            self._parent_dirty = False
        self._flushed_offset = self._log_end_offset
        return self._flushed_offset

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._index is not None:
            self._index.close()
            self._index = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------- reading

class _Segment:
    """What a reader knows of one segment file: its map and a validated range.

    Batches in [anchor_pos, scan_pos) have been checked (complete, valid header, dense
    offsets from the anchor); the anchor is the segment start or a batch found through
    the offset index. index_* is the sparse offset -> position index over that range.
    """

    __slots__ = ("base", "path", "index_path", "time_path", "mapped", "anchor_pos", "anchor_offset", "scan_pos",
                 "scan_offset", "index_offsets", "index_positions", "last_indexed", "problem", "disk_index",
                 "time_index")

    def __init__(self, partition_dir, base):
        self.base = base
        self.path = segment_path(partition_dir, base)
        self.index_path = index.offset_index_path(partition_dir, base)
        self.time_path = index.time_index_path(partition_dir, base)
        self.mapped = None
        self.disk_index = None
        self.time_index = None
        self.forget()

    def forget(self, anchor_pos=0, anchor_offset=None):
        self.anchor_pos = anchor_pos
        self.anchor_offset = self.base if anchor_offset is None else anchor_offset
        self.scan_pos, self.scan_offset = anchor_pos, self.anchor_offset
        self.index_offsets, self.index_positions = [], []
        self.last_indexed = anchor_pos - INDEX_INTERVAL_BYTES
        self.problem = None

    def close(self):
        if self.mapped is not None:
            self.mapped.close()
            self.mapped = None


def _read_index(path, dtype):
    try:
        return index.read_entries(path, dtype)
    except FileNotFoundError:
        return np.empty(0, dtype)


class SegmentReader:
    """Reads a partition's segment files, zero-copy, while the persister appends to them.

    Not thread-safe. Returned buffers are memoryviews of read-only maps; they stay valid
    after the reader moves on (a map is unmapped when its last view is released).
    """

    def __init__(self, partition_dir):
        self.partition_dir = partition_dir
        self._segments = []
        self._bases = []
        self._refresh()

    # -------------------------------------------------------------- offsets

    @property
    def log_start_offset(self):
        return self._bases[0] if self._bases else 0

    @property
    def log_end_offset(self):
        """The end of what this reader has validated (call read() to look further)."""
        return self._segments[-1].scan_offset if self._segments else 0

    # -------------------------------------------------------------- reading

    def read(self, offset, max_bytes):
        """(buffer, frames) for consecutive batches from the one that contains offset.

        frames: [(pos_in_buffer, base_offset, offset_count, batch_bytes)], offset_count
        being lastOffsetDelta + 1 as in the ring's frame refs. At least one batch, then
        more while the total stays within max_bytes; never past the end of a segment.
        Empty when offset is at or beyond the log end offset. Raises KafkaException
        OFFSET_OUT_OF_RANGE below the log start offset, _BAD_MSG for a corrupt segment.
        """
        for _ in range(3):
            try:
                return self._read(offset, max_bytes)
            except FileNotFoundError:
                self._refresh()  # retention removed a segment we had not mapped yet
        return self._read(offset, max_bytes)

    def _read(self, offset, max_bytes):
        refreshed = False
        if not self._segments or offset >= self._segments[-1].scan_offset:
            refreshed = self._catch_up(offset)
        if not self._segments:
            return _EMPTY, []
        if offset < self._bases[0]:
            raise error(KafkaError.OFFSET_OUT_OF_RANGE,
                        f"{self.partition_dir}: offset {offset} is below the log start offset {self._bases[0]}")
        i = max(bisect.bisect_right(self._bases, offset) - 1, 0)
        while i < len(self._segments):
            seg = self._segments[i]
            self._jump(seg, offset)
            self._scan(seg, until_offset=offset)
            pos = self._locate(seg, offset)
            if pos is not None:
                return self._collect(seg, pos, max_bytes)
            if seg.problem:
                raise error(KafkaError._BAD_MSG, seg.problem)
            if i == len(self._segments) - 1:
                if refreshed:
                    break
                self._refresh()  # offset lies past the newest segment we know: look for newer ones
                refreshed = True
            # offset is past this segment's end: the next segment holds what follows
            i = bisect.bisect_right(self._bases, seg.base)
        return _EMPTY, []

    def _catch_up(self, offset):
        """Scan the newest segment's new bytes, then look for newer segments; True if relisted."""
        if self._segments:
            newest = self._segments[-1]
            self._jump(newest, offset)
            self._scan(newest, until_offset=offset)
            if offset < newest.scan_offset:
                return False
        self._refresh()
        return True

    def _refresh(self):
        """Reread the directory: new segments appear on rolls, old ones go with retention."""
        bases = list_segments(self.partition_dir)
        known = {s.base: s for s in self._segments}
        for base in set(known) - set(bases):
            known.pop(base).close()
        self._segments = [known.get(b) or _Segment(self.partition_dir, b) for b in bases]
        self._bases = bases

    def _remap(self, seg):
        """Map the segment's current size; True if more bytes became visible."""
        try:
            fresh = _Mapped.of_path(seg.path)
        except FileNotFoundError:
            if seg.mapped is None:
                raise  # deleted before we mapped it: read() rereads the listing
            return False  # deleted (retention) while mapped: what we mapped stays readable
        old = seg.mapped
        old_size = old.size if old is not None else 0
        if fresh.size <= old_size:
            if fresh.size < old_size:
                # Recovery cut the tail after a crash: what we validated may be gone.
                seg.close()
                seg.mapped = fresh
                seg.forget()
                seg.disk_index = seg.time_index = None
                return True
            fresh.close()
            return False
        if old is not None:
            old.close()
        seg.mapped = fresh
        return True

    def _is_newest(self, seg):
        return bool(self._bases) and seg.base == self._bases[-1]

    def _disk_index(self, seg):
        # The newest segment's index grows while we read; a sealed one's is read once.
        if seg.disk_index is None or self._is_newest(seg):
            seg.disk_index = _read_index(seg.index_path, index.OFFSET_DTYPE)
        return seg.disk_index

    def _time_index(self, seg):
        if seg.time_index is None or self._is_newest(seg):
            seg.time_index = _read_index(seg.time_path, index.TIME_DTYPE)
        return seg.time_index

    def _jump(self, seg, offset):
        """Move seg's validated range to an index entry near offset when scanning would be long."""
        if seg.anchor_offset <= offset < seg.scan_offset:
            return
        if offset >= seg.scan_offset > seg.anchor_offset:
            # Bytes per offset so far estimate how far ahead offset is; reading on is cheaper nearby.
            per_offset = (seg.scan_pos - seg.anchor_pos) / (seg.scan_offset - seg.anchor_offset)
            if (offset - seg.scan_offset) * per_offset < JUMP_MIN_BYTES:
                return
        hit = index.lookup_offset(self._disk_index(seg), seg.base, offset)
        if hit is None or (offset >= seg.scan_offset and hit[1] < seg.scan_pos + JUMP_MIN_BYTES):
            if offset < seg.anchor_offset:
                seg.forget()
            return
        last, pos = hit
        if seg.mapped is None or pos + HEADER_BYTES > seg.mapped.size:
            self._remap(seg)
        if seg.mapped is not None and _batch_matches(seg.mapped, pos, last):
            _, base, _, _ = _check_batch(seg.mapped.mm, seg.mapped.ptr, pos, seg.mapped.size, None, False)
            seg.forget(pos, base)
        elif offset < seg.anchor_offset:
            seg.forget()  # the entry does not match the log (a stale index): scan from the start

    def _scan(self, seg, until_offset=None, until_pos=None):
        """Extend seg's validated range until it covers until_offset / until_pos, or ends."""
        def wanted():
            # scan_pos == 0: offset may lie in a gap before this segment, whose first batch then serves
            return ((until_offset is not None and (seg.scan_offset <= until_offset or seg.scan_pos == 0)) or
                    (until_pos is not None and seg.scan_pos < until_pos))

        if seg.mapped is None:
            self._remap(seg)
        while wanted() and seg.problem is None:
            m = seg.mapped
            if m is None or seg.scan_pos >= m.size:
                if not self._remap(seg):
                    return
                m = seg.mapped
            try:
                batch_bytes, base, count, _ = _check_batch(m.mm, m.ptr, seg.scan_pos, m.size, seg.scan_offset,
                                                           False)
            except _BadBatch as bad:
                if not bad.torn or not self._remap(seg):
                    # A torn batch at the end of the newest segment is one being written: wait.
                    # Anywhere else (or corrupt) it is damage that recovery has not cut.
                    if not bad.torn or seg.base != self._bases[-1]:
                        seg.problem = (f"{seg.path}: {bad.reason} at byte {seg.scan_pos}; "
                                       f"the segment file is damaged")
                    return
                continue
            if seg.scan_pos - seg.last_indexed >= INDEX_INTERVAL_BYTES:
                seg.index_offsets.append(base)
                seg.index_positions.append(seg.scan_pos)
                seg.last_indexed = seg.scan_pos
            seg.scan_pos += batch_bytes
            seg.scan_offset = base + count

    def _locate(self, seg, offset):
        """Position of the first validated batch whose last offset is >= offset, or None."""
        if not seg.index_offsets or offset >= seg.scan_offset:
            return None
        i = max(bisect.bisect_right(seg.index_offsets, offset) - 1, 0)
        pos, buf = seg.index_positions[i], seg.mapped.mm
        while pos < seg.scan_pos:
            base, length, *_, last_delta = _PREFIX.unpack_from(buf, pos)
            if offset <= base + last_delta:
                return pos
            pos += _LENGTH_FIELD_END + length
        return None

    def _collect(self, seg, start, max_bytes):
        self._scan(seg, until_pos=start + max_bytes)
        buf, frames, pos = seg.mapped.mm, [], start
        while pos < seg.scan_pos:
            base, length, *_, last_delta = _PREFIX.unpack_from(buf, pos)
            batch_bytes = _LENGTH_FIELD_END + length
            if frames and pos + batch_bytes - start > max_bytes:
                break
            frames.append((pos - start, base, last_delta + 1, batch_bytes))
            pos += batch_bytes
        return memoryview(buf)[start:pos], frames

    # -------------------------------------------------------------- timestamps

    def offset_for_time(self, timestamp, min_offset=0):
        """The first offset >= min_offset whose record timestamp is >= timestamp, or None.

        Kafka's offsetsForTimes over the segments: a sealed segment whose largest
        timestamp (its time index's last entry) is below `timestamp` is skipped unread;
        inside a segment the time index says where records that new may start, the offset
        index finds that batch, and batches are then read forward (headers first: only a
        batch whose max timestamp qualifies is decoded).
        """
        self._refresh()
        for i, seg in enumerate(list(self._segments)):
            next_base = self._bases[i + 1] if i + 1 < len(self._bases) else None
            if next_base is not None and next_base <= min_offset:
                continue
            times = self._time_index(seg)
            if next_base is not None and len(times) and int(times["ts"][-1]) < timestamp:
                continue
            start = index.lookup_time(times, seg.base, timestamp)
            start = max(seg.base if start is None else start, min_offset)
            try:
                found = self._search_time(start, timestamp, min_offset, next_base)
            except FileNotFoundError:
                continue  # deleted by retention while we looked
            if found is not None:
                return found
        return None

    def _search_time(self, offset, timestamp, min_offset, until):
        while until is None or offset < until:
            buf, frames = self.read(offset, 1 << 20)
            if not frames:
                return None
            for pos, base, count, nbytes in frames:
                if base + count <= offset:
                    continue
                if until is not None and base >= until:
                    return None
                if _MAX_TS.unpack_from(buf, pos + _MAX_TS_AT)[0] >= timestamp:
                    found = first_offset_at_or_after(buf[pos:pos + nbytes], timestamp, max(offset, min_offset))
                    if found is not None:
                        return found
                offset = base + count
        return None

    def close(self):
        for seg in self._segments:
            seg.close()
        self._segments, self._bases = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
            if _MAX_TS.unpack_from(buf, f.dst_pos + _MAX_TS_AT)[0] >= timestamp:
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
