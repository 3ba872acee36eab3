"""The loop of one source task process: poll, transform, convert, produce, commit offsets.

At-least-once (the default): every `offset.flush.interval.ms` the producer is flushed, and
only when every record is delivered are the source offsets those records reached written to
the offsets topic. A task killed between two commits resends what it polled since the last
one. Exactly-once (`exactly.once.source.support=enabled` in the worker config): the task's
producer is transactional (transactional.id `connect-<name>-<task>`), and the records of a
poll (`transaction.boundary=poll`) or of an interval (`interval`) are committed in one
transaction together with the offsets they reached, written to the offsets topic by the same
producer. A replacement task's init_transactions() fences the one it replaces and aborts its
open transaction; it reads the offsets topic read_committed, so it resumes exactly after the
last committed transaction: a read_committed consumer sees each source record once.
"""
from __future__ import annotations

import time
from typing import Any

from shmlog.connect import dead_letter, offsets
from shmlog.connect.api import ConnectException, OffsetStorageReader, TaskContext
from shmlog.connect.config import with_prefix


def run(cfg: Any, worker: dict[str, Any], task_id: int, task_props: dict[str, Any], stopping: Any,
        report: Any) -> None:
    import shmlog
    from shmlog.connect.converters import converters_of
    from shmlog.connect.transforms import transform_chain

    bootstrap = worker["bootstrap.servers"]
    eos = worker["exactly.once.source.support"] == "enabled"
    key_conv, value_conv = converters_of(cfg, worker)
    chain = transform_chain(cfg)
    reporter = dead_letter.ErrorReporter(cfg.name, task_id, cfg.common, None)
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
            **with_prefix(worker["_props"], "producer."), **with_prefix(cfg.props, "producer.override.")}
    if eos:
        conf["transactional.id"] = f"connect-{cfg.name}-{task_id}"
    producer = shmlog.Producer(conf)
    failures: list = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(err)

    if eos:
        producer.init_transactions()
    stored = offsets.read_offsets({"bootstrap.servers": bootstrap}, worker["offset.storage.topic"], cfg.name,
                                  read_committed=eos)
    task = cfg.connector_class.task_class()
    task.initialize(TaskContext(cfg.name, task_id, stopping, OffsetStorageReader(stored)))
    task.start(task_props)
    report("running", None)
    flush_timeout_s = worker["offset.flush.timeout.ms"] / 1000
    interval_s = (cfg.common["transaction.boundary.interval.ms"] or worker["offset.flush.interval.ms"]) / 1000
    if eos and cfg.common["transaction.boundary"] == "poll":
        interval_s = 0.0
    pending: dict[str, tuple[dict, dict]] = {}
    in_txn = False
    polled = 0
    last_commit = time.monotonic()

    def write_offsets():
        for key, value in offsets.offset_records(cfg.name, pending):
            _produce(producer, worker["offset.storage.topic"], key, value, -1, 0, None, on_delivery)

    def commit():
        nonlocal in_txn, polled
        if eos:
            if not in_txn:
                return
            write_offsets()
            producer.commit_transaction(flush_timeout_s)
            in_txn = False
        else:
            if not pending:
                return
            if producer.flush(flush_timeout_s) != 0:
                raise ConnectException(f"records not delivered within offset.flush.timeout.ms="
                                       f"{worker['offset.flush.timeout.ms']}")
            if failures:
                raise ConnectException(f"a record was not delivered: {failures[0]}")
            write_offsets()
            if producer.flush(flush_timeout_s) != 0 or failures:
                raise ConnectException("source offsets not written to the offsets topic")
        pending.clear()
        task.commit()
        report("committed", polled)

    try:
        while not stopping.is_set():
            batch = task.poll() or []
            if batch and eos and not in_txn:
                producer.begin_transaction()
                in_txn = True
            for record in batch:
                try:
                    out = chain.apply(record)
                    if out is not None:
                        key = key_conv.from_connect(out.topic, out.key_schema, out.key)
                        value = value_conv.from_connect(out.topic, out.value_schema, out.value)
                except Exception as exc:   # noqa: BLE001 - a plugin's failure is the record's error
                    reporter.report(dead_letter.TRANSFORMATION, "TransformChain", exc)
                    out = None
                if out is not None:
                    part = out.kafka_partition if out.kafka_partition is not None else -1
                    _produce(producer, out.topic, key, value, part, out.timestamp or 0, out.headers or None,
                             on_delivery)
                pending[offsets.partition_key(record.source_partition)] = (record.source_partition,
                                                                           record.source_offset)
            polled += len(batch)
            if failures:
                raise ConnectException(f"a record was not delivered: {failures[0]}")
            producer.poll(0)
            if time.monotonic() - last_commit >= interval_s:
                commit()
                last_commit = time.monotonic()
        commit()
    finally:
        task.stop()
        for conv in (key_conv, value_conv):
            conv.close()
        producer.close()


def _produce(producer, topic, key, value, partition, timestamp, headers, on_delivery):
    while True:
        try:
            producer.produce(topic, value=value, key=key, partition=partition, timestamp=timestamp,
                             headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)
