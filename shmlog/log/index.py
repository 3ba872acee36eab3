"""The offset index and time index beside each segment, in Kafka's file formats.

`<base>.index` holds 8-byte entries (relative offset: int32, position: int32, big-endian):
the batch at byte `position` of `<base>.log` ends at offset `base + relative offset` (Kafka
indexes a batch by its last offset). `<base>.timeindex` holds 12-byte entries (timestamp:
int64, relative offset: int32): no record at or before that offset has a larger timestamp.
An entry is added when at least `index.interval.bytes` of log were written since the last
one, so both files are sparse; sealing a segment (when the log rolls past it) adds a final
time entry carrying the segment's largest timestamp, which retention.ms reads.

Indexes are hints derived from the log. Readers check every entry they use against the
batch header it points at. The writer does not fsync the active segment's indexes: recovery
rebuilds the newest segment's from its log every time. An older segment's indexes were
fsynced when it was sealed; recovery rebuilds them only when they are missing or fail a
sanity check (size, order, bounds, first and last entries against the log).
"""
import os
import struct

import numpy as np

OFFSET_SUFFIX = ".index"
TIME_SUFFIX = ".timeindex"

OFFSET_ENTRY = struct.Struct(">iI")
TIME_ENTRY = struct.Struct(">qi")
OFFSET_DTYPE = np.dtype([("rel", ">i4"), ("pos", ">u4")])
TIME_DTYPE = np.dtype([("ts", ">i8"), ("rel", ">i4")])
INT32_MAX = 2**31 - 1
NO_TIMESTAMP = -1


def offset_index_path(partition_dir, base_offset):
    return os.path.join(partition_dir, f"{base_offset:020d}{OFFSET_SUFFIX}")


def time_index_path(partition_dir, base_offset):
    return os.path.join(partition_dir, f"{base_offset:020d}{TIME_SUFFIX}")


def read_entries(path, dtype):
    """The whole entries of an index file as a NumPy array (a torn last entry is left out).

    Raises FileNotFoundError when the file is missing.
    """
    with open(path, "rb") as f:
        data = f.read()
    whole = len(data) - len(data) % dtype.itemsize
    return np.frombuffer(data, dtype, whole // dtype.itemsize)


def lookup_offset(entries, base_offset, offset):
    """(last offset, position) of the entry to start a scan for `offset` from, or None.

    The largest entry whose batch ends at or before `offset`: the batch holding `offset`
    starts at its position or later.
    """
    if not len(entries):
        return None
    i = int(np.searchsorted(entries["rel"].astype(np.int64) + base_offset, offset, side="right")) - 1
    if i < 0:
        return None
    return base_offset + int(entries["rel"][i]), int(entries["pos"][i])


def lookup_time(entries, base_offset, timestamp):
    """The last offset of the latest entry whose timestamp is below `timestamp`, or None.

    No record up to that offset has a timestamp >= `timestamp`, so a search can start there.
    """
    if not len(entries):
        return None
    i = int(np.searchsorted(entries["ts"].astype(np.int64), timestamp, side="left")) - 1
    if i < 0:
        return None
    return base_offset + int(entries["rel"][i])


class IndexBuilder:
    """Decides which batches get entries; shared by the writer and by rebuilds."""

    __slots__ = ("base", "interval", "since_entry", "max_ts", "offset_of_max_ts", "last_time_entry_ts",
                 "offset_entries", "time_entries")

    def __init__(self, base_offset, interval_bytes):
        self.base = base_offset
        self.interval = interval_bytes
        self.since_entry = interval_bytes  # the first batch always gets an entry
        self.max_ts = NO_TIMESTAMP
        self.offset_of_max_ts = base_offset
        self.last_time_entry_ts = NO_TIMESTAMP
        self.offset_entries = 0
        self.time_entries = 0

    def note(self, position, batch_bytes, last_offset, max_ts):
        """Entries (offset entry bytes or None, time entry bytes or None) for one batch."""
        if max_ts > self.max_ts:
            self.max_ts, self.offset_of_max_ts = max_ts, last_offset
        offset_entry = time_entry = None
        if self.since_entry >= self.interval:
            offset_entry = OFFSET_ENTRY.pack(last_offset - self.base, position)
            self.offset_entries += 1
            if self.max_ts > self.last_time_entry_ts:
                time_entry = TIME_ENTRY.pack(self.max_ts, self.offset_of_max_ts - self.base)
                self.last_time_entry_ts = self.max_ts
                self.time_entries += 1
            self.since_entry = 0
        self.since_entry += batch_bytes
        return offset_entry, time_entry

    def final_time_entry(self):
        """The entry sealing a segment: its largest timestamp, unless already the last entry."""
        if self.max_ts <= self.last_time_entry_ts:
            return None
        self.last_time_entry_ts = self.max_ts
        self.time_entries += 1
        return TIME_ENTRY.pack(self.max_ts, self.offset_of_max_ts - self.base)


class _AppendFile:
    """One index file written with pwrite at the end of its whole entries.

    A failed or short write leaves at most a partial entry past `size`, which readers
    ignore and the next write overwrites.
    """

    __slots__ = ("path", "fd", "size")

    def __init__(self, path, truncate):
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        self.path = path
        self.fd = os.open(path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size

    def append(self, entry):
        written = os.pwrite(self.fd, entry, self.size)
        if written != len(entry):
            raise OSError(28, "short write to index", self.path)
        self.size += written

    def finish(self):
        """Drop any partial entry and make the file durable."""
        if os.fstat(self.fd).st_size != self.size:
            os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def reopen(self):
        """Open the file again after close(), appending where the whole entries end."""
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


class SegmentIndex:
    """The writer's side of one segment's .index and .timeindex.

    Entries are best effort while the segment is active (a write error leaves a sparser
    index, never a wrong one); seal() must succeed before the log rolls past the segment.
    """

    def __init__(self, partition_dir, base_offset, interval_bytes, max_index_bytes, builder=None,
                 truncate=True):
        self.base = base_offset
        self.max_index_bytes = max_index_bytes
        self.builder = builder or IndexBuilder(base_offset, interval_bytes)
        self.offsets = _AppendFile(offset_index_path(partition_dir, base_offset), truncate)
        try:
            self.times = _AppendFile(time_index_path(partition_dir, base_offset), truncate)
        except OSError:
            self.offsets.close()
            raise
        self.failed_writes = 0

    def set_interval(self, interval_bytes):
        self.builder.interval = interval_bytes

    def full(self):
        """True when one more entry might not fit segment.index.bytes (Kafka rolls then)."""
        return (self.offsets.size + OFFSET_ENTRY.size > self.max_index_bytes or
                self.times.size + TIME_ENTRY.size > self.max_index_bytes)

    def note(self, position, batch_bytes, last_offset, max_ts):
        offset_entry, time_entry = self.builder.note(position, batch_bytes, last_offset, max_ts)
        try:
            if offset_entry is not None:
                self.offsets.append(offset_entry)
            if time_entry is not None:
                self.times.append(time_entry)
        except OSError:
            self.failed_writes += 1

    @property
    def max_timestamp(self):
        return self.builder.max_ts

    def seal(self):
        """Write the final time entry and fsync both files; raises OSError on failure."""
        entry = self.builder.final_time_entry()
        if entry is not None:
            try:
                self.times.append(entry)
            except OSError:
                self.builder.last_time_entry_ts = NO_TIMESTAMP  # retried by the next seal()
                raise
        self.offsets.finish()
        self.times.finish()

    def close(self):
        self.offsets.close()
        self.times.close()

    def reopen(self):
        """Take the files again after close(); what the index knows was kept."""
        self.offsets.reopen()
        try:
            self.times.reopen()
        except OSError:
            self.offsets.close()
            raise


def write_index_files(partition_dir, base_offset, offset_entries, time_entries, durable=True):
    """Replace both index files of a segment atomically (temp file, fsync when durable, rename).

    On OSError (a full disk) the temp file is removed and the error raised; the old files
    are untouched.
    """
    for path, entries in ((offset_index_path(partition_dir, base_offset), offset_entries),
                          (time_index_path(partition_dir, base_offset), time_entries)):
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            data = b"".join(entries)
            view, done = memoryview(data), 0
            while done < len(data):
                done += os.write(fd, view[done:])
            if durable:
                os.fsync(fd)
        except OSError:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)


def empty_index_files(partition_dir, base_offset):
    """Make both index files of a segment empty (needs no free space); best effort."""
    for path in (offset_index_path(partition_dir, base_offset), time_index_path(partition_dir, base_offset)):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            os.close(fd)
        except OSError:
            pass


def sanity_problem(offset_entries, time_entries, base_offset, log_bytes, check_entry, check_time_entry):
    """Why a sealed segment's indexes cannot be trusted, or None.

    check_entry(position, last_offset) -> True if a batch ending at last_offset starts at
    position of the log; check_time_entry(timestamp, last_offset) -> True if the batch
    ending at last_offset has that max timestamp. Both are asked about the first and last
    entries of their index.
    """
    if len(offset_entries):
        rel = offset_entries["rel"].astype(np.int64)
        pos = offset_entries["pos"].astype(np.int64)
        if rel[0] < 0 or (len(rel) > 1 and (np.diff(rel) <= 0).any()):
            return "offset index entries are not in increasing offset order"
        if (len(pos) > 1 and (np.diff(pos) <= 0).any()) or pos[-1] >= log_bytes:
            return "offset index positions are out of order or past the end of the log"
        for i in {0, len(rel) - 1}:
            if not check_entry(int(pos[i]), base_offset + int(rel[i])):
                return (f"offset index entry {i} (offset {base_offset + int(rel[i])}, position {int(pos[i])}) "
                        f"does not match the log")
    elif log_bytes:
        return "the offset index is empty but the log is not"
    if len(time_entries):
        ts = time_entries["ts"].astype(np.int64)
        rel = time_entries["rel"].astype(np.int64)
        if (len(ts) > 1 and (np.diff(ts) <= 0).any()) or rel.min() < 0 or (len(rel) > 1 and (np.diff(rel) < 0).any()):
            return "time index entries are out of order"
        for i in {0, len(ts) - 1}:
            if not check_time_entry(int(ts[i]), base_offset + int(rel[i])):
                return (f"time index entry {i} (timestamp {int(ts[i])}, offset {base_offset + int(rel[i])}) "
                        f"does not match the log")
    return None
