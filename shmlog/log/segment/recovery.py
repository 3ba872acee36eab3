"""Recovery: making a partition directory a valid log again after a crash (see recover())."""
import os

from shmlog.log import index
from shmlog.log.batch import HEADER_BYTES, HEADER_PREFIX, LENGTH_FIELD_END, MAGIC
from shmlog.log.segment.format import (
    _SIDE_FILE,
    INDEX_INTERVAL_BYTES,
    _batch_matches,
    _batch_max_timestamp,
    _Mapped,
    _now_ms,
    _unlink_segment,
    _walk,
    list_segments,
    segment_name,
    segment_path,
)

CLEAN_CLOSE_NAME = "clean-close.json"   # SegmentWriter.close() after a full flush


class SegmentInfo:
    """What the writer keeps about each segment: retention reads it."""

    __slots__ = ("base", "size", "max_timestamp", "path")

    def __init__(self, partition_dir, base, size=0, max_timestamp=index.NO_TIMESTAMP):
        self.base = base
        self.size = size
        self.max_timestamp = max_timestamp
        self.path = segment_path(partition_dir, base)

    def current_size(self):
        """The file's size now (0 once deleted)."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def largest_timestamp(self):
        """Kafka's rule: the largest record timestamp, else the file's modification time (ms)."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        try:
            return os.stat(self.path).st_mtime_ns // 1_000_000
        except FileNotFoundError:
            return _now_ms()


class _Recovered:
    __slots__ = ("log_start", "log_end", "notes", "problems", "segments", "builder", "first_timestamp")


def recover(partition_dir, index_interval_bytes=INDEX_INTERVAL_BYTES):
    """Make partition_dir a valid log again after a crash.

    Every batch of the newest segment is checked (bounds, CRC32C, dense offsets) and the
    segment is cut at the first bad one: after a crash only its tail can be torn, and a
    batch that fails its CRC or breaks the offset sequence cannot be trusted, nor can
    anything after it. Its indexes are rebuilt from what remains. Older segments were
    sealed and fdatasync'ed when the log rolled past them, so they get cheap checks only
    (not a CRC each): their first batch header, their indexes (rebuilt when missing or
    failing a sanity check), their last batches (walked from the last offset index entry
    to the end of the file: a truncated or damaged tail shows there) and whether each
    segment ends where the next one starts (a deleted segment leaves a gap). What fails is
    reported with the offsets it affects, not cut: it is media damage or a lost file, and
    cutting would throw away every newer segment. `shmlog verify-log` checks every CRC.
    Index files without a log are removed.

    Returns (log_start_offset, log_end_offset, report); report says exactly what was cut,
    rebuilt or found ("" when the log was clean).
    """
    rec = _recover(partition_dir, index_interval_bytes)
    return rec.log_start, rec.log_end, "; ".join(rec.notes + rec.problems)


def _recover(partition_dir, interval, clean_close=None):
    rec = _Recovered()
    rec.notes, rec.problems, rec.segments, rec.builder, rec.first_timestamp = [], [], [], None, None
    bases = list_segments(partition_dir)
    _remove_orphans(partition_dir, set(bases), rec.notes)
    kept = []
    for base in bases[:-1]:
        path = segment_path(partition_dir, base)
        size = os.path.getsize(path)
        if size == 0:
            # Holds no offsets; left by an interrupted roll. Keeping it would hide the next
            # segment's base from readers that look for the segment containing an offset.
            _unlink_segment(partition_dir, base)
            rec.notes.append(f"{path}: removed an empty segment that was not the newest")
            continue
        kept.append(base)
    ends = {}   # base -> the offset an older segment ends at, as far as it reads
    for i, base in enumerate(kept):
        path = segment_path(partition_dir, base)
        next_base = kept[i + 1] if i + 1 < len(kept) else bases[-1]
        problem = _first_header_problem(path, base)
        max_ts = _check_sealed_indexes(partition_dir, base, interval, rec.notes)
        if problem:
            rec.problems.append(f"{path}: {problem}; offsets {base}..{next_base - 1} cannot be read "
                                f"(a damaged older segment, left as is)")
            ends[base] = next_base
        else:
            ends[base] = _check_tail(partition_dir, base, next_base, rec.problems)
        rec.segments.append(SegmentInfo(partition_dir, base, os.path.getsize(path), max_ts))
    if not bases:
        rec.log_start = rec.log_end = 0
        return rec
    newest = bases[-1]
    for base, next_base in zip(kept, kept[1:] + [newest]):
        if ends[base] < next_base:
            rec.problems.append(f"{partition_dir}: offsets {ends[base]}..{next_base - 1} are in no segment (between "
                                f"{segment_name(base)} and {segment_name(next_base)}: a deleted or truncated segment, "
                                f"or offsets an earlier run lost); readers skip to offset {next_base}")
        elif ends[base] > next_base:
            rec.problems.append(f"{segment_path(partition_dir, base)}: ends at offset {ends[base]}, past the next "
                                f"segment's base offset {next_base}; offsets {next_base}..{ends[base] - 1} are read "
                                f"from {segment_name(next_base)}")
    trusted = _trusted_newest(partition_dir, newest, interval, clean_close)
    if trusted is not None:
        rec.log_end, size, rec.builder, rec.first_timestamp, note = trusted
    else:
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
    first, length, _, magic, _, _, last_delta = HEADER_PREFIX.unpack_from(head, 0)
    if magic != MAGIC or length < HEADER_BYTES - LENGTH_FIELD_END or last_delta < 0:
        return "its first batch header is invalid"
    if first != base:
        return f"its first batch has base offset {first}, the file name says {base}"
    return None


def _check_tail(partition_dir, base, next_base, problems):
    """Walk an older segment's last batches (from its last offset index entry to the end of
    the file, no CRC): the offset it ends at, as far as it reads. A torn or invalid tail is
    reported with the offsets it takes out of reach (up to next_base)."""
    path = segment_path(partition_dir, base)
    mapped = _Mapped.of_path(path)
    try:
        start, expected = 0, base
        try:
            entries = index.read_entries(index.offset_index_path(partition_dir, base), index.OFFSET_DTYPE)
        except FileNotFoundError:
            entries = ()
        if len(entries):
            rel, position = (int(v) for v in entries[-1])
            if _batch_matches(mapped, position, base + rel):
                start, expected = position, None
        valid, end, bad = _walk(mapped, expected, False, start=start, gaps=True)
        if end is None:  # the walk started at an index entry and found nothing after it
            end = base
        if bad is not None:
            problems.append(f"{path}: {bad.reason} at byte {valid} of {mapped.size}; offsets {end}..{next_base - 1} "
                            f"cannot be read (a truncated or damaged older segment, left as is)")
            return next_base
        return end
    finally:
        mapped.close()


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


def _build_index(mapped, base, interval, check_crc, seal=True, gaps=True):
    """Index entries for a segment's valid prefix: (builder, offset entries, time entries).

    gaps: the segment may be one the log cleaner rewrote (every sealed segment may)."""
    builder = index.IndexBuilder(base, interval)
    offset_entries, time_entries = [], []

    def note(pos, batch_bytes, last_offset, max_ts):
        o, t = builder.note(pos, batch_bytes, last_offset, max_ts)
        if o is not None:
            offset_entries.append(o)
        if t is not None:
            time_entries.append(t)

    _walk(mapped, base, check_crc, note, gaps=gaps)
    if seal:
        final = builder.final_time_entry()
        if final is not None:
            time_entries.append(final)
    return builder, offset_entries, time_entries


def _trusted_newest(partition_dir, base, interval, clean_close):
    """_recover_newest's answer from a writer's clean close (SegmentWriter._leave_clean_close),
    when it describes this newest segment and its index files as they are; else None. A log
    closed cleanly was flushed whole, so only a crash's torn tail needs the walk."""
    try:
        c = clean_close or {}
        if c.get("base") != base or os.path.getsize(segment_path(partition_dir, base)) != c["size"] or \
                os.path.getsize(index.offset_index_path(partition_dir, base)) != c["offset_index_bytes"] or \
                os.path.getsize(index.time_index_path(partition_dir, base)) != c["time_index_bytes"]:
            return None
        builder = index.IndexBuilder(base, interval)
        (builder.since_entry, builder.max_ts, builder.offset_of_max_ts, builder.last_time_entry_ts,
         builder.offset_entries, builder.time_entries) = (int(v) for v in c["builder"])
        first = c["first_timestamp"]
        return int(c["log_end_offset"]), c["size"], builder, None if first is None else int(first), None
    except (OSError, KeyError, TypeError, ValueError):
        return None


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
