"""The SQL source and sink on SQLite and on a real PostgreSQL server, with task processes
SIGKILLed mid-run: nothing lost, duplicates bounded by the uncommitted window."""
import collections
import datetime
import json

import pytest
import sqlalchemy

import shmlog
from shmlog.connect.api import ConfigException
from shmlog.connect.worker import Worker
from tests.conftest import create_topic
from tests.connect.helpers import kill_task, read_topic, wait_until, worker_props

BATCH = 50
JSON = "org.apache.kafka.connect.json.JsonConverter"


def json_worker(conf):
    return worker_props(conf, key_converter=JSON, value_converter=JSON, key_converter_schemas_enable="false",
                        value_converter_schemas_enable="false")


def rows(url, sql):
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
    except sqlalchemy.exc.ProgrammingError:
        return []
    except sqlalchemy.exc.OperationalError:
        return []
    finally:
        engine.dispose()


def execute(url, sql, params=None):
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(sql), params or {})
    finally:
        engine.dispose()


def test_sql_sink_upserts_by_key_and_deletes_on_tombstones_through_a_task_kill(conf, admin, database_url):
    create_topic(admin, "accounts", 2)
    p = shmlog.Producer(conf)
    expected = {}
    for i in range(3000):
        key = i % 400
        if i % 7 == 6:
            p.produce("accounts", key=json.dumps(key), value=None)
            expected.pop(key, None)
        else:
            p.produce("accounts", key=json.dumps(key), value=json.dumps({"balance": i, "owner": f"o{key}"}))
            expected[key] = (i, f"o{key}")
    assert p.flush(30) == 0
    sink = {"name": "sql-sink", "connector.class": "JdbcSinkConnector", "tasks.max": "2", "topics": "accounts",
            "connection.url": database_url, "insert.mode": "upsert", "pk.mode": "record_key", "pk.fields": "id",
            "delete.enabled": "true", "auto.create": "true", "consumer.override.max.poll.records": str(BATCH)}
    with Worker(json_worker(conf), [sink]) as w:
        w.wait_running()
        wait_until(lambda: len(rows(database_url, "SELECT id FROM accounts")) >= 100, "rows in the table")
        kill_task(w, ("sql-sink", 0))

        def done():
            got = {r[0]: (r[1], r[2]) for r in rows(database_url, "SELECT id, balance, owner FROM accounts")}
            return got if got == expected else None
        assert wait_until(done, "the table to hold the last value of every key")


def test_sql_sink_inserts_every_record_through_task_kills_with_duplicates_bounded(conf, admin, database_url):
    create_topic(admin, "events", 2)
    p = shmlog.Producer(conf)
    for i in range(4000):
        p.produce("events", key=json.dumps(i), value=json.dumps({"n": i, "at": "x" * 10}))
    assert p.flush(30) == 0
    execute(database_url, "CREATE TABLE events (n BIGINT NOT NULL, at TEXT)")
    sink = {"name": "sql-sink", "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector", "tasks.max": "2",
            "topics": "events", "connection.url": database_url, "insert.mode": "insert",
            "consumer.override.max.poll.records": str(BATCH)}
    kills = 0
    with Worker(json_worker(conf), [sink]) as w:
        w.wait_running()
        for task in (0, 1):
            wait_until(lambda k=kills: len(rows(database_url, "SELECT n FROM events")) >= 1000 * (k + 1),
                       "rows in the table")
            kill_task(w, ("sql-sink", task))
            kills += 1
        wait_until(lambda: {r[0] for r in rows(database_url, "SELECT n FROM events")} >= set(range(4000)),
                   "every record in the table")
    got = [r[0] for r in rows(database_url, "SELECT n FROM events")]
    assert set(got) == set(range(4000))
    # A killed task had at most one batch per partition written but not committed.
    assert len(got) - len(set(got)) <= kills * 2 * BATCH


def test_sql_source_incrementing_copies_every_row_through_task_kills(conf, admin, database_url):
    create_topic(admin, "db-orders", 1)
    execute(database_url, "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER)")

    def insert(start, stop):
        execute(database_url, "INSERT INTO orders (id, item, qty) VALUES " +
                ",".join(f"({i}, 'item-{i}', {i % 9})" for i in range(start, stop)))
    insert(1, 1001)
    src = {"name": "sql-src", "connector.class": "JdbcSourceConnector", "connection.url": database_url,
           "mode": "incrementing", "incrementing.column.name": "id", "table.whitelist": "orders",
           "topic.prefix": "db-", "poll.interval.ms": "50", "batch.max.rows": str(BATCH)}
    kills = 0
    with Worker(json_worker(conf), [src]) as w:
        w.wait_running()
        for step in (1, 2):
            read_topic(conf, "db-orders", count=300 * step)
            kill_task(w, ("sql-src", 0))
            kills += 1
            insert(1000 * step + 1, 1000 * (step + 1) + 1)
        values = [json.loads(m.value()) for m in read_topic(conf, "db-orders", distinct=3000)]
    ids = collections.Counter(v["id"] for v in values)
    assert set(ids) == set(range(1, 3001))
    assert len(values) - len(ids) <= kills * BATCH
    assert values[0] == {"id": 1, "item": "item-1", "qty": 1}


def test_sql_source_timestamp_mode_sends_a_row_again_when_it_is_updated(conf, admin, database_url):
    create_topic(admin, "db-items", 1)
    execute(database_url, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, updated TIMESTAMP NOT NULL)")
    t0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
    for i in range(1, 6):
        execute(database_url, "INSERT INTO items VALUES (:i, :n, :t)",
                {"i": i, "n": f"v1-{i}", "t": t0 + datetime.timedelta(seconds=i)})
    src = {"name": "sql-src", "connector.class": "JdbcSourceConnector", "connection.url": database_url,
           "mode": "timestamp+incrementing", "timestamp.column.name": "updated", "incrementing.column.name": "id",
           "table.whitelist": "items", "topic.prefix": "db-", "poll.interval.ms": "50"}
    with Worker(json_worker(conf), [src]) as w:
        w.wait_running()
        read_topic(conf, "db-items", count=5)
        execute(database_url, "UPDATE items SET name = 'v2-3', updated = :t WHERE id = 3",
                {"t": t0 + datetime.timedelta(minutes=5)})
        values = [json.loads(m.value()) for m in read_topic(conf, "db-items", count=6)]
    assert [(v["id"], v["name"]) for v in values] == [(1, "v1-1"), (2, "v1-2"), (3, "v1-3"), (4, "v1-4"),
                                                       (5, "v1-5"), (3, "v2-3")]
    # Connect's Timestamp: milliseconds since the epoch
    assert values[-1]["updated"] == int((t0 + datetime.timedelta(minutes=5)).replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000)


def test_sql_sink_upsert_without_a_primary_key_mode_is_refused_naming_the_keys(conf, admin, tmp_path):
    create_topic(admin, "t", 1)
    sink = {"name": "bad", "connector.class": "JdbcSinkConnector", "topics": "t",
            "connection.url": f"sqlite:///{tmp_path / 'x.db'}", "insert.mode": "upsert"}
    with pytest.raises(ConfigException, match="insert.mode=upsert needs a pk.mode"):
        Worker(json_worker(conf), [sink]).start()
