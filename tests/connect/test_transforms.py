"""Single message transforms and predicates with Kafka's class names and config keys: each
on its own (shmlog.connect.transforms), then all of them in a running SQL sink."""
import datetime
import json

import pytest
import sqlalchemy

import shmlog
from shmlog.connect.api import ConfigException, DataException
from shmlog.connect.config import connector_config, worker_config
from shmlog.connect.data import SinkRecord, SourceRecord
from shmlog.connect.transforms import transform_chain
from shmlog.connect.worker import Worker
from tests.conftest import create_topic
from tests.connect.helpers import wait_until, worker_props

T = "org.apache.kafka.connect.transforms."
JAN_1 = int(datetime.datetime(2026, 1, 1, 8, 30, tzinfo=datetime.timezone.utc).timestamp() * 1000)
WORKER = worker_config({"bootstrap.servers": "shm:///nowhere"})


def chain(**props):
    cfg = connector_config({"name": "c", "connector.class": "FileStreamSink", "topics": "t", "file": "/dev/null",
                            **{k.replace("__", "."): v for k, v in props.items()}}, WORKER)
    return transform_chain(cfg)


def record(value, headers=(), key=None, schema=None):
    return SinkRecord("pay", 2, None, key, schema, value, JAN_1, list(headers), kafka_offset=41)


def test_insert_field_adds_topic_partition_offset_timestamp_and_a_static_field():
    c = chain(transforms="ins", transforms__ins__type=T + "InsertField$Value", transforms__ins__topic__field="t",
              transforms__ins__partition__field="p", transforms__ins__offset__field="o!",
              transforms__ins__timestamp__field="ts", transforms__ins__static__field="src",
              transforms__ins__static__value="shm")
    out = c.apply(record({"a": 1}))
    assert out.value == {"a": 1, "t": "pay", "p": 2, "o": 41, "src": "shm",
                         "ts": datetime.datetime(2026, 1, 1, 8, 30, tzinfo=datetime.timezone.utc)}


def test_insert_field_with_a_schema_adds_the_fields_to_the_schema():
    c = chain(transforms="ins", transforms__ins__type=T + "InsertField$Value", transforms__ins__topic__field="t")
    schema = {"type": "struct", "fields": [{"field": "a", "type": "int64", "optional": False}], "optional": False}
    out = c.apply(record({"a": 1}, schema=schema))
    assert [f["field"] for f in out.value_schema["fields"]] == ["a", "t"]


def test_insert_field_refuses_a_value_that_is_not_a_map_as_kafka_does():
    c = chain(transforms="ins", transforms__ins__type=T + "InsertField$Value", transforms__ins__topic__field="t")
    with pytest.raises(DataException, match="Only Map objects supported"):
        c.apply(record("plain string"))


def test_insert_field_key_operates_on_the_key():
    c = chain(transforms="ins", transforms__ins__type=T + "InsertField$Key", transforms__ins__static__field="k",
              transforms__ins__static__value="v")
    out = c.apply(record({"a": 1}, key={"id": 7}))
    assert (out.key, out.value) == ({"id": 7, "k": "v"}, {"a": 1})


def test_replace_field_excludes_includes_and_renames():
    c = chain(transforms="rep", transforms__rep__type=T + "ReplaceField$Value", transforms__rep__exclude="secret",
              transforms__rep__renames="amt:amount,cur:currency")
    assert c.apply(record({"amt": 5, "cur": "EUR", "secret": "x"})).value == {"amount": 5, "currency": "EUR"}
    c = chain(transforms="rep", transforms__rep__type=T + "ReplaceField$Value", transforms__rep__include="a,b")
    assert c.apply(record({"a": 1, "b": 2, "c": 3})).value == {"a": 1, "b": 2}


def test_timestamp_router_names_the_topic_from_the_record_timestamp():
    c = chain(transforms="r", transforms__r__type=T + "TimestampRouter",
              transforms__r__topic__format="${topic}_${timestamp}", transforms__r__timestamp__format="yyyy-MM-dd'T'HH")
    assert c.apply(record({"a": 1})).topic == "pay_2026-01-01T08"
    c = chain(transforms="r", transforms__r__type="TimestampRouter")
    assert c.apply(record({"a": 1})).topic == "pay-20260101"       # Kafka's defaults
    with pytest.raises(DataException, match="Timestamp missing"):
        c.apply(SourceRecord("t", None, None, None, None, "v"))


def test_filter_with_has_header_key_drops_only_records_with_that_header_and_negate_inverts_it():
    props = dict(transforms="drop", transforms__drop__type=T + "Filter", transforms__drop__predicate="hb",
                 predicates="hb", predicates__hb__type=T + "predicates.HasHeaderKey", predicates__hb__name="heartbeat")
    c = chain(**props)
    assert c.apply(record({"a": 1}, headers=[("heartbeat", b"")])) is None
    assert c.apply(record({"a": 1}, headers=[("other", b"")])) is not None
    c = chain(**props, transforms__drop__negate="true")
    assert c.apply(record({"a": 1}, headers=[("heartbeat", b"")])) is not None
    assert c.apply(record({"a": 1})) is None


def test_a_transform_config_key_it_does_not_know_is_refused_naming_it():
    with pytest.raises(ConfigException, match="transforms.ins.*topic.feild"):
        chain(transforms="ins", transforms__ins__type=T + "InsertField$Value", transforms__ins__topic__feild="t")
    with pytest.raises(ConfigException, match="no transform of that name"):
        chain(transforms="x", transforms__x__type=T + "NoSuchTransform")
    with pytest.raises(ConfigException, match="names no predicate"):
        chain(transforms="d", transforms__d__type=T + "Filter", transforms__d__predicate="missing")


def test_every_transform_applies_in_a_running_sql_sink(conf, admin, tmp_path):
    create_topic(admin, "pay", 1)
    now = datetime.datetime.now(datetime.timezone.utc)   # an old timestamp would fall to retention.ms
    ts, day = int(now.timestamp() * 1000), now.strftime("%Y%m%d")
    p = shmlog.Producer(conf)
    for i in range(6):
        headers = [("heartbeat", b"1")] if i % 3 == 0 else []
        p.produce("pay", value=json.dumps({"amt": i, "secret": "s"}), headers=headers, timestamp=ts)
    assert p.flush(30) == 0
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    sink = {"name": "sink", "connector.class": "JdbcSinkConnector", "topics": "pay", "connection.url": url,
            "auto.create": "true", "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false", "transforms": "drop,ins,rep,route",
            "transforms.drop.type": T + "Filter", "transforms.drop.predicate": "hb",
            "transforms.ins.type": T + "InsertField$Value", "transforms.ins.offset.field": "kafka_offset",
            "transforms.rep.type": T + "ReplaceField$Value", "transforms.rep.exclude": "secret",
            "transforms.rep.renames": "amt:amount",
            "transforms.route.type": T + "TimestampRouter", "transforms.route.topic.format": "${topic}_${timestamp}",
            "predicates": "hb", "predicates.hb.type": T + "predicates.HasHeaderKey", "predicates.hb.name": "heartbeat"}
    engine = sqlalchemy.create_engine(url)

    def table():
        try:
            with engine.connect() as c:
                got = sorted(tuple(r) for r in c.execute(sqlalchemy.text(
                    f"SELECT amount, kafka_offset FROM pay_{day}")))
        except sqlalchemy.exc.OperationalError:
            return None
        return got if len(got) == 4 else None
    with Worker(worker_props(conf), [sink]) as w:
        w.wait_running()
        try:
            got = wait_until(table, f"four rows in pay_{day}")
        except AssertionError:
            raise AssertionError(f"failures: {w.failures} restarts: {w.restarts()}") from None
        assert got == [(1, 1), (2, 2), (4, 4), (5, 5)]
    with engine.connect() as c:
        columns = [r[1] for r in c.execute(sqlalchemy.text(f"PRAGMA table_info(pay_{day})"))]
    engine.dispose()
    assert sorted(columns) == ["amount", "kafka_offset"]
