"""Coordinator.next_deadline: the time the supervisor sleeps until, for every state with a timer.

For each case the deadline must be exact both ways: one millisecond earlier tick() does
nothing at all (the supervisor would wake for nothing), and at the deadline it acts (the
supervisor would otherwise sleep past a timer). Pure state machine, explicit times.
"""
import copy

from shmlog.broker.coordinator import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    Coordinator,
    Persist,
)
from tests.unit.test_coordinator import REBALANCE, SESSION, Harness


def snapshot(c):
    return {gid: (g.state, g.generation, sorted(g.members), sorted(g.offsets)) for gid, g in c.groups.items()}


def assert_fires_exactly_at(c, deadline):
    """tick() one ms before `deadline` changes nothing; tick() at it does something."""
    early = copy.deepcopy(c)
    before = snapshot(early)
    assert early.tick(deadline - 1) == [] and snapshot(early) == before
    on_time = copy.deepcopy(c)
    effects = on_time.tick(deadline)
    assert effects or snapshot(on_time) != before


def test_a_coordinator_without_groups_has_no_deadline():
    assert Coordinator().next_deadline() is None


def test_a_stable_group_wakes_for_the_first_session_to_run_out():
    h = Harness()
    ids = h.settle("c1", "c2")
    h.now = 300
    h.c.heartbeat(next(h.refs), "g", ids["c2"], h.group().generation, h.now)
    assert h.group().state == STABLE
    deadline = h.c.next_deadline()
    assert deadline == 0 + SESSION + 1                  # c1 was last seen at 0
    assert_fires_exactly_at(h.c, deadline)
    h.c.tick(deadline)
    assert set(h.group().members) == {ids["c2"]}


def test_a_join_phase_wakes_at_its_deadline_not_for_the_members_waiting_in_it():
    h = Harness(initial_rebalance_delay_ms=3000)
    h.now = 100
    h.join("c1")
    h.join("c2")
    assert h.group().state == PREPARING_REBALANCE
    # Members waiting in the join have no session timer; the initial delay ends the phase.
    assert h.c.next_deadline() == 100 + 3000
    assert_fires_exactly_at(h.c, 100 + 3000)
    h.c.tick(100 + 3000)
    assert h.group().state == COMPLETING_REBALANCE


def test_a_join_phase_wakes_for_a_member_that_has_not_rejoined_when_its_session_ends_first():
    h = Harness()
    ids = h.settle("c1", "c2")
    h.now = 200
    h.join("c3")                                         # c1 and c2 are told to rejoin
    h.join("c1", member_id=ids["c1"])
    assert h.group().state == PREPARING_REBALANCE
    # c2 (last seen at 0) has neither rejoined nor heartbeaten: its session ends before the phase.
    assert h.group().join_deadline == 200 + REBALANCE
    assert h.c.next_deadline() == SESSION + 1
    assert_fires_exactly_at(h.c, SESSION + 1)


def test_a_join_phase_with_everyone_heartbeating_wakes_at_the_rebalance_timeout():
    h = Harness()
    ids = h.settle("c1", "c2")
    h.join("c3")
    h.join("c1", member_id=ids["c1"])
    for t in range(0, REBALANCE, SESSION // 2):        # c2 heartbeats but never rejoins
        h.now = t
        h.c.heartbeat(next(h.refs), "g", ids["c2"], 1, h.now)
    assert h.c.next_deadline() == h.group().join_deadline == REBALANCE
    assert_fires_exactly_at(h.c, REBALANCE)


def test_a_group_handing_out_assignments_wakes_for_a_member_that_never_syncs():
    h = Harness()
    h.now = 50
    h.join("c1")
    assert h.group().state == COMPLETING_REBALANCE
    assert h.c.next_deadline() == 50 + SESSION + 1
    assert_fires_exactly_at(h.c, 50 + SESSION + 1)


def test_a_disconnected_static_member_wakes_the_coordinator_when_its_session_ends():
    h = Harness()
    h.join("c1", instance_id="i1")
    mid = next(iter(h.group().members))
    h.sync(mid, 1, instance_id="i1")
    h.now = 400
    h.c.heartbeat(next(h.refs), "g", mid, 1, h.now, instance_id="i1")
    h.c.disconnected("c1", h.now)
    assert mid in h.group().members
    assert h.c.next_deadline() == 400 + SESSION + 1
    assert_fires_exactly_at(h.c, 400 + SESSION + 1)


def test_an_empty_group_with_offsets_wakes_when_they_expire_and_one_without_has_no_timer():
    h = Harness(offsets_retention_ms=5000)
    ids = h.settle("c1")
    h.c.offsets_written(h.commit(ids["c1"], 1)[0].records)
    h.now = 700
    h.c.leave(next(h.refs), "g", ids["c1"], h.now)
    assert h.group().state == EMPTY
    assert h.c.next_deadline() == 700 + 5000 + 1
    assert_fires_exactly_at(h.c, 700 + 5000 + 1)
    effects = h.c.tick(700 + 5000 + 1)
    assert [type(e) for e in effects] == [Persist] and h.c.next_deadline() is None


def test_the_earliest_timer_of_several_groups_wins():
    h = Harness()
    h.settle("c1")
    h.now = 10
    h.c.join(next(h.refs), "d1", "other", protocols=["range"], subscription=["t"], session_timeout_ms=SESSION // 2,
             rebalance_timeout_ms=REBALANCE, now=h.now)
    assert h.c.next_deadline() == 10 + SESSION // 2 + 1
    assert_fires_exactly_at(h.c, 10 + SESSION // 2 + 1)
