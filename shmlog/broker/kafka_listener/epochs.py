"""OffsetForLeaderEpoch: where a leader epoch ends in the partition's log, from its
leader-epoch-checkpoint (shmlog/log/leader_epoch.py), so a client that saw a leader change can
tell whether the log it read from was cut (KIP-320)."""
from shmlog.broker.kafka_listener.handlers import NONE, UNKNOWN_TOPIC_OR_PARTITION
from shmlog.log import leader_epoch

FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 76
UNDEFINED = -1


def end_offset_for(entries, requested, log_end):
    """(epoch, end offset) as Kafka's LeaderEpochFileCache.endOffsetFor answers it: entries are
    [(epoch, start offset)] oldest first, the last one the current epoch. The end of an epoch is
    where the next newer epoch begins, or the log end for the current one; for an epoch older
    than any known, where the oldest begins; for one newer than the current, undefined."""
    if requested < 0 or not entries:
        return UNDEFINED, UNDEFINED
    if requested == entries[-1][0]:
        return requested, log_end
    newer = [(e, o) for e, o in entries if e > requested]
    if not newer:
        return UNDEFINED, UNDEFINED
    older = [e for e, _ in entries if e <= requested]
    return (older[-1] if older else requested), newer[0][1]


def current_epoch(info, partition):
    states = info.get("partition_states") or []
    return int(states[partition].get("leader_epoch", 0)) if partition < len(states) else 0


def offset_for_leader_epoch(conn, req, version):
    logs = conn.logs
    out = []
    with logs.using():
        for t in req.topics:
            info = logs.topic(t.topic)
            parts = []
            for p in t.partitions:
                entry = {"partition": p.partition, "leader_epoch": UNDEFINED, "end_offset": UNDEFINED}
                ring = logs.ring(t.topic, p.partition) if info is not None else None
                if ring is None:
                    parts.append({**entry, "error_code": UNKNOWN_TOPIC_OR_PARTITION})
                    continue
                current = current_epoch(info, p.partition)
                asked = getattr(p, "current_leader_epoch", UNDEFINED)
                if asked >= 0 and asked != current:
                    parts.append({**entry, "error_code": FENCED_LEADER_EPOCH if asked < current
                                  else UNKNOWN_LEADER_EPOCH})
                    continue
                entries = leader_epoch.read(logs.partition_dir(t.topic, p.partition))
                if not entries or entries[-1][0] < current:
                    # The current epoch has no batch on disk yet (the persister adds its entry then).
                    entries = entries + [(current, ring.end()[1])]
                epoch, end = end_offset_for(entries, p.leader_epoch, ring.end()[1])
                parts.append({**entry, "error_code": NONE, "leader_epoch": epoch, "end_offset": end})
            out.append({"topic": t.topic, "partitions": parts})
    return {"topics": out}
