"""Consumer groups against a real broker: members in this process and in spawned processes,
real SIGKILL and SIGSTOP, the control channel as clients speak it, the admin API and the CLI.

The `broker` fixture here overrides conftest's with group timings fit for tests: the first
rebalance of a group happens at once (group.initial.rebalance.delay.ms=0) and short
session timeouts are allowed. Waiting is on queues, process joins and consumer polls with
deadlines; nothing sleeps in place of synchronisation.
"""
import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

import shmlog
import shmlog.broker.launcher
from shmlog import KafkaError, KafkaException, TopicPartition
from shmlog.client.admin import ConsumerGroupState, ConsumerGroupTopicPartitions
from shmlog.control import Control
from tests.conftest import create_topic, stop_leftover_broker

SPAWN = multiprocessing.get_context("spawn")
DEADLINE_S = 20.0


@pytest.fixture
def broker(data_dir):
    with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0, group_min_session_timeout_ms=50) as b:
        yield b
    stop_leftover_broker(data_dir)


def group_conf(conf, group="g", callbacks=None, **extra):
    """A consumer config in group `group`; extra keys with _ for . (max_poll_interval_ms=...)."""
    return {**conf, "group.id": group, "auto.offset.reset": "earliest",
            **{k.replace("_", "."): v for k, v in extra.items()}, **(callbacks or {})}


def produce(conf, topic, partitions, per_partition, start=0):
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    for i in range(start, start + per_partition):
        for part in range(partitions):
            p.produce(topic, value=b"%d-%d" % (part, i), partition=part)
    p.flush(10)
    p.close()


def drive(consumers, until, timeout=DEADLINE_S, sink=None):
    """Poll every consumer in turn (their rebalance callbacks run in poll) until until() holds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        for c in consumers:
            m = c.poll(0.01)
            if sink is not None and m is not None:
                sink.append((c, m))


def wait_persisted(data_dir, topic):
    """Until the persister has written every record of topic (a broker stopped right after
    it starts may otherwise stop its persister before that one is ready)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        st = [p for p in shmlog.broker.launcher.status(data_dir)["partitions"] if p["topic"] == topic]
        if all(p["persisted_offset"] == p["log_end_offset"] for p in st):
            return
        assert time.monotonic() < deadline, st
        time.sleep(0.01)


def parts(consumer):
    return sorted(tp.partition for tp in consumer.assignment())


def describe(admin, group="g"):
    return admin.describe_consumer_groups([group])[group].result()


def owners_by_pid(admin, group="g"):
    """{member pid: {partitions}} of a Stable group, else {}."""
    desc = describe(admin, group)
    if desc.state != ConsumerGroupState.STABLE:
        return {}
    return {int(m.host.split(":")[1]): {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members}


# ---------------------------------------------------------------------------- child processes

def member_process(bootstrap, topic, conn, stop, extra):
    """A group member that reports what it processes and commits (every 2nd batch and on revoke).

    Reports go over a pipe of its own: a multiprocessing.Queue shared by members has a write
    lock that a SIGKILLed member can die holding, which would silence every other member."""
    reports = _Sender(conn)
    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, **extra})
    pid = os.getpid()
    pending = {}

    def commit(partitions=None):
        offsets = {p: o for p, o in pending.items() if partitions is None or p in partitions}
        if offsets:
            try:
                c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
            except shmlog.KafkaException as exc:
                # As in Kafka: a commit that lands while the group hands out a new generation is
                # refused with a retriable error; these offsets go with the next commit instead.
                if exc.args[0].code() != shmlog.KafkaError.REBALANCE_IN_PROGRESS:
                    raise
                return
            reports.put(("commit", pid, offsets, time.monotonic_ns()))
            for p in offsets:
                pending.pop(p, None)

    def on_assign(consumer, partitions):
        committed = consumer.committed(partitions)
        reports.put(("assign", pid, {tp.partition: tp.offset for tp in committed}, time.monotonic_ns()))

    def on_revoke(consumer, partitions):
        commit({tp.partition for tp in partitions})

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    batches = 0
    while not stop.is_set():
        msgs = [m for m in c.consume(20, timeout=0.05) if m.error() is None]
        if not msgs:
            continue
        reports.put(("records", pid, [(m.partition(), m.offset()) for m in msgs], time.monotonic_ns()))
        for m in msgs:
            pending[m.partition()] = m.offset() + 1
        batches += 1
        if batches % 2 == 0:
            commit()
    c.close()


def static_member(bootstrap, topic, instance, reports):
    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "group.instance.id": instance,
                         "session.timeout.ms": 10000})
    c.subscribe([topic], on_assign=lambda consumer, ps: reports.put(sorted(tp.partition for tp in ps)))
    while True:
        c.poll(0.1)


class _Sender:
    def __init__(self, conn):
        self.conn = conn

    def put(self, item):
        self.conn.send(item)


def start_members(n, target, *args):
    """n member processes, each with its own report pipe: (processes, Reports)."""
    procs, conns = [], []
    for _ in range(n):
        recv, send = SPAWN.Pipe(duplex=False)
        proc = SPAWN.Process(target=target, args=(args[0], args[1], send, *args[2:]))
        proc.start()
        send.close()
        procs.append(proc)
        conns.append(recv)
    return procs, Reports(conns)


class Reports:
    """What member processes said, collected from their pipes."""

    def __init__(self, conns):
        self.conns = list(conns)
        self.records = []       # (pid, partition, offset, t)
        self.commits = []       # (pid, {partition: offset}, t)
        self.assigns = []       # (pid, {partition: committed offset}, t)

    def _get(self, timeout):
        for conn in multiprocessing.connection.wait(self.conns, timeout):
            try:
                return conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                self.conns.remove(conn)     # that member died (maybe mid-message)
        return None

    def drain_until(self, cond, timeout=DEADLINE_S):
        deadline = time.monotonic() + timeout
        while not cond():
            item = self._get(max(0.0, min(0.2, deadline - time.monotonic())))
            if item is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"members did not get there within {timeout}s") from None
                continue
            kind, pid, data, t = item
            if kind == "records":
                self.records += [(pid, p, o, t) for p, o in data]
            elif kind == "commit":
                self.commits.append((pid, data, t))
            elif kind == "assign":
                self.assigns.append((pid, data, t))

    def processed(self):
        return {(p, o) for _, p, o, _ in self.records}

    def owners(self):
        """partition -> pid of its latest assignment (by time: pipes are read in any order)."""
        out = {}
        for pid, got, _ in sorted(self.assigns, key=lambda a: a[2]):
            for p in got:
                out[p] = pid
        return out


# ---------------------------------------------------------------------------- sharing and failover

def test_consumers_with_the_same_group_id_share_the_partitions_of_a_topic(conf, admin):
    create_topic(admin, "t", 4)
    c1, c2 = shmlog.Consumer(group_conf(conf)), shmlog.Consumer(group_conf(conf))
    c1.subscribe(["t"])
    c2.subscribe(["t"])
    drive([c1, c2], lambda: len(parts(c1)) == 2 and len(parts(c2)) == 2)
    assert sorted(parts(c1) + parts(c2)) == [0, 1, 2, 3]
    assert describe(admin).state == ConsumerGroupState.STABLE
    c1.close()
    c2.close()


def test_a_sigkilled_member_s_partitions_move_within_seconds_and_resume_from_its_last_commit(conf, admin):
    partitions, per_phase = 6, 60
    create_topic(admin, "t", partitions)
    stop = SPAWN.Event()
    procs, r = start_members(3, member_process, conf["bootstrap.servers"], "t", stop, {})
    try:
        produce(conf, "t", partitions, per_phase)
        r.drain_until(lambda: len(r.processed()) == partitions * per_phase and len(owners_by_pid(admin)) == 3)
        produce(conf, "t", partitions, per_phase, start=per_phase)
        victim, victim_parts = sorted(owners_by_pid(admin).items())[0]
        r.drain_until(lambda: any(pid == victim and o >= per_phase for pid, _, o, _ in r.records))
        t0 = time.monotonic_ns()
        os.kill(victim, signal.SIGKILL)
        produce(conf, "t", partitions, per_phase, start=2 * per_phase)
        total = {(p, o) for p in range(partitions) for o in range(3 * per_phase)}
        r.drain_until(lambda: r.processed() >= total)
    finally:
        stop.set()
        for p in procs:
            p.join(20)
            if p.is_alive():
                p.kill()
    # every record processed at least once, and in order by each member on each partition
    assert r.processed() == total
    streams = {}
    for pid, p, o, _ in r.records:
        streams.setdefault((pid, p), []).append(o)
    assert all(offs == sorted(set(offs)) for offs in streams.values())
    for p in victim_parts:
        # the new owner started where the dead member last committed, within seconds (typically
        # milliseconds: the dead member's socket closes; the bound only has to hold on a loaded CI machine)
        new_owner, committed = next((pid, max(got[p], 0)) for pid, got, t in sorted(r.assigns, key=lambda a: a[2])
                                    if t > t0 and p in got and pid != victim)
        first = min((t, o) for pid, q_, o, t in r.records if pid == new_owner and q_ == p and t > t0)
        assert (first[0] - t0) / 1e9 < 5.0
        assert first[1] == committed
        last_reported_commit = max([c[p] for pid, c, _ in r.commits if pid == victim and p in c] or [0])
        victim_done = max(o for pid, q_, o, _ in r.records if pid == victim and q_ == p)
        assert last_reported_commit <= committed <= victim_done + 1
        # only what the dead member processed after its last commit was processed twice
        twice = {o for pid, q_, o, _ in r.records if q_ == p and pid == victim} & \
                {o for pid, q_, o, _ in r.records if q_ == p and pid != victim}
        assert all(o >= committed for o in twice)
    others = [p for p in range(partitions) if p not in victim_parts]
    counts = {}
    for _, p, o, _ in r.records:
        counts[(p, o)] = counts.get((p, o), 0) + 1
    assert not [k for k, n in counts.items() if n > 1 and k[0] in others], "survivors committed on revoke"


def test_a_hung_member_is_evicted_after_its_session_timeout_not_before(conf, admin):
    create_topic(admin, "t", 2)
    stop = SPAWN.Event()
    extra = {"session.timeout.ms": 1000, "heartbeat.interval.ms": 100}
    (child,), r = start_members(1, member_process, conf["bootstrap.servers"], "t", stop, extra)
    try:
        r.drain_until(lambda: len(r.owners()) == 2)
        survivor = shmlog.Consumer(group_conf(conf, **extra))
        survivor.subscribe(["t"])
        drive([survivor], lambda: len(parts(survivor)) == 1)
        os.kill(child.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        drive([survivor], lambda: len(parts(survivor)) == 2, timeout=10)
        elapsed = time.monotonic() - t0
        survivor.close()
    finally:
        child.kill()
        child.join(10)
    assert 0.85 <= elapsed < 3.0


def test_a_member_that_exceeds_max_poll_interval_leaves_and_its_next_poll_reports_it(conf, admin):
    create_topic(admin, "t", 2)
    lost = []
    slow = shmlog.Consumer(group_conf(conf, max_poll_interval_ms=300))
    slow.subscribe(["t"], on_lost=lambda c, ps: lost.append(sorted(tp.partition for tp in ps)))
    fast = shmlog.Consumer(group_conf(conf))
    fast.subscribe(["t"])
    drive([slow, fast], lambda: len(parts(slow)) == 1 and len(parts(fast)) == 1)
    drive([fast], lambda: len(parts(fast)) == 2)         # slow does not poll: it leaves
    msg = slow.poll(0)
    assert msg.error().code() == KafkaError._MAX_POLL_EXCEEDED
    assert len(lost) == 1 and len(lost[0]) == 1 and parts(slow) == []
    drive([slow, fast], lambda: len(parts(slow)) == 1 and len(parts(fast)) == 1)   # and rejoins
    slow.close()
    fast.close()


def test_a_consumer_that_left_the_group_has_its_commit_refused_with_unknown_member_id(conf, admin):
    create_topic(admin, "t", 2)
    slow = shmlog.Consumer(group_conf(conf, max_poll_interval_ms=300))
    slow.subscribe(["t"])
    fast = shmlog.Consumer(group_conf(conf))
    fast.subscribe(["t"])
    drive([slow, fast], lambda: len(parts(slow)) == 1 and len(parts(fast)) == 1)
    drive([fast], lambda: len(parts(fast)) == 2)
    with pytest.raises(KafkaException) as exc:
        slow.commit(offsets=[TopicPartition("t", 0, 1)], asynchronous=False)
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID
    slow.close()
    fast.close()


def test_a_static_member_restarted_within_its_session_timeout_keeps_its_partitions_without_a_rebalance(
        conf, admin):
    create_topic(admin, "t", 4)
    q = SPAWN.Queue()
    first = SPAWN.Process(target=static_member, args=(conf["bootstrap.servers"], "t", "w1", q))
    first.start()
    revoked = []
    other = shmlog.Consumer(group_conf(conf, group_instance_id="w2", session_timeout_ms=10000))
    try:
        assert q.get(timeout=DEADLINE_S) == [0, 1, 2, 3]
        other.subscribe(["t"], on_revoke=lambda c, ps: revoked.append(ps))
        drive([other], lambda: len(parts(other)) == 2)
        before = q.get(timeout=DEADLINE_S)
        revoked.clear()
        generation = admin._cluster.control.request("describe_groups", groups=["g"])["groups"][0]["generation"]
        first.kill()
        first.join(10)
        q2 = SPAWN.Queue()     # its own queue: the killed one may have died holding q's lock
        second = SPAWN.Process(target=static_member, args=(conf["bootstrap.servers"], "t", "w1", q2))
        second.start()
        drive([other], lambda: not q2.empty())      # keep the other member polling meanwhile
        got = q2.get(timeout=DEADLINE_S)
        after = admin._cluster.control.request("describe_groups", groups=["g"])["groups"][0]
        second.kill()
        second.join(10)
    finally:
        if first.is_alive():
            first.kill()
    assert got == before and after["generation"] == generation and after["state"] == "Stable"
    assert revoked == [] and len(parts(other)) == 2
    other.close()


def test_join_and_leave_storms_lose_no_record_and_end_with_every_partition_owned_once(conf, admin):
    create_topic(admin, "t", 6)
    produce(conf, "t", 6, 50)
    live, got = [], []
    for i in range(8):                 # join, and now and then close one, without waiting for rebalances
        c = shmlog.Consumer(group_conf(conf))
        c.subscribe(["t"])
        live.append(c)
        for m in live:
            msg = m.poll(0)
            if msg is not None:
                got.append((m, msg))
        if i % 3 == 2:
            live.pop(0).close()        # commits what poll() returned to it, then leaves
    assert len(live) == 6
    drive(live, lambda: describe(admin).state == ConsumerGroupState.STABLE and
          sorted(p for c in live for p in parts(c)) == list(range(6)) and
          {(m.partition(), m.offset()) for _, m in got if m.error() is None} ==
          {(p, o) for p in range(6) for o in range(50)}, sink=got)
    assert len(describe(admin).members) == 6
    for c in live:
        c.close()
    assert describe(admin).state == ConsumerGroupState.EMPTY


def test_a_pattern_subscription_picks_up_a_topic_created_later(conf, admin):
    create_topic(admin, "orders-eu", 1)
    c = shmlog.Consumer(group_conf(conf))
    c.subscribe(["^orders-.*"])
    drive([c], lambda: [tp.topic for tp in c.assignment()] == ["orders-eu"])
    create_topic(admin, "orders-us", 1)
    create_topic(admin, "payments", 1)
    drive([c], lambda: sorted(tp.topic for tp in c.assignment()) == ["orders-eu", "orders-us"])
    produce(conf, "orders-us", 1, 1)
    got = []
    drive([c], lambda: bool(got), sink=got)
    assert got[0][1].topic() == "orders-us"
    c.close()


def test_cooperative_sticky_revokes_only_the_partitions_that_move(conf, admin):
    create_topic(admin, "t", 4)
    revoked = []
    first = shmlog.Consumer(group_conf(conf, partition_assignment_strategy="cooperative-sticky"))
    first.subscribe(["t"], on_revoke=lambda c, ps: revoked.append(sorted(tp.partition for tp in ps)))
    drive([first], lambda: parts(first) == [0, 1, 2, 3])
    second = shmlog.Consumer(group_conf(conf, partition_assignment_strategy="cooperative-sticky"))
    second.subscribe(["t"])
    drive([first, second], lambda: len(parts(first)) == 2 and len(parts(second)) == 2)
    assert len(revoked) == 1 and sorted(revoked[0] + parts(first)) == [0, 1, 2, 3]
    first.close()
    second.close()


# ---------------------------------------------------------------------------- commit fencing on the wire

def request(ctl, op, **fields):
    """One request on a raw control connection; members also get pushes ("rebalance"), skipped here."""
    ctl.next_id += 1
    ctl.sock.sendall(json.dumps({"op": op, "id": ctl.next_id, **fields}).encode() + b"\n")
    while True:
        reply = json.loads(ctl.reader.readline())
        if reply.get("id") == ctl.next_id:
            break
        assert reply.get("push") and reply["event"] == "rebalance"
    if not reply["ok"]:
        raise KafkaException(KafkaError(reply["code"], reply["error"]))
    return reply


def join(ctl, member_id=""):
    return request(ctl, "join_group", group="g", member_id=member_id, protocols=["range"], subscription=["t"],
                   session_timeout_ms=10000, rebalance_timeout_ms=10000)


def commit(ctl, member_id, generation):
    return request(ctl, "offset_commit", group="g", member_id=member_id, generation=generation, instance_id=None,
                   offsets=[["t", 0, 1, ""]])


@pytest.fixture
def two_members(broker, admin):
    """Member one at generation 1, then member two joins and both are at generation 2 (not synced)."""
    create_topic(admin, "t", 2)
    one, two = Control(broker.data_dir), Control(broker.data_dir)
    first = join(one)
    request(one, "sync_group", group="g", member_id=first["member_id"], generation=1)
    joined = queue.Queue()
    threading.Thread(target=lambda: joined.put(join(two)), daemon=True).start()
    drive([], lambda: len(describe(admin).members) == 2)
    again = join(one, member_id=first["member_id"])
    second = joined.get(timeout=DEADLINE_S)
    assert again["generation"] == second["generation"] == 2
    yield one, two, first["member_id"], second["member_id"]
    one.close()
    two.close()


def test_a_commit_from_a_stale_generation_is_refused_with_illegal_generation(two_members):
    one, _, member, _ = two_members
    with pytest.raises(KafkaException) as exc:
        commit(one, member, 1)
    assert exc.value.args[0].code() == KafkaError.ILLEGAL_GENERATION


def test_a_commit_before_the_new_assignment_is_synced_is_refused_with_rebalance_in_progress(two_members):
    one, _, member, _ = two_members
    with pytest.raises(KafkaException) as exc:
        commit(one, member, 2)
    assert exc.value.args[0].code() == KafkaError.REBALANCE_IN_PROGRESS


def test_a_member_whose_connection_closed_is_gone_at_once_and_its_commit_is_refused(two_members, broker):
    one, two, _, gone = two_members
    two.close()
    third = Control(broker.data_dir)
    deadline = time.monotonic() + DEADLINE_S
    while True:   # the close is seen when the supervisor next reads; the first request after it may race
        try:
            commit(third, gone, 2)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID:
                break
            assert exc.args[0].code() == KafkaError.REBALANCE_IN_PROGRESS and time.monotonic() < deadline
    third.close()


# ---------------------------------------------------------------------------- offsets

def test_committed_offsets_survive_a_broker_restart(data_dir):
    with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        a = shmlog.AdminClient(conf)
        create_topic(a, "t", 2)
        a.close()
        c = shmlog.Consumer(group_conf(conf))
        c.commit(offsets=[TopicPartition("t", 0, 7, "seven"), TopicPartition("t", 1, 3)], asynchronous=False)
        c.close()
        wait_persisted(b.data_dir, "__consumer_offsets")
    with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0) as b:
        c = shmlog.Consumer(group_conf({"bootstrap.servers": b.bootstrap_servers}))
        got = c.committed([TopicPartition("t", 0), TopicPartition("t", 1)])
        c.close()
    assert [(tp.offset, tp.metadata) for tp in got] == [(7, "seven"), (3, None)]


def test_committed_offsets_survive_a_sigkilled_supervisor(data_dir):
    b = shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0).start()
    try:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        a = shmlog.AdminClient(conf)
        create_topic(a, "t", 1)
        a.close()
        c = shmlog.Consumer(group_conf(conf))
        c.commit(offsets=[TopicPartition("t", 0, 5)], asynchronous=False)
        c.close()
        st = shmlog.broker.launcher.status(data_dir)
        persister, supervisor = psutil.Process(st["persister_pid"]), psutil.Process(st["pid"])
        b.process.kill()       # the keeper first (it would restart the supervisor), then the supervisor:
        b.process.wait()       # no clean stop, so the commit may exist only in the __consumer_offsets ring
        supervisor.kill()
        supervisor.wait(DEADLINE_S)
        persister.wait(DEADLINE_S)   # it notices its supervisor is gone and exits
        b.process = None
        b.start()
        c = shmlog.Consumer(group_conf(conf))
        assert c.committed([TopicPartition("t", 0)])[0].offset == 5
        c.close()
    finally:
        b.stop()


def test_a_group_without_commits_starts_where_auto_offset_reset_says(conf, admin):
    create_topic(admin, "t", 1)
    produce(conf, "t", 1, 3)
    earliest = shmlog.Consumer(group_conf(conf, "early"))
    latest = shmlog.Consumer(group_conf(conf, "late", auto_offset_reset="latest"))
    failing = shmlog.Consumer(group_conf(conf, "strict", auto_offset_reset="error"))
    for c in (earliest, latest, failing):
        c.subscribe(["t"])
    got = []
    drive([earliest, latest], lambda: parts(earliest) == [0] and parts(latest) == [0] and got, sink=got)
    assert got[0][0] is earliest and got[0][1].offset() == 0 and not [c for c, _ in got if c is latest]
    produce(conf, "t", 1, 1, start=3)
    drive([latest], lambda: any(c is latest for c, _ in got), sink=got)
    assert [m.offset() for c, m in got if c is latest] == [3]
    errors = []
    drive([failing], lambda: errors, sink=errors)
    assert errors[0][1].error().code() == KafkaError._AUTO_OFFSET_RESET and parts(failing) == []
    for c in (earliest, latest, failing):
        c.close()


def test_close_commits_the_offsets_of_the_records_poll_returned(conf, admin):
    create_topic(admin, "t", 1)
    produce(conf, "t", 1, 5)
    c = shmlog.Consumer(group_conf(conf, auto_commit_interval_ms=600000))
    c.subscribe(["t"])
    got = []
    drive([c], lambda: len(got) == 5, sink=got)
    c.close()
    reader = shmlog.Consumer(group_conf(conf))
    assert reader.committed([TopicPartition("t", 0)])[0].offset == 5
    reader.close()


def test_an_asynchronous_commit_reports_to_on_commit_from_poll(conf, admin):
    create_topic(admin, "t", 1)
    reports = []
    c = shmlog.Consumer(group_conf(conf, callbacks={"on_commit": lambda err, ps: reports.append((err, ps))}))
    c.subscribe(["t"])
    drive([c], lambda: parts(c) == [0])
    assert c.commit(offsets=[TopicPartition("t", 0, 0)], asynchronous=True) is None
    drive([c], lambda: reports)
    err, ps = reports[0]
    assert err is None and [(tp.topic, tp.partition, tp.offset) for tp in ps] == [("t", 0, 0)]
    c.close()


def test_store_offsets_then_commit_commits_the_stored_offset(conf, admin):
    create_topic(admin, "t", 1)
    produce(conf, "t", 1, 10)
    c = shmlog.Consumer(group_conf(conf, enable_auto_offset_store=False, enable_auto_commit=False))
    c.subscribe(["t"])
    got = []
    drive([c], lambda: len(got) == 10, sink=got)
    c.store_offsets(message=got[3][1])
    assert [tp.offset for tp in c.commit(asynchronous=False)] == [4]
    assert c.committed([TopicPartition("t", 0)])[0].offset == 4
    c.close()


def test_store_offsets_is_refused_while_enable_auto_offset_store_is_on(conf, admin):
    c = shmlog.Consumer(group_conf(conf))
    with pytest.raises(KafkaException) as exc:
        c.store_offsets(offsets=[TopicPartition("t", 0, 1)])
    assert exc.value.args[0].code() == KafkaError._INVALID_ARG
    c.close()


# ---------------------------------------------------------------------------- admin and CLI

def test_admin_lists_and_describes_a_group_with_its_members_and_assignment(conf, admin):
    create_topic(admin, "t", 2)
    c = shmlog.Consumer(group_conf(conf, "billing"))
    c.subscribe(["t"])
    drive([c], lambda: parts(c) == [0, 1])
    listed = admin.list_consumer_groups().result().valid
    assert [(g.group_id, g.state) for g in listed] == [("billing", ConsumerGroupState.STABLE)]
    desc = describe(admin, "billing")
    (member,) = desc.members
    assert member.member_id == c.memberid() and member.host == f"pid:{os.getpid()}"
    assert sorted(tp.partition for tp in member.assignment.topic_partitions) == [0, 1]
    assert desc.partition_assignor == "range"
    c.close()


def test_admin_reports_committed_offsets_and_lag_per_partition(conf, admin):
    create_topic(admin, "t", 2)
    produce(conf, "t", 2, 10)
    c = shmlog.Consumer(group_conf(conf))
    c.commit(offsets=[TopicPartition("t", 0, 4), TopicPartition("t", 1, 10)], asynchronous=False)
    c.close()
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("g")])["g"].result()
    assert [(tp.partition, tp.offset) for tp in offsets.topic_partitions] == [(0, 4), (1, 10)]
    lag = admin.list_consumer_group_lag("g").result()
    assert [(r.partition, r.committed, r.log_end_offset, r.lag) for r in lag] == [(0, 4, 10, 6), (1, 10, 10, 0)]


def test_deleting_a_group_with_members_fails_and_deleting_an_empty_one_removes_its_offsets(conf, admin):
    create_topic(admin, "t", 1)
    c = shmlog.Consumer(group_conf(conf))
    c.subscribe(["t"])
    drive([c], lambda: parts(c) == [0])
    c.commit(offsets=[TopicPartition("t", 0, 1)], asynchronous=False)
    with pytest.raises(KafkaException) as exc:
        admin.delete_consumer_groups(["g"])["g"].result()
    assert exc.value.args[0].code() == KafkaError.NON_EMPTY_GROUP == 68
    c.close()
    admin.delete_consumer_groups(["g"])["g"].result()
    assert admin.list_consumer_groups().result().valid == []


def test_altering_offsets_of_an_active_group_is_refused(conf, admin):
    create_topic(admin, "t", 1)
    c = shmlog.Consumer(group_conf(conf))
    c.subscribe(["t"])
    drive([c], lambda: parts(c) == [0])
    f = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions("g", [TopicPartition("t", 0, 0)])])["g"]
    with pytest.raises(KafkaException) as exc:
        f.result()
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID
    c.close()


def cli(capsys, *args):
    from shmlog.cli import main
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_shmlog_groups_describe_prints_current_offset_log_end_lag_and_member(conf, admin, broker, capsys):
    create_topic(admin, "t", 2)
    produce(conf, "t", 2, 10)
    c = shmlog.Consumer(group_conf(conf, client_id="billing-1"))
    c.subscribe(["t"])
    drive([c], lambda: parts(c) == [0, 1])
    c.commit(offsets=[TopicPartition("t", 0, 4)], asynchronous=False)
    rc, out, _ = cli(capsys, "groups", "describe", "g", "--data-dir", broker.data_dir)
    assert rc == 0
    header, *rows = out.splitlines()
    assert header.split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                              "CONSUMER-ID", "HOST", "CLIENT-ID"]
    assert [r.split() for r in rows] == [["g", "t", "0", "4", "10", "6", c.memberid(), f"pid:{os.getpid()}",
                                          "billing-1"],
                                         ["g", "t", "1", "-", "10", "-", c.memberid(), f"pid:{os.getpid()}",
                                          "billing-1"]]
    c.close()


def test_shmlog_groups_list_and_delete(conf, admin, broker, capsys):
    create_topic(admin, "t", 1)
    for group in ("a", "b"):
        c = shmlog.Consumer(group_conf(conf, group))
        c.commit(offsets=[TopicPartition("t", 0, 0)], asynchronous=False)
        c.close()
    assert cli(capsys, "groups", "list", "--data-dir", broker.data_dir)[1] == "a\nb\n"
    rc, out, _ = cli(capsys, "groups", "delete", "a", "--data-dir", broker.data_dir)
    assert rc == 0 and out == "Deletion of requested consumer groups ('a') was successful.\n"
    assert cli(capsys, "groups", "list", "--state", "--data-dir", broker.data_dir)[1].split() == \
        ["GROUP", "STATE", "b", "Empty"]


def test_shmlog_groups_reset_offsets_prints_a_plan_and_applies_it_only_with_execute(conf, admin, broker, capsys):
    create_topic(admin, "t", 2)
    produce(conf, "t", 2, 10)
    c = shmlog.Consumer(group_conf(conf))
    c.commit(offsets=[TopicPartition("t", 0, 5), TopicPartition("t", 1, 5)], asynchronous=False)
    base = ["groups", "reset-offsets", "g", "--data-dir", broker.data_dir]
    rc, out, _ = cli(capsys, *base, "--topic", "t:1", "--to-earliest")
    assert rc == 0 and [line.split() for line in out.splitlines()[:2]] == [
        ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], ["g", "t", "1", "0"]]
    assert c.committed([TopicPartition("t", 1)])[0].offset == 5          # a dry run changes nothing
    assert cli(capsys, *base, "--all-topics", "--to-latest", "--execute")[0] == 0
    assert [tp.offset for tp in c.committed([TopicPartition("t", 0), TopicPartition("t", 1)])] == [10, 10]
    assert cli(capsys, *base, "--topic", "t", "--to-offset", "3", "--execute")[0] == 0
    assert [tp.offset for tp in c.committed([TopicPartition("t", 0), TopicPartition("t", 1)])] == [3, 3]
    c.close()


def test_shmlog_groups_reset_offsets_to_a_datetime_finds_the_first_record_that_new(conf, admin, broker, capsys):
    import datetime
    create_topic(admin, "t", 1)
    base = int(time.time() * 1000) - 180_000          # recent: older records would fall to retention
    p = shmlog.Producer(conf)
    for i in range(3):
        p.produce("t", value=b"%d" % i, timestamp=base + i * 60_000)
    p.flush()
    p.close()
    when = datetime.datetime.fromtimestamp((base + 30_000) / 1000, datetime.timezone.utc).isoformat()
    rc, out, _ = cli(capsys, "groups", "reset-offsets", "g", "--topic", "t", "--to-datetime", when, "--execute",
                     "--data-dir", broker.data_dir)
    assert rc == 0 and out.splitlines()[1].split() == ["g", "t", "0", "1"]


def test_shmlog_groups_reset_offsets_refuses_an_active_group(conf, admin, broker, capsys):
    create_topic(admin, "t", 1)
    c = shmlog.Consumer(group_conf(conf))
    c.subscribe(["t"])
    drive([c], lambda: parts(c) == [0])
    rc, _, err = cli(capsys, "groups", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--execute",
                     "--data-dir", broker.data_dir)
    assert rc == 1 and "can only be reset if the group 'g' is inactive, but the current state is Stable" in err
    c.close()


# ---------------------------------------------------------------------------- confluent-kafka's example

CONSUMER_EXAMPLE = """
import logging, sys
from shmlog import Consumer, KafkaException, KafkaError      # the one changed line

broker, group, topics = sys.argv[1], sys.argv[2], sys.argv[3:]
conf = {'bootstrap.servers': broker, 'group.id': group, 'session.timeout.ms': 6000,
        'default.topic.config': {'auto.offset.reset': 'smallest'}}
logger = logging.getLogger('consumer')
c = Consumer(conf, logger=logger)

def print_assignment(consumer, partitions):
    print('Assignment:', partitions, flush=True)

c.subscribe(topics, on_assign=print_assignment)
try:
    while True:
        msg = c.poll(timeout=1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                sys.stderr.write('%% %s [%d] reached end at offset %d\\n' %
                                 (msg.topic(), msg.partition(), msg.offset()))
            else:
                raise KafkaException(msg.error())
        else:
            sys.stderr.write('%% %s [%d] at offset %d with key %s:\\n' % (msg.topic(), msg.partition(), msg.offset(),
                                                                        str(msg.key())))
            print(msg.value(), flush=True)
except KeyboardInterrupt:
    sys.stderr.write('%% Aborted by user\\n')
finally:
    c.close()
"""


def test_confluent_kafkas_consumer_example_runs_unchanged_but_for_the_import(conf, admin, tmp_path):
    create_topic(admin, "t", 2)
    produce(conf, "t", 2, 3)
    script = tmp_path / "consumer.py"
    script.write_text(textwrap.dedent(CONSUMER_EXAMPLE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script), conf["bootstrap.servers"], "example", "t"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            start_new_session=True)
    lines = []
    try:
        while sum(1 for line in lines if line.startswith("b'")) < 6:
            line = proc.stdout.readline()
            assert line, f"example exited early: {proc.stderr.read()}"
            lines.append(line)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Aborted by user" in err
    assert lines[0].startswith("Assignment: [TopicPartition{topic=t,partition=0")
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("example")])["example"].result()
    assert [tp.offset for tp in offsets.topic_partitions] == [3, 3]      # close() committed
