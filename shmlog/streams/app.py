"""App: a stream-processing application — its topology, its topics, and running it.

    app = App({"bootstrap.servers": broker.bootstrap_servers, "application.id": "positions",
               "processing.guarantee": "exactly_once"})
    sdf = app.stream("trades")                          # values JSON-decoded
    sdf = sdf.group_by("symbol").tumbling_window(60_000).agg(notional=Sum("notional"), qty=Sum("qty")).final()
    sdf.to_topic("vwap")
    app.run(workers=2)

Its config is a client config (bootstrap.servers and any consumer/producer settings the
workers should use) plus Kafka Streams' own keys:
    application.id          the consumer group, and the prefix of every internal topic (required)
    processing.guarantee    at_least_once (default) | exactly_once (exactly_once_v2 is an alias)
    state.dir               where tasks keep their local state (default /tmp/shmlog-streams)

Internal topics, created at start: `<application.id>-repartition-<name>` for each group_by
(as many partitions as the topic it re-keys, or as the co-partitioned table joined below it),
`<application.id>-<store>-changelog` for each store (compacted; as many partitions as the
input of its step). Output topics that do not exist are created with the partition count of
their step's input. A co-partitioned table (app.ktable) has no changelog topic: its own topic
is its store's changelog.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from typing import Any

from shmlog.streams import steps as s
from shmlog.streams.dataframe import StreamingDataFrame
from shmlog.streams.ktable import KTable
from shmlog.streams.serde import deserializer

STREAMS_KEYS = {"application.id", "processing.guarantee", "state.dir"}
GUARANTEES = {"at_least_once": "at_least_once", "exactly_once": "exactly_once", "exactly_once_v2": "exactly_once"}


class GlobalTable:
    """Every partition of a (usually compacted) topic, read by every worker into memory: the
    latest value per key, a None value deleting the key (Kafka Streams' GlobalKTable)."""

    def __init__(self, topic: str, value_deserializer: Any) -> None:
        self.topic = topic
        self.value_deserializer = value_deserializer
        self.rows: dict[bytes | None, Any] = {}

    def __getstate__(self):
        return {**self.__dict__, "rows": {}}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = self._decode(value)

    def lookup(self, ctx, key: bytes | None) -> Any:
        return self.rows.get(key)

    def describe(self) -> str:
        return "global table"

    @property
    def _decode(self):
        decode = self.__dict__.get("_decoder")
        if decode is None:
            decode = self.__dict__["_decoder"] = deserializer(self.value_deserializer, self.topic, "value")
        return decode


class App:
    def __init__(self, conf: dict[str, Any]) -> None:
        conf = dict(conf)
        if not conf.get("application.id"):
            raise ValueError("shmlog.streams.App needs 'application.id' in its config (the group and the "
                             "prefix of its internal topics)")
        if "bootstrap.servers" not in conf:
            raise ValueError("shmlog.streams.App needs 'bootstrap.servers' in its config")
        guarantee = conf.get("processing.guarantee", "at_least_once")
        if guarantee not in GUARANTEES:
            raise ValueError(f"processing.guarantee must be one of {sorted(GUARANTEES)}, not {guarantee!r}")
        self.application_id = str(conf["application.id"])
        self.processing_guarantee = GUARANTEES[guarantee]
        self.state_dir = os.path.join(conf.get("state.dir") or os.path.join(tempfile.gettempdir(), "shmlog-streams"),
                                      self.application_id)
        self.client_conf = {k: v for k, v in conf.items() if k not in STREAMS_KEYS}
        self.sources: list[s.Source] = []
        self.tables: list[GlobalTable] = []
        self.ktables: list[KTable] = []
        self._output_topics: set[str] = set()
        self._names: dict[str, int] = {}
        self._used_names: set[str] = set()
        self._frozen = False

    # ------------------------------------------------------------------ building

    def stream(self, topic: str, value_deserializer: Any = "json",
               timestamp_extractor: Callable[..., int] | None = None) -> StreamingDataFrame:
        """A stream of topic's records: keys stay bytes (they decide partitions and state), values
        go through value_deserializer. Event time is the record's timestamp, or
        timestamp_extractor(value, headers, timestamp_ms, timestamp_type) -> ms."""
        self._check_building()
        self._check_not_a_ktable_topic(topic)
        name = f"source-{topic}" if f"source-{topic}" not in self._used_names else None
        source = s.Source(self._step_name("source", name), topic,
                          None, deserializer(value_deserializer, topic, "value"), timestamp_extractor)
        self.sources.append(source)
        return StreamingDataFrame(self, source)

    def table(self, topic: str, value_deserializer: Any = "json") -> GlobalTable:
        """A global table of topic for join_table()."""
        self._check_building()
        table = GlobalTable(topic, value_deserializer)
        self.tables.append(table)
        return table

    def ktable(self, topic: str, value_deserializer: Any = "json", name: str | None = None) -> KTable:
        """A co-partitioned table of topic for join_table() (Kafka Streams' KTable): each task
        keeps only its own partition of it, in the store `name` (default table-<topic>) whose
        changelog is topic itself. topic must have the partition count of the stream joining it."""
        self._check_building()
        if any(src.topic == topic for src in self.sources):
            raise ValueError(f"topic {topic!r} is a stream of application {self.application_id!r}: it cannot also "
                             f"be a co-partitioned table (the group commits the table's read positions)")
        if any(t.topic == topic for t in self.ktables):
            raise ValueError(f"topic {topic!r} is a co-partitioned table of application {self.application_id!r} "
                             f"already: join that one")
        table = KTable(topic, value_deserializer, self._step_name("table", name or f"table-{topic}"))
        self.ktables.append(table)
        return table

    def _check_ktable_join(self, step: s.Step, table: KTable, on) -> None:
        """A co-partitioned table is looked up in the task's own partition of it, so by the key
        that chose the stream record's partition, and from the tasks of one stream topic only
        (the group commits one read position per table partition)."""
        if table not in self.ktables:
            raise ValueError(f"co-partitioned table {table.topic!r} belongs to another application")
        if on is not None:
            raise ValueError(f"join_table with co-partitioned table {table.topic!r} looks up the record's key (its "
                             f"task holds only that key's partition of the table): re-key with group_by() first, "
                             f"or join a global table (app.table) for on=")
        topic = next(src.topic for src in self.sources if any(x is step for x in _walk(src)))
        for other in self.ktable_streams()[table.topic]:
            if other != topic:
                raise ValueError(f"co-partitioned table {table.topic!r} is joined by stream {other!r} already, and "
                                 f"cannot also be joined by stream {topic!r}: a table partition is kept by the task "
                                 f"of one stream partition")

    def _check_not_a_ktable_topic(self, topic: str) -> None:
        if any(t.topic == topic for t in self.ktables):
            raise ValueError(f"topic {topic!r} is a co-partitioned table of application {self.application_id!r}: "
                             f"it cannot also be a stream (the group commits the table's read positions)")

    def _repartition(self, sdf: StreamingDataFrame, key_function, name: str) -> StreamingDataFrame:
        topic = f"{self.application_id}-repartition-{name}"
        if any(src.topic == topic for src in self.sources):
            raise ValueError(f"group_by name {name!r} is used twice: each group_by needs its own name")
        sdf._then(s.Repartition(self._step_name("group_by", f"group_by-{name}"), topic, key_function,
                                lambda value: pickle.dumps(value, protocol=5)))
        name = f"source-{topic}" if f"source-{topic}" not in self._used_names else None
        source = s.Source(self._step_name("source", name), topic, None, pickle.loads, None,
                          internal=True)
        self.sources.append(source)
        return StreamingDataFrame(self, source)

    def _join_streams(self, left: StreamingDataFrame, right: StreamingDataFrame, within_ms: int, grace_ms: int,
                      merge, name: str | None, how: str) -> StreamingDataFrame:
        step_name = self._step_name("join", name)
        topic = f"{self.application_id}-join-{step_name}"
        left._then(s.Repartition(self._step_name("to-join", f"{step_name}-left"), topic, None,
                                 lambda value: pickle.dumps(("L", value), protocol=5)))
        right._then(s.Repartition(self._step_name("to-join", f"{step_name}-right"), topic, None,
                                  lambda value: pickle.dumps(("R", value), protocol=5)))
        source = s.Source(self._step_name("source", f"source-{topic}"), topic, None, pickle.loads, None,
                          internal=True)
        source.children.append(s.StreamJoin(step_name, within_ms, grace_ms, merge, how))
        self.sources.append(source)
        return StreamingDataFrame(self, source.children[0])

    def _step_name(self, kind: str, name: str | None) -> str:
        if name is None:
            self._names[kind] = self._names.get(kind, 0) + 1
            name = f"{kind}-{self._names[kind]}"
        if name in self._used_names:
            raise ValueError(f"step name {name!r} is used twice in application {self.application_id!r}")
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"step name {name!r}: use letters, digits, '.', '_' and '-' (it names topics and stores)")
        self._used_names.add(name)
        return name

    def _check_building(self) -> None:
        if self._frozen:
            raise RuntimeError("the topology cannot change once the application runs")

    # ------------------------------------------------------------------ what the topology is

    def changelog_topic(self, store: str) -> str:
        return f"{self.application_id}-{store}-changelog"

    def source_topics(self) -> list[str]:
        return sorted({src.topic for src in self.sources})

    def stores_of(self, topic: str) -> list[str]:
        """The stores of the steps below every source of topic (the task's stores)."""
        found = []
        for src in self.sources:
            if src.topic == topic:
                found += [store for step in _walk(src) for store in step.stores()]
        return found

    def ktables_of(self, topic: str) -> list[KTable]:
        """The co-partitioned tables joined below the sources of topic (the task keeps its
        partition of each)."""
        found: list[KTable] = []
        for src in self.sources:
            if src.topic == topic:
                found += [step.table for step in _walk(src)
                          if isinstance(step, s.TableJoin) and isinstance(step.table, KTable)
                          and step.table not in found]
        return found

    def ktable_streams(self) -> dict[str, list[str]]:
        """Table topic -> the topics of the streams joining it."""
        joined: dict[str, list[str]] = {t.topic: [] for t in self.ktables}
        for src in self.sources:
            for table in self.ktables_of(src.topic):
                if src.topic not in joined[table.topic]:
                    joined[table.topic].append(src.topic)
        return joined

    def describe(self) -> str:
        """The topology as text: sources, steps, stores, internal topics."""
        lines = [f"application {self.application_id} ({self.processing_guarantee})"]
        for i, src in enumerate(self.sources):
            lines.append(f"sub-topology {i}: {src.describe()}")
            _describe(src, lines, "  ")
        for store in (st for src in self.sources for step in _walk(src) for st in step.stores()):
            lines.append(f"store {store}: changelog {self.changelog_topic(store)} (compacted)")
        for table in self.tables:
            lines.append(f"global table {table.topic}")
        for ktable in self.ktables:
            streams = ", ".join(self.ktable_streams()[ktable.topic]) or "no stream"
            lines.append(f"table {ktable.topic}: co-partitioned with {streams}, store {ktable.store}: "
                         f"changelog {ktable.topic} (the table's topic)")
        return "\n".join(lines)

    # ------------------------------------------------------------------ running

    def setup_topics(self, timeout_s: float = 30.0) -> None:
        """Create the internal and missing output topics (idempotent)."""
        from shmlog.streams.topics import ensure_topics
        ensure_topics(self, timeout_s)

    def runner(self, workers: int = 1, batch_size: int = 1000, max_restarts: int = 100):
        """The worker processes, not yet started (a shmlog.pipeline.Pipeline: start(), stop(),
        join(), wait_ready(), stats(), worker_pids())."""
        from shmlog.streams.runner import StreamsRunner
        self._frozen = True
        self.setup_topics()
        return StreamsRunner(self, workers=workers, batch_size=batch_size, max_restarts=max_restarts)

    def run(self, workers: int = 1, batch_size: int = 1000, until: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Run until Ctrl-C, SIGTERM or until() is true; returns the runner's stats()."""
        return self.runner(workers, batch_size).run(until)


def _walk(step: s.Step):
    yield step
    for child in step.children:
        yield from _walk(child)


def _describe(step: s.Step, lines: list[str], indent: str) -> None:
    for child in step.children:
        lines.append(f"{indent}{child.name}: {child.describe()}")
        _describe(child, lines, indent + "  ")
