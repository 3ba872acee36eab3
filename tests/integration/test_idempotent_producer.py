"""The idempotent producer on a real broker (docs/exactly-once.md, "Idempotent producer"):
every batch carries the producer id, epoch and per-partition sequences, whichever path
appended it; a producer that runs through a supervisor SIGKILL or a broker stop and start
writes each record once, its sequences going on without a gap; the producer state is in
.snapshot files beside the segments and comes back with the broker."""
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
from click.testing import CliRunner

import shmlog
from shmlog.broker import launcher
from shmlog.cli.app import cli
from shmlog.errors import KafkaException
from shmlog.log import producer_state
from shmlog.log.batch import HEADER
from shmlog.log.segment import _Mapped, _walk, list_segments, partition_dir, segment_path
from tests.conftest import create_topic

pytestmark = pytest.mark.timeout(180)
SPAWN = multiprocessing.get_context("spawn")
TOPIC = "orders"
WAIT_S = 60


def batches(data_dir, topic, partition):
    """(base offset, count, producer id, epoch, base sequence) of every batch on disk."""
    pdir = partition_dir(os.path.join(data_dir, "logs"), topic, partition)
    found = []
    for base in list_segments(pdir):
        mapped = _Mapped.of_path(segment_path(pdir, base))

        def take(pos, _n, last, _ts, mapped=mapped):
            f = HEADER.unpack_from(mapped.mm, pos)
            found.append((f[0], last - f[0] + 1, f[9], f[10], f[11]))

        try:
            _walk(mapped, base, True, take)
        finally:
            mapped.close()
    return found


def assert_one_producer_with_gapless_sequences(found, producer_id):
    """Every batch is the producer's, epoch 0, and its sequences run on from 0 with no gap or
    repeat, so with one producer a batch's base sequence is its base offset."""
    assert found, "nothing on disk"
    assert {(b[2], b[3]) for b in found} == {(producer_id, 0)}
    assert [b[4] for b in found] == [b[0] for b in found]
    assert sum(b[1] for b in found) == found[-1][0] + found[-1][1]


def test_every_path_of_produce_stamps_the_producer_id_and_gapless_sequences(data_dir):
    with shmlog.Broker(data_dir) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        create_topic(admin, TOPIC, 4)
        admin.close()
        p = shmlog.Producer({**conf, "linger.ms": 0, "batch.num.messages": 7})
        q = shmlog.Producer({**conf, "compression.type": "lz4"})
        for i in range(50):
            p.produce(TOPIC, b"fast-%d" % i, partition=0)                            # C fast path
            p.produce(TOPIC, b"slow-%d" % i, partition=1, headers={"h": b"%d" % i})  # Python slow path
            q.produce(TOPIC, b"lz4-%d" % i, partition=3)                             # compressed in Python
            if i % 10 == 9:
                p.flush(30)
                q.flush(30)
                p.produce_values(TOPIC, [b"a", b"b", b"c"], partition=2)
                p.produce_values(TOPIC, np.arange(8, dtype=np.int64).reshape(4, 2), partition=2)
        assert p.flush(30) == 0 and q.flush(30) == 0
        ids = p._producer_id, q._producer_id
        p.close()
        q.close()
    assert ids[0] != ids[1]
    for partition in (0, 1, 2):
        assert_one_producer_with_gapless_sequences(batches(data_dir, TOPIC, partition), ids[0])
    assert_one_producer_with_gapless_sequences(batches(data_dir, TOPIC, 3), ids[1])


def test_a_producer_with_acks_1_is_not_idempotent_and_stamps_no_producer_id(data_dir):
    with shmlog.Broker(data_dir) as b:
        p = shmlog.Producer({"bootstrap.servers": b.bootstrap_servers, "acks": 1})
        p.produce(TOPIC, b"x")
        assert p.flush(30) == 0
        p.close()
    assert [(f[2], f[3], f[4]) for f in batches(data_dir, TOPIC, 0)] == [(-1, -1, -1)]


def steady_producer(bootstrap, count, halfway, done):
    """acks=all, idempotent: `count` numbered records, one partition; sets `halfway` once half
    are delivered, then goes on; puts (delivered, failed) in `done`."""
    delivered, failed = set(), []

    def report(err, msg):
        if err is None:
            delivered.add(int(msg.value()))
            if len(delivered) >= count // 2:
                halfway.set()
        else:
            failed.append((int(msg.value()), err.code()))

    p = shmlog.Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "message.timeout.ms": 120_000,
                         "on_delivery": report})
    for i in range(count):
        while True:
            try:
                p.produce(TOPIC, b"%d" % i, partition=0)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
        if i % 100 == 0:
            p.poll(0.002)   # a steady pace, so the kill lands mid-stream
    left = p.flush(120)
    p.close()
    done.put((sorted(delivered), failed, left))


def read_values(bootstrap):
    c = shmlog.Consumer({"bootstrap.servers": bootstrap})
    tp = shmlog.TopicPartition(TOPIC, 0, shmlog.OFFSET_BEGINNING)
    high = c.get_watermark_offsets(tp, timeout=10)[1]
    c.assign([tp])
    values = []
    deadline = time.monotonic() + WAIT_S
    while len(values) < high:
        assert time.monotonic() < deadline, f"read {len(values)} of {high}"
        values += [int(m.value()) for m in c.consume(1000, timeout=0.5) if m.error() is None]
    c.close()
    return values


def run_producer(bootstrap, count):
    halfway, done = SPAWN.Event(), SPAWN.Queue()
    proc = SPAWN.Process(target=steady_producer, args=(bootstrap, count, halfway, done), daemon=True)
    proc.start()
    return proc, halfway, done


def test_a_producer_running_through_a_supervisor_sigkill_writes_each_record_once(data_dir):
    count = 6000
    with shmlog.Broker(data_dir) as b:
        admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        create_topic(admin, TOPIC)
        admin.close()
        proc, halfway, done = run_producer(b.bootstrap_servers, count)
        try:
            assert halfway.wait(WAIT_S), "the producer delivered nothing"
            old = launcher.status(data_dir)["pid"]
            os.kill(old, signal.SIGKILL)
            delivered, failed, left = done.get(timeout=150)
        finally:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        assert (failed, left) == ([], 0)
        assert delivered == list(range(count))
        assert sorted(read_values(b.bootstrap_servers)) == list(range(count))
        producer_id = batches(data_dir, TOPIC, 0)[0][2]
    assert_one_producer_with_gapless_sequences(batches(data_dir, TOPIC, 0), producer_id)


def test_a_producer_running_through_a_broker_stop_and_start_writes_each_record_once(data_dir, start_broker):
    count = 6000
    broker = start_broker()
    admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    create_topic(admin, TOPIC)
    admin.close()
    proc, halfway, done = run_producer(broker.bootstrap_servers, count)
    try:
        assert halfway.wait(WAIT_S), "the producer delivered nothing"
        broker.stop()   # its rings refuse the producer's next batches: they wait for the next broker
        broker = start_broker()
        delivered, failed, left = done.get(timeout=150)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    assert (failed, left) == ([], 0)
    assert delivered == list(range(count))
    assert sorted(read_values(broker.bootstrap_servers)) == list(range(count))
    broker.stop()
    found = batches(data_dir, TOPIC, 0)
    # The sequences the producer had reached go on in the next broker's log.
    assert_one_producer_with_gapless_sequences(found, found[0][2])


def test_the_producer_state_comes_back_with_the_broker_from_its_snapshot(data_dir):
    with shmlog.Broker(data_dir) as b:
        p = shmlog.Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 0})
        for i in range(5):
            p.produce(TOPIC, b"%d" % i)
            p.flush(30)
        producer_id = p._producer_id
        p.close()
    pdir = partition_dir(os.path.join(data_dir, "logs"), TOPIC, 0)
    assert producer_state.list_snapshots(pdir) == [5]   # written by the clean stop
    snapshot = producer_state.snapshot_path(pdir, 5)
    dumped = CliRunner().invoke(cli, ["dump-log", snapshot])
    assert dumped.exit_code == 0, dumped.output
    assert f"producerId: {producer_id} producerEpoch: 0" in dumped.output and "lastSequence: 4 lastOffset: 4" \
        in dumped.output
    with shmlog.Broker(data_dir) as b:
        p = shmlog.Producer({"bootstrap.servers": b.bootstrap_servers})
        known = p._cluster.describe_producers([(TOPIC, 0)])[(TOPIC, 0)]
        p.close()
    assert known[producer_id] == {"producer_id": producer_id, "producer_epoch": 0, "last_sequence": 4,
                                  "last_offset": 4}


def test_describe_producers_names_an_unknown_partition(data_dir):
    with shmlog.Broker(data_dir) as b:
        p = shmlog.Producer({"bootstrap.servers": b.bootstrap_servers})
        try:
            reply = p._cluster.control.request("describe_producers", partitions=[["nope", 0]])
        finally:
            p.close()
    assert reply["partitions"][0]["error"] == shmlog.KafkaError.UNKNOWN_TOPIC_OR_PART


def test_a_conflicting_setting_with_idempotence_on_is_a_clear_error(data_dir):
    with pytest.raises(KafkaException, match='"acks" must be all'):
        shmlog.Producer({"bootstrap.servers": "shm://" + data_dir, "enable.idempotence": True, "acks": 1})
