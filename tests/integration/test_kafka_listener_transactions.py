"""Idempotent and transactional producers over the Kafka listener (confluent-kafka/librdkafka),
on the supervisor's producer-id service and transaction coordinator."""
import struct

import pytest

import shmlog

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
ck = pytest.importorskip("confluent_kafka")

from tests.conftest import create_topic  # noqa: E402
from tests.integration.test_kafka_listener import (  # noqa: E402
    consume_n,
    exchange,
    good_batch,
    kconf,
    raw_produce,
    shm_conf,
    start_with_listener,
)


@pytest.fixture
def kbroker(start_broker):
    b = start_with_listener(start_broker)
    yield b
    b.admin.close()


def txn_producer(b, tid, **extra):
    p = ck.Producer(kconf(b, **{"transactional.id": tid, "transaction.timeout.ms": 60000, **extra}))
    p.init_transactions(30)
    return p


def committed_reader(b, topic, partitions=1):
    c = ck.Consumer(kconf(b, **{"group.id": "reader", "enable.auto.commit": False,
                                "isolation.level": "read_committed"}))
    c.assign([ck.TopicPartition(topic, p, 0) for p in range(partitions)])
    return c


def test_an_idempotent_confluent_kafka_producer_writes_every_record_once_in_order(kbroker):
    create_topic(kbroker.admin, "t", 2)
    p = ck.Producer(kconf(kbroker, **{"enable.idempotence": True, "linger.ms": 2}))
    for i in range(400):
        p.produce("t", value=b"%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    c = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "g"}))
    c.assign([shmlog.TopicPartition("t", 0, 0), shmlog.TopicPartition("t", 1, 0)])
    got = consume_n(c, 400)
    assert not consume_n(c, 1, timeout_s=1)
    c.close()
    for part in (0, 1):
        assert [int(v) for q, _, _, v in got if q == part] == list(range(part, 400, 2))


def idempotent_batch(producer_id, epoch, sequence, value=b"v"):
    """good_batch with a producer id, epoch and base sequence (CRC recomputed)."""
    from shmlog._native import lib
    body = bytearray(good_batch(value))
    struct.pack_into(">qhi", body, 43, producer_id, epoch, sequence)
    struct.pack_into(">I", body, 17, lib.shmlog_crc32c(0, bytes(body[21:]), len(body) - 21))
    return bytes(body)


def produce_reply(port, batch):
    from kio.schema.produce.v9.response import ProduceResponse
    from kio.schema.response_header.v1 import ResponseHeader
    from kio.serial import entity_reader
    reply = exchange(port, raw_produce(batch))
    _, used = entity_reader(ResponseHeader)(reply, 0)
    resp, _ = entity_reader(ProduceResponse)(reply, used)
    part = resp.responses[0].partition_responses[0]
    return int(part.error_code), part.base_offset


def test_a_resent_idempotent_batch_is_answered_with_its_first_offset_and_not_appended_again(kbroker):
    create_topic(kbroker.admin, "t", 1)
    port = int(kbroker.kafka_bootstrap.rsplit(":", 1)[1])
    pid = kbroker.admin._cluster.control.request("init_producer_id")["producer_id"]
    assert produce_reply(port, idempotent_batch(pid, 0, 0, b"a")) == (0, 0)
    assert produce_reply(port, idempotent_batch(pid, 0, 1, b"b")) == (0, 1)
    assert produce_reply(port, idempotent_batch(pid, 0, 0, b"a")) == (0, 0), "a retry is not a new record"
    assert produce_reply(port, idempotent_batch(pid, 0, 5, b"gap"))[0] == 45   # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce_reply(port, idempotent_batch(pid, 0, 2, b"c")) == (0, 2)
    c = ck.Consumer(kconf(kbroker, **{"group.id": "g"}))
    c.assign([ck.TopicPartition("t", 0, 0)])
    assert [v for *_, v in consume_n(c, 3)] == [b"a", b"b", b"c"]
    assert not consume_n(c, 1, timeout_s=1)
    c.close()


def test_a_committed_transaction_is_read_by_read_committed_consumers_and_an_aborted_one_is_not(kbroker):
    create_topic(kbroker.admin, "t", 2)
    p = txn_producer(kbroker, "tcp-txn")
    p.begin_transaction()
    for i in range(10):
        p.produce("t", value=b"c%d" % i, partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(10):
        p.produce("t", value=b"a%d" % i, partition=i % 2)
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce("t", value=b"last", partition=0)
    p.commit_transaction(30)
    c = committed_reader(kbroker, "t", 2)
    got = sorted(v for *_, v in consume_n(c, 11))
    assert not consume_n(c, 1, timeout_s=1)
    c.close()
    assert got == sorted([b"c%d" % i for i in range(10)] + [b"last"])
    shm = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "s", "isolation.level": "read_committed"}))
    shm.assign([shmlog.TopicPartition("t", 0, 0), shmlog.TopicPartition("t", 1, 0)])
    assert sorted(v for *_, v in consume_n(shm, 11)) == got, "shared-memory readers see the same transactions"
    shm.close()


def test_a_read_committed_consumer_sees_nothing_of_an_open_transaction_until_it_commits(kbroker):
    create_topic(kbroker.admin, "t", 1)
    p = txn_producer(kbroker, "open-txn")
    p.begin_transaction()
    p.produce("t", value=b"pending", partition=0)
    p.flush(30)
    c = committed_reader(kbroker, "t")
    assert not consume_n(c, 1, timeout_s=2), "read inside an open transaction"
    p.commit_transaction(30)
    assert [v for *_, v in consume_n(c, 1)] == [b"pending"]
    c.close()


def test_offsets_sent_with_a_transaction_become_the_group_offsets_only_when_it_commits(kbroker):
    create_topic(kbroker.admin, "in", 1)
    create_topic(kbroker.admin, "out", 1)
    src = shmlog.Producer(shm_conf(kbroker))
    for i in range(5):
        src.produce("in", value=b"%d" % i, partition=0)
    src.flush(10)
    consumer = ck.Consumer(kconf(kbroker, **{"group.id": "copier", "enable.auto.commit": False,
                                             "auto.offset.reset": "earliest"}))
    consumer.subscribe(["in"])
    got = consume_n(consumer, 5)
    p = txn_producer(kbroker, "copier-txn")
    for outcome in ("abort", "commit"):
        p.begin_transaction()
        for _, _, _, v in got:
            p.produce("out", value=v, partition=0)
        p.send_offsets_to_transaction([ck.TopicPartition("in", 0, 5)], consumer.consumer_group_metadata(), 30)
        if outcome == "abort":
            p.abort_transaction(30)
            committed = consumer.committed([ck.TopicPartition("in", 0)], timeout=10)
            assert committed[0].offset < 0, "offsets of an aborted transaction were committed"
        else:
            p.commit_transaction(30)
    committed = consumer.committed([ck.TopicPartition("in", 0)], timeout=10)
    consumer.close()
    assert committed[0].offset == 5


def test_a_zombie_transactional_producer_is_fenced_and_its_late_records_are_never_read(kbroker):
    create_topic(kbroker.admin, "t", 1)
    zombie = txn_producer(kbroker, "fenced-id")
    zombie.begin_transaction()
    zombie.produce("t", value=b"zombie-early", partition=0)
    zombie.flush(30)
    successor = txn_producer(kbroker, "fenced-id")     # bumps the epoch, aborts the zombie's transaction
    successor.begin_transaction()
    successor.produce("t", value=b"successor", partition=0)
    successor.commit_transaction(30)
    zombie.produce("t", value=b"zombie-late", partition=0)
    with pytest.raises(ck.KafkaException) as raised:   # the late batch is refused: fatal for the zombie
        zombie.flush(30)
        zombie.commit_transaction(30)
    assert raised.value.args[0].fatal() and raised.value.args[0].code() == ck.KafkaError._FENCED
    c = committed_reader(kbroker, "t")
    assert [v for *_, v in consume_n(c, 1)] == [b"successor"]
    assert not consume_n(c, 1, timeout_s=1)
    c.close()
    raw = ck.Consumer(kconf(kbroker, **{"group.id": "raw", "isolation.level": "read_uncommitted"}))
    raw.assign([ck.TopicPartition("t", 0, 0)])
    everything = [v for *_, v in consume_n(raw, 2)]
    assert not consume_n(raw, 1, timeout_s=1)
    raw.close()
    assert b"zombie-late" not in everything


def test_a_produce_batch_at_a_fenced_epoch_is_refused_with_invalid_producer_epoch(kbroker):
    create_topic(kbroker.admin, "t", 1)
    txn_producer(kbroker, "raw-fence")
    txn_producer(kbroker, "raw-fence")      # the second instance fences the first
    port = int(kbroker.kafka_bootstrap.rsplit(":", 1)[1])
    described = kbroker.admin._cluster.control.request("describe_transactions", transactional_ids=["raw-fence"])
    state = described["transactions"][0]
    pid, epoch = state["producer_id"], state["producer_epoch"]
    assert epoch >= 1
    assert produce_reply(port, idempotent_batch(pid, epoch - 1, 0))[0] == 47   # INVALID_PRODUCER_EPOCH
