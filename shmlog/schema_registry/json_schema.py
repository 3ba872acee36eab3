"""JSON Schema through the schema registry, as confluent_kafka.schema_registry.json_schema:
JSONSerializer, JSONDeserializer, and the compatibility rules the registry applies to JSON
schemas (schema type "JSON").

Records are Confluent's wire format (magic byte 0, the 4-byte schema id, see _wire) followed
by the UTF-8 JSON text. Values are validated with the `jsonschema` package: the draft the
schema names in `$schema`, the latest draft when it names none (as confluent-kafka); `$ref`s
resolve within the schema and to the schemas it references by name (SchemaReference), never
over the network.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from shmlog.schema_registry import (
    Schema,
    SchemaRegistryError,
    _writer_schema,
    topic_subject_name_strategy,
)
from shmlog.schema_registry._wire import _check_conf, _header, _read_header, writer_schema_id
from shmlog.serialization import Deserializer, SerializationError, Serializer, _where

if TYPE_CHECKING:
    from shmlog.schema_registry import SchemaRegistryClient
    from shmlog.serialization import SerializationContext

__all__ = ["JSONSerializer", "JSONDeserializer", "parse_json_schema", "json_schema_incompatibilities"]


# ---------------------------------------------------------------------- parsing and validation

def parse_json_schema(schema_str):
    """The JSON Schema document of a schema text (a dict or a boolean), checked against its
    draft's meta-schema; SchemaRegistryError 422 (42201) when it is not a valid schema."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for
    try:
        parsed = orjson.loads(schema_str)
    except orjson.JSONDecodeError as exc:
        raise SchemaRegistryError(422, 42201, f"Invalid schema: not JSON: {exc}") from None
    if not isinstance(parsed, (dict, bool)):
        raise SchemaRegistryError(422, 42201, f"Invalid schema: a JSON Schema is an object or a boolean, not "
                                  f"{type(parsed).__name__}")
    try:
        validator_for(parsed).check_schema(parsed)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise SchemaRegistryError(422, 42201, f"Invalid schema: {exc.message}"
                                  + (f" at {where}" if where else "")) from None
    return parsed


def _validator(parsed, named):
    """A jsonschema validator of `parsed`, with the referenced schemas (`named`: name ->
    document) resolvable by their reference names; nothing is fetched over the network."""
    from jsonschema.validators import validator_for
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    registry = Registry().with_resources(
        (name, Resource.from_contents(doc, default_specification=DRAFT7)) for name, doc in named.items())
    cls = validator_for(parsed)
    return cls(parsed, registry=registry)


def _path(parts):
    """A value path as the JSON serializer names it: trade.legs[1].px"""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def _validation_problem(validator, value):
    """(field path, reason) of the most relevant validation error, or None when value is valid."""
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable
    try:
        error = best_match(validator.iter_errors(value))
    except Unresolvable as exc:
        return None, f"the schema has an unresolvable $ref: {exc}"
    if error is None:
        return None
    parts = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        parts += missing[:1]
    field = _path(parts)
    keyword = "/".join(str(p) for p in error.absolute_schema_path)
    return field, f"{error.message} (schema: {keyword})" if keyword else error.message


# ---------------------------------------------------------------------- JSON Schema compatibility

_BOUNDS_MAX = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_BOUNDS_MIN = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")


def _types(schema):
    t = schema.get("type")
    if t is None:
        return None
    return {t} if isinstance(t, str) else set(t)


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _open(schema):
    """What an object schema allows for properties it does not list (True: anything)."""
    extra = schema.get("additionalProperties", True)
    return extra if extra is not None else True


class _JsonResolution:
    """Why data valid under `writer` may be invalid under `reader`: the rules of Confluent's
    JSON Schema compatibility checker for the keywords schemas use most (type, properties,
    required, additionalProperties, items, enum/const, bounds, pattern, anyOf/oneOf, local $ref)."""

    def __init__(self, reader_root, writer_root):
        self.roots = {"reader": reader_root, "writer": writer_root}
        self.seen = set()

    def _deref(self, schema, side):
        for _ in range(32):
            if not isinstance(schema, dict) or "$ref" not in schema:
                return schema
            ref = schema["$ref"]
            if not ref.startswith("#"):
                return schema  # another document: compared by reference below
            node = self.roots[side]
            for part in ref[1:].split("/")[1:] if ref != "#" else []:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, dict) or part not in node:
                    return schema
                node = node[part]
            schema = node
        return schema

    def check(self, reader, writer, path):
        reader, writer = self._deref(reader, "reader"), self._deref(writer, "writer")
        if reader is True or reader == {} or writer is False:
            return []
        if reader is False:
            return [f"{path}: the reader's schema accepts nothing"]
        if writer is True:
            writer = {}
        key = (id(reader), id(writer))
        if key in self.seen:
            return []
        self.seen.add(key)
        if "$ref" in reader or "$ref" in writer:
            if reader.get("$ref") != writer.get("$ref"):
                return [f"{path}: $ref changed from {writer.get('$ref')!r} to {reader.get('$ref')!r}"]
            return []
        for combinator in ("anyOf", "oneOf"):
            if combinator in writer:
                problems = []
                for i, branch in enumerate(writer[combinator]):
                    problems += self.check(reader, branch, f"{path}.{combinator}[{i}]")
                return problems
            if combinator in reader:
                if any(not self.check(branch, writer, path) for branch in reader[combinator]):
                    return []
                return [f"{path}: no branch of the reader's {combinator} accepts what the writer's schema allows"]
        problems = []
        rtypes, wtypes = _types(reader), _types(writer)
        if rtypes is not None:
            if wtypes is None:
                problems.append(f"{path}: the writer allows any type, the reader only {sorted(rtypes)}")
                wtypes = set()
            lost = {t for t in wtypes if t not in rtypes and not (t == "integer" and "number" in rtypes)}
            if lost:
                problems.append(f"{path}: type {sorted(lost)} of the writer is not accepted by the reader "
                                f"(type {sorted(rtypes)})")
        for keyword in ("enum", "const"):
            if keyword in reader:
                allowed = reader["enum"] if keyword == "enum" else [reader["const"]]
                written = writer.get("enum") if "enum" in writer else \
                    [writer["const"]] if "const" in writer else None
                if written is None:
                    problems.append(f"{path}: the reader restricts values with {keyword}, the writer does not")
                elif [v for v in written if v not in allowed]:
                    problems.append(f"{path}: the writer's values {[v for v in written if v not in allowed]} "
                                    f"are not in the reader's {keyword}")
        for keywords, narrower in ((_BOUNDS_MAX, lambda w, r: w > r), (_BOUNDS_MIN, lambda w, r: w < r)):
            for keyword in keywords:
                bound = reader.get(keyword)
                if not _number(bound):
                    continue  # absent, or draft 4's boolean exclusiveMaximum/exclusiveMinimum
                written = writer.get(keyword)
                if not _number(written) or narrower(written, bound):
                    problems.append(f"{path}: {keyword} narrowed to {bound} (writer: "
                                    f"{written if _number(written) else 'none'})")
        if "pattern" in reader and reader["pattern"] != writer.get("pattern"):
            problems.append(f"{path}: pattern changed from {writer.get('pattern')!r} to {reader['pattern']!r}")
        if "object" in (rtypes or ()) or any(k in s for s in (reader, writer)
                                             for k in ("properties", "required", "additionalProperties")):
            problems += self._objects(reader, writer, path)
        if "items" in reader and isinstance(reader["items"], (dict, bool)):
            witems = writer.get("items", True)
            if isinstance(witems, (dict, bool)):
                problems += self.check(reader["items"], witems, path + "[]")
        return problems

    def _objects(self, reader, writer, path):
        problems = []
        rprops, wprops = reader.get("properties", {}), writer.get("properties", {})
        rextra, wextra = _open(reader), _open(writer)
        wrequired = set(writer.get("required", ()))
        for name in reader.get("required", ()):
            if name not in wrequired:
                problems.append(f"{path}.{name}: required by the reader, optional or absent in the writer's "
                                f"schema")
        for name, wprop in wprops.items():
            if name in rprops:
                problems += self.check(rprops[name], wprop, f"{path}.{name}")
            elif rextra is False:
                problems.append(f"{path}.{name}: property removed from a closed content model "
                                f"(additionalProperties false)")
            else:
                problems += self.check(rextra, wprop, f"{path}.{name}")
        for name, rprop in rprops.items():
            if name not in wprops and wextra is not False:
                found = self.check(rprop, wextra, f"{path}.{name}")
                if found:
                    problems.append(f"{path}.{name}: property added to an open content model (the writer's "
                                    f"data may hold {name!r} with any value its additionalProperties allow)")
        if rextra is not True and wextra is not False:
            problems += self.check(rextra, wextra, f"{path}.<additionalProperties>")
        return problems


def json_schema_incompatibilities(reader, writer):
    """Reasons data valid under JSON Schema `writer` may be invalid under `reader` ([] =
    compatible). reader/writer are parsed documents (parse_json_schema)."""
    root = (reader.get("title") if isinstance(reader, dict) else None) or "$"
    return _JsonResolution(reader, writer).check(reader, writer, root)


# ---------------------------------------------------------------------- serializers

class JSONSerializer(Serializer):
    """JSON validated against a JSON Schema, in Confluent's wire format, the schema
    registered (type JSON) under the subject.

    As confluent_kafka.schema_registry.json_schema.JSONSerializer(schema_str,
    schema_registry_client, to_dict=None, conf=None); conf: auto.register.schemas (True),
    normalize.schemas (False), use.latest.version (False), use.schema.id (None),
    subject.name.strategy, validate (True). The record name the strategies see is the
    schema's `title`. A value the schema refuses raises SerializationError naming the field
    and the failed keyword.
    """

    _DEFAULTS = {"auto.register.schemas": True, "normalize.schemas": False, "use.latest.version": False,
                 "use.schema.id": None, "subject.name.strategy": topic_subject_name_strategy, "validate": True}

    def __init__(self, schema_str: str | Schema, schema_registry_client: SchemaRegistryClient,
                 to_dict: Callable[[Any, SerializationContext | None], Any] | None = None,
                 conf: dict[str, Any] | None = None) -> None:
        conf = _check_conf(conf, self._DEFAULTS, "JSONSerializer")
        if conf["use.latest.version"] and conf["auto.register.schemas"]:
            raise ValueError("cannot enable both use.latest.version and auto.register.schemas")
        if conf["use.schema.id"] is not None and not isinstance(conf["use.schema.id"], int):
            raise ValueError("JSONSerializer: use.schema.id must be an int value")
        if not isinstance(conf["validate"], bool):
            raise ValueError("JSONSerializer: validate must be a boolean value")
        if to_dict is not None and not callable(to_dict):
            raise ValueError("to_dict must be callable with the signature to_dict(object, SerializationContext)->dict")
        if isinstance(schema_str, Schema):
            schema = schema_str
        elif schema_str is None:
            schema = None
        else:
            schema = Schema(schema_str, "JSON")
        if schema is None and not conf["use.latest.version"] and conf["use.schema.id"] is None:
            raise ValueError("JSONSerializer: give schema_str, or set use.latest.version or use.schema.id")
        self._registry = schema_registry_client
        self._schema = schema
        self._to_dict = to_dict
        self._auto_register = conf["auto.register.schemas"]
        self._normalize = conf["normalize.schemas"]
        self._use_latest = conf["use.latest.version"]
        self._use_id = conf["use.schema.id"]
        self._strategy = conf["subject.name.strategy"]
        self._validate = conf["validate"]
        self._record_name = None
        self._own = None
        if schema is not None:
            self._own = self._validator_of(schema)
            parsed = self._own.schema
            self._record_name = parsed.get("title") if isinstance(parsed, dict) else None
        self._known = {}  # subject -> (schema_id, validator)

    def _validator_of(self, schema):
        if schema.schema_type != "JSON":
            raise SerializationError(f"JSONSerializer: the schema is {schema.schema_type}, not JSON")
        try:
            parsed, named = self._registry._parse(schema)
        except SchemaRegistryError as exc:
            raise SerializationError(f"JSONSerializer: {exc.error_message}") from None
        return _validator(parsed, named)

    def _writer(self, subject):
        known = self._known.get(subject)
        if known is not None:
            return known
        if self._use_id is not None:
            known = (self._use_id, self._own or self._validator_of(self._registry.get_schema(self._use_id)))
        else:
            schema_id, latest = writer_schema_id(self._registry, subject, self._schema, self._use_latest,
                                                 self._auto_register, self._normalize)
            known = (schema_id, self._validator_of(latest) if latest is not None else self._own)
        self._known[subject] = known
        return known

    def __call__(self, obj: Any, ctx: SerializationContext | None = None) -> bytes | None:
        if obj is None:
            return None
        subject = self._strategy(ctx, self._record_name)
        schema_id, validator = self._writer(subject)
        value = self._to_dict(obj, ctx) if self._to_dict is not None else obj
        if self._validate:
            problem = _validation_problem(validator, value)
            if problem is not None:
                field, reason = problem
                where = f"field {field!r}: " if field else ""
                raise SerializationError(f"JSONSerializer: {where}{reason}{_where(ctx)}", field=field)
        try:
            payload = orjson.dumps(value)
        except TypeError as exc:
            raise SerializationError(f"JSONSerializer: cannot encode as JSON: {exc}{_where(ctx)}") from None
        return _header(schema_id) + payload


class JSONDeserializer(Deserializer):
    """Confluent-framed JSON -> dict (or from_dict's object), validated against the schema.

    As confluent_kafka.schema_registry.json_schema.JSONDeserializer(schema_str,
    from_dict=None, schema_registry_client=None, conf=None). schema_str is the reader's
    schema; without it the writer's schema is fetched from the registry by the record's
    schema id (schema_registry_client is then required). conf: validate (True).
    """

    def __init__(self, schema_str: str | Schema | None,
                 from_dict: Callable[[Any, SerializationContext | None], Any] | None = None,
                 schema_registry_client: SchemaRegistryClient | None = None,
                 conf: dict[str, Any] | None = None) -> None:
        conf = _check_conf(conf, {"validate": True}, "JSONDeserializer")
        if not isinstance(conf["validate"], bool):
            raise ValueError("JSONDeserializer: validate must be a boolean value")
        if from_dict is not None and not callable(from_dict):
            raise ValueError("from_dict must be callable with the signature from_dict(dict, SerializationContext) "
                             "-> object")
        if schema_str is None and schema_registry_client is None:
            raise ValueError("JSONDeserializer: schema_str is required when no schema_registry_client is given")
        self._registry = schema_registry_client
        self._from_dict = from_dict
        self._validate = conf["validate"]
        self._reader = None
        if schema_str is not None:
            schema = schema_str if isinstance(schema_str, Schema) else Schema(schema_str, "JSON")
            try:
                if schema_registry_client is not None:
                    parsed, named = schema_registry_client._parse(schema)
                else:
                    if schema.references:
                        raise SchemaRegistryError(422, 42201, "a schema with references needs a "
                                                  "schema_registry_client to resolve them")
                    parsed, named = parse_json_schema(schema.schema_str), {}
            except SchemaRegistryError as exc:
                raise SerializationError(f"JSONDeserializer: {exc.error_message}") from None
            self._reader = _validator(parsed, named)
        self._writers = {}

    def _writer(self, schema_id, ctx):
        validator = self._writers.get(schema_id)
        if validator is None:
            parsed, named = _writer_schema(self._registry, schema_id, "JSON", "JSONDeserializer", ctx)
            validator = self._writers[schema_id] = _validator(parsed, named)
        return validator

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        if value is None:
            return None
        schema_id, payload = _read_header(value, ctx, "JSONDeserializer")
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"JSONDeserializer: the value after the schema id is not JSON: {exc}"
                                     f"{_where(ctx)}") from None
        if self._validate:
            validator = self._reader if self._reader is not None else self._writer(schema_id, ctx)
            problem = _validation_problem(validator, obj)
            if problem is not None:
                field, reason = problem
                where = f"field {field!r}: " if field else ""
                raise SerializationError(f"JSONDeserializer: {where}{reason} (schema id {schema_id})"
                                         f"{_where(ctx)}", field=field)
        return self._from_dict(obj, ctx) if self._from_dict is not None else obj
