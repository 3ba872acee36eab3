"""Mirror lag: per source partition, the source's high watermark minus the position the
mirror has checkpointed in the target (its sync records), i.e. how many source offsets are
not yet copied (transaction markers count as offsets, as in Kafka's consumer lag)."""
from __future__ import annotations

from typing import Any

from shmlog.bridge.syncs import SyncLog

TIMEOUT_S = 30.0


def lag_rows(src_lib: Any, source: dict[str, Any], partitions: dict[str, int], syncs: SyncLog,
             fetching: Any = None, only: set[tuple[str, int]] | None = None) -> list[tuple[str, int, int, int, int]]:
    """[(topic, partition, high watermark, checkpointed position or -1, lag)] (of the partitions
    in `only`, when given).

    fetching: the mirror's own source consumer, whose last fetch responses carry each
    partition's high watermark (cached: no request); other partitions are asked for with
    ListOffsets."""
    consumer = None
    rows = []
    try:
        for topic, count in sorted(partitions.items()):
            for p in range(count):
                if only is not None and (topic, p) not in only:
                    continue
                tp = src_lib.TopicPartition(topic, p)
                low, high = fetching.get_watermark_offsets(tp, cached=True) if fetching is not None else (-1, -1)
                if high < 0:
                    if consumer is None:
                        consumer = src_lib.Consumer({**source, "group.id": "mirror.lag", "enable.auto.commit": False})
                    low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
                at = syncs.next_upstream(topic, p)
                rows.append((topic, p, high, at, max(high - max(at, low), 0)))
    finally:
        if consumer is not None:
            consumer.close()
    return rows


def status(source: dict[str, Any], target: dict[str, Any], topics: list[str], name: str = "mirror",
           target_prefix: str = "") -> list[tuple[str, int, int, int, int]]:
    """The lag of a mirror (running or not), from its syncs in the target."""
    from shmlog.bridge.mirror import Mirror
    mirror = Mirror(source, target, topics, name=name, exactly_once=False, target_prefix=target_prefix)
    mirror.partitions = mirror._topics()
    if mirror.sync_topic in _target_topics(mirror):
        mirror._load_syncs()
    return lag_rows(mirror.src_lib, mirror.source, mirror.partitions, mirror.syncs)


def _target_topics(mirror):
    admin = mirror.tgt_lib.AdminClient(mirror.target)
    return set(admin.list_topics(timeout=TIMEOUT_S).topics)
