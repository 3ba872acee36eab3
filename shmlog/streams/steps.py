"""The steps of a topology: each takes one record and returns the records it passes on.

A record is (key bytes, value, timestamp ms, headers). Steps form a tree below each source;
`run` pushes a record through it depth first, so a record's whole effect (outputs, state
changes) happens before the next record is looked at, and stateless steps cost one Python
call each (they are fused: no topic between them).

A Context is what the worker gives a step: the task's state, the task's stream time, the
producer for outputs, and counters. Steps keep no per-task data of their own; what must
survive a crash is in the task's state (streams/state.py).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from shmlog.streams import windows as w
from shmlog.streams.aggregations import Aggregator
from shmlog.streams.serde import key_bytes


class Record(NamedTuple):
    key: bytes | None
    value: Any
    timestamp: int
    headers: list | None


class Context:
    """One task's view for the steps while it processes a record."""

    def __init__(self, state, produce: Callable[..., None], metrics: dict[str, list[int]]) -> None:
        self.state = state
        self.produce = produce            # produce(topic, key_bytes, value_bytes, timestamp, headers)
        self.metrics = metrics            # step name -> [records in, records out, late records dropped]
        self.stream_time = -1


class Step:
    kind = "step"

    def __init__(self, name: str) -> None:
        self.name = name
        self.children: list[Step] = []

    def process(self, ctx: Context, record: Record) -> list[Record]:
        raise NotImplementedError

    def stores(self) -> list[str]:
        return []

    def describe(self) -> str:
        return self.kind

    def on_stream_time(self, ctx: Context) -> list[Record]:
        """Records this step emits because stream time moved (closed windows)."""
        return []


def run(step: Step, ctx: Context, record: Record) -> None:
    counts = ctx.metrics.setdefault(step.name, [0, 0, 0])
    counts[0] += 1
    outs = step.process(ctx, record)
    counts[1] += len(outs)
    for out in outs:
        for child in step.children:
            run(child, ctx, out)


def advance(step: Step, ctx: Context) -> None:
    """Let every step below `step` act on the task's stream time (closing windows)."""
    outs = step.on_stream_time(ctx)
    if outs:
        ctx.metrics.setdefault(step.name, [0, 0, 0])[1] += len(outs)
        for out in outs:
            for child in step.children:
                run(child, ctx, out)
    for child in step.children:
        advance(child, ctx)


# ---------------------------------------------------------------------- stateless

class Source(Step):
    kind = "source"

    def __init__(self, name, topic, key_deserializer, value_deserializer, timestamp_extractor, internal=False):
        super().__init__(name)
        self.topic = topic
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self.timestamp_extractor = timestamp_extractor
        self.internal = internal

    def process(self, ctx, record):
        return [record]

    def describe(self):
        return f"source {self.topic}" + (" (internal)" if self.internal else "")


class Filter(Step):
    kind = "filter"

    def __init__(self, name, predicate):
        super().__init__(name)
        self.predicate = predicate

    def process(self, ctx, record):
        return [record] if self.predicate(record.value) else []


class Apply(Step):
    kind = "apply"

    def __init__(self, name, function, expand=False):
        super().__init__(name)
        self.function = function
        self.expand = expand

    def process(self, ctx, record):
        result = self.function(record.value)
        if self.expand:
            return [record._replace(value=v) for v in result]
        return [record._replace(value=result)]

    def describe(self):
        return "flat_map" if self.expand else "apply"


class Update(Step):
    kind = "update"

    def __init__(self, name, function):
        super().__init__(name)
        self.function = function

    def process(self, ctx, record):
        self.function(record.value)
        return [record]


class Columns(Step):
    kind = "columns"

    def __init__(self, name, columns):
        super().__init__(name)
        self.columns = columns

    def process(self, ctx, record):
        value = record.value
        if isinstance(self.columns, list):
            return [record._replace(value={c: value[c] for c in self.columns})]
        return [record._replace(value=value[self.columns])]

    def describe(self):
        return f"columns {self.columns!r}"


class ToTopic(Step):
    """Produces each record to `topic` and passes it on unchanged."""
    kind = "to_topic"

    def __init__(self, name, topic, key_serializer, value_serializer, key_function=None):
        super().__init__(name)
        self.topic = topic
        self.key_serializer = key_serializer
        self.value_serializer = value_serializer
        self.key_function = key_function

    def process(self, ctx, record):
        key = record.key if self.key_function is None else key_bytes(self.key_function(record.value))
        ctx.produce(self.topic, self.key_serializer(key), self.value_serializer(record.value),
                    record.timestamp, record.headers)
        return [record]

    def describe(self):
        return f"to_topic {self.topic}"


class Repartition(Step):
    """group_by: re-keys each record and sends it through an internal topic, so every record of
    a new key reaches the task that owns that key's state. Passes nothing on directly."""
    kind = "group_by"

    def __init__(self, name, topic, key_function, encode):
        super().__init__(name)
        self.topic = topic
        self.key_function = key_function
        self.encode = encode

    def process(self, ctx, record):
        key = record.key if self.key_function is None else key_bytes(self.key_function(record.value))
        ctx.produce(self.topic, key, self.encode(record.value), record.timestamp, record.headers)
        return []

    def describe(self):
        return f"{'group_by' if self.key_function is not None else 'through'} -> {self.topic}"


# ---------------------------------------------------------------------- stateful

class State:
    """The state of one message key in one step's store: a dict of names to values (what
    `.apply(fn, stateful=True)` gives fn as its second argument)."""

    def __init__(self, task_state, store, key):
        self._task_state = task_state
        self._store = store
        self._key = key if key is not None else b""
        self._data = task_state.get(store, self._key, None)
        self._dirty = False

    def get(self, name: str, default: Any = None) -> Any:
        return default if self._data is None else self._data.get(name, default)

    def set(self, name: str, value: Any) -> None:
        if self._data is None:
            self._data = {}
        self._data[name] = value
        self._dirty = True

    def delete(self, name: str) -> None:
        if self._data is not None and name in self._data:
            del self._data[name]
            self._dirty = True

    def exists(self, name: str) -> bool:
        return self._data is not None and name in self._data

    def _save(self):
        if not self._dirty:
            return
        if self._data:
            self._task_state.put(self._store, self._key, self._data)
        else:
            self._task_state.delete(self._store, self._key)


class StatefulApply(Step):
    kind = "stateful"

    def __init__(self, name, function, mode):
        super().__init__(name)
        self.function = function
        self.mode = mode             # "apply", "flat_map", "update" or "filter"

    def stores(self):
        return [self.name]

    def process(self, ctx, record):
        state = State(ctx.state, self.name, record.key)
        result = self.function(record.value, state)
        state._save()
        if self.mode == "update":
            return [record]
        if self.mode == "filter":
            return [record] if result else []
        if self.mode == "flat_map":
            return [record._replace(value=v) for v in result]
        return [record._replace(value=result)]

    def describe(self):
        return f"{self.mode} (stateful, store {self.name})"


class Aggregate(Step):
    """A running aggregate per key; emits the new result on every record."""
    kind = "aggregate"

    def __init__(self, name, aggregator: Aggregator):
        super().__init__(name)
        self.aggregator = aggregator

    def stores(self):
        return [self.name]

    def process(self, ctx, record):
        key = record.key if record.key is not None else b""
        current = ctx.state.get(self.name, key, None)
        current = self.aggregator.initialize() if current is None else current
        current = self.aggregator.add(current, record.value, record.timestamp)
        ctx.state.put(self.name, key, current)
        return [record._replace(value=self.aggregator.result(current))]

    def describe(self):
        return f"{self.aggregator.describe()} (store {self.name})"


class WindowedAggregate(Step):
    """An aggregate per key and window. emit="current": the window's new result on every record;
    emit="final": one result when the window closes. A closed window's state is deleted either
    way; a record that reaches only closed windows is late: counted and dropped."""
    kind = "window"

    def __init__(self, name, window, aggregator: Aggregator, emit: str):
        super().__init__(name)
        self.window = window
        self.aggregator = aggregator
        self.emit = emit

    def stores(self):
        return [self.name]

    def _result(self, key, start, end, state, timestamp, headers):
        return Record(key, {"start": start, "end": end, "value": self.aggregator.result(state)}, timestamp, headers)

    def process(self, ctx, record):
        key = record.key if record.key is not None else b""
        if isinstance(self.window, w.Session):
            return self._process_session(ctx, key, record)
        if isinstance(self.window, w.Sliding):
            return self._process_sliding(ctx, key, record)
        outs, late = [], True
        for start, end in self.window.windows_of(record.timestamp):
            if w.is_closed(self.window, end, ctx.stream_time):
                continue
            late = False
            found = ctx.state.window_get(self.name, key, start)
            current = self.aggregator.initialize() if found is None else found[1]
            current = self.aggregator.add(current, record.value, record.timestamp)
            ctx.state.window_put(self.name, key, start, end, current)
            if self.emit == "current":
                outs.append(self._result(record.key, start, end, current, record.timestamp, record.headers))
        if late:
            ctx.metrics.setdefault(self.name, [0, 0, 0])[2] += 1
        return outs

    def _process_session(self, ctx, key, record):
        t = record.timestamp
        if t + self.window.grace_ms < ctx.stream_time:
            ctx.metrics.setdefault(self.name, [0, 0, 0])[2] += 1
            return []
        gap = self.window.gap_ms
        start = end = t
        current = self.aggregator.add(self.aggregator.initialize(), record.value, t)
        for s, e, v in ctx.state.windows_touching(self.name, key, t - gap, t + gap):
            current = self.aggregator.merge(v, current)
            start, end = min(start, s), max(end, e)
            ctx.state.window_delete(self.name, key, s, e)
        ctx.state.window_put(self.name, key, start, end, current)
        if self.emit == "current":
            return [self._result(record.key, start, end, current, t, record.headers)]
        return []

    def _process_sliding(self, ctx, key, record):
        """The record joins every open window of its key that contains it, and opens its own
        from the key's recent records (a buffer of those that an open window may still need)."""
        t = record.timestamp
        own_start, own_end = self.window.window_of(t)
        if w.is_closed(self.window, own_end, ctx.stream_time):
            ctx.metrics.setdefault(self.name, [0, 0, 0])[2] += 1
            return []
        buffer = ctx.state.get(self.name, key, None) or []
        horizon = ctx.stream_time - self.window.size_ms - self.window.grace_ms - 1
        buffer = [(ts, v) for ts, v in buffer if ts >= horizon]
        buffer.append((t, record.value))
        ctx.state.put(self.name, key, buffer)
        outs = []
        for start, end, current in ctx.state.windows_touching(self.name, key, t + 1, t):
            if start == own_start or w.is_closed(self.window, end, ctx.stream_time):
                continue
            current = self.aggregator.add(current, record.value, t)
            ctx.state.window_put(self.name, key, start, end, current)
            if self.emit == "current":
                outs.append(self._result(record.key, start, end, current, t, record.headers))
        found = ctx.state.window_get(self.name, key, own_start)
        if found is not None:
            current = self.aggregator.add(found[1], record.value, t)
        else:
            current = self.aggregator.initialize()
            for ts, v in sorted(buffer, key=lambda item: item[0]):
                if own_start <= ts <= t:
                    current = self.aggregator.add(current, v, ts)
        ctx.state.window_put(self.name, key, own_start, own_end, current)
        if self.emit == "current":
            outs.append(self._result(record.key, own_start, own_end, current, t, record.headers))
        return outs

    def _forget_old_records(self, ctx, key):
        horizon = ctx.stream_time - self.window.size_ms - self.window.grace_ms - 1
        buffer = [(ts, v) for ts, v in (ctx.state.get(self.name, key, None) or []) if ts >= horizon]
        if buffer:
            ctx.state.put(self.name, key, buffer)
        else:
            ctx.state.delete(self.name, key)

    def on_stream_time(self, ctx):
        if isinstance(self.window, w.Session):
            last_closed_end = ctx.stream_time - self.window.gap_ms - self.window.grace_ms - 1
        else:
            last_closed_end = ctx.stream_time - self.window.grace_ms
        outs = []
        for key, start, end, state in ctx.state.windows_ending_by(self.name, last_closed_end):
            if self.emit == "final":
                timestamp = end if isinstance(self.window, w.Session) else end - 1
                outs.append(self._result(key or None, start, end, state, timestamp, None))
            ctx.state.window_delete(self.name, key, start, end)
            if isinstance(self.window, w.Sliding):
                self._forget_old_records(ctx, key)
        return outs

    def describe(self):
        return f"{self.aggregator.describe()} over {self.window.describe()}, emit {self.emit} (store {self.name})"


class StreamJoin(Step):
    """A windowed join of two streams by key: how="inner", "left" or "outer". Both sides reach
    it through one internal topic (each record tagged "L" or "R", keyed as it was), so a key's
    records of both sides meet in one task whatever the partitioning of the inputs.

    Each record is joined with the other side's buffered records of its key at most within_ms
    apart in event time, then buffered itself until its window closes: stream time passes its
    time + within_ms + grace_ms. The buffer remembers, per record, whether it found a partner
    (at its arrival, or since: a partner arriving later marks it). A record of an outer side
    (left of a left join, both sides of an outer join) whose window closes with no partner is
    emitted then, as merge(value, None) or merge(None, value) at its own timestamp. Not before:
    a partner may arrive out of order until then, and a record that found one must never also
    come out unmatched (Kafka Streams' left and outer joins since 3.1).

    Store: a window entry per (side byte + key, record time), start = end = that time, whose
    value is [(value, matched), ...] in arrival order. Buffer and flags live in the store, so
    its changelog carries them through a crash: restoring neither loses a pending unmatched
    record nor emits one twice."""
    kind = "join_stream"
    HOWS = ("inner", "left", "outer")

    def __init__(self, name, within_ms, grace_ms, merge, how="inner"):
        super().__init__(name)
        self.within_ms = within_ms
        self.grace_ms = grace_ms
        self.merge = merge
        self.how = how
        # The sides whose records come out even without a partner.
        self.outer_sides = {"inner": set(), "left": {b"L"}, "outer": {b"L", b"R"}}[how]

    def stores(self):
        return [self.name]

    def process(self, ctx, record):
        side, value = record.value
        t = record.timestamp
        if t + self.within_ms + self.grace_ms < ctx.stream_time:
            ctx.metrics.setdefault(self.name, [0, 0, 0])[2] += 1
            return []
        key = record.key if record.key is not None else b""
        other = b"R" if side == "L" else b"L"
        outs = []
        for other_t, _, buffered in ctx.state.windows_touching(self.name, other + key, t - self.within_ms,
                                                               t + self.within_ms):
            for other_value, _ in buffered:
                left, right = (value, other_value) if side == "L" else (other_value, value)
                outs.append(Record(record.key, self.merge(left, right), max(t, other_t), record.headers))
            if other in self.outer_sides and not all(matched for _, matched in buffered):
                ctx.state.window_put(self.name, other + key, other_t, other_t, [(v, True) for v, _ in buffered])
        mine = side.encode() + key
        found = ctx.state.window_get(self.name, mine, t)
        ctx.state.window_put(self.name, mine, t, t, (found[1] if found else []) + [(value, bool(outs))])
        return outs

    def on_stream_time(self, ctx):
        """Forget the records whose window closed; emit those of an outer side that never matched
        (oldest first; with no headers, as a closed window's final result)."""
        outs = []
        for key, t, _, buffered in ctx.state.windows_ending_by(
                self.name, ctx.stream_time - self.within_ms - self.grace_ms - 1):
            side = key[:1]
            if side in self.outer_sides:
                for value, matched in buffered:
                    if not matched:
                        left, right = (value, None) if side == b"L" else (None, value)
                        outs.append(Record(key[1:] or None, self.merge(left, right), t, None))
            ctx.state.window_delete(self.name, key, t, t)
        return outs

    def describe(self):
        return (f"join_stream ({self.how}) within {self.within_ms} ms, grace {self.grace_ms} ms "
                f"(store {self.name})")


class TableJoin(Step):
    """Joins each record with its key's current row in a table: how="inner" drops records
    without a row, "left" passes them with None. A global table (every partition, kept by every
    worker) is looked up by the record's key or on(value); a co-partitioned table
    (streams/ktable.py) by the record's key, in the task's own partition of it."""
    kind = "join_table"

    def __init__(self, name, table, on, how, merge):
        super().__init__(name)
        self.table = table
        self.on = on
        self.how = how
        self.merge = merge

    def process(self, ctx, record):
        lookup = record.key if self.on is None else key_bytes(self.on(record.value))
        row = self.table.lookup(ctx, lookup)
        if row is None and self.how == "inner":
            return []
        return [record._replace(value=self.merge(record.value, row))]

    def describe(self):
        return f"join_table {self.table.topic} ({self.how}, {self.table.describe()})"
