"""The mirror: copies topics from a source cluster to a target cluster, either of which is a
shmlog broker or a Kafka cluster (shmlog.clients decides by bootstrap.servers).

Each source partition goes to the same partition of the target topic (created with the same
partition count when missing; a target topic with fewer partitions is refused), so key ->
partition placement is kept; key, value, headers and timestamp are copied, and the order
within a partition. Progress is checkpointed in the target (shmlog.bridge.syncs: one sync
record per partition per batch), and a restart resumes each partition at its checkpoint.

Exactly-once (the default when the target supports transactions, which shmlog and Kafka do):
every batch is one transaction of the target (transactional.id `mirror.<name>`): its records
and its sync records commit together, so the target topic read with read_committed holds
each source record exactly once whatever moment the mirror is killed at; a new mirror
instance fences the old one and aborts what it left open. The source is read read_committed.
At-least-once (`exactly_once=False`): records are flushed, then their syncs; a kill between
the two copies that batch again on restart.

Consumer-group offsets are translated through the syncs (the rule is in syncs.py) and
committed to the same group on the target when they move it forward (MirrorMaker 2's
sync.group.offsets), every `group_sync_interval_s` for the groups matching `groups`.

Topic configs set on a source topic are copied to its target topic when the mirror creates it,
and again every `sync_topic_configs_interval_s` (MirrorMaker 2's sync.topic.configs; which
keys, in topic_configs.py).

Tasks (MirrorMaker 2's tasks.max): `tasks` Mirror instances, `task` = 0..tasks-1, each in a
process of its own (`shmlog mirror run --tasks N`), share the copying. Each owns the source
partitions owned_by() gives it, always the same ones while `tasks` stays the same (a partition
is never written by two tasks: its order holds), and has its own transactional.id
(`mirror.<name>.<task>`; `mirror.<name>` with one task). They share the sync topic; task 0
alone syncs topic configs and group offsets, reading the other tasks' syncs before each group
sync.

Source topics are listed again every `refresh_topics_interval_s` (MirrorMaker 2's
refresh.topics.interval.seconds): a topic created later, or partitions added, are mirrored
from then on; until a first topic matches, the mirror waits for one.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from shmlog import clients
from shmlog.bridge import groups as group_sync
from shmlog.bridge import topic_configs
from shmlog.bridge.reading import ReadAhead, read_batch
from shmlog.bridge.syncs import SyncLog, encode, runs_of, sync_topic
from shmlog.bridge.syncs import decode as decode_sync

log = logging.getLogger("shmlog.mirror")

TIMESTAMP_NOT_AVAILABLE = 0
LOAD_TIMEOUT_S = 60.0
FLUSH_TIMEOUT_S = 60.0
NO_TOPIC_REFRESH_S = 0.5    # how often a mirror with nothing to copy yet looks for its topics


class Deliveries:
    """The delivery reports of one target partition's records in a batch."""

    def __init__(self, mirror: str, partition: str) -> None:
        self.where = f"mirror {mirror}: {partition}"
        self.offsets: list[int] = []
        self.errors: list[Any] = []

    def report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.offsets.append(msg.offset())

    def downstream(self, n: int) -> Sequence[int]:
        """The target offset of each of the n records, in produce order.

        One producer appends a partition's records in the order it produced them (idempotence
        keeps that order through retries), so the i-th smallest reported offset is the i-th
        record's. With reports from the two ends only: n records that span exactly n offsets
        sit one after the other; a wider span means another producer wrote between them, and
        each record in the middle gets the lowest offset it can have (first + i), so a group
        offset translated into that span re-reads a few records, never skips one."""
        if self.errors:
            raise RuntimeError(f"{self.where}: records not delivered: {self.errors[0]}")
        offsets = sorted(self.offsets)
        if len(offsets) == n:
            return offsets
        if len(offsets) != 2 or offsets[1] - offsets[0] < n - 1:
            raise RuntimeError(f"{self.where}: delivery reports at {offsets} for {n} records")
        first, last = offsets
        if last - first == n - 1:
            return range(first, last + 1)
        return [*range(first, first + n - 1), last]


def owned_by(topic: str, partition: int, tasks: int) -> int:
    """The task that copies this source partition: the topic's partitions spread round-robin
    from a start its name picks, the same in every process and run."""
    return (partition + zlib.crc32(topic.encode())) % tasks


def topic_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """Names, or ^regexes (as subscribe() takes them); internal topics never match."""
    exact = {p for p in patterns if not p.startswith("^")}
    try:
        regexes = [re.compile(p) for p in patterns if p.startswith("^")]
    except re.error as exc:
        raise ValueError(f"topics: bad regex: {exc}") from None

    def matches(name: str) -> bool:
        if name.startswith("_") or (name.startswith("mirror.") and name.endswith(".internal")):
            return False
        return name in exact or any(r.fullmatch(name) for r in regexes)
    return matches


class Mirror:
    """source/target: client configs with bootstrap.servers (extra keys go to every client of
    that side). topics: names and ^regexes. target_prefix: prepended to target topic names
    (MirrorMaker 2's DefaultReplicationPolicy uses "<source alias>."; the default "" is its
    IdentityReplicationPolicy, what a migration wants)."""

    def __init__(self, source: dict[str, Any], target: dict[str, Any], topics: list[str], name: str = "mirror",
                 exactly_once: bool = True, target_prefix: str = "", groups: list[str] | None = None,
                 group_sync_interval_s: float = 5.0, batch_size: int = 10_000,
                 refresh_topics_interval_s: float = 10.0, sync_topic_configs: bool = True,
                 sync_topic_configs_interval_s: float = 600.0, tasks: int = 1, task: int = 0) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError(f"mirror name {name!r}: use letters, digits, '.', '_' and '-'")
        if not topics:
            raise ValueError("topics: give at least one topic name or ^regex")
        if not (isinstance(tasks, int) and tasks >= 1 and isinstance(task, int) and 0 <= task < tasks):
            raise ValueError(f"task {task!r} of {tasks!r}: tasks must be >= 1 and task in 0..tasks-1")
        self.source, self.target = dict(source), dict(target)
        self.src_lib, self.tgt_lib = clients.library(self.source), clients.library(self.target)
        self.matches = topic_matcher(list(topics))
        self.name = name
        self.exactly_once = exactly_once
        self.target_prefix = target_prefix
        self.group_patterns = list(groups or [])
        self.group_sync_interval_s = group_sync_interval_s
        self.batch_size = batch_size
        self.refresh_topics_interval_s = refresh_topics_interval_s
        self.tasks, self.task = tasks, task
        self.sync_configs = sync_topic_configs and task == 0
        self.sync_topic_configs_interval_s = sync_topic_configs_interval_s
        self.target_is_kafka = clients.is_kafka(self.target)
        self._dropped_told: set[tuple[str, tuple[str, ...]]] = set()   # config keys not copied, logged once
        self.sync_topic = sync_topic(name)
        self.syncs = SyncLog()
        self._syncs_read_to = 0                   # the sync topic is read up to here
        self.partitions: dict[str, int] = {}      # mirrored source topic -> partition count
        self.owned: list[tuple[str, int]] = []    # the source partitions this task copies
        self.copied = 0                           # records copied by this instance
        self.stopping = threading.Event()
        self._consumer = self._producer = None
        self._read_ahead = ReadAhead(None, self.src_lib, batch_size)

    def target_topic(self, topic: str) -> str:
        return self.target_prefix + topic

    # ------------------------------------------------------------------ setup

    def _topics(self):
        admin = self.src_lib.AdminClient(self.source)
        md = admin.list_topics(timeout=30)
        return {name: len(t.partitions) for name, t in md.topics.items() if self.matches(name)}

    def _described(self, conf, topics):
        """{topic: {key: ConfigEntry}} of describe_configs on the cluster of conf."""
        if not topics:
            return {}
        types = clients.admin_types(conf)
        admin = clients.library(conf).AdminClient(conf)
        futures = admin.describe_configs([types.ConfigResource("topic", t) for t in topics])
        return {res.name: future.result() for res, future in futures.items()}

    def _copied_configs(self, topics):
        """{source topic: {key: value}} of the configs its target topic takes (topic_configs.py)."""
        if not self.sync_configs:
            return {topic: {} for topic in topics}
        out = {}
        for topic, entries in self._described(self.source, sorted(topics)).items():
            out[topic], dropped = topic_configs.copied(entries, self.target_is_kafka)
            if dropped and (topic, tuple(dropped)) not in self._dropped_told:
                self._dropped_told.add((topic, tuple(dropped)))
                log.info("mirror %s: %s: not copying %s (the target does not take them)", self.name, topic,
                         ", ".join(dropped))
        return out

    def _ensure_target_topics(self, wanted):
        admin = self.tgt_lib.AdminClient(self.target)
        existing = {name: len(t.partitions) for name, t in admin.list_topics(timeout=30).topics.items()}
        missing = [topic for topic in wanted if self.target_topic(topic) not in existing]
        configs = self._copied_configs(missing)
        new = []
        for topic, count in wanted.items():
            have = existing.get(self.target_topic(topic))
            if have is None:
                new.append(self.tgt_lib.NewTopic(self.target_topic(topic), count, config=configs[topic]))
            elif have < count:
                raise ValueError(f"target topic {self.target_topic(topic)!r} has {have} partitions, source topic "
                                 f"{topic!r} has {count}: the mirror keeps each record's partition, so the target "
                                 f"needs at least as many (add partitions there first)")
        if self.sync_topic not in existing:
            new.append(self.tgt_lib.NewTopic(self.sync_topic, 1))
        for future in admin.create_topics(new).values() if new else ():
            try:
                future.result()
            except self.tgt_lib.KafkaException as exc:
                if exc.args[0].code() != self.tgt_lib.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def _load_syncs(self):
        """Read the sync topic from where this instance stopped last (its start, the first time)
        to its end (read_committed: syncs of aborted batches never count)."""
        lib = self.tgt_lib
        consumer = lib.Consumer({**self.target, "group.id": f"mirror.{self.name}.loader",
                                 "enable.auto.commit": False, "isolation.level": "read_committed"})
        try:
            tp = lib.TopicPartition(self.sync_topic, 0)
            _, high = consumer.get_watermark_offsets(tp, timeout=30)
            consumer.assign([lib.TopicPartition(self.sync_topic, 0, self._syncs_read_to or lib.OFFSET_BEGINNING)])
            deadline = time.monotonic() + LOAD_TIMEOUT_S
            while high > 0:
                position = consumer.position([tp])[0].offset
                if position >= 0:
                    self._syncs_read_to = position
                # A Fetch response's high watermark once one came (Tansu's ListOffsets can answer
                # below the log end: its last batch's base offset + 1).
                high = max(high, consumer.get_watermark_offsets(tp, cached=True)[1])
                if position >= high:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mirror {self.name}: could not read {self.sync_topic} to offset {high} "
                                       f"in {LOAD_TIMEOUT_S} s (at {position})")
                for msg in consumer.consume(10_000, 0.5):
                    if msg.error() is not None:
                        continue
                    try:
                        self.syncs.add(*decode_sync(msg.key(), msg.value()))
                    except ValueError as exc:
                        log.warning("%s offset %d: %s (skipped)", self.sync_topic, msg.offset(), exc)
        finally:
            consumer.close()

    def start(self) -> None:
        producer_conf = {**self.target, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        if self.exactly_once:
            producer_conf["transactional.id"] = f"mirror.{self.name}" + (f".{self.task}" if self.tasks > 1 else "")
        self._producer = self.tgt_lib.Producer(producer_conf)
        if self.exactly_once:
            self._producer.init_transactions(60)   # fences an earlier instance, aborts what it left open
        self._ensure_target_topics({})
        self._load_syncs()
        self._consumer = self.src_lib.Consumer({
            **self.source, "group.id": f"mirror.{self.name}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
        self._read_ahead.consumer = self._consumer
        self.refresh_topics()

    def refresh_topics(self) -> bool:
        """Pick up source topics that appeared (or grew partitions) since the last look; True if any."""
        found = self._topics()
        if found == self.partitions:
            return False
        self._ensure_target_topics(found)
        self.partitions = found
        self._assign()
        return True

    def _assign(self):
        lib = self.src_lib
        self._read_ahead.drop()
        self.owned = [(t, p) for t, count in sorted(self.partitions.items()) for p in range(count)
                      if owned_by(t, p, self.tasks) == self.task]
        self._consumer.assign([
            lib.TopicPartition(t, p, max(self.syncs.next_upstream(t, p), 0) if self.syncs.next_upstream(t, p) >= 0
                               else lib.OFFSET_BEGINNING)
            for t, p in self.owned])

    # ------------------------------------------------------------------ copying

    def step(self, timeout: float = 0.2) -> int:
        """Copy one batch of what the source has; returns how many records were copied."""
        if not self.owned:
            self.stopping.wait(timeout)   # nothing to copy until a matching source topic (of this task's) appears
            return 0
        batch = self._read_ahead.take() or read_batch(self._consumer, self.src_lib, self.batch_size, timeout)
        if not batch.count:
            return 0
        by_partition, positions = batch.by_partition, batch.positions
        producer = self._producer
        if self.exactly_once:
            producer.begin_transaction()
        try:
            deliveries = {(t, p): self._produce(self.target_topic(t), p, part) for (t, p), part in by_partition.items()}
            self._read_ahead.start(timeout)   # the next batch, read while this one is flushed and committed
            if producer.flush(FLUSH_TIMEOUT_S) != 0:
                raise RuntimeError(f"mirror {self.name}: records not delivered in {FLUSH_TIMEOUT_S} s")
            batch_syncs = []
            for (t, p), part in sorted(by_partition.items()):
                ups = [m.offset() for m in part]
                downs = deliveries[(t, p)].downstream(len(part))
                if ups[-1] - ups[0] == len(ups) - 1 and downs[-1] - downs[0] == len(downs) - 1:
                    runs = [[ups[0], downs[0], len(ups)]]     # both sides contiguous: one run
                else:
                    runs = runs_of(list(zip(ups, downs)))
                next_upstream = max(positions.get((t, p), -1), ups[-1] + 1)
                key, value = encode(t, p, runs, next_upstream)
                producer.produce(self.sync_topic, key=key, value=value, partition=0)
                batch_syncs.append((t, p, runs, next_upstream))
            if self.exactly_once:
                producer.commit_transaction(FLUSH_TIMEOUT_S)
            elif producer.flush(FLUSH_TIMEOUT_S) != 0:
                raise RuntimeError(f"mirror {self.name}: offset syncs not delivered in {FLUSH_TIMEOUT_S} s")
        except Exception:
            if self.exactly_once:
                self._abort_and_rewind()
            raise
        for sync in batch_syncs:
            self.syncs.add(*sync)
        self.copied += batch.count
        return batch.count

    def _produce(self, target: str, partition: int, part: list[Any]) -> Deliveries:
        """Produce one source partition's records of a batch, in their order, to the same
        partition of the target topic.

        Exactly-once, only the first and the last record ask for a delivery report: one that
        fails makes commit_transaction fail, so a committed batch holds every record, and the
        two ends place the others (Deliveries.downstream). At-least-once, every record asks,
        since nothing else would notice one that failed."""
        deliveries = Deliveries(self.name, f"{target}-{partition}")
        report, middle = deliveries.report, (None if self.exactly_once else deliveries.report)
        producer = self._producer
        produce = producer.produce
        last = len(part) - 1
        for i, m in enumerate(part):
            kind, ts = m.timestamp()
            value, key, headers = m.value(), m.key(), m.headers()
            timestamp = ts if kind != TIMESTAMP_NOT_AVAILABLE and ts > 0 else 0
            on_delivery = report if i == 0 or i == last else middle
            while True:
                try:
                    produce(target, value, key, partition, on_delivery=on_delivery, timestamp=timestamp,
                            headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
        return deliveries

    def _abort_and_rewind(self):
        try:
            self._producer.abort_transaction(FLUSH_TIMEOUT_S)
        except Exception as exc:   # fenced or fatal: the next instance's init_transactions aborts it
            log.warning("mirror %s: abort failed: %s", self.name, exc)
        self._assign()

    def sync_topic_configs(self) -> list[tuple[str, str, str]]:
        """Set on each target topic the copied configs whose value differs there; returns
        [(source topic, key, value)] of what was set."""
        if not self.sync_configs or not self.partitions:
            return []
        wanted = self._copied_configs(list(self.partitions))
        on_target = self._described(self.target, [self.target_topic(t) for t in sorted(self.partitions)])
        types = clients.admin_types(self.target)
        resources, moved = [], []
        for topic in sorted(self.partitions):
            diff = topic_configs.changed(wanted[topic], on_target.get(self.target_topic(topic), {}))
            if diff:
                resources.append(types.ConfigResource("topic", self.target_topic(topic), incremental_configs=[
                    types.ConfigEntry(key, value, incremental_operation=types.AlterConfigOpType.SET)
                    for key, value in sorted(diff.items())]))
                moved += [(topic, key, value) for key, value in sorted(diff.items())]
        if resources:
            admin = self.tgt_lib.AdminClient(self.target)
            for future in admin.incremental_alter_configs(resources).values():
                future.result()
            log.info("mirror %s: topic configs copied: %s", self.name,
                     ", ".join(f"{t}: {k}={v}" for t, k, v in moved))
        return moved

    def sync_groups(self) -> list[tuple[str, str, int, int]]:
        """Translate and commit the offsets of the groups matching `groups`; returns what moved."""
        if not self.group_patterns:
            return []
        return group_sync.sync(self.src_lib, self.source, self.tgt_lib, self.target, self.group_patterns,
                               self.syncs, {t: self.target_topic(t) for t in self.partitions},
                               exclude={f"mirror.{self.name}", f"mirror.{self.name}.loader"})

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """start(), then copy until stop() (or until() returns true), syncing group offsets on the way."""
        if self._consumer is None:
            self.start()
        next_group_sync = next_refresh = next_config_sync = time.monotonic()
        while not self.stopping.is_set() and not (until is not None and until()):
            if self.sync_configs and self.partitions and time.monotonic() >= next_config_sync:
                try:
                    self.sync_topic_configs()
                except Exception as exc:   # the copy goes on; the next round tries again
                    log.warning("mirror %s: topic config sync failed: %s", self.name, exc)
                next_config_sync = time.monotonic() + self.sync_topic_configs_interval_s
            if time.monotonic() >= next_refresh:
                self.refresh_topics()
                next_refresh = time.monotonic() + (self.refresh_topics_interval_s if self.partitions
                                                   else NO_TOPIC_REFRESH_S)
            self.step()
            if self.group_patterns and self.task == 0 and time.monotonic() >= next_group_sync:
                try:
                    if self.tasks > 1:
                        self._load_syncs()   # the other tasks' checkpoints since the last read
                    self.sync_groups()
                except Exception as exc:   # the copy goes on; the next round tries again
                    log.warning("mirror %s: group offset sync failed: %s", self.name, exc)
                next_group_sync = time.monotonic() + self.group_sync_interval_s

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        if self._consumer is not None:
            self._read_ahead.drop()
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(FLUSH_TIMEOUT_S)
            self._producer = None

    def lag(self) -> list[tuple[str, int, int, int, int]]:
        """[(topic, partition, source high watermark, checkpointed position, lag)] of this task's
        partitions, from the syncs this instance has seen (lag.status reads them from the target
        instead)."""
        from shmlog.bridge.lag import lag_rows
        self._read_ahead.wait()
        return lag_rows(self.src_lib, self.source, self.partitions, self.syncs, fetching=self._consumer,
                        only=set(self.owned))
