"""Serializers (Kafka's byte layouts), the NumPy serializer, the Confluent wire-format
helpers, and the Avro/Protobuf compatibility rules: all in-process, no broker.

The Avro rules are checked against fastavro itself: for every pair, a record written with
the writer's schema is read with the reader's schema through fastavro's schema resolution,
and that must succeed exactly when the registry calls the pair compatible.
"""
import io
import json

import fastavro
import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from shmlog.schema_registry.avro import avro_incompatibilities, parse_avro
from shmlog.schema_registry.protobuf import (
    encode_message_indexes,
    protobuf_incompatibilities,
)
from shmlog.serialization import (
    DoubleDeserializer,
    DoubleSerializer,
    IntegerDeserializer,
    IntegerSerializer,
    JSONDeserializer,
    JSONSerializer,
    LongDeserializer,
    LongSerializer,
    MessageField,
    NumpyDeserializer,
    NumpySerializer,
    SerializationContext,
    SerializationError,
    StringDeserializer,
    StringSerializer,
)

VALUE = SerializationContext("trades", MessageField.VALUE)
KEY = SerializationContext("trades", MessageField.KEY)


# ---------------------------------------------------------------------- Kafka's encodings

@pytest.mark.parametrize("serializer, obj, data", [
    (IntegerSerializer(), 1, b"\x00\x00\x00\x01"),
    (IntegerSerializer(), -1, b"\xff\xff\xff\xff"),
    (IntegerSerializer(), 2**31 - 1, b"\x7f\xff\xff\xff"),
    (LongSerializer(), 1, b"\x00" * 7 + b"\x01"),
    (LongSerializer(), -2, b"\xff" * 7 + b"\xfe"),
    (DoubleSerializer(), 1.5, b"\x3f\xf8" + b"\x00" * 6),
    (DoubleSerializer(), -0.0, b"\x80" + b"\x00" * 7),
    (StringSerializer(), "héllo", "héllo".encode("utf-8")),
    (StringSerializer("utf_16_be"), "hi", b"\x00h\x00i"),
])
def test_serializers_write_kafkas_java_byte_layouts(serializer, obj, data):
    assert serializer(obj, VALUE) == data


@pytest.mark.parametrize("serializer, deserializer, obj", [
    (IntegerSerializer(), IntegerDeserializer(), -123456),
    (LongSerializer(), LongDeserializer(), 2**62 + 5),
    (DoubleSerializer(), DoubleDeserializer(), 3.14159),
    (StringSerializer(), StringDeserializer(), "naïve ✓"),
    (JSONSerializer(), JSONDeserializer(), {"a": [1, 2.5, None, "x"], "b": {"c": True}}),
])
def test_each_deserializer_reads_back_what_its_serializer_wrote(serializer, deserializer, obj):
    assert deserializer(serializer(obj, VALUE), VALUE) == obj


@pytest.mark.parametrize("serializer", [IntegerSerializer(), LongSerializer(), DoubleSerializer(),
                                        StringSerializer(), JSONSerializer(), NumpySerializer()])
def test_none_serializes_to_a_null_and_back(serializer):
    assert serializer(None, VALUE) is None


def test_an_integer_out_of_32_bit_range_is_refused_naming_the_key():
    with pytest.raises(SerializationError, match=r"2147483648 does not fit.*key of topic 'trades'"):
        IntegerSerializer()(2**31, KEY)


def test_a_string_serializer_refuses_bytes_naming_the_value():
    with pytest.raises(SerializationError, match=r"expected str, got bytes \(value of topic 'trades'\)"):
        StringSerializer()(b"raw", VALUE)


def test_a_bool_is_not_taken_for_an_integer():
    with pytest.raises(SerializationError):
        LongSerializer()(True, VALUE)


def test_a_fixed_width_deserializer_refuses_the_wrong_length():
    with pytest.raises(SerializationError, match="expected 4 bytes, got 8"):
        IntegerDeserializer()(b"\x00" * 8, VALUE)


# ---------------------------------------------------------------------- JSON

def test_json_that_cannot_be_serialized_names_the_field_path():
    with pytest.raises(SerializationError) as exc:
        JSONSerializer()({"trade": {"legs": [{"px": 1.0}, {"px": {1, 2}}]}}, VALUE)
    assert exc.value.field == "trade.legs[1].px"
    assert "trade.legs[1].px" in str(exc.value) and "value of topic 'trades'" in str(exc.value)


def test_json_serializes_numpy_arrays_with_orjson():
    assert JSONSerializer()({"v": np.arange(3)}, VALUE) == b'{"v":[0,1,2]}'


def test_json_to_dict_and_from_dict_convert_application_objects():
    class Trade:
        def __init__(self, px):
            self.px = px
    data = JSONSerializer(to_dict=lambda t, ctx: {"px": t.px})(Trade(2.5), VALUE)
    assert JSONDeserializer(from_dict=lambda d, ctx: Trade(d["px"]))(data, VALUE).px == 2.5


def test_invalid_json_is_a_serialization_error():
    with pytest.raises(SerializationError, match="invalid JSON"):
        JSONDeserializer()(b"{nope", VALUE)


# ---------------------------------------------------------------------- NumPy

@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    np.zeros(5, dtype=[("ts", "<i8"), ("px", "<f8"), ("sym", "S4")]),
    np.arange(20)[::3],
    np.array(7, dtype=np.int16),
    np.zeros((2, 0)),
], ids=["2d", "fortran", "structured", "strided", "scalar", "empty"])
def test_numpy_arrays_round_trip_with_dtype_shape_and_order(array):
    back = NumpyDeserializer()(NumpySerializer()(array, VALUE), VALUE)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_numpy_deserialization_does_not_copy_the_value():
    value = NumpySerializer()(np.arange(1000.0), VALUE)
    array = NumpyDeserializer()(value, VALUE)
    assert np.shares_memory(array, np.frombuffer(value, np.uint8))
    assert not array.flags.writeable


def test_numpy_values_are_standard_npy_images():
    array = np.arange(6, dtype="<u2").reshape(2, 3)
    np.testing.assert_array_equal(np.load(io.BytesIO(NumpySerializer()(array, VALUE))), array)


def test_numpy_data_starts_64_bytes_aligned_in_the_value():
    value = NumpySerializer()(np.arange(4.0), VALUE)
    assert (len(value) - 32) % 64 == 0


def test_numpy_object_arrays_are_refused():
    with pytest.raises(SerializationError, match="holds Python objects"):
        NumpySerializer()(np.array([{"a": 1}], dtype=object), VALUE)


def test_numpy_declared_dtype_and_shape_are_enforced():
    with pytest.raises(SerializationError, match="dtype int64 is not the declared float64"):
        NumpySerializer(dtype=np.float64)(np.arange(3), VALUE)
    with pytest.raises(SerializationError, match=r"shape \(3,\) is not the declared \(4,\)"):
        NumpySerializer(shape=(4,))(np.arange(3.0), VALUE)


def test_a_truncated_numpy_value_is_refused():
    value = NumpySerializer()(np.arange(10.0), VALUE)
    with pytest.raises(SerializationError, match="data bytes for shape"):
        NumpyDeserializer()(value[:-8], VALUE)


# ---------------------------------------------------------------------- Confluent wire format

@pytest.mark.parametrize("indexes, data", [([0], b"\x00"), ([1], b"\x02\x02"), ([0, 2], b"\x04\x00\x04")])
def test_protobuf_message_indexes_are_zigzag_varints_with_the_first_message_as_one_zero_byte(indexes, data):
    assert encode_message_indexes(indexes) == data


# ---------------------------------------------------------------------- Avro compatibility

def rec(*fields, name="Trade"):
    return {"type": "record", "name": name, "namespace": "demo", "fields": list(fields)}


def f(name, type_, **kw):
    return {"name": name, "type": type_, **kw}


_PRIMITIVE_SAMPLES = {"null": None, "boolean": True, "int": 7, "long": 7, "float": 1.5, "double": 1.5,
                     "string": "s", "bytes": b"b"}


def sample(schema, named):
    """A datum valid for a parsed schema (the first branch of each union, simple values)."""
    if isinstance(schema, str):
        return _PRIMITIVE_SAMPLES[schema] if schema in _PRIMITIVE_SAMPLES else sample(named[schema], named)
    if isinstance(schema, list):
        return sample(schema[0], named)
    kind = schema["type"]
    if isinstance(kind, (dict, list)) or kind in _PRIMITIVE_SAMPLES:
        return sample(kind, named)
    if kind == "record":
        return {x["name"]: sample(x["type"], named) for x in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][-1]
    if kind == "fixed":
        return b"\0" * schema["size"]
    if kind == "array":
        return [sample(schema["items"], named)]
    return {"k": sample(schema["values"], named)}  # map


AVRO_PAIRS = [
    # (case, reader, writer, compatible)
    ("same schema", rec(f("a", "int")), rec(f("a", "int")), True),
    ("reader adds a field with a default", rec(f("a", "int"), f("b", "string", default="x")), rec(f("a", "int")), True),
    ("reader adds a field without a default", rec(f("a", "int"), f("b", "string")), rec(f("a", "int")), False),
    ("reader drops a field", rec(f("a", "int")), rec(f("a", "int"), f("b", "string")), True),
    ("int promoted to long", rec(f("a", "long")), rec(f("a", "int")), True),
    ("int promoted to double", rec(f("a", "double")), rec(f("a", "int")), True),
    ("long narrowed to int", rec(f("a", "int")), rec(f("a", "long")), False),
    ("string read as bytes", rec(f("a", "bytes")), rec(f("a", "string")), True),
    ("string read as int", rec(f("a", "int")), rec(f("a", "string")), False),
    ("field renamed with an alias", rec(f("b", "int", aliases=["a"])), rec(f("a", "int")), True),
    ("enum gains a symbol", rec(f("e", {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]})),
     rec(f("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]})), True),
    ("enum loses a symbol the writer uses", rec(f("e", {"type": "enum", "name": "E", "symbols": ["A"]})),
     rec(f("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]})), False),
    ("fixed changes size", rec(f("x", {"type": "fixed", "name": "X", "size": 8})),
     rec(f("x", {"type": "fixed", "name": "X", "size": 4})), False),
    ("writer type joins a reader union", rec(f("a", ["null", "int"])), rec(f("a", "int")), True),
    ("writer union has a branch the reader lacks", rec(f("a", "int")), rec(f("a", ["null", "int"])), False),
    ("array items promoted", rec(f("a", {"type": "array", "items": "float"})),
     rec(f("a", {"type": "array", "items": "int"})), True),
    ("map values changed", rec(f("a", {"type": "map", "values": "int"})),
     rec(f("a", {"type": "map", "values": "string"})), False),
    ("nested record gains a defaulted field",
     rec(f("leg", rec(f("px", "double"), f("venue", "string", default=""), name="Leg"))),
     rec(f("leg", rec(f("px", "double"), name="Leg"))), True),
    ("record renamed", rec(f("a", "int"), name="Order"), rec(f("a", "int")), False),
]


@pytest.mark.parametrize("case, reader, writer, compatible", AVRO_PAIRS, ids=[p[0] for p in AVRO_PAIRS])
def test_avro_compatibility_follows_fastavros_schema_resolution(case, reader, writer, compatible):
    rnamed, wnamed = {}, {}
    r = parse_avro(json.dumps(reader), rnamed)
    w = parse_avro(json.dumps(writer), wnamed)
    problems = avro_incompatibilities(r, w, rnamed, wnamed)
    assert (problems == []) is compatible, problems
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, w, sample(w, wnamed))
    buf.seek(0)
    if compatible:
        fastavro.schemaless_reader(buf, w, r)
    else:
        with pytest.raises(Exception):
            fastavro.schemaless_reader(buf, w, r)


def test_an_avro_incompatibility_names_the_field_and_why():
    rnamed, wnamed = {}, {}
    r = parse_avro(json.dumps(rec(f("a", "int"), f("qty", "long"))), rnamed)
    w = parse_avro(json.dumps(rec(f("a", "int"))), wnamed)
    assert avro_incompatibilities(r, w, rnamed, wnamed) == [
        "Trade.qty: the reader's field 'qty' has no default and the writer's schema does not have it"]


def test_recursive_avro_schemas_are_checked_without_looping():
    node = rec(f("v", "int"), f("next", ["null", "demo.Node"], default=None), name="Node")
    rnamed, wnamed = {}, {}
    r, w = parse_avro(json.dumps(node), rnamed), parse_avro(json.dumps(node), wnamed)
    assert avro_incompatibilities(r, w, rnamed, wnamed) == []


# ---------------------------------------------------------------------- Protobuf compatibility

T = descriptor_pb2.FieldDescriptorProto


def proto(*messages, package="demo", syntax="proto3"):
    fdp = descriptor_pb2.FileDescriptorProto(name="trade.proto", package=package, syntax=syntax)
    for name, fields in messages:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, *rest in fields:
            label = rest[0] if rest else T.LABEL_OPTIONAL
            field = m.field.add(name=fname, number=number, type=ftype, label=label)
            if ftype in (T.TYPE_MESSAGE, T.TYPE_ENUM):
                field.type_name = rest[1]
    return fdp


BASE = proto(("Trade", [("symbol", 1, T.TYPE_STRING), ("qty", 2, T.TYPE_INT32)]))


@pytest.mark.parametrize("case, new, compatible", [
    ("a field added", proto(("Trade", [("symbol", 1, T.TYPE_STRING), ("qty", 2, T.TYPE_INT32),
                                        ("px", 3, T.TYPE_DOUBLE)])), True),
    ("a field removed", proto(("Trade", [("symbol", 1, T.TYPE_STRING)])), True),
    ("a field renamed", proto(("Trade", [("ticker", 1, T.TYPE_STRING), ("qty", 2, T.TYPE_INT32)])), True),
    ("int32 widened to int64", proto(("Trade", [("symbol", 1, T.TYPE_STRING), ("qty", 2, T.TYPE_INT64)])), True),
    ("string to bytes", proto(("Trade", [("symbol", 1, T.TYPE_BYTES), ("qty", 2, T.TYPE_INT32)])), True),
    ("int32 to double", proto(("Trade", [("symbol", 1, T.TYPE_STRING), ("qty", 2, T.TYPE_DOUBLE)])), False),
    ("int32 to sint32", proto(("Trade", [("symbol", 1, T.TYPE_STRING), ("qty", 2, T.TYPE_SINT32)])), False),
    ("singular to repeated", proto(("Trade", [("symbol", 1, T.TYPE_STRING),
                                              ("qty", 2, T.TYPE_INT32, T.LABEL_REPEATED)])), False),
    ("message removed", proto(("Order", [("symbol", 1, T.TYPE_STRING)])), False),
    ("message moved behind another", proto(("Order", []), ("Trade", [("symbol", 1, T.TYPE_STRING),
                                                                     ("qty", 2, T.TYPE_INT32)])), False),
    ("package changed", proto(("Trade", [("symbol", 1, T.TYPE_STRING), ("qty", 2, T.TYPE_INT32)]),
                              package="other"), False),
])
def test_protobuf_compatibility_compares_field_numbers_and_wire_types(case, new, compatible):
    assert (protobuf_incompatibilities(new, BASE) == []) is compatible


def test_a_protobuf_required_field_the_writer_lacks_is_incompatible():
    old = proto(("Trade", [("symbol", 1, T.TYPE_STRING, T.LABEL_OPTIONAL)]), syntax="proto2")
    new = proto(("Trade", [("symbol", 1, T.TYPE_STRING, T.LABEL_OPTIONAL), ("qty", 2, T.TYPE_INT32, T.LABEL_REQUIRED)]),
                syntax="proto2")
    assert protobuf_incompatibilities(new, old) == [
        "demo.Trade.qty (field 2): required in the reader but the writer's schema does not have it"]


def test_a_protobuf_incompatibility_names_message_field_and_types():
    new = proto(("Trade", [("symbol", 1, T.TYPE_STRING), ("qty", 2, T.TYPE_DOUBLE)]))
    assert protobuf_incompatibilities(new, BASE) == [
        "demo.Trade.qty (field 2): type changed from int32 to double (not wire-compatible)"]

