"""The README's trade pipeline (shmlog.demo's topics, group and check_trade function through
shmlog.pipeline.Pipeline) with bootstrap.servers naming a Kafka-protocol broker: the same code
runs through confluent-kafka, and checks out as it does on shmlog: every trade forwarded once,
per-key order kept, every input offset committed by the group."""
import time

import pytest

from shmlog import clients
from shmlog.demo import CHECKED, GROUP, HEADER, TOPIC, check_trade
from shmlog.pipeline import Pipeline
from tests.mirror_kafka.mirror_helpers import high_watermarks, read_all

PARTITIONS = 4
TRADES = 2000
# Kafka brokers hold a group's first join back until every member could have joined (up to
# the session timeout in some brokers): short ones keep the test quick.
GROUP_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 10000}


def produce_trades(conf, topic):
    p = clients.Producer({**conf, "acks": "all", "linger.ms": 2})
    for seq in range(TRADES):
        p.produce(topic, key=b"trade-0-%d" % (seq % 97), value=HEADER.pack(0, seq, time.monotonic_ns()) + b"x" * 64)
    assert p.flush(60) == 0


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_readme_trade_pipeline_runs_unchanged_on_a_kafka_cluster(kafka, guarantee):
    topic, checked, group = kafka.name(TOPIC), kafka.name(CHECKED), kafka.name(GROUP)
    lib = clients.library(kafka.conf)
    admin = clients.AdminClient(kafka.conf)
    for f in admin.create_topics([lib.NewTopic(topic, PARTITIONS), lib.NewTopic(checked, PARTITIONS)]).values():
        f.result()
    produce_trades(kafka.conf, topic)

    with Pipeline({**kafka.conf, "auto.offset.reset": "earliest", **GROUP_TIMINGS}, [topic], check_trade,
                  group_id=group, workers=2, output_topic=checked, processing_guarantee=guarantee) as pipeline:
        pipeline.wait_ready(timeout=60)
        out = read_all(kafka.conf, checked, PARTITIONS, TRADES)
    assert pipeline.stats()["failures"] == []

    by_key = {}
    for records in out.values():
        for key, value, _, _ in records:
            by_key.setdefault(key, []).append(HEADER.unpack_from(value)[1])
    assert sorted(s for seqs in by_key.values() for s in seqs) == list(range(TRADES))   # each trade once
    assert all(seqs == sorted(seqs) for seqs in by_key.values())                        # per-key order
    committed = clients.Consumer({**kafka.conf, "group.id": group}).committed(
        [lib.TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    assert [tp.offset for tp in committed] == high_watermarks(kafka.conf, topic, PARTITIONS)
