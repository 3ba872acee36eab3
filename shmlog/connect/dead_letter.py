"""errors.tolerance and the dead-letter queue of sink connectors (Kafka's names and headers).

With errors.tolerance=none (the default) a record that fails in a converter, a transform or
the sink's put() fails the task (the worker restarts it; the record is read again). With
errors.tolerance=all it is skipped, and when errors.deadletterqueue.topic.name is set, the
original record (its key, value and headers as consumed) is produced to that topic, with
Kafka's `__connect.errors.*` headers describing the failure when
errors.deadletterqueue.context.headers.enable=true. The dead-letter records are flushed before
the consumer offsets that pass them are committed, so none is lost.
"""
from __future__ import annotations

import logging
import traceback
from typing import Any

log = logging.getLogger("shmlog.connect")

HEADER_PREFIX = "__connect.errors."
KEY_CONVERTER, VALUE_CONVERTER, TRANSFORMATION, TASK_PUT, TASK_POLL = (
    "KEY_CONVERTER", "VALUE_CONVERTER", "TRANSFORMATION", "TASK_PUT", "TASK_POLL")


class ErrorReporter:
    def __init__(self, connector: str, task_id: int, common: dict[str, Any], producer: Any | None):
        self.connector = connector
        self.task_id = task_id
        self.tolerate = common["errors.tolerance"] == "all"
        self.log_errors = common["errors.log.enable"]
        self.log_messages = common["errors.log.include.messages"]
        self.topic = common.get("errors.deadletterqueue.topic.name") or None
        self.context_headers = common.get("errors.deadletterqueue.context.headers.enable", False)
        self.producer = producer if self.topic else None
        self.failed = 0

    def report(self, stage: str, executing: str, exc: BaseException, msg: Any = None) -> None:
        """One record failed at `stage`. Raises again unless errors.tolerance=all."""
        if not self.tolerate:
            raise exc
        self.failed += 1
        if self.log_errors:
            where = f" for {msg.topic()}-{msg.partition()}@{msg.offset()}" if msg is not None else ""
            extra = f" key={msg.key()!r} value={msg.value()!r}" if msg is not None and self.log_messages else ""
            log.error("connector %s task %d: error in stage %s (%s)%s: %s%s", self.connector, self.task_id, stage,
                      executing, where, exc, extra)
        if self.producer is None or msg is None:
            return
        headers = list(msg.headers() or [])
        if self.context_headers:
            headers += [(HEADER_PREFIX + k, str(v).encode()) for k, v in (
                ("topic", msg.topic()), ("partition", msg.partition()), ("offset", msg.offset()),
                ("connector.name", self.connector), ("task.id", self.task_id), ("stage", stage),
                ("class.name", executing), ("exception.class.name", type(exc).__name__),
                ("exception.message", str(exc)),
                ("exception.stacktrace", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))]
        while True:
            try:
                self.producer.produce(self.topic, value=msg.value(), key=msg.key(), headers=headers,
                                      timestamp=max(msg.timestamp()[1], 0))
                break
            except BufferError:
                self.producer.poll(0.05)

    def flush(self, timeout_s: float) -> None:
        from shmlog.connect.api import ConnectException
        if self.producer is not None and self.producer.flush(timeout_s) != 0:
            raise ConnectException(f"dead-letter records to {self.topic!r} not delivered within {timeout_s} s")
