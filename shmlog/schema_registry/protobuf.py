"""Protobuf through the schema registry, as confluent_kafka.schema_registry.protobuf:
ProtobufSerializer, ProtobufDeserializer, the message-index encoding, and the compatibility
rules the registry applies to PROTOBUF schemas (described in the package docstring).

Protobuf schemas are registered as confluent-kafka-python does: the base64 of the
serialized FileDescriptorProto, with dependencies as references.
"""
from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from shmlog.log.batch import read_zigzag_varint, zigzag_varint
from shmlog.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryError,
    reference_subject_name_strategy,
    topic_subject_name_strategy,
)
from shmlog.schema_registry._wire import _check_conf, _header, _read_header, writer_schema_id
from shmlog.serialization import Deserializer, SerializationError, Serializer, _where

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from shmlog.schema_registry import SchemaRegistryClient
    from shmlog.serialization import SerializationContext

__all__ = ["ProtobufSerializer", "ProtobufDeserializer", "parse_protobuf", "protobuf_incompatibilities",
           "encode_message_indexes"]


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


# ---------------------------------------------------------------------- serializers

# Files every schema registry knows, which serializers do not register as references when
# skip.known.types is set (confluent-kafka's list): protobuf's well-known types, Google's
# common types and Confluent's own files (shmlog.schema_registry.confluent).
_KNOWN_TYPE_PREFIXES = ("google/protobuf/", "google/type/", "confluent/")


def _is_known_type(file_name):
    return file_name.startswith(_KNOWN_TYPE_PREFIXES)


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
    return zigzag_varint(len(indexes)) + b"".join(zigzag_varint(i) for i in indexes)


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

    def __init__(self, msg_type: type[Message], schema_registry_client: SchemaRegistryClient,
                 conf: dict[str, Any] | None = None) -> None:
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
            if self._skip_known and _is_known_type(dep.name):
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
        known, _ = writer_schema_id(
            self._registry, subject,
            lambda: Schema(_file_schema_str(self._file), "PROTOBUF", self._references(ctx, self._file)),
            self._use_latest, self._auto_register, self._normalize)
        self._known[subject] = known
        return known

    def __call__(self, message: Message | None, ctx: SerializationContext | None = None) -> bytes | None:
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
    confluent-kafka); conf: use.deprecated.format (False only). schema_registry_client is
    accepted, as confluent-kafka's signature has it, and not needed."""

    def __init__(self, message_type: type[Message], conf: dict[str, Any] | None = None,
                 schema_registry_client: SchemaRegistryClient | None = None) -> None:
        conf = _check_conf(conf, {"use.deprecated.format": False}, "ProtobufDeserializer")
        if conf["use.deprecated.format"]:
            raise ValueError("use.deprecated.format=True (the pre-1.8 message-index encoding) is not supported")
        self._msg_type = message_type

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Message | None:
        if value is None:
            return None
        _, payload = _read_header(value, ctx, "ProtobufDeserializer")
        try:
            count, pos = read_zigzag_varint(payload, 0)
            for _ in range(count):
                _, pos = read_zigzag_varint(payload, pos)
            return self._msg_type.FromString(bytes(payload[pos:]))
        except Exception as exc:
            raise SerializationError(f"ProtobufDeserializer: cannot decode a {self._msg_type.DESCRIPTOR.full_name}: "
                                     f"{type(exc).__name__}: {exc}{_where(ctx)}") from None
