"""SegmentReader: a partition's segment files read, zero-copy, while the persister appends."""
import bisect

import numpy as np

from shmlog._native import ffi, lib
from shmlog.errors import KafkaError, error
from shmlog.log import index
from shmlog.log.batch import (
    ATTR_COMPRESSION_MASK,
    ATTR_LOG_APPEND_TIME,
    HEADER,
    HEADER_BYTES,
    HEADER_PREFIX,
    LENGTH_FIELD_END,
    carries_records,
    max_timestamp_of,
)
from shmlog.log.segment.format import (
    INDEX_INTERVAL_BYTES,
    _BadBatch,
    _batch_matches,
    _check_batch,
    _Mapped,
    list_segments,
    segment_path,
)

JUMP_MIN_BYTES = 1 << 20   # a reader scans forward rather than jump through the index for less
_EMPTY = memoryview(b"")


def first_offset_at_or_after(batch, timestamp, min_offset=0):
    """The first offset >= min_offset in one batch whose record timestamp is >= timestamp, or None."""
    from shmlog._native.layout import RECORD_REF_DTYPE
    view = memoryview(batch).cast("B") if not isinstance(batch, memoryview) or batch.format != "B" else batch
    base, length, _, _, _, attributes, last_delta, _, max_ts, _, _, _, count = HEADER.unpack_from(view, 0)
    if not carries_records(attributes, count) or max_ts < timestamp or base + last_delta < min_offset:
        return None
    if attributes & ATTR_LOG_APPEND_TIME:
        return max(base, min_offset)  # every record carries the batch's append time
    refs = np.empty(count, RECORD_REF_DTYPE)
    if attributes & ATTR_COMPRESSION_MASK:
        from shmlog.log.codec import index_compressed_batch
        _, n = index_compressed_batch(view[:LENGTH_FIELD_END + length], refs, False)
    else:
        src = ffi.from_buffer(view)
        n = lib.shmlog_batch_index(src, LENGTH_FIELD_END + length, ffi.from_buffer("shmlog_record_ref[]", refs),
                                   count, 0)
        if n < 0:
            raise error(KafkaError._BAD_MSG, f"corrupt record batch at offset {base}")
    refs = refs[:n]
    hits = np.flatnonzero((refs["timestamp"] >= timestamp) & (refs["offset"] >= min_offset))
    return int(refs["offset"][hits[0]]) if len(hits) else None


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
        if old is not None and old.size and fresh.size and fresh.ino != old.ino:
            # The log cleaner swapped in a rewritten segment: same offsets, other positions.
            seg.close()
            seg.mapped = fresh
            seg.forget()
            seg.disk_index = seg.time_index = None
            return True
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
        rechecked = None
        while wanted() and seg.problem is None:
            m = seg.mapped
            if m is None or seg.scan_pos >= m.size:
                if not self._remap(seg):
                    return
                m = seg.mapped
            try:
                batch_bytes, base, count, _ = _check_batch(m.mm, m.ptr, seg.scan_pos, m.size, seg.scan_offset,
                                                           False, gaps=not self._is_newest(seg))
            except _BadBatch as bad:
                # The newest segment's tail moves under us: a batch being written shows torn, and
                # a writer that cut a failed write back (ENOSPC) leaves our map longer than the
                # file, its tail reading as zeros. Either way the file's size has changed since
                # we mapped it (or cut and written again since): look again before calling
                # anything damage.
                newest = self._is_newest(seg)
                if newest and not bad.torn and rechecked != seg.scan_pos:
                    rechecked = seg.scan_pos   # the same bytes, read once more, after any remap
                    self._remap(seg)
                    continue
                if not (bad.torn or newest) or not self._remap(seg):
                    # A torn batch at the end of the newest segment is one being written: wait.
                    # Anywhere else (or corrupt) it is damage that recovery has not cut.
                    if not bad.torn or not newest:
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
            base, length, *_, last_delta = HEADER_PREFIX.unpack_from(buf, pos)
            if offset <= base + last_delta:
                return pos
            pos += LENGTH_FIELD_END + length
        return None

    def _collect(self, seg, start, max_bytes):
        self._scan(seg, until_pos=start + max_bytes)
        buf, frames, pos = seg.mapped.mm, [], start
        while pos < seg.scan_pos:
            base, length, *_, last_delta = HEADER_PREFIX.unpack_from(buf, pos)
            batch_bytes = LENGTH_FIELD_END + length
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
                if max_timestamp_of(buf, pos) >= timestamp:
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
