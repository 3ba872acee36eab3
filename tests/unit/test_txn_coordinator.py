"""The transaction coordinator as a pure state machine: method calls in, effects out, no processes.

A Hypothesis state machine drives shmlog.broker.txn_coordinator.TxnCoordinator with random
sequences of init_producer_id, add_partitions, add_offsets, txn_offset_commit, end_txn, timer
ticks and marker completions, for a few transactional ids and for stale producer instances
(zombies), against a plain model of what Kafka's protocol says each must answer. Writes of the
state records fail for stretches of steps (as when `__transaction_state` cannot be written):
a step whose write fails changes nothing and its requests are told COORDINATOR_NOT_AVAILABLE.
After every step:

- every reply is the model's (ids and epochs, PRODUCER_FENCED for every older instance,
  CONCURRENT_TRANSACTIONS while markers are pending, INVALID_TXN_STATE, ...);
- the markers asked for name exactly the partitions the transaction added, and a commit's
  offsets are exactly the ones it sent; an abort carries none;
- replaying every Persist record, in order, into a fresh coordinator rebuilds the same state;
- a partition is open (has a first unstable offset) exactly while a transaction on it is open.

SHMLOG_HYPOTHESIS_EXAMPLES (default 100) sets the number of examples.
Deterministic tests below pin the single rules.
"""
import os

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shmlog.broker import txn_coordinator as tc
from shmlog.errors import KafkaError

TIDS = ("a", "b")
PARTS = (("t", 0), ("t", 1), ("u", 0))
GROUPS = ("g1", "g2")
TIMEOUT = 1000


class Ids:
    def __init__(self):
        self.n = 1000

    def __call__(self):
        self.n += 1
        return self.n


def code(body):
    return body.get("error", 0)


class TxnModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.c = tc.TxnCoordinator(Ids(), max_timeout_ms=10 * TIMEOUT, transactional_id_expiration_ms=10 ** 9)
        self.now = 0
        self.persisted = []
        self.refs = 0
        self.replies = {}
        self.pending = {}         # tid -> WriteMarkers awaiting markers_written
        self.waiting = {}         # tid -> ref of the end_txn waiting
        self.failing = False      # state records cannot be written now
        # the model
        self.current = {}         # tid -> (pid, epoch) of the live instance
        self.instances = []       # every (tid, pid, epoch) ever handed out
        self.open = {}            # tid -> {"parts": set, "groups": set, "offsets": dict, "started": now}
        self.last = {}            # tid -> "commit" | "abort" | None: how its last transaction ended

    def run(self, effects):
        out = None
        for e in effects:
            if isinstance(e, tc.Persist):
                tid = e.record.transactional_id
                if self.failing:
                    self.run(self.c.persist_failed(tid, "no space left on device", self.now))
                else:
                    self.persisted.append(e.record)
                    self.run(self.c.persisted(tid, self.now))
            elif isinstance(e, tc.WriteMarkers):
                assert e.transactional_id not in self.pending
                self.pending[e.transactional_id] = e
            elif isinstance(e, tc.Reply):
                self.replies[e.ref] = e.body
        return out

    def call(self, method, *args):
        self.refs += 1
        ref = self.refs
        self.was_pending = set(self.pending)    # the model judges by the state before the call
        self.run(getattr(self.c, method)(ref, *args))
        return ref

    def expect_markers(self, tid, commit, fenced=()):
        m = self.pending[tid]
        state = self.open.pop(tid)
        assert m.commit == commit
        assert m.fenced == fenced
        assert {(t, p) for t, p, _ in m.partitions} == state["parts"]
        if commit:
            assert {(g, t, p): (o, md) for g, t, p, o, md in m.offsets} == state["offsets"]
        else:
            assert m.offsets == ()

    def write_failed(self, body):
        """A step that would change the state while writes fail: nothing changed, retriable answer."""
        if not self.failing:
            return False
        assert code(body) == KafkaError.COORDINATOR_NOT_AVAILABLE, body
        return True

    # ------------------------------------------------------------------ rules

    @rule()
    def writes_start_or_stop_failing(self):
        self.failing = not self.failing

    @rule(tid=st.sampled_from(TIDS))
    def init(self, tid):
        ref = self.call("init_producer_id", tid, TIMEOUT, self.now)
        body = self.replies.pop(ref)
        if tid in self.was_pending:
            assert code(body) == KafkaError.CONCURRENT_TRANSACTIONS
            return
        if self.write_failed(body):
            return
        if tid in self.open:
            assert code(body) == KafkaError.CONCURRENT_TRANSACTIONS
            pid, epoch = self.current[tid]
            self.current[tid] = (pid, epoch + 1)
            self.expect_markers(tid, commit=False, fenced=(pid, epoch))
            self.last[tid] = "abort"
            return
        assert code(body) == 0, body
        got = (body["producer_id"], body["producer_epoch"])
        if tid in self.current:
            assert got == (self.current[tid][0], self.current[tid][1] + 1)
        else:
            assert got[1] == 0 and got[0] not in {pid for _, pid, _ in self.instances}
        self.current[tid] = got
        self.instances.append((tid, *got))
        self.last[tid] = None

    def _instance(self, data):
        return data.draw(st.sampled_from(self.instances))

    def _refused(self, tid, pid, epoch, body, ending=False):
        """The model's refusal for an instance's request, or None if it passes the checks."""
        if (pid, epoch) != self.current[tid]:
            assert code(body) == KafkaError.PRODUCER_FENCED, body
            return True
        if tid in self.was_pending and not ending:
            assert code(body) == KafkaError.CONCURRENT_TRANSACTIONS, body
            return True
        return False

    def _begin(self, tid):
        if tid not in self.open:
            self.open[tid] = {"parts": set(), "groups": set(), "offsets": {}, "started": self.now}
        return self.open[tid]

    @precondition(lambda self: self.instances)
    @rule(data=st.data(), parts=st.sets(st.sampled_from(PARTS), min_size=1))
    def add_partitions(self, data, parts):
        tid, pid, epoch = self._instance(data)
        ref = self.call("add_partitions", tid, pid, epoch, [(t, p, 7) for t, p in parts], self.now)
        body = self.replies.pop(ref)
        if not self._refused(tid, pid, epoch, body) and not self.write_failed(body):
            assert code(body) == 0, body
            self._begin(tid)["parts"] |= parts

    @precondition(lambda self: self.instances)
    @rule(data=st.data(), group=st.sampled_from(GROUPS))
    def add_offsets(self, data, group):
        tid, pid, epoch = self._instance(data)
        body = self.replies.pop(self.call("add_offsets", tid, pid, epoch, group, self.now))
        if not self._refused(tid, pid, epoch, body) and not self.write_failed(body):
            assert code(body) == 0, body
            self._begin(tid)["groups"].add(group)

    @precondition(lambda self: self.instances)
    @rule(data=st.data(), group=st.sampled_from(GROUPS), part=st.sampled_from(PARTS), offset=st.integers(0, 50))
    def txn_offset_commit(self, data, group, part, offset):
        tid, pid, epoch = self._instance(data)
        body = self.replies.pop(self.call("txn_offset_commit", tid, pid, epoch, group,
                                          [(part[0], part[1], offset, "m")], self.now))
        if self._refused(tid, pid, epoch, body):
            return
        if tid not in self.open or group not in self.open[tid]["groups"]:
            assert code(body) == KafkaError.INVALID_TXN_STATE, body
        elif not self.write_failed(body):
            assert code(body) == 0, body
            self.open[tid]["offsets"][(group, *part)] = (offset, "m")

    @precondition(lambda self: self.instances)
    @rule(data=st.data(), commit=st.booleans())
    def end_txn(self, data, commit):
        tid, pid, epoch = self._instance(data)
        ref = self.call("end_txn", tid, pid, epoch, commit, self.now)
        if (pid, epoch) != self.current[tid]:
            assert code(self.replies.pop(ref)) == KafkaError.PRODUCER_FENCED
            return
        if tid in self.was_pending:
            assert code(self.replies.pop(ref)) == KafkaError.CONCURRENT_TRANSACTIONS
            return
        if tid in self.open:
            if self.failing:
                assert tid not in self.pending and self.write_failed(self.replies.pop(ref))
                return
            assert ref not in self.replies          # answered once the markers are written
            self.expect_markers(tid, commit)
            self.waiting[tid] = ref
            self.last[tid] = "commit" if commit else "abort"
            return
        body = self.replies.pop(ref)
        if self.last.get(tid) == ("commit" if commit else "abort") or (self.last.get(tid) is None and not commit):
            assert code(body) == 0, body
        else:
            assert code(body) == KafkaError.INVALID_TXN_STATE, body

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def markers_written(self, data):
        tid = data.draw(st.sampled_from(sorted(self.pending)))
        if self.failing:      # the Complete state is not written: it stays Prepare*, its end_txn waiting
            before = len(self.replies)
            self.run(self.c.markers_written(tid, self.now))
            assert len(self.replies) == before
            return
        del self.pending[tid]
        self.run(self.c.markers_written(tid, self.now))
        ref = self.waiting.pop(tid, None)
        if ref is not None:
            assert code(self.replies.pop(ref)) == 0

    @rule(ms=st.integers(1, 2 * TIMEOUT))
    def time_passes(self, ms):
        self.now += ms
        was_pending = set(self.pending)
        self.run(self.c.tick(self.now))
        if self.failing:
            return      # the timeout aborts were not written: they happen at a later tick
        for tid, state in list(self.open.items()):
            if tid not in was_pending and self.now >= state["started"] + TIMEOUT:
                pid, epoch = self.current[tid]
                self.current[tid] = (pid, epoch + 1)      # the coordinator fences the producer that let it expire
                self.expect_markers(tid, commit=False, fenced=(pid, epoch))
                self.last[tid] = "abort"

    # ------------------------------------------------------------------ invariants

    @invariant()
    def no_change_is_left_staged_once_its_write_was_reported(self):
        assert not self.c.pending

    @invariant()
    def every_request_was_answered_or_waits_for_its_markers(self):
        assert set(self.replies) <= set(self.waiting.values())

    @invariant()
    def states_and_epochs_match_the_model(self):
        for tid, (pid, epoch) in self.current.items():
            t = self.c.txns[tid]
            assert t.state in tc.STATES
            assert (t.producer_id, t.producer_epoch) == (pid, epoch)
            if tid in self.pending:
                assert t.state in (tc.PREPARE_COMMIT, tc.PREPARE_ABORT)
            elif tid in self.open:
                assert t.state == tc.ONGOING
            else:
                assert t.state in tc.SETTLED

    @invariant()
    def open_partitions_are_those_of_open_transactions(self):
        want = set()
        for tid in self.current:
            if tid in self.open:
                want |= self.open[tid]["parts"]
            if tid in self.pending:
                want |= {(t, p) for t, p, _ in self.pending[tid].partitions}
        assert set(self.c.open_partitions()) == want

    @invariant()
    def replaying_the_persisted_records_rebuilds_the_state(self):
        fresh = tc.TxnCoordinator(Ids())
        fresh.loaded([tc.decode_txn_record(*tc.encode_txn_record(r)) for r in self.persisted], self.now)
        assert fresh.txns.keys() == self.c.txns.keys()
        for tid, t in self.c.txns.items():
            f = fresh.txns[tid]
            assert (f.producer_id, f.producer_epoch, f.state, f.partitions, f.offsets) == \
                   (t.producer_id, t.producer_epoch, t.state, t.partitions, t.offsets)


TxnModel.TestCase.settings = settings(max_examples=int(os.environ.get("SHMLOG_HYPOTHESIS_EXAMPLES", "100")),
                                      stateful_step_count=40, deadline=None)
test_the_coordinator_agrees_with_the_model = TxnModel.TestCase


# ---------------------------------------------------------------------------- single rules

class Written:
    """A coordinator whose state records are all written at once: each input returns its effects
    with every Persist followed by what its write released (and records() what was persisted)."""

    def __init__(self, coordinator):
        self.c = coordinator
        self.records = []

    def settle(self, effects, fail=None):
        out = []
        for e in effects:
            out.append(e)
            if isinstance(e, tc.Persist):
                tid = e.record.transactional_id
                if fail is None:
                    self.records.append(e.record)
                    out += self.settle(self.c.persisted(tid, 0))
                else:
                    out += self.settle(self.c.persist_failed(tid, fail, 0))
        return out

    def __getattr__(self, name):
        method = getattr(self.c, name)
        if not callable(method):
            return method
        return lambda *args, fail=None: self.settle(method(*args), fail)


def fresh():
    return Written(tc.TxnCoordinator(Ids(), max_timeout_ms=60_000, transactional_id_expiration_ms=100_000))


def reply(effects):
    (r,) = [e for e in effects if isinstance(e, tc.Reply)]
    return r.body


def test_every_state_in_the_transition_table_is_a_known_transaction_state():
    assert {s for pair in tc.TRANSITIONS for s in pair[:1]} | set(tc.TRANSITIONS.values()) <= set(tc.STATES)


def test_a_dead_transactional_id_has_no_way_out():
    assert not [pair for pair in tc.TRANSITIONS if pair[0] == tc.DEAD]


def test_a_timeout_above_the_brokers_maximum_is_refused_with_invalid_transaction_timeout():
    body = reply(fresh().init_producer_id(1, "x", 60_001, 0))
    assert body["error"] == KafkaError.INVALID_TRANSACTION_TIMEOUT and "transaction.max.timeout.ms" in body["message"]


def test_a_new_instance_bumps_the_epoch_and_fences_the_old_one():
    c = fresh()
    old = reply(c.init_producer_id(1, "x", 1000, 0))
    new = reply(c.init_producer_id(2, "x", 1000, 0))
    assert (new["producer_id"], new["producer_epoch"]) == (old["producer_id"], old["producer_epoch"] + 1)
    body = reply(c.add_partitions(3, "x", old["producer_id"], old["producer_epoch"], [("t", 0, 0)], 0))
    assert body["error"] == KafkaError.PRODUCER_FENCED


def test_a_new_instance_aborts_the_open_transaction_of_the_old_one_and_is_told_to_retry():
    c = fresh()
    old = reply(c.init_producer_id(1, "x", 1000, 0))
    c.add_partitions(2, "x", old["producer_id"], old["producer_epoch"], [("t", 0, 5)], 0)
    effects = c.init_producer_id(3, "x", 1000, 0)
    (m,) = [e for e in effects if isinstance(e, tc.WriteMarkers)]
    assert not m.commit and m.partitions == (("t", 0, 5),)
    assert reply(effects)["error"] == KafkaError.CONCURRENT_TRANSACTIONS
    c.markers_written("x", 1)
    assert reply(c.init_producer_id(4, "x", 1000, 1))["producer_epoch"] == old["producer_epoch"] + 2


def test_an_expired_transaction_is_aborted_by_the_coordinator():
    c = fresh()
    ids = reply(c.init_producer_id(1, "x", 1000, 0))
    c.add_partitions(2, "x", ids["producer_id"], ids["producer_epoch"], [("t", 0, 0)], 0)
    assert c.c.next_deadline() == 1000
    assert c.tick(999) == []
    (m,) = [e for e in c.tick(1000) if isinstance(e, tc.WriteMarkers)]
    assert not m.commit and c.c.txns["x"].state == tc.PREPARE_ABORT


def test_offsets_sent_with_a_transaction_are_written_only_by_its_commit():
    c = fresh()
    ids = reply(c.init_producer_id(1, "x", 1000, 0))
    pid, epoch = ids["producer_id"], ids["producer_epoch"]
    c.add_offsets(2, "x", pid, epoch, "g", 0)
    c.txn_offset_commit(3, "x", pid, epoch, "g", [("t", 0, 42, "")], 0)
    effects = c.end_txn(4, "x", pid, epoch, True, 0)
    (m,) = [e for e in effects if isinstance(e, tc.WriteMarkers)]
    assert m.commit and m.offsets == (("g", "t", 0, 42, ""),)
    assert not [e for e in effects if isinstance(e, tc.Reply)]       # answered after the markers
    assert reply(c.markers_written("x", 0)) == {}


def test_a_replay_that_finds_a_transaction_preparing_its_commit_finishes_it():
    c = fresh()
    ids = reply(c.init_producer_id(1, "x", 1000, 0))
    c.add_partitions(2, "x", ids["producer_id"], ids["producer_epoch"], [("t", 0, 3)], 0)
    c.end_txn(3, "x", ids["producer_id"], ids["producer_epoch"], True, 0)
    replayed = tc.TxnCoordinator(Ids())
    (m,) = replayed.loaded(c.records, 0)
    assert m.commit and m.partitions == (("t", 0, 3),)


def test_an_undecodable_state_is_refused_by_the_decoder():
    with pytest.raises(ValueError):
        tc.decode_txn_record(b'["x"]', b'{"producer_id":1,"producer_epoch":0,"timeout_ms":1,"state":"Weird",'
                                       b'"partitions":[],"offsets":[]}')


def test_a_change_is_made_only_once_its_state_record_is_written():
    c = fresh()
    ids = reply(c.init_producer_id(1, "x", 1000, 0))
    effects = c.c.add_partitions(2, "x", ids["producer_id"], ids["producer_epoch"], [("t", 0, 5)], 0)
    assert [type(e) for e in effects] == [tc.Persist]
    assert c.c.txns["x"].state == tc.EMPTY and not c.c.open_partitions()
    assert c.c.persisted("x", 0) == [tc.Reply(2, {})]
    assert c.c.txns["x"].state == tc.ONGOING and c.c.open_partitions() == {("t", 0): 5}


def test_a_request_while_a_change_of_its_id_is_being_written_is_told_to_retry():
    c = fresh()
    ids = reply(c.init_producer_id(1, "x", 1000, 0))
    c.c.add_partitions(2, "x", ids["producer_id"], ids["producer_epoch"], [("t", 0, 5)], 0)
    body = reply(c.c.end_txn(3, "x", ids["producer_id"], ids["producer_epoch"], True, 0))
    assert body["error"] == KafkaError.CONCURRENT_TRANSACTIONS


def test_a_commit_whose_prepare_record_cannot_be_written_stays_ongoing_and_is_told_to_retry():
    c = fresh()
    ids = reply(c.init_producer_id(1, "x", 1000, 0))
    pid, epoch = ids["producer_id"], ids["producer_epoch"]
    c.add_partitions(2, "x", pid, epoch, [("t", 0, 5)], 0)
    effects = c.end_txn(3, "x", pid, epoch, True, 0, fail="ring full")
    assert not [e for e in effects if isinstance(e, tc.WriteMarkers)]
    body = reply(effects)
    assert body["error"] == KafkaError.COORDINATOR_NOT_AVAILABLE and "ring full" in body["message"]
    assert c.c.txns["x"].state == tc.ONGOING and not c.c.pending
    (m,) = [e for e in c.end_txn(4, "x", pid, epoch, True, 0) if isinstance(e, tc.WriteMarkers)]
    assert m.commit and m.partitions == (("t", 0, 5),)


def test_an_init_whose_record_cannot_be_written_fences_nobody():
    c = fresh()
    old = reply(c.init_producer_id(1, "x", 1000, 0))
    assert reply(c.init_producer_id(2, "x", 1000, 0, fail="ring full"))["error"] == \
        KafkaError.COORDINATOR_NOT_AVAILABLE
    assert reply(c.add_partitions(3, "x", old["producer_id"], old["producer_epoch"], [("t", 0, 0)], 0)) == {}


def test_a_complete_state_that_cannot_be_written_keeps_the_end_txn_waiting_until_it_is():
    c = fresh()
    ids = reply(c.init_producer_id(1, "x", 1000, 0))
    pid, epoch = ids["producer_id"], ids["producer_epoch"]
    c.add_partitions(2, "x", pid, epoch, [("t", 0, 5)], 0)
    c.end_txn(3, "x", pid, epoch, False, 0)
    assert not [e for e in c.markers_written("x", 0, fail="ring full") if isinstance(e, tc.Reply)]
    assert c.c.txns["x"].state == tc.PREPARE_ABORT
    assert [e for e in c.markers_written("x", 0) if isinstance(e, tc.Reply)] == [tc.Reply(3, {})]
    assert c.c.txns["x"].state == tc.COMPLETE_ABORT


def test_a_timeout_abort_that_cannot_be_written_happens_at_a_later_tick():
    c = fresh()
    ids = reply(c.init_producer_id(1, "x", 1000, 0))
    c.add_partitions(2, "x", ids["producer_id"], ids["producer_epoch"], [("t", 0, 0)], 0)
    assert not [e for e in c.tick(1000, fail="ring full") if isinstance(e, tc.WriteMarkers)]
    assert (c.c.txns["x"].state, c.c.txns["x"].producer_epoch) == (tc.ONGOING, ids["producer_epoch"])
    (m,) = [e for e in c.tick(1001) if isinstance(e, tc.WriteMarkers)]
    assert m.fenced == (ids["producer_id"], ids["producer_epoch"])


def test_a_tick_that_cannot_get_a_new_producer_id_stages_nothing():
    ids = Ids()
    c = Written(tc.TxnCoordinator(ids, max_timeout_ms=60_000))
    a = reply(c.init_producer_id(1, "a", 1000, 0))
    b = reply(c.init_producer_id(2, "b", 1000, 0))
    c.add_partitions(3, "a", a["producer_id"], a["producer_epoch"], [("t", 0, 0)], 0)
    c.add_partitions(4, "b", b["producer_id"], b["producer_epoch"], [("t", 1, 0)], 0)
    c.c.txns["b"].producer_epoch = tc.MAX_EPOCH       # its timeout abort needs a new producer id

    def no_more_ids():
        raise RuntimeError("producer ids cannot be reserved")
    c.c.new_producer_id = no_more_ids
    with pytest.raises(RuntimeError):
        c.c.tick(1000)
    assert not c.c.pending and {t.state for t in c.c.txns.values()} == {tc.ONGOING}
