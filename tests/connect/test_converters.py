"""Converters with Kafka's class names: String, ByteArray, JSON (with and without schemas) and
Avro through shmlog's schema registry, each from Connect data to bytes and back."""
import datetime
import json

import pytest
import sqlalchemy

from shmlog.connect.api import ConfigException, DataException
from shmlog.connect.converters import make_converter
from shmlog.connect.worker import Worker
from tests.conftest import create_topic
from tests.connect.helpers import read_topic, wait_until, worker_props

C = {"string": "org.apache.kafka.connect.storage.StringConverter",
     "bytes": "org.apache.kafka.connect.converters.ByteArrayConverter",
     "json": "org.apache.kafka.connect.json.JsonConverter", "avro": "io.confluent.connect.avro.AvroConverter"}
STRUCT = {"type": "struct", "optional": False, "fields": [
    {"field": "id", "type": "int64", "optional": False},
    {"field": "name", "type": "string", "optional": True},
    {"field": "blob", "type": "bytes", "optional": True},
    {"field": "at", "type": "int64", "name": "org.apache.kafka.connect.data.Timestamp", "version": 1,
     "optional": True}]}
VALUE = {"id": 7, "name": "seven", "blob": b"\x00\x01",
         "at": datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)}


def test_string_converter_encodes_text_and_reads_it_back():
    c = make_converter(C["string"], {}, False, "")
    assert c.from_connect("t", None, "héllo") == "héllo".encode()
    assert c.to_connect("t", "héllo".encode()) == ({"type": "string", "optional": True}, "héllo")
    latin = make_converter("StringConverter", {"converter.encoding": "latin-1"}, False, "")
    assert latin.from_connect("t", None, "é") == b"\xe9"


def test_byte_array_converter_passes_bytes_and_refuses_anything_else():
    c = make_converter(C["bytes"], {}, True, "")
    assert c.from_connect("t", None, b"\x00raw") == b"\x00raw"
    assert c.to_connect("t", b"\x00raw")[1] == b"\x00raw"
    with pytest.raises(DataException, match="not compatible"):
        c.from_connect("t", None, "text")


def test_json_converter_with_schemas_writes_kafkas_envelope_and_reads_it_back():
    c = make_converter(C["json"], {}, False, "")
    raw = c.from_connect("t", STRUCT, VALUE)
    doc = json.loads(raw)
    assert doc["schema"] == STRUCT
    assert doc["payload"] == {"id": 7, "name": "seven", "blob": "AAE=", "at": 1772366400000}
    assert c.to_connect("t", raw) == (STRUCT, VALUE)
    assert c.from_connect("t", None, None) is None          # a tombstone stays a tombstone
    with pytest.raises(DataException, match='requires "schema" and "payload"'):
        c.to_connect("t", b'{"id": 1}')


def test_json_converter_without_schemas_writes_plain_json():
    c = make_converter(C["json"], {"schemas.enable": "false"}, False, "")
    assert json.loads(c.from_connect("t", None, {"a": [1, 2]})) == {"a": [1, 2]}
    assert c.to_connect("t", b'{"a": 1}') == (None, {"a": 1})
    with pytest.raises(DataException, match="serialization error"):
        c.to_connect("t", b"{nope")


def test_a_converter_setting_it_does_not_know_is_refused_naming_it():
    with pytest.raises(ConfigException, match="schemas.enabled"):
        make_converter(C["json"], {"schemas.enabled": "false"}, False, "")
    with pytest.raises(ConfigException, match="no converter of that name"):
        make_converter("org.example.NoSuchConverter", {}, False, "")


def test_avro_converter_registers_the_schema_and_reads_records_back(conf):
    c = make_converter(C["avro"], {"schema.registry.url": conf["bootstrap.servers"]}, False, "")
    raw = c.from_connect("orders", STRUCT, VALUE)
    assert raw[0] == 0                                     # Confluent's wire format: magic byte, schema id
    schema, value = c.to_connect("orders", raw)
    assert value == VALUE
    assert [f["field"] for f in schema["fields"]] == ["id", "name", "blob", "at"]
    from shmlog.schema_registry import SchemaRegistryClient
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as registry:
        assert registry.get_subjects() == ["orders-value"]
    c.close()


def test_rows_copied_between_databases_through_avro_keep_their_values(conf, admin, tmp_path):
    create_topic(admin, "db-people", 1)
    src_url, dst_url = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    engine = sqlalchemy.create_engine(src_url)
    with engine.begin() as c:
        c.execute(sqlalchemy.text("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, born TIMESTAMP)"))
        for i in range(1, 21):
            c.execute(sqlalchemy.text("INSERT INTO people VALUES (:i, :n, :b)"),
                      {"i": i, "n": f"p{i}", "b": datetime.datetime(2000, 1, i, 6, 30)})
    engine.dispose()
    avro = {"value.converter": C["avro"], "value.converter.schema.registry.url": conf["bootstrap.servers"]}
    src = {"name": "src", "connector.class": "JdbcSourceConnector", "connection.url": src_url, "mode": "incrementing",
           "incrementing.column.name": "id", "table.whitelist": "people", "topic.prefix": "db-",
           "poll.interval.ms": "50", **avro}
    sink = {"name": "sink", "connector.class": "JdbcSinkConnector", "topics": "db-people", "connection.url": dst_url,
            "auto.create": "true", "table.name.format": "people_copy", **avro}
    dst = sqlalchemy.create_engine(dst_url)

    def copied():
        try:
            with dst.connect() as c:
                query = sqlalchemy.text("SELECT id, name, born FROM people_copy ORDER BY id")
                got = [tuple(r) for r in c.execute(query)]
        except sqlalchemy.exc.OperationalError:
            return None
        return got if len(got) == 20 else None
    with Worker(worker_props(conf), [src, sink]) as w:
        w.wait_running()
        assert read_topic(conf, "db-people", count=20)[0].value()[0] == 0
        got = wait_until(copied, "20 rows in people_copy")
    dst.dispose()
    assert [(i, n) for i, n, _ in got] == [(i, f"p{i}") for i in range(1, 21)]
    assert str(got[0][2]).startswith("2000-01-01 06:30:00")
