"""The producer state of a partition log (Kafka's ProducerStateManager): for each idempotent
producer id that appended to the partition, its epoch, the sequence of its last record and
that record's offset, as the log's batch headers say (RecordBatch v2 producerId,
producerEpoch, baseSequence).

It is kept beside the segments as Kafka's `<offset, 20 digits>.snapshot` files: a snapshot
named N holds the state of every batch below offset N. The segment writer (the persister)
keeps the state up to date as it appends, writes a snapshot when it rolls a segment and when
the broker stops cleanly, and keeps the newest KEEP_SNAPSHOTS. load() rebuilds the state of a
log from its newest usable snapshot plus the batches after it (all of the log when there is
none): a snapshot above the log end (a host crash cut the log below it) or one that fails its
CRC is passed over, never trusted.

A snapshot file (big-endian, as Kafka's): version int16, CRC32C (uint32) of everything after
it, entry count int32, then per producer: producer id int64, epoch int16, last sequence int32,
last offset int64, offset delta of its last batch int32, last timestamp int64.

Where the sequence check itself runs (the ring's append path) and how this state reaches it
after a broker restart: docs/exactly-once.md.
"""
import os
import struct

from shmlog._native import ffi, lib
from shmlog.log import index
from shmlog.log.batch import ATTR_CONTROL, HEADER
from shmlog.log.segment.format import _batch_matches, _Mapped, _walk, list_segments, segment_path

SUFFIX = ".snapshot"
VERSION = 1
KEEP_SNAPSHOTS = 2
SEQUENCE_MASK = 0x7FFFFFFF
_HEAD = struct.Struct(">hIi")
_ENTRY = struct.Struct(">qhiqiq")


class BadSnapshot(Exception):
    pass


def snapshot_path(partition_dir, offset):
    return os.path.join(partition_dir, f"{offset:020d}{SUFFIX}")


def list_snapshots(partition_dir):
    """Offsets of the snapshot files in partition_dir, ascending."""
    try:
        names = os.listdir(partition_dir)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-len(SUFFIX)]) for n in names
                  if n.endswith(SUFFIX) and len(n) == 20 + len(SUFFIX) and n[:20].isdigit())


class ProducerEntry:
    __slots__ = ("producer_id", "producer_epoch", "last_sequence", "last_offset", "offset_delta", "last_timestamp")

    def __init__(self, producer_id, producer_epoch, last_sequence, last_offset, offset_delta, last_timestamp):
        self.producer_id, self.producer_epoch = producer_id, producer_epoch
        self.last_sequence, self.last_offset = last_sequence, last_offset
        self.offset_delta, self.last_timestamp = offset_delta, last_timestamp

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other):
        return isinstance(other, ProducerEntry) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return f"ProducerEntry({self.as_dict()})"


class ProducerState:
    """The state of the batches below end_offset: {producer id: ProducerEntry}."""

    def __init__(self, end_offset=0, producers=None):
        self.end_offset = end_offset
        self.producers = dict(producers or {})

    def update(self, base_offset, last_offset, attributes, max_timestamp, producer_id, producer_epoch,
               base_sequence):
        """Take in one batch (in offset order)."""
        self.end_offset = max(self.end_offset, last_offset + 1)
        if producer_id < 0 or base_sequence < 0 or attributes & ATTR_CONTROL:
            return
        entry = self.producers.get(producer_id)
        if entry is not None and producer_epoch < entry.producer_epoch:
            return   # a fenced producer's batch cannot follow its successor's; the newer epoch stands
        delta = last_offset - base_offset
        last_sequence = (base_sequence + delta) & SEQUENCE_MASK
        self.producers[producer_id] = ProducerEntry(producer_id, producer_epoch, last_sequence, last_offset, delta,
                                                    max_timestamp)

    def update_from_header(self, header_fields):
        """update() from HEADER.unpack_from() of a batch."""
        (base, _, _, _, _, attributes, last_delta, _, max_ts, producer_id, producer_epoch, base_sequence,
         _) = header_fields
        self.update(base, base + last_delta, attributes, max_ts, producer_id, producer_epoch, base_sequence)

    def encode(self):
        body = struct.pack(">i", len(self.producers)) + b"".join(
            _ENTRY.pack(e.producer_id, e.producer_epoch, e.last_sequence, e.last_offset, e.offset_delta,
                        e.last_timestamp) for e in sorted(self.producers.values(), key=lambda e: e.producer_id))
        crc = lib.shmlog_crc32c(0, ffi.from_buffer(body), len(body))
        return struct.pack(">hI", VERSION, crc) + body

    @classmethod
    def decode(cls, data, end_offset):
        if len(data) < _HEAD.size:
            raise BadSnapshot(f"{len(data)} bytes, shorter than its header")
        version, crc, count = _HEAD.unpack_from(data)
        if version != VERSION:
            raise BadSnapshot(f"version {version}, not {VERSION}")
        body = data[6:]
        if lib.shmlog_crc32c(0, ffi.from_buffer(body), len(body)) != crc:
            raise BadSnapshot("CRC32C mismatch")
        if count < 0 or len(data) != _HEAD.size + count * _ENTRY.size:
            raise BadSnapshot(f"{len(data)} bytes for {count} entries")
        entries = {}
        for i in range(count):
            e = ProducerEntry(*_ENTRY.unpack_from(data, _HEAD.size + i * _ENTRY.size))
            if e.producer_id < 0 or e.last_offset >= end_offset:
                raise BadSnapshot(f"entry {i} (producer {e.producer_id}, offset {e.last_offset}) is not below "
                                  f"the snapshot's offset {end_offset}")
            entries[e.producer_id] = e
        return cls(end_offset, entries)


def read_snapshot(partition_dir, offset):
    try:
        with open(snapshot_path(partition_dir, offset), "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BadSnapshot(str(exc)) from None
    return ProducerState.decode(data, offset)


def write_snapshot(partition_dir, state):
    """Write state as <end_offset>.snapshot (written, fsynced, renamed, directory fsynced) and
    remove all but the newest KEEP_SNAPSHOTS snapshots."""
    path = snapshot_path(partition_dir, state.end_offset)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(state.encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for offset in list_snapshots(partition_dir)[:-KEEP_SNAPSHOTS]:
        _unlink(snapshot_path(partition_dir, offset))
    dir_fd = os.open(partition_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def delete_snapshots_from(partition_dir, offset):
    """Remove snapshots above `offset` (the log was cut there: they describe batches it lost)."""
    for found in list_snapshots(partition_dir):
        if found > offset:
            _unlink(snapshot_path(partition_dir, found))


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def scan(partition_dir, state, end_offset=None):
    """Take the log's batches from state.end_offset up to end_offset (None: the log end) into state."""
    start = state.end_offset
    bases = list_segments(partition_dir)
    first = max([b for b in bases if b <= start] or bases[:1] or [0])
    for base in bases:
        if base < first or (end_offset is not None and base >= end_offset):
            continue
        try:
            mapped = _Mapped.of_path(segment_path(partition_dir, base))
        except FileNotFoundError:
            continue   # retention removed it meanwhile

        def take(position, _nbytes, last_offset, _max_ts, mapped=mapped):
            if last_offset >= start and (end_offset is None or last_offset < end_offset):
                state.update_from_header(HEADER.unpack_from(mapped.mm, position))

        try:
            position = _index_position(partition_dir, base, mapped, start) if base == first else 0
            _walk(mapped, None if position else base, False, take, start=position)
        finally:
            mapped.close()
    if end_offset is not None:
        state.end_offset = max(state.end_offset, end_offset)
    return state


def _index_position(partition_dir, base, mapped, offset):
    """Where in segment `base` a walk for the batches from `offset` on may start: the offset
    index's entry at or below it when it matches the log (a snapshot at the log end then costs
    no walk of the segment), else 0."""
    try:
        hit = index.lookup_offset(index.read_entries(index.offset_index_path(partition_dir, base), index.OFFSET_DTYPE),
                                  base, offset)
    except OSError:
        return 0
    return hit[1] if hit is not None and _batch_matches(mapped, hit[1], hit[0]) else 0


def load(partition_dir, end_offset=None):
    """The producer state of the log below end_offset (None: all of it): the newest good
    snapshot at or below it, then the batches after."""
    state = ProducerState()
    for offset in reversed(list_snapshots(partition_dir)):
        if end_offset is not None and offset > end_offset:
            continue
        try:
            state = read_snapshot(partition_dir, offset)
            break
        except BadSnapshot:
            continue
    return scan(partition_dir, state, end_offset)
