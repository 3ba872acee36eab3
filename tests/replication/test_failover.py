"""Leader failover: when the leader's log dir fails (a full disk, the directory gone), an
in-sync replica leads at a new leader epoch, and producers and consumers carry on without a
restart; with no in-sync replica left, unclean.leader.election.enable decides."""
import os
import shutil
import signal

import shmlog
from shmlog import TopicPartition
from shmlog.log import control_record, leader_epoch

from .conftest import (
    WAIT_S,
    create,
    fill,
    mirror_pid,
    partition_state,
    produce,
    read_values,
    wait_for,
    wait_isr,
    warm_up,
)


def test_a_full_leader_disk_moves_leadership_to_an_in_sync_replica_and_loses_nothing_acknowledged(
        mounts, replicated, data_dir):
    disks = mounts(3, size=4 << 20)
    conf, admin, dirs = replicated(disks, replica_lag_time_max_ms=1000)
    create(admin, "t", [0, 1, 2], config={"min.insync.replicas": "2"})
    warm_up(conf, admin, "t", [0, 1, 2])
    before = produce(conf, "t", [b"a%d" % i for i in range(100)])
    assert all(err is None for err, *_ in before), [e for e, *_ in before if e][:2]
    wait_isr(admin, "t", [0, 1, 2])
    filler = fill(disks[0])
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0})
    acked = [v for *_, v in before]
    reports = []
    for i in range(200):
        p.produce("t", b"b%d" % i * 50, on_delivery=lambda err, msg: reports.append((err, msg.value())))
        p.poll(0)
    assert p.flush(WAIT_S) == 0
    acked += [v for err, v in reports if err is None]
    assert len(acked) > 100, f"nothing acknowledged after the leader's disk filled: {reports[:3]}"
    state = wait_for(lambda: (s := partition_state(admin, "t")).leader != 0 and s, "a new leader")
    assert state.leader in (1, 2) and 0 not in state.isrs and state.offline == [0]
    # Batches produced since carry the new leader epoch; the new leader's checkpoint says where it began.
    produce(conf, "t", [b"after"])
    epochs = wait_for(lambda: leader_epoch.read(os.path.join(disks[state.leader], "t-0")), "a leader epoch checkpoint")
    assert epochs[0] == (0, 0) and epochs[-1][0] >= 1 and epochs[-1][1] > 100
    acked.append(b"after")
    values = [v for _, v in read_values(conf, "t", len(acked))]
    assert [v for v in values if v in set(acked)] == acked   # every acknowledged record, in order
    os.unlink(filler)
    wait_isr(admin, "t", [0, 1, 2])   # the old leader comes back as a follower


def test_a_leader_log_dir_that_disappears_moves_leadership_and_producers_and_consumers_carry_on(
        replicated, data_dir):
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=10_000)
    create(admin, "t", [0, 1])
    produce(conf, "t", [b"x%d" % i for i in range(50)])
    wait_isr(admin, "t", [0, 1])
    c = shmlog.Consumer({**conf, "group.id": "live", "enable.auto.commit": False})
    c.assign([TopicPartition("t", 0, 0)])
    seen = []
    while len(seen) < 50:
        m = c.poll(WAIT_S)
        assert m is not None and m.error() is None
        seen.append(m.value())
    shutil.rmtree(dirs[0])
    wait_for(lambda: partition_state(admin, "t").leader == 1, "replica 1 to lead")
    after = produce(conf, "t", [b"y%d" % i for i in range(50)])
    assert all(err is None for err, *_ in after)
    while len(seen) < 100:
        m = c.poll(WAIT_S)
        assert m is not None and m.error() is None
        seen.append(m.value())
    assert seen == [b"x%d" % i for i in range(50)] + [b"y%d" % i for i in range(50)]
    c.close()


def test_without_an_in_sync_replica_the_leader_stays_unless_unclean_election_is_enabled(mounts, replicated, data_dir):
    disks = mounts(2, size=4 << 20)
    conf, admin, dirs = replicated(disks, replica_lag_time_max_ms=300)
    for t, cfg in (("clean", {}), ("unclean", {"unclean.leader.election.enable": "true"})):
        create(admin, t, [0, 1], config=cfg)
        produce(conf, t, [b"v"])
        wait_isr(admin, t, [0, 1])
    pid = wait_for(lambda: mirror_pid(data_dir, 1), "the mirror of log dir 1")
    os.kill(pid, signal.SIGSTOP)
    try:
        for t in ("clean", "unclean"):
            produce(conf, t, [b"w"], acks=1)    # the stopped follower falls behind the leader's log end
            wait_isr(admin, t, [0])
        filler0 = fill(disks[0])
        for t in ("clean", "unclean"):
            produce(conf, t, [b"x" * 20000], acks=1)    # the leader cannot write it (more than a page)
        wait_for(lambda: partition_state(admin, "unclean").leader == 1, "the unclean election")
        assert partition_state(admin, "clean").leader == 0
        os.unlink(filler0)   # the clean topic's leader can write again (and the broker stops quickly)
    finally:
        os.kill(pid, signal.SIGCONT)


def index_bytes(log_dir, topic):
    try:
        with open(os.path.join(log_dir, f"{topic}-0", "aborted.txnindex"), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def abort_then_commit(p, aborted, committed):
    """One transaction of `aborted` aborted, then one of `committed` committed; closes p."""
    for value, commit in ((aborted, False), (committed, True)):
        p.begin_transaction()
        p.produce("t", value)
        (p.commit_transaction if commit else p.abort_transaction)(WAIT_S)
    p.close()


def test_read_committed_after_a_failover_still_drops_the_records_of_an_aborted_transaction(
        mounts, replicated, data_dir):
    disks = mounts(2, size=4 << 20)
    conf, admin, dirs = replicated(disks, replica_lag_time_max_ms=1000)
    create(admin, "t", [0, 1])
    warm_up(conf, admin, "t", [0, 1])
    p = shmlog.Producer({**conf, "transactional.id": "tx"})
    p.init_transactions(WAIT_S)
    abort_then_commit(p, b"aborted", b"committed")
    # The mirror copies the leader's aborted.txnindex with the batches.
    wait_for(lambda: index_bytes(disks[1], "t") and index_bytes(disks[1], "t") == index_bytes(disks[0], "t"),
             "the follower's copy of aborted.txnindex")
    filler = fill(disks[0])
    produce(conf, "t", [b"x" * 20000], acks=1)    # the leader cannot write it: leadership moves
    wait_for(lambda: partition_state(admin, "t").leader == 1, "replica 1 to lead")
    c = shmlog.Consumer({**conf, "group.id": "rc", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    c.assign([TopicPartition("t", 0, 0)])
    values = []
    deadline_left = WAIT_S
    while b"x" * 20000 not in values and deadline_left > 0:
        for m in c.consume(100, 0.5):
            assert m.error() is None, m.error()
            values.append(m.value())
        deadline_left -= 0.5
    c.close()
    os.unlink(filler)
    assert values == [b"warm-up", b"committed", b"x" * 20000]


def test_a_followers_aborted_txnindex_follows_the_leaders_trims_so_a_new_leader_drops_later_aborts(
        replicated, data_dir):
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=10_000)
    create(admin, "t", [0, 1])
    warm_up(conf, admin, "t", [0, 1])
    p = shmlog.Producer({**conf, "transactional.id": "tx", "linger.ms": 0})
    p.init_transactions(WAIT_S)
    for i in range(4):
        p.begin_transaction()
        p.produce("t", b"old-aborted-%d" % i)
        p.abort_transaction(WAIT_S)
    wait_for(lambda: len(control_record.read_aborted(os.path.join(dirs[1], "t-0"))) == 4, "four copied entries")
    cut = control_record.read_aborted(os.path.join(dirs[0], "t-0"))[2].last_offset + 1
    tp = TopicPartition("t", 0, cut)
    assert admin.delete_records([tp])[tp].result().low_watermark == cut
    wait_for(lambda: len(control_record.read_aborted(os.path.join(dirs[0], "t-0"))) == 1,
             "the transaction service to trim the leader's index")
    abort_then_commit(p, b"new-aborted", b"committed")
    wait_for(lambda: index_bytes(dirs[1], "t") == index_bytes(dirs[0], "t"), "the follower's copy of the index")
    assert [e.last_offset >= cut for e in control_record.read_aborted(os.path.join(dirs[1], "t-0"))] == [True] * 2
    shutil.rmtree(dirs[0])
    wait_for(lambda: partition_state(admin, "t").leader == 1, "replica 1 to lead")
    c = shmlog.Consumer({**conf, "group.id": "rc", "isolation.level": "read_committed",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition("t", 0, cut)])
    values = []
    while True:
        m = c.poll(WAIT_S)
        assert m is not None, f"no end of partition after {values}"
        if m.error():
            assert m.error().code() == shmlog.KafkaError._PARTITION_EOF, m.error()
            break
        values.append(m.value())
    c.close()
    assert values == [b"committed"]


def test_a_consumer_reading_segments_behind_the_ring_moves_to_the_new_leaders_files_when_the_old_dir_goes(
        replicated, data_dir):
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=10_000)
    create(admin, "t", [0, 1], config={"ring.bytes": "65536", "segment.bytes": "16384"})
    warm_up(conf, admin, "t", [0, 1])
    values = [b"v%04d" % i + b"." * 1000 for i in range(200)]   # 200 KB: most of it only in the segments
    assert all(err is None for err, *_ in produce(conf, "t", values))
    c = shmlog.Consumer({**conf, "group.id": "behind", "enable.auto.commit": False})
    c.assign([TopicPartition("t", 0, 1)])
    seen = []
    while len(seen) < 5:
        m = c.poll(WAIT_S)
        assert m is not None and m.error() is None
        seen.append(m.value())
    shutil.rmtree(dirs[0])     # the segments it was reading go with the leader's log dir
    wait_for(lambda: partition_state(admin, "t").leader == 1, "replica 1 to lead")
    while len(seen) < 200:
        m = c.poll(WAIT_S)
        assert m is not None, f"stopped after {len(seen)} records"
        assert m.error() is None, m.error()
        seen.append(m.value())
    c.close()
    assert seen == values
