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
binary encoding, or for Protobuf the message-index array (zigzag varints; `[0]` as one 0
byte) and the message bytes.

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
existing records point at it), and proto2 required fields are not added.

Protobuf schemas are registered as confluent-kafka-python does: the base64 of the
serialized FileDescriptorProto, with dependencies as references.
"""
import base64
import fcntl
import io
import os
import struct
import threading
import time

import fastavro
import fastavro.validation
import orjson

from . import protocol
from .errors import KafkaError, KafkaException
from .message import OFFSET_BEGINNING, TopicPartition
from .serialization import Deserializer, SerializationError, Serializer, _where

__all__ = [
    "Schema", "SchemaReference", "RegisteredSchema", "SchemaRegistryClient", "SchemaRegistryError",
    "AvroSerializer", "AvroDeserializer", "ProtobufSerializer", "ProtobufDeserializer",
    "topic_subject_name_strategy", "topic_record_subject_name_strategy", "record_subject_name_strategy",
    "reference_subject_name_strategy", "COMPATIBILITY_LEVELS", "SCHEMAS_TOPIC",
]

SCHEMAS_TOPIC = "_schemas"
COMPATIBILITY_LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
                        "FULL_TRANSITIVE")
DEFAULT_COMPATIBILITY = "BACKWARD"
SCHEMA_TYPES = ("AVRO", "PROTOBUF")
MAGIC_BYTE = 0
_ID = struct.Struct(">bI")
LOCK_FILE = "schema-registry.lock"
REPLAY_TIMEOUT_S = 30.0
WRITE_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------- model

class SchemaRegistryError(Exception):
    """As confluent_kafka.schema_registry.error.SchemaRegistryError: the REST status and
    error code Confluent's registry would answer with, and the message."""

    UNKNOWN = -1

    def __init__(self, http_status_code, error_code, error_message):
        super().__init__(error_message)
        self.http_status_code = http_status_code
        self.error_code = error_code
        self.error_message = error_message

    def __str__(self):
        return f"{self.error_message} (HTTP status code {self.http_status_code}, SR code {self.error_code})"


def _not_found(code, message):
    return SchemaRegistryError(404, code, message)


class SchemaReference:
    """A named type or imported file defined by another subject's version."""

    __slots__ = ("name", "subject", "version")

    def __init__(self, name, subject, version):
        self.name, self.subject, self.version = name, subject, int(version)

    def to_dict(self):
        return {"name": self.name, "subject": self.subject, "version": self.version}

    def __eq__(self, other):
        return isinstance(other, SchemaReference) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((self.name, self.subject, self.version))

    def __repr__(self):
        return f"SchemaReference({self.name!r}, {self.subject!r}, {self.version})"


class Schema:
    """A schema's text, type (AVRO or PROTOBUF) and references."""

    __slots__ = ("schema_str", "schema_type", "references")

    def __init__(self, schema_str, schema_type="AVRO", references=None):
        self.schema_str = schema_str
        self.schema_type = (schema_type or "AVRO").upper()
        self.references = list(references or [])

    def _identity(self):
        text = self.schema_str
        if self.schema_type == "AVRO":
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

    def __init__(self, schema_id, schema, subject, version):
        self.schema_id, self.schema, self.subject, self.version = schema_id, schema, subject, version

    def __eq__(self, other):
        return isinstance(other, RegisteredSchema) and (self.schema_id, self.schema, self.subject, self.version) == \
            (other.schema_id, other.schema, other.subject, other.version)

    def __repr__(self):
        return f"RegisteredSchema(id={self.schema_id}, subject={self.subject!r}, version={self.version})"


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


# ---------------------------------------------------------------------- Protobuf compatibility

def _pb():
    from google.protobuf import descriptor_pb2
    return descriptor_pb2


_PB_WIRE_GROUPS = {}
for _group, _types in enumerate(((3, 4, 5, 8, 13, 14), (17, 18), (7, 15), (6, 16), (9, 12), (1,), (2,), (11,),
                                 (10,))):
    for _t in _types:
        _PB_WIRE_GROUPS[_t] = _group
_PB_TYPE_NAMES = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32",
                  8: "bool", 9: "string", 10: "group", 11: "message", 12: "bytes", 13: "uint32", 14: "enum",
                  15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64"}
_PB_REPEATED, _PB_REQUIRED = 3, 2


def parse_protobuf(schema_str):
    """A FileDescriptorProto from a registered PROTOBUF schema (base64 of its serialized bytes)."""
    text = schema_str.strip()
    fdp = _pb().FileDescriptorProto()
    try:
        raw = base64.b64decode(text, validate=True)
        fdp.ParseFromString(raw)
    except Exception:
        hint = " (.proto source text cannot be parsed here: register the FileDescriptorProto, e.g. with " \
               "ProtobufSerializer or `protoc --descriptor_set_out`)" if "message " in text or "syntax" in text else ""
        raise SchemaRegistryError(422, 42201, "Invalid schema: a PROTOBUF schema must be the base64 of a "
                                  "serialized FileDescriptorProto" + hint) from None
    if not fdp.name and not fdp.message_type:
        raise SchemaRegistryError(422, 42201, "Invalid schema: the FileDescriptorProto defines no file name "
                                  "and no message")
    return fdp


def _pb_messages(fdp):
    """{full name: (DescriptorProto, message index path)} of every message in the file."""
    out = {}

    def walk(messages, prefix, path):
        for i, m in enumerate(messages):
            name = f"{prefix}.{m.name}" if prefix else m.name
            out[name] = (m, path + (i,))
            walk(m.nested_type, name, path + (i,))
    walk(fdp.message_type, fdp.package, ())
    return out


def _pb_field_type(f):
    return f.type_name.lstrip(".") if f.type in (11, 14) and f.type_name else _PB_TYPE_NAMES.get(f.type, f.type)


def protobuf_incompatibilities(reader, writer):
    """Reasons records written with FileDescriptorProto `writer` cannot be read with `reader`."""
    problems = []
    if reader.package != writer.package:
        problems.append(f"package changed from {writer.package!r} to {reader.package!r}")
    rmsgs, wmsgs = _pb_messages(reader), _pb_messages(writer)
    for name, (wm, wpath) in wmsgs.items():
        if name not in rmsgs:
            problems.append(f"message {name} was removed")
            continue
        rm, rpath = rmsgs[name]
        if rpath != wpath:
            problems.append(f"message {name} moved from index {list(wpath)} to {list(rpath)} "
                            f"(records carry message indexes)")
        rfields = {f.number: f for f in rm.field}
        wfields = {f.number: f for f in wm.field}
        for number, wf in wfields.items():
            rf = rfields.get(number)
            if rf is None:
                continue
            where = f"{name}.{rf.name} (field {number})"
            if (rf.label == _PB_REPEATED) != (wf.label == _PB_REPEATED):
                problems.append(f"{where}: changed between repeated and singular")
            elif _PB_WIRE_GROUPS.get(rf.type) != _PB_WIRE_GROUPS.get(wf.type):
                problems.append(f"{where}: type changed from {_pb_field_type(wf)} to {_pb_field_type(rf)} "
                                f"(not wire-compatible)")
            elif rf.type in (10, 11) and rf.type_name.lstrip(".") != wf.type_name.lstrip("."):
                problems.append(f"{where}: message type changed from {_pb_field_type(wf)} to {_pb_field_type(rf)}")
        for number, rf in rfields.items():
            if rf.label == _PB_REQUIRED and number not in wfields:
                problems.append(f"{name}.{rf.name} (field {number}): required in the reader but the writer's "
                                f"schema does not have it")
    return problems


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
    "bootstrap.servers" key works too). Optional: "topic" (default `_schemas`), and
    "timeout.s" for replays and writes. Close it (or use it as a context manager) to
    release its consumer and producer.
    """

    def __init__(self, conf):
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
        self._url = url
        self._data_dir = protocol.data_dir_from_bootstrap(url)
        self._lock = threading.RLock()
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
        from .consumer import Consumer
        self._consumer = Consumer(self._client_conf)
        self._tp = TopicPartition(self._topic, 0)
        self._consumer.assign([TopicPartition(self._topic, 0, OFFSET_BEGINNING)])
        self._catch_up()

    # ------------------------------------------------------------------ plumbing

    def _ensure_topic(self):
        from .admin import AdminClient, NewTopic
        admin = AdminClient(self._client_conf)
        try:
            future = admin.create_topics([NewTopic(self._topic, 1, config={"cleanup.policy": "compact"})])
            try:
                future[self._topic].result()
            except KafkaException as exc:
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
        _, high = self._consumer.get_watermark_offsets(self._tp)
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
        from .producer import Producer
        if self._producer is None:
            self._producer = Producer({**self._client_conf, "acks": "all", "linger.ms": 0})
        reports = []
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
            try:
                self.fd = os.open(self.client._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                self.client._catch_up()
            except BaseException:
                self.__exit__(None, None, None)
                raise
            return self

        def __exit__(self, *exc):
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

    def get_subjects(self):
        with self._lock:
            self._catch_up()
            return sorted(s for s in self._versions if self._live(s))

    def get_versions(self, subject_name):
        with self._lock:
            self._catch_up()
            live = self._live(subject_name)
            if not live:
                raise _not_found(40401, f"Subject '{subject_name}' not found.")
            return live

    def get_version(self, subject_name, version):
        with self._lock:
            self._catch_up()
            return self._registered(subject_name, self._resolve_version(subject_name, version))

    def get_latest_version(self, subject_name):
        return self.get_version(subject_name, "latest")

    def get_schema(self, schema_id):
        with self._lock:
            schema = self._schemas.get(schema_id)
            if schema is None:
                self._catch_up()
                schema = self._schemas.get(schema_id)
            if schema is None:
                raise _not_found(40403, f"Schema {schema_id} not found")
            return schema

    def lookup_schema(self, subject_name, schema, normalize_schemas=False):
        with self._lock:
            self._catch_up()
            schema_id = self._ids.get(schema._identity())
            for version in reversed(self._live(subject_name)):
                if self._versions[subject_name][version][0] == schema_id:
                    return self._registered(subject_name, version)
            if not self._live(subject_name):
                raise _not_found(40401, f"Subject '{subject_name}' not found.")
            raise _not_found(40403, "Schema not found")

    def get_compatibility(self, subject_name=None):
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
            return parse_protobuf(schema.schema_str), {}
        named = {}
        if _depth > 32:
            raise SchemaRegistryError(422, 42201, "Invalid schema: references nest deeper than 32 levels")
        for ref in schema.references:
            ref_version = self._resolve_version(ref.subject, ref.version, include_deleted=True)
            referenced = self._registered(ref.subject, ref_version).schema
            _, ref_named = self._parse(referenced, _depth + 1)
            named.update(ref_named)
        try:
            return parse_avro(schema.schema_str, named), named
        except SchemaRegistryError:
            raise
        except Exception as exc:
            raise SchemaRegistryError(422, 42201, f"Invalid schema: {exc}") from None

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
                found = avro_incompatibilities(reader, writer, rnamed, wnamed)
            else:
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

    def check_compatibility(self, subject_name, schema, version="latest"):
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

    def test_compatibility(self, subject_name, schema, version="latest"):
        """True when `schema` is compatible with the subject's version (default the latest)."""
        return not self.check_compatibility(subject_name, schema, version)

    # ------------------------------------------------------------------ writes

    def register_schema(self, subject_name, schema, normalize_schemas=False):
        """Register `schema` under subject_name; returns its schema id.

        The same schema registered again returns its id; an incompatible one raises
        SchemaRegistryError 409 with every reason; an unparsable one 422."""
        return self.register_schema_full_response(subject_name, schema, normalize_schemas).schema_id

    def register_schema_full_response(self, subject_name, schema, normalize_schemas=False):
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

    def set_compatibility(self, subject_name=None, level=None):
        """Set the compatibility level of a subject (None: the global default); returns it."""
        level = str(level or "").upper()
        if level not in COMPATIBILITY_LEVELS:
            raise SchemaRegistryError(422, 42203, f"Invalid compatibility level {level!r}: one of "
                                      f"{', '.join(COMPATIBILITY_LEVELS)}")
        with self._write_lock():
            self._append(_key("CONFIG", subject_name), orjson.dumps({"compatibilityLevel": level}))
        return level

    def delete_subject(self, subject_name, permanent=False):
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

    def delete_version(self, subject_name, version, permanent=False):
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

    def close(self):
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
            if not self._closed and os.getpid() == self._consumer._cluster.pid:
                self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------- subject names

def topic_subject_name_strategy(ctx, record_name):
    """`<topic>-key` / `<topic>-value` (Confluent's default)."""
    return f"{ctx.topic}-{ctx.field}"


def topic_record_subject_name_strategy(ctx, record_name):
    return f"{ctx.topic}-{record_name}"


def record_subject_name_strategy(ctx, record_name):
    return record_name


def reference_subject_name_strategy(ctx, schema_ref):
    """A Protobuf dependency is registered under its file name."""
    return schema_ref.name


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


# ---------------------------------------------------------------------- Avro

class AvroSerializer(Serializer):
    """Avro binary in Confluent's wire format, the schema registered under the subject.

    As confluent_kafka.schema_registry.avro.AvroSerializer(schema_registry_client,
    schema_str, to_dict=None, conf=None); conf: auto.register.schemas (True),
    normalize.schemas (False), use.latest.version (False), subject.name.strategy.
    """

    _DEFAULTS = {"auto.register.schemas": True, "normalize.schemas": False, "use.latest.version": False,
                 "subject.name.strategy": topic_subject_name_strategy}

    def __init__(self, schema_registry_client, schema_str, to_dict=None, conf=None):
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
        if self._use_latest:
            latest = self._registry.get_latest_version(subject)
            parsed, _ = self._registry._parse(latest.schema)
            known = (latest.schema_id, parsed)
        elif self._auto_register:
            known = (self._registry.register_schema(subject, self._schema, self._normalize), self._parsed)
        else:
            known = (self._registry.lookup_schema(subject, self._schema, self._normalize).schema_id, self._parsed)
        self._known[subject] = known
        return known

    def __call__(self, obj, ctx=None):
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

    def __init__(self, schema_registry_client, schema_str=None, from_dict=None, return_record_name=False):
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

    def __call__(self, value, ctx=None):
        if value is None:
            return None
        schema_id, payload = _read_header(value, ctx, "AvroDeserializer")
        writer = self._writers.get(schema_id)
        if writer is None:
            try:
                schema = self._registry.get_schema(schema_id)
                if schema.schema_type != "AVRO":
                    raise SerializationError(f"AvroDeserializer: schema {schema_id} is {schema.schema_type}, not "
                                             f"AVRO{_where(ctx)}")
                writer, _ = self._registry._parse(schema)
            except SchemaRegistryError as exc:
                raise SerializationError(f"AvroDeserializer: {exc.error_message}{_where(ctx)}") from None
            self._writers[schema_id] = writer
        try:
            obj = fastavro.schemaless_reader(io.BytesIO(payload), writer, self._reader,
                                             return_record_name=self._return_record_name)
        except Exception as exc:
            raise SerializationError(f"AvroDeserializer: cannot decode with schema {schema_id}: "
                                     f"{type(exc).__name__}: {exc}{_where(ctx)}") from None
        return self._from_dict(obj, ctx) if self._from_dict is not None else obj


# ---------------------------------------------------------------------- Protobuf

def _zigzag_varint(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_zigzag_varint(view, pos):
    shift = result = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise ValueError("truncated varint")
        b = view[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _message_indexes(descriptor):
    """Confluent's message-index path of a message descriptor inside its file."""
    path = []
    d = descriptor
    while d.containing_type is not None:
        parent = d.containing_type
        path.append([n.full_name for n in parent.nested_types].index(d.full_name))
        d = parent
    path.append(list(d.file.message_types_by_name).index(d.name))
    return list(reversed(path))


def encode_message_indexes(indexes):
    if indexes == [0]:
        return b"\x00"
    return _zigzag_varint(len(indexes)) + b"".join(_zigzag_varint(i) for i in indexes)


def _file_schema_str(file_descriptor):
    fdp = _pb().FileDescriptorProto()
    file_descriptor.CopyToProto(fdp)
    return base64.standard_b64encode(fdp.SerializeToString()).decode("ascii")


class ProtobufSerializer(Serializer):
    """Protobuf messages in Confluent's wire format, the .proto file registered (with its
    imports as references) under the subject.

    As confluent_kafka.schema_registry.protobuf.ProtobufSerializer(msg_type,
    schema_registry_client, conf=None). A dict is accepted too and converted with
    google.protobuf.json_format (an unknown or mistyped field raises SerializationError
    naming it).
    """

    _DEFAULTS = {"auto.register.schemas": True, "normalize.schemas": False, "use.latest.version": False,
                 "skip.known.types": True, "subject.name.strategy": topic_subject_name_strategy,
                 "reference.subject.name.strategy": reference_subject_name_strategy,
                 "use.deprecated.format": False}

    def __init__(self, msg_type, schema_registry_client, conf=None):
        conf = _check_conf(conf, self._DEFAULTS, "ProtobufSerializer")
        if conf["use.deprecated.format"]:
            raise ValueError("use.deprecated.format=True (the pre-1.8 message-index encoding) is not supported")
        if conf["use.latest.version"] and conf["auto.register.schemas"]:
            raise ValueError("cannot enable both use.latest.version and auto.register.schemas")
        self._msg_type = msg_type
        self._registry = schema_registry_client
        self._auto_register = conf["auto.register.schemas"]
        self._normalize = conf["normalize.schemas"]
        self._use_latest = conf["use.latest.version"]
        self._skip_known = conf["skip.known.types"]
        self._strategy = conf["subject.name.strategy"]
        self._ref_strategy = conf["reference.subject.name.strategy"]
        descriptor = msg_type.DESCRIPTOR
        self._index_bytes = encode_message_indexes(_message_indexes(descriptor))
        self._file = descriptor.file
        self._record_name = descriptor.full_name
        self._known = {}

    def _references(self, ctx, file_descriptor):
        refs = []
        for dep in file_descriptor.dependencies:
            if self._skip_known and dep.name.startswith("google/protobuf/"):
                continue
            dep_refs = self._references(ctx, dep)
            ref_subject = self._ref_strategy(ctx, SchemaReference(dep.name, dep.name, -1))
            dep_schema = Schema(_file_schema_str(dep), "PROTOBUF", dep_refs)
            if self._auto_register:
                self._registry.register_schema(ref_subject, dep_schema)
            version = self._registry.lookup_schema(ref_subject, dep_schema).version
            refs.append(SchemaReference(dep.name, ref_subject, version))
        return refs

    def _schema_id(self, subject, ctx):
        known = self._known.get(subject)
        if known is not None:
            return known
        if self._use_latest:
            known = self._registry.get_latest_version(subject).schema_id
        else:
            schema = Schema(_file_schema_str(self._file), "PROTOBUF", self._references(ctx, self._file))
            if self._auto_register:
                known = self._registry.register_schema(subject, schema, self._normalize)
            else:
                known = self._registry.lookup_schema(subject, schema, self._normalize).schema_id
        self._known[subject] = known
        return known

    def __call__(self, message, ctx=None):
        if message is None:
            return None
        if isinstance(message, dict):
            from google.protobuf import json_format
            try:
                message = json_format.ParseDict(message, self._msg_type())
            except json_format.ParseError as exc:
                field = _pb_field_from(str(exc))
                raise SerializationError(f"ProtobufSerializer: {exc}{_where(ctx)}", field=field) from None
        if not isinstance(message, self._msg_type):
            raise SerializationError(f"ProtobufSerializer: message must be of type "
                                     f"{self._msg_type.DESCRIPTOR.full_name} not {type(message).__name__}{_where(ctx)}")
        subject = self._strategy(ctx, self._record_name)
        schema_id = self._schema_id(subject, ctx)
        try:
            payload = message.SerializeToString()
        except Exception as exc:  # EncodeError: proto2 required fields missing (named in the message)
            missing = str(exc).rsplit(":", 1)[-1].strip() if "missing required fields" in str(exc) else None
            raise SerializationError(f"ProtobufSerializer: {exc}{_where(ctx)}", field=missing) from None
        return _header(schema_id) + self._index_bytes + payload


def _pb_field_from(text):
    # json_format: 'Failed to parse price field: ...' / 'Message type "x" has no field named "y" at ...'
    if "Failed to parse " in text and " field" in text:
        return text.split("Failed to parse ", 1)[1].split(" field", 1)[0]
    if "has no field named " in text:
        return text.split("has no field named ", 1)[1].split('"')[1]
    return None


class ProtobufDeserializer(Deserializer):
    """Confluent-framed Protobuf -> an instance of message_type (no registry needed, as in
    confluent-kafka); conf: use.deprecated.format (False only)."""

    def __init__(self, message_type, conf=None):
        conf = _check_conf(conf, {"use.deprecated.format": False}, "ProtobufDeserializer")
        if conf["use.deprecated.format"]:
            raise ValueError("use.deprecated.format=True (the pre-1.8 message-index encoding) is not supported")
        self._msg_type = message_type

    def __call__(self, value, ctx=None):
        if value is None:
            return None
        _, payload = _read_header(value, ctx, "ProtobufDeserializer")
        try:
            count, pos = _read_zigzag_varint(payload, 0)
            for _ in range(count):
                _, pos = _read_zigzag_varint(payload, pos)
            return self._msg_type.FromString(bytes(payload[pos:]))
        except Exception as exc:
            raise SerializationError(f"ProtobufDeserializer: cannot decode a {self._msg_type.DESCRIPTOR.full_name}: "
                                     f"{type(exc).__name__}: {exc}{_where(ctx)}") from None

