"""Avro through the schema registry, as confluent_kafka.schema_registry.avro: AvroSerializer,
AvroDeserializer, and the compatibility rules the registry applies to AVRO schemas
(described in the package docstring: the specification's schema resolution, as fastavro
applies it).
"""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import fastavro
import fastavro.validation
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

__all__ = ["AvroSerializer", "AvroDeserializer", "parse_avro", "avro_incompatibilities"]


# ---------------------------------------------------------------------- Avro compatibility

_AVRO_PROMOTIONS = {"int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"},
                    "string": {"bytes"}, "bytes": {"string"}}
_NAMED = ("record", "error", "enum", "fixed")


def _avro_kind(schema):
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        t = schema["type"]
        return _avro_kind(t) if isinstance(t, (dict, list)) else t
    return schema


def _avro_describe(schema):
    kind = _avro_kind(schema)
    if kind == "union":
        return "[" + ", ".join(_avro_describe(s) for s in schema) + "]"
    if kind in _NAMED and isinstance(schema, dict):
        return f"{kind} {schema['name']}"
    if kind == "array":
        return f"array<{_avro_describe(schema['items'])}>"
    if kind == "map":
        return f"map<{_avro_describe(schema['values'])}>"
    return kind


def _short(name):
    return name.rsplit(".", 1)[-1]


class _AvroResolution:
    """Why data written with `writer` cannot be read with `reader` (Avro schema resolution)."""

    def __init__(self, reader_named, writer_named):
        self.rnamed, self.wnamed = reader_named, writer_named
        self.assumed = set()

    @staticmethod
    def _resolve(schema, named):
        while isinstance(schema, str) and schema in named:
            schema = named[schema]
        if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
            return schema["type"]
        return schema

    def check(self, reader, writer, path):
        r, w = self._resolve(reader, self.rnamed), self._resolve(writer, self.wnamed)
        rk, wk = _avro_kind(r), _avro_kind(w)
        if wk == "union":
            problems = []
            for branch in w:
                problems += self.check(r, branch, path)
            return problems
        if rk == "union":
            for branch in r:
                if not self.check(branch, w, path):
                    return []
            return [f"{path}: no branch of the reader's union {_avro_describe(r)} reads the writer's "
                    f"{_avro_describe(w)}"]
        if rk == "error":
            rk = "record"
        if wk == "error":
            wk = "record"
        if rk != wk:
            if rk in _AVRO_PROMOTIONS.get(wk, ()):
                return []
            return [f"{path}: the writer's {_avro_describe(w)} cannot be read as {_avro_describe(r)}"]
        if rk in ("record", "enum", "fixed"):
            names = {_short(r["name"])} | {_short(a) for a in r.get("aliases", ())}
            if _short(w["name"]) not in names:
                return [f"{path}: the writer's {rk} {w['name']} is not the reader's {r['name']} "
                        f"(nor one of its aliases)"]
        if rk == "record":
            key = (w["name"], r["name"])
            if key in self.assumed:
                return []
            self.assumed.add(key)
            wfields = {f["name"]: f for f in w["fields"]}
            problems = []
            for rf in r["fields"]:
                wf = wfields.get(rf["name"])
                if wf is None:
                    wf = next((wfields[a] for a in rf.get("aliases", ()) if a in wfields), None)
                fpath = f"{path}.{rf['name']}"
                if wf is not None:
                    problems += self.check(rf["type"], wf["type"], fpath)
                elif "default" not in rf:
                    problems.append(f"{fpath}: the reader's field {rf['name']!r} has no default and the writer's "
                                    f"schema does not have it")
            return problems
        if rk == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                return [f"{path}: the reader's enum {r['name']} lacks the writer's symbols {missing} "
                        f"(and has no default)"]
            return []
        if rk == "fixed":
            if r["size"] != w["size"]:
                return [f"{path}: fixed {r['name']} changed size from {w['size']} to {r['size']}"]
            return []
        if rk == "array":
            return self.check(r["items"], w["items"], path + "[]")
        if rk == "map":
            return self.check(r["values"], w["values"], path + "{}")
        return []


def parse_avro(schema_str, named_schemas=None):
    """fastavro's parsed form of an Avro schema text; named types defined go to named_schemas."""
    try:
        obj = orjson.loads(schema_str)
    except orjson.JSONDecodeError:
        obj = schema_str.strip()  # a bare primitive name such as string
        if obj.startswith('"') and obj.endswith('"'):
            obj = obj[1:-1]
    return fastavro.parse_schema(obj, named_schemas=named_schemas if named_schemas is not None else {})


def avro_incompatibilities(reader, writer, reader_named=None, writer_named=None):
    """Reasons data written with `writer` cannot be read with `reader` ([] = compatible).

    reader/writer are fastavro-parsed schemas; *_named the named types parse_avro collected."""
    root = reader["name"] if isinstance(reader, dict) and "name" in reader else _avro_kind(reader)
    return _AvroResolution(reader_named or {}, writer_named or {}).check(reader, writer, _short(str(root)))


# ---------------------------------------------------------------------- serializers

class AvroSerializer(Serializer):
    """Avro binary in Confluent's wire format, the schema registered under the subject.

    As confluent_kafka.schema_registry.avro.AvroSerializer(schema_registry_client,
    schema_str, to_dict=None, conf=None); conf: auto.register.schemas (True),
    normalize.schemas (False), use.latest.version (False), subject.name.strategy.
    """

    _DEFAULTS = {"auto.register.schemas": True, "normalize.schemas": False, "use.latest.version": False,
                 "subject.name.strategy": topic_subject_name_strategy}

    def __init__(self, schema_registry_client: SchemaRegistryClient, schema_str: str | Schema,
                 to_dict: Callable[[Any, SerializationContext | None], Any] | None = None,
                 conf: dict[str, Any] | None = None) -> None:
        conf = _check_conf(conf, self._DEFAULTS, "AvroSerializer")
        if conf["use.latest.version"] and conf["auto.register.schemas"]:
            raise ValueError("cannot enable both use.latest.version and auto.register.schemas")
        if isinstance(schema_str, Schema):
            schema = schema_str
        else:
            schema = Schema(schema_str, "AVRO")
        self._registry = schema_registry_client
        self._schema = schema
        self._to_dict = to_dict
        self._auto_register = conf["auto.register.schemas"]
        self._normalize = conf["normalize.schemas"]
        self._use_latest = conf["use.latest.version"]
        self._strategy = conf["subject.name.strategy"]
        try:
            self._parsed, _ = schema_registry_client._parse(schema)
        except SchemaRegistryError as exc:
            raise SerializationError(f"AvroSerializer: {exc.error_message}") from None
        self._record_name = self._parsed.get("name") if isinstance(self._parsed, dict) else None
        self._known = {}  # subject -> (schema_id, parsed)

    def _writer(self, subject):
        known = self._known.get(subject)
        if known is not None:
            return known
        schema_id, latest = writer_schema_id(self._registry, subject, self._schema, self._use_latest,
                                             self._auto_register, self._normalize)
        known = (schema_id, self._registry._parse(latest)[0] if latest is not None else self._parsed)
        self._known[subject] = known
        return known

    def __call__(self, obj: Any, ctx: SerializationContext | None = None) -> bytes | None:
        if obj is None:
            return None
        subject = self._strategy(ctx, self._record_name)
        schema_id, parsed = self._writer(subject)
        value = self._to_dict(obj, ctx) if self._to_dict is not None else obj
        out = io.BytesIO()
        out.write(_header(schema_id))
        try:
            fastavro.schemaless_writer(out, parsed, value)
        except Exception as exc:
            field, reason = _avro_problem(value, parsed, exc)
            where = f"field {field!r}: " if field else ""
            raise SerializationError(f"AvroSerializer: {where}{reason}{_where(ctx)}", field=field) from None
        return out.getvalue()


def _avro_problem(value, parsed, exc):
    try:
        fastavro.validation.validate(value, parsed, raise_errors=True)
    except fastavro.validation.ValidationError as verr:
        first = verr.errors[0] if getattr(verr, "errors", None) else None
        if first is not None:
            datum = first.datum if not isinstance(first.datum, (dict, list)) else type(first.datum).__name__
            return first.field, f"{datum!r} is not a valid {first.schema}"
    except Exception:
        pass
    return None, f"{type(exc).__name__}: {exc}"


class AvroDeserializer(Deserializer):
    """Confluent-framed Avro -> objects; the writer's schema comes from the registry by id.

    schema_str (optional) is the reader's schema: records are resolved into it (fields
    added with defaults, removed fields dropped), as Avro's schema resolution does.
    """

    def __init__(self, schema_registry_client: SchemaRegistryClient, schema_str: str | Schema | None = None,
                 from_dict: Callable[[Any, SerializationContext | None], Any] | None = None,
                 return_record_name: bool = False) -> None:
        self._registry = schema_registry_client
        self._from_dict = from_dict
        self._return_record_name = return_record_name
        self._reader = None
        if schema_str is not None:
            schema = schema_str if isinstance(schema_str, Schema) else Schema(schema_str, "AVRO")
            try:
                self._reader, _ = schema_registry_client._parse(schema)
            except SchemaRegistryError as exc:
                raise SerializationError(f"AvroDeserializer: {exc.error_message}") from None
        self._writers = {}

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        if value is None:
            return None
        schema_id, payload = _read_header(value, ctx, "AvroDeserializer")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer, _ = _writer_schema(self._registry, schema_id, "AVRO", "AvroDeserializer", ctx)
            self._writers[schema_id] = writer
        try:
            obj = fastavro.schemaless_reader(io.BytesIO(payload), writer, self._reader,
                                             return_record_name=self._return_record_name)
        except Exception as exc:
            raise SerializationError(f"AvroDeserializer: cannot decode with schema {schema_id}: "
                                     f"{type(exc).__name__}: {exc}{_where(ctx)}") from None
        return self._from_dict(obj, ctx) if self._from_dict is not None else obj
