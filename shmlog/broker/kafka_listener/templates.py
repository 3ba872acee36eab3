"""The two responses most requests get, encoded by patching a copy of kio's own encoding.

A Produce response for one partition and a Fetch response for one partition are what a client
producing to or consuming from a partition gets, one per request. Building kio's dataclasses
and writing them field by field costs more than handling the request; so kio encodes each
shape once per (api key, version, topic), where each fixed-width field lies in those bytes is
found by encoding it again with that field changed, and every response after that is a copy of
the bytes with the values packed in. Fetch records go between the copy's head and tail, sent
as a part of their own. Any other shape (several partitions, an error message, aborted
transactions) is encoded by kio (wire.build, wire.encode_response), and the layout stays kio's
alone: tests/unit/test_kafka_listener_templates.py compares both encodings for every version.
"""
import datetime
import struct

from shmlog.broker.kafka_listener import wire
from shmlog.broker.kafka_listener.wire import EPOCH

PRODUCE, FETCH = 0, 1
MAX_TEMPLATES = 4096        # (api key, version, topic) shapes kept; all dropped when full
_FORMATS = {2: struct.Struct(">h"), 4: struct.Struct(">i"), 8: struct.Struct(">q")}
_PRODUCE_FIELDS = {"index": 4, "error_code": 2, "base_offset": 8, "log_start_offset": 8, "log_append_time": 8}
_PRODUCE_KEYS = frozenset(_PRODUCE_FIELDS)
_FETCH_FIELDS = {"partition_index": 4, "error_code": 2, "high_watermark": 8, "last_stable_offset": 8,
                 "log_start_offset": 8}
_FETCH_KEYS = frozenset((*_FETCH_FIELDS, "aborted_transactions", "preferred_read_replica", "records"))
_FETCH_TOP_FIELDS = {"error_code": 2, "session_id": 4}
_FETCH_NO_SESSION = {"error_code": 0, "session_id": 0}

_templates = {}


class Template:
    """A shape's frame as kio writes it: the bytes before the records (all of them for Produce)
    and after, where the correlation id and each fixed-width field lie, and whether the
    records' length is a varint (flexible versions) or an int32."""

    __slots__ = ("head", "tail", "correlation_at", "entry_fields", "top_fields", "flexible")  # fields: (pack, at, name)

    def __init__(self, head, tail, correlation_at, entry_fields, top_fields, flexible):
        self.head, self.tail, self.correlation_at = head, tail, correlation_at
        self.entry_fields = tuple((_FORMATS[size].pack_into, at, name) for name, (at, size) in entry_fields.items())
        self.top_fields = tuple((_FORMATS[size].pack_into, at, name) for name, (at, size) in top_fields.items())
        self.flexible = flexible


def encode(api_key, version, correlation_id, body):
    """The response frame's parts, or None when `body` is not of a shape kept here."""
    if api_key == PRODUCE:
        entry = _only_entry(body.get("responses"), "partition_responses", _PRODUCE_KEYS)
        if entry is None or body.get("throttle_time_ms"):
            return None
        return produce_response(version, correlation_id, body["responses"][0]["name"], entry.get("index") or 0,
                                entry.get("error_code") or 0, entry.get("base_offset") or 0,
                                entry.get("log_start_offset") or 0, _millis(entry.get("log_append_time")))
    if api_key == FETCH:
        entry = _only_entry(body.get("responses"), "partitions", _FETCH_KEYS)
        if entry is None or entry.get("aborted_transactions") is not None or body.get("throttle_time_ms") \
                or entry.get("preferred_read_replica", -1) != -1:
            return None
        template = _template(FETCH, version, body["responses"][0]["topic"])
        return _fetch_parts(template, correlation_id, entry, body, entry.get("records") or b"")
    return None


def fetch_response(version, correlation_id, topic, partition, high_watermark, last_stable_offset, log_start_offset,
                   records):
    """The frame's parts of a sessionless one-partition Fetch response without errors."""
    entry = {"partition_index": partition, "error_code": 0, "high_watermark": high_watermark,
             "last_stable_offset": last_stable_offset, "log_start_offset": log_start_offset}
    return _fetch_parts(_template(FETCH, version, topic), correlation_id, entry, _FETCH_NO_SESSION, records)


def _fetch_parts(template, correlation_id, entry, top, records):
    out = bytearray(template.head)
    out += _uvarint(len(records) + 1) if template.flexible else _FORMATS[4].pack(len(records))
    _pack(out, template, correlation_id, entry, top)
    _FORMATS[4].pack_into(out, 0, len(out) - 4 + len(records) + len(template.tail))
    if not records:
        return [out + template.tail]
    return [out, records, template.tail] if template.tail else [out, records]


def produce_response(version, correlation_id, topic, index, error_code, base_offset, log_start_offset,
                     log_append_time_ms):
    """The frame's parts of a one-partition Produce response without an error message."""
    template = _template(PRODUCE, version, topic)
    out = bytearray(template.head)
    pack = _FORMATS[4].pack_into
    pack(out, template.correlation_at, correlation_id)
    values = {"index": index, "error_code": error_code, "base_offset": base_offset,
              "log_start_offset": log_start_offset, "log_append_time": log_append_time_ms}
    for pack_into, at, name in template.entry_fields:
        pack_into(out, at, values[name])
    return [out]


def _only_entry(responses, inner, keys):
    """The one partition entry of a one-topic response whose fields are all kept here, or None."""
    if not responses or len(responses) != 1:
        return None
    entries = responses[0].get(inner)
    if not entries or len(entries) != 1 or not keys.issuperset(entries[0]) or entries[0].get("error_message"):
        return None
    return entries[0]


def _millis(when):
    return -1 if when is None else (when - EPOCH) // datetime.timedelta(milliseconds=1)


def _pack(out, template, correlation_id, entry, top):
    _FORMATS[4].pack_into(out, template.correlation_at, correlation_id)
    for pack_into, at, name in template.entry_fields:
        pack_into(out, at, entry.get(name) or 0)
    for pack_into, at, name in template.top_fields:
        pack_into(out, at, top.get(name) or 0)


def _uvarint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# ---------------------------------------------------------------------------- making templates

def _template(api_key, version, topic):
    key = (api_key, version, topic)
    template = _templates.get(key)
    if template is None:
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        template = _templates[key] = (_produce_template if api_key == PRODUCE else _fetch_template)(version, topic)
    return template


def _kio(api_key, version, correlation_id, body):
    parts = wire.encode_response(api_key, version, correlation_id, wire.build(wire.response_class(api_key, version),
                                                                                body))
    return b"".join(bytes(p) for p in parts)


def _produce_body(topic, entry):
    return {"responses": [{"name": topic, "partition_responses": [entry]}]}


def _fetch_body(topic, top, entry):
    return {**top, "responses": [{"topic": topic, "partitions": [entry]}]}


def _where(base, changed, size):
    """Where a big-endian field of `size` bytes lies, from two encodings differing in its last byte."""
    diffs = [i for i in range(4, len(base)) if base[i] != changed[i]]
    if len(base) != len(changed) or not diffs or diffs[0] < diffs[-1] - size + 1:
        raise AssertionError("a field's change moved more than its own bytes")
    return diffs[-1] - size + 1


def _fields(base, encode_with, names):
    """{name: (where, size)} of the fields this version has (a field it lacks changes nothing)."""
    out = {}
    for name, (size, value) in names.items():
        changed = encode_with(name, value)
        if changed != base:
            out[name] = (_where(base, changed, size), size)
    return out


def _produce_template(version, topic):
    entry = {"index": 0, "error_code": 0, "base_offset": 0, "log_start_offset": 0, "log_append_time": None}
    base = _kio(PRODUCE, version, 0, _produce_body(topic, entry))
    correlation_at = _where(base, _kio(PRODUCE, version, 1, _produce_body(topic, entry)), 4)
    names = {name: (size, EPOCH + datetime.timedelta(milliseconds=1) if name == "log_append_time" else 1)
             for name, size in _PRODUCE_FIELDS.items()}
    def with_entry(name, value):
        return _kio(PRODUCE, version, 0, _produce_body(topic, {**entry, name: value}))

    fields = _fields(base, with_entry, names)
    return Template(base, b"", correlation_at, fields, {}, flexible=False)


def _fetch_template(version, topic):
    top = {"error_code": 0, "session_id": 0}
    entry = {"partition_index": 0, "error_code": 0, "high_watermark": 0, "last_stable_offset": 0,
             "log_start_offset": 0, "aborted_transactions": None, "preferred_read_replica": -1, "records": b""}
    base = _kio(FETCH, version, 0, _fetch_body(topic, top, entry))
    correlation_at = _where(base, _kio(FETCH, version, 1, _fetch_body(topic, top, entry)), 4)
    def with_entry(name, value):
        return _kio(FETCH, version, 0, _fetch_body(topic, top, {**entry, name: value}))

    def with_top(name, value):
        return _kio(FETCH, version, 0, _fetch_body(topic, {**top, name: value}, entry))

    entry_fields = _fields(base, with_entry, {name: (size, 1) for name, size in _FETCH_FIELDS.items()})
    top_fields = _fields(base, with_top, {name: (size, 1) for name, size in _FETCH_TOP_FIELDS.items()})
    # One record byte more changes the records' length (its last byte: int32 0 -> 1, or the
    # varint 1 -> 2), the byte itself follows it, and the rest is the tail as it was.
    one = _kio(FETCH, version, 0, _fetch_body(topic, top, {**entry, "records": b"\x00"}))
    flexible = version >= 12
    length_end = next(i for i in range(4, len(base)) if base[i] != one[i]) + 1
    length_size = 1 if flexible else 4
    if one[length_end] != 0 or one[length_end + 1:] != base[length_end:] or \
            any(at + size > length_end - length_size for at, size in (*entry_fields.values(), *top_fields.values())):
        raise AssertionError(f"Fetch v{version}: the records are not the last field before the tail")
    return Template(base[:length_end - length_size], base[length_end:], correlation_at, entry_fields, top_fields,
                    flexible)
