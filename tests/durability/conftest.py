"""Helpers for the durability tests: brokers with configs, producing with reports, reading back.

Every broker here runs in the test's own data dir (the `data_dir` fixture of tests/conftest.py
checks that no shared memory is left); `start_broker` (tests/conftest.py) stops what it started and fails
the test if a broker process outlives it.
"""
import os
import time

import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog.broker import launcher as broker_mod
from shmlog.log import segment as log_segment

WAIT_S = 30.0


def wait_for(predicate, what, timeout=WAIT_S):
    """Poll predicate() until it returns something truthy; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def create_topic(conf, name, partitions=1, **config):
    admin = shmlog.AdminClient(conf)
    try:
        cfg = {k.replace("_", "."): str(v) for k, v in config.items()}
        admin.create_topics([shmlog.NewTopic(name, partitions, config=cfg)])[name].result()
    finally:
        admin.close()
    return name


def produce(conf, topic, values, acks="all", partition=-1, keys=None, timestamps=None, **producer_conf):
    """Produce values, flush, and return the delivery reports as [(error, partition, offset, value)].

    Batches stay at 16 KiB unless batch_size says otherwise, so they fit the smallest ring.
    """
    p = shmlog.Producer({**conf, "acks": acks, "batch.size": 16384,
                         **{k.replace("_", "."): v for k, v in producer_conf.items()}})
    reports = []
    try:
        for i, value in enumerate(values):
            p.produce(topic, value, key=keys[i] if keys else None, partition=partition,
                      timestamp=timestamps[i] if timestamps else 0,
                      on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset(), msg.value())))
        left = p.flush(WAIT_S)
        assert left == 0, f"{left} records still awaited delivery after {WAIT_S}s"
    finally:
        p.close()
    return reports


def read_all(conf, topic, partitions=(0,), start=OFFSET_BEGINNING, **consumer_conf):
    """Every record from `start` to the high watermark of each partition: [(partition, offset, value)]."""
    c = shmlog.Consumer({**conf, "group.id": "read-all", **consumer_conf})
    try:
        highs = {p: c.get_watermark_offsets(TopicPartition(topic, p))[1] for p in partitions}
        c.assign([TopicPartition(topic, p, start) for p in partitions])
        out = []
        deadline = time.monotonic() + WAIT_S
        while any(tp.offset < highs[tp.partition] for tp in c.position([TopicPartition(topic, p) for p in partitions])):
            assert time.monotonic() < deadline, f"read only {len(out)} records in {WAIT_S}s"
            for msg in c.consume(10000, 0.5):
                assert msg.error() is None, msg.error()
                out.append((msg.partition(), msg.offset(), msg.value()))
        return out
    finally:
        c.close()


def partition_dir(data_dir, topic, partition=0):
    """Where the persister writes topic-partition (the default log dir)."""
    return log_segment.partition_dir(os.path.join(os.path.realpath(data_dir), "logs"), topic, partition)


def segment_bases(pdir):
    from shmlog.log.segment import list_segments
    return list_segments(pdir)


def status_of(broker, topic, partition=0):
    for p in broker_mod.status(broker.data_dir)["partitions"]:
        if (p["topic"], p["partition"]) == (topic, partition):
            return p
    raise AssertionError(f"{topic}-{partition} not in broker status")


def wait_recovered(conf, topic, partitions=(0,)):
    """Wait until the persister has opened (and so recovered) each partition: it then signs the ring."""
    from shmlog.client.cluster import Cluster
    cluster = Cluster(conf["bootstrap.servers"], "test")
    try:
        for p in partitions:
            ring = cluster.ring(topic, p)
            wait_for(lambda: ring.header.persist.persister_pid, f"the persister to recover {topic}-{p}")
    finally:
        cluster.close()
