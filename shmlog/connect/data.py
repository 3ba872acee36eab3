"""Records and Connect schemas.

A schema is kept in the form Kafka's JsonConverter writes in its envelope, so there is one form
for every converter: {"type": "struct", "fields": [{"field": "id", "type": "int64",
"optional": false}, ...], "optional": false, "name": ...}. Types: int8/16/32/64, float32/64,
boolean, string, bytes, array ("items"), map ("keys", "values"), struct ("fields"). Logical
types keep Kafka's names: a datetime is int64 named org.apache.kafka.connect.data.Timestamp
(milliseconds since the epoch on the wire), a date is int32 named ...data.Date (days).
A value without a schema (schema None) is "schemaless", as in Kafka.
"""
from __future__ import annotations

import dataclasses
import datetime
import decimal
from typing import Any

from shmlog.connect.api import DataException

TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
DATE = "org.apache.kafka.connect.data.Date"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
INTEGER_TYPES = ("int8", "int16", "int32", "int64")


@dataclasses.dataclass
class ConnectRecord:
    topic: str
    kafka_partition: int | None
    key_schema: dict | None
    key: Any
    value_schema: dict | None
    value: Any
    timestamp: int | None = None                  # ms since the epoch
    headers: list = dataclasses.field(default_factory=list)   # [(str, bytes | None)]

    def new_record(self, **changes: Any) -> ConnectRecord:
        return dataclasses.replace(self, **changes)

    def header_keys(self) -> set[str]:
        return {k for k, _ in self.headers}


@dataclasses.dataclass
class SourceRecord(ConnectRecord):
    source_partition: dict = dataclasses.field(default_factory=dict)
    source_offset: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SinkRecord(ConnectRecord):
    kafka_offset: int = -1


def timestamp_ms(value: datetime.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return (value - EPOCH) // datetime.timedelta(milliseconds=1)


def from_timestamp_ms(ms: int) -> datetime.datetime:
    return EPOCH + datetime.timedelta(milliseconds=ms)


def infer_schema(value: Any, optional: bool = False) -> dict | None:
    """A schema for a schemaless value (what JsonConverter or AvroConverter need to write one
    with schemas); None for None."""
    if value is None:
        return None
    if isinstance(value, bool):
        kind: dict = {"type": "boolean"}
    elif isinstance(value, int):
        kind = {"type": "int64"}
    elif isinstance(value, (float, decimal.Decimal)):
        kind = {"type": "float64"}
    elif isinstance(value, str):
        kind = {"type": "string"}
    elif isinstance(value, (bytes, bytearray, memoryview)):
        kind = {"type": "bytes"}
    elif isinstance(value, datetime.datetime):
        kind = {"type": "int64", "name": TIMESTAMP, "version": 1}
    elif isinstance(value, datetime.date):
        kind = {"type": "int32", "name": DATE, "version": 1}
    elif isinstance(value, dict):
        fields = []
        for name, v in value.items():
            field = infer_schema(v, optional=True) or {"type": "string", "optional": True}
            fields.append({"field": str(name), **field})
        kind = {"type": "struct", "fields": fields}
    elif isinstance(value, (list, tuple)):
        items = next((infer_schema(v, optional=True) for v in value if v is not None), None)
        kind = {"type": "array", "items": items or {"type": "string", "optional": True}}
    else:
        raise DataException(f"cannot infer a Connect schema for a value of type {type(value).__name__}")
    kind["optional"] = optional
    return kind


def field_of(schema: dict, name: str) -> dict | None:
    for f in schema.get("fields", ()):
        if f["field"] == name:
            return f
    return None


def require_struct(value: Any, schema: dict | None, purpose: str) -> dict:
    """A struct's (or schemaless map's) fields as a dict, or Kafka's DataException for anything else."""
    if schema is None:
        if not isinstance(value, dict):
            raise DataException(f"Only Map objects supported in absence of schema for [{purpose}], found: "
                                f"{type(value).__name__}")
        return value
    if schema.get("type") != "struct" or not isinstance(value, dict):
        raise DataException(f"Only Struct objects supported for [{purpose}], found: {schema.get('type')}")
    return value
