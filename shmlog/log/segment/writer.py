"""SegmentWriter: the persister's side of a partition log (appends, rolls, flushes, retention)."""
import ctypes
import errno
import fcntl
import json
import os

from shmlog.log import index, producer_state
from shmlog.log.batch import HEADER, HEADER_BYTES, LENGTH_FIELD_END, base_offset_of
from shmlog.log.segment.format import INDEX_INTERVAL_BYTES, _Mapped, _now_ms, _unlink_segment, _walk, segment_path
from shmlog.log.segment.recovery import CLEAN_CLOSE_NAME, SegmentInfo, _build_index, _recover

SEGMENT_INDEX_BYTES = 10 * 1024 * 1024  # Kafka's segment.index.bytes default
CLEAN_CLOSE_MIN_BYTES = 1 << 20          # newest segments below this are walked at open, closed cleanly or not
NO_ROLL_MS = 2**63 - 1
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
# Writeback is started (not waited for) every WRITEBACK_BYTES of a segment, so the fdatasync
# that seals it at a roll finds its pages mostly on disk already: a 1 GiB segment's dirty pages
# all flushed at the roll stalled the persister, and the producers waiting for ring space
# behind it, for half a second.
WRITEBACK_BYTES = 8 << 20


class SyncFailed(OSError):
    """An fdatasync (or a directory fsync) failed: what was written since the last good
    flush is in an unknown state (the kernel may have dropped the dirty pages, and a later
    fsync would not report it again), so it must be written again before it counts."""

    def __str__(self):
        return str(self.strerror)


class PartitionBusy(OSError):
    """Another SegmentWriter holds the partition directory. Two writers of one log (a new
    leader's persister and the mirror still following into the same directory, for a moment
    after a failover) would cut each other's torn writes at their own idea of the file's
    size and leave holes of zeros: one of them waits."""


def _lock_dir(path):
    """flock the partition directory (released by close(), or by the kernel when we die)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PartitionBusy(errno.EBUSY, f"{path}: another writer holds this partition directory "
                                         f"(one writer per partition log)") from None
    return fd


def _sync(fd, what, data_only=True):
    """fdatasync (fsync) fd; `what` names it if that fails: a path, or a function returning one
    (the active segment's path is not formatted on every fdatasync of an acks=all stream)."""
    try:
        (os.fdatasync if data_only else os.fsync)(fd)
    except OSError as exc:
        code = exc.errno or errno.EIO
        what = what() if callable(what) else what
        raise SyncFailed(code, f"{'fdatasync' if data_only else 'fsync'} of {what} failed: "
                               f"{errno.errorcode.get(code, code)} ({os.strerror(code)})") from exc


def _take_clean_close(partition_dir):
    """What the last writer's clean close said of the newest segment (a dict), or None. The
    file is removed, durably, before anything is appended: it may only ever describe the log
    exactly as that close left it."""
    path = os.path.join(partition_dir, CLEAN_CLOSE_NAME)
    try:
        os.unlink(path + ".tmp")   # a close that crashed while writing it
    except FileNotFoundError:
        pass
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    os.unlink(path)
    _fsync_dir(partition_dir)
    try:
        state = json.loads(data)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _sync(fd, path, data_only=False)
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


_sync_file_range = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd, start, nbytes):
    """Ask the kernel to start writing [start, start + nbytes) of fd back: advice, so a failure
    is ignored (an I/O error surfaces at the fdatasync that makes the bytes count)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, start, nbytes, SYNC_FILE_RANGE_WRITE)


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
    relative offsets. Not thread-safe; one writer per partition directory, which the
    constructor enforces (PartitionBusy) with an flock held until close().
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
        self._fd = None
        self._index = None
        self._parked = False
        self._dir_lock = _lock_dir(partition_dir)
        try:
            self._open_log(partition_dir, created)
        except BaseException:
            self.close()
            raise

    def _open_log(self, partition_dir, created):
        rec = _recover(partition_dir, self.index_interval_bytes, _take_clean_close(partition_dir))
        self._log_end_offset, self.recovery_report = rec.log_end, "; ".join(rec.notes)
        self.recovery_problems = rec.problems   # damaged or missing older segments, one line each
        self._segments = rec.segments
        self._active_base = None
        self._size = 0              # bytes in the active segment that hold whole batches
        self._writeback_from = 0    # where the active segment's next _start_writeback begins
        self._torn = False          # a failed write may have left bytes past _size
        self._dir_dirty = created   # a directory entry is not yet durable
        self._parent_dirty = created
        self._first_timestamp = None   # max timestamp of the active segment's first batch
        self._sync_failed = None       # the SyncFailed since which nothing counts as flushed
        self._created_ms = _now_ms()
        self._jitter = 0
        if self._segments:
            self._open_active(self._segments[-1].base, rec.builder)
            self._first_timestamp = rec.first_timestamp
        # Snapshots above the recovered end describe batches the log no longer has.
        producer_state.delete_snapshots_from(partition_dir, self._log_end_offset)
        self.producers = producer_state.load(partition_dir, self._log_end_offset)
        self.snapshot_error = None   # the OSError of the last snapshot that could not be written
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
    def sync_failed(self):
        """The SyncFailed that made what was written since the last good flush suspect, or None
        (flush() refuses until discard_from() has removed it)."""
        return self._sync_failed

    @property
    def active_segment(self):
        return None if self._active_base is None else segment_path(self.partition_dir, self._active_base)

    def segments(self):
        """[(base offset, end offset, size in bytes, largest timestamp)], oldest first."""
        out = []
        for i, info in enumerate(self._segments):
            end = self._segments[i + 1].base if i + 1 < len(self._segments) else self._log_end_offset
            # A sealed segment may have been rewritten smaller by the log cleaner since: ask the file.
            size = info.size if i == len(self._segments) - 1 else info.current_size()
            out.append((info.base, end, size, info.largest_timestamp()))
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
        self._size = self._writeback_from = os.fstat(self._fd).st_size

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
        if self._sync_failed is not None:
            raise self._sync_failed  # discard_from() first: never append to a file whose sync failed
        self._unpark()
        pieces = _byte_views(data if isinstance(data, (list, tuple)) else [data])
        if not pieces:
            return
        if base_offset < self._log_end_offset:
            raise ValueError(f"{self.partition_dir}: batch at base offset {base_offset} is below the "
                             f"log end offset {self._log_end_offset}")
        if next_offset <= base_offset:
            raise ValueError(f"{self.partition_dir}: next offset {next_offset} must be above base offset "
                             f"{base_offset}")
        first = base_offset_of(pieces[0]) if pieces[0].nbytes >= LENGTH_FIELD_END else None
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
                fields = HEADER.unpack_from(piece, pos)
                base, length, _, _, _, _, last_delta, _, max_ts = fields[:9]
                batch_bytes = LENGTH_FIELD_END + length
                if length < HEADER_BYTES - LENGTH_FIELD_END or pos + batch_bytes > n:
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
                notes.append((self._size + chunk_bytes, batch_bytes, last, max_ts, fields))
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
        if self._size - self._writeback_from >= WRITEBACK_BYTES:
            _start_writeback(self._fd, self._writeback_from, self._size - self._writeback_from)
            self._writeback_from = self._size
        info = self._segments[-1]
        info.size = self._size
        for position, batch_bytes, last_offset, max_ts, fields in notes:
            self._index.note(position, batch_bytes, last_offset, max_ts)
            self.producers.update_from_header(fields)
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
            self._sync_active()
            os.close(self._fd)
            self._index.close()
        self._fd, self._index, self._active_base = None, None, None
        self._size = 0

    def _roll(self, base_offset):
        """Make a new, empty segment named base_offset the active one."""
        sealing = self._fd is not None and self._size > 0
        self._close_active()
        if sealing:
            self.snapshot_producers(base_offset)
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
        self._size = self._writeback_from = 0
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

    def snapshot_producers(self, offset=None):
        """Write the producer state of the batches below `offset` (the log end; a roll's new
        base) as <offset>.snapshot (shmlog/log/producer_state.py). A snapshot is only a shortcut
        for rebuilding the state, so a disk that refuses it is noted in snapshot_error, not
        raised: the next roll or clean stop writes one again."""
        offset = self._log_end_offset if offset is None else offset
        if offset in producer_state.list_snapshots(self.partition_dir):
            return
        try:
            producer_state.write_snapshot(self.partition_dir,
                                          producer_state.ProducerState(offset, self.producers.producers))
            self.snapshot_error = None
        except OSError as exc:
            self.snapshot_error = exc

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
        self._unpark()
        if count >= len(self._segments):
            if self._size:
                self._roll(self._log_end_offset)
                self.flush()
            count = len(self._segments) - 1  # the empty active segment stays: it records the log end
        gone = self._segments[:count]
        self.snapshot_producers()   # the producers' state outlives the batches that set it
        for info in gone:
            _unlink_segment(self.partition_dir, info.base)
        del self._segments[:count]
        _fsync_dir(self.partition_dir)
        return [info.base for info in gone]

    def _sync_active(self):
        try:
            _sync(self._fd, lambda: self.active_segment)
        except SyncFailed as exc:
            self._sync_failed = exc
            raise

    def flush(self):
        """fdatasync the active segment (and the directory after a roll); returns flushed_offset.

        Raises SyncFailed when a sync fails, and again on every later call until
        discard_from() removed what was written since the last good flush: a sync that
        succeeds after a failed one does not make the bytes of the failed one durable
        (Linux reports a writeback error once, and may have dropped the pages).
        """
        if self._sync_failed is not None:
            raise self._sync_failed
        if self._fd is not None and self._dirty:
            self._sync_active()
            self._dirty = False
        try:
            if self._dir_dirty:
                _fsync_dir(self.partition_dir)
                self._dir_dirty = False
            if self._parent_dirty:
                _fsync_dir(os.path.dirname(os.path.abspath(self.partition_dir)))
                self._parent_dirty = False
        except SyncFailed as exc:
            self._sync_failed = exc
            raise
        self._flushed_offset = self._log_end_offset
        return self._flushed_offset

    def discard_from(self, offset):
        """Remove everything at and above `offset` (the last offset a good sync covered) after
        a failed sync, so that it can be written again into a new file.

        Segments whose base offset is >= offset are deleted; the one holding `offset` is cut
        right before its batch and sealed (indexes rebuilt, the new length fdatasync'ed
        before anything is written after it). The next append() starts a new segment at
        `offset`: nothing is ever appended again to a file whose sync failed. Raises
        SyncFailed (the failure stays) or OSError; the call can be repeated.
        """
        self._unpark()
        if self._fd is not None:
            os.close(self._fd)
            self._index.close()
            self._fd, self._index, self._active_base, self._size = None, None, None, 0
        self._torn = False
        while self._segments and self._segments[-1].base >= offset:
            _unlink_segment(self.partition_dir, self._segments.pop().base)
            self._dir_dirty = True
        if self._segments:
            info = self._segments[-1]
            fd = os.open(info.path, os.O_RDWR | os.O_CLOEXEC)
            try:
                mapped = _Mapped(fd, os.fstat(fd).st_size)
                cut = []
                try:
                    # The bytes below `offset` were synced; find where `offset` starts.
                    _walk(mapped, info.base, False,
                          lambda pos, nbytes, last, _ts: cut.append(pos + nbytes) if last == offset - 1 else None)
                finally:
                    mapped.close()
                if not cut:
                    raise OSError(errno.EIO, f"{info.path}: no batch ends at offset {offset - 1}; the synced "
                                             f"part of the segment does not read back")
                os.ftruncate(fd, cut[0])
                _sync(fd, info.path)
                mapped = _Mapped(fd, cut[0])
                try:
                    builder, offset_entries, time_entries = _build_index(mapped, info.base, self.index_interval_bytes,
                                                                         check_crc=False)
                finally:
                    mapped.close()
            finally:
                os.close(fd)
            index.write_index_files(self.partition_dir, info.base, offset_entries, time_entries)
            info.size, info.max_timestamp = cut[0], builder.max_ts
        self._log_end_offset = offset
        self._flushed_offset = min(self._flushed_offset, offset)
        self._first_timestamp = None
        self._dirty = False
        self._sync_failed = None
        producer_state.delete_snapshots_from(self.partition_dir, offset)
        self.producers = producer_state.load(self.partition_dir, offset)

    @property
    def parked(self):
        return self._parked

    def park(self):
        """Close the files and give up the directory lock, keeping all the writer knows; the
        next append, discard_from, delete_oldest or close takes them again. Only when everything
        written is flushed (nothing then needs a descriptor in between): True if parked.
        For the persister's open-file cache of idle partitions (shmlog/broker/open_files.py)."""
        if self._parked:
            return True
        if (self._dirty or self._torn or self._sync_failed is not None or self._dir_dirty or self._parent_dirty
                or self._flushed_offset != self._log_end_offset):
            return False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._index.close()
        os.close(self._dir_lock)
        self._dir_lock = None
        self._parked = True
        return True

    def _unpark(self):
        if not self._parked:
            return
        self._dir_lock = _lock_dir(self.partition_dir)   # PartitionBusy while another writer holds it
        try:
            if self._active_base is not None and not self._reopen_active():
                # Another writer had the directory meanwhile: believe the disk, not memory.
                self._index, self._active_base = None, None
                self._open_log(self.partition_dir, False)
        except BaseException:
            os.close(self._dir_lock)
            self._dir_lock = None
            raise
        self._parked = False

    def _reopen_active(self):
        """Take the active segment's files again: False if the segment is not as we left it."""
        try:
            fd = os.open(segment_path(self.partition_dir, self._active_base), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        if os.fstat(fd).st_size != self._size:
            os.close(fd)
            return False
        try:
            self._index.reopen()
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def close(self):
        if self._parked:
            try:
                self._unpark()   # to leave a clean-close record: the next open then walks nothing
            except OSError:
                self._parked = False
                return
        if self._fd is not None:
            self._leave_clean_close()
            os.close(self._fd)
            self._fd = None
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._dir_lock is not None:
            os.close(self._dir_lock)
            self._dir_lock = None

    def _leave_clean_close(self):
        """Everything written is flushed: say so in CLEAN_CLOSE_NAME, with the newest segment's
        index state, so that the next writer (a restart, or the new leader's persister taking
        over a follower's directory at a failover) need not walk and CRC that whole segment
        (recovery.py); also a producer snapshot at the log end, so no batch is read to
        rebuild the producers. Best effort: without it the next open walks, as after a crash.
        Not for a segment small enough to walk in a moment: every close of 10,000 partitions
        would pay two index fsyncs each for nothing."""
        idx = self._index
        if self._log_end_offset > 0 and self._flushed_offset == self._log_end_offset:
            self.snapshot_producers()
        if (idx is None or self._size < CLEAN_CLOSE_MIN_BYTES or self._torn or self._dirty
                or self._sync_failed is not None or idx.failed_writes or self._flushed_offset != self._log_end_offset):
            return
        try:
            idx.offsets.finish()
            idx.times.finish()
            b = idx.builder
            state = {"base": self._active_base, "size": self._size, "log_end_offset": self._log_end_offset,
                     "first_timestamp": self._first_timestamp,
                     "offset_index_bytes": idx.offsets.size, "time_index_bytes": idx.times.size,
                     "builder": [b.since_entry, b.max_ts, b.offset_of_max_ts, b.last_time_entry_ts,
                                 b.offset_entries, b.time_entries]}
            path = os.path.join(self.partition_dir, CLEAN_CLOSE_NAME)
            # Not fsynced: a crash leaves it whole (what it says is durable already), missing,
            # or unparseable (a prefix of JSON is not JSON), and the last two only mean a walk.
            with open(path + ".tmp", "wb") as f:
                f.write(json.dumps(state).encode())
            os.replace(path + ".tmp", path)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
