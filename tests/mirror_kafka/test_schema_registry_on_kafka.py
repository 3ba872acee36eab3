"""shmlog's SchemaRegistryClient with url = a Kafka cluster's host:port: the registry lives in
that cluster's `_schemas`-style topic, every client replays it, and writers exclude each other
through a transactional.id, so a write that loses a race writes nothing."""
import pytest

from shmlog import clients
from shmlog.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from shmlog.schema_registry.avro import AvroDeserializer, AvroSerializer

V1 = '{"type": "record", "name": "Trade", "fields": [{"name": "id", "type": "string"}]}'
V2 = ('{"type": "record", "name": "Trade", "fields": [{"name": "id", "type": "string"}, '
      '{"name": "venue", "type": "string", "default": "XNYS"}]}')
BREAKING = '{"type": "record", "name": "Trade", "fields": [{"name": "id", "type": "long"}]}'


def test_schemas_registered_through_one_client_are_seen_by_another_on_a_kafka_cluster(kafka):
    conf = {"url": kafka.bootstrap, "topic": kafka.name("_schemas")}
    with SchemaRegistryClient(conf) as a:
        first = a.register_schema("trades-value", Schema(V1, "AVRO"))
        second = a.register_schema("trades-value", Schema(V2, "AVRO"))
        with pytest.raises(SchemaRegistryError) as refused:
            a.register_schema("trades-value", Schema(BREAKING, "AVRO"))
        assert refused.value.http_status_code == 409
    with SchemaRegistryClient(conf) as b:
        assert b.get_versions("trades-value") == [1, 2]
        assert b.get_latest_version("trades-value").schema_id == second != first
        assert b.get_schema(first).schema_str == V1


def test_avro_through_a_registry_on_the_kafka_cluster_reads_back(kafka):
    topic = kafka.name("trades")
    lib = clients.library(kafka.conf)
    admin = clients.AdminClient(kafka.conf)
    admin.create_topics([lib.NewTopic(topic, 1)])[topic].result()
    with SchemaRegistryClient({"url": kafka.bootstrap, "topic": kafka.name("_schemas")}) as registry:
        p = clients.SerializingProducer({**kafka.conf, "value.serializer": AvroSerializer(registry, V2)})
        p.produce(topic, value={"id": "t-1", "venue": "XLON"})
        assert p.flush(30) == 0
        c = clients.DeserializingConsumer({**kafka.conf, "group.id": kafka.name("g"),
                                           "value.deserializer": AvroDeserializer(registry)})
        c.assign([lib.TopicPartition(topic, 0, lib.OFFSET_BEGINNING)])
        msg = c.poll(15)
        c.close()
    assert msg is not None and msg.value() == {"id": "t-1", "venue": "XLON"}


def test_a_write_that_loses_a_race_to_another_client_writes_nothing(kafka):
    conf = {"url": kafka.bootstrap, "topic": kafka.name("_schemas")}
    with SchemaRegistryClient(conf) as a, SchemaRegistryClient(conf) as b:
        with a._write_lock():                       # a checked the registry and is about to write ...
            b.register_schema("orders-value", Schema(V1, "AVRO"))   # ... when b takes the lock and writes
            with pytest.raises(SchemaRegistryError, match="another client wrote"):
                a._append(b'{"keytype":"SCHEMA","subject":"orders-value","version":1,"magic":1}', b"{}")
        a.register_schema("orders-value", Schema(V2, "AVRO"))      # retried: sees b's version 1
        assert a.get_versions("orders-value") == [1, 2]
    with SchemaRegistryClient(conf) as c:
        assert [c.get_version("orders-value", v).schema.schema_str for v in (1, 2)] == [V1, V2]
