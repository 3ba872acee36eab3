"""Aggregators: how a running aggregate starts, takes one value, merges with another (session
windows merge), and what it reports.

Each reads `column` of a dict value, or the whole value when column is None. Their states are
plain Python values (they go to the changelog pickled).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Aggregator:
    name = "aggregate"

    def __init__(self, column: str | None = None) -> None:
        self.column = column

    def _pick(self, value):
        return value if self.column is None else value[self.column]

    def initialize(self) -> Any:
        return None

    def add(self, state: Any, value: Any, timestamp_ms: int) -> Any:
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def result(self, state: Any) -> Any:
        return state

    def describe(self) -> str:
        return self.name if self.column is None else f"{self.name}({self.column})"


class Count(Aggregator):
    name = "count"

    def initialize(self):
        return 0

    def add(self, state, value, timestamp_ms):
        return state + 1

    def merge(self, a, b):
        return a + b


class Sum(Aggregator):
    name = "sum"

    def initialize(self):
        return 0

    def add(self, state, value, timestamp_ms):
        return state + self._pick(value)

    def merge(self, a, b):
        return a + b


class Min(Aggregator):
    name = "min"

    def add(self, state, value, timestamp_ms):
        v = self._pick(value)
        return v if state is None or v < state else state

    def merge(self, a, b):
        return b if a is None else a if b is None else min(a, b)


class Max(Aggregator):
    name = "max"

    def add(self, state, value, timestamp_ms):
        v = self._pick(value)
        return v if state is None or v > state else state

    def merge(self, a, b):
        return b if a is None else a if b is None else max(a, b)


class Mean(Aggregator):
    name = "mean"

    def initialize(self):
        return (0, 0)

    def add(self, state, value, timestamp_ms):
        return (state[0] + self._pick(value), state[1] + 1)

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])

    def result(self, state):
        return state[0] / state[1] if state[1] else None


class Latest(Aggregator):
    """The value of the record with the largest timestamp (the later one on a tie)."""
    name = "latest"

    def add(self, state, value, timestamp_ms):
        if state is None or timestamp_ms >= state[0]:
            return (timestamp_ms, self._pick(value))
        return state

    def merge(self, a, b):
        if a is None or (b is not None and b[0] >= a[0]):
            return b
        return a

    def result(self, state):
        return None if state is None else state[1]


class Reduce(Aggregator):
    """reducer(aggregate, value) after initializer(first value); sessions merge two aggregates
    with `merger` (required there, as Kafka Streams' session aggregations require one)."""
    name = "reduce"

    def __init__(self, reducer: Callable[[Any, Any], Any], initializer: Callable[[Any], Any] | None = None,
                 merger: Callable[[Any, Any], Any] | None = None) -> None:
        super().__init__(None)
        self.reducer = reducer
        self.initializer = initializer or (lambda value: value)
        self.merger = merger

    def add(self, state, value, timestamp_ms):
        return self.initializer(value) if state is None else self.reducer(state, value)

    def merge(self, a, b):
        if a is None or b is None:
            return b if a is None else a
        if self.merger is None:
            raise ValueError("a reduce over session windows needs a merger(aggregate, aggregate)")
        return self.merger(a, b)


class Composite(Aggregator):
    """Several named aggregators side by side: the result is a dict of their results."""
    name = "agg"

    def __init__(self, parts: dict[str, Aggregator]) -> None:
        super().__init__(None)
        if not parts:
            raise ValueError("agg() needs at least one name=Aggregator(...)")
        for name, part in parts.items():
            if not isinstance(part, Aggregator):
                raise TypeError(f"agg({name}=...) must be an Aggregator such as Sum('price'), not {part!r}")
        self.parts = dict(parts)

    def initialize(self):
        return {name: part.initialize() for name, part in self.parts.items()}

    def add(self, state, value, timestamp_ms):
        return {name: part.add(state[name], value, timestamp_ms) for name, part in self.parts.items()}

    def merge(self, a, b):
        return {name: part.merge(a[name], b[name]) for name, part in self.parts.items()}

    def result(self, state):
        return {name: part.result(state[name]) for name, part in self.parts.items()}

    def describe(self):
        return "agg(" + ", ".join(f"{n}={p.describe()}" for n, p in self.parts.items()) + ")"
