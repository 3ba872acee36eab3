"""Replica placement and per-partition replication state (pure: no I/O).

A replica of a partition is its log on one log dir; a replica id is the index of that log dir
in the broker's `log.dirs` (so list_topics() reports replicas as confluent-kafka reports
broker ids). Each partition's state lives in meta/topics.json under its topic's
"partition_states", one entry per partition:

    {"replicas": [2, 0, 1], "leader": 2, "leader_epoch": 0, "isr": [2, 0, 1]}

`replicas` are distinct log dir indexes, the first being the preferred leader; `isr` is a
subset of `replicas` that always holds the leader. A topic written before replication has no
"partition_states": its one replica is the log dir today's placement gives it
((topic id + partition) mod the number of log dirs), so an old data dir reads unchanged.
"""
from shmlog.errors import KafkaError

MAX_REPLICAS = 8   # csrc/shmlog_layout.h SHMLOG_MAX_REPLICAS: one fsynced word per replica in the ring header


def legacy_state(topic_id, partition, n_dirs):
    d = (topic_id + partition) % n_dirs
    return new_state([d])


def new_state(replicas):
    """A new partition: its preferred leader leads; every replica is in sync (all logs are empty),
    as Kafka creates them, so acks=all with min.insync.replicas works from the first record."""
    return {"replicas": list(replicas), "leader": replicas[0], "leader_epoch": 0, "isr": list(replicas)}


def states(t, n_dirs):
    """The partition states of a topic entry, one per partition (made for an old entry)."""
    return [state(t, p, n_dirs) for p in range(t["partitions"])]


def state(t, partition, n_dirs):
    """One partition's state (O(1): per-partition callers must not build the whole list)."""
    have = t.get("partition_states") or []
    return have[partition] if partition < len(have) else legacy_state(t["id"], partition, n_dirs)


def factor_problem(rf, n_dirs):
    """(code, message) when a replication factor cannot be placed, else None."""
    if rf < 1:
        return KafkaError.INVALID_REPLICATION_FACTOR, f"replication factor {rf} must be at least 1"
    if rf > n_dirs:
        return KafkaError.INVALID_REPLICATION_FACTOR, (
            f"replication factor {rf} is larger than the number of log dirs ({n_dirs}): each replica of a "
            f"partition needs its own log dir (log.dirs)")
    if rf > MAX_REPLICAS:
        return KafkaError.INVALID_REPLICATION_FACTOR, f"replication factor {rf} is above the most shmlog " \
                                                      f"supports ({MAX_REPLICAS})"
    return None


def assignment_problem(assignment, partitions, n_dirs, first_partition=0):
    """(code, message) when an explicit replica assignment is unusable, else None."""
    if len(assignment) != partitions:
        return KafkaError.INVALID_REPLICA_ASSIGNMENT, (
            f"replica_assignment lists {len(assignment)} partitions, not {partitions}")
    sizes = {len(r) for r in assignment}
    if len(sizes) != 1:
        return KafkaError.INVALID_REPLICA_ASSIGNMENT, "replica_assignment: every partition needs the same number " \
                                                      "of replicas"
    for i, replicas in enumerate(assignment):
        p = first_partition + i
        if not replicas:
            return KafkaError.INVALID_REPLICA_ASSIGNMENT, f"replica_assignment: partition {p} has no replicas"
        bad = [r for r in replicas if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r < n_dirs]
        if bad:
            return KafkaError.INVALID_REPLICA_ASSIGNMENT, (
                f"replica_assignment: partition {p} names replica {bad[0]!r}, but replica ids are log dir "
                f"indexes 0..{n_dirs - 1}")
        if len(set(replicas)) != len(replicas):
            return KafkaError.INVALID_REPLICA_ASSIGNMENT, (
                f"replica_assignment: partition {p} lists a log dir twice ({replicas}); replicas must be on "
                f"distinct log dirs")
    return factor_problem(sizes.pop(), n_dirs)


def leader_counts(topics, n_dirs):
    """How many partitions each log dir leads, over every topic entry."""
    counts = [0] * n_dirs
    for t in topics:
        for s in states(t, n_dirs):
            if 0 <= s["leader"] < n_dirs:
                counts[s["leader"]] += 1
    return counts


def assign(partitions, rf, n_dirs, counts, first_partition=0):
    """Replica lists for `partitions` new partitions: each on rf distinct log dirs, leaders
    spread round-robin from the log dir that leads fewest partitions so far (balanced across
    topics), followers on the log dirs after the leader's. `counts` (leader_counts) is updated."""
    start = min(range(n_dirs), key=lambda d: (counts[d], d))
    out = []
    for i in range(partitions):
        leader = (start + i) % n_dirs
        out.append([(leader + k) % n_dirs for k in range(rf)])
        counts[leader] += 1
    return out


def under_replicated(state):
    return len(state["isr"]) < len(state["replicas"])


def elect(state, offline, unclean=False):
    """The partition's state once its leader is offline: the first in-sync replica that is not
    offline leads, with the leader epoch bumped, and the ISR loses the offline replicas. With
    `unclean` (unclean.leader.election.enable) and no such replica, any replica that is not
    offline may lead (it may lack acknowledged records). None when nobody can lead."""
    old = state["leader"]
    clean = [r for r in state["isr"] if r != old and r not in offline]
    candidates = clean or ([r for r in state["replicas"] if r != old and r not in offline] if unclean else [])
    if not candidates:
        return None
    leader = candidates[0]
    isr = [r for r in state["isr"] if r != old and r not in offline] if clean else [leader]
    return {**state, "leader": leader, "leader_epoch": state["leader_epoch"] + 1, "isr": isr}
