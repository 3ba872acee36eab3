"""StreamingDataFrame: the chainable handle a topology is written with.

Every call adds a step below this handle's step and returns a handle on the new step, so
`sdf.filter(f).apply(g)` is a chain and calling two methods on the same handle branches.
Nothing runs here: App.run() starts workers that push records through the steps.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shmlog.streams import aggregations as agg
from shmlog.streams import steps as s
from shmlog.streams import windows as w
from shmlog.streams.ktable import KTable
from shmlog.streams.serde import serializer

if TYPE_CHECKING:
    from shmlog.streams.app import App, GlobalTable


class StreamingDataFrame:
    def __init__(self, app: App, step: s.Step) -> None:
        self._app = app
        self._step = step

    def _then(self, step: s.Step) -> StreamingDataFrame:
        self._app._check_building()
        self._step.children.append(step)
        return StreamingDataFrame(self._app, step)

    def _name(self, kind: str, name: str | None) -> str:
        return self._app._step_name(kind, name)

    # ------------------------------------------------------------------ stateless

    def filter(self, predicate: Callable[..., Any], stateful: bool = False,
               name: str | None = None) -> StreamingDataFrame:
        """Keep the records for which predicate(value) (or predicate(value, state)) is true."""
        if stateful:
            return self._then(s.StatefulApply(self._name("filter", name), predicate, "filter"))
        return self._then(s.Filter(self._name("filter", None), predicate))

    def apply(self, function: Callable[..., Any], stateful: bool = False, expand: bool = False,
              name: str | None = None) -> StreamingDataFrame:
        """Replace each value with function(value); with stateful=True, function(value, state)
        where state is the message key's State (get/set/delete/exists), kept in a store
        backed by a changelog topic. expand=True: function returns a list of values."""
        if stateful:
            return self._then(s.StatefulApply(self._name("apply", name), function, "flat_map" if expand else "apply"))
        return self._then(s.Apply(self._name("apply", None), function, expand))

    map = apply

    def flat_map(self, function: Callable[..., Any], stateful: bool = False,
                 name: str | None = None) -> StreamingDataFrame:
        return self.apply(function, stateful=stateful, expand=True, name=name)

    def update(self, function: Callable[..., Any], stateful: bool = False,
               name: str | None = None) -> StreamingDataFrame:
        """Call function(value) for its side effects (e.g. mutate a dict, print); pass the record on."""
        if stateful:
            return self._then(s.StatefulApply(self._name("update", name), function, "update"))
        return self._then(s.Update(self._name("update", None), function))

    def __getitem__(self, columns: str | list[str]) -> StreamingDataFrame:
        """sdf["price"]: the value's field; sdf[["price", "qty"]]: a dict of those fields."""
        if not isinstance(columns, (str, list)):
            raise TypeError(f"sdf[...] takes a column name or a list of them, not {columns!r}")
        return self._then(s.Columns(self._name("columns", None), columns))

    def to_topic(self, topic: str, key_serializer: Any = "bytes", value_serializer: Any = "json",
                 key: Callable[[Any], Any] | None = None) -> StreamingDataFrame:
        """Produce each record to topic (created at start if missing, with the source's partition
        count), keyed by the record's key or by key(value); the records continue unchanged."""
        self._app._output_topics.add(topic)
        return self._then(s.ToTopic(self._name("to_topic", None), topic, serializer(key_serializer, topic, "key"),
                                    serializer(value_serializer, topic, "value"), key))

    def group_by(self, key: str | Callable[[Any], Any], name: str | None = None) -> StreamingDataFrame:
        """Re-key by a column (a name) or key(value): records go through the internal topic
        `<application.id>-repartition-<name>` so each new key's records meet its state."""
        if isinstance(key, str):
            column = key
            name = name or column

            def key_function(value):
                return value[column]
        elif callable(key):
            if name is None:
                raise ValueError("group_by(function) needs name=: it names the repartition topic")
            key_function = key
        else:
            raise TypeError(f"group_by takes a column name or a function, not {key!r}")
        return self._app._repartition(self, key_function, name)

    # ------------------------------------------------------------------ aggregations per key

    def _aggregate(self, aggregator: agg.Aggregator, name: str | None) -> StreamingDataFrame:
        return self._then(s.Aggregate(self._name(aggregator.name, name), aggregator))

    def count(self, name: str | None = None) -> StreamingDataFrame:
        return self._aggregate(agg.Count(), name)

    def sum(self, column: str | None = None, name: str | None = None) -> StreamingDataFrame:
        return self._aggregate(agg.Sum(column), name)

    def min(self, column: str | None = None, name: str | None = None) -> StreamingDataFrame:
        return self._aggregate(agg.Min(column), name)

    def max(self, column: str | None = None, name: str | None = None) -> StreamingDataFrame:
        return self._aggregate(agg.Max(column), name)

    def mean(self, column: str | None = None, name: str | None = None) -> StreamingDataFrame:
        return self._aggregate(agg.Mean(column), name)

    def latest(self, column: str | None = None, name: str | None = None) -> StreamingDataFrame:
        return self._aggregate(agg.Latest(column), name)

    def reduce(self, reducer: Callable[[Any, Any], Any], initializer: Callable[[Any], Any] | None = None,
               name: str | None = None) -> StreamingDataFrame:
        return self._aggregate(agg.Reduce(reducer, initializer), name)

    def agg(self, name: str | None = None, **parts: agg.Aggregator) -> StreamingDataFrame:
        return self._aggregate(agg.Composite(parts), name)

    # ------------------------------------------------------------------ windows

    def tumbling_window(self, size_ms: int, grace_ms: int = 0, name: str | None = None) -> WindowSpec:
        return WindowSpec(self, w.Tumbling(size_ms, grace_ms), name)

    def hopping_window(self, size_ms: int, step_ms: int, grace_ms: int = 0, name: str | None = None) -> WindowSpec:
        return WindowSpec(self, w.Hopping(size_ms, step_ms, grace_ms), name)

    def sliding_window(self, size_ms: int, grace_ms: int = 0, name: str | None = None) -> WindowSpec:
        return WindowSpec(self, w.Sliding(size_ms, grace_ms), name)

    def session_window(self, gap_ms: int, grace_ms: int = 0, name: str | None = None) -> WindowSpec:
        return WindowSpec(self, w.Session(gap_ms, grace_ms), name)

    # ------------------------------------------------------------------ joins

    def join_table(self, table: GlobalTable | KTable, on: Callable[[Any], Any] | None = None, how: str = "inner",
                   merge: Callable[[Any, Any], Any] | None = None) -> StreamingDataFrame:
        """Join each record with the table's row for on(value) (default: the record's key).
        merge(value, row) makes the result (default: {**value, **row} for dicts, a missing row
        adding nothing; else (value, row)). A co-partitioned table (app.ktable()) is joined by
        the record's key only, with the row as of the task's stream time (streams/ktable.py)."""
        if how not in ("inner", "left"):
            raise ValueError(f"join_table how= must be 'inner' or 'left', not {how!r}")
        if isinstance(table, KTable):
            self._app._check_ktable_join(self._step, table, on)
        return self._then(s.TableJoin(self._name("join", None), table, on, how, merge or _merge))

    def join_stream(self, other: StreamingDataFrame, within_ms: int, grace_ms: int = 0,
                    merge: Callable[[Any, Any], Any] | None = None, name: str | None = None,
                    how: str = "inner") -> StreamingDataFrame:
        """Join with another stream by key: each pair of records (one from each side, same key)
        at most within_ms apart in event time, as merge(left, right) (default: {**left, **right}
        for dicts, a missing side adding nothing; else (left, right)).
        how="left" also emits each left record that found no partner, as merge(left, None), and
        how="outer" each such record of either side (merge(None, right) for a right one), once
        stream time has passed its time + within_ms + grace_ms. Both sides go through the
        internal topic `<application.id>-join-<name>`."""
        if not isinstance(within_ms, int) or within_ms < 0:
            raise ValueError(f"join_stream within_ms must be an int >= 0, not {within_ms!r}")
        if not isinstance(grace_ms, int) or grace_ms < 0:
            raise ValueError(f"join_stream grace_ms must be an int >= 0, not {grace_ms!r}")
        if how not in s.StreamJoin.HOWS:
            raise ValueError(f"join_stream how= must be one of {', '.join(map(repr, s.StreamJoin.HOWS))}, "
                             f"not {how!r}")
        return self._app._join_streams(self, other, within_ms, grace_ms, merge or _merge, name, how)


def _merge(left, right):
    """The default merge of a join: dicts merge into one (the right one's fields win), a missing
    side (None: no table row, no partner in a left or outer join) adds no field; other values
    make the pair (left, right)."""
    if isinstance(left, dict) and isinstance(right, dict):
        return {**left, **right}
    if isinstance(left, dict) and right is None:
        return dict(left)
    if left is None and isinstance(right, dict):
        return dict(right)
    return (left, right)


class WindowSpec:
    """A window over a StreamingDataFrame; an aggregation makes it a WindowedAggregation."""

    def __init__(self, sdf: StreamingDataFrame, window: Any, name: str | None) -> None:
        self._sdf = sdf
        self._window = window
        self._name = name

    def _with(self, aggregator: agg.Aggregator) -> WindowedAggregation:
        return WindowedAggregation(self._sdf, self._window, aggregator, self._name)

    def count(self) -> WindowedAggregation:
        return self._with(agg.Count())

    def sum(self, column: str | None = None) -> WindowedAggregation:
        return self._with(agg.Sum(column))

    def min(self, column: str | None = None) -> WindowedAggregation:
        return self._with(agg.Min(column))

    def max(self, column: str | None = None) -> WindowedAggregation:
        return self._with(agg.Max(column))

    def mean(self, column: str | None = None) -> WindowedAggregation:
        return self._with(agg.Mean(column))

    def latest(self, column: str | None = None) -> WindowedAggregation:
        return self._with(agg.Latest(column))

    def reduce(self, reducer: Callable[[Any, Any], Any], initializer: Callable[[Any], Any] | None = None,
               merger: Callable[[Any, Any], Any] | None = None) -> WindowedAggregation:
        if isinstance(self._window, w.Session) and merger is None:
            raise ValueError("a reduce over session windows needs merger=(aggregate, aggregate) -> aggregate")
        return self._with(agg.Reduce(reducer, initializer, merger))

    def agg(self, **parts: agg.Aggregator) -> WindowedAggregation:
        return self._with(agg.Composite(parts))


class WindowedAggregation:
    def __init__(self, sdf, window, aggregator, name):
        self._sdf = sdf
        self._window = window
        self._aggregator = aggregator
        self._name = name

    def _emit(self, emit: str) -> StreamingDataFrame:
        name = self._sdf._name("window", self._name)
        return self._sdf._then(s.WindowedAggregate(name, self._window, self._aggregator, emit))

    def current(self) -> StreamingDataFrame:
        """Emit the window's new result on every record: {"start", "end", "value"}."""
        return self._emit("current")

    def final(self) -> StreamingDataFrame:
        """Emit each window's result once, when it closes (end + grace passed in stream time)."""
        return self._emit("final")
