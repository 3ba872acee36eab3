"""Confluent's wire format, shared by the Avro, JSON Schema and Protobuf serializers: the
header (magic byte 0, the 4-byte big-endian schema id) and the conf check the serializers
share. The Protobuf message indexes that follow the header are encoded in .protobuf.
"""
import struct

from shmlog.serialization import SerializationError, _where

MAGIC_BYTE = 0
_ID = struct.Struct(">bI")


def _check_conf(conf, defaults, who):
    conf = dict(conf or {})
    unknown = set(conf) - set(defaults)
    if unknown:
        raise ValueError(f"Unrecognized properties: {', '.join(sorted(unknown))}")
    merged = {**defaults, **conf}
    for key in ("auto.register.schemas", "normalize.schemas", "use.latest.version", "skip.known.types",
                "use.deprecated.format"):
        if key in merged and not isinstance(merged[key], bool):
            raise ValueError(f"{who}: {key} must be a boolean value")
    for key in ("subject.name.strategy", "reference.subject.name.strategy"):
        if key in merged and not callable(merged[key]):
            raise ValueError(f"{who}: {key} must be callable")
    return merged


def writer_schema_id(registry, subject, schema, use_latest, auto_register, normalize):
    """The schema id a serializer writes under `subject`, picked as confluent-kafka's serializers
    pick it: the subject's latest version (use.latest.version), else the serializer's own schema
    registered (auto.register.schemas) or looked up. `schema` is that Schema or a function making
    it (called only when it is needed). Returns (schema_id, the latest version's Schema or None
    when the id is the serializer's own schema's)."""
    if use_latest:
        latest = registry.get_latest_version(subject)
        return latest.schema_id, latest.schema
    schema = schema() if callable(schema) else schema
    if auto_register:
        return registry.register_schema(subject, schema, normalize), None
    return registry.lookup_schema(subject, schema, normalize).schema_id, None


def _header(schema_id):
    return _ID.pack(MAGIC_BYTE, schema_id)


def _read_header(data, ctx, who):
    if data is None:
        return None, None
    view = memoryview(data).cast("B")
    if len(view) < 5:
        raise SerializationError(f"{who}: {len(view)} bytes are too short for the Confluent wire format "
                                 f"(magic byte + 4-byte schema id){_where(ctx)}")
    magic, schema_id = _ID.unpack_from(view, 0)
    if magic != MAGIC_BYTE:
        raise SerializationError(f"{who}: unexpected magic byte {magic}: this data was not written with a "
                                 f"schema registry serializer{_where(ctx)}")
    return schema_id, view[5:]
