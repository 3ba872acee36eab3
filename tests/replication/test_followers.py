"""Followers: mirrors copy the leader's log byte for byte, fsync, and say so; acks=all and the
high watermark follow the ISR; a stopped, killed or read-only follower leaves the ISR after
replica.lag.time.max.ms and comes back once it caught up."""
import os
import signal

import pytest

import shmlog
from shmlog import KafkaError, KafkaException, TopicPartition

from ..integration.test_cli import ok, shmlog_cli
from .conftest import WAIT_S, create, log_bytes, mirror_pid, partition_state, produce, stopped, wait_for, wait_isr


def test_each_follower_holds_a_byte_identical_copy_of_the_leaders_log_and_joins_the_isr(replicated, data_dir):
    conf, admin, dirs = replicated(3)
    create(admin, "t", [0, 1, 2])
    reports = produce(conf, "t", [b"v%d" % i for i in range(300)], keys=[b"k"] * 300)
    assert all(err is None for err, *_ in reports)
    wait_isr(admin, "t", [0, 1, 2])
    leader = log_bytes(dirs[0], "t")
    assert len(leader) > 0
    wait_for(lambda: log_bytes(dirs[1], "t") == leader and log_bytes(dirs[2], "t") == leader,
             "both followers to hold the leader's bytes")


def test_acks_all_completes_only_once_every_isr_follower_fsynced_the_batch(replicated, data_dir):
    conf, admin, dirs = replicated(3, replica_lag_time_max_ms=60_000)
    create(admin, "t", [0, 1, 2])
    produce(conf, "t", [b"warm"])
    wait_isr(admin, "t", [0, 1, 2])
    pid = wait_for(lambda: mirror_pid(data_dir, 2), "the mirror of log dir 2")
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0})
    reports = []
    with stopped(pid):
        p.produce("t", b"held", on_delivery=lambda err, msg: reports.append(err))
        assert p.flush(1.0) == 1, "acknowledged while an in-sync follower had not fsynced it"
        assert reports == []
    assert p.flush(WAIT_S) == 0
    assert reports == [None]
    assert b"held" in log_bytes(dirs[2], "t")


def test_consumers_of_a_replicated_topic_read_only_below_the_high_watermark(replicated, data_dir):
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=60_000)
    create(admin, "t", [0, 1])
    produce(conf, "t", [b"first"])
    wait_isr(admin, "t", [0, 1])
    pid = wait_for(lambda: mirror_pid(data_dir, 1), "the mirror of log dir 1")
    c = shmlog.Consumer({**conf, "group.id": "g", "enable.auto.commit": False})
    c.assign([TopicPartition("t", 0, 0)])
    first = c.poll(WAIT_S)
    assert first is not None and first.value() == b"first"
    with stopped(pid):
        reports = produce(conf, "t", [b"second"], acks=1)   # published in the leader ring, not replicated
        assert reports[0][0] is None
        assert c.get_watermark_offsets(TopicPartition("t", 0))[1] == 1
        assert c.poll(0.5) is None, "a consumer saw a record above the high watermark"
    second = c.poll(WAIT_S)
    assert second is not None and second.value() == b"second"
    c.close()


def test_a_stopped_follower_leaves_the_isr_after_the_lag_time_and_acks_all_continues(replicated, data_dir):
    conf, admin, dirs = replicated(3, replica_lag_time_max_ms=500)
    create(admin, "t", replication_factor=3, config={"min.insync.replicas": "2"})
    leader = partition_state(admin, "t").leader
    follower = [r for r in partition_state(admin, "t").replicas if r != leader][-1]
    produce(conf, "t", [b"warm"])
    wait_isr(admin, "t", [0, 1, 2])
    pid = wait_for(lambda: mirror_pid(data_dir, follower), "the follower's mirror")
    with stopped(pid):
        p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0})
        reports = []
        p.produce("t", b"during", on_delivery=lambda err, msg: reports.append(err))
        assert p.flush(WAIT_S) == 0      # completes once the stopped follower left the ISR
        assert reports == [None]
        assert follower not in partition_state(admin, "t").isrs
        under = ok(shmlog_cli("topics", "describe", "--under-replicated-partitions", "--data-dir", data_dir)).stdout
        assert under.splitlines()[1].split()[:2] == ["t", "0"]
    wait_isr(admin, "t", [0, 1, 2])      # caught up again: back in the ISR
    assert b"during" in log_bytes(dirs[follower], "t")


def test_acks_all_fails_with_not_enough_replicas_after_append_when_the_isr_shrinks_below_the_minimum_meanwhile(
        replicated, data_dir):
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=2000)
    create(admin, "t", [0, 1], config={"min.insync.replicas": "2"})
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0})
    reports = []
    p.produce("t", b"warm", on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert p.flush(WAIT_S) == 0
    wait_isr(admin, "t", [0, 1])
    pid = wait_for(lambda: mirror_pid(data_dir, 1), "the mirror of log dir 1")
    with stopped(pid):
        p.produce("t", b"x", on_delivery=lambda err, msg: reports.append((err, msg.offset())))
        assert p.flush(WAIT_S) == 0     # appended at once; the ISR shrinks after the lag time
        err, offset = reports[1]
        assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND and err.retriable()
    wait_isr(admin, "t", [0, 1])
    assert b"x" in log_bytes(dirs[1], "t")   # it was appended, and the follower copied it once back
    assert [r[0] for r in produce(conf, "t", [b"y"])] == [None]


def test_acks_all_is_refused_before_the_append_while_the_isr_is_below_min_insync_replicas(replicated, data_dir):
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=300)
    create(admin, "t", [0, 1], config={"min.insync.replicas": "2"})
    produce(conf, "t", [b"warm"])
    wait_isr(admin, "t", [0, 1])
    pid = wait_for(lambda: mirror_pid(data_dir, 1), "the mirror of log dir 1")
    with stopped(pid):
        produce(conf, "t", [b"one"], acks=1)     # the stopped follower falls behind and leaves the ISR
        wait_isr(admin, "t", [0])
        err, _, offset, _ = produce(conf, "t", [b"refused"])[0]
        assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS and err.retriable()
        assert "nothing was appended" in err.str()
        p = shmlog.Producer({**conf, "acks": "all"})
        with pytest.raises(KafkaException) as info:   # produce_values: the same check
            p.produce_values("t", [b"refused too"], partition=0)
        assert info.value.args[0].code() == KafkaError.NOT_ENOUGH_REPLICAS
        p.close()
        assert [(e, o) for e, _, o, _ in produce(conf, "t", [b"two"], acks=1)] == [(None, 2)]   # no offset taken
    wait_isr(admin, "t", [0, 1])
    assert [r[0] for r in produce(conf, "t", [b"three"])] == [None]
    c = shmlog.Consumer({**conf, "group.id": "check", "enable.auto.commit": False})
    c.assign([TopicPartition("t", 0, 0)])
    got = [m.value() for m in c.consume(10, WAIT_S)]
    while len(got) < 4:
        got += [m.value() for m in c.consume(10, 1.0)]
    c.close()
    assert got == [b"warm", b"one", b"two", b"three"]


def test_a_sigkilled_mirror_is_restarted_and_its_follower_catches_up_with_nothing_lost(replicated, data_dir):
    conf, admin, dirs = replicated(2)
    create(admin, "t", [0, 1])
    produce(conf, "t", [b"a%d" % i for i in range(100)])
    pid = wait_for(lambda: mirror_pid(data_dir, 1), "the mirror of log dir 1")
    os.kill(pid, signal.SIGKILL)
    reports = produce(conf, "t", [b"b%d" % i for i in range(100)])
    assert all(err is None for err, *_ in reports)
    wait_for(lambda: (mirror_pid(data_dir, 1) or pid) != pid, "the supervisor to restart the mirror")
    wait_for(lambda: log_bytes(dirs[1], "t") == log_bytes(dirs[0], "t"), "the follower to catch up")


def test_a_follower_on_a_full_disk_leaves_the_isr_and_catches_up_when_space_returns(mounts, replicated, data_dir):
    disks = mounts(3, size=4 << 20)
    conf, admin, dirs = replicated(disks, replica_lag_time_max_ms=500)
    create(admin, "t", [0, 1, 2], config={"min.insync.replicas": "2"})
    produce(conf, "t", [b"warm"])
    wait_isr(admin, "t", [0, 1, 2])
    filler = os.path.join(disks[2], "filler")
    with open(filler, "wb") as f:   # ENOSPC for every write of the follower on disks[2]
        st = os.statvfs(disks[2])
        f.write(b"\0" * (st.f_bavail * st.f_frsize))
    reports = produce(conf, "t", [b"r%d" % i * 100 for i in range(50)])
    assert all(err is None for err, *_ in reports)   # two in-sync replicas are enough
    wait_isr(admin, "t", [0, 1])
    os.unlink(filler)
    wait_isr(admin, "t", [0, 1, 2])
    wait_for(lambda: log_bytes(disks[2], "t") == log_bytes(disks[0], "t"), "the follower to catch up")


def test_moving_a_replica_to_another_log_dir_fills_it_from_the_leader_and_it_joins_the_isr(replicated, data_dir):
    conf, admin, dirs = replicated(3)
    create(admin, "t", [0, 1])
    produce(conf, "t", [b"m%d" % i for i in range(100)])
    wait_isr(admin, "t", [0, 1])
    moved = ok(shmlog_cli("topics", "move-replica", "t", "--partition", "0", "--from", "1", "--to", "2",
                          "--data-dir", data_dir))
    assert "from log dir 1 to 2" in moved.stdout
    assert partition_state(admin, "t").replicas == [0, 2]
    wait_isr(admin, "t", [0, 2])
    assert log_bytes(dirs[2], "t") == log_bytes(dirs[0], "t")
    wait_for(lambda: not os.path.exists(os.path.join(dirs[1], "t-0")), "the old replica's directory to go")
    # The leader moves too: off log dir 0 to an in-sync replica first, at the next leader epoch.
    ok(shmlog_cli("topics", "move-replica", "t", "--partition", "0", "--from", "0", "--to", "1",
                  "--data-dir", data_dir))
    state = partition_state(admin, "t")
    assert state.leader == 2 and state.replicas == [1, 2]
    assert [err for err, *_ in produce(conf, "t", [b"after"])] == [None]
    wait_isr(admin, "t", [1, 2])
    refused = shmlog_cli("topics", "move-replica", "t", "--partition", "0", "--from", "0", "--to", "1",
                         "--data-dir", data_dir)
    assert refused.returncode == 1 and "no replica on log dir 0" in refused.stderr


def tcp_setup(replicated, data_dir, lag_ms):
    """A broker over two log dirs with a Kafka listener; topic t on replicas [0, 1] with
    min.insync.replicas=2, both in its ISR. (conf, admin, dirs, the follower's mirror pid, a
    confluent-kafka acks=all Producer through the listener that does not retry)."""
    ck = pytest.importorskip("confluent_kafka")
    pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=lag_ms, listeners="PLAINTEXT://127.0.0.1:0")
    create(admin, "t", [0, 1], config={"min.insync.replicas": "2"})
    produce(conf, "t", [b"warm"])
    wait_isr(admin, "t", [0, 1])
    port = wait_for(lambda: (admin._cluster.control.request("status")["kafka_listener"] or {}).get("port"),
                    "the Kafka listener")
    pid = wait_for(lambda: mirror_pid(data_dir, 1), "the mirror of log dir 1")
    tcp = ck.Producer({"bootstrap.servers": f"127.0.0.1:{port}", "acks": "all", "enable.idempotence": False,
                       "retries": 0, "message.timeout.ms": 20000})
    return conf, admin, dirs, pid, tcp


def tcp_produce(p, value):
    """Produce one record to t-0 through the confluent-kafka producer p: its delivery error."""
    reports = []
    p.produce("t", value, partition=0, on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(WAIT_S) == 0
    return reports[0]


def test_a_kafka_client_producing_acks_all_over_tcp_is_refused_before_the_append_while_the_isr_is_short(
        replicated, data_dir):
    conf, admin, dirs, pid, tcp = tcp_setup(replicated, data_dir, lag_ms=300)
    with stopped(pid):
        produce(conf, "t", [b"one"], acks=1)     # the stopped follower falls behind and leaves the ISR
        wait_isr(admin, "t", [0])
        err = tcp_produce(tcp, b"refused")
        assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS
        assert [(e, o) for e, _, o, _ in produce(conf, "t", [b"two"], acks=1)] == [(None, 2)]   # no offset taken
    del tcp


def test_a_kafka_client_producing_acks_all_over_tcp_gets_not_enough_replicas_after_append_when_the_isr_shrinks(
        replicated, data_dir):
    conf, admin, dirs, pid, tcp = tcp_setup(replicated, data_dir, lag_ms=2000)
    with stopped(pid):
        err = tcp_produce(tcp, b"x")   # appended at once; the ISR shrinks after the lag time
        assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    del tcp
    wait_isr(admin, "t", [0, 1])
    assert b"x" in log_bytes(dirs[1], "t")   # it was appended, and the follower copied it once back
