"""Source offsets in the compacted offsets topic (`offset.storage.topic`), in Kafka's format.

A record per source partition: key `["<connector>",{<source partition>}]`, value the offset
object (`{"position":123}`), both JSON as Kafka's worker writes them, so the newest record of
each key is the committed offset and compaction keeps just that. Records are keyed, so a key
always lands in the same partition of the topic (murmur2, as Kafka's).
"""
from __future__ import annotations

import json
import time
from typing import Any

from shmlog.connect.api import ConnectException


def partition_key(partition: dict) -> str:
    return json.dumps(partition, sort_keys=True, separators=(",", ":"))


def record_key(connector: str, partition: dict) -> bytes:
    return json.dumps([connector, partition], separators=(",", ":")).encode()


def ensure_topic(admin: Any, topic: str, partitions: int, replication_factor: int, compacted: bool) -> None:
    """Create the topic if it is missing (an existing one is used as it is)."""
    import shmlog
    if topic in admin.list_topics(timeout=30).topics:
        return
    config = {"cleanup.policy": "compact"} if compacted else {}
    futures = admin.create_topics([shmlog.NewTopic(topic, partitions, replication_factor, config=config)])
    try:
        futures[topic].result()
    except shmlog.KafkaException as exc:
        if exc.args[0].code() != shmlog.KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def read_offsets(conf: dict[str, Any], topic: str, connector: str, read_committed: bool,
                 timeout_s: float = 60.0) -> dict[str, dict]:
    """{partition_key: offset} of one connector: the topic read from its start to its end."""
    import shmlog
    consumer = shmlog.Consumer({**conf, "enable.auto.commit": False,
                                "isolation.level": "read_committed" if read_committed else "read_uncommitted"})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConnectException(f"offset storage topic {topic!r} does not exist")
        tps = [shmlog.TopicPartition(topic, p) for p in sorted(meta.partitions)]
        ends = {}
        for tp in tps:
            _low, high = consumer.get_watermark_offsets(tp, timeout=30)
            if high > 0:
                ends[tp.partition] = high
        consumer.assign([shmlog.TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in ends])
        offsets: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        remaining = dict(ends)
        while remaining:
            if time.monotonic() > deadline:
                raise ConnectException(f"could not read offset storage topic {topic!r} to its end within "
                                       f"{timeout_s} s (an open transaction?)")
            for m in consumer.consume(1000, timeout=0.2):
                if m.error() is not None:
                    continue
                try:
                    name, part = json.loads(m.key())
                except (TypeError, ValueError):
                    continue     # not a key of ours (Kafka also skips what it cannot parse)
                if name == connector and isinstance(part, dict):
                    value = m.value()
                    if value is None:
                        offsets.pop(partition_key(part), None)
                    else:
                        offsets[partition_key(part)] = json.loads(value)
            for p in list(remaining):
                pos = consumer.position([shmlog.TopicPartition(topic, p)])[0].offset
                if pos >= remaining[p]:
                    del remaining[p]
        return offsets
    finally:
        consumer.close()


def offset_records(connector: str, offsets: dict[str, tuple[dict, dict]]) -> list[tuple[bytes, bytes]]:
    """[(key, value)] to produce for {partition_key: (partition, offset)}."""
    return [(record_key(connector, part), json.dumps(off, separators=(",", ":")).encode())
            for part, off in offsets.values()]
