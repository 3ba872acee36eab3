"""shmlog's batch calls with bootstrap.servers on a Kafka cluster (shmlog.clients hands out
confluent-kafka's clients with them as per-record fallbacks): the same return types as on shmlog."""
import numpy as np

from shmlog import clients
from shmlog.client.consumer import RecordBatchView

PARTITIONS = 2


def make_topic(kafka, prefix):
    topic = kafka.name(prefix)
    lib = clients.library(kafka.conf)
    admin = clients.AdminClient(kafka.conf)
    admin.create_topics([lib.NewTopic(topic, PARTITIONS)])[topic].result()
    return topic


def read(kafka, topic, n):
    c = clients.Consumer({**kafka.conf, "group.id": "r"})
    lib = clients.library(kafka.conf)
    c.assign([lib.TopicPartition(topic, p, lib.OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got = []
    while len(got) < n:
        got += [m for m in c.consume(n, 5) if m.error() is None]
    c.close()
    return got


def test_produce_batch_queues_every_message_with_its_headers_and_timestamp(kafka):
    topic = make_topic(kafka, "batch")
    p = clients.Producer(kafka.conf)
    messages = [{"key": b"k%d" % i, "value": b"v%d" % i, "partition": i % PARTITIONS, "timestamp": 1_000 + i,
                 "headers": [("h", b"%d" % i)]} for i in range(10)]
    assert p.produce_batch(topic, messages) == 10
    assert p.flush(30) == 0
    got = sorted(read(kafka, topic, 10), key=lambda m: m.value())
    assert [(m.key(), m.value(), m.partition(), m.timestamp()[1], m.headers()) for m in got] == \
        [(b"k%d" % i, b"v%d" % i, i % PARTITIONS, 1_000 + i, [("h", b"%d" % i)]) for i in range(10)]


def test_produce_values_returns_the_partition_base_offset_and_count_of_what_it_appended(kafka):
    topic = make_topic(kafka, "values")
    p = clients.Producer(kafka.conf)
    assert p.produce_values(topic, [b"a", b"b", b"c"], partition=1) == [(1, 0, 3)]
    rows = np.arange(8, dtype=np.int64).reshape(4, 2)
    assert p.produce_values(topic, rows, partition=1) == [(1, 3, 4)]
    values = [m.value() for m in read(kafka, topic, 7)]
    assert values[:3] == [b"a", b"b", b"c"] and values[3:] == [r.tobytes() for r in rows]


def test_consume_batch_hands_out_one_partition_at_a_time_and_skips_nothing(kafka):
    topic = make_topic(kafka, "views")
    p = clients.Producer(kafka.conf)
    for i in range(40):
        p.produce(topic, key=b"k", value=b"%d" % i, partition=i % PARTITIONS)
    assert p.flush(30) == 0
    lib = clients.library(kafka.conf)
    c = clients.Consumer({**kafka.conf, "group.id": kafka.name("views")})
    c.assign([lib.TopicPartition(topic, p, lib.OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen = {p: [] for p in range(PARTITIONS)}
    views = 0
    while sum(map(len, seen.values())) < 40:
        view = c.consume_batch(7, timeout=5)
        assert isinstance(view, RecordBatchView) and 0 < len(view) <= 7
        seen[view.partition] += [int(v) for v in view.values()]
        assert list(view.offsets) == list(range(len(seen[view.partition]) - len(view), len(seen[view.partition])))
        views += 1
    assert seen == {p: list(range(p, 40, PARTITIONS)) for p in range(PARTITIONS)}
    c.commit(asynchronous=False)    # what was handed out, and only that, is stored for commit
    assert [tp.offset for tp in c.committed([lib.TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)] \
        == [20, 20]
    c.close()
