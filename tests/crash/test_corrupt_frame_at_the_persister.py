"""A corrupt frame where the persister stands: readers get _BAD_MSG, not an endless wait.

Ring space is released only once persisted, so an offset at the persister's position and
below the ring's end is in the ring. When the batch there is garbage (its header written over
by some process mapping the ring) and nothing before it is left to walk from (it is the
ring's first), the ring's index cannot reach it, the persister cannot write it and the
segment files never hold it. A reader there must be told, as a reader that meets the same
frame from an earlier batch is (tests/crash/test_shm_fuzz.py). The Kafka listener's Fetch:
tests/integration/test_kafka_listener_corrupt_ring.py.

The persister is stopped (SIGSTOP) while the batch is appended and written over, so that it
meets the garbage rather than writing the batch to disk first.
"""
import os
import signal
import struct
import time
from contextlib import contextmanager

import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from shmlog._native import layout, lib
from shmlog.broker.launcher import status
from shmlog.client.cluster import Cluster
from tests.conftest import create_topic

pytestmark = pytest.mark.crash

DEADLINE_S = 30.0


@contextmanager
def persister_stopped(data_dir):
    pid = status(data_dir)["persister_pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def first_batch_written_over(bootstrap, data_dir, topic):
    """Appends one batch of 5 records into the new topic's ring and writes a wrong base offset
    into its header, all while the persister is stopped."""
    with persister_stopped(data_dir):
        producer = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1})
        for i in range(5):
            producer.produce(topic, b"value-%d" % i, partition=0)
        assert producer.flush(30) == 0
        producer.close()
        cluster = Cluster(bootstrap, "test")
        try:
            ring = cluster.ring(topic, 0)
            at = ring.data_offset + layout.FRAME_PREFIX_BYTES + lib.SHMLOG_BATCH_OFF_BASE_OFFSET
            ring.mapping.mm[at:at + 8] = struct.pack(">q", 1 << 40)
        finally:
            cluster.close()


def test_a_consumer_at_a_corrupt_frame_the_persister_is_stuck_on_gets_bad_msg_naming_the_partition(
        conf, admin, broker):
    topic = create_topic(admin, "stuck", 1, ring_bytes=1 << 16)
    first_batch_written_over(conf["bootstrap.servers"], broker.data_dir, topic)
    consumer = shmlog.Consumer({**conf, "group.id": "g"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    deadline = time.monotonic() + DEADLINE_S
    try:
        with pytest.raises(KafkaException) as raised:
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                assert msg is None, f"a record out of a corrupt ring: {msg.offset()} {msg.value()}"
    finally:
        consumer.close()
    err = raised.value.args[0]
    assert err.code() == KafkaError._BAD_MSG
    assert f"{topic}-0" in err.str() and "corrupt" in err.str(), err.str()

