"""The JSON Schema compatibility rules (json_schema_incompatibilities), each checked against
jsonschema itself: for a pair called incompatible, a witness value is valid under the
writer's schema and invalid under the reader's; for a pair called compatible, the writer's
sample values all validate under the reader's."""
import pytest
from jsonschema import Draft7Validator

from shmlog.schema_registry import SchemaRegistryError
from shmlog.schema_registry.json_schema import json_schema_incompatibilities, parse_json_schema


def obj(properties, required=(), **extra):
    return {"type": "object", "properties": properties, "required": list(required), **extra}


CLOSED = {"additionalProperties": False}

# (why, reader, writer, witness: valid for the writer, invalid for the reader)
INCOMPATIBLE = [
    ("a type narrowed", {"type": "integer"}, {"type": "number"}, 1.5),
    ("a type changed", {"type": "string"}, {"type": "integer"}, 3),
    ("a property became required", obj({"a": {"type": "string"}}, ["a"]), obj({"a": {"type": "string"}}), {}),
    ("a property's type changed", obj({"a": {"type": "string"}}), obj({"a": {"type": "integer"}}), {"a": 1}),
    ("a property removed from a closed model", obj({}, **CLOSED), obj({"a": {"type": "string"}}, **CLOSED),
     {"a": "x"}),
    ("a typed property added to an open model", obj({"a": {"type": "string"}}), obj({}), {"a": 1}),
    ("additionalProperties closed", obj({}, **CLOSED), obj({}), {"z": 1}),
    ("an enum narrowed", {"enum": ["a"]}, {"enum": ["a", "b"]}, "b"),
    ("a maximum lowered", {"type": "number", "maximum": 5}, {"type": "number", "maximum": 10}, 7),
    ("a minLength raised", {"type": "string", "minLength": 3}, {"type": "string"}, "ab"),
    ("array items narrowed", {"type": "array", "items": {"type": "integer"}},
     {"type": "array", "items": {"type": "number"}}, [1.5]),
    ("a union branch dropped", {"anyOf": [{"type": "string"}]}, {"anyOf": [{"type": "string"}, {"type": "null"}]},
     None),
    ("a local $ref target narrowed",
     {"definitions": {"p": {"type": "integer"}}, **obj({"a": {"$ref": "#/definitions/p"}})},
     {"definitions": {"p": {"type": "number"}}, **obj({"a": {"$ref": "#/definitions/p"}})}, {"a": 0.5}),
]

# (why, reader, writer, samples valid for the writer)
COMPATIBLE = [
    ("the same schema", obj({"a": {"type": "string"}}, ["a"]), obj({"a": {"type": "string"}}, ["a"]), [{"a": "x"}]),
    ("integer widened to number", {"type": "number"}, {"type": "integer"}, [1, 2]),
    ("a required property made optional", obj({"a": {"type": "string"}}), obj({"a": {"type": "string"}}, ["a"]),
     [{"a": "x"}]),
    ("a property added to a closed writer model", obj({"a": {"type": "string"}, "b": {"type": "integer"}}),
     obj({"a": {"type": "string"}}, **CLOSED), [{"a": "x"}, {}]),
    ("a property removed from an open model", obj({}), obj({"a": {"type": "string"}}), [{"a": "x"}, {"z": 1}]),
    ("an enum widened", {"enum": ["a", "b", "c"]}, {"enum": ["a", "b"]}, ["a", "b"]),
    ("a maximum raised", {"type": "number", "maximum": 10}, {"type": "number", "maximum": 5}, [5, -1]),
    ("a union branch added", {"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "string"}, ["x"]),
    ("anything read as true", True, {"type": "string"}, ["x"]),
]


@pytest.mark.parametrize("why, reader, writer, witness", INCOMPATIBLE, ids=[c[0] for c in INCOMPATIBLE])
def test_an_incompatible_pair_is_reported_and_a_witness_proves_it(why, reader, writer, witness):
    assert Draft7Validator(writer).is_valid(witness) and not Draft7Validator(reader).is_valid(witness)
    assert json_schema_incompatibilities(reader, writer), why


@pytest.mark.parametrize("why, reader, writer, samples", COMPATIBLE, ids=[c[0] for c in COMPATIBLE])
def test_a_compatible_pair_is_accepted_and_the_writers_values_validate_for_the_reader(why, reader, writer, samples):
    assert json_schema_incompatibilities(reader, writer) == [], why
    for value in samples:
        assert Draft7Validator(writer).is_valid(value) and Draft7Validator(reader).is_valid(value)


def test_each_reason_names_the_property_path():
    reader = obj({"a": obj({"b": {"type": "string"}})}, title="Trade")
    writer = obj({"a": obj({"b": {"type": "integer"}})}, title="Trade")
    assert json_schema_incompatibilities(reader, writer) == [
        "Trade.a.b: type ['integer'] of the writer is not accepted by the reader (type ['string'])"]


def test_a_schema_that_is_not_json_schema_is_refused_with_42201():
    with pytest.raises(SchemaRegistryError) as info:
        parse_json_schema('{"type": "strang"}')
    assert info.value.error_code == 42201 and "Invalid schema" in info.value.error_message


def test_text_that_is_not_json_is_refused_with_42201():
    with pytest.raises(SchemaRegistryError, match="not JSON"):
        parse_json_schema("{type: object}")
