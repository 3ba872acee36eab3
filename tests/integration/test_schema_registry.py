"""The schema registry in the `_schemas` topic, the Avro/Protobuf serializers through it,
SerializingProducer/DeserializingConsumer, and `shmlog schemas`, against a real broker."""
import json
import multiprocessing
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import shmlog
from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from shmlog.schema_registry.avro import AvroDeserializer, AvroSerializer
from shmlog.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from shmlog.serialization import (
    IntegerDeserializer,
    IntegerSerializer,
    MessageField,
    NumpyDeserializer,
    NumpySerializer,
    SerializationContext,
    StringDeserializer,
    StringSerializer,
    ValueDeserializationError,
    ValueSerializationError,
)

SPAWN = multiprocessing.get_context("spawn")
REPO = Path(__file__).resolve().parents[2]


def avro(*fields, name="Trade"):
    return json.dumps({"type": "record", "name": name, "namespace": "demo", "fields": list(fields)})


V1 = avro({"name": "symbol", "type": "string"}, {"name": "price", "type": "double"})
V2 = avro({"name": "symbol", "type": "string"}, {"name": "price", "type": "double"},
          {"name": "qty", "type": "int", "default": 0})
NO_DEFAULT = avro({"name": "symbol", "type": "string"}, {"name": "price", "type": "double"},
                  {"name": "venue", "type": "string"})


@pytest.fixture
def registry(conf):
    sr = SchemaRegistryClient({"url": conf["bootstrap.servers"]})
    yield sr
    sr.close()


def read_one(consumer_conf, topic, consumer_cls=shmlog.DeserializingConsumer):
    c = consumer_cls(consumer_conf)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    try:
        msg = c.poll(10)
        assert msg is not None
        return msg
    finally:
        c.close()


# ---------------------------------------------------------------------- Protobuf message classes

T = descriptor_pb2.FieldDescriptorProto


def protobuf_classes(qty_type=T.TYPE_INT64):
    """demo.Trade (symbol, price, qty, legs: repeated Leg) and demo.Leg in trade.proto, which
    imports common.proto (demo.Venue); built as protoc-generated modules would be."""
    common = descriptor_pb2.FileDescriptorProto(name="demo/common.proto", package="demo", syntax="proto3")
    common.message_type.add(name="Venue").field.add(name="mic", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    trade = descriptor_pb2.FileDescriptorProto(name="demo/trade.proto", package="demo", syntax="proto3",
                                               dependency=["demo/common.proto"])
    m = trade.message_type.add(name="Trade")
    m.field.add(name="symbol", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    m.field.add(name="price", number=2, type=T.TYPE_DOUBLE, label=T.LABEL_OPTIONAL)
    m.field.add(name="qty", number=3, type=qty_type, label=T.LABEL_OPTIONAL)
    m.field.add(name="legs", number=4, type=T.TYPE_MESSAGE, label=T.LABEL_REPEATED, type_name=".demo.Leg")
    leg = trade.message_type.add(name="Leg")
    leg.field.add(name="venue", number=1, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL, type_name=".demo.Venue")
    leg.field.add(name="px", number=2, type=T.TYPE_DOUBLE, label=T.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(common)
    pool.Add(trade)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("demo.Trade")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("demo.Leg")))


def proto2_with_required():
    f = descriptor_pb2.FileDescriptorProto(name="order.proto", package="demo", syntax="proto2")
    m = f.message_type.add(name="Order")
    m.field.add(name="id", number=1, type=T.TYPE_INT64, label=T.LABEL_REQUIRED)
    m.field.add(name="note", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("demo.Order"))


# ---------------------------------------------------------------------- registry

def test_registering_returns_an_id_and_the_same_schema_again_returns_the_same_id(registry):
    first = registry.register_schema("trades-value", Schema(V1))
    assert registry.register_schema("trades-value", Schema(V1)) == first
    assert registry.get_versions("trades-value") == [1]


def test_the_same_schema_under_another_subject_shares_its_id(registry):
    assert registry.register_schema("a-value", Schema(V1)) == registry.register_schema("b-value", Schema(V1))


def test_compatible_versions_are_numbered_in_order(registry):
    id1 = registry.register_schema("trades-value", Schema(V1))
    id2 = registry.register_schema("trades-value", Schema(V2))
    latest = registry.get_latest_version("trades-value")
    assert (latest.version, latest.schema_id, latest.schema) == (2, id2, Schema(V2))
    assert registry.get_version("trades-value", 1).schema_id == id1
    assert registry.get_subjects() == ["trades-value"]
    assert registry.get_schema(id1) == Schema(V1)


def test_an_incompatible_schema_is_refused_with_the_reason(registry):
    registry.register_schema("trades-value", Schema(V1))
    with pytest.raises(SchemaRegistryError) as exc:
        registry.register_schema("trades-value", Schema(NO_DEFAULT))
    assert exc.value.http_status_code == 409
    assert "Trade.venue" in str(exc.value) and "no default" in str(exc.value) and "BACKWARD" in str(exc.value)
    assert registry.get_versions("trades-value") == [1]


def test_forward_compatibility_lets_the_old_schema_read_new_data(registry):
    registry.set_compatibility("trades-value", "FORWARD")
    registry.register_schema("trades-value", Schema(V1))
    assert registry.test_compatibility("trades-value", Schema(NO_DEFAULT))  # old reader ignores venue
    dropped = avro({"name": "symbol", "type": "string"})
    assert not registry.test_compatibility("trades-value", Schema(dropped))  # old reader needs price
    assert "price" in " ".join(registry.check_compatibility("trades-value", Schema(dropped)))


def test_full_compatibility_needs_both_directions(registry):
    registry.set_compatibility("trades-value", "FULL")
    registry.register_schema("trades-value", Schema(V1))
    assert registry.test_compatibility("trades-value", Schema(V2))
    assert not registry.test_compatibility("trades-value", Schema(NO_DEFAULT))


def test_compatibility_none_accepts_any_schema(registry):
    registry.set_compatibility("trades-value", "NONE")
    registry.register_schema("trades-value", Schema(V1))
    registry.register_schema("trades-value", Schema(avro({"name": "x", "type": "int"}, name="Other")))
    assert registry.get_versions("trades-value") == [1, 2]


def test_a_transitive_level_checks_every_version(registry):
    registry.set_compatibility("trades-value", "BACKWARD")
    registry.register_schema("trades-value", Schema(V1))
    registry.register_schema("trades-value", Schema(V2))
    only_qty = avro({"name": "symbol", "type": "string"}, {"name": "price", "type": "double"},
                    {"name": "qty", "type": "int"})  # reads v2 data (has qty), not v1 data
    assert registry.test_compatibility("trades-value", Schema(only_qty))
    registry.set_compatibility("trades-value", "BACKWARD_TRANSITIVE")
    assert not registry.test_compatibility("trades-value", Schema(only_qty), version=None)


def test_the_global_default_is_backward_and_can_be_changed(registry):
    assert registry.get_compatibility() == "BACKWARD"
    registry.set_compatibility(None, "FULL")
    assert registry.get_compatibility("any-subject") == "FULL"


def test_an_unparsable_schema_is_refused(registry):
    with pytest.raises(SchemaRegistryError) as exc:
        registry.register_schema("x-value", Schema(avro({"name": "a", "type": "Nope"}, name="X")))
    assert exc.value.http_status_code == 422 and "Nope" in str(exc.value)


def test_unknown_subjects_versions_and_ids_are_404s(registry):
    registry.register_schema("trades-value", Schema(V1))
    for call in (lambda: registry.get_latest_version("nope"), lambda: registry.get_version("trades-value", 9),
                 lambda: registry.get_schema(999)):
        with pytest.raises(SchemaRegistryError) as exc:
            call()
        assert exc.value.http_status_code == 404


def test_a_deleted_subject_disappears_and_a_permanent_delete_needs_a_soft_one_first(registry):
    registry.register_schema("trades-value", Schema(V1))
    with pytest.raises(SchemaRegistryError):
        registry.delete_subject("trades-value", permanent=True)
    assert registry.delete_subject("trades-value") == [1]
    assert registry.get_subjects() == []
    assert registry.delete_subject("trades-value", permanent=True) == [1]
    registry.register_schema("trades-value", Schema(NO_DEFAULT))  # nothing left to be compatible with
    assert registry.get_versions("trades-value") == [1]


def test_lookup_finds_a_registered_schema_under_its_subject(registry):
    registry.register_schema("trades-value", Schema(V1))
    found = registry.lookup_schema("trades-value", Schema(V1))
    assert (found.subject, found.version) == ("trades-value", 1)


def test_the_registry_lives_in_the_compacted_schemas_topic_in_confluents_record_format(conf, admin, registry):
    schema_id = registry.register_schema("trades-value", Schema(V1))
    res = shmlog.ConfigResource("topic", "_schemas")
    assert admin.describe_configs([res])[res].result()["cleanup.policy"].value in (["compact"], "compact")
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition("_schemas", 0, OFFSET_BEGINNING)])
    [msg] = c.consume(10, 5)
    c.close()
    assert orjson.loads(msg.key()) == {"keytype": "SCHEMA", "subject": "trades-value", "version": 1, "magic": 1}
    assert orjson.loads(msg.value()) == {"subject": "trades-value", "version": 1, "id": schema_id, "schema": V1,
                                         "deleted": False}


def test_a_new_client_replays_what_others_registered(conf, registry):
    registry.register_schema("trades-value", Schema(V1))
    registry.set_compatibility("trades-value", "FULL")
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as other:
        assert other.get_latest_version("trades-value").schema == Schema(V1)
        assert other.get_compatibility("trades-value") == "FULL"
        other.register_schema("trades-value", Schema(V2))
    assert registry.get_versions("trades-value") == [1, 2]  # the first client catches up


def test_the_registry_survives_a_broker_restart(data_dir):
    with shmlog.Broker(data_dir) as b:
        with SchemaRegistryClient({"url": b.bootstrap_servers}) as sr:
            schema_id = sr.register_schema("trades-value", Schema(V1))
    with shmlog.Broker(data_dir) as b:
        with SchemaRegistryClient({"url": b.bootstrap_servers}) as sr:
            assert sr.get_latest_version("trades-value").schema_id == schema_id


def _register_many(bootstrap, worker, n, out):
    with SchemaRegistryClient({"url": bootstrap}) as sr:
        ids = [sr.register_schema("shared-value", Schema(avro({"name": f"w{worker}_{i}", "type": "int"})))
               for i in range(n)]
    out.put(ids)


def test_concurrent_registrations_from_processes_get_unique_ids_and_dense_versions(conf, registry):
    registry.set_compatibility("shared-value", "NONE")
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=_register_many, args=(conf["bootstrap.servers"], w, 8, out)) for w in range(3)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in out.get(timeout=120)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(set(ids)) == 24
    assert registry.get_versions("shared-value") == list(range(1, 25))
    assert sorted(registry.get_version("shared-value", v).schema_id for v in range(1, 25)) == sorted(ids)


# ---------------------------------------------------------------------- Avro serializers

def test_avro_records_round_trip_in_confluents_wire_format(conf, registry):
    p = shmlog.SerializingProducer({**conf, "key.serializer": StringSerializer(),
                                    "value.serializer": AvroSerializer(registry, V1)})
    p.produce("trades", key="AAPL", value={"symbol": "AAPL", "price": 189.5})
    p.flush(10)
    p.close()
    raw = read_one(conf, "trades", shmlog.Consumer)
    schema_id = registry.get_latest_version("trades-value").schema_id
    assert raw.value()[:5] == struct.pack(">bI", 0, schema_id)
    msg = read_one({**conf, "key.deserializer": StringDeserializer(),
                    "value.deserializer": AvroDeserializer(registry)}, "trades")
    assert (msg.key(), msg.value()) == ("AAPL", {"symbol": "AAPL", "price": 189.5})


def test_an_avro_reader_schema_resolves_records_written_with_an_older_schema(conf, registry):
    p = shmlog.SerializingProducer({**conf, "value.serializer": AvroSerializer(registry, V1)})
    p.produce("trades", value={"symbol": "MSFT", "price": 1.0})
    p.close()
    msg = read_one({**conf, "value.deserializer": AvroDeserializer(registry, V2)}, "trades")
    assert msg.value() == {"symbol": "MSFT", "price": 1.0, "qty": 0}


def test_an_avro_value_that_fails_to_serialize_names_the_field(conf, registry):
    p = shmlog.SerializingProducer({**conf, "value.serializer": AvroSerializer(registry, V1)})
    with pytest.raises(ValueSerializationError) as exc:
        p.produce("trades", value={"symbol": "AAPL", "price": "cheap"})
    assert exc.value.field == "demo.Trade.price"
    assert "demo.Trade.price" in str(exc.value) and "'cheap'" in str(exc.value)
    assert len(p) == 0
    p.close()


def test_a_producer_with_an_incompatible_schema_is_refused_with_the_reason(conf, registry):
    registry.register_schema("trades-value", Schema(V1))
    p = shmlog.SerializingProducer({**conf, "value.serializer": AvroSerializer(registry, NO_DEFAULT)})
    with pytest.raises(ValueSerializationError, match="incompatible.*venue"):
        p.produce("trades", value={"symbol": "A", "price": 1.0, "venue": "XNAS"})
    p.close()


def test_avro_without_auto_register_needs_the_schema_registered(conf, registry):
    ser = AvroSerializer(registry, V1, conf={"auto.register.schemas": False})
    with pytest.raises(SchemaRegistryError):
        ser({"symbol": "A", "price": 1.0}, SerializationContext("trades", MessageField.VALUE))
    registry.register_schema("trades-value", Schema(V1))
    assert ser({"symbol": "A", "price": 1.0}, SerializationContext("trades", MessageField.VALUE))[0] == 0


def test_data_not_in_the_wire_format_raises_a_value_deserialization_error(conf, registry):
    p = shmlog.Producer(conf)
    p.produce("trades", value=b"plain bytes")
    p.close()
    c = shmlog.DeserializingConsumer({**conf, "value.deserializer": AvroDeserializer(registry)})
    c.assign([TopicPartition("trades", 0, OFFSET_BEGINNING)])
    with pytest.raises(ValueDeserializationError) as exc:
        c.poll(10)
    assert exc.value.kafka_message.offset() == 0 and "magic byte" in str(exc.value)
    c.close()


# ---------------------------------------------------------------------- Protobuf serializers

def test_protobuf_messages_round_trip_with_their_imports_registered_as_references(conf, registry):
    Trade, Leg = protobuf_classes()
    ser = ProtobufSerializer(Trade, registry)
    p = shmlog.SerializingProducer({**conf, "value.serializer": ser})
    trade = Trade(symbol="NVDA", price=900.5, qty=3, legs=[Leg(px=1.5)])
    p.produce("trades", value=trade)
    p.close()
    assert registry.get_subjects() == ["demo/common.proto", "trades-value"]
    [ref] = registry.get_latest_version("trades-value").schema.references
    assert (ref.name, ref.subject, ref.version) == ("demo/common.proto", "demo/common.proto", 1)
    msg = read_one({**conf, "value.deserializer": ProtobufDeserializer(Trade)}, "trades")
    assert msg.value() == trade


def test_protobuf_wire_format_carries_the_message_index(conf, registry):
    Trade, Leg = protobuf_classes()
    ctx = SerializationContext("legs", MessageField.VALUE)
    data = ProtobufSerializer(Leg, registry)(Leg(px=2.0), ctx)
    schema_id = registry.get_latest_version("legs-value").schema_id
    assert data[:7] == struct.pack(">bI", 0, schema_id) + b"\x02\x02"  # Leg is message 1 of its file
    assert ProtobufDeserializer(Leg)(data, ctx) == Leg(px=2.0)


def test_a_protobuf_dict_with_a_mistyped_field_names_the_field(conf, registry):
    Trade, _ = protobuf_classes()
    p = shmlog.SerializingProducer({**conf, "value.serializer": ProtobufSerializer(Trade, registry)})
    with pytest.raises(ValueSerializationError) as exc:
        p.produce("trades", value={"symbol": "A", "price": "cheap"})
    assert exc.value.field == "price"
    p.close()


def test_a_proto2_message_missing_a_required_field_names_it(registry):
    Order = proto2_with_required()
    with pytest.raises(Exception) as exc:
        ProtobufSerializer(Order, registry)(Order(note="x"), SerializationContext("orders", MessageField.VALUE))
    assert getattr(exc.value, "field", None) == "id" and "id" in str(exc.value)


def test_an_incompatible_protobuf_change_is_refused_with_the_reason(registry):
    Trade, _ = protobuf_classes()
    ProtobufSerializer(Trade, registry)(Trade(symbol="A"), SerializationContext("trades", MessageField.VALUE))
    Changed, _ = protobuf_classes(qty_type=T.TYPE_STRING)
    with pytest.raises(SchemaRegistryError, match=r"demo\.Trade\.qty \(field 3\): type changed from int64 to string"):
        ProtobufSerializer(Changed, registry)(Changed(symbol="A"), SerializationContext("trades", MessageField.VALUE))


# ---------------------------------------------------------------------- plain serializers through the clients

def test_integer_keys_and_string_values_go_through_the_serializing_clients(conf):
    p = shmlog.SerializingProducer({**conf, "key.serializer": IntegerSerializer(),
                                    "value.serializer": StringSerializer()})
    p.produce("trades", key=42, value="forty-two")
    p.close()
    raw = read_one(conf, "trades", shmlog.Consumer)
    assert raw.key() == b"\x00\x00\x00\x2a"
    msg = read_one({**conf, "key.deserializer": IntegerDeserializer(),
                    "value.deserializer": StringDeserializer()}, "trades")
    assert (msg.key(), msg.value()) == (42, "forty-two")


def test_a_deserializing_consumer_refuses_batch_consumption_as_confluent_kafka_does(conf):
    c = shmlog.DeserializingConsumer({**conf, "value.deserializer": StringDeserializer()})
    with pytest.raises(NotImplementedError):
        c.consume(10, 0)
    c.close()


def test_numpy_values_deserialize_as_views_into_shared_memory(conf, topic):
    p = shmlog.SerializingProducer({**conf, "value.serializer": NumpySerializer()})
    frames = [np.full((4, 4), i, dtype=np.float32) for i in range(3)]
    for frame in frames:
        p.produce(topic, value=frame, partition=0)
    p.close()
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    view = c.consume_batch(timeout=10)
    assert view.zero_copy
    ring = np.frombuffer(view.buffer, np.uint8)
    arrays = [NumpyDeserializer()(v) for v in view.values()]
    for array, frame in zip(arrays, frames):
        np.testing.assert_array_equal(array, frame)
        assert np.shares_memory(array, ring)
    del arrays, ring, view
    c.close()


# ---------------------------------------------------------------------- CLI

def cli(data_dir, *args):
    return subprocess.run([sys.executable, "-m", "shmlog.cli", "schemas", *args, "--data-dir", data_dir],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_the_cli_registers_lists_and_shows_schemas(broker, data_dir):
    out = cli(data_dir, "register", "trades-value", "--schema", V1)
    assert out.returncode == 0 and out.stdout.strip() == "registered trades-value version 1 id 1", out.stderr
    listed = cli(data_dir, "list").stdout.splitlines()
    assert listed[0].split() == ["SUBJECT", "VERSIONS", "LATEST-ID", "TYPE", "COMPATIBILITY"]
    assert listed[1].split() == ["trades-value", "1", "1", "AVRO", "BACKWARD"]
    shown = cli(data_dir, "get", "trades-value")
    assert shown.stdout.splitlines()[0] == "subject trades-value  version 1  id 1  type AVRO"
    assert json.loads("\n".join(shown.stdout.splitlines()[1:])) == json.loads(V1)


def test_the_cli_refuses_an_incompatible_schema_with_the_reason(broker, data_dir, tmp_path):
    assert cli(data_dir, "register", "trades-value", "--schema", V1).returncode == 0
    schema_file = tmp_path / "v3.avsc"
    schema_file.write_text(NO_DEFAULT)
    check = cli(data_dir, "compatibility", "trades-value", "--schema-file", str(schema_file))
    assert check.returncode == 1 and "Trade.venue" in check.stderr and "incompatible (BACKWARD)" in check.stderr
    refused = cli(data_dir, "register", "trades-value", "--schema-file", str(schema_file))
    assert refused.returncode == 1 and "incompatible" in refused.stderr
    assert cli(data_dir, "compatibility", "trades-value", "--schema", V2).stdout.strip() == "compatible (BACKWARD)"


def test_the_cli_sets_and_shows_a_subjects_compatibility_level(broker, data_dir):
    assert cli(data_dir, "compatibility", "trades-value", "--set", "full").returncode == 0
    assert cli(data_dir, "compatibility", "trades-value").stdout.strip() == "FULL"
    assert cli(data_dir, "compatibility", "-").stdout.strip() == "BACKWARD"


def test_the_cli_registers_a_protobuf_descriptor_set(broker, data_dir, tmp_path):
    Trade, _ = protobuf_classes()
    fds = descriptor_pb2.FileDescriptorSet()
    Trade.DESCRIPTOR.file.dependencies[0].CopyToProto(fds.file.add())
    Trade.DESCRIPTOR.file.CopyToProto(fds.file.add())
    path = tmp_path / "trade.desc"
    path.write_bytes(fds.SerializeToString())
    out = cli(data_dir, "register", "trades-value", "--type", "PROTOBUF", "--schema-file", str(path))
    assert out.returncode == 0, out.stderr
    assert "type PROTOBUF" in cli(data_dir, "get", "trades-value").stdout
