"""Transactions on a real broker: a transactional Producer, read_committed and read_uncommitted
Consumers, the supervisor's transaction coordinator, zombie fencing, timeouts, offsets sent
with a transaction. The crash tests (SIGKILL at chosen points of a transaction) are in
tests/crash/test_transaction_crash.py."""
import os
import signal
import subprocess
import sys
import time
from base64 import b64encode

import pytest

import shmlog
from shmlog import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from shmlog.broker import launcher
from shmlog.control import Control
from tests.conftest import create_topic

pytestmark = pytest.mark.timeout(120)


def read_all(conf, topic, partitions=1, isolation="read_committed", timeout=1.0, **extra):
    """Every record a fresh consumer reads from each partition's start, until the partition is idle."""
    c = Consumer({**conf, "isolation.level": isolation, "enable.partition.eof": True, **extra})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, at_end = [], set()
    try:
        while len(at_end) < partitions:
            m = c.poll(timeout)
            if m is None:
                break
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF
                at_end.add(m.partition())
                continue
            at_end.discard(m.partition())
            out.append((m.partition(), m.offset(), m.value()))
    finally:
        c.close()
    return out


def values(records):
    return [v for _, _, v in records]


def txn_producer(conf, tid="tx", **extra):
    p = Producer({**conf, "transactional.id": tid, **extra})
    p.init_transactions()
    return p


def test_read_committed_returns_committed_records_and_never_those_of_an_aborted_transaction(conf, admin):
    create_topic(admin, "t")
    p = txn_producer(conf)
    p.begin_transaction()
    for i in range(3):
        p.produce("t", b"committed-%d" % i)
    p.commit_transaction()
    p.begin_transaction()
    for i in range(3):
        p.produce("t", b"aborted-%d" % i)
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    p.produce("t", b"late")
    p.commit_transaction()
    p.close()
    assert values(read_all(conf, "t")) == [b"committed-0", b"committed-1", b"committed-2", b"late"]
    everything = read_all(conf, "t", isolation="read_uncommitted")
    assert values(everything) == [b"committed-0", b"committed-1", b"committed-2", b"aborted-0", b"aborted-1",
                                  b"aborted-2", b"late"]
    # the COMMIT / ABORT markers hold offsets 3, 7 and 9: no consumer is handed them
    assert [o for _, o, _ in everything] == [0, 1, 2, 4, 5, 6, 8]


def test_read_committed_stops_at_the_last_stable_offset_while_a_transaction_is_open(conf, admin):
    create_topic(admin, "t")
    plain = Producer(conf)
    plain.produce("t", b"before")
    plain.flush()
    p = txn_producer(conf)
    p.begin_transaction()
    p.produce("t", b"open")
    p.flush()
    plain.produce("t", b"after")     # above the open transaction's first record: not stable yet
    plain.flush()
    c = Consumer({**conf, "isolation.level": "read_committed"})
    tp = TopicPartition("t", 0)
    assert c.get_watermark_offsets(tp) == (0, 1)           # the LSO
    c.close()
    assert values(read_all(conf, "t")) == [b"before"]
    assert values(read_all(conf, "t", isolation="read_uncommitted")) == [b"before", b"open", b"after"]
    p.commit_transaction()
    assert values(read_all(conf, "t")) == [b"before", b"open", b"after"]
    p.close()
    plain.close()


def test_a_transaction_spans_partitions_and_topics_and_commits_all_or_nothing(conf, admin):
    create_topic(admin, "a", 3)
    create_topic(admin, "b", 1)
    p = txn_producer(conf)
    p.begin_transaction()
    for i in range(30):
        p.produce("a", b"a%d" % i, key=b"k%d" % i)
        p.produce("b", b"b%d" % i)
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    for i in range(30):
        p.produce("a", b"A%d" % i, key=b"k%d" % i)
        p.produce("b", b"B%d" % i)
    p.commit_transaction()
    p.close()
    assert sorted(values(read_all(conf, "a", 3))) == sorted(b"A%d" % i for i in range(30))
    assert values(read_all(conf, "b")) == [b"B%d" % i for i in range(30)]


def test_a_new_instance_fences_the_old_one_and_aborts_its_open_transaction(conf, admin):
    create_topic(admin, "t")
    zombie = txn_producer(conf, "same-id")
    zombie.begin_transaction()
    zombie.produce("t", b"zombie")
    zombie.flush()
    fresh = txn_producer(conf, "same-id")        # init_transactions aborts the zombie's transaction
    with pytest.raises(KafkaException) as caught:
        zombie.commit_transaction()
    assert caught.value.args[0].fatal()
    assert caught.value.args[0].code() == KafkaError._FENCED
    with pytest.raises(KafkaException):
        zombie.begin_transaction()                # fatal for good
    fresh.begin_transaction()
    fresh.produce("t", b"fresh")
    fresh.commit_transaction()
    assert values(read_all(conf, "t")) == [b"fresh"]
    zombie.close()
    fresh.close()


def test_records_a_fenced_producer_appends_after_its_abort_are_never_read_committed(conf, admin):
    create_topic(admin, "t")
    zombie = txn_producer(conf, "same-id")
    zombie.begin_transaction()
    zombie.produce("t", b"zombie-1")
    zombie.flush()
    fresh = txn_producer(conf, "same-id")
    # The zombie does not know yet: its next batch lands in the ring after the ABORT marker.
    zombie.produce("t", b"zombie-2")
    zombie.flush()
    fresh.begin_transaction()
    fresh.produce("t", b"fresh")
    fresh.commit_transaction()
    assert values(read_all(conf, "t")) == [b"fresh"]
    zombie.close()
    fresh.close()


def test_the_coordinator_aborts_a_transaction_open_longer_than_its_timeout(conf, admin):
    create_topic(admin, "t")
    p = txn_producer(conf, "slow", **{"transaction.timeout.ms": 1000})
    p.begin_transaction()
    p.produce("t", b"expires")
    p.flush()
    c = Consumer({**conf, "isolation.level": "read_committed"})
    tp = TopicPartition("t", 0)
    # The coordinator aborts it after 1 s: the partition is stable again, its ABORT marker included
    # (while it is open the LSO stays at 0: test_read_committed_stops_at_the_last_stable_offset...).
    deadline = time.monotonic() + 30
    while c.get_watermark_offsets(tp) != (0, 2):
        assert time.monotonic() < deadline, "the expired transaction was not aborted"
        c.poll(0.05)
    state = p._cluster.control.request("describe_transactions", transactional_ids=["slow"])["transactions"][0]
    assert state["state"] == "CompleteAbort"
    c.close()
    with pytest.raises(KafkaException) as caught:
        p.commit_transaction()
    if caught.value.args[0].txn_requires_abort():
        # On a loaded host the acks=all wait may outlast message.timeout.ms (= transaction.timeout.ms,
        # 1 s) first: the commit fails as abortable, and the abort then finds the producer fenced.
        with pytest.raises(KafkaException) as caught:
            p.abort_transaction()
    assert caught.value.args[0].fatal()
    p.close()
    assert read_all(conf, "t") == []


def test_offsets_sent_with_a_transaction_are_committed_only_when_it_commits(conf, admin):
    create_topic(admin, "in")
    create_topic(admin, "out")
    consumer = Consumer({**conf, "group.id": "g", "enable.auto.commit": False})
    tp = TopicPartition("in", 0)
    p = txn_producer(conf)
    p.begin_transaction()
    p.produce("out", b"x")
    p.send_offsets_to_transaction([TopicPartition("in", 0, 42)], consumer.consumer_group_metadata())
    assert consumer.committed([tp], timeout=5)[0].offset < 0
    p.abort_transaction()
    assert consumer.committed([tp], timeout=5)[0].offset < 0
    p.begin_transaction()
    p.produce("out", b"y")
    p.send_offsets_to_transaction([TopicPartition("in", 0, 43)], consumer.consumer_group_metadata())
    p.commit_transaction()
    assert consumer.committed([tp], timeout=5)[0].offset == 43
    consumer.close()
    p.close()


def test_the_transactional_calls_refuse_the_wrong_order_with_confluent_kafkas_errors(conf, admin):
    create_topic(admin, "t")
    plain = Producer(conf)
    with pytest.raises(KafkaException) as caught:
        plain.init_transactions()
    assert caught.value.args[0].code() == KafkaError._NOT_CONFIGURED
    plain.close()
    p = Producer({**conf, "transactional.id": "order"})
    with pytest.raises(KafkaException) as caught:
        p.begin_transaction()                     # before init_transactions
    assert caught.value.args[0].code() == KafkaError._STATE
    p.init_transactions()
    with pytest.raises(KafkaException) as caught:
        p.produce("t", b"outside")                 # outside a transaction
    assert caught.value.args[0].code() == KafkaError._STATE
    with pytest.raises(KafkaException) as caught:
        p.commit_transaction()
    assert caught.value.args[0].code() == KafkaError._STATE
    p.begin_transaction()
    p.commit_transaction()                         # an empty transaction commits
    p.close()


def test_a_timeout_above_the_brokers_maximum_is_refused(data_dir):
    with shmlog.Broker(data_dir, **{"transaction.max.timeout.ms": "5000"}) as b:
        p = Producer({"bootstrap.servers": b.bootstrap_servers, "transactional.id": "x",
                      "transaction.timeout.ms": 10_000})
        with pytest.raises(KafkaException) as caught:
            p.init_transactions()
        assert caught.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT
        p.close()


def test_read_committed_drops_aborted_records_read_back_from_segment_files(conf, admin):
    create_topic(admin, "t", ring_bytes=65536, retention_ms=-1)
    p = txn_producer(conf)
    want = []
    for round_ in range(40):
        p.begin_transaction()
        for i in range(20):
            p.produce("t", b"%d-%d" % (round_, i) + b"." * 200)
        if round_ % 3 == 0:
            p.flush()
            p.abort_transaction()
        else:
            p.commit_transaction()
            want += [b"%d-%d" % (round_, i) + b"." * 200 for i in range(20)]
    p.close()
    # 40 x 20 x ~220 bytes is several rings: the start is read from the segments.
    assert values(read_all(conf, "t")) == want


# ---------------------------------------------------------------------------- confluent-kafka's example

EOS_EXAMPLE = os.path.join(os.path.dirname(__file__), "confluent_examples", "eos_transactions.py")


def test_confluent_kafkas_eos_transactions_example_runs_unchanged_but_for_the_import(conf, admin):
    create_topic(admin, "input")
    create_topic(admin, "output")
    plain = Producer(conf)
    for i in range(250):
        plain.produce("input", b"v%d" % i, key=b"k%d" % i)
    plain.flush()
    plain.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, EOS_EXAMPLE, "-b", conf["bootstrap.servers"], "-t", "input",
                           "-o", "output", "-g", "eos"], env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "=== Reached end of input ===" in done.stdout
    got = [(k, v) for _, _, v, k in read_keyed(conf, "output")]
    assert got == [(b64encode(b"k%d" % i), b64encode(b"v%d" % i)) for i in range(250)]
    c = Consumer({**conf, "group.id": "eos"})
    assert c.committed([TopicPartition("input", 0)], timeout=5)[0].offset == 250
    c.close()


def read_keyed(conf, topic):
    c = Consumer({**conf, "isolation.level": "read_committed", "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    try:
        while True:
            m = c.poll(2.0)
            if m is None or m.error():
                break
            out.append((m.partition(), m.offset(), m.value(), m.key()))
    finally:
        c.close()
    return out


# ---------------------------------------------------------------------------- C fast path vs Python path

def committed_through(conf, assignment, wanted_topic):
    """What a read_committed consumer of `assignment` returns from wanted_topic-0 until idle: with one
    partition assigned, poll() fetches and decodes in C (csrc/fast/consumer_core.c); with more, in Python."""
    c = Consumer({**conf, "isolation.level": "read_committed"})
    c.assign([TopicPartition(t, 0, 0) for t in assignment])
    out = []
    try:
        while True:
            m = c.poll(1.0)
            if m is None:
                break
            assert m.error() is None
            if m.topic() == wanted_topic:
                out.append(m.value())
    finally:
        c.close()
    return out


def test_read_committed_returns_the_same_through_the_c_fast_path_and_the_python_path(conf, admin):
    create_topic(admin, "t")
    create_topic(admin, "other")
    p = txn_producer(conf)
    plain = Producer(conf)
    p.begin_transaction()
    for i in range(3):
        p.produce("t", b"c%d" % i)
    p.commit_transaction()
    p.begin_transaction()
    p.produce("t", b"open")
    p.flush()
    plain.produce("t", b"after")
    plain.flush()
    want = [b"c0", b"c1", b"c2"]
    assert committed_through(conf, ["t"], "t") == want == committed_through(conf, ["t", "other"], "t")
    p.commit_transaction()
    want += [b"open", b"after"]
    assert committed_through(conf, ["t"], "t") == want == committed_through(conf, ["t", "other"], "t")
    p.begin_transaction()
    p.produce("t", b"aborted")
    p.flush()
    p.abort_transaction()
    plain.produce("t", b"last")
    plain.flush()
    want += [b"last"]
    assert committed_through(conf, ["t"], "t") == want == committed_through(conf, ["t", "other"], "t")
    p.close()
    plain.close()


def test_produce_batch_records_join_the_transaction_and_are_committed_or_aborted_with_it(conf, admin):
    create_topic(admin, "t", partitions=2)
    p = txn_producer(conf)
    p.begin_transaction()
    assert p.produce_batch("t", [{"value": b"kept-%d" % i, "partition": i % 2} for i in range(4)]) == 4
    p.commit_transaction()
    p.begin_transaction()
    msgs = [{"value": b"dropped-%d" % i, "partition": i % 2} for i in range(4)]
    assert p.produce_batch("t", msgs) == 4 and not [m for m in msgs if "_error" in m]
    p.flush()
    p.abort_transaction()
    p.close()
    assert sorted(values(read_all(conf, "t", partitions=2))) == [b"kept-%d" % i for i in range(4)]
    assert len(read_all(conf, "t", partitions=2, isolation="read_uncommitted")) == 8


def test_produce_values_lists_and_numpy_rows_join_the_transaction_and_abort_with_it(conf, admin):
    np = pytest.importorskip("numpy")
    create_topic(admin, "t", partitions=2)
    p = txn_producer(conf)
    p.begin_transaction()
    p.produce_values("t", [b"list-%d" % i for i in range(3)], partition=0)
    p.produce_values("t", np.frombuffer(b"rowArowB", dtype=np.uint8).reshape(2, 4), partition=1)
    p.commit_transaction()
    p.begin_transaction()
    p.produce_values("t", [b"gone-%d" % i for i in range(3)], partition=0)
    p.produce_values("t", np.frombuffer(b"goneGONE", dtype=np.uint8).reshape(2, 4), partition=1)
    p.abort_transaction()
    p.close()
    assert sorted(values(read_all(conf, "t", partitions=2))) == [b"list-0", b"list-1", b"list-2", b"rowA", b"rowB"]
    assert len(read_all(conf, "t", partitions=2, isolation="read_uncommitted")) == 10


def test_produce_values_with_compression_inside_a_transaction_is_aborted_with_it(conf, admin):
    create_topic(admin, "t")
    p = txn_producer(conf, **{"compression.type": "gzip"})
    p.begin_transaction()
    p.produce_values("t", [b"zipped-%d" % i for i in range(3)])
    p.abort_transaction()
    p.begin_transaction()
    p.produce_values("t", [b"kept"])
    p.commit_transaction()
    p.close()
    assert values(read_all(conf, "t")) == [b"kept"]


def test_produce_batch_and_produce_values_outside_a_transaction_are_refused_with_state(conf, admin):
    create_topic(admin, "t")
    p = txn_producer(conf)
    msgs = [{"value": b"a"}, {"value": b"b"}]
    assert p.produce_batch("t", msgs) == 0
    assert [m["_error"].code() for m in msgs] == [KafkaError._STATE, KafkaError._STATE]
    with pytest.raises(KafkaException) as exc:
        p.produce_values("t", [b"x"])
    assert exc.value.args[0].code() == KafkaError._STATE and "begin_transaction" in exc.value.args[0].str()
    p.close()
    assert read_all(conf, "t", isolation="read_uncommitted") == []


def describe(broker, tid):
    control = Control(broker.data_dir)
    try:
        (row,) = control.request("describe_transactions", transactional_ids=[tid])["transactions"]
    finally:
        control.close()
    return row


def test_a_transaction_state_the_broker_cannot_write_changes_nothing_and_the_call_is_retriable(broker, conf, admin):
    """The persister is stopped (SIGSTOP), so the __transaction_state partition's ring fills and
    the supervisor's appends to it fail: the coordinator's table must not move, and the
    producer's calls fail retriable until the log takes writes again."""
    create_topic(admin, "t")
    tid = "w" * 30_000        # a ~30 KB state record: the 1 MiB ring of its partition fills in ~35 writes
    p = txn_producer(conf, tid)
    consumer = Consumer({**conf, "group.id": "g"})
    group = consumer.consumer_group_metadata()
    persister = launcher.status(broker.data_dir)["persister_pid"]
    os.kill(persister, signal.SIGSTOP)
    try:
        p.begin_transaction()
        for _ in range(200):
            try:
                p.send_offsets_to_transaction([TopicPartition("t", 0, 1)], group, 0.3)
            except KafkaException as exc:
                failed = exc.args[0]
                break
        else:
            pytest.fail("the writes to __transaction_state never failed with the persister stopped")
        assert failed.retriable() and not failed.fatal() and not failed.txn_requires_abort(), failed
        assert "could not write its state" in failed.str() and "nothing changed" in failed.str(), failed
        assert describe(broker, tid)["state"] == "Ongoing"
        with pytest.raises(KafkaException) as commit:
            p.commit_transaction(0.3)
        assert commit.value.args[0].retriable(), commit.value.args[0]
        assert describe(broker, tid)["state"] == "Ongoing"     # not PrepareCommit: its record was not written
    finally:
        os.kill(persister, signal.SIGCONT)
    p.commit_transaction(30)
    assert describe(broker, tid)["state"] == "CompleteCommit"
    assert consumer.committed([TopicPartition("t", 0)])[0].offset == 1
    consumer.close()
    p.close()


def test_a_read_committed_consumer_assigned_past_an_aborted_transaction_starts_at_the_offset_it_asked_for(conf,
                                                                                                         admin):
    create_topic(admin, "t")
    p = txn_producer(conf, **{"linger.ms": 0})
    p.begin_transaction()
    for i in range(5):
        p.produce("t", b"aborted-%d" % i)
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    for i in range(5):
        p.produce("t", b"kept-%d" % i)
    p.commit_transaction()
    p.close()
    # offsets 0-4 aborted, 5 ABORT, 6-10 kept, 11 COMMIT
    c = Consumer({**conf, "isolation.level": "read_committed", "enable.partition.eof": True})
    c.assign([TopicPartition("t", 0, 8)])
    got = []
    try:
        while True:
            m = c.poll(5.0)
            assert m is not None
            if m.error():
                break
            got.append((m.offset(), m.value()))
    finally:
        c.close()
    assert got == [(8, b"kept-2"), (9, b"kept-3"), (10, b"kept-4")]
