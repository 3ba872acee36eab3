"""A task: one input partition of a topology's sources, with its state and stream time.

Every record of the partition goes through `process` (the task's table partitions brought
up to its stream time, the steps below each source of the topic, then the windows that
stream time closed); `changelog_records` says what the batch changed. The worker decides
when to commit; a test can drive a Task with no broker at all.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Sequence

from shmlog.streams import state as st
from shmlog.streams import steps as s
from shmlog.streams.ktable import TablePartition


class Task:
    def __init__(self, topic: str, partition: int, task_state: st.TaskState, roots: list[s.Source],
                 stores: list[str], produce: Callable[..., None], metrics: dict[str, list[int]],
                 tables: Sequence[TablePartition] = ()) -> None:
        self.topic = topic
        self.partition = partition
        self.state = task_state
        self.roots = roots
        self.stores = stores
        self.tables = list(tables)      # this partition of each co-partitioned table the steps join
        self.ctx = s.Context(task_state, produce, metrics)
        self.ctx.stream_time = task_state.meta(st.STREAM_TIME, -1)

    def process(self, key: bytes | None, value_bytes: bytes | None, timestamp_ms: int, timestamp_type: int,
                headers: list | None) -> None:
        self.state.begin()
        for root in self.roots:
            value = root.value_deserializer(value_bytes)
            if root.timestamp_extractor is not None:
                timestamp_ms = int(root.timestamp_extractor(value, headers, timestamp_ms, timestamp_type))
            if timestamp_ms > self.ctx.stream_time:
                self.ctx.stream_time = timestamp_ms
            for table in self.tables:
                table.advance(self.state, self.ctx.stream_time)
            s.run(root, self.ctx, s.Record(key, value, timestamp_ms, headers))
            s.advance(root, self.ctx)

    def changelog_records(self, changelog_topic: Callable[[str], str]) -> Iterator[tuple[str, bytes, bytes | None]]:
        """(topic, key, value) for every store key the batch changed, and the stream time for
        each changed store; remembers the stream time locally too."""
        self.state.set_meta(st.STREAM_TIME, self.ctx.stream_time)
        stream_time = (st.changelog_key_meta(st.STREAM_TIME), pickle.dumps(self.ctx.stream_time))
        for store in self.stores:
            topic = changelog_topic(store)
            changed = False
            for key, value in self.state.changes(store):
                yield topic, key, value
                changed = True
            if changed:
                yield (topic, *stream_time)

    def rollback(self) -> None:
        self.state.rollback()
        self.ctx.stream_time = self.state.meta(st.STREAM_TIME, -1)
