"""Consumer-group offsets from source to target: read the group's committed offsets on the
source, translate each through the offset syncs (rule in shmlog.bridge.syncs), and commit the
result to the same group id on the target when it moves that group forward. A target offset
is never moved back (the group may already be running there and be further on), and a
partition whose offset has no translation yet (not mirrored that far) is left alone.
"""
from __future__ import annotations

import re
from typing import Any

from shmlog.bridge.syncs import SyncLog

TIMEOUT_S = 30.0


def matching_groups(lib: Any, conf: dict[str, Any], patterns: list[str], exclude: set[str]) -> list[str]:
    """Group ids named in patterns, plus the source's groups matching a ^regex among them."""
    named = [p for p in patterns if not p.startswith("^")]
    regexes = [re.compile(p) for p in patterns if p.startswith("^")]
    found = set(named)
    if regexes:
        admin = lib.AdminClient(conf)
        listing = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result()
        found |= {g.group_id for g in listing.valid if any(r.fullmatch(g.group_id) for r in regexes)}
    return sorted(found - exclude)


def committed(lib: Any, admin: Any, group: str, partitions: list[Any] | None = None) -> dict[tuple[str, int], int]:
    request = lib.ConsumerGroupTopicPartitions(group, partitions) if partitions else lib.ConsumerGroupTopicPartitions(
        group)
    result = admin.list_consumer_group_offsets([request], request_timeout=TIMEOUT_S)[group].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or () if tp.offset >= 0}


def translate(src_committed: dict[tuple[str, int], int], syncs: SyncLog,
              topic_map: dict[str, str]) -> dict[tuple[str, int], int]:
    """{(source topic, partition): offset} -> {(target topic, partition): translated offset}."""
    out = {}
    for (topic, partition), offset in src_committed.items():
        if topic not in topic_map:
            continue
        downstream = syncs.translate(topic, partition, offset)
        if downstream is not None:
            out[(topic_map[topic], partition)] = downstream
    return out


def sync(src_lib: Any, source: dict[str, Any], tgt_lib: Any, target: dict[str, Any], patterns: list[str],
         syncs: SyncLog, topic_map: dict[str, str], exclude: set[str]) -> list[tuple[str, str, int, int]]:
    """Translate and commit; returns [(group, target topic, partition, offset)] that were committed."""
    src_admin, tgt_admin = src_lib.AdminClient(source), tgt_lib.AdminClient(target)
    moved = []
    for group in matching_groups(src_lib, source, patterns, exclude):
        wanted = translate(committed(src_lib, src_admin, group), syncs, topic_map)
        if not wanted:
            continue
        current = committed(tgt_lib, tgt_admin, group, [tgt_lib.TopicPartition(t, p) for t, p in wanted])
        forward = [tgt_lib.TopicPartition(t, p, o) for (t, p), o in sorted(wanted.items())
                   if current.get((t, p), -1) < o]
        if not forward:
            continue
        request = tgt_lib.ConsumerGroupTopicPartitions(group, forward)
        tgt_admin.alter_consumer_group_offsets([request], request_timeout=TIMEOUT_S)[group].result()
        moved += [(group, tp.topic, tp.partition, tp.offset) for tp in forward]
    return moved
