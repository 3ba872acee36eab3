"""JSON Schema through the schema registry (shmlog.schema_registry.json_schema) and
Confluent's protobuf helper files (shmlog.schema_registry.confluent), against a real broker."""
import json
import subprocess
import sys

import orjson
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import shmlog
from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog.schema_registry import Schema, SchemaReference, SchemaRegistryClient, SchemaRegistryError
from shmlog.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from shmlog.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from shmlog.serialization import MessageField, SerializationContext, SerializationError, ValueSerializationError


def json_schema(properties, required=(), title="Trade", **extra):
    return json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": title, "type": "object",
                       "properties": properties, "required": list(required), **extra})


TRADE = json_schema({"symbol": {"type": "string"}, "price": {"type": "number"},
                     "legs": {"type": "array", "items": {"type": "object", "properties": {
                         "px": {"type": "number"}, "qty": {"type": "integer", "minimum": 1}}}}},
                    required=["symbol", "price"])
VALUE = SerializationContext("trades", MessageField.VALUE)


@pytest.fixture
def registry(conf):
    sr = SchemaRegistryClient({"url": conf["bootstrap.servers"]})
    yield sr
    sr.close()


def test_json_records_round_trip_in_confluents_wire_format(registry):
    data = JSONSerializer(TRADE, registry)({"symbol": "AAPL", "price": 189.5}, VALUE)
    schema_id = registry.get_latest_version("trades-value").schema_id
    assert data == b"\x00" + schema_id.to_bytes(4, "big") + b'{"symbol":"AAPL","price":189.5}'
    assert JSONDeserializer(None, schema_registry_client=registry)(data, VALUE) == {"symbol": "AAPL", "price": 189.5}


def test_the_schema_is_registered_with_schema_type_json_in_the_schemas_topic(conf, registry):
    JSONSerializer(TRADE, registry)({"symbol": "AAPL", "price": 1.0}, VALUE)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition("_schemas", 0, OFFSET_BEGINNING)])
    try:
        msg = c.poll(10)
        assert orjson.loads(msg.value())["schemaType"] == "JSON"
    finally:
        c.close()


def test_a_value_of_the_wrong_type_names_the_field_and_the_failed_keyword(registry):
    with pytest.raises(SerializationError) as info:
        JSONSerializer(TRADE, registry)({"symbol": "AAPL", "price": "high"}, VALUE)
    assert info.value.field == "price"
    assert "'high' is not of type 'number'" in str(info.value) and "properties/price/type" in str(info.value)
    assert "value of topic 'trades'" in str(info.value)


def test_a_nested_failure_names_the_path_into_the_value(registry):
    value = {"symbol": "AAPL", "price": 1.0, "legs": [{"px": 1.0, "qty": 1}, {"px": 2.0, "qty": 0}]}
    with pytest.raises(SerializationError) as info:
        JSONSerializer(TRADE, registry)(value, VALUE)
    assert info.value.field == "legs[1].qty" and "less than the minimum of 1" in str(info.value)


def test_a_missing_required_property_is_named(registry):
    with pytest.raises(SerializationError) as info:
        JSONSerializer(TRADE, registry)({"symbol": "AAPL"}, VALUE)
    assert info.value.field == "price" and "'price' is a required property" in str(info.value)


def test_validation_can_be_turned_off_as_in_confluent_kafka(registry):
    data = JSONSerializer(TRADE, registry, conf={"validate": False})({"symbol": 1}, VALUE)
    assert data.endswith(b'{"symbol":1}')


def test_the_deserializer_validates_against_its_reader_schema(registry):
    data = JSONSerializer(json_schema({"symbol": {"type": "string"}}), registry)({"symbol": "AAPL"}, VALUE)
    with pytest.raises(SerializationError, match="'price' is a required property"):
        JSONDeserializer(TRADE, schema_registry_client=registry)(data, VALUE)


def test_the_deserializer_needs_no_registry_when_given_the_schema(registry):
    data = JSONSerializer(TRADE, registry)({"symbol": "AAPL", "price": 2.0}, VALUE)
    assert JSONDeserializer(TRADE)(data, VALUE) == {"symbol": "AAPL", "price": 2.0}


def test_bytes_that_are_not_json_after_the_header_raise_a_serialization_error():
    with pytest.raises(SerializationError, match="not JSON"):
        JSONDeserializer(TRADE)(b"\x00\x00\x00\x00\x01{oops", VALUE)


def test_an_invalid_json_schema_is_refused_when_the_serializer_is_made(registry):
    with pytest.raises(SerializationError, match="Invalid schema"):
        JSONSerializer(json.dumps({"type": "object", "properties": {"x": {"type": "strang"}}}), registry)


def test_the_record_name_for_subject_strategies_is_the_schemas_title(registry):
    from shmlog.schema_registry import record_subject_name_strategy
    ser = JSONSerializer(TRADE, registry, conf={"subject.name.strategy": record_subject_name_strategy})
    ser({"symbol": "AAPL", "price": 1.0}, VALUE)
    assert registry.get_subjects() == ["Trade"]


def test_without_auto_register_an_unregistered_schema_is_a_40401(registry):
    ser = JSONSerializer(TRADE, registry, conf={"auto.register.schemas": False})
    with pytest.raises(SchemaRegistryError) as info:
        ser({"symbol": "AAPL", "price": 1.0}, VALUE)
    assert info.value.error_code == 40401


def test_use_latest_version_writes_with_the_subjects_latest_schema(registry):
    registry.register_schema("trades-value", Schema(TRADE, "JSON"))
    ser = JSONSerializer(None, registry, conf={"auto.register.schemas": False, "use.latest.version": True})
    data = ser({"symbol": "AAPL", "price": 1.0}, VALUE)
    assert data[1:5] == registry.get_latest_version("trades-value").schema_id.to_bytes(4, "big")
    with pytest.raises(SerializationError, match="required property"):
        ser({"symbol": "AAPL"}, VALUE)


def test_a_schema_may_reference_another_subjects_schema_by_name(registry):
    money = json.dumps({"type": "object", "properties": {"amount": {"type": "number"},
                                                         "currency": {"type": "string", "maxLength": 3}},
                        "required": ["amount", "currency"]})
    registry.register_schema("money", Schema(money, "JSON"))
    order = Schema(json_schema({"total": {"$ref": "money.json"}}, required=["total"], title="Order"), "JSON",
                   [SchemaReference("money.json", "money", 1)])
    ser = JSONSerializer(order, registry)
    data = ser({"total": {"amount": 5, "currency": "EUR"}}, VALUE)
    assert JSONDeserializer(None, schema_registry_client=registry)(data, VALUE)["total"]["currency"] == "EUR"
    with pytest.raises(SerializationError) as info:
        ser({"total": {"amount": 5, "currency": "EURO"}}, VALUE)
    assert info.value.field == "total.currency"


def test_a_serializing_producer_reports_an_invalid_value_as_a_value_serialization_error(conf, registry, topic):
    p = shmlog.SerializingProducer({**conf, "value.serializer": JSONSerializer(TRADE, registry)})
    try:
        with pytest.raises(ValueSerializationError) as info:
            p.produce(topic, value={"symbol": "AAPL", "price": None})
        assert info.value.exception.field == "price"
    finally:
        p.close()


def test_an_incompatible_json_schema_change_is_refused_with_the_reason(registry):
    registry.register_schema("trades-value", Schema(TRADE, "JSON"))
    stricter = json.loads(TRADE)
    stricter["required"] = ["symbol", "price", "legs"]
    with pytest.raises(SchemaRegistryError) as info:
        registry.register_schema("trades-value", Schema(json.dumps(stricter), "JSON"))
    assert info.value.http_status_code == 409 and "Trade.legs: required by the reader" in info.value.error_message


def test_dropping_a_required_property_is_a_backward_compatible_json_change(registry):
    registry.register_schema("trades-value", Schema(TRADE, "JSON"))
    looser = json.loads(TRADE)
    looser["required"] = ["symbol"]
    assert registry.register_schema_full_response("trades-value", Schema(json.dumps(looser), "JSON")).version == 2


def test_the_cli_registers_and_shows_a_json_schema(broker, data_dir):
    run = [sys.executable, "-m", "shmlog.cli", "schemas"]
    out = subprocess.run(run + ["register", "trades-value", "--type", "JSON", "--schema", TRADE, "--data-dir",
                                data_dir], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("registered trades-value version 1 id "), out.stderr
    shown = subprocess.run(run + ["get", "trades-value", "--data-dir", data_dir], capture_output=True, text=True,
                           timeout=60)
    assert "type JSON" in shown.stdout and json.loads(shown.stdout.split("\n", 1)[1]) == json.loads(TRADE)


# ---------------------------------------------------------------------------- Confluent's protobuf files

def test_confluents_meta_and_decimal_protos_import_from_shmlog():
    from shmlog.schema_registry.confluent import meta_pb2
    from shmlog.schema_registry.confluent.type import decimal_pb2
    meta = meta_pb2.Meta(doc="price in USD", tags=["PII"], params={"unit": "USD"})
    assert meta_pb2.Meta.FromString(meta.SerializeToString()) == meta
    assert decimal_pb2.Decimal(value=b"\x04\xd2", precision=4, scale=2).scale == 2
    assert meta_pb2.field_meta.number == 1088 and meta_pb2.DESCRIPTOR.name == "confluent/meta.proto"


def test_confluents_protobuf_files_are_byte_for_byte_those_of_confluent_kafka():
    theirs = pytest.importorskip("confluent_kafka.schema_registry.confluent.meta_pb2")
    their_decimal = pytest.importorskip("confluent_kafka.schema_registry.confluent.type.decimal_pb2")
    from shmlog.schema_registry.confluent import meta_pb2
    from shmlog.schema_registry.confluent.type import decimal_pb2
    assert meta_pb2.DESCRIPTOR.serialized_pb == theirs.DESCRIPTOR.serialized_pb
    assert decimal_pb2.DESCRIPTOR.serialized_pb == their_decimal.DESCRIPTOR.serialized_pb


def _tagged_quote_class():
    """A message whose field carries Confluent's field_meta option, as protoc generates from
    `import "confluent/meta.proto"; string owner = 2 [(confluent.field_meta).tags = "PII"];`"""
    from shmlog.schema_registry.confluent import meta_pb2
    fdp = descriptor_pb2.FileDescriptorProto(name="tagged_quote.proto", package="tagged", syntax="proto3",
                                             dependency=["confluent/meta.proto"])
    msg = fdp.message_type.add(name="Quote")
    msg.field.add(name="symbol", number=1, type=9, label=1)
    owner = msg.field.add(name="owner", number=2, type=9, label=1)
    owner.options.Extensions[meta_pb2.field_meta].tags.append("PII")
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(fdp.name)
    except KeyError:
        pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tagged.Quote"))


def test_a_message_tagged_with_confluent_field_meta_registers_without_referencing_confluents_file(registry):
    from shmlog.schema_registry.confluent import meta_pb2
    quote = _tagged_quote_class()
    data = ProtobufSerializer(quote, registry)(quote(symbol="AAPL", owner="jane"), VALUE)
    assert ProtobufDeserializer(quote, schema_registry_client=registry)(data, VALUE).owner == "jane"
    assert registry.get_subjects() == ["trades-value"]
    latest = registry.get_latest_version("trades-value").schema
    assert latest.references == []
    from shmlog.schema_registry.protobuf import parse_protobuf
    field = parse_protobuf(latest.schema_str).message_type[0].field[1]
    assert list(field.options.Extensions[meta_pb2.field_meta].tags) == ["PII"]
