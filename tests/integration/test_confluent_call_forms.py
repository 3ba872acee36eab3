"""confluent-kafka 2.x call forms on a real broker: Producer.produce_batch(topic, messages) of
dicts, Message.latency() in delivery reports, the cluster id in Producer/Consumer list_topics(),
librdkafka's fnv1a and consistent_random placement (docs/compatibility.md)."""
import time

import pytest

import shmlog
from shmlog import KafkaError, TopicPartition
from tests.conftest import create_topic


def read_all(conf, topic, partitions, expected, timeout=10.0):
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    while len(out) < expected:
        batch = c.consume(1000, timeout=timeout)
        if not batch:
            break
        out += batch
    c.close()
    return out


@pytest.fixture
def producer(conf, topic):
    p = shmlog.Producer({**conf, "acks": 1})
    yield p
    p.close()


# ---------------------------------------------------------------------------- produce_batch

def test_produce_batch_takes_a_list_of_dicts_and_returns_how_many_were_queued(producer, conf, topic):
    messages = [{"value": b"v0", "key": b"k0"}, {"value": "v1"}, {"key": b"k2"}, {}]
    assert producer.produce_batch(topic, messages) == 4
    assert producer.flush(10) == 0
    got = read_all(conf, topic, 1, 4)
    assert [(m.key(), m.value()) for m in got] == [(b"k0", b"v0"), (None, b"v1"), (b"k2", None), (None, None)]


def test_produce_batch_serves_each_messages_own_callback_else_the_batch_callback(producer, topic):
    own, batch_wide = [], []
    messages = [{"value": b"a", "callback": lambda err, msg: own.append((err, msg.value()))}, {"value": b"b"}]
    producer.produce_batch(topic, messages, on_delivery=lambda err, msg: batch_wide.append((err, msg.value())))
    producer.flush(10)
    assert own == [(None, b"a")] and batch_wide == [(None, b"b")]


def test_produce_batch_sends_messages_to_the_batch_partition_unless_they_name_their_own(conf, admin):
    create_topic(admin, "spread", 3)
    p = shmlog.Producer({**conf, "acks": 1})
    assert p.produce_batch("spread", [{"value": b"x"}, {"value": b"y", "partition": 0}], partition=2) == 2
    p.flush(10)
    p.close()
    assert sorted((m.partition(), m.value()) for m in read_all(conf, "spread", 3, 2)) == [(0, b"y"), (2, b"x")]


def test_a_message_produce_batch_cannot_queue_gets_an_error_key_and_is_not_counted(producer, conf, topic):
    messages = [{"value": b"ok"}, {"value": b"bad", "partition": 7}]
    assert producer.produce_batch(topic, messages) == 1
    assert "_error" not in messages[0]
    assert isinstance(messages[1]["_error"], KafkaError)
    assert messages[1]["_error"].code() == KafkaError._UNKNOWN_PARTITION
    producer.flush(10)
    assert [m.value() for m in read_all(conf, topic, 1, 1)] == [b"ok"]


@pytest.mark.parametrize("messages,text", [
    ((b"a",), "messages must be a list"),
    ([b"a"], "Message at index 0 must be a dict"),
    ([{"value": b"a"}, {"value": 5}], "Message value at index 1 must be bytes or str"),
    ([{"key": 1.5}], "Message key at index 0 must be bytes or str"),
    ([{"partition": "0"}], "Message partition at index 0 must be int"),
])
def test_produce_batch_refuses_a_malformed_batch_with_a_type_error_before_queueing_any(producer, topic, messages,
                                                                                        text):
    with pytest.raises(TypeError, match=text):
        producer.produce_batch(topic, messages)
    assert len(producer) == 0


def test_the_zero_copy_batch_append_is_produce_values(producer, conf, topic):
    assert producer.produce_values(topic, [b"a", b"b"], partition=0) == [(0, 0, 2)]
    assert [m.value() for m in read_all(conf, topic, 1, 2)] == [b"a", b"b"]


# ---------------------------------------------------------------------------- Message.latency()

def test_a_delivery_report_carries_the_seconds_from_produce_to_the_report_as_latency(conf, topic):
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 60000})
    reports = []
    before = time.monotonic()
    p.produce(topic, b"x", on_delivery=lambda err, msg: reports.append(msg.latency()))
    produced = time.monotonic()
    while time.monotonic() - produced < 0.05:   # let 50 ms pass before the report is asked for
        pass
    p.flush(10)
    after = time.monotonic()
    p.close()
    assert len(reports) == 1 and isinstance(reports[0], float)
    assert 0.05 <= reports[0] <= after - before


def test_records_of_one_batch_each_carry_their_own_latency(conf, topic):
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 60000})
    reports = []
    on_delivery = lambda err, msg: reports.append(msg.latency())   # noqa: E731
    p.produce(topic, b"first", on_delivery=on_delivery)
    start = time.monotonic()
    while time.monotonic() - start < 0.02:   # let 20 ms pass: the first record is that much older
        pass
    p.produce(topic, b"second", on_delivery=on_delivery)
    p.flush(10)
    p.close()
    assert reports[0] - reports[1] >= 0.02 and reports[1] >= 0


def test_a_consumed_message_has_no_latency(producer, conf, topic):
    producer.produce(topic, b"x")
    producer.flush(10)
    assert read_all(conf, topic, 1, 1)[0].latency() is None


# ---------------------------------------------------------------------------- list_topics() cluster id

def test_producer_and_consumer_list_topics_carry_the_cluster_id_the_admin_client_reports(producer, conf, admin):
    c = shmlog.Consumer(conf)
    try:
        cluster_id = admin.cluster_id()
        assert cluster_id
        assert producer.list_topics().cluster_id == c.list_topics().cluster_id == cluster_id
    finally:
        c.close()


# ---------------------------------------------------------------------------- partitioners

def test_keyed_records_land_where_librdkafkas_fnv1a_partitioner_puts_them(conf, admin):
    create_topic(admin, "fnv", 7)
    p = shmlog.Producer({**conf, "acks": 1, "partitioner": "fnv1a"})
    keys = [b"a", b"b", b"foobar", b"hello", b"user-42", b"21", b"abc", b""]
    for key in keys:
        p.produce("fnv", b"v", key=key)
    p.flush(10)
    p.close()
    # confluent_kafka.fnv1a(key, 7), confluent-kafka 2.16.1 / librdkafka 2.16.0
    expected = {b"a": 6, b"b": 5, b"foobar": 4, b"hello": 2, b"user-42": 6, b"21": 3, b"abc": 5, b"": 2}
    assert {m.key() or b"": m.partition() for m in read_all(conf, "fnv", 7, len(keys))} == expected


def test_consistent_random_sends_an_empty_key_to_the_sticky_partition_of_null_keys(conf, admin):
    create_topic(admin, "sticky", 16)
    placed = []
    for _ in range(3):   # crc32(b"") puts an empty key on partition 0; the sticky partition is random
        p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 60000, "partitioner": "consistent_random"})
        seen = []
        p.produce("sticky", b"null", on_delivery=lambda err, msg, seen=seen: seen.append(msg.partition()))
        p.produce("sticky", b"empty", key=b"", on_delivery=lambda err, msg, seen=seen: seen.append(msg.partition()))
        p.flush(10)
        p.close()
        placed.append(tuple(seen))
    assert all(null == empty for null, empty in placed), placed
