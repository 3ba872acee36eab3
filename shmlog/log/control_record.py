"""Transaction markers and the aborted-transaction index: Kafka's formats, one home.

A transaction marker is a control batch (attributes CONTROL | TRANSACTIONAL, the producer's
id and epoch, base sequence -1) holding one record:

    key   = version int16 (0), type int16 (0 ABORT, 1 COMMIT)          (Kafka's ControlRecordType)
    value = version int16 (0), coordinator epoch int32                  (Kafka's EndTransactionMarker)

Readers never hand control batches to the application (batch.carries_records is false for
them); a read_committed reader learns from them, and from the index below, which records of a
transaction to drop.

The aborted-transaction index of a partition (`aborted.txnindex` in its directory) lists every
aborted transaction, in entries of Kafka's .txnindex fields plus the producer epoch (36 bytes,
big-endian): version int16 (0), producer id int64, producer epoch int16, first offset int64,
last offset int64, last stable offset int64. The transaction service appends an entry (written
and fsynced) before it writes the ABORT marker, so a reader that finds a transactional batch
below the last stable offset and no entry covering it knows the transaction committed.

The epoch is there because producers append to rings themselves, with no partition leader to
refuse a fenced producer's late batches as Kafka's does: an abort that fenced its producer
(init_transactions of a new instance, a timeout, an operator's abort) has last offset
INT64_MAX, and covers every batch of that producer id *and epoch* from the first offset on,
however late it lands; a plain abort_transaction covers first..last (the producer waited for
its own appends before asking).

Kafka keeps one such file per segment, so retention deletes an entry with the segment that
ends it. Here there is one file per partition, trimmed instead: once retention or
delete_records moved the log start offset past an entry's last offset, trim_aborted drops the
entry (the transaction service calls it: it is the only writer of a leader replica's file).
A follower replica's file is the leader's copied whole when it changes (copy_index); a new
leader takes in the entries of the old leader's file it lacks (merge_index). An entry that a
fencing abort left open-ended stays, since a fenced producer's late batch may land at any
later offset. A trimmed file starts with a header entry of version 1: how many entries trims
removed so far (in the producer id field) and the log start offset it was last trimmed to
(in the first offset field), so that

- aborted_generation() (entries ever appended) only grows: it is what the ring publishes as
  aborted_count, and a reader re-reads the file whenever it moves;
- a reader treats a transactional batch below that offset as aborted: it would never return
  it (it lies below the log start offset), and the entry that decided it may be gone.

Everything that asks which transactions were aborted in a range of offsets (read_committed
readers, the Kafka listener's Fetch, the log cleaner, the mirror) reads the file through
aborted_overlapping (or AbortedIndex, its cached form for a reader that follows the ring).
"""
import os
import struct
from typing import NamedTuple

from shmlog.log.batch import ATTR_CONTROL, ATTR_TRANSACTIONAL, RecordsBuilder, record_size

ABORT = 0
COMMIT = 1
MARKER_ATTRIBUTES = ATTR_CONTROL | ATTR_TRANSACTIONAL

_KEY = struct.Struct(">hh")
_VALUE = struct.Struct(">hi")
ENTRY = struct.Struct(">hqhqqq")
OPEN_ENDED = (1 << 63) - 1
INDEX_NAME = "aborted.txnindex"
_ENTRY_VERSION = 0
_HEADER_VERSION = 1


class AbortedTxn(NamedTuple):
    """One aborted transaction of a partition: its producer's batches from first_offset to
    last_offset (OPEN_ENDED: every later batch of that producer id and epoch) are aborted."""
    producer_id: int
    producer_epoch: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


def marker_key(commit):
    return _KEY.pack(0, COMMIT if commit else ABORT)


def marker_value(coordinator_epoch=0):
    return _VALUE.pack(0, coordinator_epoch)


def decode_marker(key, value):
    """(commit: bool, coordinator epoch) of a marker record; ValueError for anything else."""
    if key is None or len(key) < _KEY.size or value is None or len(value) < _VALUE.size:
        raise ValueError("not a transaction marker record")
    version, kind = _KEY.unpack_from(key)
    if version != 0 or kind not in (ABORT, COMMIT):
        raise ValueError(f"unknown control record (version {version}, type {kind})")
    return kind == COMMIT, _VALUE.unpack_from(value)[1]


def marker_records(commit, timestamp_ms, coordinator_epoch=0):
    """The records section of a marker batch and its min/max timestamps (for Ring.append with
    attributes=MARKER_ATTRIBUTES and the producer's id and epoch)."""
    batch = RecordsBuilder()
    key, value = marker_key(commit), marker_value(coordinator_epoch)
    batch.add(key, value, timestamp_ms, None, record_size(key, value))
    return batch.encode()


def index_path(partition_dir):
    return os.path.join(partition_dir, INDEX_NAME)


def append_aborted(partition_dir, producer_id, producer_epoch, first_offset, last_offset, last_stable_offset):
    """Append one entry, fsynced; returns aborted_generation() after it."""
    os.makedirs(partition_dir, exist_ok=True)
    path = index_path(partition_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size % ENTRY.size:   # a torn entry from a crash mid-write: cut it before appending
            os.ftruncate(fd, size - size % ENTRY.size)
        os.write(fd, ENTRY.pack(_ENTRY_VERSION, producer_id, producer_epoch, first_offset, last_offset,
                                last_stable_offset))
        os.fsync(fd)
    finally:
        os.close(fd)
    return aborted_generation(partition_dir)


def _read_index(partition_dir):
    """(entries as AbortedTxn, entries removed by trims so far, log start offset last trimmed to)."""
    try:
        with open(index_path(partition_dir), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0, 0
    entries, removed, trimmed_to = [], 0, 0
    for pos in range(0, len(data) - len(data) % ENTRY.size, ENTRY.size):
        version, pid, epoch, first, last, lso = ENTRY.unpack_from(data, pos)
        if version == _ENTRY_VERSION:
            entries.append(AbortedTxn(pid, epoch, first, last, lso))
        elif version == _HEADER_VERSION and pos == 0:
            removed, trimmed_to = pid, first
    return entries, removed, trimmed_to


def read_aborted(partition_dir):
    """Every whole entry, as AbortedTxn (producer id, epoch, first offset, last offset, last
    stable offset); [] if none."""
    return _read_index(partition_dir)[0]


def aborted_overlapping(partition_dir, start_offset, end_offset):
    """The aborted transactions of the partition in partition_dir whose offsets overlap
    [start_offset, end_offset), oldest first, as AbortedTxn. Entries wholly below the log start
    offset may have been trimmed (trim_aborted): a range below it may get fewer than it had."""
    return [e for e in _read_index(partition_dir)[0]
            if e.first_offset < end_offset and e.last_offset >= start_offset]


def aborted_generation(partition_dir):
    """How many entries were ever appended to the partition's index (trimmed ones included):
    only grows, so a reader that saw it change knows to read the file again."""
    entries, removed, _ = _read_index(partition_dir)
    return removed + len(entries)


def trim_aborted(partition_dir, log_start_offset):
    """Drop the entries whose last offset is below log_start_offset (open-ended ones stay),
    replacing the file whole; returns how many entries went. Only the file's writer (the
    transaction service) may call it."""
    entries, removed, trimmed_to = _read_index(partition_dir)
    keep = [e for e in entries if e.last_offset >= log_start_offset]
    gone = len(entries) - len(keep)
    if gone:
        _replace_index(partition_dir, _encode(removed + gone, max(trimmed_to, log_start_offset), keep))
    return gone


def copy_index(src_partition_dir, dst_partition_dir):
    """Make the index in dst a copy of src's as it is now (header and whole entries), replaced
    whole; no file in src removes dst's. What a follower replica keeps: the leader's index only
    grows by appends, but trim_aborted rewrites it and a failover swaps it for another
    history's, so a follower's copy is never assumed to be a prefix of it."""
    try:
        with open(index_path(src_partition_dir), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        try:
            os.unlink(index_path(dst_partition_dir))
        except FileNotFoundError:
            pass
        return
    _replace_index(dst_partition_dir, data[:len(data) - len(data) % ENTRY.size])


def merge_index(src_partition_dir, dst_partition_dir):
    """Append to dst's index the entries of src's that dst lacks, and take the larger trim
    header of the two; returns how many entries were added. For a new leader, whose copy of
    the old leader's index may lag behind the batches the ring still hands it."""
    src, src_removed, src_trimmed_to = _read_index(src_partition_dir)
    dst, removed, trimmed_to = _read_index(dst_partition_dir)
    have = set(dst)
    new = [e for e in src if e not in have and e.last_offset >= trimmed_to]
    if new or src_removed > removed:
        _replace_index(dst_partition_dir, _encode(max(removed, src_removed), max(trimmed_to, src_trimmed_to),
                                                  dst + new))
    return len(new)


def _encode(removed, trimmed_to, entries):
    header = [ENTRY.pack(_HEADER_VERSION, removed, 0, trimmed_to, 0, 0)] if removed or trimmed_to else []
    return b"".join(header + [ENTRY.pack(_ENTRY_VERSION, *e) for e in entries])


def _replace_index(partition_dir, data):
    """Write the whole file anew: a temporary file written and fsynced, renamed over the index,
    the directory fsynced; a reader sees the old file or the new one, never a mix."""
    path = index_path(partition_dir)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(partition_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AbortedIndex:
    """A reader's cached copy of a partition's aborted.txnindex, re-read when the count the ring
    publishes (shmlog_ring_txn.aborted_count) moves."""

    __slots__ = ("partition_dir", "count", "by_producer", "trimmed_to")

    def __init__(self, partition_dir):
        self.partition_dir = partition_dir
        self.count = -1
        self.by_producer = {}
        self.trimmed_to = 0

    def refresh(self, count):
        if count != self.count:
            self.by_producer = {}
            entries, _, self.trimmed_to = _read_index(self.partition_dir)
            for pid, epoch, first, last, _ in entries:
                self.by_producer.setdefault(pid, []).append((epoch, first, last))
            self.count = count

    def aborted(self, producer_id, producer_epoch, offset):
        """Whether the transactional batch of this producer at offset belongs to an aborted
        transaction. Below the offset the index was trimmed to, yes: the batch lies below the log
        start offset (never returned), and the entry that would decide may be gone."""
        if offset < self.trimmed_to:
            return True
        for epoch, first, last in self.by_producer.get(producer_id, ()):
            if first <= offset and (producer_epoch == epoch if last == OPEN_ENDED else offset <= last):
                return True
        return False
