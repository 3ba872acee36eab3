"""A schema registry in the broker's own log, with confluent-kafka's client API.

Schemas live in the internal compacted topic `_schemas` (one partition), in Confluent
Schema Registry's own record format: key `{"keytype":"SCHEMA","subject":S,"version":V,
"magic":1}` with value `{"subject","version","id","schema","schemaType","references",
"deleted"}`, and key `{"keytype":"CONFIG","subject":S|null,"magic":0}` with value
`{"compatibilityLevel":L}`. There is no registry server: every SchemaRegistryClient replays
the topic when it starts and catches up before each call, so all clients of a data dir see
one registry. Writers serialize through an flock on `<data dir>/schema-registry.lock`
(released by the kernel if the writer dies), check compatibility against the state they
just caught up to, append with acks=all and read their own record back; with one writer at
a time, a key is never written twice with different contents, so compaction (last record
per key wins) keeps exactly what the replay saw.

Wire format (Confluent's): magic byte 0, the 4-byte big-endian schema id, then the Avro
binary encoding, the UTF-8 JSON text for JSON Schema, or for Protobuf the message-index
array (zigzag varints; `[0]` as one 0 byte) and the message bytes.

Compatibility (per subject, default BACKWARD, as Confluent's): BACKWARD means the new schema
can read data written with the latest one; FORWARD the latest can read the new one's data;
FULL both; the *_TRANSITIVE forms check every live version; NONE checks nothing. Avro
follows the specification's schema-resolution rules (the ones fastavro applies when it
reads with a reader schema): fields matched by name or alias, a reader field missing from
the writer needs a default, numeric promotions int->long->float->double and
string<->bytes, enum symbols, fixed sizes, unions branch by branch. Protobuf compares
messages by full name and fields by number: the wire types must agree (int32/uint32/int64/
uint64/bool/enum, sint32/sint64, fixed32/sfixed32, fixed64/sfixed64, string/bytes are
interchangeable within a group), message-typed fields keep their type, a field does not
switch between repeated and singular, no message is removed or moved (message indexes in
existing records point at it), and proto2 required fields are not added. JSON Schema
follows Confluent's checker for the common keywords (json_schema module): types only
widen (integer -> number), no property becomes required, closed content models
(additionalProperties false) lose no property, open ones gain no typed property, enums and
bounds only widen, anyOf/oneOf keep every branch.

Protobuf schemas are registered as confluent-kafka-python does: the base64 of the
serialized FileDescriptorProto, with dependencies as references.

The package is laid out as confluent_kafka.schema_registry: here the client and its types
(Schema, SchemaReference, RegisteredSchema, SchemaRegistryError, the subject name
strategies); `shmlog.schema_registry.avro` has AvroSerializer, AvroDeserializer and the Avro
compatibility rules, `shmlog.schema_registry.protobuf` ProtobufSerializer,
ProtobufDeserializer and the Protobuf ones, `shmlog.schema_registry.json_schema`
JSONSerializer, JSONDeserializer and the JSON Schema ones, `.confluent` Confluent's own
.proto files (meta_pb2, type.decimal_pb2), `.rest` Confluent's REST API over a client
(`shmlog schemas serve`), `_wire` the wire format. The serializers and
checkers can still be imported from this package: they are loaded on first access
(`__getattr__`), since the submodules import this package.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

from shmlog import control
from shmlog.errors import KafkaError, reason_of
from shmlog.schema_registry._wire import (  # noqa: F401
    _ID,
    MAGIC_BYTE,
    _check_conf,
    _header,
    _read_header,
)

# Importable from shmlog.schema_registry when it was one module; kept so such imports still work.
from shmlog.serialization import Deserializer, SerializationError, Serializer, _where  # noqa: F401

if TYPE_CHECKING:
    from shmlog.serialization import SerializationContext

__all__ = [
    "Schema", "SchemaReference", "RegisteredSchema", "SchemaRegistryClient", "SchemaRegistryError",
    "AvroSerializer", "AvroDeserializer", "ProtobufSerializer", "ProtobufDeserializer", "JSONSerializer",
    "JSONDeserializer",
    "topic_subject_name_strategy", "topic_record_subject_name_strategy", "record_subject_name_strategy",
    "reference_subject_name_strategy", "COMPATIBILITY_LEVELS", "SCHEMAS_TOPIC",
]

SCHEMAS_TOPIC = "_schemas"
COMPATIBILITY_LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
                        "FULL_TRANSITIVE")
DEFAULT_COMPATIBILITY = "BACKWARD"
SCHEMA_TYPES = ("AVRO", "PROTOBUF", "JSON")
LOCK_FILE = "schema-registry.lock"
REPLAY_TIMEOUT_S = 30.0
WRITE_TIMEOUT_S = 30.0

# Names defined in the submodules that stay importable from the package, loaded on first
# access: importing them here eagerly would be an import cycle (the submodules import Schema
# and friends from this package).
_LAZY = {name: "avro" for name in (
    "AvroSerializer", "AvroDeserializer", "parse_avro", "avro_incompatibilities", "_AVRO_PROMOTIONS", "_NAMED",
    "_avro_kind", "_avro_describe", "_short", "_AvroResolution", "_avro_problem")}
_LAZY.update({name: "protobuf" for name in (
    "ProtobufSerializer", "ProtobufDeserializer", "parse_protobuf", "protobuf_incompatibilities",
    "encode_message_indexes", "_pb", "_PB_WIRE_GROUPS", "_PB_TYPE_NAMES", "_PB_REPEATED", "_PB_REQUIRED",
    "_pb_messages", "_pb_field_type", "_message_indexes",
    "_file_schema_str", "_pb_field_from")})
_LAZY.update({name: "json_schema" for name in (
    "JSONSerializer", "JSONDeserializer", "parse_json_schema", "json_schema_incompatibilities")})


# Type checkers see the lazily loaded serializers imported here; at run time __getattr__ loads
# them (a module __getattr__ seen by type checkers would make every misspelt name Any to them).
if TYPE_CHECKING:
    from shmlog.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: F401
    from shmlog.schema_registry.json_schema import JSONDeserializer, JSONSerializer  # noqa: F401
    from shmlog.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer  # noqa: F401
else:
    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module
        value = getattr(import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))


# ---------------------------------------------------------------------- model

class SchemaRegistryError(Exception):
    """As confluent_kafka.schema_registry.error.SchemaRegistryError: the REST status and
    error code Confluent's registry would answer with, and the message."""

    UNKNOWN = -1

    def __init__(self, http_status_code: int, error_code: int, error_message: str) -> None:
        super().__init__(error_message)
        self.http_status_code = http_status_code
        self.error_code = error_code
        self.error_message = error_message

    def __str__(self):
        return f"{self.error_message} (HTTP status code {self.http_status_code}, SR code {self.error_code})"


def _writer_schema(registry, schema_id, schema_type, who, ctx):
    """A deserializer's writer schema: the registry's schema `schema_id`, parsed ((parsed, named
    schemas)); SerializationError naming `who` and the record when it is not there or is not a
    `schema_type` schema."""
    try:
        schema = registry.get_schema(schema_id)
        if schema.schema_type != schema_type:
            raise SerializationError(f"{who}: schema {schema_id} is {schema.schema_type}, not "
                                     f"{schema_type}{_where(ctx)}")
        return registry._parse(schema)
    except SchemaRegistryError as exc:
        raise SerializationError(f"{who}: {exc.error_message}{_where(ctx)}") from None


def _not_found(code, message):
    return SchemaRegistryError(404, code, message)


class SchemaReference:
    """A named type or imported file defined by another subject's version."""

    __slots__ = ("name", "subject", "version")

    def __init__(self, name: str, subject: str, version: int) -> None:
        self.name, self.subject, self.version = name, subject, int(version)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "subject": self.subject, "version": self.version}

    def __eq__(self, other):
        return isinstance(other, SchemaReference) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((self.name, self.subject, self.version))

    def __repr__(self):
        return f"SchemaReference({self.name!r}, {self.subject!r}, {self.version})"


class Schema:
    """A schema's text, type (AVRO, PROTOBUF or JSON) and references."""

    __slots__ = ("schema_str", "schema_type", "references")

    def __init__(self, schema_str: str, schema_type: str = "AVRO",
                 references: list[SchemaReference] | None = None) -> None:
        self.schema_str = schema_str
        self.schema_type = (schema_type or "AVRO").upper()
        self.references = list(references or [])

    def _identity(self):
        text = self.schema_str
        if self.schema_type in ("AVRO", "JSON"):
            try:
                text = orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
            except orjson.JSONDecodeError:
                pass
        else:
            text = text.strip()
        return (self.schema_type, text, tuple((r.name, r.subject, r.version) for r in self.references))

    def __eq__(self, other):
        return isinstance(other, Schema) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())

    def __repr__(self):
        text = self.schema_str if len(self.schema_str) < 60 else self.schema_str[:57] + "..."
        return f"Schema({text!r}, {self.schema_type!r})"


class RegisteredSchema:
    """A schema as registered under a subject: id, schema, subject, version."""

    __slots__ = ("schema_id", "schema", "subject", "version")

    def __init__(self, schema_id: int, schema: Schema, subject: str, version: int) -> None:
        self.schema_id, self.schema, self.subject, self.version = schema_id, schema, subject, version

    def __eq__(self, other):
        return isinstance(other, RegisteredSchema) and (self.schema_id, self.schema, self.subject, self.version) == \
            (other.schema_id, other.schema, other.subject, other.version)

    def __repr__(self):
        return f"RegisteredSchema(id={self.schema_id}, subject={self.subject!r}, version={self.version})"


# ---------------------------------------------------------------------- the client

def _key(keytype, subject, version=None):
    key = {"keytype": keytype, "subject": subject}
    if version is not None:
        key["version"] = version
    key["magic"] = 1 if keytype == "SCHEMA" else 0
    return orjson.dumps(key)


class SchemaRegistryClient:
    """confluent_kafka.schema_registry.SchemaRegistryClient over a shmlog broker.

    conf: {"url": <bootstrap.servers>} (the broker's `shm:///data/dir` string; a
    "bootstrap.servers" key works too). A Kafka cluster's host:port works as well (shmlog.clients:
    through confluent-kafka): the registry is then that cluster's topic, replayed read_committed,
    and writers exclude each other with the transactional.id `<topic>-writer` instead of the data
    dir's lock file; a write that loses a race with another client's raises
    SchemaRegistryError(409, 50003) having written nothing (docs/migration.md). An http(s)://
    url is refused with a ValueError that says so: this client reads the broker's topic, and
    HTTP registries (including `shmlog schemas serve`) are for confluent_kafka's client.
    Optional: "topic" (default `_schemas`), and "timeout.s" for replays and writes. Close it
    (or use it as a context manager) to release its consumer and producer.
    """

    def __init__(self, conf: dict[str, Any]) -> None:
        conf = dict(conf or {})
        url = conf.pop("url", None) or conf.pop("bootstrap.servers", None)
        if not url:
            raise ValueError("SchemaRegistryClient needs conf['url']: the broker's bootstrap.servers "
                             "(shm:///path/to/data_dir)")
        self._topic = conf.pop("topic", SCHEMAS_TOPIC)
        self._timeout = float(conf.pop("timeout.s", REPLAY_TIMEOUT_S))
        for ignored in ("basic.auth.credentials.source", "basic.auth.user.info", "ssl.ca.location",
                        "ssl.certificate.location", "ssl.key.location", "cache.capacity", "cache.latest.ttl.sec",
                        "timeout.ms", "max.retries", "retries.wait.ms", "retries.max.wait.ms"):
            conf.pop(ignored, None)  # HTTP-client settings of Confluent's client: no meaning here
        if conf:
            raise ValueError(f"Unrecognized properties: {', '.join(sorted(conf))}")
        first = str(url).split(",")[0].strip()
        if first.lower().startswith(("http://", "https://")):
            raise ValueError(
                f"SchemaRegistryClient: url={first!r} is an HTTP schema registry. This client keeps the registry "
                f"in a shmlog broker's {self._topic!r} topic and takes that broker's bootstrap.servers as url "
                f"(shm:///path/to/data_dir); it does not speak HTTP. For an HTTP registry (Confluent Schema "
                f"Registry, or `shmlog schemas serve`) use confluent_kafka.schema_registry.SchemaRegistryClient "
                f"with its serializers.")
        self._url = url
        from shmlog import clients
        self._lib = clients.library(url)   # a shmlog broker's clients, or confluent-kafka's for a Kafka cluster
        self._on_kafka = self._lib.__name__ != "shmlog"
        self._lock = threading.RLock()
        if self._on_kafka:
            # No shared data dir to lock in: writers exclude each other by transactional.id (see _WriteLock).
            self._data_dir = self._lock_path = None
        else:
            self._data_dir = control.data_dir_from_bootstrap(url)
            self._lock_path = os.path.join(self._data_dir, LOCK_FILE)
        self._client_conf = {"bootstrap.servers": url}
        self._producer = None
        self._closed = False
        # replayed state
        self._versions = {}     # subject -> {version: (schema_id, deleted)}
        self._schemas = {}      # schema_id -> Schema
        self._ids = {}          # Schema identity -> schema_id
        self._config = {}       # subject (None = global) -> level
        self._parsed = {}       # schema_id -> parsed form (cache)
        self._ensure_topic()
        if self._on_kafka:
            self._consumer = self._lib.Consumer({**self._client_conf, "group.id": f"{self._topic}-reader",
                                                 "enable.auto.commit": False, "isolation.level": "read_committed"})
        else:
            from shmlog.client.consumer import Consumer
            self._consumer = Consumer(self._client_conf)
        self._tp = self._lib.TopicPartition(self._topic, 0)
        self._consumer.assign([self._lib.TopicPartition(self._topic, 0, self._lib.OFFSET_BEGINNING)])
        self._catch_up()

    # ------------------------------------------------------------------ plumbing

    def _ensure_topic(self):
        lib = self._lib
        admin = lib.AdminClient(self._client_conf)
        try:
            future = admin.create_topics([lib.NewTopic(self._topic, 1, config={"cleanup.policy": "compact"})])
            try:
                future[self._topic].result()
            except lib.KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        finally:
            admin.close()

    def _position(self):
        return self._consumer.position([self._tp])[0].offset

    def _catch_up(self, through=None):
        """Apply every record of the topic up to its current end (and at least `through`)."""
        if self._closed:
            raise RuntimeError("SchemaRegistryClient closed")
        low, high = self._consumer.get_watermark_offsets(self._tp)
        if through is None and high <= low and self._position() < 0:
            return   # an empty topic: nothing to replay (confluent-kafka has no position before a fetch)
        target = high if through is None else max(high, through + 1)
        deadline = time.monotonic() + self._timeout
        while self._position() < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SchemaRegistryError(500, 50002, f"timed out replaying topic {self._topic!r} at offset "
                                          f"{self._position()} of {target}")
            for msg in self._consumer.consume(1000, timeout=min(remaining, 0.5)):
                self._apply(msg.key(), msg.value())

    def _apply(self, key, value):
        try:
            k = orjson.loads(key) if key else {}
        except orjson.JSONDecodeError:
            return  # not a registry record
        keytype, subject = k.get("keytype"), k.get("subject")
        if keytype == "SCHEMA":
            versions = self._versions.setdefault(subject, {})
            if value is None:  # permanent delete
                versions.pop(k.get("version"), None)
                if not versions:
                    self._versions.pop(subject, None)
                return
            v = orjson.loads(value)
            refs = [SchemaReference(r["name"], r["subject"], r["version"]) for r in v.get("references") or ()]
            schema = Schema(v["schema"], v.get("schemaType", "AVRO"), refs)
            schema_id = v["id"]
            self._schemas.setdefault(schema_id, schema)
            self._ids.setdefault(schema._identity(), schema_id)
            versions[v["version"]] = (schema_id, bool(v.get("deleted")))
        elif keytype == "CONFIG":
            if value is None:
                self._config.pop(subject, None)
            else:
                self._config[subject] = orjson.loads(value)["compatibilityLevel"]

    def _append(self, key, value):
        """Write one record with acks=all and read it back; returns its offset."""
        reports = []
        if self._on_kafka:
            producer = self._writer   # the write lock's transactional producer
            try:
                producer.begin_transaction()
                producer.produce(self._topic, key=key, value=value, partition=0,
                                 on_delivery=lambda err, msg: reports.append((err, msg)))
                producer.commit_transaction(WRITE_TIMEOUT_S)
            except self._lib.KafkaException as exc:
                # Fenced: another client took the write lock (init_transactions) since ours, so
                # what was checked may be stale; nothing of this write is visible.
                raise SchemaRegistryError(409, 50003, f"another client wrote to {self._topic!r} at the same "
                                          f"time; nothing was written, try again ({exc.args[0].str()})") from None
        else:
            from shmlog.client.producer import Producer
            if self._producer is None:
                self._producer = Producer({**self._client_conf, "acks": "all", "linger.ms": 0})
            self._producer.produce(self._topic, key=key, value=value, partition=0,
                                   on_delivery=lambda err, msg: reports.append((err, msg)))
            self._producer.flush(WRITE_TIMEOUT_S)
        if not reports or reports[0][0] is not None:
            reason = reports[0][0] if reports else "no delivery report within the timeout"
            raise SchemaRegistryError(500, 50001, f"cannot write to topic {self._topic!r}: {reason}")
        offset = reports[0][1].offset()
        self._catch_up(offset)
        return offset

    class _WriteLock:
        def __init__(self, client):
            self.client = client
            self.fd = None

        def __enter__(self):
            self.client._lock.acquire()
            if self.client._on_kafka:
                # On a Kafka cluster the lock is the transactional.id `<topic>-writer`: init_transactions
                # fences every earlier holder and completes or aborts its open write, so after it the
                # replay (read_committed) sees every committed write, and our commit succeeds only if
                # no other client took the lock since (a fenced commit writes nothing: _append).
                try:
                    lib, client = self.client._lib, self.client
                    client._writer = lib.Producer({**client._client_conf, "acks": "all", "linger.ms": 0,
                                                   "transactional.id": f"{client._topic}-writer"})
                    client._writer.init_transactions(WRITE_TIMEOUT_S)
                    client._catch_up()
                except BaseException:
                    self.__exit__(None, None, None)
                    raise
                return self
            try:
                try:
                    self.fd = os.open(self.client._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except PermissionError:  # a broker shared with our group: its 0640 file (flock needs no write)
                    self.fd = os.open(self.client._lock_path, os.O_RDONLY | os.O_CLOEXEC)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                self.client._catch_up()
            except BaseException:
                self.__exit__(None, None, None)
                raise
            return self

        def __exit__(self, *exc):
            writer = getattr(self.client, "_writer", None)
            if writer is not None:
                self.client._writer = None
                writer.flush(WRITE_TIMEOUT_S)
            if self.fd is not None:
                os.close(self.fd)  # drops the flock
                self.fd = None
            self.client._lock.release()

    def _write_lock(self):
        return self._WriteLock(self)

    # ------------------------------------------------------------------ lookups

    def _live(self, subject):
        return sorted(v for v, (_, deleted) in self._versions.get(subject, {}).items() if not deleted)

    def _registered(self, subject, version):
        schema_id, _ = self._versions[subject][version]
        return RegisteredSchema(schema_id, self._schemas[schema_id], subject, version)

    def _resolve_version(self, subject, version, include_deleted=False):
        versions = self._versions.get(subject)
        live = self._live(subject)
        if not versions or (not live and not include_deleted):
            raise _not_found(40401, f"Subject '{subject}' not found.")
        if version in ("latest", -1, None):
            if not live:
                raise _not_found(40402, f"Subject '{subject}' has no live version.")
            return live[-1]
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise SchemaRegistryError(422, 42202, f"The specified version '{version}' is not a valid version id. "
                                      f"Allowed values are between [1, 2^31-1] and the string \"latest\"") from None
        entry = versions.get(version)
        if entry is None or (entry[1] and not include_deleted):
            raise _not_found(40402, f"Version {version} not found.")
        return version

    def get_subjects(self) -> list[str]:
        with self._lock:
            self._catch_up()
            return sorted(s for s in self._versions if self._live(s))

    def get_versions(self, subject_name: str) -> list[int]:
        with self._lock:
            self._catch_up()
            live = self._live(subject_name)
            if not live:
                raise _not_found(40401, f"Subject '{subject_name}' not found.")
            return live

    def get_version(self, subject_name: str, version: int | str) -> RegisteredSchema:
        with self._lock:
            self._catch_up()
            return self._registered(subject_name, self._resolve_version(subject_name, version))

    def get_latest_version(self, subject_name: str) -> RegisteredSchema:
        return self.get_version(subject_name, "latest")

    def get_schema(self, schema_id: int) -> Schema:
        with self._lock:
            schema = self._schemas.get(schema_id)
            if schema is None:
                self._catch_up()
                schema = self._schemas.get(schema_id)
            if schema is None:
                raise _not_found(40403, f"Schema {schema_id} not found")
            return schema

    def lookup_schema(self, subject_name: str, schema: Schema, normalize_schemas: bool = False) -> RegisteredSchema:
        with self._lock:
            self._catch_up()
            schema_id = self._ids.get(schema._identity())
            for version in reversed(self._live(subject_name)):
                if self._versions[subject_name][version][0] == schema_id:
                    return self._registered(subject_name, version)
            if not self._live(subject_name):
                raise _not_found(40401, f"Subject '{subject_name}' not found.")
            raise _not_found(40403, "Schema not found")

    def get_compatibility(self, subject_name: str | None = None) -> str:
        with self._lock:
            self._catch_up()
            if subject_name is not None and subject_name in self._config:
                return self._config[subject_name]
            return self._config.get(None, DEFAULT_COMPATIBILITY)

    # ------------------------------------------------------------------ parsing and compatibility

    def _parse(self, schema, _depth=0):
        """(parsed, named types) of a schema, its references resolved; SchemaRegistryError 422."""
        if schema.schema_type not in SCHEMA_TYPES:
            raise SchemaRegistryError(422, 42201, f"Invalid schema type {schema.schema_type!r}: this registry "
                                      f"stores {' and '.join(SCHEMA_TYPES)} schemas")
        if schema.schema_type == "PROTOBUF":
            # imported here, not at the top: .protobuf and .avro import this package
            from shmlog.schema_registry.protobuf import parse_protobuf
            return parse_protobuf(schema.schema_str), {}
        named = {}
        if _depth > 32:
            raise SchemaRegistryError(422, 42201, "Invalid schema: references nest deeper than 32 levels")
        if schema.schema_type == "JSON":
            from shmlog.schema_registry.json_schema import parse_json_schema
            for ref in schema.references:
                ref_version = self._resolve_version(ref.subject, ref.version, include_deleted=True)
                referenced = self._registered(ref.subject, ref_version).schema
                ref_parsed, ref_named = self._parse(referenced, _depth + 1)
                named.update(ref_named)
                named[ref.name] = ref_parsed
            return parse_json_schema(schema.schema_str), named
        for ref in schema.references:
            ref_version = self._resolve_version(ref.subject, ref.version, include_deleted=True)
            referenced = self._registered(ref.subject, ref_version).schema
            _, ref_named = self._parse(referenced, _depth + 1)
            named.update(ref_named)
        from shmlog.schema_registry.avro import parse_avro
        try:
            return parse_avro(schema.schema_str, named), named
        except SchemaRegistryError:
            raise
        except Exception as exc:
            raise SchemaRegistryError(422, 42201, f"Invalid schema: {reason_of(exc)}") from None

    def _problems(self, new, existing, existing_version, level):
        if new.schema_type != existing.schema_type:
            return [f"version {existing_version} is {existing.schema_type}, the new schema {new.schema_type}"]
        new_parsed, new_named = self._parse(new)
        old_parsed, old_named = self._parse(existing)
        problems = []
        directions = []
        if level.startswith(("BACKWARD", "FULL")):
            directions.append(("the new schema cannot read data written with version", new_parsed, new_named,
                               old_parsed, old_named))
        if level.startswith(("FORWARD", "FULL")):
            directions.append(("data written with the new schema cannot be read with version", old_parsed,
                               old_named, new_parsed, new_named))
        for what, reader, rnamed, writer, wnamed in directions:
            if new.schema_type == "AVRO":
                from shmlog.schema_registry.avro import avro_incompatibilities
                found = avro_incompatibilities(reader, writer, rnamed, wnamed)
            elif new.schema_type == "JSON":
                from shmlog.schema_registry.json_schema import json_schema_incompatibilities
                found = json_schema_incompatibilities(reader, writer)
            else:
                from shmlog.schema_registry.protobuf import protobuf_incompatibilities
                found = protobuf_incompatibilities(reader, writer)
            problems += [f"{what} {existing_version}: {p}" for p in found]
        return problems

    def _incompatibilities(self, subject, schema, version="all-per-level"):
        level = self.get_compatibility(subject)
        if level == "NONE":
            self._parse(schema)  # still refuse what does not parse
            return []
        live = self._live(subject)
        if version == "all-per-level":
            against = live if level.endswith("_TRANSITIVE") else live[-1:]
        else:
            against = [self._resolve_version(subject, version)]
        problems = []
        for v in against:
            problems += self._problems(schema, self._registered(subject, v).schema, v, level)
        if not against:
            self._parse(schema)
        return problems

    def check_compatibility(self, subject_name: str, schema: Schema, version: int | str = "latest") -> list[str]:
        """Why `schema` may not be registered under subject_name ([] = it may), under the
        subject's compatibility level; version "latest" (or a number) picks the version to
        check against, None every version the level checks (all for *_TRANSITIVE)."""
        with self._lock:
            self._catch_up()
            if not self._live(subject_name):
                self._parse(schema)
                return []
            return self._incompatibilities(subject_name, schema,
                                           "all-per-level" if version is None else version)

    def test_compatibility(self, subject_name: str, schema: Schema, version: int | str = "latest") -> bool:
        """True when `schema` is compatible with the subject's version (default the latest)."""
        return not self.check_compatibility(subject_name, schema, version)

    # ------------------------------------------------------------------ writes

    def register_schema(self, subject_name: str, schema: Schema, normalize_schemas: bool = False) -> int:
        """Register `schema` under subject_name; returns its schema id.

        The same schema registered again returns its id; an incompatible one raises
        SchemaRegistryError 409 with every reason; an unparsable one 422."""
        return self.register_schema_full_response(subject_name, schema, normalize_schemas).schema_id

    def register_schema_full_response(self, subject_name: str, schema: Schema,
                                      normalize_schemas: bool = False) -> RegisteredSchema:
        if not isinstance(schema, Schema):
            raise TypeError(f"schema must be a Schema, not {type(schema).__name__}")
        if not subject_name:
            raise SchemaRegistryError(422, 42208, "Invalid subject: empty")
        with self._write_lock():
            identity = schema._identity()
            existing_id = self._ids.get(identity)
            for version in reversed(self._live(subject_name)):
                if self._versions[subject_name][version][0] == existing_id:
                    return self._registered(subject_name, version)
            problems = self._incompatibilities(subject_name, schema)
            if problems:
                raise SchemaRegistryError(409, 409, f"Schema being registered is incompatible with an earlier "
                                          f"schema for subject \"{subject_name}\" "
                                          f"(compatibility {self.get_compatibility(subject_name)}): "
                                          + "; ".join(problems))
            schema_id = existing_id if existing_id is not None else max(self._schemas, default=0) + 1
            version = max(self._versions.get(subject_name, {}), default=0) + 1
            value = {"subject": subject_name, "version": version, "id": schema_id, "schema": schema.schema_str,
                     "deleted": False}
            if schema.schema_type != "AVRO":
                value["schemaType"] = schema.schema_type
            if schema.references:
                value["references"] = [r.to_dict() for r in schema.references]
            self._append(_key("SCHEMA", subject_name, version), orjson.dumps(value))
            return self._registered(subject_name, version)

    def set_compatibility(self, subject_name: str | None = None, level: str | None = None) -> str:
        """Set the compatibility level of a subject (None: the global default); returns it."""
        level = str(level or "").upper()
        if level not in COMPATIBILITY_LEVELS:
            raise SchemaRegistryError(422, 42203, f"Invalid compatibility level {level!r}: one of "
                                      f"{', '.join(COMPATIBILITY_LEVELS)}")
        with self._write_lock():
            self._append(_key("CONFIG", subject_name), orjson.dumps({"compatibilityLevel": level}))
        return level

    def delete_compatibility(self, subject_name: str | None = None) -> str:
        """Remove a subject's own compatibility level (it falls back to the global one), or
        with None reset the global level to the default; returns the level removed."""
        with self._write_lock():
            if subject_name is not None and subject_name not in self._config:
                raise SchemaRegistryError(404, 40408, f"Subject '{subject_name}' does not have subject-level "
                                          f"compatibility configured")
            old = self._config.get(subject_name, DEFAULT_COMPATIBILITY)
            if subject_name in self._config:
                self._append(_key("CONFIG", subject_name), None)
            return old

    def delete_subject(self, subject_name: str, permanent: bool = False) -> list[int]:
        """Soft-delete every version of a subject (permanent=True: erase soft-deleted ones);
        returns the versions deleted."""
        with self._write_lock():
            versions = self._versions.get(subject_name)
            if not versions:
                raise _not_found(40401, f"Subject '{subject_name}' not found.")
            if permanent:
                live = self._live(subject_name)
                if live:
                    raise SchemaRegistryError(404, 40405, f"Subject '{subject_name}' was not deleted first "
                                              f"before being permanently deleted")
                done = sorted(versions)
                for v in done:
                    self._append(_key("SCHEMA", subject_name, v), None)
                return done
            done = self._live(subject_name)
            if not done:
                raise SchemaRegistryError(404, 40404, f"Subject '{subject_name}' was soft deleted.")
            for v in done:
                self._soft_delete(subject_name, v)
            return done

    def delete_version(self, subject_name: str, version: int | str, permanent: bool = False) -> int:
        """Soft-delete one version (permanent=True: erase it once soft-deleted); returns it."""
        with self._write_lock():
            v = self._resolve_version(subject_name, version, include_deleted=permanent)
            if permanent:
                if not self._versions[subject_name][v][1]:
                    raise SchemaRegistryError(404, 40407, f"Subject '{subject_name}' Version {v} was not "
                                              f"deleted first before being permanently deleted")
                self._append(_key("SCHEMA", subject_name, v), None)
            else:
                self._soft_delete(subject_name, v)
            return v

    def _soft_delete(self, subject, version):
        reg = self._registered(subject, version)
        value = {"subject": subject, "version": version, "id": reg.schema_id, "schema": reg.schema.schema_str,
                 "deleted": True}
        if reg.schema.schema_type != "AVRO":
            value["schemaType"] = reg.schema.schema_type
        if reg.schema.references:
            value["references"] = [r.to_dict() for r in reg.schema.references]
        self._append(_key("SCHEMA", subject, version), orjson.dumps(value))

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._producer is not None:
            self._producer.close()
        self._consumer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            cluster = getattr(self._consumer, "_cluster", None)
            if not self._closed and (cluster is None or not cluster.forked()):
                self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------- subject names

def topic_subject_name_strategy(ctx: SerializationContext, record_name: str | None) -> str | None:
    """`<topic>-key` / `<topic>-value` (Confluent's default)."""
    return f"{ctx.topic}-{ctx.field}"


def topic_record_subject_name_strategy(ctx: SerializationContext, record_name: str | None) -> str | None:
    return f"{ctx.topic}-{record_name}"


def record_subject_name_strategy(ctx: SerializationContext, record_name: str | None) -> str | None:
    return record_name


def reference_subject_name_strategy(ctx: SerializationContext, schema_ref: SchemaReference) -> str | None:
    """A Protobuf dependency is registered under its file name."""
    return schema_ref.name
