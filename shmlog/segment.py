"""Segment files: the on-disk part of a partition log, as Kafka lays it out.

A partition directory `<log dir>/<topic>-<partition>/` holds `<base offset, 20 digits>.log`
files. Each is Kafka RecordBatch v2 bytes back to back, exactly as producers wrote them into
the ring (without the ring's 8-byte frame prefix), so a segment can be read, copied or
compared batch for batch. The file name is the base offset of its first batch.

Invariants, relied on by recovery and readers:
- inside a segment, offsets are dense: a batch's base offset is the previous batch's
  base + lastOffsetDelta + 1, and the first batch's base is the file name;
- between segments there may be a gap (data a previous run lost is logged and skipped; a
  new segment starts at the next offset the ring holds), never an overlap;
- only the newest segment is ever appended to, and a segment is fdatasync'ed before the
  writer moves on to the next one, so after a crash only the newest can have a torn tail.

The persister is the only writer (SegmentWriter); consumers that fell behind the ring read
with SegmentReader from other processes while the persister appends.
"""
import bisect
import errno
import mmap
import os
import re
import struct

from ._core import ffi, lib
from .errors import KafkaError, error

SUFFIX = ".log"
_NAME = re.compile(r"^(\d{20})\.log$")

HEADER_BYTES = lib.SHMLOG_BATCH_HEADER_BYTES  # 61
_LENGTH_FIELD_END = 12  # base offset (8) + batch length (4): not counted in the batch length
_MAGIC = lib.SHMLOG_BATCH_MAGIC
# base offset, batch length, partition leader epoch, magic, crc, attributes, lastOffsetDelta
_PREFIX = struct.Struct(">qiibIhi")

INDEX_INTERVAL_BYTES = 4096  # Kafka's index.interval.bytes default
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_EMPTY = memoryview(b"")


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
    """(batch_bytes, base_offset, offset_count) of the batch at pos, or raise _BadBatch.

    offset_count is lastOffsetDelta + 1, the offsets the batch accounts for (what the
    ring's frame refs call record_count; a repaired dead claim is a control batch with
    zero records that still accounts for its offsets).
    """
    room = end - pos
    if room < HEADER_BYTES:
        raise _BadBatch(f"torn batch header ({room} of {HEADER_BYTES} bytes present)", True)
    base, length, _, magic, _, _, last_delta = _PREFIX.unpack_from(buf, pos)
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
    if base != expected_base:
        raise _BadBatch(f"offset gap (expected base offset {expected_base}, found {base})", False)
    return batch_bytes, base, last_delta + 1


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


def _walk(mapped, expected_base, check_crc):
    """Walk a segment from its start: (valid_bytes, next_offset, _BadBatch or None)."""
    pos, next_offset = 0, expected_base
    buf, ptr, end = mapped.mm, mapped.ptr, mapped.size
    while pos < end:
        try:
            batch_bytes, base, count = _check_batch(buf, ptr, pos, end, next_offset, check_crc)
        except _BadBatch as bad:
            return pos, next_offset, bad
        pos += batch_bytes
        next_offset = base + count
    return pos, next_offset, None


# ---------------------------------------------------------------------- recovery

def recover(partition_dir):
    """Make partition_dir a valid log again after a crash.

    Every batch of the newest segment is checked (bounds, CRC32C, dense offsets) and the
    segment is cut at the first bad one: after a crash only its tail can be torn, and a
    batch that fails its CRC or breaks the offset sequence cannot be trusted, nor can
    anything after it. Older segments were fdatasync'ed when the log rolled past them, so
    only their first header is checked (a mismatch there is reported, not cut: it is
    media damage, and cutting would throw away every newer segment).

    Returns (log_start_offset, log_end_offset, report); report says exactly what was cut
    or found ("" when the log was clean).
    """
    bases = list_segments(partition_dir)
    notes = []
    for base in bases[:-1]:
        path = segment_path(partition_dir, base)
        if os.path.getsize(path) == 0:
            # Holds no offsets; left by an interrupted roll. Keeping it would hide the next
            # segment's base from readers that look for the segment containing an offset.
            os.unlink(path)
            notes.append(f"{path}: removed an empty segment that was not the newest")
            bases.remove(base)
            continue
        problem = _first_header_problem(path, base)
        if problem:
            notes.append(f"{path}: {problem}; older segment left as is, reads from it will fail")
    if not bases:
        return 0, 0, "; ".join(notes)
    end_offset, note = _recover_newest(segment_path(partition_dir, bases[-1]), bases[-1])
    if note:
        notes.append(note)
    return bases[0], end_offset, "; ".join(notes)


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


def _recover_newest(path, base):
    """Cut the newest segment at its first bad batch: (log_end_offset, note or None)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        mapped = _Mapped(fd, size)
        try:
            valid, end_offset, bad = _walk(mapped, base, check_crc=True)
        finally:
            mapped.close()
        if bad is None:
            return end_offset, None
        os.ftruncate(fd, valid)
        os.fsync(fd)  # the new length must be durable before anything is appended after it
        return end_offset, (f"{path}: cut {size - valid} bytes at byte {valid} of {size} ({bad.reason}); "
                            f"log end offset is now {end_offset}")
    finally:
        os.close(fd)


def log_start_offset(partition_dir):
    """First offset on disk: the oldest segment's base offset (0 when there is none)."""
    bases = list_segments(partition_dir)
    return bases[0] if bases else 0


def log_end_offset(partition_dir):
    """The offset after the last complete batch on disk (0 when there is no segment).

    Read-only: a torn or corrupt tail ends the log here without being cut (recover()
    does that, in the persister).
    """
    bases = list_segments(partition_dir)
    if not bases:
        return 0
    try:
        mapped = _Mapped.of_path(segment_path(partition_dir, bases[-1]))
    except FileNotFoundError:
        return log_end_offset(partition_dir)  # retention or a roll changed the listing
    try:
        return _walk(mapped, bases[-1], check_crc=False)[1]
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

    Not thread-safe, and there must be one writer per partition directory (the persister).
    """

    def __init__(self, partition_dir, segment_bytes):
        self.partition_dir = partition_dir
        self.segment_bytes = int(segment_bytes)
        created = not os.path.isdir(partition_dir)
        os.makedirs(partition_dir, exist_ok=True)
        self._log_start_offset, self._log_end_offset, self.recovery_report = recover(partition_dir)
        self._fd = None
        self._active_base = None
        self._size = 0              # bytes in the active segment that hold whole batches
        self._torn = False          # a failed write may have left bytes past _size
        self._dir_dirty = created   # a directory entry is not yet durable
        self._parent_dirty = created
        bases = list_segments(partition_dir)
        if bases:
            self._open_active(bases[-1])
        # What recovery found may still sit only in the page cache of a crashed run.
        self._dirty = bool(bases)
        self._flushed_offset = self._log_start_offset if self._dirty else self._log_end_offset

    @property
    def log_end_offset(self):
        return self._log_end_offset

    @property
    def log_start_offset(self):
        return self._log_start_offset

    @property
    def flushed_offset(self):
        """Offsets below this are fdatasync'ed (as of the last flush())."""
        return self._flushed_offset

    @property
    def active_segment(self):
        return None if self._active_base is None else segment_path(self.partition_dir, self._active_base)

    def _open_active(self, base):
        path = segment_path(self.partition_dir, base)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._active_base = base
        self._size = os.fstat(self._fd).st_size

    def append(self, data, base_offset, next_offset):
        """Append whole batches starting at base_offset; the log end becomes next_offset.

        data is one buffer (one or more batches back to back) or a list of them, each
        starting at a batch boundary; a list lets the writer roll between its items and
        goes out with writev, so ring slices need not be copied together first.
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
        chunk, chunk_bytes = [], 0
        for piece in pieces:
            if chunk_bytes and self._size + chunk_bytes + piece.nbytes > self.segment_bytes:
                piece_base = _PREFIX.unpack_from(piece, 0)[0]
                self._write(chunk, chunk_bytes, piece_base)
                chunk, chunk_bytes = [], 0
            if self._size and not chunk_bytes and self._size + piece.nbytes > self.segment_bytes:
                self._roll(_PREFIX.unpack_from(piece, 0)[0])
            chunk.append(piece)
            chunk_bytes += piece.nbytes
        self._write(chunk, chunk_bytes, next_offset)

    def _write(self, views, nbytes, end_offset):
        try:
            _write_all(self._fd, views)
        except OSError:
            self._torn = True
            try:
                self._cut_torn_write()
            except OSError:
                pass  # retried before the next append
            raise
        self._size += nbytes
        self._log_end_offset = end_offset
        self._dirty = True

    def _cut_torn_write(self):
        # A short or failed write (ENOSPC, EIO) left part of a batch: cut it so the file
        # only ever holds whole batches and O_APPEND continues at a batch boundary.
        if self._torn:
            os.ftruncate(self._fd, self._size)
            self._torn = False

    def _roll(self, base_offset):
        """Make a new, empty segment named base_offset the active one."""
        if self._fd is not None:
            if self._size == 0:
                # An empty active segment holds no offsets: replace it, do not keep it around.
                os.close(self._fd)
                os.unlink(segment_path(self.partition_dir, self._active_base))
            else:
                # Recovery only walks the newest segment, so one we leave must be whole on disk.
                os.fdatasync(self._fd)
                os.close(self._fd)
            self._fd = None
        path = segment_path(self.partition_dir, base_offset)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._active_base = base_offset
        self._size = 0
        self._dir_dirty = True
        self._log_start_offset = list_segments(self.partition_dir)[0]
        if self._log_end_offset < base_offset:
            self._log_end_offset = base_offset
            if self._flushed_offset < base_offset and not self._dirty:
                self._flushed_offset = base_offset  # nothing below it will ever be written

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------- reading

class _Segment:
    """What a reader knows of one segment file: its map and the validated prefix.

    Batches below scan_pos have been checked (complete, valid header, dense offsets);
    index_* is the sparse offset -> position index over that prefix.
    """

    __slots__ = ("base", "path", "mapped", "scan_pos", "scan_offset", "index_offsets",
                 "index_positions", "last_indexed", "problem")

    def __init__(self, partition_dir, base):
        self.base = base
        self.path = segment_path(partition_dir, base)
        self.mapped = None
        self.forget()

    def forget(self):
        self.scan_pos, self.scan_offset = 0, self.base
        self.index_offsets, self.index_positions = [], []
        self.last_indexed = -INDEX_INTERVAL_BYTES
        self.problem = None

    def close(self):
        if self.mapped is not None:
            self.mapped.close()
            self.mapped = None


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
            self._scan(self._segments[-1], until_offset=offset)
            if offset < self._segments[-1].scan_offset:
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
                return True
            fresh.close()
            return False
        if old is not None:
            old.close()
        seg.mapped = fresh
        return True

    def _scan(self, seg, until_offset=None, until_pos=None):
        """Extend seg's validated prefix until it covers until_offset / until_pos, or ends."""
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
                batch_bytes, base, count = _check_batch(m.mm, m.ptr, seg.scan_pos, m.size, seg.scan_offset, False)
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

    def close(self):
        for seg in self._segments:
            seg.close()
        self._segments, self._bases = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
