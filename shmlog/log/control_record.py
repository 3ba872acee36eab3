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
its own appends before asking). Kafka keeps one such file per segment; one per partition
serves the same lookups here (retention does not trim it: entries of deleted segments match no
batch any more).
"""
import os
import struct

from shmlog.log.batch import ATTR_CONTROL, ATTR_TRANSACTIONAL, RecordsBuilder, record_size

ABORT = 0
COMMIT = 1
MARKER_ATTRIBUTES = ATTR_CONTROL | ATTR_TRANSACTIONAL

_KEY = struct.Struct(">hh")
_VALUE = struct.Struct(">hi")
ENTRY = struct.Struct(">hqhqqq")
OPEN_ENDED = (1 << 63) - 1
INDEX_NAME = "aborted.txnindex"


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
    """Append one entry, fsynced; returns how many entries the index holds now."""
    os.makedirs(partition_dir, exist_ok=True)
    path = index_path(partition_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size % ENTRY.size:   # a torn entry from a crash mid-write: cut it before appending
            os.ftruncate(fd, size - size % ENTRY.size)
        os.write(fd, ENTRY.pack(0, producer_id, producer_epoch, first_offset, last_offset, last_stable_offset))
        os.fsync(fd)
        return os.fstat(fd).st_size // ENTRY.size
    finally:
        os.close(fd)


def read_aborted(partition_dir):
    """Every whole entry as (producer id, epoch, first offset, last offset, last stable offset); [] if none.
    Entries of another version are skipped (none exist yet)."""
    try:
        with open(index_path(partition_dir), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for pos in range(0, len(data) - len(data) % ENTRY.size, ENTRY.size):
        version, pid, epoch, first, last, lso = ENTRY.unpack_from(data, pos)
        if version == 0:
            out.append((pid, epoch, first, last, lso))
    return out


class AbortedIndex:
    """A reader's cached copy of a partition's aborted.txnindex, re-read when the count the ring
    publishes (shmlog_ring_txn.aborted_count) moves."""

    __slots__ = ("partition_dir", "count", "by_producer")

    def __init__(self, partition_dir):
        self.partition_dir = partition_dir
        self.count = -1
        self.by_producer = {}

    def refresh(self, count):
        if count != self.count:
            self.by_producer = {}
            for pid, epoch, first, last, _ in read_aborted(self.partition_dir):
                self.by_producer.setdefault(pid, []).append((epoch, first, last))
            self.count = count

    def aborted(self, producer_id, producer_epoch, offset):
        """Whether the transactional batch of this producer at offset belongs to an aborted transaction."""
        for epoch, first, last in self.by_producer.get(producer_id, ()):
            if first <= offset and (producer_epoch == epoch if last == OPEN_ENDED else offset <= last):
                return True
        return False
