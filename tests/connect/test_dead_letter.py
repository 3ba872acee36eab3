"""errors.tolerance and the dead-letter queue: records a converter, a transform or the sink's
put() cannot handle go to the DLQ topic with Kafka's __connect.errors.* headers; with
errors.tolerance=none the task fails and is restarted with backoff without passing the record."""
import json

import shmlog
from shmlog.connect.worker import Worker
from tests.conftest import create_topic
from tests.connect.helpers import lines, read_topic, wait_until, worker_props

JSON = "org.apache.kafka.connect.json.JsonConverter"


def produce(conf, topic, records):
    p = shmlog.Producer(conf)
    for key, value in records:
        p.produce(topic, key=key, value=value, headers=[("origin", b"test")])
    assert p.flush(30) == 0


def dlq_sink(tmp_path, **extra):
    return {"name": "sink", "connector.class": "FileStreamSink", "topics": "in", "file": str(tmp_path / "out.txt"),
            "value.converter": JSON, "value.converter.schemas.enable": "false", "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": "dlq", "errors.deadletterqueue.context.headers.enable": "true",
            **extra}


def test_records_a_converter_cannot_read_go_to_the_dead_letter_topic_with_the_error_in_headers(conf, admin, tmp_path):
    create_topic(admin, "in", 1)
    produce(conf, "in", [(b"k1", b'"good-1"'), (b"k2", b"{not json"), (b"k3", b'"good-2"')])
    with Worker(worker_props(conf), [dlq_sink(tmp_path)]) as w:
        w.wait_running()
        (dead,) = read_topic(conf, "dlq", count=1)
        wait_until(lambda: lines(tmp_path / "out.txt") == ["good-1", "good-2"], "the good records in the file")
    assert (dead.key(), dead.value()) == (b"k2", b"{not json")
    headers = dict(dead.headers())
    assert headers["origin"] == b"test"                     # the original headers come along
    assert headers["__connect.errors.topic"] == b"in"
    assert headers["__connect.errors.partition"] == b"0"
    assert headers["__connect.errors.offset"] == b"1"
    assert headers["__connect.errors.stage"] == b"VALUE_CONVERTER"
    assert headers["__connect.errors.connector.name"] == b"sink"
    assert headers["__connect.errors.task.id"] == b"0"
    assert headers["__connect.errors.exception.class.name"] == b"DataException"
    assert b"serialization error" in headers["__connect.errors.exception.message"]
    assert b"Traceback" in headers["__connect.errors.exception.stacktrace"]


def test_records_the_sink_cannot_write_go_to_the_dead_letter_topic_and_the_rest_are_written(conf, admin, tmp_path):
    create_topic(admin, "in", 1)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    import sqlalchemy
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as c:
        c.execute(sqlalchemy.text("CREATE TABLE \"in\" (n INTEGER NOT NULL)"))
    produce(conf, "in", [(None, json.dumps({"n": i if i != 5 else None}).encode()) for i in range(10)])
    sink = {**dlq_sink(tmp_path), "connector.class": "JdbcSinkConnector", "connection.url": url}
    del sink["file"]
    with Worker(worker_props(conf), [sink]) as w:
        w.wait_running()
        (dead,) = read_topic(conf, "dlq", count=1)

        def written():
            with engine.connect() as c:
                got = sorted(r[0] for r in c.execute(sqlalchemy.text('SELECT n FROM "in"')))
            return got if len(got) == 9 else None
        assert wait_until(written, "nine rows") == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    engine.dispose()
    assert json.loads(dead.value()) == {"n": None}
    assert dict(dead.headers())["__connect.errors.stage"] == b"TASK_PUT"


def test_with_errors_tolerance_none_a_bad_record_fails_the_task_which_restarts_without_passing_it(conf, admin,
                                                                                                  tmp_path):
    create_topic(admin, "in", 1)
    produce(conf, "in", [(None, b'"good"'), (None, b"{bad")])
    sink = {"name": "sink", "connector.class": "FileStreamSink", "topics": "in", "file": str(tmp_path / "out.txt"),
            "value.converter": JSON, "value.converter.schemas.enable": "false"}
    with Worker(worker_props(conf), [sink]) as w:
        wait_until(lambda: w.restarts() >= 2, "two restarts of the failing task")
        assert any("DataException" in f[2] for f in w.failures)
    c = shmlog.Consumer({**conf, "group.id": "connect-sink"})
    committed = c.committed([shmlog.TopicPartition("in", 0)], timeout=10)[0].offset
    c.close()
    assert committed <= 1      # never past the bad record at offset 1
    assert "dlq" not in admin.list_topics(timeout=10).topics
