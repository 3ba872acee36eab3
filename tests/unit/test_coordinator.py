"""The group coordinator as a pure state machine: method calls in, effects out, no processes.

Each test drives shmlog.broker.coordinator.Coordinator with explicit times and connection tokens
(plain strings) and checks the effects it asks for: Reply (to a request ref), Push (to a
connection) and Persist (records for __consumer_offsets).
"""
import itertools
import random

import pytest

from shmlog.broker.assignors import (
    range_assignor,
    roundrobin_assignor,
    sticky_assignor,
    withhold_owned_elsewhere,
)
from shmlog.broker.coordinator import (
    COMPLETING_REBALANCE,
    DEAD,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    STATES,
    TRANSITIONS,
    Coordinator,
    Group,
    InvalidTransition,
    OffsetRecord,
    Persist,
    Push,
    Reply,
    decode_offset_record,
    encode_offset_record,
    java_string_hash,
    offsets_partition,
)
from shmlog.errors import KafkaError

SESSION = 1000
REBALANCE = 5000


class Harness:
    """A coordinator plus bookkeeping: which request refs got which replies."""

    def __init__(self, topics=None, **kwargs):
        ids = itertools.count(1)
        kwargs.setdefault("initial_rebalance_delay_ms", 0)
        kwargs.setdefault("min_session_timeout_ms", 10)
        self.c = Coordinator(new_member_id=lambda client_id: f"m{next(ids)}", **kwargs)
        self.refs = itertools.count(1)
        self.now = 0
        self.c.topics_changed(topics if topics is not None else {"t": 4}, self.now)

    def join(self, conn, member_id="", protocols=("range",), subscription=("t",), owned=(), instance_id=None,
             session=SESSION):
        ref = next(self.refs)
        effects = self.c.join(ref, conn, "g", protocols=list(protocols), subscription=list(subscription),
                              session_timeout_ms=session, rebalance_timeout_ms=REBALANCE, now=self.now,
                              member_id=member_id, instance_id=instance_id, owned=owned)
        return ref, effects

    def sync(self, member_id, generation, instance_id=None):
        return self.c.sync(next(self.refs), "g", member_id, generation, self.now, instance_id)[0].body

    def commit(self, member_id, generation, offsets=(("t", 0, 5, ""),), instance_id=None):
        return self.c.commit(next(self.refs), "g", list(offsets), self.now, member_id=member_id,
                             generation=generation, instance_id=instance_id)

    def group(self):
        return self.c.groups["g"]

    def settle(self, *conns, protocols=("range",)):
        """Join members one per conn and bring the group to Stable; returns {conn: member_id}."""
        ids = {}
        for conn in conns:
            _, effects = self.join(conn, protocols=protocols)
            pushed = [e.conn for e in effects if isinstance(e, Push)]
            for other in pushed:
                self.join(other, member_id=ids[other], protocols=protocols)
            ids[conn] = self._member_of(conn)
        gen = self.group().generation
        for mid in ids.values():
            self.sync(mid, gen)
        assert self.group().state == STABLE
        return ids

    def _member_of(self, conn):
        return next(m.member_id for m in self.group().members.values() if m.conn == conn)

    def assignment(self, member_id):
        return sorted(tuple(tp) for tp in self.group().members[member_id].assignment)


def replies(effects, ref=None):
    return [e.body for e in effects if isinstance(e, Reply) and (ref is None or e.ref == ref)]


def error_of(body):
    return body.get("error")


# ---------------------------------------------------------------------------- the transition table

def test_every_state_in_the_transition_table_is_a_known_group_state():
    for (state, _), nxt in TRANSITIONS.items():
        assert state in STATES and nxt in STATES


def test_a_transition_the_table_does_not_list_is_refused():
    h = Harness()
    g = Group("g")
    with pytest.raises(InvalidTransition):
        h.c._transition(g, "all_synced")   # Empty -> Stable is not a thing


def test_a_dead_group_has_no_way_out():
    assert not [event for (state, event) in TRANSITIONS if state == DEAD]


# ---------------------------------------------------------------------------- joining

def test_the_first_member_of_a_group_gets_generation_one_and_every_partition():
    h = Harness()
    ref, effects = h.join("c1")
    (body,) = replies(effects, ref)
    assert body["generation"] == 1 and body["leader"] == body["member_id"] and body["protocol"] == "range"
    assert h.group().state == COMPLETING_REBALANCE
    assignment = h.sync(body["member_id"], 1)["assignment"]
    assert assignment == [["t", 0], ["t", 1], ["t", 2], ["t", 3]]
    assert h.group().state == STABLE


def test_a_new_member_makes_the_others_rejoin_with_a_push_and_the_join_waits_for_them():
    h = Harness()
    ids = h.settle("c1")
    ref2, effects = h.join("c2")
    assert replies(effects, ref2) == []                       # answered when c1 has rejoined
    assert [e.conn for e in effects if isinstance(e, Push)] == ["c1"]
    assert h.group().state == PREPARING_REBALANCE
    ref1, effects = h.join("c1", member_id=ids["c1"])
    bodies = {e.ref: e.body for e in effects if isinstance(e, Reply)}
    assert set(bodies) == {ref1, ref2} and {b["generation"] for b in bodies.values()} == {2}


def test_the_initial_rebalance_delay_waits_for_more_members_before_the_first_assignment():
    h = Harness(initial_rebalance_delay_ms=300)
    ref1, effects = h.join("c1")
    assert replies(effects) == []
    h.now = 200
    ref2, effects = h.join("c2")
    assert replies(effects) == []
    h.now = 450                                              # extended to 200 + 300 by the second join
    assert replies(h.c.tick(h.now)) == []
    h.now = 500
    bodies = replies(h.c.tick(h.now))
    assert len(bodies) == 2 and all(b["generation"] == 1 for b in bodies)


def test_a_join_with_an_unknown_member_id_is_refused_with_unknown_member_id():
    h = Harness()
    h.settle("c1")
    ref, effects = h.join("c9", member_id="nobody")
    assert error_of(replies(effects, ref)[0]) == KafkaError.UNKNOWN_MEMBER_ID


def test_a_session_timeout_outside_the_brokers_bounds_is_refused():
    h = Harness(min_session_timeout_ms=6000)
    ref, effects = h.join("c1", session=100)
    assert error_of(replies(effects, ref)[0]) == KafkaError.INVALID_SESSION_TIMEOUT


def test_a_member_with_no_strategy_in_common_with_the_group_is_refused():
    h = Harness()
    h.settle("c1", protocols=("cooperative-sticky",))
    ref, effects = h.join("c2", protocols=("range",))
    assert error_of(replies(effects, ref)[0]) == KafkaError.INCONSISTENT_GROUP_PROTOCOL


def test_the_strategy_is_the_one_most_members_vote_for_even_against_the_leader():
    h = Harness()
    prefs = {"c1": ("range", "roundrobin"), "c2": ("roundrobin", "range"), "c3": ("roundrobin", "range")}
    ids = {}
    for conn, protocols in prefs.items():
        _, effects = h.join(conn, protocols=protocols)
        ids[conn] = h._member_of(conn)
        for e in effects:
            if isinstance(e, Push):
                h.join(e.conn, member_id=ids[e.conn], protocols=prefs[e.conn])
    assert h.group().leader == ids["c1"] and h.group().protocol == "roundrobin"


def test_a_tied_vote_goes_to_the_leaders_preference():
    h = Harness()
    h.join("c1", protocols=("range", "roundrobin"))
    m1 = h._member_of("c1")
    h.join("c2", protocols=("roundrobin", "range"))
    h.join("c1", member_id=m1, protocols=("range", "roundrobin"))
    assert h.group().protocol == "range"


def test_a_strategy_only_some_members_support_is_not_chosen():
    h = Harness()
    h.join("c1", protocols=("range", "roundrobin"))
    m1 = h._member_of("c1")
    h.join("c2", protocols=("roundrobin",))
    h.join("c1", member_id=m1, protocols=("range", "roundrobin"))
    assert h.group().protocol == "roundrobin"


# ---------------------------------------------------------------------------- liveness

def test_a_dynamic_member_whose_connection_closes_is_removed_at_once_and_the_rest_rebalance():
    h = Harness()
    ids = h.settle("c1", "c2")
    effects = h.c.disconnected("c2", h.now)
    assert ids["c2"] not in h.group().members
    assert [e.conn for e in effects if isinstance(e, Push)] == ["c1"]
    ref, effects = h.join("c1", member_id=ids["c1"])
    (body,) = replies(effects, ref)
    assert h.sync(ids["c1"], body["generation"])["assignment"] == [["t", p] for p in range(4)]


def test_a_silent_member_is_evicted_after_its_session_timeout():
    h = Harness()
    ids = h.settle("c1", "c2")
    h.now = SESSION
    h.c.heartbeat(next(h.refs), "g", ids["c1"], h.group().generation, h.now)
    h.now = SESSION + 1
    h.c.tick(h.now)
    assert set(h.group().members) == {ids["c1"]} and h.group().state == PREPARING_REBALANCE


def test_a_member_that_does_not_rejoin_within_the_rebalance_timeout_is_dropped():
    h = Harness()
    ids = h.settle("c1", "c2")
    h.join("c3")
    h.join("c1", member_id=ids["c1"])
    for t in range(0, REBALANCE + 1, SESSION // 2):     # c2 keeps heartbeating but never rejoins
        h.now = t
        h.c.heartbeat(next(h.refs), "g", ids["c2"], 1, h.now)
        h.c.tick(h.now)
    assert ids["c2"] not in h.group().members and h.group().state == COMPLETING_REBALANCE


def test_heartbeats_during_a_rebalance_answer_rebalance_in_progress():
    h = Harness()
    ids = h.settle("c1")
    h.join("c2")
    (effect,) = h.c.heartbeat(next(h.refs), "g", ids["c1"], 1, h.now)
    assert error_of(effect.body) == KafkaError.REBALANCE_IN_PROGRESS


def test_the_last_member_leaving_empties_the_group_and_keeps_its_offsets():
    h = Harness()
    ids = h.settle("c1")
    h.c.offsets_written(h.commit(ids["c1"], 1)[0].records)
    h.c.leave(next(h.refs), "g", ids["c1"], h.now)
    assert h.group().state == EMPTY and h.group().offsets[("t", 0)].offset == 5


# ---------------------------------------------------------------------------- static membership

def test_a_static_member_that_disconnects_keeps_its_partitions_until_its_session_times_out():
    h = Harness()
    h.join("c1", instance_id="w1")
    mid = h._member_of("c1")
    h.sync(mid, 1)
    assert h.c.disconnected("c1", h.now) == []
    assert h.group().state == STABLE and mid in h.group().members
    h.now = SESSION + 1
    h.c.tick(h.now)
    assert "g" not in h.c.groups     # gone with its last member (it had no committed offsets)


def test_a_restarted_static_member_gets_its_assignment_back_without_a_rebalance():
    h = Harness()
    h.join("c1", instance_id="w1")
    old = h._member_of("c1")
    h.sync(old, 1)
    h.join("c2", instance_id="w2")
    h.join("c1", member_id=old, instance_id="w1")
    gen = h.group().generation
    for conn in ("c1", "c2"):
        h.sync(h._member_of(conn), gen)
    before = h.assignment(old)
    h.c.disconnected("c1", h.now)
    ref, effects = h.join("c1-restarted", instance_id="w1")
    (body,) = replies(effects, ref)
    assert body["generation"] == gen and not [e for e in effects if isinstance(e, Push)]
    assert h.group().state == STABLE
    assert sorted(map(tuple, h.sync(body["member_id"], gen, "w1")["assignment"])) == before


def test_the_replaced_static_member_id_is_fenced():
    h = Harness()
    h.join("c1", instance_id="w1")
    old = h._member_of("c1")
    h.sync(old, 1)
    h.join("c1-restarted", instance_id="w1")
    (effect,) = h.c.heartbeat(next(h.refs), "g", old, 1, h.now, instance_id="w1")
    assert error_of(effect.body) == KafkaError.FENCED_INSTANCE_ID


# ---------------------------------------------------------------------------- commit fencing

def test_a_commit_from_the_current_generation_is_persisted_then_replied():
    h = Harness()
    ids = h.settle("c1")
    persist, reply = h.commit(ids["c1"], 1)
    assert isinstance(persist, Persist) and persist.records[0].offset == 5
    assert reply.body == {"results": [["t", 0, 0]]}


def test_a_commit_from_a_stale_generation_is_fenced_with_illegal_generation():
    h = Harness()
    ids = h.settle("c1", "c2")
    (reply,) = h.commit(ids["c1"], h.group().generation - 1)
    assert error_of(reply.body) == KafkaError.ILLEGAL_GENERATION


def test_a_commit_from_a_member_no_longer_in_the_group_is_fenced_with_unknown_member_id():
    h = Harness()
    ids = h.settle("c1", "c2")
    h.c.disconnected("c2", h.now)
    (reply,) = h.commit(ids["c2"], 2)
    assert error_of(reply.body) == KafkaError.UNKNOWN_MEMBER_ID


def test_a_commit_while_assignments_are_handed_out_answers_rebalance_in_progress():
    h = Harness()
    h.join("c1")
    mid = h._member_of("c1")
    assert h.group().state == COMPLETING_REBALANCE
    (reply,) = h.commit(mid, 1)
    assert error_of(reply.body) == KafkaError.REBALANCE_IN_PROGRESS


def test_a_commit_with_the_current_generation_during_the_join_phase_is_accepted():
    # This is how eager members commit in on_revoke before they rejoin.
    h = Harness()
    ids = h.settle("c1")
    h.join("c2")
    assert h.group().state == PREPARING_REBALANCE
    persist, reply = h.commit(ids["c1"], 1)
    assert reply.body["results"] == [["t", 0, 0]]


def test_a_commit_without_membership_is_refused_while_the_group_has_members():
    h = Harness()
    h.settle("c1")
    (reply,) = h.commit("", -1)
    assert error_of(reply.body) == KafkaError.UNKNOWN_MEMBER_ID


def test_a_commit_without_membership_is_accepted_for_a_group_without_members():
    h = Harness()
    persist, reply = h.commit("", -1)
    h.c.offsets_written(persist.records)
    assert h.group().state == EMPTY and h.group().protocol_type == ""


def test_a_commit_for_an_unknown_partition_fails_only_that_partition():
    h = Harness()
    ids = h.settle("c1")
    persist, reply = h.commit(ids["c1"], 1, offsets=[("t", 0, 1, ""), ("t", 9, 1, ""), ("nope", 0, 1, "")])
    assert reply.body["results"] == [["t", 0, 0], ["t", 9, KafkaError.UNKNOWN_TOPIC_OR_PART],
                                     ["nope", 0, KafkaError.UNKNOWN_TOPIC_OR_PART]]
    assert [r.partition for r in persist.records] == [0]


# ---------------------------------------------------------------------------- metadata

def test_a_pattern_subscription_rebalances_when_a_matching_topic_appears():
    h = Harness(topics={"orders-eu": 2})
    ref, effects = h.join("c1", subscription=("^orders-.*",))
    mid = h._member_of("c1")
    h.sync(mid, 1)
    effects = h.c.topics_changed({"orders-eu": 2, "orders-us": 2, "other": 1}, h.now)
    assert [e.conn for e in effects if isinstance(e, Push)] == ["c1"]
    ref, effects = h.join("c1", member_id=mid, subscription=("^orders-.*",))
    assert h.sync(mid, 2)["assignment"] == [["orders-eu", 0], ["orders-eu", 1], ["orders-us", 0], ["orders-us", 1]]


def test_a_pattern_does_not_match_internal_topics():
    h = Harness(topics={"__consumer_offsets": 8, "a": 1})
    h.join("c1", subscription=("^.*",))
    assert h.sync(h._member_of("c1"), 1)["assignment"] == [["a", 0]]


def test_new_partitions_of_a_subscribed_topic_cause_a_rebalance():
    h = Harness()
    h.settle("c1")
    effects = h.c.topics_changed({"t": 6}, h.now)
    assert h.group().state == PREPARING_REBALANCE and [e for e in effects if isinstance(e, Push)]


# ---------------------------------------------------------------------------- assignors

def members(*spec):
    """('a', {'t0', 't1'}, owned) ... -> assignor input."""
    return [(mid, (1, "", mid), set(topics), set(owned)) for mid, topics, owned in spec]


def test_range_matches_kafkas_documented_example():
    # Kafka's RangeAssignor javadoc: C0, C1; t0, t1 with 3 partitions each.
    out = range_assignor(members(("C0", {"t0", "t1"}, ()), ("C1", {"t0", "t1"}, ())), {"t0": 3, "t1": 3})
    assert out == {"C0": [("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)], "C1": [("t0", 2), ("t1", 2)]}


def test_roundrobin_matches_kafkas_documented_example():
    out = roundrobin_assignor(members(("C0", {"t0", "t1"}, ()), ("C1", {"t0", "t1"}, ())), {"t0": 3, "t1": 3})
    assert out == {"C0": [("t0", 0), ("t0", 2), ("t1", 1)], "C1": [("t0", 1), ("t1", 0), ("t1", 2)]}


def test_roundrobin_skips_members_not_subscribed_to_a_topic():
    out = roundrobin_assignor(members(("C0", {"t0"}, ()), ("C1", {"t0", "t1"}, ()), ("C2", {"t0", "t1", "t2"}, ())),
                              {"t0": 1, "t1": 2, "t2": 3})
    assert out == {"C0": [("t0", 0)], "C1": [("t1", 0)], "C2": [("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]}


def test_sticky_keeps_every_partition_whose_owner_may_keep_it():
    before = sticky_assignor(members(("a", {"t"}, ()), ("b", {"t"}, ()), ("c", {"t"}, ())), {"t": 9})
    after = sticky_assignor(members(("a", {"t"}, before["a"]), ("b", {"t"}, before["b"]),
                                    ("c", {"t"}, before["c"]), ("d", {"t"}, ())), {"t": 9})
    moved = sum(1 for m in "abc" for tp in before[m] if tp not in after[m])
    assert moved == 2 and sorted(len(v) for v in after.values()) == [2, 2, 2, 3]


def test_sticky_is_complete_disjoint_and_balanced_for_random_groups():
    rng = random.Random(4)
    for _ in range(200):
        parts = {f"t{i}": rng.randint(1, 7) for i in range(rng.randint(1, 3))}
        all_tps = [(t, p) for t, n in parts.items() for p in range(n)]
        n_members = rng.randint(1, 6)
        owned = [set() for _ in range(n_members)]
        for tp in all_tps:
            if rng.random() < 0.6:
                owned[rng.randrange(n_members)].add(tp)
        out = sticky_assignor(members(*[(f"m{i}", set(parts), owned[i]) for i in range(n_members)]), parts)
        flat = [tp for tps in out.values() for tp in tps]
        assert sorted(flat) == sorted(all_tps)
        sizes = [len(v) for v in out.values()]
        assert max(sizes) - min(sizes) <= 1


def test_cooperative_rebalancing_first_only_revokes_what_moves():
    target = {"a": [("t", 0), ("t", 1)], "b": [("t", 2), ("t", 3)]}
    owned = {"a": {("t", 0), ("t", 1), ("t", 2), ("t", 3)}, "b": set()}
    assert withhold_owned_elsewhere(target, owned) == {"a": [("t", 0), ("t", 1)], "b": []}


def test_a_cooperative_group_moves_partitions_to_a_new_member_in_two_rounds():
    h = Harness()
    h.join("c1", protocols=("cooperative-sticky",))
    m1 = h._member_of("c1")
    h.sync(m1, 1)
    everything = [("t", p) for p in range(4)]
    h.join("c2", protocols=("cooperative-sticky",))
    m2 = h._member_of("c2")
    h.join("c1", member_id=m1, protocols=("cooperative-sticky",), owned=everything)
    first = {m: h.sync(m, 2)["assignment"] for m in (m1, m2)}
    assert len(first[m1]) == 2 and first[m2] == []            # round one: c1 gives two back, c2 waits
    h.join("c1", member_id=m1, protocols=("cooperative-sticky",), owned=[tuple(x) for x in first[m1]])
    h.join("c2", member_id=m2, protocols=("cooperative-sticky",))
    second = {m: h.sync(m, 3)["assignment"] for m in (m1, m2)}
    assert second[m1] == first[m1] and len(second[m2]) == 2    # round two: they move


def test_a_cooperative_group_hands_a_dead_members_partitions_over_in_one_round():
    h = Harness()
    h.join("c1", protocols=("cooperative-sticky",))
    m1 = h._member_of("c1")
    h.join("c2", protocols=("cooperative-sticky",))
    m2 = h._member_of("c2")
    h.join("c1", member_id=m1, protocols=("cooperative-sticky",))
    for m in (m1, m2):
        h.sync(m, 2)
    kept = h.assignment(m1)
    h.c.disconnected("c2", h.now)
    ref, effects = h.join("c1", member_id=m1, protocols=("cooperative-sticky",), owned=kept)
    (body,) = replies(effects, ref)
    assert h.sync(m1, body["generation"])["assignment"] == [["t", p] for p in range(4)]


# ---------------------------------------------------------------------------- offsets and admin

def test_offset_records_round_trip_and_a_tombstone_deletes():
    r = OffsetRecord("g", "t", 3, 42, "meta", 1700000000000)
    assert decode_offset_record(*encode_offset_record(r)) == r
    key, value = encode_offset_record(OffsetRecord("g", "t", 3, None))
    assert value is None and decode_offset_record(key, value).offset is None


def test_replaying_the_offsets_log_rebuilds_the_table_with_the_last_value_winning():
    h = Harness()
    h.c.offsets_written([OffsetRecord("g", "t", 0, 1), OffsetRecord("g", "t", 0, 7), OffsetRecord("g", "t", 1, 3),
                         OffsetRecord("g", "t", 1, None)])
    (reply,) = h.c.fetch_offsets(1, "g", [("t", 0), ("t", 1)])
    assert reply.body["offsets"] == [["t", 0, 7, ""], ["t", 1, -1001, ""]]


def test_the_offsets_partition_of_a_group_is_kafkas_hash_of_the_group_id():
    assert java_string_hash("hello") == 99162322            # "hello".hashCode() in Java
    assert java_string_hash("polygenelubricants") == -2147483648
    assert offsets_partition("polygenelubricants", 50) == 0  # Utils.abs(Integer.MIN_VALUE) is 0


def test_deleting_an_empty_group_tombstones_its_offsets():
    h = Harness()
    persist, _ = h.commit("", -1)
    h.c.offsets_written(persist.records)
    persist, reply = h.c.delete_groups(1, ["g"])
    assert [r.offset for r in persist.records] == [None] and reply.body["results"] == {"g": None}
    assert "g" not in h.c.groups


def test_deleting_a_group_with_members_is_refused():
    h = Harness()
    h.settle("c1")
    (reply,) = h.c.delete_groups(1, ["g"])
    assert reply.body["results"]["g"][0] == 68                # NON_EMPTY_GROUP


def test_describing_a_group_shows_state_strategy_members_and_assignments():
    h = Harness()
    ids = h.settle("c1", "c2")
    (reply,) = h.c.describe_groups(1, ["g", "unknown"])
    g, unknown = reply.body["groups"]
    assert g["state"] == STABLE and g["protocol"] == "range"
    assert {m["member_id"]: m["assignment"] for m in g["members"]} == \
        {ids["c1"]: [["t", 0], ["t", 1]], ids["c2"]: [["t", 2], ["t", 3]]}
    assert unknown["state"] == DEAD and unknown["members"] == []


def test_describing_a_group_mid_rebalance_shows_its_members_without_assignments():
    h = Harness()
    h.settle("c1")
    h.join("c2")
    (reply,) = h.c.describe_groups(1, ["g"])
    (g,) = reply.body["groups"]
    assert g["state"] == PREPARING_REBALANCE
    assert len(g["members"]) == 2 and all(m["assignment"] == [] for m in g["members"])


def test_offsets_of_a_group_empty_for_longer_than_the_retention_expire():
    h = Harness(offsets_retention_ms=1000)
    persist, _ = h.commit("", -1)
    h.c.offsets_written(persist.records, now=0)
    h.now = 1001
    (persist,) = h.c.tick(h.now)
    assert persist.records == (OffsetRecord("g", "t", 0, None),) and "g" not in h.c.groups
