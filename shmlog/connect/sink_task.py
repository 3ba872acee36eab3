"""The loop of one sink task process: consume, convert, transform, put, flush, commit.

The task's consumer is a member of the connector's consumer group (`connect-<name>`, as
Kafka names it), so the partitions of `topics` are balanced across the connector's tasks and
move at once to the others when a task process dies. Offsets are committed to the group only
after the sink flushed every record below them (and the dead-letter records were delivered):
a task killed at any moment loses nothing, and what it had put since its last commit is put
again by the task that takes its partitions over (at-least-once; the window is
`offset.flush.interval.ms` or a rebalance, whichever comes first).
"""
from __future__ import annotations

import time
from typing import Any

from shmlog.connect import dead_letter
from shmlog.connect.api import ConnectException, RetriableException, TaskContext
from shmlog.connect.config import with_prefix
from shmlog.connect.data import SinkRecord

MAX_RETRY_BACKOFF_S = 2.0


def run(cfg: Any, worker: dict[str, Any], task_id: int, task_props: dict[str, Any], stopping: Any,
        report: Any) -> None:
    import shmlog
    from shmlog.connect.converters import converters_of
    from shmlog.connect.transforms import transform_chain

    bootstrap = worker["bootstrap.servers"]
    key_conv, value_conv = converters_of(cfg, worker)
    chain = transform_chain(cfg)
    dlq_topic = cfg.common["errors.deadletterqueue.topic.name"]
    dlq_producer = None
    if dlq_topic:
        dlq_producer = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                                        **with_prefix(worker["_props"], "producer.")})
    reporter = dead_letter.ErrorReporter(cfg.name, task_id, cfg.common, dlq_producer)
    task = cfg.connector_class.task_class()
    task.initialize(TaskContext(cfg.name, task_id, stopping))
    task.start(task_props)
    consumer = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": f"connect-{cfg.name}",
                                "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                **with_prefix(worker["_props"], "consumer."),
                                **with_prefix(cfg.props, "consumer.override.")})
    flush_timeout_s = worker["offset.flush.timeout.ms"] / 1000
    consumed: dict[tuple[str, int], int] = {}     # next offset after what was processed
    committed: dict[tuple[str, int], int] = {}
    task_name = type(task).__name__

    def commit(only=None):
        offsets = {tp: o for tp, o in consumed.items() if (only is None or tp in only) and committed.get(tp) != o}
        if not offsets:
            return
        task.flush({shmlog.TopicPartition(t, p): o for (t, p), o in offsets.items()})
        reporter.flush(flush_timeout_s)
        consumer.commit(offsets=[shmlog.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=False)
        committed.update(offsets)
        report("committed", sum(offsets.values()))

    def on_assign(c, partitions):
        task.open(partitions)
        report("assigned", sorted((tp.topic, tp.partition) for tp in partitions))

    def on_revoke(c, partitions):
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        commit(revoked)
        task.close(partitions)
        for tp in revoked:
            consumed.pop(tp, None)
            committed.pop(tp, None)

    topics = cfg.common["topics"] or ["^" + cfg.common["topics.regex"].removeprefix("^")]
    consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)
    report("running", None)
    interval_s = worker["offset.flush.interval.ms"] / 1000
    last_commit = time.monotonic()
    batch_size = int(with_prefix(cfg.props, "consumer.override.").get("max.poll.records", 500))
    try:
        while not stopping.is_set():
            # consume() waits for a full batch until its timeout: take what is there first, and
            # wait only when there is nothing.
            msgs = consumer.consume(batch_size, timeout=0) or consumer.consume(batch_size, timeout=0.1)
            good = [m for m in msgs if m.error() is None]
            for m in msgs:
                if m.error() is not None and m.error().fatal():
                    raise shmlog.KafkaException(m.error())
            records, sources = [], []
            for m in good:
                record = _to_record(m, key_conv, value_conv, chain, reporter)
                if record is not None:
                    records.append(record)
                    sources.append(m)
            if records:
                _put(task, records, sources, reporter, stopping, task_name)
            for m in good:
                consumed[(m.topic(), m.partition())] = m.offset() + 1
            if time.monotonic() - last_commit >= interval_s:
                commit()
                last_commit = time.monotonic()
        commit()
        consumer.close()       # on_revoke, then leave the group
    finally:
        task.stop()
        for conv in (key_conv, value_conv):
            conv.close()
        if dlq_producer is not None:
            dlq_producer.close()


def _to_record(m, key_conv, value_conv, chain, reporter):
    stage, executing = dead_letter.KEY_CONVERTER, type(key_conv).__name__
    try:
        key_schema, key = key_conv.to_connect(m.topic(), m.key())
        stage, executing = dead_letter.VALUE_CONVERTER, type(value_conv).__name__
        value_schema, value = value_conv.to_connect(m.topic(), m.value())
        stage, executing = dead_letter.TRANSFORMATION, "TransformChain"
        _kind, ts = m.timestamp()
        record = SinkRecord(m.topic(), m.partition(), key_schema, key, value_schema, value,
                            ts if ts >= 0 else None, list(m.headers() or []), kafka_offset=m.offset())
        return chain.apply(record)
    except Exception as exc:   # noqa: BLE001 - any failure of a plugin is the record's error
        reporter.report(stage, executing, exc, m)
        return None


def _put(task, records, sources, reporter, stopping, task_name):
    backoff = 0.05
    while True:
        try:
            task.put(records)
            return
        except RetriableException:
            if stopping.wait(backoff):
                raise ConnectException("stopped while retrying put()") from None
            backoff = min(backoff * 2, MAX_RETRY_BACKOFF_S)
        except Exception:   # noqa: BLE001
            if not reporter.tolerate:
                raise
            break
    # errors.tolerance=all: find the records that fail, one by one.
    for record, m in zip(records, sources):
        try:
            task.put([record])
        except Exception as exc:   # noqa: BLE001
            reporter.report(dead_letter.TASK_PUT, task_name, exc, m)
