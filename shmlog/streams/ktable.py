"""Co-partitioned tables (Kafka Streams' KTable read from a topic) for join_table().

The table's topic is partitioned like the stream that joins it: the same partition count, and
a key's records in the same partition number in both (the same key bytes through the same
partitioner). So the task of stream partition p needs table partition p only: each task keeps
its own table partition in a key-value store of its state file (store `KTable.store`, raw value
bytes; a null value deletes the key). The table's topic is that store's changelog, as Kafka
Streams uses a source KTable's topic: nothing else is written for it.

Time. Kafka Streams processes a task's partitions in timestamp order; here a table record
waits until the task's stream time reaches its timestamp (the record's own). Before the task processes a stream
record it applies its table partition's records in offset order, up to the first one whose
timestamp is later than stream time (the largest event time the task has seen, this record's
included). A stream record thus sees every update of its key with a timestamp at most stream
time that was in the table topic when its batch was read (the worker reads each table
partition to its end first), and none later. A table record with an earlier timestamp than one
before it waits behind it: a partition is applied in offset order.

Position. The store's position is a table topic offset: the first record not applied yet. It is
committed with the group's offsets (in the batch's transaction under exactly-once, so outputs,
input offsets and table position commit together) and kept in the state file as the store's
checkpoint once that commit is done. A task that is assigned (a worker started, died and was
replaced, the group rebalanced) first replays its table partition from its checkpoint to the
committed position, so it sees the table exactly as the task it replaces saw it at that commit;
a checkpoint ahead of the commit (at-least-once: a worker died between its local commit and its
offset commit) cannot be taken back, so the store is then rebuilt from the start of the topic.
The task's stream time is committed with its input offset too (as the offset's metadata, where
Kafka Streams keeps a partition's time): a task whose state file is lost or a batch behind
resumes with the stream time of the commit, so the table updates after the committed position
wait for the same stream time as they would have.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from shmlog.errors import KafkaError, error
from shmlog.streams import state as st
from shmlog.streams.serde import deserializer

if TYPE_CHECKING:
    from shmlog.streams.state import TaskState
    from shmlog.streams.steps import Context

MAX_WAITING = 10_000        # table records read ahead of stream time, per partition, before reading pauses
READ_TIMEOUT_S = 300


class KTable:
    """A table of `topic` partitioned like the stream that joins it (app.ktable())."""

    def __init__(self, topic: str, value_deserializer: Any, store: str) -> None:
        self.topic = topic
        self.store = store
        self.checkpoint = f"checkpoint:{store}"     # the state file's meta entry for the store's position
        self.decode = deserializer(value_deserializer, topic, "value")

    def lookup(self, ctx: Context, key: bytes | None) -> Any:
        """The table's current value for key in this task's partition (None: no row)."""
        if key is None:
            return None
        value = ctx.state.get(self.store, key)
        return None if value is None else self.decode(value)

    def apply(self, state: TaskState, key: bytes | None, value: bytes | None) -> None:
        if key is None:         # a table has no row for a null key (Kafka Streams drops these records)
            return
        if value is None:
            state.delete(self.store, key)
        else:
            state.put(self.store, key, value)

    def describe(self) -> str:
        return f"co-partitioned table, store {self.store}"


class TableRecord(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


class TablePartition:
    """One task's partition of a KTable: the records read from the table topic and not applied
    yet, applied to the task's store as its stream time reaches them.

    refill(partition) -> bool, when given, reads more of the partition once every record read
    is applied and the partition's end (as of the batch) is not reached; it says whether it
    read any record."""

    def __init__(self, table: KTable, partition: int, next_offset: int = 0,
                 refill: Callable[[TablePartition], bool] | None = None) -> None:
        self.table = table
        self.partition = partition
        self.waiting: deque[TableRecord] = deque()
        self.next_offset = next_offset       # the next offset to read from the table topic
        self.refill = refill

    def add(self, record: TableRecord) -> None:
        self.waiting.append(record)
        self.next_offset = record.offset + 1

    def advance(self, state: TaskState, stream_time: int) -> None:
        """Apply, in offset order, every record up to the first later than stream_time."""
        while True:
            waiting = self.waiting
            while waiting and waiting[0].timestamp <= stream_time:
                record = waiting.popleft()
                self.table.apply(state, record.key, record.value)
            if waiting or self.refill is None or not self.refill(self):
                return

    def position(self) -> int:
        """The store's position: the offset of the first table record not applied."""
        return self.waiting[0].offset if self.waiting else self.next_offset


class KTableReader:
    """A worker's reader of the table partitions of its tasks: one manually assigned consumer
    (read_committed) for every table partition, reading each into its TablePartition.

    Its group.id is the application's, so that it reads the positions the workers commit; it
    never joins the group and never commits."""

    def __init__(self, lib, app) -> None:
        self.lib = lib
        self.consumer = lib.Consumer({**app.client_conf, "group.id": app.application_id,
                                      "enable.auto.commit": False, "enable.auto.offset.store": False,
                                      "enable.partition.eof": True, "isolation.level": "read_committed",
                                      "auto.offset.reset": "earliest"})
        self.partitions: dict[tuple[str, int], TablePartition] = {}
        self.ends: dict[tuple[str, int], int] = {}     # where this batch's reading of a partition stops
        self.paused: set[tuple[str, int]] = set()

    def close(self) -> None:
        self.consumer.close()

    # ---------------------------------------------------------------- assignment

    def open(self, state: TaskState, table: KTable, partition: int) -> TablePartition:
        """Table partition `partition` for a newly assigned task whose state is `state`: its
        store replayed to the committed position, then read on from there."""
        tp = (table.topic, partition)
        committed = self.consumer.committed([self.lib.TopicPartition(*tp)], timeout=30)[0].offset
        committed = max(committed, 0)       # none committed yet: nothing applied yet
        checkpoint = state.meta(table.checkpoint, 0)
        state.begin()
        if checkpoint > committed:
            state.delete_store(table.store)
            checkpoint = 0
        tpart = TablePartition(table, partition, checkpoint, self._refill)
        self.partitions[tp] = tpart
        self.consumer.incremental_assign([self.lib.TopicPartition(
            table.topic, partition, checkpoint if checkpoint > 0 else self.lib.OFFSET_BEGINNING)])
        while True:     # replay what the committed position covers, whatever its timestamps
            while tpart.waiting and tpart.waiting[0].offset < committed:
                record = tpart.waiting.popleft()
                table.apply(state, record.key, record.value)
            if tpart.waiting or tpart.next_offset >= committed:
                break
            self._read(tpart, committed)
        state.set_meta(table.checkpoint, tpart.position())
        state.commit()
        return tpart

    def restore_stream_time(self, state: TaskState, topic: str, partition: int) -> None:
        """The stream time committed with the input offset of stream partition (topic,
        partition), when the state file's is older."""
        metadata = self.consumer.committed([self.lib.TopicPartition(topic, partition)], timeout=30)[0].metadata
        try:
            committed = int(metadata or -1)
        except ValueError:      # committed by something else than a streams worker
            return
        if committed > state.meta(st.STREAM_TIME, -1):
            state.begin()
            state.set_meta(st.STREAM_TIME, committed)
            state.commit()

    def forget(self, partitions: list[TablePartition]) -> None:
        """The tasks of these table partitions were revoked."""
        gone = []
        for tpart in partitions:
            tp = (tpart.table.topic, tpart.partition)
            if self.partitions.get(tp) is tpart:
                del self.partitions[tp]
                self.ends.pop(tp, None)
                self.paused.discard(tp)
                gone.append(self.lib.TopicPartition(*tp))
        if gone:
            self.consumer.incremental_unassign(gone)

    def rewind(self, partitions: list[TablePartition], state: TaskState) -> None:
        """After a batch was rolled back: forget what was read and read again from the checkpoint
        (the committed position), as the batch's stream records will be."""
        for tpart in partitions:
            tp = (tpart.table.topic, tpart.partition)
            if self.partitions.get(tp) is not tpart:
                continue
            tpart.waiting.clear()
            tpart.next_offset = state.meta(tpart.table.checkpoint, 0)
            self.paused.discard(tp)
            self.consumer.resume([self.lib.TopicPartition(*tp)])
            self.consumer.seek(self.lib.TopicPartition(
                *tp, tpart.next_offset if tpart.next_offset > 0 else self.lib.OFFSET_BEGINNING))

    # ---------------------------------------------------------------- reading

    def catch_up(self, partitions: list[TablePartition]) -> None:
        """Before a batch: read each partition to its end as it is now (its last stable offset),
        or until MAX_WAITING records wait (advance() reads on as they are applied)."""
        for tpart in partitions:
            tp = (tpart.table.topic, tpart.partition)
            self.ends[tp] = self.consumer.get_watermark_offsets(self.lib.TopicPartition(*tp), timeout=30)[1]
            self._read(tpart, self.ends[tp])

    def _refill(self, tpart: TablePartition) -> bool:
        before = len(tpart.waiting)
        self._read(tpart, self.ends.get((tpart.table.topic, tpart.partition), 0))
        return len(tpart.waiting) > before

    def _read(self, tpart: TablePartition, end: int) -> None:
        """Read until tpart's next offset reaches end, or MAX_WAITING of its records wait. Records
        of the other partitions read meanwhile wait in theirs (reading pauses for a partition
        with MAX_WAITING waiting)."""
        tp = (tpart.table.topic, tpart.partition)
        if tp in self.paused:
            self.paused.discard(tp)
            self.consumer.resume([self.lib.TopicPartition(*tp)])
        deadline = time.monotonic() + READ_TIMEOUT_S
        while tpart.next_offset < end and len(tpart.waiting) < MAX_WAITING:
            messages = self.consumer.consume(1000, 0.05)
            for msg in messages:
                self._route(msg)
            if not messages:
                # Control records (transaction markers) and aborted records carry no message:
                # the consumer's position says how far reading got.
                position = self.consumer.position([self.lib.TopicPartition(*tp)])[0].offset
                tpart.next_offset = max(tpart.next_offset, position)
                if time.monotonic() > deadline:
                    raise error(KafkaError._TIMED_OUT, f"table {tp[0]} [{tp[1]}]: offset {end} not read in "
                                f"{READ_TIMEOUT_S} s (at {tpart.next_offset})")

    def _route(self, msg) -> None:
        err = msg.error()
        tpart = self.partitions.get((msg.topic(), msg.partition()))
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if tpart is not None:
                    tpart.next_offset = max(tpart.next_offset, msg.offset())
                return
            if err.fatal():
                raise self.lib.KafkaException(err)
            return
        if tpart is None:      # read before its task was revoked
            return
        tpart.add(TableRecord(msg.offset(), msg.timestamp()[1], msg.key(), msg.value()))
        tp = (msg.topic(), msg.partition())
        if len(tpart.waiting) >= MAX_WAITING and tp not in self.paused:
            self.paused.add(tp)
            self.consumer.pause([self.lib.TopicPartition(*tp)])
