"""Consumer: confluent-kafka's API over partition rings, with read-through to segments.

Each assigned partition has a reader holding a cursor (ring position, next offset). A
reader that falls behind the ring reads the persister's segment files in the same order
with the same offsets, and moves back onto the ring as soon as its offset is there.
"""
from __future__ import annotations

import os
import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from shmlog._native import _fast, address, ffi, layout, lib
from shmlog._native.wait import SPIN_MIN_NS, BlockingWait, BusySpinWait
from shmlog.client.cluster import connect
from shmlog.client.group_member import GroupClient
from shmlog.client.statistics import Statistics
from shmlog.config import parse_consumer_config
from shmlog.errors import KafkaError, KafkaException, error
from shmlog.log import codec
from shmlog.log.batch import (
    ATTR_CONTROL,
    ATTR_LOG_APPEND_TIME,
    ATTR_TRANSACTIONAL,
    COMPRESSED,
    CORRUPT,
    HEADER,
    RECORDS,
    SKIP,
    BatchWalker,
    decode_headers,
)
from shmlog.log.cleaner import read_checkpoint as cleaner_checkpoint
from shmlog.log.control_record import AbortedIndex
from shmlog.log.segment import SegmentReader, partition_dir
from shmlog.message import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    OFFSET_STORED,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Message,
    TopicPartition,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from typing_extensions import Self

    from shmlog._types import Config, RebalanceCallback
    from shmlog.client.admin import ClusterMetadata
    from shmlog.message import Message

MAX_FRAMES_PER_FETCH = 256
MEMORY_ONLY_RESET_ATTEMPTS = 100
RECONNECT_INTERVAL_S = 0.1   # how often a consumer whose broker stopped looks for it again
_UINT64_MAX = (1 << 64) - 1


class _Reader:
    """One assigned partition: where we are and what we decoded but not yet returned."""

    __slots__ = ("topic", "partition", "ring", "cursor", "next_offset", "paused", "pending", "segments",
                 "on_ring", "log_dir", "ring_address", "cursor_address", "eof_reported", "cleaned_below", "aborted",
                 "leader_epoch")

    def __init__(self, topic, partition, ring, log_dir):
        self.topic, self.partition, self.ring, self.log_dir = topic, partition, ring, log_dir
        self.cursor = ffi.new("shmlog_cursor *")
        self.ring_address, self.cursor_address = address(ring.map), address(self.cursor)
        self.next_offset = 0
        self.paused = False
        self.pending = _fast.RecordQueue()
        self.segments = None
        self.on_ring = False
        self.eof_reported = False  # enable.partition.eof: reported since the last record returned
        self.cleaned_below = 0     # the log cleaner's checkpoint as of the last seek: read segments below it
        self.aborted = None        # read_committed: the partition's AbortedIndex, once a transaction is seen
        self.leader_epoch = ring.header.replication.leader_epoch   # whose log dir log_dir is

    def at_end(self):
        return self.on_ring and not self.pending and self.next_offset >= self.ring.high_watermark

    def ready(self):
        return bool(self.pending) or not self.on_ring or self.ring.readable(self.cursor)


# A view in the ring pins its bytes until the next call, so producers cannot reuse them: it
# covers at most 1/VIEW_RING_SHARE of the ring (and at least one batch). A view of half a
# 16 MiB ring, held while the application works on it, left producers waiting for that space:
# sustained batch 100 B ran at half the rate with views of up to 65,536 records (7 MiB).
VIEW_RING_SHARE = 16


def _columns_for(frames, max_records):
    """Columns for a view of these frames ((map position, base offset, record count, bytes) each):
    it stops once max_records are in, so inside a batch at most the largest one's count past it."""
    counts = [f[2] for f in frames]
    return _new_columns(min(sum(counts), max_records + max(counts)))


def _new_columns(rows):
    """offsets, timestamps, key positions, key lengths, value positions, value lengths."""
    return (np.empty(rows, np.int64), np.empty(rows, np.int64), np.empty(rows, np.int64), np.empty(rows, np.int32),
            np.empty(rows, np.int64), np.empty(rows, np.int32))


def _view_end(columns, total, max_records, wanted):
    """(records in the view, the offset the next read starts at): a view that passed max_records
    inside a batch ends there, and the rest of that batch comes next."""
    if total > max_records:
        return max_records, int(columns[0][max_records - 1]) + 1
    return total, wanted


def _give_back_pins(pins, pid):
    if os.getpid() == pid:   # a forked child's copy of the consumer holds no pins of its own
        for ring, pin in pins.items():
            ring.release_pin(pin)
    pins.clear()


class RecordBatchView:
    """Records of one partition as arrays, values left in shared memory (zero-copy).

    Valid until the next poll/consume/consume_batch/close on the consumer that returned
    it (or until that consumer is collected): until then the consumer pins the ring so
    producers cannot reuse those bytes.
    After that the memory may hold newer records (reads then see other bytes, never fault).
    """

    def __init__(self, topic: str, partition: int, buffer: Any, columns: Sequence[Any], zero_copy: bool) -> None:
        self.topic = topic
        self.partition = partition
        self.buffer = buffer
        (self.offsets, self.timestamps, self.key_positions, self.key_lengths, self.value_positions,
         self.value_lengths) = columns
        self.zero_copy = zero_copy

    @classmethod
    def from_refs(cls, topic: str, partition: int, buffer: Any, refs: Any, zero_copy: bool, bias: int = 0,
                  first_offset: int = -1) -> RecordBatchView:
        columns = _new_columns(len(refs))
        n = _fast.index_columns(refs, len(refs), bias, first_offset, 0, *columns)
        return cls(topic, partition, buffer, [c[:n] for c in columns], zero_copy)

    def __len__(self) -> int:
        return len(self.offsets)

    def values(self) -> list[Any]:
        buf = self.buffer
        return [None if n < 0 else buf[p:p + n] for p, n in zip(self.value_positions.tolist(),
                                                                 self.value_lengths.tolist())]

    def keys(self) -> list[Any]:
        buf = self.buffer
        return [None if n < 0 else buf[p:p + n] for p, n in zip(self.key_positions.tolist(),
                                                                 self.key_lengths.tolist())]

    def value_arrays(self, dtype: Any) -> list[np.ndarray]:
        """Values as NumPy arrays of `dtype`, one strided view into shared memory per run of
        records at a constant stride (produce_values writes one run per batch): zero-copy."""
        dtype = np.dtype(dtype)
        n = len(self)
        if n == 0:
            return []
        if not (self.value_lengths == dtype.itemsize).all():
            raise ValueError(f"values are not all {dtype.itemsize} bytes long")
        pos = self.value_positions
        if n == 1:
            return [np.ndarray((1,), dtype, buffer=self.buffer, offset=int(pos[0]))]
        steps = np.diff(pos)
        breaks = np.flatnonzero(steps[1:] != steps[:-1]) + 1
        starts = [0] + [int(b) + 1 for b in breaks if steps[b] != steps[b - 1]]
        runs = []
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else n
            stride = int(steps[start]) if end - start > 1 else dtype.itemsize
            runs.append(np.ndarray((end - start,), dtype, buffer=self.buffer, offset=int(pos[start]),
                                   strides=(stride,)))
        return runs

    def values_as(self, dtype: Any) -> np.ndarray:
        """Values as one NumPy array of `dtype`: a strided view into shared memory when the
        records sit at a constant stride (one produce_values batch), else one copy of the runs
        joined (value_arrays() gives the runs without copying)."""
        runs = self.value_arrays(dtype)
        if not runs:
            return np.empty(0, np.dtype(dtype))
        return runs[0] if len(runs) == 1 else np.concatenate(runs)

def view_of_messages(msgs: list[Message]) -> RecordBatchView | None:
    """A RecordBatchView over copies of the keys and values of messages of one partition (the
    fallback when records cannot be viewed in place: read through segments, or over a Kafka cluster)."""
    if not msgs:
        return None
    # Column by column (a reader behind the ring gets its views here: per-element NumPy
    # stores cost microseconds a record). The blob holds each record's key, then its value.
    n = len(msgs)
    keys = [m.key() for m in msgs]
    values = [m.value() for m in msgs]
    refs = np.zeros(n, layout.RECORD_REF_DTYPE)
    refs["offset"] = [m.offset() for m in msgs]
    refs["timestamp"] = [m.timestamp()[1] for m in msgs]
    key_len = np.fromiter((-1 if k is None else len(k) for k in keys), np.int64, n)
    value_len = np.fromiter((-1 if v is None else len(v) for v in values), np.int64, n)
    key_bytes, value_bytes = np.maximum(key_len, 0), np.maximum(value_len, 0)
    ends = np.cumsum(key_bytes + value_bytes)
    refs["key_pos"] = ends - key_bytes - value_bytes
    refs["value_pos"] = ends - value_bytes
    refs["key_len"], refs["value_len"] = key_len, value_len
    blob = b"".join([part for k, v in zip(keys, values) for part in (k or b"", v or b"")])
    return RecordBatchView.from_refs(msgs[0].topic(), msgs[0].partition(), memoryview(blob), refs, False)


class ConsumerGroupMetadata:
    """A consumer's group identity at one moment (confluent-kafka's opaque group metadata)."""

    __slots__ = ("group_id", "generation_id", "member_id", "group_instance_id")

    def __init__(self, group_id: str, generation_id: int = -1, member_id: str = "",
                 group_instance_id: str | None = None) -> None:
        self.group_id, self.generation_id = group_id, generation_id
        self.member_id, self.group_instance_id = member_id, group_instance_id

    def __repr__(self):
        return (f"ConsumerGroupMetadata(group_id={self.group_id!r}, generation_id={self.generation_id}, "
                f"member_id={self.member_id!r}, group_instance_id={self.group_instance_id!r})")


class Consumer(_fast.ConsumerCore):
    """confluent_kafka.Consumer over a shmlog broker: assign() or subscribe() (consumer groups).

    poll() is ConsumerCore.poll (csrc/fast/consumer_core.c): it returns the next decoded record of the
    partition being served without leaving C, and calls _poll_slow for everything else.
    """

    def __init__(self, conf: Config | None = None, **kwargs: Any) -> None:
        conf = dict(conf or {})
        conf.update(kwargs)
        self._cfg = cfg = parse_consumer_config(conf)
        self._check_crcs = 1 if cfg.check_crcs else 0
        self._reset = cfg.auto_offset_reset
        self._partition_fetch_bytes = cfg.max_partition_fetch_bytes
        self._eof = cfg.enable_partition_eof
        self._read_committed = cfg.isolation_level == "read_committed"
        self._cluster = connect(cfg, "consumer")
        self._cluster.populate_rings = not cfg.group_id
        self._wait = self._make_wait()
        self._broker_down = False      # error_cb has heard that the broker went away
        self._next_reconnect = 0.0
        self._readers = {}
        self._order = []
        self._next = 0
        self._buffer = bytearray(self._partition_fetch_bytes)
        self._frames = ffi.new("shmlog_frame_ref[]", MAX_FRAMES_PER_FETCH)
        self._frames_address = address(self._frames)
        self._walker = BatchWalker(self._check_crcs)   # the slow path's batch decode loop
        self._pins = {}
        # A consumer dropped without close() lets go of its reader pins when it is collected: a
        # pin left set holds the ring's release back, and with it every producer to the partition.
        self._let_go_of_pins = weakref.finalize(self, _give_back_pins, self._pins, os.getpid())
        self._closed = False
        self._stored = {}              # (topic, partition) -> offset the next commit() commits
        self._rebalance_calls = 0      # so a rebalance callback's own assign()/unassign() is noticed
        self._group = GroupClient(self) if cfg.group_id else None
        self._auto_store = self._group is not None and cfg.enable_auto_offset_store
        self._fast_stored = self._stored if self._auto_store else None
        self._current = None           # the reader queue ConsumerCore.poll serves from
        self._stats = Statistics.of(self, "consumer", cfg)
        self._debug_fetch = self._cluster.log.enabled("fetch")

    def _make_wait(self):
        cfg = self._cfg
        if cfg.shmlog_busy_poll:
            return BusySpinWait(self._cluster.doorbell)
        spin_max_ns = cfg.shmlog_wait_spin_max_us * 1000
        return BlockingWait(self._cluster.doorbell, spin_min_ns=min(SPIN_MIN_NS, spin_max_ns), spin_max_ns=spin_max_ns,
                            spin_share=cfg.shmlog_wait_spin_share)

    def _stop_serving(self):
        self._current = None
        self._current_tp = None

    def _update_solo(self):
        """With exactly one active reader, poll() fetches and decodes its ring in C (csrc/fast/)."""
        active = [r for r in self._readers.values() if not r.paused]
        # the C path knows no EOF events and writes no fetch lines
        if len(active) == 1 and not self._closed and not self._eof and not self._debug_fetch:
            self._set_solo(active[0], self._frames_address, MAX_FRAMES_PER_FETCH, self._check_crcs, decode_headers,
                           self._read_committed)
        else:
            self._set_solo(None)

    # ------------------------------------------------------------------ assignment

    def _check(self):
        if self._closed:
            raise RuntimeError("Consumer closed")
        self._cluster.check_fork("Consumer")

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._check()
        if self._group is not None:
            partitions = self._group.start_offsets(partitions)   # committed offsets for OFFSET_INVALID/STORED
        self._rebalance_calls += 1
        self._release_pins()
        self._stop_serving()
        self._readers.clear()
        for tp in partitions:
            self._add(tp)
        self._order = list(self._readers)
        self._update_solo()

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self._check()
        self._incremental_only("incremental_assign")
        if self._group is not None:
            partitions = self._group.start_offsets(partitions)
        self._rebalance_calls += 1
        for tp in partitions:
            self._add(tp)
        self._order = list(self._readers)
        self._update_solo()

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        self._check()
        self._incremental_only("incremental_unassign")
        self._unassign_some(partitions)

    def _unassign_some(self, partitions):
        self._rebalance_calls += 1
        self._stop_serving()
        for tp in partitions:
            self._readers.pop((tp.topic, tp.partition), None)
            self._stored.pop((tp.topic, tp.partition), None)
        self._order = list(self._readers)
        self._update_solo()

    def unassign(self) -> None:
        self._check()
        self._rebalance_calls += 1
        self._release_pins()
        self._stop_serving()
        self._readers.clear()
        self._stored.clear()
        self._order = []
        self._update_solo()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._order]

    def _add(self, tp):
        info = self._cluster.topic(tp.topic)
        if not 0 <= tp.partition < info["partitions"]:
            raise error(KafkaError._UNKNOWN_PARTITION, f"{tp.topic}-{tp.partition}: topic has "
                        f"{info['partitions']} partitions")
        reader = _Reader(tp.topic, tp.partition, self._cluster.ring(tp.topic, tp.partition),
                         info["log_dirs"][tp.partition])
        self._readers[(tp.topic, tp.partition)] = reader
        self._seek(reader, tp.offset)

    def subscribe(self, topics: list[str], on_assign: RebalanceCallback | None = None,
                  on_revoke: RebalanceCallback | None = None, on_lost: RebalanceCallback | None = None) -> None:
        """Join the consumer group of `group.id` for these topics (names, or patterns starting
        with ^). Callbacks run inside poll(), as `callback(consumer, [TopicPartition])`."""
        self._check()
        self._group_only("subscribe").subscribe(topics, on_assign, on_revoke, on_lost)

    def unsubscribe(self) -> None:
        self._check()
        if self._group is not None and self._group.member is not None:
            self._group.unsubscribe()
        self.unassign()

    def _incremental_only(self, what):
        """As librdkafka: a member of an eager group changes its assignment only with assign()."""
        if self.rebalance_protocol() == "EAGER":
            raise error(KafkaError._STATE, f"{what}(): changes to the current assignment must be made using "
                        f"assign() when rebalance protocol type is EAGER")

    def rebalance_protocol(self) -> str:
        """"EAGER" or "COOPERATIVE" once subscribed to a group, else "NONE" (as librdkafka)."""
        member = self._group.member if self._group is not None else None
        if member is None:
            return "NONE"
        return "COOPERATIVE" if member.cooperative else "EAGER"

    def consumer_group_metadata(self) -> ConsumerGroupMetadata:
        """The group identity a transactional producer's send_offsets_to_transaction() takes."""
        self._check()
        member = self._group_only("consumer_group_metadata").member
        identity = member.identity() if member is not None else {"member_id": "", "generation": -1,
                                                                 "instance_id": self._cfg.group_instance_id}
        return ConsumerGroupMetadata(self._cfg.group_id, identity["generation"], identity["member_id"],
                                     identity["instance_id"])

    def memberid(self) -> str | None:
        member = self._group.member if self._group is not None else None
        return (member.member_id or None) if member is not None else None

    def _group_only(self, what):
        if self._group is None:
            raise error(KafkaError._UNKNOWN_GROUP, f'{what}() needs "group.id" in the consumer config')
        return self._group

    # ------------------------------------------------------------------ positions

    def _bounds(self, reader):
        ring = reader.ring
        if ring.memory_only:   # its log starts at the oldest offset the ring still holds
            return max(ring.log_start_offset, ring.start()[1]), self._high(ring)
        return ring.log_start_offset, self._high(ring)

    def _high(self, ring):
        """Where reading stops: the log end, or for read_committed the last stable offset (Kafka's
        LSO: below the first record of any open transaction)."""
        end = ring.high_watermark
        if not self._read_committed:
            return end
        first_unstable = ring.txn_state()[0]    # read after the end (shmlog_ring_txn says why)
        return end if first_unstable is None else min(end, first_unstable)

    def _seek(self, reader, offset):
        low, high = self._bounds(reader)
        if offset in (OFFSET_STORED, OFFSET_INVALID):
            offset = {"earliest": OFFSET_BEGINNING, "latest": OFFSET_END}.get(self._reset, "error")
        if offset == OFFSET_BEGINNING:
            offset = low
        elif offset == OFFSET_END:
            offset = high
        if offset == "error" or not isinstance(offset, int) or offset < low or offset > high:
            if self._reset == "error" or offset == "error":
                why = (" (below the log start offset: retention or delete_records removed it)"
                       if isinstance(offset, int) and 0 <= offset < low else "")
                raise error(KafkaError.OFFSET_OUT_OF_RANGE, f"{reader.topic}-{reader.partition}: offset {offset} "
                            f"is outside [{low}, {high}]{why} and auto.offset.reset=error; seek to a valid offset")
            offset = low if self._reset == "earliest" else high
        reader.next_offset = offset
        reader.pending.clear()
        # Below the cleaner's checkpoint the ring may still hold records compaction removed from the
        # segments: read those from the segments, so a compacted topic reads compacted from there.
        reader.cleaned_below = cleaner_checkpoint(partition_dir(reader.log_dir, reader.topic, reader.partition))
        self._to_ring_or_segments(reader)

    def _to_ring_or_segments(self, reader, ring_ok=False):
        below = reader.next_offset < reader.cleaned_below and not ring_ok
        cursor = None if below else reader.ring.locate(reader.next_offset)
        if cursor is None and reader.ring.memory_only:
            cursor = self._reset_behind_memory_only(reader)
        elif cursor is None and not below:
            cursor = reader.ring.cursor_at_persister(reader.next_offset)
        if cursor is not None:
            reader.cursor.position, reader.cursor.next_offset = cursor.position, cursor.next_offset
            reader.on_ring = True
        else:
            reader.on_ring = False
            if reader.segments is None:
                reader.segments = SegmentReader(partition_dir(reader.log_dir, reader.topic,
                                                                       reader.partition))

    def _reset_behind_memory_only(self, reader):
        """A memory-only topic (shmlog.persist=false) has no segment files: a reader the ring
        left behind is out of range, and auto.offset.reset decides where it goes, as Kafka does
        for an offset retention removed. The ring's cursor there."""
        for _ in range(MEMORY_ONLY_RESET_ATTEMPTS):   # producers may overwrite the new start meanwhile
            low, high = self._bounds(reader)
            offset = reader.next_offset
            if not low <= offset <= high:
                if self._reset not in ("earliest", "latest"):
                    raise error(KafkaError.OFFSET_OUT_OF_RANGE, (
                        f"{reader.topic}-{reader.partition}: offset {offset} is no longer in the ring, which holds "
                        f"[{low}, {high}]; the topic is memory-only (shmlog.persist=false), so nothing older is on "
                        f"disk, and auto.offset.reset={self._reset}; seek to a valid offset"))
                offset = low if self._reset == "earliest" else high
                reader.next_offset = offset
                reader.pending.clear()
            cursor = reader.ring.locate(offset)
            if cursor is not None:
                return cursor
        raise error(KafkaError.OFFSET_OUT_OF_RANGE, f"{reader.topic}-{reader.partition}: the memory-only ring "
                    f"is overwritten faster than this reader can find its start; seek again")

    def seek(self, partition: TopicPartition) -> None:
        self._check()
        reader = self._readers.get((partition.topic, partition.partition))
        if reader is None:
            raise error(KafkaError._STATE, f"{partition.topic}-{partition.partition} is not assigned")
        self._seek(reader, partition.offset)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        out = []
        for tp in partitions:
            reader = self._readers.get((tp.topic, tp.partition))
            if reader is None:
                offset = OFFSET_INVALID
            else:
                offset = reader.pending[0].offset() if reader.pending else reader.next_offset
            out.append(TopicPartition(tp.topic, tp.partition, offset))
        return out

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        self._check()
        ring = self._cluster.ring(partition.topic, partition.partition)
        low = max(ring.log_start_offset, ring.start()[1]) if ring.memory_only else ring.log_start_offset
        return low, self._high(ring)

    def pause(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            reader = self._readers.get((tp.topic, tp.partition))
            if reader:
                reader.paused = True
                if self._current is reader.pending:
                    self._stop_serving()
        self._update_solo()

    def resume(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            reader = self._readers.get((tp.topic, tp.partition))
            if reader:
                reader.paused = False
        self._update_solo()

    # ------------------------------------------------------------------ fetching

    def _fetch(self, reader):
        """Decode the next run of batches for reader into reader.pending."""
        if self._debug_fetch:
            before = reader.next_offset
            added = self._fetch_run(reader)
            if added:
                self._cluster.log.debug("fetch", "FETCH", f"{reader.topic} [{reader.partition}]: {added} records "
                                        f"at offsets {before}..{reader.next_offset - 1} from the "
                                        f"{'ring' if reader.on_ring else 'segment files'}")
            return added
        return self._fetch_run(reader)

    def _fetch_run(self, reader):
        if reader.next_offset < reader.ring.log_start_offset:
            # Retention or delete_records moved the log start past us: auto.offset.reset decides
            # (earliest/latest), or every fetch raises OFFSET_OUT_OF_RANGE until the app seeks.
            self._seek(reader, reader.next_offset)
        if reader.on_ring:
            max_frames = MAX_FRAMES_PER_FETCH
            if self._read_committed:
                max_frames = self._committed_frames(reader)
                if max_frames <= 0:
                    return 0
            # Fetch and decode plain batches in one C call; compressed or invalid ones from `stop` on
            # are decoded (or reported) here.
            n, added, wanted, stop = _fast.fetch_ring(
                reader.pending, reader.ring_address, reader.cursor_address, self._buffer, self._frames_address,
                max_frames, self._check_crcs, reader.topic, reader.partition, reader.next_offset,
                decode_headers)
            if n < 0 and n not in (lib.SHMLOG_ESMALL, lib.SHMLOG_EOVERWRITTEN):
                reader.ring.fetch_failed(n, reader.cursor)
            if n == lib.SHMLOG_ESMALL:
                self._buffer = bytearray(max(self._frames[0].batch_bytes, len(self._buffer) * 2))
                return self._fetch_run(reader)
            if n == lib.SHMLOG_EOVERWRITTEN:
                self._to_ring_or_segments(reader)
                return self._fetch_run(reader) if not reader.on_ring else 0
            if n == 0:
                if reader.ring.end()[0] > reader.cursor.position:
                    reader.ring.repair_if_stuck(reader.cursor.position, self._cluster.doorbell.ptr,
                                                self._cfg.shmlog_claim_timeout_ms)
                return 0
            reader.next_offset = wanted
            if stop < n:
                added += self._decode_rest(reader, stop, n, added)
            return added
        got = self._read_segments(reader)
        if got is None:
            return 0
        count = self._decode(reader, *got)
        self._to_ring_or_segments(reader)
        return count

    def _read_segments(self, reader):
        """(buffer, frames) of the next batches of a reader behind its ring, from the segment
        files: below the high watermark of a replicated partition, without aborted transactions'
        batches for read_committed. None when there is nothing there to read now (the reader was
        moved past what retention deleted, or back to the ring)."""
        if reader.ring.header.replication.leader_epoch != reader.leader_epoch:
            self._follow_leader(reader)
        try:
            buf, frames = reader.segments.read(reader.next_offset, self._partition_fetch_bytes)
            if reader.ring.header.replication.replica_count > 1:   # only below the high watermark
                hw = reader.ring.high_watermark
                frames = [f for f in frames if f[1] + f[2] <= hw]
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.OFFSET_OUT_OF_RANGE:
                raise
            # Retention deleted the segment under us; it publishes the new log start offset first.
            low = reader.ring.log_start_offset
            self._seek(reader, reader.next_offset if reader.next_offset < low else
                       max(low, reader.segments.log_start_offset))
            return None
        if not frames:
            self._to_ring_or_segments(reader, ring_ok=True)
            return None
        if self._read_committed:
            frames = self._committed_segment_frames(reader, buf, frames)
            if not frames:
                return None
        return buf, frames

    def _follow_leader(self, reader):
        """The partition's leader moved to another log dir (a failover, docs/replication.md): read
        the new leader's segments from now on, without a re-assign (the old dir may be gone)."""
        reader.leader_epoch = reader.ring.header.replication.leader_epoch
        log_dir = self._cluster.topic(reader.topic)["log_dirs"][reader.partition]
        if log_dir != reader.log_dir:
            reader.log_dir, reader.aborted = log_dir, None
            reader.segments = SegmentReader(partition_dir(log_dir, reader.topic, reader.partition))

    # ------------------------------------------------------------------ read_committed

    def _aborted_index(self, reader, count):
        if reader.aborted is None:
            reader.aborted = AbortedIndex(partition_dir(reader.log_dir, reader.topic, reader.partition))
        reader.aborted.refresh(count)
        return reader.aborted

    @staticmethod
    def _is_aborted(index, header, offset):
        attributes, producer_id, producer_epoch = header[5], header[9], header[10]
        return (attributes & ATTR_TRANSACTIONAL and not attributes & ATTR_CONTROL
                and index.aborted(producer_id, producer_epoch, offset))

    def _committed_frames(self, reader):
        """How many batches from the reader's ring cursor a read_committed reader may decode: those
        below the last stable offset, up to the first batch of an aborted transaction (batches of
        aborted transactions at the cursor are stepped over here). A ring no transaction ever
        touched is read as is."""
        ring = reader.ring
        k = lib.shmlog_ring_committed_frames(ring.map, reader.cursor, self._frames, MAX_FRAMES_PER_FETCH)
        if k >= 0:
            return k        # no transaction aborted on the partition: the C core's rule, as its fast path
        end = ring.end()[1]
        first_unstable, count, _ = ring.txn_state()
        lso = end if first_unstable is None else min(end, first_unstable)
        index = self._aborted_index(reader, count)
        base_ptr = ffi.cast("uint8_t *", ring.mapping.ptr)
        probe = ffi.new("shmlog_cursor *")
        while reader.next_offset < lso:
            probe.position, probe.next_offset = reader.cursor.position, reader.cursor.next_offset
            n = ring.fetch(probe, ffi.NULL, 0, self._frames, MAX_FRAMES_PER_FETCH, 0)
            if n <= 0:
                return MAX_FRAMES_PER_FETCH if n < 0 else 0   # a status the plain fetch reports
            k = 0
            for i in range(n):
                f = self._frames[i]
                if f.base_offset >= lso:
                    break
                header = HEADER.unpack(ffi.buffer(base_ptr + f.map_pos, HEADER.size))
                if self._is_aborted(index, header, f.base_offset):
                    break
                k += 1
            if k or self._frames[0].base_offset >= lso:
                return k
            # The batch at the cursor belongs to an aborted transaction: step over it. (The cursor
            # may start below next_offset: locate() finds the batch holding it or an earlier one.)
            if ring.fetch(reader.cursor, ffi.NULL, 0, self._frames, 1, 0) != 1:
                return 0
            reader.next_offset = max(reader.next_offset, reader.cursor.next_offset)
        return 0

    def _committed_segment_frames(self, reader, buf, frames):
        """The frames of a segment read a read_committed reader decodes: below the last stable
        offset, without aborted transactions' batches. The reader's offset moves past the batches
        dropped at the end."""
        ring = reader.ring
        end = ring.end()[1]
        first_unstable, count, seen = ring.txn_state()
        if not seen and not count:
            return frames   # no transaction open, none ever aborted: every batch is committed
        lso = end if first_unstable is None else min(end, first_unstable)
        index = self._aborted_index(reader, count)
        kept = []
        for frame in frames:
            pos, base, records, _ = frame
            if base >= lso:
                break
            if self._is_aborted(index, HEADER.unpack_from(buf, pos), base):
                if not kept:
                    reader.next_offset = max(reader.next_offset, base + records)
                continue
            kept.append(frame)
        if not kept:
            self._to_ring_or_segments(reader)
        return kept

    def _drop_deleted(self):
        """Readers whose topic was deleted (the refresh unmapped their ring) leave the assignment;
        returns an error Message naming them (as librdkafka reports a vanished partition), or None."""
        gone = [key for key, r in self._readers.items() if r.ring.closed]
        if not gone:
            return None
        self._unassign_some([TopicPartition(t, p) for t, p in gone])
        names = ", ".join(f"{t}-{p}" for t, p in gone)
        return Message(gone[0][0], gone[0][1], error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                                f"{names}: topic deleted; unassigned"))

    # ------------------------------------------------------------------ a broker that stopped

    def _broker_gone(self):
        """Checked when a poll finds nothing to read: True while our broker is stopped (its
        doorbell says so). error_cb hears it once; every RECONNECT_INTERVAL_S we look for a
        running broker of the same data dir and, found, map its rings and go on from our
        positions. What we read meanwhile is safe: a stopping broker closes its rings (nothing
        more is published) and drains everything they hold before it unlinks them."""
        if self._cluster.doorbell.running:
            return False
        if not self._broker_down:
            self._broker_down = True
            if self._cfg.error_cb is not None:
                self._cfg.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, f"the shmlog broker for "
                                              f"{self._cluster.data_dir} stopped; waiting for it to come back"))
        now = time.monotonic()
        if now >= self._next_reconnect:
            self._next_reconnect = now + RECONNECT_INTERVAL_S
            if self._reconnect():
                self._broker_down = False
                return False
        return True

    def _reconnect(self):
        try:
            cluster = connect(self._cfg, "consumer")
        except KafkaException:
            return False
        if not cluster.doorbell.running:   # still the stopping one, draining
            cluster.close()
            return False
        cluster.populate_rings = self._cluster.populate_rings
        for ring, pin in self._pins.items():
            ring.release_pin(pin)
        self._pins.clear()
        self._pins_held = False
        self._stop_serving()
        self._set_solo(None)
        old, self._cluster = self._cluster, cluster
        self._wait.close()
        self._wait = self._make_wait()
        for key, reader in list(self._readers.items()):
            try:
                reader.ring = cluster.ring(*key)
            except KafkaException:   # the partition is gone: as a deleted topic, it leaves the assignment
                del self._readers[key]
                continue
            reader.ring_address = address(reader.ring.map)
            self._to_ring_or_segments(reader)   # same position: the new ring, or the drained segments
        self._order = list(self._readers)
        self._update_solo()
        old.close()
        return True

    def _decode_rest(self, reader, stop, n, added):
        """Decode fetched frames[stop:n] (from a compressed or invalid batch on) after the C
        decoder queued `added` records of the frames before them."""
        frames = [(f.dst_pos, f.base_offset, f.record_count, f.batch_bytes) for f in self._frames[stop:n]]
        try:
            return self._decode(reader, self._buffer, frames)
        except KafkaException:
            if not added:   # records before the bad batch are returned first
                raise
            return 0

    def _decode(self, reader, buf, frames):
        topic, partition = reader.topic, reader.partition
        pending, walker = reader.pending, self._walker
        added = 0
        for decision, i, attributes, refs in walker.walk(buf, frames, reader.next_offset):
            if decision == SKIP:
                continue
            pos, base, _, nbytes = frames[i]
            try:
                records, refs, bias = self._records(reader, decision, buf, pos, nbytes, base, refs)
            except KafkaException:
                # Stop in front of the bad batch: records before it are returned first, then
                # every fetch raises here until the application seeks past it (as Kafka's client).
                reader.next_offset = walker.wanted
                self._to_ring_or_segments(reader)
                if added:
                    return added
                raise
            ts_type = TIMESTAMP_LOG_APPEND_TIME if attributes & ATTR_LOG_APPEND_TIME else TIMESTAMP_CREATE_TIME
            added += pending.fill(records, refs, len(refs), bias, topic, partition, ts_type, walker.wanted,
                                  decode_headers)
        reader.next_offset = walker.wanted
        return added

    def _records(self, reader, decision, buf, pos, nbytes, base, refs):
        """(buffer, record refs, bias) of the batch at buf[pos:] the walker decided on; ref
        positions are relative to buffer[bias:]. Use the refs at once (the walker's scratch)."""
        if decision == COMPRESSED:
            return self._inflate(reader, base, memoryview(buf)[pos:pos + nbytes]) + (0,)
        if decision == CORRUPT:
            raise error(KafkaError._BAD_MSG, f"{reader.topic}-{reader.partition}: corrupt record batch at offset "
                        f"{base} ({'CRC32C mismatch' if refs == lib.SHMLOG_ECRC else 'invalid record framing'}); "
                        f"seek to a later offset to skip it")
        return buf, refs, pos

    def _inflate(self, reader, base, batch):
        """A compressed batch's decompressed records section and its record refs (positions
        relative to that section); KafkaException naming the batch."""
        try:
            return codec.decode_compressed_batch(batch, self._check_crcs)
        except codec.CodecError as exc:
            code = KafkaError._BAD_MSG if isinstance(exc, codec.ChecksumError) else KafkaError._BAD_COMPRESSION
            raise error(code, f"{reader.topic}-{reader.partition}: corrupt compressed record batch at offset "
                        f"{base}: {exc}; seek to a later offset to skip it") from None

    def _next_message(self):
        order = self._order
        for i in range(len(order)):
            reader = self._readers[order[(self._next + i) % len(order)]]
            if reader.paused:
                continue
            if not reader.pending:
                self._fetch(reader)
            if reader.pending:
                reader.eof_reported = False
                self._next = (self._next + i + 1) % len(order)
                self._current, self._current_tp = reader.pending, (reader.topic, reader.partition)
                return reader.pending.popleft()
            if self._eof and not reader.eof_reported and reader.at_end():
                reader.eof_reported = True
                self._next = (self._next + i + 1) % len(order)
                return self._eof_event(reader)
        return None

    @staticmethod
    def _eof_event(reader):
        """enable.partition.eof's event, as librdkafka words it: once per arrival at the end."""
        offset = reader.next_offset
        return Message(reader.topic, reader.partition, offset=offset, error=KafkaError(
            KafkaError._PARTITION_EOF, f"Fetch from broker 0 reached end of partition at offset {offset} "
            f"(HighwaterMark {offset})"))

    def _poll_slow(self, timeout=None):
        self._check()
        self._emit_statistics()
        self._release_pins()
        deadline = time.monotonic() + (1e9 if timeout is None or timeout < 0 else timeout)
        while True:
            if self._group is not None:
                self._serve_needed = False
                event = self._group.serve()   # rebalance callbacks, commit reports, group errors
                if event is not None:
                    return event
            msg = self._next_message()
            if msg is not None:
                if self._auto_store and msg._error is None:
                    self._stored[(msg._topic, msg._partition)] = msg._offset + 1
                return msg
            down = self._broker_gone()   # checked by poll(0) too: nothing to read is when it matters
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if down:
                remaining = min(remaining, RECONNECT_INTERVAL_S)
            self._cluster.maybe_refresh()
            gone = self._drop_deleted()
            if gone is not None:
                return gone
            self._wait.wait([r for r in self._readers.values() if not r.paused], remaining)
            msg = self._fetch_solo()   # the common case after a wait, without the Python fetch path
            if msg is not None:
                return msg

    def _emit_statistics(self):
        if self._stats is not None:
            if self._group is None:
                self._serve_needed = False  # the statistics timer's request (a group's serve() clears its own)
            self._stats.maybe_emit()

    def consume(self, num_messages: int = 1, timeout: float | None = None) -> list[Message]:
        self._check()
        self._emit_statistics()
        self._release_pins()
        if num_messages < 1 or num_messages > 1000000:
            raise ValueError("num_messages must be between 1 and 1000000")
        deadline = time.monotonic() + (1e9 if timeout is None or timeout < 0 else timeout)
        out = []
        if self._group is not None:
            self._serve_needed = False
            event = self._group.serve()   # rebalance callbacks, commit reports, group errors
            if event is not None:
                return [event]
        while len(out) < num_messages:
            try:
                msg = self._next_message()
            except KafkaException:
                if out:  # return what was read; the bad batch raises again on the next call
                    break
                raise
            if msg is not None and msg._error is not None:  # an EOF event
                out.append(msg)
                continue
            if msg is not None:
                out.append(msg)
                out.extend(self._current.take(num_messages - len(out)))   # the rest of this decoded run
                if self._auto_store:
                    self._stored[(msg._topic, msg._partition)] = out[-1]._offset + 1
                continue
            if out:
                break
            down = self._broker_gone()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if down:
                remaining = min(remaining, RECONNECT_INTERVAL_S)
            self._cluster.maybe_refresh()
            gone = self._drop_deleted()
            if gone is not None:
                out.append(gone)
                break
            self._wait.wait([r for r in self._readers.values() if not r.paused], remaining)
            if self._group is not None:
                event = self._group.serve()
                if event is not None:
                    out.append(event)
                    break
        return out

    # ------------------------------------------------------------------ zero-copy batches

    def consume_batch(self, max_records: int = 65536, timeout: float | None = None) -> RecordBatchView | None:
        """Records of one partition as a RecordBatchView whose values stay in shared memory:
        up to max_records, and from the ring at most 1/16 of its bytes (see VIEW_RING_SHARE).

        Returns None when nothing arrives before the timeout. See RecordBatchView for how
        long the view stays valid.
        """
        self._check()
        self._release_pins()
        deadline = time.monotonic() + (1e9 if timeout is None or timeout < 0 else timeout)
        while True:
            if self._group is not None:
                event = self._group.serve()
                if event is not None:
                    raise KafkaException(event.error())
            for key in self._order:
                reader = self._readers[key]
                if reader.paused or reader.pending:
                    continue
                view = self._view(reader, max_records)
                if view is not None:
                    if self._auto_store and len(view):
                        self._stored[(view.topic, view.partition)] = int(view.offsets[-1]) + 1
                    return view
            if any(r.pending for r in self._readers.values()):
                msgs = self.consume(max_records, 0)
                return self._view_of_messages(msgs)
            down = self._broker_gone()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if down:
                remaining = min(remaining, RECONNECT_INTERVAL_S)
            self._cluster.maybe_refresh()
            gone = self._drop_deleted()
            if gone is not None:
                raise KafkaException(gone.error())
            self._wait.wait([r for r in self._readers.values() if not r.paused], remaining)

    def _view(self, reader, max_records):
        if reader.next_offset < reader.ring.log_start_offset:
            self._seek(reader, reader.next_offset)  # as _fetch: retention or delete_records passed us
        if not reader.on_ring:
            return self._segment_view(reader, max_records)
        if self._read_committed and reader.ring.txn_state()[2]:
            return self._view_of_messages(self._collect(reader, max_records))
        ring = reader.ring
        pin = self._pins.get(ring)
        if pin is None:
            pin = self._pins[ring] = ring.acquire_pin()
        self._pins_held = True
        if not ring.set_pin(pin, reader.cursor.position):
            # Those bytes may be reused before the caller is done with them: hand out copies.
            return self._view_of_messages(self._collect(reader, max_records))
        start = (reader.cursor.position, reader.cursor.next_offset)
        n = ring.fetch(reader.cursor, ffi.NULL, 0, self._frames, MAX_FRAMES_PER_FETCH, self._check_crcs)
        if n <= 0:
            ring.set_pin(pin, _UINT64_MAX)
            if n == lib.SHMLOG_EOVERWRITTEN:
                self._to_ring_or_segments(reader)
            elif ring.end()[0] > reader.cursor.position:
                ring.repair_if_stuck(reader.cursor.position, self._cluster.doorbell.ptr,
                                     self._cfg.shmlog_claim_timeout_ms)
            return None
        mapped = ring.mapping.view()
        frames = [(f.map_pos, f.base_offset, f.record_count, f.batch_bytes) for f in self._frames[0:n]]
        columns = _columns_for(frames, max_records)
        total = viewed_bytes = 0
        consumed_frames = n
        walker = self._walker
        pinned_max = ring.capacity_bytes // VIEW_RING_SHARE
        for decision, i, _, refs in walker.walk(mapped, frames, reader.next_offset,
                                                ffi.cast("uint8_t *", ring.mapping.ptr)):
            if total >= max_records or (total and (decision == COMPRESSED or
                                                   viewed_bytes + frames[i][3] > pinned_max)):
                consumed_frames = i  # hand out the in-place records first; this batch comes next
                break
            if decision == SKIP:
                continue
            pos, base, count, nbytes = frames[i]
            if decision == COMPRESSED:
                # A compressed batch cannot be viewed in place: decompress it (still pinned, so the
                # bytes cannot be reused meanwhile) and hand out a view of the decompressed copy.
                wanted = reader.next_offset = walker.wanted
                try:
                    records, refs = self._inflate(reader, base, mapped[pos:pos + nbytes])
                    reader.next_offset = base + count
                finally:
                    ring.set_pin(pin, _UINT64_MAX)
                    self._to_ring_or_segments(reader)
                view = RecordBatchView.from_refs(reader.topic, reader.partition, records, refs, False,
                                                 first_offset=wanted)
                return view if len(view) else None
            if decision == CORRUPT:
                raise error(KafkaError._BAD_MSG, f"{reader.topic}-{reader.partition}: corrupt batch at "
                            f"offset {base}")
            total = _fast.index_columns(refs, len(refs), pos, walker.wanted, total, *columns)
            viewed_bytes += nbytes
            if total > max_records:   # ends inside this batch: it is fetched again
                consumed_frames = i
                break
        total, wanted = _view_end(columns, total, max_records, walker.wanted)
        # Frames we did not consume are fetched again next time: rewind to the first one.
        if consumed_frames < n:
            reader.cursor.position = self._frames[consumed_frames].map_pos - ring.data_offset \
                - layout.FRAME_PREFIX_BYTES + (start[0] - (start[0] % ring.capacity_bytes))
            if reader.cursor.position < start[0]:
                reader.cursor.position += ring.capacity_bytes
            reader.cursor.next_offset = self._frames[consumed_frames].base_offset
        reader.next_offset = wanted
        if not total:
            ring.set_pin(pin, _UINT64_MAX)
            return None
        return RecordBatchView(reader.topic, reader.partition, mapped, [c[:total] for c in columns], True)

    def _segment_view(self, reader, max_records):
        """A view of the next records of a reader behind its ring, indexed in place in the
        mapped segment file (the mapping lives as long as the view). A compressed or corrupt
        batch ends the view in front of it; met first, it goes the way of poll()."""
        got = self._read_segments(reader)
        if got is None:
            return None
        buf, frames = got
        columns = _columns_for(frames, max_records)
        total, walker, stopped = 0, self._walker, False
        for decision, i, _, refs in walker.walk(buf, frames, reader.next_offset):
            if total >= max_records:
                break
            if decision == SKIP:
                continue
            if decision != RECORDS:
                stopped = True
                break
            total = _fast.index_columns(refs, len(refs), frames[i][0], walker.wanted, total, *columns)
        total, reader.next_offset = _view_end(columns, total, max_records, walker.wanted)
        if stopped and not total:
            return self._view_of_messages(self._collect(reader, max_records))
        self._to_ring_or_segments(reader)
        if not total:
            return None
        return RecordBatchView(reader.topic, reader.partition, buf, [c[:total] for c in columns], True)

    def _collect(self, reader, max_records):
        out = list(reader.pending)[:max_records]
        for _ in out:
            reader.pending.popleft()
        if not out:
            self._fetch(reader)
            out = [reader.pending.popleft() for _ in range(min(max_records, len(reader.pending)))]
        return out

    def _view_of_messages(self, msgs):
        return view_of_messages(msgs)

    def _release_pins(self):
        if self._pins_held:
            for ring, pin in self._pins.items():
                ring.set_pin(pin, _UINT64_MAX)
            self._pins_held = False

    # ------------------------------------------------------------------ committed offsets (shmlog/groups.py)

    def commit(self, message: Message | None = None, offsets: list[TopicPartition] | None = None,
               asynchronous: bool = True) -> list[TopicPartition] | None:
        """Commit message.offset()+1, the given TopicPartitions, or (neither) the stored offsets.
        Synchronous: returns the committed TopicPartitions or raises KafkaException (e.g.
        ILLEGAL_GENERATION when the group moved on); asynchronous: on_commit hears in poll()."""
        self._check()
        return self._group_only("commit").commit(message, offsets, asynchronous)

    def committed(self, partitions: list[TopicPartition], timeout: float | None = None) -> list[TopicPartition]:
        self._check()
        return self._group_only("committed").committed(partitions, timeout)

    def store_offsets(self, message: Message | None = None, offsets: list[TopicPartition] | None = None) -> None:
        self._check()
        self._group_only("store_offsets").store_offsets(message, offsets)

    def offsets_for_times(self, partitions: list[TopicPartition],
                          timeout: float | None = None) -> list[TopicPartition]:
        """TopicPartitions whose offset is a timestamp (ms) -> the same with the earliest offset
        whose record timestamp is >= it, or OFFSET_END (-1) when every record is older.

        As Kafka: records below the log start offset do not count; the time index of each
        segment narrows the search, and records not yet on disk are searched in the ring.
        """
        from shmlog.log.partition_reader import offset_for_time
        self._check()
        out = []
        for tp in partitions:
            info = self._cluster.topic(tp.topic)
            if not 0 <= tp.partition < info["partitions"]:
                raise error(KafkaError._UNKNOWN_PARTITION, f"{tp.topic}-{tp.partition}: topic has "
                            f"{info['partitions']} partitions")
            pdir = partition_dir(info["log_dirs"][tp.partition], tp.topic, tp.partition)
            offset = offset_for_time(pdir, self._cluster.ring(tp.topic, tp.partition), tp.offset)
            out.append(TopicPartition(tp.topic, tp.partition, offset))
        return out

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        from shmlog.client.admin import cluster_metadata
        self._cluster.refresh()
        cluster_id = self._cluster.control.request("describe_cluster")["cluster_id"]   # as AdminClient.cluster_id()
        return cluster_metadata(self._cluster.meta, topic, cluster_id)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the group (on_revoke, then a final commit with enable.auto.commit) and let go."""
        if self._closed:
            return
        try:
            if self._stats is not None:
                self._stats.close()
            if self._group is not None:
                self._group.close()
        finally:
            self._closed = True
            self._stop_serving()
            self._set_solo(None)
            self._let_go_of_pins()
            self._wait.close()
            self._readers.clear()
            self._cluster.close()
