"""Which topic configs the mirror copies to the target (MirrorMaker 2's sync.topic.configs).

Copied: the keys set on the source topic itself (describe_configs says DYNAMIC_TOPIC_CONFIG;
the source's defaults are not, as MirrorMaker 2 with use.defaults.from=target), so a compacted
topic stays compacted on the target and keeps its retention. Left out:
- MirrorMaker 2's DefaultConfigPropertyFilter: the replication throttles,
  message.timestamp.difference.max.ms, message.timestamp.type, unclean.leader.election.enable
  and min.insync.replicas: they describe the cluster more than the data;
- keys the target would refuse: shmlog's own (ring.*, shmlog.*) for a Kafka cluster, and for
  a shmlog broker any key its topic config table lacks.
A target topic's value is only ever set to the source's (never deleted): a key reset on the
source keeps its last copied value on the target.

Pure data: the mirror does the describe_configs and alter calls.
"""
from __future__ import annotations

from typing import Any

EXCLUDED = frozenset({
    "follower.replication.throttled.replicas", "leader.replication.throttled.replicas",
    "message.timestamp.difference.max.ms", "message.timestamp.type", "unclean.leader.election.enable",
    "min.insync.replicas"})
SHMLOG_ONLY_PREFIXES = ("ring.", "shmlog.")
SET_ON_TOPIC = 1    # ConfigSource.DYNAMIC_TOPIC_CONFIG, the same number in shmlog and confluent-kafka


def copied(source_entries: dict[str, Any], target_is_kafka: bool) -> tuple[dict[str, str], list[str]]:
    """({key: value} to set on the target, [keys set on the source that are not copied]) of the
    ConfigEntry objects describe_configs gave for a source topic."""
    from shmlog.config import TOPIC_KEYS
    known = None if target_is_kafka else {k.name for k in TOPIC_KEYS}
    wanted, dropped = {}, []
    for key, entry in sorted(source_entries.items()):
        if int(entry.source) != SET_ON_TOPIC or entry.value is None or key in EXCLUDED:
            continue
        if (key.startswith(SHMLOG_ONLY_PREFIXES) and target_is_kafka) or (known is not None and key not in known):
            dropped.append(key)
            continue
        wanted[key] = entry.value
    return wanted, dropped


def changed(wanted: dict[str, str], target_entries: dict[str, Any]) -> dict[str, str]:
    """The keys of `wanted` whose value on the target differs (or that the target lacks)."""
    return {key: value for key, value in wanted.items()
            if key not in target_entries or target_entries[key].value != value}
