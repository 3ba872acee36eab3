"""Window definitions: which windows a record time falls in, and when a window closes.

Times are epoch milliseconds. A window is [start, end): `end` is exclusive, as in Kafka Streams.
Stream time is the largest record time a task has seen; a window is *closed* once stream
time has passed `end + grace_ms` (no on-time record can reach it any more) and a record is
*late* when every window it falls in is closed. Session windows are [first, last] record
times of a key's burst of activity, extended (and merged) by any record within `gap_ms`; a
session closes once stream time has passed `last + gap_ms + grace_ms`, and a record is late
for sessions when stream time has passed its own time + grace_ms (so a record that is not
late can never belong to a session that already closed).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tumbling:
    size_ms: int
    grace_ms: int = 0

    def __post_init__(self):
        _positive("size_ms", self.size_ms)
        _not_negative("grace_ms", self.grace_ms)

    def windows_of(self, timestamp_ms: int) -> list[tuple[int, int]]:
        start = timestamp_ms - timestamp_ms % self.size_ms
        return [(start, start + self.size_ms)]

    def describe(self) -> str:
        return f"tumbling {self.size_ms} ms, grace {self.grace_ms} ms"


@dataclass(frozen=True)
class Hopping:
    size_ms: int
    step_ms: int
    grace_ms: int = 0

    def __post_init__(self):
        _positive("size_ms", self.size_ms)
        _positive("step_ms", self.step_ms)
        _not_negative("grace_ms", self.grace_ms)
        if self.step_ms > self.size_ms:
            raise ValueError(f"hopping window step_ms ({self.step_ms}) must not exceed size_ms ({self.size_ms})")

    def windows_of(self, timestamp_ms: int) -> list[tuple[int, int]]:
        """Every window [start, start + size) with start a multiple of step and start >= 0."""
        last_start = timestamp_ms - timestamp_ms % self.step_ms
        first_start = max(0, last_start - self.size_ms + self.step_ms)
        return [(s, s + self.size_ms) for s in range(first_start, last_start + 1, self.step_ms)
                if s <= timestamp_ms < s + self.size_ms]

    def describe(self) -> str:
        return f"hopping {self.size_ms} ms every {self.step_ms} ms, grace {self.grace_ms} ms"


@dataclass(frozen=True)
class Sliding:
    """One window per record, ending at its time and reaching size_ms back: [t - size_ms, t]
    (stored as [t - size_ms, t + 1)). Every record that falls in a window while it is open is in
    its aggregate, whichever order they arrive in. (Kafka Streams' SlidingWindows also opens the
    windows that start right after each record; these do not exist here.)"""
    size_ms: int
    grace_ms: int = 0

    def __post_init__(self):
        _positive("size_ms", self.size_ms)
        _not_negative("grace_ms", self.grace_ms)

    def window_of(self, timestamp_ms: int) -> tuple[int, int]:
        return timestamp_ms - self.size_ms, timestamp_ms + 1

    def describe(self) -> str:
        return f"sliding {self.size_ms} ms, grace {self.grace_ms} ms"


@dataclass(frozen=True)
class Session:
    gap_ms: int
    grace_ms: int = 0

    def __post_init__(self):
        _positive("gap_ms", self.gap_ms)
        _not_negative("grace_ms", self.grace_ms)

    def describe(self) -> str:
        return f"session, inactivity gap {self.gap_ms} ms, grace {self.grace_ms} ms"


def closes_at(window: Tumbling | Hopping | Sliding | Session, end_ms: int) -> int:
    """The stream time from which the window ending at end_ms (a session: its last record's
    time) can take no more records."""
    if isinstance(window, Session):
        return end_ms + window.gap_ms + window.grace_ms + 1
    return end_ms + window.grace_ms


def is_closed(window: Tumbling | Hopping | Sliding | Session, end_ms: int, stream_time_ms: int) -> bool:
    return stream_time_ms >= closes_at(window, end_ms)


def _positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int of milliseconds, not {value!r}")


def _not_negative(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0 of milliseconds, not {value!r}")
