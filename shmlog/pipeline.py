"""Run a function over a topic with N worker processes forming one consumer group.

    from shmlog.pipeline import Pipeline

    def enrich(msg):                       # a top-level function: workers are spawned
        return msg.value().upper()         # -> one record to the output topic, same key

    with Pipeline({"bootstrap.servers": broker.bootstrap_servers}, ["trades"], enrich,
                  group_id="enrich", workers=4, output_topic="trades.enriched") as p:
        p.wait_ready()
        ...                                # or p.run(): until Ctrl-C / SIGTERM

What each worker does, in a loop: consume up to `batch_size` records, call the function
(per record, or once per batch with `batch=True`), produce what it returned to
`output_topic` and wait for those deliveries, then store and commit the offsets of the
records it processed. Offsets are committed only after the outputs are delivered, so
nothing is lost: a worker that dies is replaced, its partitions move at once to the
other workers (the group notices the dead process immediately), and they resume from the
last commit, so at most the records of one unfinished batch are processed twice
(at-least-once). Partitions move between workers only between batches, and per-key
order holds within a partition, as in Kafka.

With `processing_guarantee="exactly_once"` each batch is one transaction instead: the
worker's transactional producer (transactional.id `<group>-worker-<index>`, so a replacement
fences the worker it replaces and aborts what it left open) produces the outputs and sends
the batch's offsets with them (send_offsets_to_transaction, fenced by the group generation
as in KIP-447), then commits. The output topic read with isolation.level=read_committed
holds each input record's outputs exactly once, whatever worker dies when; inputs are read
read_committed too. A transaction that fails (a delivery error, a fenced generation after a
rebalance) is aborted and its records are read again from the committed offsets.

What the function may return: None (nothing), a value (bytes or str; one output record
with the input record's key), a (key, value) tuple, or a list of those. With
`batch=True` it receives the list of Messages and returns None or a list of outputs.
With `setup=`, each worker calls setup() once and passes its result as the function's
second argument (open files, models, connections there: they cannot be pickled).

Ctrl-C or SIGTERM (to the parent or to the whole process group) stops every worker after
its current batch; each commits and leaves the group before it exits.

When bootstrap.servers names a Kafka cluster (host:port[,host:port]) the workers use
confluent-kafka's clients instead of shmlog's (shmlog.clients decides), with the same loop,
guarantees and transactions; each worker's client.id then carries its pid, which is how
wait_ready() knows the members. docs/migration.md.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shmlog.errors import KafkaError, error
from shmlog.stop_event import StopEvent

if TYPE_CHECKING:
    from typing_extensions import Self

    from shmlog._types import Config
    from shmlog.client.admin import ConsumerGroupDescription

SPAWN = multiprocessing.get_context("spawn")
REPORT_INTERVAL_S = 0.2
RESTART_BACKOFF_S = 0.2


def _outputs(result, msg):
    """What a process function returned -> [(key, value)]."""
    if result is None:
        return []
    if isinstance(result, (bytes, bytearray, memoryview, str)):
        return [(msg.key() if msg is not None else None, result)]
    if isinstance(result, tuple) and len(result) == 2:
        return [result]
    out = []
    for item in result:
        out += _outputs(item, msg)
    return out


def _worker(index, conf, topics, function, batch, batch_size, output_topic, producer_conf, setup, stop, reports,
            exactly_once=False):
    """One worker process (spawned)."""
    from shmlog import clients
    lib = clients.library(conf)   # shmlog's clients, or confluent-kafka's for a Kafka cluster
    if lib.__name__ != "shmlog":
        # A Kafka group's members are told apart by client.id (wait_ready matches the pid in it);
        # shmlog's coordinator sees each member's pid itself.
        conf = {**conf, "client.id": f"{conf['group.id']}-worker-{index}-pid-{os.getpid()}"}
    stopping = StopEvent()
    stopping.set_on_signals()   # SIGTERM, and Ctrl-C, which reaches the whole process group: stop cleanly
    consumer = producer = None
    processed, last_report = 0, time.monotonic()
    try:
        context = setup() if setup is not None else None
        if exactly_once:
            consumer = lib.Consumer({**conf, "enable.auto.commit": False, "isolation.level": "read_committed"})
            producer = lib.Producer({**producer_conf, "transactional.id": f"{conf['group.id']}-worker-{index}"})
            producer.init_transactions()
        else:
            consumer = lib.Consumer({**conf, "enable.auto.offset.store": False, "enable.auto.commit": True})
            if output_topic is not None:
                producer = lib.Producer(producer_conf)

        def on_assign(c, partitions):
            reports.put(("assigned", index, os.getpid(), sorted((tp.topic, tp.partition) for tp in partitions)))

        consumer.subscribe(topics, on_assign=on_assign)
        reports.put(("started", index, os.getpid(), None))
        while not stopping.is_set() and not stop.is_set():
            msgs = consumer.consume(batch_size, timeout=0.1)
            records = []
            for m in msgs:
                err = m.error()
                if err is None:
                    records.append(m)
                elif err.fatal():
                    raise lib.KafkaException(err)
            if records:
                if batch:
                    result = function(records, context) if setup is not None else function(records)
                    outs = _outputs(result, None)
                else:
                    outs = []
                    for m in records:
                        result = function(m, context) if setup is not None else function(m)
                        if result is not None:
                            outs += _outputs(result, m)
                if exactly_once:
                    if _commit_in_transaction(lib, consumer, producer, records, outs, output_topic):
                        processed += len(records)
                else:
                    if producer is not None and outs:
                        _produce_all(producer, output_topic, outs)
                        if producer.flush(60) != 0:
                            raise lib.KafkaException(lib.KafkaError(
                                lib.KafkaError._MSG_TIMED_OUT, f"worker {index}: outputs not delivered in 60 s"))
                    last = {}
                    for m in records:
                        last[(m.topic(), m.partition())] = m.offset() + 1
                    consumer.store_offsets(offsets=[lib.TopicPartition(t, p, o) for (t, p), o in last.items()])
                    try:
                        consumer.commit(asynchronous=True)
                    except lib.KafkaException:
                        pass   # the next batch's commit (or the one on revoke/close) carries these offsets
                    processed += len(records)
            now = time.monotonic()
            if now - last_report >= REPORT_INTERVAL_S:
                reports.put(("processed", index, os.getpid(), processed))
                last_report = now
        consumer.close()   # on_revoke + a final synchronous commit of the stored offsets, then leave
        consumer = None
        if producer is not None:
            producer.close()
        reports.put(("processed", index, os.getpid(), processed))
        reports.put(("stopped", index, os.getpid(), None))
    except BaseException:
        reports.put(("processed", index, os.getpid(), processed))
        reports.put(("failed", index, os.getpid(), traceback.format_exc()))
        raise


def _produce_all(producer, topic, outs):
    for key, value in outs:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)


def _commit_in_transaction(lib, consumer, producer, records, outs, output_topic):
    """One batch as one transaction: outputs and the offsets after the batch's records commit
    together. False when the transaction failed and was aborted: the consumer is back at the
    committed offsets, so the batch is read (and processed) again."""
    last = {}
    for m in records:
        last[(m.topic(), m.partition())] = m.offset() + 1
    try:
        producer.begin_transaction()
        if output_topic is not None and outs:
            _produce_all(producer, output_topic, outs)
        producer.send_offsets_to_transaction([lib.TopicPartition(t, p, o) for (t, p), o in last.items()],
                                             consumer.consumer_group_metadata())
        producer.commit_transaction(60)
        return True
    except lib.KafkaException as exc:
        if not exc.args[0].txn_requires_abort():
            raise
        producer.abort_transaction(60)
        assigned = consumer.assignment()
        for tp in consumer.committed(assigned, timeout=30):
            consumer.seek(lib.TopicPartition(tp.topic, tp.partition,
                                             tp.offset if tp.offset >= 0 else lib.OFFSET_BEGINNING))
        return False


class Pipeline:
    """N worker processes, one consumer group, a function per record or batch.

    conf            client config for the workers' consumers (bootstrap.servers, group settings...)
    topics          topic names or ^patterns to consume
    function        a picklable (top-level) callable, see the module docstring
    group_id        the consumer group (default: conf["group.id"])
    workers         how many worker processes
    batch           call function(list_of_messages) instead of function(message)
    batch_size      most records per batch (and per commit)
    output_topic    where returned records go (None: nothing is produced)
    producer_conf   extra producer config for the outputs (default acks=all: durable before commit)
    processing_guarantee  "at_least_once" (default) or "exactly_once" (one transaction per batch)
    setup           a picklable callable each worker runs once; its result is function's 2nd argument
    restart         replace a worker that dies (SIGKILL, exception) with a new one
    max_restarts    give up (stop the pipeline, raise from run()/join()) after this many restarts
    """

    def __init__(self, conf: Config, topics: list[str], function: Callable[..., Any], group_id: str | None = None,
                 workers: int = 2, batch: bool = False, batch_size: int = 1000, output_topic: str | None = None,
                 producer_conf: Config | None = None, setup: Callable[[], Any] | None = None, restart: bool = True,
                 max_restarts: int = 100, processing_guarantee: str = "at_least_once") -> None:
        conf = dict(conf)
        group_id = group_id or conf.get("group.id")
        if not group_id:
            raise error(KafkaError._INVALID_ARG, "Pipeline needs a group_id (or group.id in conf)")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if processing_guarantee not in ("at_least_once", "exactly_once"):
            raise ValueError(f"processing_guarantee must be 'at_least_once' or 'exactly_once', not "
                             f"{processing_guarantee!r}")
        self.exactly_once = processing_guarantee == "exactly_once"
        self.conf = {**conf, "group.id": group_id}
        self.group_id = group_id
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.function = function
        self.workers = workers
        self.batch = batch
        self.batch_size = batch_size
        self.output_topic = output_topic
        self.producer_conf = {"bootstrap.servers": conf["bootstrap.servers"], "acks": "all", "linger.ms": 1,
                              **(producer_conf or {})}
        self.setup = setup
        self.restart = restart
        self.max_restarts = max_restarts
        self.stop_event = SPAWN.Event()
        self.reports = SPAWN.Queue()
        self.procs = {}            # index -> Process
        self.processed = {}        # (index, pid) -> records processed
        self.assignments = {}      # index -> [(topic, partition)]
        self.assigned_pids = {}    # index -> pid of the worker that reported assignments[index]
        self.failures = []         # tracebacks of workers that died with an exception
        self.restarts = 0
        self.error = None
        self._lock = threading.Lock()
        self._monitor = None
        self._stopping = False
        self._done = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        for i in range(self.workers):
            self._spawn(i)
        self._monitor = threading.Thread(target=self._watch, name="shmlog-pipeline", daemon=True)
        self._monitor.start()
        return self

    def _spawn(self, index):
        proc = SPAWN.Process(target=_worker, name=f"{self.group_id}-worker-{index}",
                             args=(index, self.conf, self.topics, self.function, self.batch, self.batch_size,
                                   self.output_topic, self.producer_conf, self.setup, self.stop_event,
                                   self.reports, self.exactly_once))
        proc.start()
        self.procs[index] = proc

    def _watch(self):
        """Restart workers that die; collect their reports."""
        while True:
            with self._lock:
                procs = dict(self.procs)
            if not procs:
                break
            sentinels = {p.sentinel: i for i, p in procs.items()}
            ready = multiprocessing.connection.wait(list(sentinels) + [self.reports._reader], timeout=1.0)
            self._drain()
            for s in ready:
                if s not in sentinels:
                    continue
                index = sentinels[s]
                proc = procs[index]
                proc.join()
                with self._lock:
                    self.procs.pop(index, None)
                    crashed = proc.exitcode != 0
                    if crashed and self.restart and not self._stopping:
                        if self.restarts >= self.max_restarts:
                            self.error = error(KafkaError._FAIL, f"pipeline {self.group_id!r}: workers died "
                                               f"{self.restarts + 1} times; giving up")
                            self._stop_locked()
                        else:
                            self.restarts += 1
                            self._spawn(index)
        self._drain()
        self._done.set()

    def _drain(self):
        while True:
            try:
                kind, index, pid, data = self.reports.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if kind == "processed":
                self.processed[(index, pid)] = data
            elif kind == "assigned":
                self.assignments[index] = data
                self.assigned_pids[index] = pid
            elif kind == "failed":
                self.failures.append(data)
            else:
                self._on_report(kind, index, pid, data)

    def _on_report(self, kind, index, pid, data):
        """A report kind this runner does not know (a subclass's worker may send its own)."""

    def _stop_locked(self):
        self._stopping = True
        self.stop_event.set()

    def stop(self) -> None:
        """Ask every worker to finish its batch, commit, leave the group and exit."""
        with self._lock:
            self._stop_locked()

    def join(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the workers to exit (kill those still running after timeout); returns stats()."""
        if self._monitor is not None:
            if not self._done.wait(timeout):
                with self._lock:
                    for proc in self.procs.values():
                        proc.kill()
                self._done.wait(10)
        if self.error is not None:
            raise self.error
        return self.stats()

    def run(self, until: Callable[[], bool] | None = None) -> dict[str, Any]:
        """start(), then block until Ctrl-C, SIGTERM, stop(), or until() returns true (checked
        every 100 ms); stops cleanly and returns stats()."""
        stop_now = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: stop_now.set())
        try:
            if self._monitor is None:
                self.start()
            while not stop_now.wait(0.1):
                if self._done.is_set() or self._stopping or (until is not None and until()):
                    break
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    # ------------------------------------------------------------------ observing

    def stats(self) -> dict[str, Any]:
        self._drain()
        return {"processed": sum(self.processed.values()), "restarts": self.restarts,
                "workers": {i: p.pid for i, p in self.procs.items()}, "failures": list(self.failures)}

    def _assignments_cover(self, admin, pids):
        """Whether the live workers' own reports of their assignments split every partition of the
        subscribed topics among them, each partition once."""
        import re
        self._drain()
        with self._lock:
            live = {i: str(p.pid) for i, p in self.procs.items() if p.is_alive()}
        if set(live.values()) != pids or any(str(self.assigned_pids.get(i)) != pid for i, pid in live.items()):
            return False
        owned = [tp for i in live for tp in self.assignments.get(i, [])]
        topics = admin.list_topics(timeout=10).topics
        wanted = [(t, p) for t, md in topics.items() for p in md.partitions
                  if any(t == name or name.startswith("^") and re.fullmatch(name, t) for name in self.topics)]
        return len(owned) == len(set(owned)) and sorted(owned) == sorted(wanted)

    def worker_pids(self) -> dict[int, int | None]:
        with self._lock:
            return {i: p.pid for i, p in self.procs.items() if p.is_alive()}

    def wait_ready(self, timeout: float = 30.0) -> ConsumerGroupDescription:
        """Block until the group is Stable with every worker a member (each then owns its
        share of the partitions); raises KafkaException(_TIMED_OUT) otherwise."""
        from shmlog import clients
        lib = clients.library(self.conf)
        admin = lib.AdminClient({"bootstrap.servers": self.conf["bootstrap.servers"]})
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                desc = admin.describe_consumer_groups([self.group_id])[self.group_id].result()
                pids = {str(p) for p in self.worker_pids().values()}
                if lib.__name__ == "shmlog":
                    hosts = {m.host.split(":")[-1] for m in desc.members}
                elif desc.members:   # the pid each Kafka worker put in its client.id
                    hosts = {m.client_id.rsplit("-", 1)[-1] for m in desc.members}
                else:   # a Kafka-protocol broker whose DescribeGroups lists no members (Tansu)
                    hosts = pids if self._assignments_cover(admin, pids) else set()
                if desc.state == lib.ConsumerGroupState.STABLE and hosts == pids and \
                        (len(desc.members) == self.workers or not desc.members and lib.__name__ != "shmlog"):
                    return desc
                if self.error is not None:
                    raise self.error
                time.sleep(0.02)
            raise error(KafkaError._TIMED_OUT, f"pipeline {self.group_id!r}: the group was not stable with "
                        f"{self.workers} workers within {timeout}s")
        finally:
            admin.close()
