"""message.timestamp.type=LogAppendTime: each batch is stamped with the time of its append to
the log (the LogAppendTime attribute, maxTimestamp = that time), every record of it is read with
that time, and delivery reports carry it, as with Kafka's broker (docs/configuration.md)."""
import time

import pytest

import shmlog
from shmlog import TopicPartition
from shmlog.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from tests.conftest import create_topic

LOG_APPEND, CREATE = shmlog.TIMESTAMP_LOG_APPEND_TIME, shmlog.TIMESTAMP_CREATE_TIME
OLD_MS = 1_000_000_000_000      # 2001: what the producers ask for


def now_ms():
    return time.time_ns() // 1_000_000


def produce(conf, topic, sends, **extra):
    """Each send(producer) in order, then flush; returns [(offset, timestamp()) of each report]."""
    reports = []

    def report(err, msg):
        assert err is None, err
        reports.append((msg.offset(), msg.timestamp()))
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0, "on_delivery": report, **extra})
    try:
        for send in sends:
            send(p)
        assert p.flush(10) == 0
    finally:
        p.close()
    return sorted(reports)


def read(conf, topic, n):
    """[(offset, timestamp())] of the first n records of partition 0."""
    c = shmlog.Consumer(conf)
    got = []
    try:
        c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
        deadline = time.monotonic() + 10
        while len(got) < n and time.monotonic() < deadline:
            got += [m for m in c.consume(n - len(got), 0.5) if m.error() is None]
    finally:
        c.close()
    return [(m.offset(), m.timestamp()) for m in got]


def alter(admin, topic, value):
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("message.timestamp.type", value, incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result()


def test_records_of_a_log_append_time_topic_are_read_with_the_time_of_their_append_on_both_produce_paths(
        conf, admin):
    create_topic(admin, "stamped", message_timestamp_type="LogAppendTime")
    before = now_ms()
    reports = produce(conf, "stamped", [lambda p: p.produce("stamped", b"fast", timestamp=OLD_MS),
                                        lambda p: p.produce("stamped", b"slow", timestamp=OLD_MS, headers={"h": b"1"})])
    after = now_ms()
    records = read(conf, "stamped", 2)
    assert [ts[0] for _, ts in records] == [LOG_APPEND, LOG_APPEND]
    assert all(before <= ts[1] <= after for _, ts in records)
    assert reports == records


def test_a_create_time_topic_keeps_the_producers_timestamps(conf, admin):
    create_topic(admin, "created", retention_ms=-1)   # a record stamped 2001: time retention would delete it
    reports = produce(conf, "created", [lambda p: p.produce("created", b"v", timestamp=OLD_MS)])
    assert read(conf, "created", 1) == reports == [(0, (CREATE, OLD_MS))]


def test_batches_appended_after_the_topic_is_altered_to_log_append_time_are_stamped_and_earlier_ones_keep_theirs(
        conf, admin):
    create_topic(admin, "altered", retention_ms=-1)   # records stamped 2001: time retention would delete them
    produce(conf, "altered", [lambda p: p.produce("altered", b"before", timestamp=OLD_MS)])
    alter(admin, "altered", "LogAppendTime")
    before = now_ms()
    produce(conf, "altered", [lambda p: p.produce("altered", b"after", timestamp=OLD_MS)])
    alter(admin, "altered", "CreateTime")
    produce(conf, "altered", [lambda p: p.produce("altered", b"back", timestamp=OLD_MS)])
    first, second, third = read(conf, "altered", 3)
    assert first == (0, (CREATE, OLD_MS)) and third == (2, (CREATE, OLD_MS))
    assert second[1][0] == LOG_APPEND and before <= second[1][1] <= now_ms()


def test_the_broker_default_applies_to_topics_without_their_own_and_after_a_restart(start_broker):
    broker = start_broker(**{"log.message.timestamp.type": "LogAppendTime"})
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    with shmlog.AdminClient(conf) as admin:
        create_topic(admin, "defaulted")
    produce(conf, "defaulted", [lambda p: p.produce("defaulted", b"one", timestamp=OLD_MS)])
    broker.stop()
    broker = start_broker(**{"log.message.timestamp.type": "LogAppendTime"})
    produce(conf, "defaulted", [lambda p: p.produce("defaulted", b"two", timestamp=OLD_MS)])
    assert [ts[0] for _, ts in read(conf, "defaulted", 2)] == [LOG_APPEND, LOG_APPEND]


def test_produce_values_and_produce_batch_appends_are_stamped_too(conf, admin):
    create_topic(admin, "batched", message_timestamp_type="LogAppendTime")
    before = now_ms()
    produce(conf, "batched", [lambda p: p.produce_values("batched", [b"a", b"b"], partition=0, timestamp=OLD_MS),
                              lambda p: p.produce_batch("batched", [{"value": b"c", "timestamp": OLD_MS}],
                                                        partition=0)])
    records = read(conf, "batched", 3)
    assert len(records) == 3
    assert all(ts[0] == LOG_APPEND and before <= ts[1] <= now_ms() for _, ts in records)


def test_a_transaction_on_a_log_append_time_topic_commits_and_its_records_are_stamped(conf, admin):
    create_topic(admin, "txn-stamped", message_timestamp_type="LogAppendTime")
    p = shmlog.Producer({**conf, "transactional.id": "stamper"})
    try:
        p.init_transactions(10)
        p.begin_transaction()
        p.produce("txn-stamped", b"in-txn", partition=0, timestamp=OLD_MS)
        p.commit_transaction(10)
    finally:
        p.close()
    records = read({**conf, "isolation.level": "read_committed"}, "txn-stamped", 1)
    assert [(offset, ts[0]) for offset, ts in records] == [(0, LOG_APPEND)]


def test_kafka_clients_get_the_append_time_in_delivery_reports_and_records(start_broker):
    pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
    ck = pytest.importorskip("confluent_kafka")
    from tests.integration.test_kafka_listener import start_with_listener
    broker = start_with_listener(start_broker)
    try:
        create_topic(broker.admin, "tcp-stamped", message_timestamp_type="LogAppendTime")
        reports = []
        p = ck.Producer({"bootstrap.servers": broker.kafka_bootstrap, "linger.ms": 0})
        before = now_ms()
        p.produce("tcp-stamped", b"v", partition=0, timestamp=OLD_MS,
                  on_delivery=lambda err, msg: reports.append((err, msg.offset(), msg.timestamp())))
        assert p.flush(30) == 0
        after = now_ms()
        (err, offset, (kind, stamped)), = reports
        assert err is None and kind == ck.TIMESTAMP_LOG_APPEND_TIME and before <= stamped <= after
        c = ck.Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "g"})
        try:
            c.assign([ck.TopicPartition("tcp-stamped", 0, ck.OFFSET_BEGINNING)])
            msg = c.poll(30)
            assert msg is not None and msg.error() is None
            assert (msg.offset(), msg.timestamp()) == (offset, (ck.TIMESTAMP_LOG_APPEND_TIME, stamped))
        finally:
            c.close()
        assert read({"bootstrap.servers": broker.bootstrap_servers}, "tcp-stamped", 1) == [
            (offset, (LOG_APPEND, stamped))]
    finally:
        broker.admin.close()
