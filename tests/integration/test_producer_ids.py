"""init_producer_id on a real broker: ids never repeat across supervisor restarts (a SIGKILL
the keeper recovers from, a clean stop and start), and a transactional id keeps its id while its epoch is bumped."""
import os
import signal
import time

import pytest

import shmlog
from shmlog.broker import launcher
from shmlog.client.cluster import connect
from shmlog.config import parse_producer_config
from shmlog.errors import KafkaException

pytestmark = pytest.mark.timeout(120)


def cluster_of(bootstrap):
    return connect(parse_producer_config({"bootstrap.servers": bootstrap}), "producer")


def answering_pid(data_dir):
    try:
        return launcher.status(data_dir)["pid"]
    except (KafkaException, OSError):
        return None


def test_an_idempotent_producer_gets_a_new_id_and_epoch_zero_each_time(broker):
    cluster = cluster_of(broker.bootstrap_servers)
    try:
        got = [cluster.init_producer_id() for _ in range(5)]
    finally:
        cluster.close()
    assert len({pid for pid, _ in got}) == 5
    assert all(epoch == 0 and pid >= 0 for pid, epoch in got)


def test_ids_handed_out_before_a_supervisor_sigkill_are_never_handed_out_again(data_dir):
    with shmlog.Broker(data_dir) as b:
        cluster = cluster_of(b.bootstrap_servers)
        before = [cluster.init_producer_id()[0] for _ in range(3)]
        cluster.close()
        old = launcher.status(data_dir)["pid"]
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while answering_pid(data_dir) in (None, old):
            assert time.monotonic() < deadline, "no supervisor answering after the SIGKILL"
            time.sleep(0.01)
        cluster = cluster_of(b.bootstrap_servers)
        after = [cluster.init_producer_id()[0] for _ in range(3)]
        cluster.close()
    assert min(after) > max(before)


def test_ids_handed_out_before_a_clean_stop_are_never_handed_out_again(data_dir):
    ids = []
    for _ in range(2):
        with shmlog.Broker(data_dir) as b:
            cluster = cluster_of(b.bootstrap_servers)
            ids.append(cluster.init_producer_id()[0])
            cluster.close()
    assert ids[1] > ids[0]


def test_a_transactional_id_keeps_its_producer_id_and_each_init_bumps_its_epoch(broker):
    cluster = cluster_of(broker.bootstrap_servers)
    try:
        got = [cluster.init_producer_id("my-txn") for _ in range(3)]
    finally:
        cluster.close()
    assert len({pid for pid, _ in got}) == 1
    assert [epoch for _, epoch in got] == [0, 1, 2]
