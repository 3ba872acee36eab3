"""Replication metadata: log.dirs, replication.factor and replica assignment, leader / ISR in
list_topics and describe_topics, min.insync.replicas for acks=all, and the CLI's view of it."""
import json
import os

import pytest

import shmlog
from shmlog import KafkaError, KafkaException

from ..integration.test_cli import ok, shmlog_cli
from .conftest import create, wait_for

DIRS = ("d0", "d1", "d2")


@pytest.fixture
def three_dirs(replicated, data_dir):
    conf, admin, _ = replicated([os.path.join(data_dir, d) for d in DIRS])
    return conf, admin, data_dir


def test_a_replication_factor_above_the_number_of_log_dirs_is_refused_naming_both_numbers(three_dirs):
    _, admin, _ = three_dirs
    with pytest.raises(KafkaException) as info:
        create(admin, "t", num_partitions=1, replication_factor=4)
    err = info.value.args[0]
    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR
    assert "replication factor 4" in err.str() and "log dirs (3)" in err.str()
    assert "t" not in admin.list_topics().topics


def test_replicas_of_a_partition_are_on_distinct_log_dirs_and_recorded_with_leader_epoch_and_isr(three_dirs):
    _, admin, data_dir = three_dirs
    create(admin, "t", num_partitions=3, replication_factor=3)
    parts = admin.list_topics("t").topics["t"].partitions
    for p in parts.values():
        assert sorted(p.replicas) == [0, 1, 2]
        assert p.leader == p.replicas[0]
    assert sorted(p.leader for p in parts.values()) == [0, 1, 2]   # leaders spread over the dirs
    # Empty logs: every follower is caught up at once and joins the ISR.
    wait_for(lambda: all(sorted(p.isrs) == [0, 1, 2] for p in admin.list_topics("t").topics["t"].partitions.values()),
             "every replica in the ISR")
    with open(os.path.join(data_dir, "meta", "topics.json")) as f:
        states = json.load(f)["topics"]["t"]["partition_states"]
    assert [s["leader_epoch"] for s in states] == [0, 0, 0]
    for p in range(3):   # every replica has its own directory, claimed for the topic
        for d in DIRS:
            assert os.path.isfile(os.path.join(data_dir, d, f"t-{p}", "partition.metadata"))


def test_leaders_are_balanced_across_topics(three_dirs):
    _, admin, _ = three_dirs
    for name in ("a", "b", "c"):
        create(admin, name, num_partitions=1, replication_factor=2)
    leaders = [admin.list_topics(n).topics[n].partitions[0].leader for n in ("a", "b", "c")]
    assert sorted(leaders) == [0, 1, 2]


def test_an_explicit_replica_assignment_is_kept_and_checked(three_dirs):
    _, admin, _ = three_dirs
    create(admin, "t", replica_assignment=[[2, 0], [1, 2]])
    parts = admin.list_topics("t").topics["t"].partitions
    assert [(parts[p].leader, parts[p].replicas) for p in (0, 1)] == [(2, [2, 0]), (1, [1, 2])]
    with pytest.raises(KafkaException) as info:
        create(admin, "u", replica_assignment=[[1, 1]])
    assert info.value.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT
    with pytest.raises(KafkaException) as info:
        create(admin, "v", replica_assignment=[[0, 3]])
    assert info.value.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT


def test_create_partitions_places_the_new_partitions_with_the_topics_replication_factor(three_dirs):
    _, admin, _ = three_dirs
    create(admin, "t", num_partitions=1, replication_factor=2)
    admin.create_partitions([shmlog.admin.NewPartitions("t", 3)])["t"].result()
    parts = admin.list_topics("t").topics["t"].partitions
    assert len(parts) == 3 and all(len(set(p.replicas)) == 2 for p in parts.values())


def test_default_replication_factor_applies_to_topics_created_without_one(data_dir, start_broker):
    b = start_broker(log_dirs=f"{data_dir}/a,{data_dir}/b", default_replication_factor=2)
    conf = {"bootstrap.servers": b.bootstrap_servers}
    p = shmlog.Producer(conf)
    p.produce("auto", b"x")   # auto-created
    assert p.flush(10) == 0
    a = shmlog.AdminClient(conf)
    try:
        assert sorted(a.list_topics("auto").topics["auto"].partitions[0].replicas) == [0, 1]
    finally:
        a.close()


def test_acks_all_is_refused_with_not_enough_replicas_when_min_insync_replicas_exceeds_the_isr(three_dirs):
    conf, admin, _ = three_dirs
    create(admin, "t", num_partitions=1, replication_factor=1, config={"min.insync.replicas": "2"})
    reports = []
    p = shmlog.Producer({**conf, "acks": "all"})
    p.produce("t", b"v", on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(10) == 0
    assert reports[0] is not None and reports[0].code() == KafkaError.NOT_ENOUGH_REPLICAS
    assert reports[0].retriable()
    assert "min.insync.replicas=2" in reports[0].str() and "nothing was appended" in reports[0].str()
    # Lowering it (alter_configs) makes acks=all succeed again without a restart.
    res = shmlog.admin.ConfigResource("topic", "t", set_config={"min.insync.replicas": "1"})
    admin.alter_configs([res])[res].result()
    offsets = []
    p.produce("t", b"w", on_delivery=lambda err, msg: (reports.append(err), offsets.append(msg.offset())))
    assert p.flush(10) == 0
    assert reports[1] is None
    assert offsets == [0]   # the refused record took no offset


def test_acks_1_is_not_held_to_min_insync_replicas(three_dirs):
    conf, admin, _ = three_dirs
    create(admin, "t", num_partitions=1, replication_factor=1, config={"min.insync.replicas": "3"})
    reports = []
    p = shmlog.Producer({**conf, "acks": 1})
    p.produce("t", b"v", on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(10) == 0
    assert reports == [None]


def test_topics_describe_shows_replicas_and_isr_and_lists_under_replicated_partitions(three_dirs):
    _, admin, data_dir = three_dirs
    created = ok(shmlog_cli("topics", "create", "t", "--replica-assignment", "0:1:2,1:2:0", "--data-dir", data_dir))
    assert "2 partitions" in created.stdout
    out = ok(shmlog_cli("topics", "describe", "t", "--data-dir", data_dir)).stdout
    assert "replication factor 3" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [r[:3] for r in rows] == [["0", "0", "0,1,2"], ["1", "1", "1,2,0"]]
    wait_for(lambda: all(len(p.isrs) == 3 for p in admin.list_topics("t").topics["t"].partitions.values()),
             "every replica in the ISR")
    under = ok(shmlog_cli("topics", "describe", "--under-replicated-partitions", "--data-dir", data_dir)).stdout
    assert "no under-replicated partitions" in under
