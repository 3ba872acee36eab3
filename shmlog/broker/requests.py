"""What the supervisor accepts on its control channel: the limits of a line and the schema of
every request, checked before any op acts on it (docs/architecture.md, "Request validation").

A request is one line of JSON: an object with "op" (a name in REQUESTS), an optional "id"
(an integer or null, echoed in the reply) and the op's fields. parse() turns a line into the
request dict the op handlers read, or raises BadRequest naming the op and the field:

- the line: at most MAX_LINE_BYTES, UTF-8, JSON nested at most MAX_DEPTH deep (measured on
  the raw bytes, before the parser could recurse), one object; no NaN/Infinity, no integer of
  more than MAX_INT_DIGITS digits, no key twice in an object;
- the fields: the table REQUESTS, op -> field -> type and bounds. A field marked required must
  be there; an optional one may be absent or null and then reads as its default (when it has
  one). Fields an op does not name are ignored (a newer client may send more). Names (topics,
  groups, members) are strings of at most Kafka's STRING length, lists hold at most MAX_ITEMS.

The handlers keep the checks that need the broker's state (does the topic exist, is the name
a valid topic name, is the generation current) and answer them with Kafka's codes.
"""
import copy
import itertools
import json
import math
import re

from shmlog.errors import KafkaError

MAX_LINE_BYTES = 1 << 20      # a longer line is answered with an error and its connection closed
MAX_DEPTH = 16                # [ and { nested deeper than this are refused before parsing
MAX_INT_DIGITS = 20           # enough for any 64-bit integer
MAX_ITEMS = 100_000           # entries of any list or object in a request
NAME_CHARS = 32_767           # Kafka's STRING: topic, group, member, instance and client ids
INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)


class BadRequest(Exception):
    """A request the broker refuses unread. `close`: the connection is closed after the reply."""

    def __init__(self, message, request_id=None, close=False, code=KafkaError._INVALID_ARG):
        super().__init__(message)
        self.code = code
        self.request_id = request_id
        self.close = close


class _Invalid(Exception):
    """Raised by a type check: (where, what is wrong), made into a BadRequest by parse()."""

    def __init__(self, where, problem):
        super().__init__(where, problem)
        self.where, self.problem = where, problem


def _kind(value):
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _index(where, key):
    return f"{where}[{key}]" if isinstance(key, int) else f"{where}[{key!r}]" if where else key


# ---------------------------------------------------------------------------- types

class Str:
    def __init__(self, max_chars=NAME_CHARS, min_chars=0):
        self.min_chars, self.max_chars = min_chars, max_chars

    def check(self, value, where):
        if not isinstance(value, str):
            raise _Invalid(where, f"must be a string, not {_kind(value)}")
        if not self.min_chars <= len(value) <= self.max_chars:
            raise _Invalid(where, f"must be {self.min_chars}..{self.max_chars} characters long, not {len(value)}")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise _Invalid(where, "must be valid Unicode (it holds a lone surrogate)") from None
        return value

    def __repr__(self):
        return f"string of {self.min_chars}..{self.max_chars} characters"


class Int:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def check(self, value, where):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(where, f"must be an integer, not {_kind(value)}")
        if not self.lo <= value <= self.hi:
            raise _Invalid(where, f"must be in {self.lo}..{self.hi}, not {value}")
        return value

    def __repr__(self):
        return f"integer in {self.lo}..{self.hi}"


class Bool:
    def check(self, value, where):
        if not isinstance(value, bool):
            raise _Invalid(where, f"must be true or false, not {_kind(value)}")
        return value

    def __repr__(self):
        return "boolean"


class Scalar:
    """A config value: string, integer, finite number, boolean or null (the config parser judges it)."""

    def check(self, value, where):
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return Str(NAME_CHARS).check(value, where)
        raise _Invalid(where, f"must be a string, number, boolean or null, not {_kind(value)}")

    def __repr__(self):
        return "string, number, boolean or null"


class Nullable:
    """`inner` or null (where null is not just "absent": offset_fetch's partitions=null means all)."""

    def __init__(self, inner):
        self.inner = inner

    def check(self, value, where):
        return None if value is None else self.inner.check(value, where)

    def __repr__(self):
        return f"{self.inner!r} or null"


class List:
    def __init__(self, item, max_items=MAX_ITEMS):
        self.item, self.max_items = item, max_items

    def check(self, value, where):
        if not isinstance(value, list):
            raise _Invalid(where, f"must be an array, not {_kind(value)}")
        if len(value) > self.max_items:
            raise _Invalid(where, f"must hold at most {self.max_items} entries, not {len(value)}")
        return [self.item.check(v, _index(where, i)) for i, v in enumerate(value)]

    def __repr__(self):
        return f"array of {self.item!r}"


class Tuple:
    """A fixed-length array, e.g. [topic, partition]."""

    def __init__(self, *items):
        self.items = items

    def check(self, value, where):
        if not isinstance(value, list) or len(value) != len(self.items):
            raise _Invalid(where, f"must be an array of {len(self.items)} ({', '.join(map(repr, self.items))}), "
                           f"not {_kind(value) if not isinstance(value, list) else f'{len(value)} entries'}")
        return [t.check(v, _index(where, i)) for i, (t, v) in enumerate(zip(self.items, value))]

    def __repr__(self):
        return f"[{', '.join(map(repr, self.items))}]"


class Map:
    """An object with keys of one kind and values of one type, e.g. {topic: config}."""

    def __init__(self, key, value, max_items=MAX_ITEMS):
        self.key, self.value, self.max_items = key, value, max_items

    def check(self, value, where):
        if not isinstance(value, dict):
            raise _Invalid(where, f"must be an object, not {_kind(value)}")
        if len(value) > self.max_items:
            raise _Invalid(where, f"must hold at most {self.max_items} entries, not {len(value)}")
        out = {}
        for k, v in value.items():
            self.key.check(k, f"{where} key {k[:80]!r}")
            out[k] = self.value.check(v, _index(where, k))
        return out

    def __repr__(self):
        return f"object of {self.key!r} -> {self.value!r}"


class Field:
    """One field of an object: its type, whether it must be given, its default when absent or null."""

    def __init__(self, type_, required=False, default=None):
        self.type, self.required, self.default = type_, required, default


def required(type_):
    return Field(type_, required=True)


def optional(type_, default=None):
    return Field(type_, default=default)


class Object:
    """An object with named fields (table: name -> Field); fields not named are ignored."""

    def __init__(self, **fields):
        self.fields = fields

    def check(self, value, where):
        if not isinstance(value, dict):
            raise _Invalid(where, f"must be an object, not {_kind(value)}")
        out = dict(value)
        for name, f in self.fields.items():
            here = f"{where}.{name}" if where else name
            v = value.get(name)
            if v is None:
                if f.required:
                    raise _Invalid(here, f"is required ({f.type!r})" if name not in value else
                                   f"must be {f.type!r}, not null")
                out[name] = copy.copy(f.default)   # a fresh [] or {} for each request
            else:
                out[name] = f.type.check(v, here)
        return out


# ---------------------------------------------------------------------------- the table

NAME = Str(NAME_CHARS)
PARTITION = Int(*INT32)
OFFSET = Int(*INT64)
CONFIG = Map(Str(255), Scalar(), max_items=1000)
TOPIC_PARTITION = Tuple(NAME, PARTITION)
REPLICA_ASSIGNMENT = List(List(Int(*INT32), max_items=64), max_items=10000)   # per partition, log dir indexes
MEMBER = dict(member_id=optional(NAME, ""), instance_id=optional(NAME))
PRODUCER = dict(transactional_id=required(NAME), producer_id=required(OFFSET), producer_epoch=required(Int(-1, 32767)))

REQUESTS = {
    # supervisor.py
    "register": Object(kind=optional(Str(64, 1), "client"), pid=optional(Int(0, INT32[1]), 0)),
    "metadata": Object(auto_create=optional(List(NAME), [])),
    "replica_failed": Object(),    # the persister: a replicated leader's log dir failed (check the leaders now)
    "create_topics": Object(
        topics=required(List(Object(topic=required(NAME), num_partitions=optional(Int(*INT32), -1),
                                    config=optional(CONFIG, {}), replication_factor=optional(Int(*INT32), -1),
                                    replica_assignment=optional(REPLICA_ASSIGNMENT)))),
        validate_only=optional(Bool(), False)),
    "delete_topics": Object(topics=required(List(NAME))),
    "create_partitions": Object(
        topics=required(List(Object(topic=required(NAME), new_total_count=required(Int(*INT32)),
                                    replica_assignment=optional(REPLICA_ASSIGNMENT)))),
        validate_only=optional(Bool(), False)),
    "alter_configs": Object(topics=required(Map(NAME, CONFIG)), validate_only=optional(Bool(), False)),
    "delete_records": Object(
        partitions=required(List(Object(topic=required(NAME), partition=required(PARTITION),
                                        offset=required(OFFSET))))),
    "alter_replica_log_dirs": Object(moves=required(List(Tuple(NAME, PARTITION, Int(0, 63), Int(0, 63))))),
    "status": Object(),
    # KIP-714's PushTelemetry, simplified: a client's own metrics as [name, labels, value], shown by
    # `shmlog metrics` until the client sends new ones or detaches (docs/observability.md).
    "push_telemetry": Object(metrics=required(List(Tuple(Str(100), Map(Str(64), Str(200), max_items=16), Scalar()),
                                                   max_items=10_000))),
    "shutdown": Object(),
    "describe_cluster": Object(),
    "describe_producers": Object(partitions=required(List(TOPIC_PARTITION))),
    "init_producer_id": Object(transactional_id=optional(NAME),
                               transaction_timeout_ms=optional(Int(0, INT32[1]), 60_000)),
    "describe_configs": Object(topics=optional(List(NAME), [])),
    "incremental_alter_configs": Object(
        topics=required(Map(NAME, List(Tuple(Str(255), Int(0, 3), Scalar()), max_items=1000))),
        validate_only=optional(Bool(), False)),
    # group_service.py (GroupService.OPS)
    "join_group": Object(
        group=required(NAME), client_id=optional(NAME, ""), protocols=required(List(Str(255), max_items=64)),
        subscription=required(List(NAME)), session_timeout_ms=required(Int(*INT32)),
        rebalance_timeout_ms=required(Int(*INT32)), owned=optional(List(TOPIC_PARTITION), []), **MEMBER),
    "sync_group": Object(group=required(NAME), generation=required(Int(*INT32)), **MEMBER),
    "heartbeat": Object(group=required(NAME), generation=required(Int(*INT32)), **MEMBER),
    "leave_group": Object(group=required(NAME), **MEMBER),
    "offset_commit": Object(
        group=required(NAME), offsets=required(List(Tuple(NAME, PARTITION, OFFSET, Nullable(NAME)))),
        generation=optional(Int(*INT32), -1), **MEMBER),
    "offset_fetch": Object(group=required(NAME), partitions=optional(List(TOPIC_PARTITION)),
                           log_end=optional(Bool(), False)),
    "list_groups": Object(),
    "describe_groups": Object(groups=required(List(NAME))),
    "delete_groups": Object(groups=required(List(NAME))),
    # txn_service.py (TxnService.OPS)
    "add_partitions_to_txn": Object(partitions=required(List(TOPIC_PARTITION)), **PRODUCER),
    "add_offsets_to_txn": Object(group=required(NAME), **PRODUCER),
    "txn_offset_commit": Object(
        group=required(NAME), offsets=required(List(Tuple(NAME, PARTITION, OFFSET, Nullable(NAME)))),
        generation=optional(Int(*INT32), -1), **MEMBER, **PRODUCER),
    "end_txn": Object(commit=required(Bool()), **PRODUCER),
    "list_transactions": Object(states=optional(List(Str(64)), [])),
    "describe_transactions": Object(transactional_ids=required(List(NAME))),
    "abort_transaction": Object(transactional_id=required(NAME)),
}

ENVELOPE = Object(op=required(Str(64)), id=optional(Int(*INT64)))


# ---------------------------------------------------------------------------- parsing

# A JSON string (an unterminated one runs to the end: no backtracking, linear in the line).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def nesting_depth(line):
    """How deep [ and { nest in `line` outside JSON strings (for any bytes, in linear time)."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", line))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _int(text):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _object(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {twice[:80]!r} appears twice in an object")
    return out


def decode(line):
    """A line's JSON object; BadRequest if it is not one within the limits (no op known yet)."""
    if len(line) > MAX_LINE_BYTES:
        raise BadRequest(f"request line of {len(line)} bytes is longer than the limit of {MAX_LINE_BYTES} "
                         f"bytes; closing the connection", close=True)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = nesting_depth(line)
    if depth > MAX_DEPTH:
        raise BadRequest(f"request nests arrays/objects {depth} deep; at most {MAX_DEPTH} allowed")
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_no_constant,
                           object_pairs_hook=_object)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"request is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"request must be a JSON object with an \"op\", not {_kind(value)}")
    return value


def validate(request):
    """The request dict the op handlers read (defaults filled in), or BadRequest naming op and field."""
    request_id = request.get("id")
    if not (request_id is None or isinstance(request_id, int) and not isinstance(request_id, bool)
            and INT64[0] <= request_id <= INT64[1]):
        request_id = None  # not echoed: the reply carries id null
    op = request.get("op")
    try:
        ENVELOPE.check(request, "")
    except _Invalid as exc:
        what = f"{op} request" if isinstance(op, str) and op in REQUESTS else "request"
        raise BadRequest(f"bad {what}: field {exc.where} {exc.problem}", request_id) from None
    schema = REQUESTS.get(op)
    if schema is None:
        raise BadRequest(f"unknown control operation {op!r}", request_id)
    try:
        checked = schema.check(request, "")
    except _Invalid as exc:
        raise BadRequest(f"bad {op} request: field {exc.where} {exc.problem}", request_id) from None
    checked["id"] = request_id
    return checked


def parse(line):
    """decode() then validate(): the checked request of one control line."""
    return validate(decode(line))
