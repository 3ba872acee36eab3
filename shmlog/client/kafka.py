"""Clients for a Kafka cluster (bootstrap.servers = host:port[,host:port]), through confluent-kafka.

shmlog.clients picks these instead of shmlog's own when bootstrap.servers names a Kafka
cluster (that choice is made there and nowhere else). They are confluent-kafka's Producer,
Consumer and AdminClient with shmlog's batch calls added on top as per-record fallbacks with
shmlog's return types:

- Producer.produce_batch(topic, messages): produce() per message (so 'timestamp' and
  'headers' are honoured, which confluent-kafka's own produce_batch does not), returns how
  many were queued; a message that could not be queued gets an '_error' KafkaError.
- Producer.produce_values(topic, values, keys=None, partition=-1, timestamp=0): produce()
  per value, flush, and return [(partition, base_offset, count)] for each run of consecutive
  offsets, as shmlog's returns one entry per appended batch. NumPy arrays are taken row by row.
- Consumer.consume_batch(max_records, timeout): consume() and hand back the records of one
  partition as a RecordBatchView (values copied: zero_copy is False). Records of other
  partitions that arrived in the same call are given back with seek() to the first of them,
  so they come again and nothing is skipped. With enable.auto.offset.store (the default) the
  offsets stored for commit are those of records handed out, never of records given back:
  the underlying consumer stores nothing itself and this class stores what it returned.

confluent-kafka is an optional dependency (`pip install shmlog[kafka]`); importing this module
without it raises ImportError saying so.
"""
from __future__ import annotations

from typing import Any

try:
    import confluent_kafka as ck
    from confluent_kafka import admin as ck_admin
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("a Kafka cluster in bootstrap.servers needs confluent-kafka: "
                      "pip install 'shmlog[kafka]'") from exc

import numpy as np

from shmlog.client.consumer import RecordBatchView, view_of_messages
from shmlog.client.producer import _to_bytes

# confluent-kafka's names, re-exported so code written against shmlog's names runs unchanged.
NewTopic = ck_admin.NewTopic
ConsumerGroupTopicPartitions = ck.ConsumerGroupTopicPartitions
ConsumerGroupState = ck.ConsumerGroupState
KafkaError = ck.KafkaError
KafkaException = ck.KafkaException
TopicPartition = ck.TopicPartition
Message = ck.Message
OFFSET_BEGINNING = ck.OFFSET_BEGINNING
OFFSET_END = ck.OFFSET_END
OFFSET_INVALID = ck.OFFSET_INVALID
OFFSET_STORED = ck.OFFSET_STORED
SerializingProducer = ck.SerializingProducer
DeserializingConsumer = ck.DeserializingConsumer

FLUSH_TIMEOUT_S = 60.0


class AdminClient(ck_admin.AdminClient):
    """confluent_kafka.admin.AdminClient, plus the close() that shmlog's AdminClient has (and that
    code written for it calls): confluent-kafka frees its handle when the object goes."""

    def close(self) -> None:
        pass


class Producer(ck.Producer):
    """confluent_kafka.Producer with shmlog's produce_batch/produce_values as per-record fallbacks."""

    def produce_batch(self, topic: str, messages: list[dict[str, Any]], partition: int = -1,  # type: ignore[override]
                      callback: Any = None, on_delivery: Any = None) -> int:
        if not isinstance(messages, list):
            raise TypeError("messages must be a list")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise TypeError(f"Message at index {i} must be a dict")
        default_cb = callback if callback is not None else on_delivery
        queued = 0
        for msg in messages:
            cb = msg.get("callback", msg.get("on_delivery", default_cb))
            kwargs = {"value": msg.get("value"), "key": msg.get("key"),
                      "partition": msg.get("partition", partition), "timestamp": msg.get("timestamp", 0)}
            if msg.get("headers") is not None:
                kwargs["headers"] = msg["headers"]
            if cb is not None:
                kwargs["on_delivery"] = cb
            try:
                self.produce(topic, **kwargs)
            except BufferError:
                msg["_error"] = KafkaError(KafkaError._QUEUE_FULL, "local queue full")
                continue
            except KafkaException as exc:
                msg["_error"] = exc.args[0]
                continue
            queued += 1
        return queued

    def produce_values(self, topic: str, values: Any, keys: Any = None, partition: int = -1,
                       timestamp: int = 0) -> list[tuple[int, int, int]]:
        if isinstance(values, np.ndarray):
            if keys is not None:
                raise TypeError("keys are not supported with a NumPy values array; pass lists instead")
            rows = np.ascontiguousarray(values).reshape(len(values), -1).view(np.uint8)
            values = [row.tobytes() for row in rows]
        delivered: list[tuple[int, int]] = []
        failures: list[Any] = []

        def report(err, msg):
            if err is not None:
                failures.append(err)
            else:
                delivered.append((msg.partition(), msg.offset()))

        for i, value in enumerate(values):
            key = _to_bytes(keys[i], "key") if keys is not None else None
            while True:
                try:
                    self.produce(topic, value=_to_bytes(value, "value"), key=key, partition=partition,
                                 timestamp=timestamp, on_delivery=report)
                    break
                except BufferError:
                    self.poll(0.05)
        if self.flush(FLUSH_TIMEOUT_S) != 0:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT,
                                            f"produce_values: records not delivered in {FLUSH_TIMEOUT_S} s"))
        if failures:
            raise KafkaException(failures[0])
        runs: list[list[int]] = []
        for p, offset in sorted(delivered):
            if runs and runs[-1][0] == p and runs[-1][1] + runs[-1][2] == offset:
                runs[-1][2] += 1
            else:
                runs.append([p, offset, 1])
        return [(p, base, count) for p, base, count in runs]


class Consumer(ck.Consumer):
    """confluent_kafka.Consumer with shmlog's consume_batch as a fallback over consume()."""

    def __init__(self, conf: dict[str, Any], **kwargs: Any) -> None:
        conf = dict(conf)
        store = conf.get("enable.auto.offset.store", True)
        self._auto_store = store not in (False, "false", "False", 0, "0")
        conf["enable.auto.offset.store"] = False
        super().__init__(conf, **kwargs)

    def _stored(self, msgs):
        if self._auto_store:
            last = {}
            for m in msgs:
                if m.error() is None:
                    last[(m.topic(), m.partition())] = m.offset() + 1
            if last:
                self.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in last.items()])
        return msgs

    def poll(self, timeout: float = -1) -> Message | None:  # type: ignore[override]
        msg = super().poll(timeout)
        if msg is not None:
            self._stored([msg])
        return msg

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:  # type: ignore[override]
        return self._stored(super().consume(num_messages, timeout))

    def consume_batch(self, max_records: int = 65536, timeout: float | None = None) -> RecordBatchView | None:
        msgs = super().consume(max(1, min(max_records, 100_000)), -1 if timeout is None else timeout)
        errors = [m for m in msgs if m.error() is not None]
        good = [m for m in msgs if m.error() is None]
        if errors and not good:
            raise KafkaException(errors[0].error())
        if not good:
            return None
        first = good[0]
        mine = [m for m in good if m.topic() == first.topic() and m.partition() == first.partition()]
        others: dict[tuple[str, int], int] = {}
        for m in good:
            key = (m.topic(), m.partition())
            if key != (first.topic(), first.partition()) and key not in others:
                others[key] = m.offset()
        for (t, p), offset in others.items():
            self.seek(TopicPartition(t, p, offset))
        self._stored(mine)
        return view_of_messages(mine)

