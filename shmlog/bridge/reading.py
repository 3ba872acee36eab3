"""The mirror's reading side: a batch of source records grouped by partition, with the
consumer's positions as they were right after reading it, and the read of the next batch done
in a thread of its own while the current one is flushed and committed.

The copy loop is CPU-bound, and while it waits for a batch's deliveries and commit (the GIL
released in the client's flush) it has nothing to do: reading the next batch then takes that
time instead of its own. Only one thread uses the source consumer at a time: the read's
thread while it runs, the mirror's once wait() returned.
"""
from __future__ import annotations

import threading
from typing import Any, NamedTuple


class SourceBatch(NamedTuple):
    count: int
    by_partition: dict[tuple[str, int], list[Any]]   # records of each source partition, in offset order
    positions: dict[tuple[str, int], int]            # the consumer's position of each, right after the read


def read_batch(consumer: Any, lib: Any, max_records: int, timeout: float) -> SourceBatch:
    by_partition: dict[tuple[str, int], list[Any]] = {}
    count = 0
    for m in consumer.consume(max_records, timeout):
        if m.error() is not None:
            continue
        tp = (m.topic(), m.partition())
        part = by_partition.get(tp)
        if part is None:
            part = by_partition[tp] = []
        part.append(m)
        count += 1
    positions = {}
    if by_partition:
        positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(
            [lib.TopicPartition(t, p) for t, p in sorted(by_partition)])}
    return SourceBatch(count, by_partition, positions)


class ReadAhead:
    """At most one read_batch running in a thread; take() gives its batch."""

    def __init__(self, consumer: Any, lib: Any, max_records: int) -> None:
        self.consumer, self.lib, self.max_records = consumer, lib, max_records
        self._thread: threading.Thread | None = None
        self._result: SourceBatch | BaseException | None = None

    def start(self, timeout: float) -> None:
        self.wait()
        self._result = None
        self._thread = threading.Thread(target=self._read, args=(timeout,), name="mirror-read-ahead", daemon=True)
        self._thread.start()

    def _read(self, timeout: float) -> None:
        try:
            self._result = read_batch(self.consumer, self.lib, self.max_records, timeout)
        except BaseException as exc:   # handed to take(), in the mirror's thread
            self._result = exc

    def wait(self) -> None:
        """Until the read running (if any) is over: the consumer is the caller's again."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def take(self) -> SourceBatch | None:
        """The batch read ahead (None if none was started); its error, raised."""
        self.wait()
        result, self._result = self._result, None
        if isinstance(result, BaseException):
            raise result
        return result

    def drop(self) -> None:
        """Forget what was read ahead (the consumer is about to be moved: assign, seek)."""
        self.wait()
        self._result = None
