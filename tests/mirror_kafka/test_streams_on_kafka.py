"""A shmlog.streams topology with bootstrap.servers naming a Kafka-protocol broker: the same
code runs through confluent-kafka (internal topics created there, state changelogged there),
exactly once."""
import json
import time

from shmlog import clients
from shmlog.streams import App
from tests.mirror_kafka.mirror_helpers import read_all
from tests.mirror_kafka.test_pipeline_on_kafka import GROUP_TIMINGS

PARTITIONS = 2
RECORDS = 600


def test_a_keyed_count_runs_unchanged_on_a_kafka_cluster_exactly_once(kafka, tmp_path):
    source, out = kafka.name("trades"), kafka.name("counts")
    lib = clients.library(kafka.conf)
    admin = clients.AdminClient(kafka.conf)    # kept alive until its futures are done
    for f in admin.create_topics([lib.NewTopic(source, PARTITIONS)]).values():
        f.result()
    p = clients.Producer({**kafka.conf, "acks": "all"})
    now = int(time.time() * 1000)
    keys = [f"T{i % 17}" for i in range(RECORDS)]
    for i, key in enumerate(keys):
        p.produce(source, key=key, value=json.dumps({"n": i}), timestamp=now + i)
    assert p.flush(60) == 0
    app = App({**kafka.conf, **GROUP_TIMINGS, "application.id": kafka.name("counter"),
               "processing.guarantee": "exactly_once", "state.dir": str(tmp_path / "state")})
    app.stream(source).count().to_topic(out)
    with app.runner(workers=1) as runner:
        records = read_all(kafka.conf, out, PARTITIONS, RECORDS)
    assert runner.stats()["failures"] == []
    got = {}
    for part in records.values():
        for key, value, _, _ in part:
            got.setdefault(key, []).append(json.loads(value))
    expected = {}
    for key in keys:
        expected.setdefault(key.encode(), []).append(len(expected.get(key.encode(), [])) + 1)
    assert got == expected
