"""Converters between a record's Connect form (schema, value) and the bytes in a topic.

Kafka's four, with their class names and config keys (given to a connector as
`key.converter.X` / `value.converter.X`, or in the worker config as defaults):

    org.apache.kafka.connect.storage.StringConverter     converter.encoding (UTF-8)
    org.apache.kafka.connect.converters.ByteArrayConverter
    org.apache.kafka.connect.json.JsonConverter          schemas.enable (true)
    io.confluent.connect.avro.AvroConverter              schema.registry.url (the broker's shm:// url),
                                                         auto.register.schemas (true)
"""
from __future__ import annotations

import base64
import datetime
import decimal
import json
from typing import Any

import orjson

from shmlog.connect import data
from shmlog.connect.api import ConfigException, DataException
from shmlog.connect.config import Key, parse, refuse_unknown, resolve_class, with_prefix


class Converter:
    config_def: dict = {}

    def configure(self, props: dict[str, Any], is_key: bool, where: str = "") -> None:
        refuse_unknown(props, lambda k: k in self.config_def, where)
        self.config = parse(self.config_def, props, where)
        self.is_key = is_key

    def from_connect(self, topic: str, schema: dict | None, value: Any) -> bytes | None:
        raise NotImplementedError

    def to_connect(self, topic: str, raw: bytes | None) -> tuple[dict | None, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class StringConverter(Converter):
    config_def = {"converter.encoding": Key("converter.encoding", default="UTF-8")}

    def configure(self, props, is_key, where=""):
        super().configure(props, is_key, where)
        try:
            "".encode(self.config["converter.encoding"])
        except LookupError:
            raise ConfigException(f"Invalid value {self.config['converter.encoding']!r} for configuration "
                                  f"converter.encoding{where}: unknown encoding") from None

    def from_connect(self, topic, schema, value):
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode(self.config["converter.encoding"], errors="replace")
        return str(value).encode(self.config["converter.encoding"])

    def to_connect(self, topic, raw):
        if raw is None:
            return {"type": "string", "optional": True}, None
        try:
            return {"type": "string", "optional": True}, bytes(raw).decode(self.config["converter.encoding"])
        except UnicodeDecodeError as exc:
            raise DataException(f"Failed to deserialize string: {exc}") from None


class ByteArrayConverter(Converter):
    def from_connect(self, topic, schema, value):
        if value is None:
            return None
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise DataException(f"ByteArrayConverter is not compatible with objects of type {type(value).__name__}")
        return bytes(value)

    def to_connect(self, topic, raw):
        return {"type": "bytes", "optional": True}, None if raw is None else bytes(raw)


# ---------------------------------------------------------------------------- JSON

def to_json_value(schema: dict | None, value: Any) -> Any:
    """A Connect value as JsonConverter writes it (bytes as base64, Timestamp as ms, Date as days)."""
    if value is None:
        return None
    if schema is None:
        schema = data.infer_schema(value)
    kind, name = schema.get("type"), schema.get("name")
    if name == data.TIMESTAMP and isinstance(value, datetime.datetime):
        return data.timestamp_ms(value)
    if name == data.DATE and isinstance(value, datetime.date):
        return (value - datetime.date(1970, 1, 1)).days
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "struct":
        if not isinstance(value, dict):
            raise DataException(f"struct schema but the value is a {type(value).__name__}")
        return {f["field"]: to_json_value(f, value.get(f["field"])) for f in schema.get("fields", ())}
    if kind == "array":
        return [to_json_value(schema.get("items"), v) for v in value]
    if kind == "map":
        return {str(k): to_json_value(schema.get("values"), v) for k, v in value.items()}
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def from_json_value(schema: dict | None, value: Any) -> Any:
    if value is None or schema is None:
        return value
    kind, name = schema.get("type"), schema.get("name")
    try:
        if name == data.TIMESTAMP:
            return data.from_timestamp_ms(int(value))
        if name == data.DATE:
            return datetime.date(1970, 1, 1) + datetime.timedelta(days=int(value))
        if kind == "bytes":
            return base64.b64decode(value)
        if kind in data.INTEGER_TYPES:
            if not isinstance(value, int) or isinstance(value, bool):
                raise DataException(f"Invalid type for {kind}: {type(value).__name__}")
            return value
        if kind in ("float32", "float64"):
            return float(value)
        if kind == "boolean" and not isinstance(value, bool):
            raise DataException(f"Invalid type for boolean: {type(value).__name__}")
        if kind == "string" and not isinstance(value, str):
            raise DataException(f"Invalid type for string: {type(value).__name__}")
        if kind == "struct":
            if not isinstance(value, dict):
                raise DataException(f"Invalid type for struct: {type(value).__name__}")
            return {f["field"]: from_json_value(f, value.get(f["field"])) for f in schema.get("fields", ())}
        if kind == "array":
            return [from_json_value(schema.get("items"), v) for v in value]
        if kind == "map":
            return {k: from_json_value(schema.get("values"), v) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise DataException(f"Invalid value for schema type {kind}: {exc}") from None
    return value


class JsonConverter(Converter):
    config_def = {"schemas.enable": Key("schemas.enable", "boolean", True)}

    def from_connect(self, topic, schema, value):
        if value is None and (schema is None or schema.get("optional")):
            return None       # a null stays null (a tombstone), as Kafka's JsonConverter writes it
        if self.config["schemas.enable"]:
            if schema is None and value is not None:
                schema = data.infer_schema(value)
            doc = {"schema": schema, "payload": to_json_value(schema, value)}
        else:
            if value is None:
                return None
            doc = to_json_value(schema, value)
        try:
            return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise DataException(f"Converting Kafka Connect data to byte[] failed: {exc}") from None

    def to_connect(self, topic, raw):
        if raw is None:
            return None, None
        try:
            doc = orjson.loads(bytes(raw))
        except orjson.JSONDecodeError as exc:
            raise DataException(f"Converting byte[] to Kafka Connect data failed due to serialization error: "
                                f"{exc}") from None
        if not self.config["schemas.enable"]:
            return None, doc
        if not isinstance(doc, dict) or set(doc) != {"schema", "payload"}:
            raise DataException('JsonConverter with schemas.enable requires "schema" and "payload" fields and may '
                                'not contain additional fields. If you are trying to deserialize plain JSON data, '
                                'set schemas.enable=false in your converter configuration.')
        return doc["schema"], from_json_value(doc["schema"], doc["payload"])


# ---------------------------------------------------------------------------- Avro

_AVRO_PRIMITIVE = {"int8": "int", "int16": "int", "int32": "int", "int64": "long", "float32": "float",
                   "float64": "double", "boolean": "boolean", "string": "string", "bytes": "bytes"}


def avro_schema(schema: dict, name: str = "ConnectDefault") -> Any:
    """A Connect schema -> an Avro schema (optional types as a union with null, default null),
    as Confluent's AvroData names them (io.confluent.connect.avro.ConnectDefault)."""
    kind = schema["type"]
    if schema.get("name") == data.TIMESTAMP:
        avro: Any = {"type": "long", "logicalType": "timestamp-millis"}
    elif schema.get("name") == data.DATE:
        avro = {"type": "int", "logicalType": "date"}
    elif kind in _AVRO_PRIMITIVE:
        avro = _AVRO_PRIMITIVE[kind]
    elif kind == "struct":
        full = schema.get("name") or f"io.confluent.connect.avro.{name}"
        fields = []
        for i, f in enumerate(schema.get("fields", ())):
            ftype = avro_schema(f, f"{name}_{i}")
            fields.append({"name": f["field"], "type": ftype, **({"default": None} if f.get("optional") else {})})
        avro = {"type": "record", "name": full.rsplit(".", 1)[-1], "fields": fields}
        if "." in full:
            avro["namespace"] = full.rsplit(".", 1)[0]
        return ["null", avro] if schema.get("optional") else avro
    elif kind == "array":
        avro = {"type": "array", "items": avro_schema(schema["items"], name)}
    elif kind == "map":
        avro = {"type": "map", "values": avro_schema(schema["values"], name)}
    else:
        raise DataException(f"no Avro form for Connect type {kind!r}")
    return ["null", avro] if schema.get("optional") else avro


def connect_schema(avro: Any, optional: bool = False) -> dict:
    """An Avro schema (as fastavro parses it) -> a Connect schema."""
    if isinstance(avro, list):
        rest = [a for a in avro if a != "null"]
        return connect_schema(rest[0] if len(rest) == 1 else rest, optional=len(rest) < len(avro))
    if isinstance(avro, str):
        kind = {"int": "int32", "long": "int64", "float": "float32", "double": "float64", "boolean": "boolean",
                "string": "string", "bytes": "bytes", "null": "string"}.get(avro, "string")
        return {"type": kind, "optional": optional}
    logical = avro.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        return {"type": "int64", "name": data.TIMESTAMP, "version": 1, "optional": optional}
    if logical == "date":
        return {"type": "int32", "name": data.DATE, "version": 1, "optional": optional}
    kind = avro.get("type")
    if kind == "record":
        return {"type": "struct", "name": avro.get("name"), "optional": optional,
                "fields": [{"field": f["name"], **connect_schema(f["type"])} for f in avro["fields"]]}
    if kind == "array":
        return {"type": "array", "items": connect_schema(avro["items"]), "optional": optional}
    if kind == "map":
        return {"type": "map", "keys": {"type": "string"}, "values": connect_schema(avro["values"]),
                "optional": optional}
    return connect_schema(kind, optional)


class AvroConverter(Converter):
    config_def = {"schema.registry.url": Key("schema.registry.url", default=None),
                  "auto.register.schemas": Key("auto.register.schemas", "boolean", True)}

    def configure(self, props, is_key, where=""):
        super().configure(props, is_key, where)
        if not self.config["schema.registry.url"]:
            raise ConfigException(f"Missing required configuration \"schema.registry.url\"{where} "
                                  f"(the broker's bootstrap.servers, shm:///path/to/data_dir)")
        self._registry = None
        self._serializers: dict[str, Any] = {}
        self._deserializer = None

    def _client(self):
        if self._registry is None:
            from shmlog.schema_registry import SchemaRegistryClient
            self._registry = SchemaRegistryClient({"url": self.config["schema.registry.url"]})
        return self._registry

    def _ctx(self, topic):
        from shmlog.serialization import MessageField, SerializationContext
        return SerializationContext(topic, MessageField.KEY if self.is_key else MessageField.VALUE)

    def from_connect(self, topic, schema, value):
        if value is None:
            return None
        from shmlog.schema_registry.avro import AvroSerializer
        from shmlog.serialization import SerializationError
        if schema is None:
            schema = data.infer_schema(value)
        text = json.dumps(avro_schema({**schema, "optional": False}), sort_keys=True)
        ser = self._serializers.get(text)
        if ser is None:
            ser = AvroSerializer(self._client(), text,
                                 conf={"auto.register.schemas": self.config["auto.register.schemas"],
                                       "use.latest.version": not self.config["auto.register.schemas"]})
            self._serializers[text] = ser
        try:
            return ser(_to_avro_value(schema, value), self._ctx(topic))
        except SerializationError as exc:
            raise DataException(f"Failed to serialize Avro data from topic {topic}: {exc}") from None

    def to_connect(self, topic, raw):
        if raw is None:
            return None, None
        from shmlog.schema_registry._wire import MAGIC_BYTE
        from shmlog.serialization import SerializationError
        raw = bytes(raw)
        if len(raw) < 5 or raw[0] != MAGIC_BYTE:
            raise DataException(f"Failed to deserialize data for topic {topic} to Avro: Unknown magic byte!")
        schema_id = int.from_bytes(raw[1:5], "big")
        try:
            registered = self._client().get_schema(schema_id)
            avro = json.loads(registered.schema_str)
            from shmlog.schema_registry.avro import AvroDeserializer
            if self._deserializer is None:
                self._deserializer = AvroDeserializer(self._client())
            value = self._deserializer(raw, self._ctx(topic))
        except (SerializationError, Exception) as exc:
            if isinstance(exc, DataException):
                raise
            raise DataException(f"Failed to deserialize data for topic {topic} to Avro: {exc}") from None
        schema = connect_schema(avro)
        return schema, _from_avro_value(schema, value)

    def close(self):
        if self._registry is not None:
            self._registry.close()


def _to_avro_value(schema: dict | None, value: Any) -> Any:
    if value is None or schema is None:
        return value
    if schema.get("type") == "struct":
        return {f["field"]: _to_avro_value(f, value.get(f["field"])) for f in schema.get("fields", ())}
    if schema.get("type") == "array":
        return [_to_avro_value(schema.get("items"), v) for v in value]
    if isinstance(value, decimal.Decimal):
        return float(value)
    if schema.get("name") == data.TIMESTAMP and isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


def _from_avro_value(schema: dict, value: Any) -> Any:
    if value is None:
        return None
    if schema.get("type") == "struct" and isinstance(value, dict):
        return {f["field"]: _from_avro_value(f, value.get(f["field"])) for f in schema["fields"]}
    return value


# ---------------------------------------------------------------------------- selection

CONVERTER_ALIASES = {
    "org.apache.kafka.connect.storage.StringConverter": "shmlog.connect.converters:StringConverter",
    "org.apache.kafka.connect.converters.ByteArrayConverter": "shmlog.connect.converters:ByteArrayConverter",
    "org.apache.kafka.connect.json.JsonConverter": "shmlog.connect.converters:JsonConverter",
    "io.confluent.connect.avro.AvroConverter": "shmlog.connect.converters:AvroConverter",
}


def make_converter(class_name: str, props: dict[str, Any], is_key: bool, where: str) -> Converter:
    which = "key.converter" if is_key else "value.converter"
    cls = resolve_class(class_name, CONVERTER_ALIASES, "converter", which)
    conv = cls()
    conv.configure(props, is_key, f" ({which}={class_name}){where}")
    return conv


def converters_of(cfg: Any, worker: dict[str, Any], check_only: bool = False) -> tuple[Converter, Converter]:
    """The connector's key and value converters: its own key.converter / value.converter with
    their key.converter.* settings, else the worker's with the worker's settings."""
    out = []
    for which, is_key in (("key.converter", True), ("value.converter", False)):
        where = f" of connector {cfg.name!r}"
        if cfg.common[which]:
            name, props = cfg.common[which], with_prefix(cfg.props, which + ".")
        else:
            name, props = worker[which], with_prefix(worker["_props"], which + ".")
            if any(k.startswith(which + ".") for k in cfg.props):
                raise ConfigException(f"{which}.* settings{where} need {which} in the connector config too")
        out.append(make_converter(name, props, is_key, where))
    if check_only:
        for c in out:
            c.close()
    return out[0], out[1]
