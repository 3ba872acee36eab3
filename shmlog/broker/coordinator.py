"""The consumer-group coordinator: Kafka's group membership protocol as a state machine.

There is no I/O in this module: no sockets, no clock, no files. As h11 keeps HTTP/1.1
free of sockets, every input here is a method call that carries the time (`now`, in
milliseconds of a monotonic clock) and returns a list of *effects* for the caller to
carry out:

    Reply(ref, body)     answer request `ref`. Joins are answered late: when the join
                         phase of the rebalance ends, every waiting member gets its Reply.
    Push(conn, body)     an unsolicited message to a member's connection, e.g. "rebalance":
                         members learn of a rebalance at once, not at their next heartbeat.
    Persist(records, ref) write these OffsetRecords to `__consumer_offsets`; as they are
                         written, the caller applies them with `offsets_written(records)`. If
                         the write fails, the caller answers request `ref` with an error
                         instead of the Reply that follows.

Timers are inputs too: `next_deadline()` says when `tick(now)` next has something to do,
and the caller calls it then (no polling period).

The supervisor (shmlog/broker/group_service.py, GroupService) owns the sockets, the clock and
the log; tests/unit/test_coordinator.py drives this module with plain method calls.

Group states and the events that move between them are data (TRANSITIONS, Kafka's own
state names). Every state change goes through `_transition`, which refuses anything not in
the table; a group is only ever created Empty and only ever dropped once Dead. The assignors
(shmlog/broker/assignors/) are pure functions the coordinator runs, rather than a leader
member as classic Kafka does: the coordinator has the topic metadata at hand, and a
rebalance needs one round trip fewer.
"""
import functools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import re2

from shmlog.broker.assignors import ASSIGNOR_FUNCTIONS, withhold_owned_elsewhere
from shmlog.config import COOPERATIVE_ASSIGNORS, EAGER_ASSIGNORS
from shmlog.errors import KafkaError

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_TOPIC_PARTITIONS = 8
NON_EMPTY_GROUP = KafkaError.NON_EMPTY_GROUP
MAX_METADATA_BYTES = 4096     # Kafka's offset.metadata.max.bytes
MAX_PATTERN_CHARS = 1000      # a ^pattern subscription; its compiled program is bounded too (PATTERN_MAX_MEM)
PATTERN_MAX_MEM = 1 << 20     # bytes RE2 may use for one pattern's program (a bigger one is refused)

# ---------------------------------------------------------------------------- states

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"

# (state, event) -> next state. Nothing else is allowed: the coordinator raises
# InvalidTransition for any other pair, so a bug shows up as an error, not a stray state.
TRANSITIONS = {
    (EMPTY, "member_joined"): PREPARING_REBALANCE,
    (PREPARING_REBALANCE, "member_joined"): PREPARING_REBALANCE,
    (COMPLETING_REBALANCE, "member_joined"): PREPARING_REBALANCE,
    (STABLE, "member_joined"): PREPARING_REBALANCE,
    (PREPARING_REBALANCE, "member_left"): PREPARING_REBALANCE,
    (COMPLETING_REBALANCE, "member_left"): PREPARING_REBALANCE,
    (STABLE, "member_left"): PREPARING_REBALANCE,
    (COMPLETING_REBALANCE, "metadata_changed"): PREPARING_REBALANCE,
    (STABLE, "metadata_changed"): PREPARING_REBALANCE,
    (PREPARING_REBALANCE, "join_complete"): COMPLETING_REBALANCE,
    (PREPARING_REBALANCE, "all_members_gone"): EMPTY,
    (COMPLETING_REBALANCE, "all_synced"): STABLE,
    (COMPLETING_REBALANCE, "static_member_replaced"): COMPLETING_REBALANCE,
    (STABLE, "static_member_replaced"): STABLE,
    (EMPTY, "deleted"): DEAD,
    (EMPTY, "offsets_expired"): DEAD,
}

STATES = (EMPTY, PREPARING_REBALANCE, COMPLETING_REBALANCE, STABLE, DEAD)
ASSIGNORS = EAGER_ASSIGNORS + COOPERATIVE_ASSIGNORS


class InvalidTransition(Exception):
    """The coordinator tried a state change its table does not allow (a bug, never user input)."""


# ---------------------------------------------------------------------------- effects

@dataclass(frozen=True)
class Reply:
    ref: Any
    body: dict


@dataclass(frozen=True)
class Push:
    conn: Any
    body: dict


@dataclass(frozen=True)
class OffsetRecord:
    """One committed offset; offset None is a tombstone (the offset is deleted)."""
    group: str
    topic: str
    partition: int
    offset: int | None
    metadata: str = ""
    timestamp: int = 0


@dataclass(frozen=True)
class Persist:
    records: tuple
    ref: Any = None      # the request whose Reply depends on the write (None: nobody waits)


def error_body(code, message):
    return {"error": int(code), "message": message}



@functools.lru_cache(maxsize=1024)
def topic_pattern(entry):
    """The compiled form of a `^pattern` subscription, or ValueError saying why it is refused.

    Patterns come from any client and run in the supervisor, against every topic name, each
    time the topics change: they are compiled with RE2 (as Kafka's broker-side resolution of
    KIP-848 uses RE2/J), whose matching takes time linear in the name whatever the pattern,
    so no pattern can stall the supervisor (Python's `re` backtracks: `^(a+)+$` against a
    long name of a's would run for hours). What RE2 cannot guarantee that for (backreferences,
    lookaround) is refused, as is a pattern over MAX_PATTERN_CHARS characters or whose
    program needs more than PATTERN_MAX_MEM bytes."""
    if len(entry) > MAX_PATTERN_CHARS:
        raise ValueError(f"bad topic pattern {entry[:40]!r}...: {len(entry)} characters, more than the "
                         f"{MAX_PATTERN_CHARS} allowed")
    options = re2.Options()
    options.log_errors = False   # the reason goes back to the member, not to the broker's log
    options.max_mem = PATTERN_MAX_MEM
    try:
        return re2.compile(entry, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"bad topic pattern {entry!r}: {reason} (patterns are RE2 syntax: no backreferences "
                         f"or lookaround)") from None

# ---------------------------------------------------------------------------- state

@dataclass
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    host: str
    conn: Any
    protocols: list
    subscription: list
    owned: set
    session_timeout: int
    rebalance_timeout: int
    last_seen: int
    join_ref: Any = None           # the join request waiting for the join phase to end
    assignment: list = field(default_factory=list)
    synced: bool = False
    connected: bool = True

    @property
    def sort_key(self):
        # Kafka's assignors order static members by group.instance.id, then by member id.
        return (0, self.instance_id, self.member_id) if self.instance_id else (1, "", self.member_id)


@dataclass
class CommittedOffset:
    offset: int
    metadata: str
    timestamp: int


@dataclass
class Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str = ""         # "consumer" once a member joined; "" for a simple group
    protocol: str | None = None
    leader: str | None = None
    members: dict = field(default_factory=dict)      # member_id -> Member, in join order
    static: dict = field(default_factory=dict)       # group.instance.id -> member_id
    offsets: dict = field(default_factory=dict)      # (topic, partition) -> CommittedOffset
    join_deadline: int = 0
    rebalance_started: int = 0
    initial_delay: bool = False
    view: dict = field(default_factory=dict)         # topic -> partitions, as last assigned
    empty_since: int = 0


# ---------------------------------------------------------------------------- the coordinator

class Coordinator:
    """Every consumer group of one broker. Inputs are methods; each returns a list of effects."""

    def __init__(self, initial_rebalance_delay_ms=3000, min_session_timeout_ms=6000,
                 max_session_timeout_ms=1_800_000, offsets_retention_ms=7 * 24 * 3_600_000,
                 new_member_id=None):
        self.initial_rebalance_delay = initial_rebalance_delay_ms
        self.min_session_timeout = min_session_timeout_ms
        self.max_session_timeout = max_session_timeout_ms
        self.offsets_retention = offsets_retention_ms
        self.new_member_id = new_member_id or (lambda client_id: f"{client_id or 'member'}-{uuid.uuid4()}")
        self.groups = {}
        self.topics = {}           # topic -> partition count, as the broker's metadata says

    # ------------------------------------------------------------------ membership inputs

    def join(self, ref, conn, group_id, *, protocols, subscription, session_timeout_ms, rebalance_timeout_ms,
             now, member_id="", instance_id=None, client_id="", host="", owned=()):
        """JoinGroup. Answered when the join phase ends (a Reply to `ref` in some later effect list)."""
        effects = []
        problem = self._check_join(group_id, protocols, subscription, session_timeout_ms, rebalance_timeout_ms)
        if problem:
            return [Reply(ref, problem)]
        g = self.groups.get(group_id)
        if g is None:
            if member_id:
                return [Reply(ref, error_body(KafkaError.UNKNOWN_MEMBER_ID,
                                              f"group {group_id!r} has no member {member_id!r}"))]
            g = self.groups[group_id] = Group(group_id, empty_since=now)
        if g.members and not self._common_protocols(g, protocols):
            return [Reply(ref, error_body(KafkaError.INCONSISTENT_GROUP_PROTOCOL,
                                          f"group {group_id!r} uses {self._protocols_in_use(g)}; this member "
                                          f"offers {list(protocols)} (partition.assignment.strategy)"))]
        owned = {(t, int(p)) for t, p in owned}
        fields = dict(protocols=list(protocols), subscription=list(subscription), owned=owned,
                      session_timeout=session_timeout_ms, rebalance_timeout=rebalance_timeout_ms,
                      client_id=client_id, host=host)
        if member_id:
            m = g.members.get(member_id)
            if m is None:
                return [Reply(ref, self._unknown_member(g, member_id, instance_id))]
            if instance_id and g.static.get(instance_id) != member_id:
                return [Reply(ref, self._fenced(instance_id))]
            for name, value in fields.items():
                setattr(m, name, value)
            self._rejoin(g, m, ref, conn, now, effects)
            return effects
        if instance_id and instance_id in g.static:
            return self._static_rejoin(g, g.members[g.static[instance_id]], ref, conn, fields, now)
        m = Member(self.new_member_id(client_id), instance_id, conn=conn, last_seen=now, **fields)
        g.members[m.member_id] = m
        if instance_id:
            g.static[instance_id] = m.member_id
        g.protocol_type = "consumer"
        self._rejoin(g, m, ref, conn, now, effects)
        return effects

    def _check_join(self, group_id, protocols, subscription, session_timeout, rebalance_timeout):
        if not isinstance(group_id, str) or not group_id:
            return error_body(KafkaError.INVALID_GROUP_ID, "group.id must be a non-empty string")
        if not isinstance(session_timeout, int) or not \
                self.min_session_timeout <= session_timeout <= self.max_session_timeout:
            return error_body(KafkaError.INVALID_SESSION_TIMEOUT,
                              f"session.timeout.ms={session_timeout} is outside the broker's "
                              f"[group.min.session.timeout.ms={self.min_session_timeout}, "
                              f"group.max.session.timeout.ms={self.max_session_timeout}]")
        if not isinstance(rebalance_timeout, int) or rebalance_timeout < 1:
            return error_body(KafkaError.INVALID_REQUEST, f"invalid rebalance timeout {rebalance_timeout!r}")
        if not protocols or any(p not in ASSIGNORS for p in protocols):
            return error_body(KafkaError.INCONSISTENT_GROUP_PROTOCOL,
                              f"unknown assignment strategy in {list(protocols)}; known: {list(ASSIGNORS)}")
        if not subscription:
            return error_body(KafkaError.INVALID_REQUEST, "empty subscription")
        for entry in subscription:
            if entry.startswith("^"):
                try:
                    topic_pattern(entry)
                except ValueError as exc:
                    return error_body(KafkaError.INVALID_REQUEST, str(exc))
        return None

    def _rejoin(self, g, m, ref, conn, now, effects):
        m.join_ref, m.conn, m.connected, m.last_seen = ref, conn, True, now
        if g.state == PREPARING_REBALANCE:
            if g.initial_delay:
                # Kafka's initial delay: each new member extends the wait, up to the rebalance timeout.
                g.join_deadline = max(g.join_deadline, min(now + self.initial_rebalance_delay,
                                                           g.rebalance_started + self._rebalance_timeout(g)))
            self._maybe_complete_join(g, now, effects)
        else:
            self._prepare_rebalance(g, "member_joined", now, effects)

    def _static_rejoin(self, g, old, ref, conn, fields, now):
        """A restarted static member (same group.instance.id, no member id): a new member id
        replaces the old one, which is fenced; in a settled group it keeps its assignment."""
        effects = []
        unchanged = old.protocols == fields["protocols"] and old.subscription == fields["subscription"]
        new_id = self.new_member_id(fields["client_id"])
        if old.join_ref is not None:
            effects.append(Reply(old.join_ref, self._fenced(old.instance_id)))
        del g.members[old.member_id]
        m = Member(new_id, old.instance_id, conn=conn, last_seen=now, assignment=old.assignment,
                   synced=old.synced, **fields)
        g.members[new_id] = m                   # joins the end of the order; its place does not matter
        g.static[old.instance_id] = new_id
        if g.leader == old.member_id:
            g.leader = new_id
        if g.state in (STABLE, COMPLETING_REBALANCE) and unchanged:
            self._transition(g, "static_member_replaced")
            effects.append(Reply(ref, self._join_result(g, m)))
            return effects
        self._rejoin(g, m, ref, conn, now, effects)
        return effects

    def sync(self, ref, group_id, member_id, generation, now, instance_id=None):
        """SyncGroup: the member's assignment for `generation`."""
        g, m, problem = self._member(group_id, member_id, instance_id)
        if problem:
            return [Reply(ref, problem)]
        m.last_seen = now
        refused = self._generation_problem(g, group_id, generation)
        if refused:
            return [Reply(ref, refused)]
        m.synced = True
        effects = [Reply(ref, {"generation": g.generation, "protocol": g.protocol,
                               "assignment": [list(tp) for tp in m.assignment]})]
        if g.state == COMPLETING_REBALANCE and all(x.synced for x in g.members.values()):
            self._transition(g, "all_synced")
        return effects

    def _generation_problem(self, g, group_id, generation):
        """Why a member of generation `generation` may not sync or heartbeat now, or None."""
        if g.state == PREPARING_REBALANCE:
            return error_body(KafkaError.REBALANCE_IN_PROGRESS, f"group {group_id!r} is rebalancing: rejoin")
        if generation != g.generation:
            return self._illegal_generation(g, generation)
        return None

    def heartbeat(self, ref, group_id, member_id, generation, now, instance_id=None):
        g, m, problem = self._member(group_id, member_id, instance_id)
        if problem:
            return [Reply(ref, problem)]
        m.last_seen = now
        refused = self._generation_problem(g, group_id, generation)
        if refused:
            return [Reply(ref, refused)]
        return [Reply(ref, {})]

    def leave(self, ref, group_id, member_id, now, instance_id=None):
        """LeaveGroup (a consumer's close or unsubscribe): its partitions move at once."""
        g, m, problem = self._member(group_id, member_id, instance_id)
        if problem:
            return [Reply(ref, problem)]
        effects = []
        self._remove(g, m, now, effects)
        effects.append(Reply(ref, {}))
        return effects

    def disconnected(self, conn, now):
        """A connection closed: its process exited or died. Dynamic members leave at once;
        static members stay until their session times out, so a restart keeps their partitions."""
        effects = []
        for g in list(self.groups.values()):
            for m in list(g.members.values()):
                if m.conn is not conn:
                    continue
                if m.instance_id:
                    m.connected, m.join_ref = False, None
                else:
                    self._remove(g, m, now, effects)
        return effects

    def tick(self, now):
        """Timers: join phases that ran out, sessions that timed out, expired offsets."""
        effects = []
        for g in list(self.groups.values()):
            if g.state == PREPARING_REBALANCE and now >= g.join_deadline:
                self._complete_join(g, now, effects)
            for m in list(g.members.values()):
                if m.join_ref is None and now - m.last_seen > m.session_timeout and m.member_id in g.members:
                    self._remove(g, m, now, effects)
            if g.state == EMPTY and g.offsets and now - g.empty_since > self.offsets_retention:
                effects.append(Persist(tuple(OffsetRecord(g.group_id, t, p, None)
                                             for t, p in sorted(g.offsets))))
                g.offsets.clear()
                self._transition(g, "offsets_expired")
                del self.groups[g.group_id]
        return effects

    def next_deadline(self):
        """The earliest `now` at which tick() has something to do (None if nothing is timed):
        the end of a join phase, a session that runs out, offsets of an empty group that expire.
        Each time is the first millisecond at which tick()'s own test for it holds."""
        times = []
        for g in self.groups.values():
            if g.state == PREPARING_REBALANCE:
                times.append(g.join_deadline)
            times += [m.last_seen + m.session_timeout + 1 for m in g.members.values() if m.join_ref is None]
            if g.state == EMPTY and g.offsets:
                times.append(g.empty_since + self.offsets_retention + 1)
        return min(times) if times else None

    def topics_changed(self, topics, now):
        """The broker's topics: {name: partition count}. Groups whose subscriptions now cover
        other partitions (a new topic matching a pattern, added partitions) rebalance."""
        self.topics = dict(topics)
        effects = []
        for g in self.groups.values():
            if g.state in (STABLE, COMPLETING_REBALANCE) and self._view(g) != g.view:
                self._prepare_rebalance(g, "metadata_changed", now, effects)
        return effects

    # ------------------------------------------------------------------ offsets inputs

    def commit(self, ref, group_id, offsets, now, member_id="", generation=-1, instance_id=None, timestamp=0):
        """OffsetCommit of [(topic, partition, offset, metadata)], fenced as Kafka fences it:
        a non-member gets UNKNOWN_MEMBER_ID (or FENCED_INSTANCE_ID), an old generation
        ILLEGAL_GENERATION, a commit while assignments are handed out REBALANCE_IN_PROGRESS.
        Commits without a member id and generation -1 are for groups with no members."""
        if not isinstance(group_id, str) or not group_id:
            return [Reply(ref, error_body(KafkaError.INVALID_GROUP_ID, "group.id must be a non-empty string"))]
        g = self.groups.get(group_id)
        if g is None:
            if generation >= 0 or member_id:
                return [Reply(ref, error_body(KafkaError.ILLEGAL_GENERATION if generation >= 0
                                              else KafkaError.UNKNOWN_MEMBER_ID,
                                              f"group {group_id!r} has no generation {generation} "
                                              f"(it has no members)"))]
        elif generation < 0 and not member_id:
            if g.members:
                return [Reply(ref, error_body(KafkaError.UNKNOWN_MEMBER_ID,
                                              f"group {group_id!r} has active members ({g.state}); offsets of "
                                              f"an active group are committed by its members only"))]
        else:
            g, m, problem = self._member(group_id, member_id, instance_id)
            if problem:
                return [Reply(ref, problem)]
            m.last_seen = now
            if generation != g.generation:
                return [Reply(ref, self._illegal_generation(g, generation))]
            if g.state == COMPLETING_REBALANCE:
                return [Reply(ref, error_body(KafkaError.REBALANCE_IN_PROGRESS,
                                              f"group {group_id!r} is handing out generation {g.generation}'s "
                                              f"assignments; commit again once synced"))]
        records, results = [], []
        for topic, partition, offset, metadata in offsets:
            metadata = metadata or ""
            if self.topics.get(topic, 0) <= partition or partition < 0:
                results.append([topic, partition, KafkaError.UNKNOWN_TOPIC_OR_PART])
            elif len(metadata.encode()) > MAX_METADATA_BYTES:
                results.append([topic, partition, KafkaError.OFFSET_METADATA_TOO_LARGE])
            elif not isinstance(offset, int) or offset < 0:
                results.append([topic, partition, KafkaError.INVALID_COMMIT_OFFSET_SIZE])
            else:
                records.append(OffsetRecord(group_id, topic, partition, offset, metadata, timestamp))
                results.append([topic, partition, 0])
        effects = [Persist(tuple(records), ref)] if records else []
        return effects + [Reply(ref, {"results": results})]

    def offsets_written(self, records, now=0):
        """Apply OffsetRecords once they are in __consumer_offsets (also used to replay it)."""
        for r in records:
            g = self.groups.get(r.group)
            if r.offset is None:
                if g is not None:
                    g.offsets.pop((r.topic, r.partition), None)
                    if g.state == EMPTY and not g.offsets and not g.members:
                        self._transition(g, "deleted")
                        del self.groups[r.group]
                continue
            if g is None:
                g = self.groups[r.group] = Group(r.group, empty_since=now)
            g.offsets[(r.topic, r.partition)] = CommittedOffset(r.offset, r.metadata, r.timestamp)

    def fetch_offsets(self, ref, group_id, partitions=None):
        """OffsetFetch: [(topic, partition)] or None for every committed partition of the group."""
        g = self.groups.get(group_id)
        offsets = g.offsets if g is not None else {}
        keys = sorted(offsets) if partitions is None else [(t, int(p)) for t, p in partitions]
        out = []
        for key in keys:
            c = offsets.get(key)
            out.append([key[0], key[1], c.offset, c.metadata] if c else [key[0], key[1], -1001, ""])
        return [Reply(ref, {"offsets": out})]

    # ------------------------------------------------------------------ admin inputs

    def list_groups(self, ref):
        return [Reply(ref, {"groups": [{"group_id": g.group_id, "state": g.state, "protocol_type": g.protocol_type}
                                       for g in sorted(self.groups.values(), key=lambda g: g.group_id)]})]

    def describe_groups(self, ref, group_ids):
        out = []
        for gid in group_ids:
            g = self.groups.get(gid)
            if g is None:
                out.append({"group_id": gid, "state": DEAD, "protocol_type": "", "protocol": "", "generation": -1,
                            "leader": "", "members": []})
                continue
            # As Kafka: assignments only of a Stable group; mid-rebalance they are being replaced.
            stable = g.state == STABLE
            out.append({"group_id": gid, "state": g.state, "protocol_type": g.protocol_type,
                        "protocol": g.protocol or "", "generation": g.generation, "leader": g.leader or "",
                        "members": [{"member_id": m.member_id, "instance_id": m.instance_id,
                                     "client_id": m.client_id, "host": m.host,
                                     "assignment": [list(tp) for tp in m.assignment] if stable else []}
                                    for m in g.members.values()]})
        return [Reply(ref, {"groups": out})]

    def delete_groups(self, ref, group_ids):
        results, records = {}, []
        for gid in group_ids:
            g = self.groups.get(gid)
            if g is None:
                results[gid] = [KafkaError.GROUP_ID_NOT_FOUND, f"group {gid!r} does not exist"]
            elif g.members:
                results[gid] = [NON_EMPTY_GROUP, f"group {gid!r} has {len(g.members)} active member(s) "
                                                 f"({g.state}): stop them first"]
            else:
                records += [OffsetRecord(gid, t, p, None) for t, p in sorted(g.offsets)]
                g.offsets.clear()
                self._transition(g, "deleted")
                del self.groups[gid]
                results[gid] = None
        effects = [Persist(tuple(records), ref)] if records else []
        return effects + [Reply(ref, {"results": results})]

    # ------------------------------------------------------------------ internals

    def _transition(self, g, event):
        nxt = TRANSITIONS.get((g.state, event))
        if nxt is None:
            raise InvalidTransition(f"group {g.group_id!r}: no transition from {g.state} on {event}")
        g.state = nxt

    def fencing_problem(self, group_id, member_id, generation, instance_id=None):
        """Why offsets a transaction carries for a member of `generation` must be refused (KIP-447:
        the member was replaced or the group moved to a new generation since it read them), or None."""
        g, m, problem = self._member(group_id, member_id, instance_id)
        if problem:
            return problem
        if generation != g.generation:
            return error_body(KafkaError.ILLEGAL_GENERATION, f"group {group_id!r} is at generation {g.generation}, "
                              f"not {generation}: the partitions may have moved to another member")
        return None

    def _member(self, group_id, member_id, instance_id):
        g = self.groups.get(group_id)
        if g is None:
            return None, None, error_body(KafkaError.UNKNOWN_MEMBER_ID,
                                          f"group {group_id!r} does not exist (or has no members)")
        if instance_id and instance_id in g.static and g.static[instance_id] != member_id:
            return g, None, self._fenced(instance_id)
        m = g.members.get(member_id)
        if m is None:
            return g, None, self._unknown_member(g, member_id, instance_id)
        return g, m, None

    def _unknown_member(self, g, member_id, instance_id):
        if instance_id and instance_id in g.static:
            return self._fenced(instance_id)
        return error_body(KafkaError.UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in group {g.group_id!r} "
                                                         f"(it left, timed out or was removed in a rebalance)")

    @staticmethod
    def _fenced(instance_id):
        return error_body(KafkaError.FENCED_INSTANCE_ID,
                          f"group.instance.id {instance_id!r} was taken over by a newer member with that id")

    @staticmethod
    def _illegal_generation(g, generation):
        return error_body(KafkaError.ILLEGAL_GENERATION, f"generation {generation} of group {g.group_id!r} is "
                                                          f"over; the group is at generation {g.generation}")

    def _rebalance_timeout(self, g):
        return max([m.rebalance_timeout for m in g.members.values()] or [0])

    def _prepare_rebalance(self, g, event, now, effects):
        was_empty = g.state == EMPTY
        self._transition(g, event)
        g.rebalance_started = now
        g.initial_delay = was_empty and self.initial_rebalance_delay > 0
        if g.initial_delay:
            g.join_deadline = now + min(self.initial_rebalance_delay, self._rebalance_timeout(g))
        else:
            g.join_deadline = now + self._rebalance_timeout(g)
        for m in g.members.values():
            m.synced = False
            if m.join_ref is None and m.connected:
                effects.append(Push(m.conn, {"event": "rebalance", "group": g.group_id, "member_id": m.member_id,
                                             "generation": g.generation}))
        self._maybe_complete_join(g, now, effects)

    def _maybe_complete_join(self, g, now, effects):
        if g.state != PREPARING_REBALANCE or g.initial_delay and g.members:
            return
        if all(m.join_ref is not None for m in g.members.values()):
            self._complete_join(g, now, effects)

    def _remove(self, g, m, now, effects):
        if m.join_ref is not None:
            effects.append(Reply(m.join_ref, error_body(KafkaError.UNKNOWN_MEMBER_ID,
                                                        f"member {m.member_id!r} was removed from the group")))
        del g.members[m.member_id]
        if m.instance_id and g.static.get(m.instance_id) == m.member_id:
            del g.static[m.instance_id]
        if g.leader == m.member_id:
            g.leader = None
        if g.state == PREPARING_REBALANCE:
            self._maybe_complete_join(g, now, effects)
        else:
            self._prepare_rebalance(g, "member_left", now, effects)

    def _complete_join(self, g, now, effects):
        for m in [m for m in g.members.values() if m.join_ref is None]:
            del g.members[m.member_id]          # did not rejoin in time: out, as in Kafka
            if m.instance_id and g.static.get(m.instance_id) == m.member_id:
                del g.static[m.instance_id]
        g.generation += 1
        g.initial_delay = False
        if not g.members:
            g.protocol = g.leader = None
            g.view = {}
            g.empty_since = now
            self._transition(g, "all_members_gone")
            if not g.offsets:
                self._transition(g, "deleted")
                del self.groups[g.group_id]
            return
        g.protocol = self._select_protocol(g)
        if g.leader not in g.members:
            g.leader = next(iter(g.members))
        g.view = self._view(g)
        subscribed = {m.member_id: self._topics_of(m) for m in g.members.values()}
        targets = ASSIGNOR_FUNCTIONS[g.protocol](
            [(m.member_id, m.sort_key, subscribed[m.member_id], m.owned) for m in g.members.values()], g.view)
        if g.protocol in COOPERATIVE_ASSIGNORS:
            targets = withhold_owned_elsewhere(targets, {m.member_id: m.owned for m in g.members.values()})
        self._transition(g, "join_complete")
        for m in g.members.values():
            m.assignment = targets[m.member_id]
            m.synced = False
            m.last_seen = now
            effects.append(Reply(m.join_ref, self._join_result(g, m)))
            m.join_ref = None

    def _join_result(self, g, m):
        body = {"generation": g.generation, "member_id": m.member_id, "leader": g.leader, "protocol": g.protocol}
        if m.member_id == g.leader:
            body["members"] = [x.member_id for x in g.members.values()]
        return body

    def _protocols_in_use(self, g):
        common = None
        for m in g.members.values():
            common = set(m.protocols) if common is None else common & set(m.protocols)
        return sorted(common or ())

    def _common_protocols(self, g, protocols):
        return set(self._protocols_in_use(g)) & set(protocols)

    def _select_protocol(self, g):
        """Kafka's rule: among protocols every member supports, each member votes for the one
        it prefers most; most votes wins (ties: the leader's preference order)."""
        candidates = set(self._protocols_in_use(g))
        votes = {}
        for m in g.members.values():
            choice = next(p for p in m.protocols if p in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        leader = g.members.get(g.leader) or next(iter(g.members.values()))
        order = [p for p in leader.protocols if p in candidates]
        return max(order, key=lambda p: (votes.get(p, 0), -order.index(p)))

    def _topics_of(self, m):
        out = set()
        for entry in m.subscription:
            if entry.startswith("^"):
                pattern = topic_pattern(entry)
                out |= {t for t in self.topics if not t.startswith("__") and pattern.search(t)}
            elif entry in self.topics:
                out.add(entry)
        return out

    def _view(self, g):
        topics = set()
        for m in g.members.values():
            topics |= self._topics_of(m)
        return {t: self.topics[t] for t in sorted(topics)}


# ---------------------------------------------------------------------------- the offsets log format

def java_string_hash(s):
    """java.lang.String.hashCode: over UTF-16 code units, in 32-bit two's complement."""
    data = s.encode("utf-16-be")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def offsets_partition(group_id, partitions=OFFSETS_TOPIC_PARTITIONS):
    """Which partition of __consumer_offsets holds a group: Kafka's Utils.abs(groupId.hashCode) % n."""
    h = java_string_hash(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def encode_offset_record(r):
    """(key, value) bytes of an OffsetRecord; value None for a tombstone (compaction drops the key)."""
    key = json.dumps([r.group, r.topic, r.partition], separators=(",", ":")).encode()
    if r.offset is None:
        return key, None
    return key, json.dumps({"offset": r.offset, "metadata": r.metadata, "timestamp": r.timestamp},
                           separators=(",", ":")).encode()


def decode_offset_record(key, value):
    group, topic, partition = json.loads(key)
    if value is None:
        return OffsetRecord(group, topic, int(partition), None)
    v = json.loads(value)
    return OffsetRecord(group, topic, int(partition), int(v["offset"]), v.get("metadata") or "",
                        int(v.get("timestamp") or 0))
