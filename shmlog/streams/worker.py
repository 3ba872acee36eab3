"""One streams worker process: a member of the application's group that runs the topology's
tasks (one per assigned input partition) batch by batch.

A batch: consume up to batch_size records, push each through the steps of its topic's sources
(the task's stream time first moves to the record's time; closed windows are emitted after
it), then write each changed store key to its changelog and commit:
    at_least_once  flush the producer (outputs and changelogs in the log), commit local
                   state, commit the input offsets;
    exactly_once   outputs, changelog records and input offsets in one transaction
                   (transactional.id <application.id>-worker-<index>, offsets fenced by the
                   group generation as in KIP-447); local state commits after it. A transaction
                   that fails is aborted, local state rolled back, and the batch read again.
Local state never gets ahead of its changelog (streams/state.py says why that is enough).
A newly assigned task restores its stores from their changelogs before it processes anything.
A task that joins co-partitioned tables also reads its partition of each (streams/ktable.py):
replayed to the committed position when the task is assigned, read to its end before each
batch, and its read position committed with the input offsets.
"""
from __future__ import annotations

import os
import time
import traceback

from shmlog.errors import KafkaError, KafkaException, error
from shmlog.stop_event import StopEvent
from shmlog.streams import state as st
from shmlog.streams.ktable import KTableReader
from shmlog.streams.task import Task

REPORT_INTERVAL_S = 0.2
TELEMETRY_INTERVAL_S = 1.0   # how often a worker pushes its step metrics to the broker (shmlog metrics)


class Worker:
    def __init__(self, app, index: int, batch_size: int, stop, reports) -> None:
        from shmlog import clients
        self.lib = lib = clients.library(app.client_conf)   # shmlog's clients, or a Kafka cluster's
        self.on_kafka = clients.is_kafka(app.client_conf)
        self.app = app
        self.index = index
        self.batch_size = batch_size
        self.stop = stop
        self.reports = reports
        self.exactly_once = app.processing_guarantee == "exactly_once"
        conf = app.client_conf
        self.consumer = lib.Consumer({"auto.offset.reset": "earliest", **conf, "group.id": app.application_id,
                                         "enable.auto.commit": False, "isolation.level": "read_committed"})
        producer_conf = {"bootstrap.servers": conf["bootstrap.servers"], "acks": "all", "linger.ms": 1}
        if self.exactly_once:
            producer_conf["transactional.id"] = f"{app.application_id}-worker-{index}"
        self.producer = lib.Producer(producer_conf)
        if self.exactly_once:
            self.producer.init_transactions()
        self.tasks: dict[tuple[str, int], Task] = {}
        self.metrics: dict[str, list[int]] = {}
        self.delivery_errors: list[KafkaError] = []
        self.changelog_ends: dict[tuple[str, int], int] = {}
        self.processed = 0
        self.table_consumer = None
        self.ktables = KTableReader(lib, app) if app.ktables else None
        self.telemetry_due = 0.0

    # ------------------------------------------------------------------ producing

    def _on_delivery(self, err, msg):
        if err is not None:
            self.delivery_errors.append(err)
        elif msg.topic().endswith("-changelog"):
            key = (msg.topic(), msg.partition())
            self.changelog_ends[key] = max(self.changelog_ends.get(key, 0), msg.offset() + 1)

    def produce(self, topic, key, value, timestamp, headers, partition=-1):
        while True:
            try:
                extra = {} if timestamp is None else {"timestamp": timestamp}   # confluent-kafka refuses None
                if headers:
                    extra["headers"] = headers
                self.producer.produce(topic, value=value, key=key, partition=partition,
                                      on_delivery=self._on_delivery, **extra)
                return
            except BufferError:
                self.producer.poll(0.05)

    # ------------------------------------------------------------------ tasks

    def on_assign(self, consumer, partitions):
        for tp in partitions:
            self._open_task(tp.topic, tp.partition)
        self.reports.put(("assigned", self.index, os.getpid(), sorted((tp.topic, tp.partition) for tp in partitions)))

    def on_revoke(self, consumer, partitions):
        for tp in partitions:
            task = self.tasks.pop((tp.topic, tp.partition), None)
            if task is not None:
                if task.tables:
                    self.ktables.forget(task.tables)
                task.state.close()

    def _open_task(self, topic, partition):
        roots = [src for src in self.app.sources if src.topic == topic]
        stores = self.app.stores_of(topic)
        path = os.path.join(self.app.state_dir, f"{topic}-{partition}.sqlite")
        task_state = st.TaskState(path)
        self._restore(task_state, stores, partition)
        table_parts = [self.ktables.open(task_state, table, partition) for table in self.app.ktables_of(topic)]
        if table_parts:
            self.ktables.restore_stream_time(task_state, topic, partition)
        self.tasks[(topic, partition)] = Task(topic, partition, task_state, roots, stores,
                                              self.produce, self.metrics, table_parts)

    def _restore(self, task_state, stores, partition):
        """Replay each store's changelog partition from the local checkpoint to its end (the LSO:
        only committed changes under exactly-once)."""
        if not stores:
            return
        restorer = self.lib.Consumer({**self.app.client_conf,
                                    "group.id": f"{self.app.application_id}-restore", "enable.auto.commit": False,
                                    "isolation.level": "read_committed", "enable.partition.eof": True,
                                    "auto.offset.reset": "earliest"})
        try:
            for store in stores:
                topic = self.app.changelog_topic(store)
                start = task_state.meta(f"checkpoint:{store}", 0)
                restorer.assign([self.lib.TopicPartition(topic, partition, start)])
                task_state.begin()
                position = start
                deadline = time.monotonic() + 300
                while True:
                    msg = restorer.poll(1.0)
                    if msg is None:
                        if time.monotonic() > deadline:
                            raise error(KafkaError._TIMED_OUT, f"restoring {topic} [{partition}] did not reach "
                                        f"its end in 300 s")
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            position = max(position, msg.offset())
                            break
                        raise self.lib.KafkaException(err)
                    task_state.apply(store, msg.key(), msg.value())
                    position = msg.offset() + 1
                task_state.set_meta(f"checkpoint:{store}", position)
                task_state.commit()
                restorer.unassign()
        finally:
            restorer.close()

    # ------------------------------------------------------------------ global tables

    def _start_tables(self):
        if not self.app.tables:
            return
        self.table_consumer = self.lib.Consumer({**self.app.client_conf,
                                               "group.id": f"{self.app.application_id}-tables",
                                               "enable.auto.commit": False, "enable.partition.eof": True,
                                               "isolation.level": "read_committed"})
        meta = self.table_consumer.list_topics(timeout=30)
        assignment, waiting = [], set()
        for table in self.app.tables:
            for p in meta.topics[table.topic].partitions:
                assignment.append(self.lib.TopicPartition(table.topic, p, self.lib.OFFSET_BEGINNING))
                waiting.add((table.topic, p))
        self.table_consumer.assign(assignment)
        deadline = time.monotonic() + 300
        while waiting:   # bootstrap: every table is read to its end before any record is joined
            if time.monotonic() > deadline:
                raise error(KafkaError._TIMED_OUT, f"global tables not read to their end in 300 s: {sorted(waiting)}")
            for msg in self.table_consumer.consume(10000, 1.0):
                if msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF:
                    waiting.discard((msg.topic(), msg.partition()))
                else:
                    self._table_record(msg)

    def _table_record(self, msg):
        if msg.error() is not None:
            if msg.error().fatal():
                raise self.lib.KafkaException(msg.error())
            return
        for table in self.app.tables:
            if table.topic == msg.topic():
                table.apply(msg.key(), msg.value())

    def _poll_tables(self):
        if self.table_consumer is not None:
            for msg in self.table_consumer.consume(10000, 0):
                self._table_record(msg)

    # ------------------------------------------------------------------ batches

    def run(self):
        self._start_tables()
        self.consumer.subscribe(self.app.source_topics(), on_assign=self.on_assign, on_revoke=self.on_revoke,
                                on_lost=self.on_revoke)
        self.reports.put(("started", self.index, os.getpid(), None))
        last_report = time.monotonic()
        while not self.stop.is_set() and not _stopping.is_set():
            self._poll_tables()
            records = []
            for msg in self.consumer.consume(self.batch_size, timeout=0.1):
                err = msg.error()
                if err is None:
                    records.append(msg)
                elif err.fatal():
                    raise self.lib.KafkaException(err)
            if records:
                self._batch(records)
            now = time.monotonic()
            if now - last_report >= REPORT_INTERVAL_S:
                self._report()
                last_report = now
        self.consumer.close()
        for task in self.tasks.values():
            task.state.close()
        self.tasks.clear()
        if self.ktables is not None:
            self.ktables.close()
        self.producer.flush(30)
        self._report()

    def _report(self):
        self.reports.put(("processed", self.index, os.getpid(), self.processed))
        self.reports.put(("metrics", self.index, os.getpid(), {k: list(v) for k, v in self.metrics.items()}))
        now = time.monotonic()
        if now >= self.telemetry_due and not self.on_kafka:   # pushed to shmlog brokers (a Kafka cluster has JMX)
            self.telemetry_due = now + TELEMETRY_INTERVAL_S
            app = self.app.application_id
            metrics = [["streams_records_processed_total", {"application": app}, self.processed]]
            for step, (records_in, records_out, late) in sorted(self.metrics.items()):
                labels = {"application": app, "step": step}
                metrics += [["streams_step_records_in_total", labels, records_in],
                            ["streams_step_records_out_total", labels, records_out],
                            ["streams_step_late_records_dropped_total", labels, late]]
            try:
                self.producer._cluster.push_telemetry(metrics)
            except (KafkaException, OSError):
                pass     # metrics are best effort: the next push carries them

    def _batch(self, records):
        if self.exactly_once:
            self.producer.begin_transaction()
        touched: dict[tuple[str, int], Task] = {}
        offsets: dict[tuple[str, int], int] = {}
        for msg in records:
            tp = (msg.topic(), msg.partition())
            touched[tp] = self.tasks[tp]
        table_parts = [part for task in touched.values() for part in task.tables]
        if table_parts:     # every table record in the log now may be due for this batch's records
            self.ktables.catch_up(table_parts)
        for msg in records:
            tp = (msg.topic(), msg.partition())
            offsets[tp] = msg.offset() + 1
            ts_type, ts = msg.timestamp()
            touched[tp].process(msg.key(), msg.value(), ts, ts_type, msg.headers())
        for task in touched.values():
            self._write_changelogs(task)
        positions = [self._input_position(touched[tp], o) for tp, o in offsets.items()]
        positions += [self.lib.TopicPartition(part.table.topic, part.partition, part.position())
                      for part in table_parts]
        if self.exactly_once:
            if not self._commit_transaction(positions):
                for task in touched.values():
                    task.rollback()
                    if task.tables:
                        self.ktables.rewind(task.tables, task.state)
                return
        else:
            if self.producer.flush(60) != 0:
                raise error(KafkaError._MSG_TIMED_OUT, "outputs and changelog records not delivered in 60 s")
            if self.delivery_errors:
                raise self.lib.KafkaException(self.delivery_errors[0])
        for task in touched.values():
            for store in task.stores:
                end = self.changelog_ends.get((self.app.changelog_topic(store), task.partition))
                if end is not None:
                    task.state.set_meta(f"checkpoint:{store}", end)
            for part in task.tables:
                task.state.set_meta(part.table.checkpoint, part.position())
            task.state.commit()
        if not self.exactly_once:
            self.consumer.commit(offsets=positions, asynchronous=False)
        self.processed += len(records)

    def _input_position(self, task, offset):
        """The input offset to commit; a task that joins co-partitioned tables commits its stream
        time with it, as the offset's metadata (streams/ktable.py says why)."""
        if not task.tables:
            return self.lib.TopicPartition(task.topic, task.partition, offset)   # confluent-kafka refuses metadata=None
        return self.lib.TopicPartition(task.topic, task.partition, offset, str(task.ctx.stream_time))

    def _write_changelogs(self, task):
        for topic, key, value in task.changelog_records(self.app.changelog_topic):
            self.produce(topic, key, value, None, None, partition=task.partition)

    def _commit_transaction(self, positions) -> bool:
        try:
            self.producer.send_offsets_to_transaction(positions, self.consumer.consumer_group_metadata())
            self.producer.commit_transaction(60)
            return True
        except self.lib.KafkaException as exc:
            if not exc.args[0].txn_requires_abort():
                raise
            self.producer.abort_transaction(60)
            assigned = self.consumer.assignment()
            for tp in self.consumer.committed(assigned, timeout=30):
                self.consumer.seek(self.lib.TopicPartition(tp.topic, tp.partition,
                                                           tp.offset if tp.offset >= 0 else self.lib.OFFSET_BEGINNING))
            return False


_stopping = StopEvent()   # set by SIGTERM and SIGINT


def main(index: int, payload: bytes, batch_size: int, stop, reports) -> None:
    """The worker process's entry point (spawned by streams/runner.py)."""
    import cloudpickle

    _stopping.set_on_signals()
    worker = None
    try:
        app = cloudpickle.loads(payload)
        worker = Worker(app, index, batch_size, stop, reports)
        worker.run()
        reports.put(("stopped", index, os.getpid(), None))
    except BaseException:
        if worker is not None:
            worker._report()
        reports.put(("failed", index, os.getpid(), traceback.format_exc()))
        raise
