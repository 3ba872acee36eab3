"""Exactly-once across SIGKILLs at chosen points of a transaction.

A consume-transform-produce worker (exactly as confluent-kafka's eos_transactions.py does
it: read_committed consumer, transactional producer, offsets sent with each transaction)
runs in a spawned process over a keyed input topic of two partitions. It is SIGKILLed at a
chosen point of a chosen transaction:

    before_begin        between two transactions
    mid_produce         half of a transaction's outputs appended (flushed) to the output topic
    after_send_offsets  outputs and offsets in the transaction, commit not yet asked for
    during_commit       the coordinator has committed, the worker dies before it hears so

and a new worker with the same transactional.id takes over (fencing the dead one and
aborting whatever it left open). Then the output read with read_committed must equal the
transformation of every input record exactly once, in per-key order, and the group's
committed offsets must be the input's end.

The supervisor is SIGKILLed too, at the same points (the worker pauses there, the test kills
the supervisor and waits for the keeper's new one): the worker's transaction carries on
against the restarted coordinator, which rebuilt its state from __transaction_state.

A producer killed inside an open transaction that nobody takes over is aborted by the
coordinator after transaction.timeout.ms, so read_committed readers move on.
"""
import multiprocessing
import os
import signal
import time

import pytest

import shmlog
from shmlog import Consumer, KafkaError, Producer, TopicPartition
from shmlog.broker import launcher
from shmlog.errors import KafkaException
from tests.conftest import create_topic

pytestmark = [pytest.mark.crash, pytest.mark.timeout(180)]

SPAWN = multiprocessing.get_context("spawn")
KEYS = 8
PER_KEY = 40
BATCH = 25            # input records per transaction
POINTS = ("before_begin", "mid_produce", "after_send_offsets", "during_commit")


def transform(value):
    return value + b"!"


# ---------------------------------------------------------------------------- the worker

def worker(bootstrap, end_offsets, kill_at, pause_at, conn):
    """Runs in a spawned process: the EOS loop until the input is consumed. kill_at / pause_at:
    (point, transaction number) at which to SIGKILL itself / tell the parent and wait."""
    import os
    import signal

    from shmlog import Consumer, Producer, TopicPartition

    def at(point, n):
        if kill_at == (point, n):
            os.kill(os.getpid(), signal.SIGKILL)
        if pause_at == (point, n):
            conn.send(point)
            conn.recv()

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "eos-worker"})
    producer.init_transactions()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    parts = [TopicPartition("in", p) for p in range(len(end_offsets))]
    consumer.assign(parts)
    control = producer._cluster.control
    request = control.request

    def request_then_maybe_die(op, **fields):
        reply = request(op, **fields)
        if op == "end_txn" and fields.get("commit"):
            at("during_commit", n)
        return reply

    control.request = request_then_maybe_die
    n = 0
    while True:
        positions = consumer.position(parts)
        if all(tp.offset == end for tp, end in zip(positions, end_offsets)):
            break
        at("before_begin", n)
        producer.begin_transaction()
        msgs = [m for m in consumer.consume(BATCH, timeout=1.0) if not m.error()]
        for i, m in enumerate(msgs):
            producer.produce("out", transform(m.value()), key=m.key())
            if i == len(msgs) // 2:
                producer.flush()
                at("mid_produce", n)
        producer.send_offsets_to_transaction(consumer.position(parts), consumer.consumer_group_metadata())
        at("after_send_offsets", n)
        producer.commit_transaction()
        n += 1
    consumer.close()
    producer.close()
    conn.send("done")


def run_worker(bootstrap, end_offsets, kill_at=None, pause_at=None, on_pause=None):
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=worker, args=(bootstrap, end_offsets, kill_at, pause_at, child))
    proc.start()
    child.close()
    try:
        while True:
            if not parent.poll(120):
                raise AssertionError("the worker went silent")
            try:
                msg = parent.recv()
            except EOFError:
                break
            if msg == "done":
                break
            on_pause(msg)
            parent.send("go")
        proc.join(60)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    return proc.exitcode


# ---------------------------------------------------------------------------- the checks

def fill_input(conf, admin):
    create_topic(admin, "in", 2)
    create_topic(admin, "out", 2)
    p = Producer(conf)
    want = {}
    for i in range(PER_KEY):
        for k in range(KEYS):
            key, value = b"k%d" % k, b"k%d-%d" % (k, i)
            p.produce("in", value, key=key)
            want.setdefault(key, []).append(transform(value))
    p.flush()
    p.close()
    c = Consumer(conf)
    ends = [c.get_watermark_offsets(TopicPartition("in", q))[1] for q in range(2)]
    c.close()
    return want, ends


def committed_output(conf):
    c = Consumer({**conf, "isolation.level": "read_committed", "enable.partition.eof": True})
    c.assign([TopicPartition("out", q, 0) for q in range(2)])
    got, at_end = {}, set()
    try:
        while len(at_end) < 2:
            m = c.poll(2.0)
            assert m is not None, "the output partitions did not reach their end"
            if m.error():
                at_end.add(m.partition())
                continue
            at_end.discard(m.partition())
            got.setdefault(m.key(), []).append(m.value())
    finally:
        c.close()
    return got


def check_exactly_once(conf, want, ends):
    assert committed_output(conf) == want
    c = Consumer({**conf, "group.id": "eos"})
    assert [tp.offset for tp in c.committed([TopicPartition("in", q) for q in range(2)], timeout=10)] == ends
    c.close()


# ---------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_at_any_point_of_a_transaction_leaves_each_output_exactly_once(conf, admin, point):
    want, ends = fill_input(conf, admin)
    assert run_worker(conf["bootstrap.servers"], ends, kill_at=(point, 2)) == -signal.SIGKILL
    assert run_worker(conf["bootstrap.servers"], ends) == 0
    check_exactly_once(conf, want, ends)


def wait_for_new_supervisor(data_dir, old):
    deadline = time.monotonic() + 60
    while True:
        try:
            pid = launcher.status(data_dir)["pid"]
        except (KafkaException, OSError):
            pid = None
        if pid not in (None, old):
            return
        assert time.monotonic() < deadline, "no supervisor answering after the SIGKILL"
        time.sleep(0.02)


@pytest.mark.parametrize("point", ("mid_produce", "after_send_offsets", "during_commit"))
def test_a_supervisor_killed_at_any_point_of_a_transaction_loses_and_duplicates_nothing(data_dir, point):
    with shmlog.Broker(data_dir) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        want, ends = fill_input(conf, admin)

        def kill_supervisor(_):
            old = launcher.status(data_dir)["pid"]
            os.kill(old, signal.SIGKILL)
            wait_for_new_supervisor(data_dir, old)

        assert run_worker(b.bootstrap_servers, ends, pause_at=(point, 1), on_pause=kill_supervisor) == 0
        check_exactly_once(conf, want, ends)
        admin.close()


def test_a_producer_killed_inside_a_transaction_is_aborted_after_its_timeout(conf, admin):
    create_topic(admin, "t")

    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=dying_producer, args=(conf["bootstrap.servers"], child))
    proc.start()
    child.close()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    c = Consumer({**conf, "isolation.level": "read_committed"})
    tp = TopicPartition("t", 0)
    deadline = time.monotonic() + 30
    while c.get_watermark_offsets(tp)[1] == 0:   # the LSO stays at the open transaction's first record
        assert time.monotonic() < deadline, "the dead producer's transaction was never aborted"
        c.poll(0.05)
    assert c.get_watermark_offsets(tp) == (0, 11)       # 10 aborted records and the ABORT marker
    c.assign([TopicPartition("t", 0, 0)])
    assert c.poll(1.0) is None
    c.close()


def dying_producer(bootstrap, conn):
    import os
    import signal

    from shmlog import Producer
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "dies", "transaction.timeout.ms": 1000})
    p.init_transactions()
    p.begin_transaction()
    for i in range(10):
        p.produce("t", b"%d" % i)
    p.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_fenced_error_is_fatal_for_the_old_instance(conf, admin):
    create_topic(admin, "t")
    old = Producer({**conf, "transactional.id": "x"})
    old.init_transactions()
    new = Producer({**conf, "transactional.id": "x"})
    new.init_transactions()
    with pytest.raises(KafkaException) as caught:
        old.begin_transaction()
        old.produce("t", b"v")
    err = caught.value.args[0]
    assert err.fatal() and not err.retriable() and err.code() == KafkaError._FENCED
    old.close()
    new.close()
