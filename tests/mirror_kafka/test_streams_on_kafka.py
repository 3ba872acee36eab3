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


def test_a_co_partitioned_table_join_runs_unchanged_on_a_kafka_cluster_exactly_once(kafka, tmp_path):
    payments, accounts, out = kafka.name("payments"), kafka.name("accounts"), kafka.name("billed")
    lib = clients.library(kafka.conf)
    admin = clients.AdminClient(kafka.conf)
    for f in admin.create_topics([lib.NewTopic(payments, PARTITIONS),
                                  lib.NewTopic(accounts, PARTITIONS, config={"cleanup.policy": "compact"})]).values():
        f.result()
    now = int(time.time() * 1000)
    p = clients.Producer({**kafka.conf, "acks": "all"})
    for i in range(10):          # every account's row is older than every payment
        p.produce(accounts, key=f"A{i}", value=json.dumps({"tier": i * 10}), timestamp=now - 60_000)
    p.produce(accounts, key="A9", value=None, timestamp=now - 30_000)   # A9 closed
    for i in range(200):
        p.produce(payments, key=f"A{i % 10}", value=json.dumps({"n": i}), timestamp=now + i)
    assert p.flush(60) == 0
    app = App({**kafka.conf, **GROUP_TIMINGS, "application.id": kafka.name("billing"),
               "processing.guarantee": "exactly_once", "state.dir": str(tmp_path / "state")})
    (app.stream(payments)
        .join_table(app.ktable(accounts), how="left",
                    merge=lambda payment, account: {"n": payment["n"], "tier": account and account["tier"]})
        .to_topic(out))
    with app.runner(workers=1) as runner:
        records = read_all(kafka.conf, out, PARTITIONS, 200)
    assert runner.stats()["failures"] == []
    got = sorted((json.loads(value)["n"], json.loads(value)["tier"]) for part in records.values()
                 for _, value, _, _ in part)
    assert got == [(i, None if i % 10 == 9 else i % 10 * 10) for i in range(200)]
