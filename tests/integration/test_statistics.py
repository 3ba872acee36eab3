"""stats_cb with statistics.interval.ms: librdkafka's statistics JSON, emitted from poll()."""
import json
import time

from shmlog import Consumer, Producer, TopicPartition
from tests.conftest import create_topic

DEADLINE_S = 30.0


def poll_until(client, docs, predicate, what):
    deadline = time.monotonic() + DEADLINE_S
    while not (docs and predicate(json.loads(docs[-1]))):
        assert time.monotonic() < deadline, f"no statistics with {what}; last: {docs[-1:]}"
        client.poll(0.05)
    return json.loads(docs[-1])


def test_producer_statistics_count_each_partitions_appended_records(conf, admin):
    create_topic(admin, "t", partitions=2)
    docs = []
    p = Producer({**conf, "linger.ms": 0, "statistics.interval.ms": 50, "stats_cb": docs.append,
                  "client.id": "stats-app"})
    for i in range(30):
        p.produce("t", b"0123456789", partition=0 if i < 20 else 1)
    p.flush()
    doc = poll_until(p, docs, lambda d: d["txmsgs"] == 30, "30 records sent")
    parts = doc["topics"]["t"]["partitions"]
    assert (parts["0"]["txmsgs"], parts["1"]["txmsgs"]) == (20, 10)
    assert (parts["0"]["hi_offset"], parts["1"]["hi_offset"]) == (20, 10)
    assert doc["type"] == "producer" and doc["client_id"] == "stats-app" and doc["msg_cnt"] == 0
    p.close()


def test_producer_statistics_report_the_batches_wait_before_their_append(conf, admin):
    create_topic(admin, "t")
    docs = []
    p = Producer({**conf, "linger.ms": 0, "statistics.interval.ms": 50, "stats_cb": docs.append})
    p.produce("t", b"v")
    p.flush()
    doc = poll_until(p, docs, lambda d: list(d["brokers"].values())[0]["int_latency"]["cnt"] >= 1, "a latency")
    latency = list(doc["brokers"].values())[0]["int_latency"]
    assert 0 <= latency["min"] <= latency["avg"] <= latency["max"]
    p.close()


def test_consumer_statistics_arrive_while_poll_runs_its_fast_path(conf, admin):
    create_topic(admin, "t")
    p = Producer({**conf, "linger.ms": 0})
    for _ in range(25):
        p.produce("t", b"abc", key=b"k")
    p.flush()
    docs = []
    c = Consumer({**conf, "group.id": "g", "statistics.interval.ms": 50, "stats_cb": docs.append})
    c.assign([TopicPartition("t", 0, 5)])  # one partition: poll() serves it in C
    doc = poll_until(c, docs, lambda d: d["rxmsgs"] == 20, "20 records read")
    part = doc["topics"]["t"]["partitions"]["0"]
    assert (part["rxmsgs"], part["rxbytes"]) == (20, 20 * 4)
    assert (part["app_offset"], part["hi_offset"], part["lo_offset"], part["consumer_lag"]) == (25, 25, 0, 0)
    assert doc["type"] == "consumer"
    c.close()


def test_no_statistics_without_an_interval(conf, admin):
    create_topic(admin, "t")
    docs = []
    p = Producer({**conf, "stats_cb": docs.append})
    p.produce("t", b"v")
    p.flush()
    p.poll(0.2)
    assert docs == []
    p.close()
