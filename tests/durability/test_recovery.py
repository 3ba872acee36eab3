"""Restarts: what the segment files bring back, how recovery cuts a torn tail and rebuilds
indexes, and the topic settings (broker defaults, segment.ms) that shape the files.

A restart here is the broker stopping (or dying) and its shared memory being gone, so
everything read afterwards comes from the segment files through the normal Consumer.
"""
import os
import time

import shmlog
from shmlog import TopicPartition
from shmlog._native import shm
from shmlog.cli import main as cli_main
from shmlog.log import index

from .conftest import (
    create_topic,
    partition_dir,
    produce,
    read_all,
    segment_bases,
    status_of,
    wait_for,
    wait_recovered,
)


def kill_broker(broker):
    """SIGKILL the supervisor and persister, then drop the shared memory: a host crash, minus the page cache."""
    import psutil
    sup = psutil.Process(broker.process.pid)
    procs = [sup] + sup.children(recursive=True)
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=10)
    broker.process.wait()
    broker.process.stdout.close()
    broker.process = None
    for name in shm.names_in_namespace(shm.namespace(broker.data_dir)):
        shm.unlink(name)


def test_acks_all_records_are_read_back_from_segments_after_the_shared_memory_is_lost(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", 2, ring_bytes=65536)
    values = [b"%d" % i + b"." * 300 for i in range(600)]
    reports = produce(conf, "t", values, keys=[b"k%d" % (i % 7) for i in range(600)])
    assert all(err is None for err, *_ in reports)
    kill_broker(broker)

    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    got = read_all(conf, "t", (0, 1))

    assert sorted(got) == sorted((p, o, v) for _, p, o, v in reports)


def test_offsets_continue_after_a_restart_where_the_last_one_stopped(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"a"] * 10)
    kill_broker(broker)

    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    reports = produce(conf, "t", [b"b"] * 5)

    assert [o for _, _, o, _ in reports] == list(range(10, 15))
    assert [v for _, _, v in read_all(conf, "t")] == [b"a"] * 10 + [b"b"] * 5


def test_a_torn_tail_is_cut_on_restart_and_new_records_continue_after_the_last_whole_batch(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"x" * 100] * 3, linger_ms=0)
    broker.stop()
    path = os.path.join(partition_dir(data_dir, "t"), "00000000000000000000.log")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 20)  # the last of three one-record batches loses its end

    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    reports = produce(conf, "t", [b"after"])

    assert reports[0][2] == 2
    assert [(o, v) for _, o, v in read_all(conf, "t")] == [(0, b"x" * 100), (1, b"x" * 100), (2, b"after")]


def test_a_missing_index_of_an_older_segment_is_rebuilt_on_restart(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=4096, index_interval_bytes=1)
    produce(conf, "t", [b"v" * 500] * 30, linger_ms=0)
    broker.stop()
    pdir = partition_dir(data_dir, "t")
    first = segment_bases(pdir)[0]
    with open(index.offset_index_path(pdir, first), "rb") as f:
        before = f.read()
    os.unlink(index.offset_index_path(pdir, first))
    os.unlink(index.time_index_path(pdir, first))

    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    wait_recovered(conf, "t")

    with open(index.offset_index_path(pdir, first), "rb") as f:
        assert f.read() == before
    assert cli_main(["dump-log", index.offset_index_path(pdir, first), index.time_index_path(pdir, first)]) == 0


def test_a_corrupt_time_index_of_an_older_segment_is_rebuilt_on_restart(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=4096)
    produce(conf, "t", [b"v" * 500] * 30, linger_ms=0)
    broker.stop()
    pdir = partition_dir(data_dir, "t")
    path = index.time_index_path(pdir, segment_bases(pdir)[0])
    with open(path, "rb") as f:
        before = f.read()
    with open(path, "wb") as f:
        f.write(before[12:] + before[:12])  # entries out of order

    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    wait_recovered(conf, "t")

    with open(path, "rb") as f:
        assert f.read() == before


def test_a_consumer_behind_the_ring_reads_segments_then_the_ring_without_a_gap(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", ring_bytes=65536, segment_bytes=50_000)
    values = [b"%06d" % i + b"-" * 400 for i in range(2000)]  # ~ 14 rings' worth
    produce(conf, "t", values, acks=1)

    got = read_all(conf, "t")

    assert [o for _, o, _ in got] == list(range(2000))
    assert [v for _, _, v in got] == values
    assert len(segment_bases(partition_dir(data_dir, "t"))) > 10


def test_broker_log_segment_bytes_applies_to_topics_that_do_not_set_segment_bytes(data_dir, start_broker):
    broker = start_broker(log_segment_bytes=8192)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"v" * 1000] * 40, linger_ms=0)
    broker.stop()
    sizes = [os.path.getsize(os.path.join(partition_dir(data_dir, "t"), f"{b:020d}.log"))
             for b in segment_bases(partition_dir(data_dir, "t"))]
    assert len(sizes) >= 4 and max(sizes) <= 8192


def test_a_topics_own_segment_bytes_wins_over_the_broker_default_even_when_it_equals_kafkas(data_dir, start_broker):
    broker = start_broker(log_segment_bytes=8192)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=1_073_741_824)
    produce(conf, "t", [b"v" * 1000] * 40, linger_ms=0)
    broker.stop()
    assert len(segment_bases(partition_dir(data_dir, "t"))) == 1


def test_segment_ms_rolls_when_a_record_is_that_much_newer_than_the_segments_first(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_ms=60_000)
    t0 = time.time_ns() // 1_000_000
    produce(conf, "t", [b"a", b"b", b"c"], timestamps=[t0, t0 + 60_000, t0 + 60_001], linger_ms=0)
    broker.stop()
    assert segment_bases(partition_dir(data_dir, "t")) == [0, 2]


def test_broker_status_shows_log_start_end_persisted_and_flushed_offsets(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=4096)
    produce(conf, "t", [b"v" * 500] * 40, linger_ms=0)
    admin = shmlog.AdminClient(conf)
    admin.delete_records([TopicPartition("t", 0, 25)])[TopicPartition("t", 0, 25)].result()
    admin.close()

    st = status_of(broker, "t")

    assert (st["log_start_offset"], st["log_end_offset"], st["persisted_offset"], st["flushed_offset"]) == \
        (25, 40, 40, 40)
    assert 0 < st["ring_used_bytes"] <= st["ring_bytes"]


def ring_of(conf, topic, partition=0):
    from shmlog.client.cluster import Cluster
    cluster = Cluster(conf["bootstrap.servers"], "test")
    return cluster, cluster.ring(topic, partition)


def test_without_a_flush_policy_acks_1_records_are_written_but_not_fsynced(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"x"] * 10, acks=1)
    cluster, ring = ring_of(conf, "t")
    wait_for(lambda: ring.persisted_offset == 10, "the persister to write the records")
    assert ring.flushed_offset == 0
    cluster.close()


def test_broker_log_flush_interval_messages_fsyncs_acks_1_records_every_that_many(data_dir, start_broker):
    broker = start_broker(log_flush_interval_messages=10)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"x"] * 10, acks=1)
    cluster, ring = ring_of(conf, "t")
    wait_for(lambda: ring.flushed_offset == 10, "flush.messages=10 to fsync ten records")
    cluster.close()


def test_topic_flush_ms_fsyncs_acks_1_records_that_long_after_they_are_written(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", flush_ms=20)
    produce(conf, "t", [b"x"] * 3, acks=1)
    cluster, ring = ring_of(conf, "t")
    wait_for(lambda: ring.flushed_offset == 3, "flush.ms=20 to fsync the records")
    cluster.close()
