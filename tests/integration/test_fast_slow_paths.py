"""Differential tests: the C fast paths against the Python slow paths, on the same inputs.

Producer.produce() is ProducerCore.produce (csrc/fast/producer_core.c): it handles bytes/None keys
and values without headers for a topic whose route is cached, and hands everything else to
Producer._produce_slow, which calls the same C rules. Consumer.poll() is ConsumerCore.poll: it
serves decoded records (and, with one active reader, fetches and decodes the ring) in C,
and hands everything else to Consumer._poll_slow; ring batches are decoded by the C
decoder (_fast.fetch_ring) unless compressed or read from segment files, which the Python
decoder (Consumer._decode) handles.

How each path is forced, without test hooks in the library:
- produce fast: Producer.produce(...). An instance attribute wrapping _produce_slow counts
  every hand-over from C, so a fast-eligible call (bytes/None key and value, no headers,
  int partition and timestamp, cached route, room in the queue) that was not served in C
  fails the test, the neighbours of headers and str records included.
- produce slow: Producer._produce_slow(...) called directly, on an identically configured
  producer attached to a twin broker, so topic names, offsets, error messages and
  len(producer) compare one to one.
- poll fast: Consumer.poll() with one assigned partition (C fetch + decode + pop) or
  several (C pop of the current run); poll slow: Consumer._poll_slow() called directly;
  consume(); and the paths interleaved on one consumer with seek/pause/resume/position().
- Python decoder: ring frames fetched and handed to Consumer._decode_rest (where the C
  decoder hands compressed batches over), compressed topics, and a 64 KiB ring whose older
  records are read from the segment files.

Compared: errors raised for every input (type, KafkaError code, message), len(producer)
after every call, poll()/flush() results, delivery reports (partition, offset, key, value,
headers, timestamp, len), placement (keys by Kafka's Java murmur2, explicit partitions,
null keys by the sticky rule), offsets, and every record read back (key, value, headers,
timestamp and its type, len, error, leader epoch), plus stored/committed offsets.

Where the paths legitimately differ, what a user can observe is compared instead: null-key
records go to a random sticky partition (different generators), so each run is checked
against the sticky rule, and the batches closed (hence reports ready, len()) against its own
placement; timestamps of timestamp=0 records are "now", checked against the wall clock.

Disagreements and defects found are kept at the end: open ones as xfail(strict=True) tests,
with the input and both results in the reason; fixed ones as regression tests.
"""
import contextlib
import os
import random
import time
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shmlog
from shmlog import KafkaError, KafkaException, TopicPartition
from shmlog._native import ffi, layout, lib, shm
from shmlog.client.consumer import MAX_FRAMES_PER_FETCH
from shmlog.client.partitioner import murmur2_partition
from tests.conftest import broker_processes, create_topic, stop_leftover_broker

RECORD_OVERHEAD = 21            # bytes the producer counts per record besides key, value and headers
RING_BYTES = 1 << 20
PRODUCE_FIELDS = ("topic", "value", "key", "partition", "on_delivery", "timestamp", "headers", "callback")
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1


# --------------------------------------------------------------------------- Kafka's Java partitioner

def java_murmur2(data):
    """org.apache.kafka.common.utils.Utils.murmur2, transcribed (signed 32-bit result)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key, partitions):
    """Kafka's default partitioner for a keyed record: toPositive(murmur2(key)) % partitions."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


def test_the_reference_murmur2_matches_kafkas_own_test_vectors():
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    assert {k: java_murmur2(k) for k in vectors} == vectors


@settings(derandomize=True, database=None, max_examples=250, deadline=None)
@given(st.binary(max_size=70), st.integers(1, 1 << 12))
def test_the_c_murmur2_partitioner_is_kafkas_java_partitioner(key, partitions):
    assert murmur2_partition(key, partitions) == java_partition(key, partitions)


# --------------------------------------------------------------------------- brokers

@contextlib.contextmanager
def _broker(path):
    os.makedirs(path)
    leftovers = []
    try:
        with shmlog.Broker(path) as b:
            yield b
    finally:
        leftovers = shm.names_in_namespace(shm.namespace(path))
        for name in leftovers:
            shm.unlink(name)
    assert not leftovers, f"shared memory left behind: {leftovers}"


class Side:
    """One broker of a twin pair and its admin client."""

    def __init__(self, name, broker):
        self.name = name
        self.conf = {"bootstrap.servers": broker.bootstrap_servers}
        self.admin = shmlog.AdminClient(self.conf)


@pytest.fixture
def twins(tmp_path):
    """Two brokers: the fast path runs against one, the slow path against the other, so topic
    names, offsets and error messages are the same on both sides."""
    with _broker(str(tmp_path / "fast")) as fast_broker, _broker(str(tmp_path / "slow")) as slow_broker:
        sides = Side("fast", fast_broker), Side("slow", slow_broker)
        try:
            yield sides
        finally:
            for side in sides:
                side.admin.close()
    stop_leftover_broker(str(tmp_path / "fast"))
    stop_leftover_broker(str(tmp_path / "slow"))


# --------------------------------------------------------------------------- normalisation

def _to_bytes(x):
    if x is None:
        return None
    return x.encode() if isinstance(x, str) else bytes(x)


def _expected_headers(headers):
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    return [(k if isinstance(k, str) else bytes(k).decode(), _to_bytes(v)) for k, v in items]


def _error_signature(exc):
    if exc is None:
        return None
    code = None
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        code = exc.args[0].code()
    return type(exc).__name__, code, str(exc)


def _now_ms():
    return time.time_ns() // 1_000_000


def _message_tuple(m):
    """Everything a user can read off a consumed Message."""
    return (m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers(), m.timestamp(), m.error(),
            len(m), m.leader_epoch())


def _read_back(conf, topic, partitions, expected_total, timeout=10.0):
    """Every record of topic, per partition in offset order, read with consume()."""
    c = shmlog.Consumer(conf)
    try:
        c.assign([TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in range(partitions)])
        got, deadline = [], time.monotonic() + timeout
        while len(got) < expected_total and time.monotonic() < deadline:
            got += c.consume(1000, timeout=0.5)
        got += c.consume(1000, timeout=0.05)   # nothing more than expected
    finally:
        c.close()
    out = {p: [] for p in range(partitions)}
    for m in got:
        assert m.error() is None, m.error()
        out[m.partition()].append(m)
    return out


# --------------------------------------------------------------------------- produce(): generated cases

class Case:
    """One producer configuration and a list of operations, generated from a seed."""

    def __init__(self, seed, topic):
        rng = self.rng = random.Random(seed)
        self.seed = seed
        self.topic = topic
        self.partitions = rng.choice([1, 2, 3, 5, 8])
        self.partitioner = rng.choice(["murmur2", "murmur2_random"])
        self.random_sticky = self.partitioner == "murmur2_random"
        self.acks = rng.choice([0, 1, 1, -1])
        self.linger_ms = rng.choice([0, 60_000])        # no timed close in a case: batches close on size, count, flush
        self.batch_num_messages = rng.choice([1, 3, 10_000])
        self.batch_size = rng.choice([300, 1_000_000])
        self.message_max_bytes = rng.randint(1000, 6000)
        self.topic_max_message_bytes = rng.choice([None, rng.randint(1100, 7000)])
        tight = not self.random_sticky and self.acks != -1   # BufferError timing is deterministic here
        self.max_queued = rng.choice([5, 9, 100_000]) if tight else 100_000
        self.buffer_memory = rng.choice([None, 6000]) if tight else None
        self.default_callback = not self.random_sticky and rng.random() < 0.3
        self.record_limit = min(self.message_max_bytes, 1_048_576)
        if self.topic_max_message_bytes is not None:
            self.record_limit = min(self.record_limit, self.topic_max_message_bytes - layout.BATCH_HEADER_BYTES)
        self.batch_limit = min(self.batch_size, RING_BYTES // 4)
        self.ops = [self._op(i) for i in range(rng.randint(30, 50))]

    def producer_config(self, conf, on_delivery):
        cfg = {**conf, "acks": self.acks, "linger.ms": self.linger_ms, "partitioner": self.partitioner,
               "batch.num.messages": self.batch_num_messages, "batch.size": self.batch_size,
               "message.max.bytes": self.message_max_bytes, "queue.buffering.max.messages": self.max_queued}
        if self.buffer_memory is not None:
            cfg["buffer.memory"] = self.buffer_memory
        if self.default_callback:
            cfg["on_delivery"] = on_delivery
        return cfg

    def create_topic(self, admin):
        config = {"ring_bytes": RING_BYTES, "retention_ms": -1}   # explicit timestamps may be from 1970
        if self.topic_max_message_bytes is not None:
            config["max_message_bytes"] = self.topic_max_message_bytes
        create_topic(admin, self.topic, self.partitions, **config)

    # ---- generators

    def _text(self):
        return "".join(self.rng.choice("aZ9 -_.üé€😀") for _ in range(self.rng.randint(1, 8)))

    def _key(self):
        r = self.rng.random()
        if r < 0.22:
            return None
        if r < 0.28:
            return b""
        if r < 0.32:
            return ""
        if r < 0.55:
            return self.rng.randbytes(self.rng.randint(1, 13))
        if r < 0.70:
            return f"user-{self.rng.randint(0, 40)}".encode()
        if r < 0.82:
            return self._text()
        if r < 0.88:
            return bytearray(self.rng.randbytes(self.rng.randint(0, 6)))
        if r < 0.93:
            return memoryview(self.rng.randbytes(self.rng.randint(0, 6)))
        if r < 0.97:
            return f"k{self.rng.randint(0, 9)}".encode()
        return self.rng.choice([17, 2.5, ["k"]])                            # bad type

    def _value(self, key, headers):
        r = self.rng.random()
        if r < 0.1:
            return None
        if r < 0.15:
            return b""
        if r < 0.18:
            return ""
        if r < 0.30:                                                        # around the record size limit
            fixed = RECORD_OVERHEAD + _len(key) + _headers_bytes(headers)
            target = self.record_limit + self.rng.choice([-1, 0, 0, 1, self.rng.randint(2, 60)])
            return b"v" * max(0, target - fixed)
        if r < 0.65:
            return self.rng.randbytes(self.rng.randint(1, 300))
        if r < 0.78:
            return self._text()
        if r < 0.85:
            return bytearray(self.rng.randbytes(self.rng.randint(0, 40)))
        if r < 0.97:
            return b"x" * self.rng.randint(1, 2000)
        return self.rng.choice([5, {"a": 1}, 3.25])                         # bad type

    def _headers(self):
        r = self.rng.random()
        if r < 0.62:
            return "absent"
        if r < 0.66:
            return None
        if r < 0.69:
            return []
        if r < 0.72:
            return {}
        pairs = [(self._text() if self.rng.random() < 0.8 else self._text().encode(),
                  self.rng.choice([None, b"", self.rng.randbytes(self.rng.randint(1, 9)), self._text()]))
                 for _ in range(self.rng.randint(1, 3))]
        if r < 0.86:
            return pairs
        if r < 0.93:
            return dict(pairs)
        if r < 0.96:
            return tuple(pairs)
        return self.rng.choice([[("k", 5)], 7, [("k",)], [("k", b"v", b"w")]])   # bad

    def _partition(self):
        r = self.rng.random()
        if r < 0.50:
            return "absent"
        if r < 0.60:
            return -1
        if r < 0.86:
            return self.rng.randrange(self.partitions)
        return self.rng.choice([self.partitions, self.partitions + 7, -3, True, "0", None, 1 << 63, -(1 << 70)])

    def _timestamp(self):
        r = self.rng.random()
        if r < 0.45:
            return "absent"
        if r < 0.60:
            return 0
        if r < 0.90:
            return self.rng.randint(1, 1 << 41)
        return self.rng.choice([None, -1, LONG_MAX, "5", 1.5, 1 << 64])

    def _op(self, index):
        r = self.rng.random()
        if r < 0.07:
            return {"kind": "poll"}
        if r < 0.11:
            return {"kind": "flush"}
        if r < 0.13:
            return {"kind": "metadata"}     # another topic is created: the producer's routes are stale
        key, headers = self._key(), self._headers()
        op = {"kind": "produce", "index": index, "topic": self.topic, "key": key, "headers": headers,
              "value": self._value(key, headers), "partition": self._partition(), "timestamp": self._timestamp(),
              "callback": self.rng.choice(["none", "on_delivery", "callback", "on_delivery"]),
              "positional": self.rng.random() < 0.2, "extra": None}
        if self.random_sticky and op["callback"] == "none":
            op["callback"] = "on_delivery"  # sticky placement is checked from every record's report
        op["topic_keyword"] = self.rng.random() < 0.2
        r = self.rng.random()
        if r < 0.015:
            op["extra"] = "unknown keyword"
        elif r < 0.025:
            op["extra"] = "too many positional"
        elif r < 0.03:
            op["extra"] = "value twice"
        elif r < 0.035:
            op["topic"] = self.topic.encode()
        elif r < 0.045:
            op["topic"] = ""
        return op


def _len(x):
    if x is None or not isinstance(x, (bytes, bytearray, memoryview, str)):
        return 0
    return len(_to_bytes(x))


def _headers_bytes(headers):
    if headers in ("absent", None) or not isinstance(headers, (list, tuple, dict)):
        return 0
    items = headers.items() if isinstance(headers, dict) else headers
    total = 0
    for item in items:
        if len(item) != 2:
            return 0
        total += _len(item[0]) + _len(item[1])
    return total


def _call(op, callback):
    """(args, kwargs) of the produce() call an op describes."""
    cb = callback if op["callback"] != "none" else None
    if op["positional"]:
        args = [op["topic"], op["value"], op["key"],
                -1 if op["partition"] == "absent" else op["partition"], cb,
                0 if op["timestamp"] == "absent" else op["timestamp"],
                None if op["headers"] == "absent" else op["headers"]]
        if op["extra"] == "too many positional":
            args.append(None)
            args.append(None)
        return tuple(args), {}
    kwargs = {"value": op["value"], "key": op["key"]}
    for name in ("partition", "timestamp", "headers"):
        if op[name] != "absent":
            kwargs[name] = op[name]
    if cb is not None:
        kwargs[op["callback"]] = cb
    if op["extra"] == "unknown keyword":
        kwargs["bogus"] = 1
    if op["extra"] == "too many positional":
        return (op["topic"], op["value"], op["key"], -1, None, 0, None, None, None), {}
    if op["extra"] == "value twice":
        return (op["topic"], op["value"]), kwargs
    if op["topic_keyword"]:
        return (), {"topic": op["topic"], **kwargs}
    return (op["topic"],), kwargs


def _fast_eligible(p, case, args, kwargs):
    """Whether ProducerCore.produce must serve this call in C (no _produce_slow)."""
    if len(args) > len(PRODUCE_FIELDS):
        return False
    bound = dict(zip(PRODUCE_FIELDS, args))
    for name, v in kwargs.items():
        if name not in PRODUCE_FIELDS or name in bound:
            return False
        bound[name] = v
    topic, key, value = bound.get("topic"), bound.get("key"), bound.get("value")
    if type(topic) is not str or any(v is not None and type(v) is not bytes for v in (key, value)):
        return False
    if bound.get("headers") is not None:
        return False
    route = p._routes.get(topic)
    if route is None or not p._routes_current():
        return False
    size = _len(key) + _len(value) + RECORD_OVERHEAD
    if size > route.record_limit or p._queued_records >= case.max_queued or \
            p._queued_bytes + size > (case.buffer_memory or 33_554_432):
        return False
    if "partition" in bound:
        part = bound["partition"]
        if type(part) is not int or not -1 <= part < route.partitions:
            return False
    if "timestamp" in bound:
        ts = bound["timestamp"]
        if type(ts) is not int or not LONG_MIN <= ts <= LONG_MAX:
            return False
    return True


class Run:
    """One side's run of a Case: what each operation returned, raised and reported."""

    def __init__(self, case, side, slow):
        self.case, self.side, self.slow = case, side, slow
        self.results = []               # per op: (op, error signature, len(p) after, poll()/flush() result)
        self.reports = []               # (op index or None, report tuple)
        self.windows = {}               # op index -> (ms before, ms after) of the call
        self.fast_served = {}           # op index -> served in C (fast side only)
        self.eligible = {}

    def report(self, index):
        def on_delivery(err, msg):
            self.reports.append((index, (err, msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                                         msg.headers(), msg.timestamp(), len(msg))))
        return on_delivery

    def execute(self, p):
        case = self.case
        slow_calls = []
        if not self.slow:
            slow_method = p._produce_slow

            def counting(*args, **kwargs):
                slow_calls.append(1)
                return slow_method(*args, **kwargs)

            p._produce_slow = counting   # ProducerCore.produce hands over through this attribute
        produce = p._produce_slow if self.slow else p.produce
        other = 0
        for op in case.ops:
            err, ret = None, None
            if op["kind"] == "produce":
                i = op["index"]
                args, kwargs = _call(op, self.report(i))
                if not self.slow:
                    self.eligible[i] = _fast_eligible(p, case, args, kwargs)
                before, t0 = len(slow_calls), _now_ms()
                try:
                    produce(*args, **kwargs)
                except Exception as exc:   # compared with the other side's
                    err = _error_signature(exc)
                self.windows[i] = (t0, _now_ms())
                if not self.slow:
                    self.fast_served[i] = len(slow_calls) == before
            elif op["kind"] == "poll":
                ret = p.poll(0)
            elif op["kind"] == "flush":
                ret = p.flush(30)
            else:
                other += 1
                create_topic(self.side.admin, f"{case.topic}-other-{other}", 1, ring_bytes=65536, retention_ms=-1)
            self.results.append((op, err, len(p), ret))
        assert p.flush(30) == 0
        assert len(p) == 0
        assert p._route(case.topic).record_limit == case.record_limit   # the generated sizes straddle it


def _placements(case, run):
    """op index -> (partition, offset) of every record the run accepted, checked against the
    rules: explicit partitions, Kafka's murmur2 for keys (and for null keys with `murmur2`),
    the sticky rule for null keys with `murmur2_random`; dense offsets in produce order.

    Also what len(producer) and poll() must say after each operation when every record asks
    for a report (murmur2_random cases), from the batches this run's placement closed:
    a list aligned with run.results of (len, poll() result), None where it cannot be told."""
    at = f"seed {case.seed}, {run.side.name} side"
    by_index = {index: rep for index, rep in run.reports if index is not None}
    by_place = {(rep[2], rep[3]): rep for index, rep in run.reports if index is None}
    next_offset = [0] * case.partitions
    placed, accounting = {}, []
    count, size_of = [0] * case.partitions, [0] * case.partitions
    sticky, reset_pending, unserved, known = None, False, 0, case.random_sticky

    def close(p):
        nonlocal sticky, unserved
        unserved += count[p]
        count[p] = size_of[p] = 0
        if sticky == p:
            sticky = None

    for op, err, _, _ in run.results:
        ret = None
        if op["kind"] == "flush":
            for p in range(case.partitions):
                close(p)
            sticky, unserved, known = None, 0, case.random_sticky
            ret = 0
        elif op["kind"] == "metadata":
            reset_pending = True
        elif op["kind"] == "poll":
            if reset_pending:   # the stale routes may or may not have been reset by a failed produce()
                known = False
            ret, unserved = unserved, 0
        elif err is None:
            if reset_pending:   # the next produce() finds the routes stale: every open batch is sent
                for p in range(case.partitions):
                    close(p)
                sticky, reset_pending = None, False
            i = op["index"]
            key, part = _to_bytes(op["key"]), op["partition"]
            if part != "absent" and part >= 0:
                expected = int(part)
            elif key is None and case.random_sticky:
                expected = None      # sticky: whatever was picked, until that partition's batch closes
            else:
                expected = java_partition(key if key is not None else b"", case.partitions)
            rep = by_index.get(i)
            if expected is None:
                assert rep is not None, f"{at}, op {i}: no delivery report"
                actual = rep[2]
                if sticky is None:
                    sticky = actual
                assert actual == sticky, f"{at}, op {i}: null key went to {actual}, the sticky partition is {sticky}"
            else:
                actual = expected
                if rep is None:
                    rep = by_place.get((actual, next_offset[actual]))
                if rep is not None:
                    assert rep[2] == expected, f"{at}, op {i}: partition {rep[2]}, Kafka's partitioner says {expected}"
            if rep is not None:
                assert rep[3] == next_offset[actual], f"{at}, op {i}: offset {rep[3]}, expected {next_offset[actual]}"
            placed[i] = (actual, next_offset[actual])
            next_offset[actual] += 1
            size = RECORD_OVERHEAD + _len(op["key"]) + _len(op["value"]) + _headers_bytes(op["headers"])
            if count[actual] and (size_of[actual] + size > case.batch_limit or
                                  count[actual] >= case.batch_num_messages):
                close(actual)
            count[actual] += 1
            size_of[actual] += size
            if case.linger_ms == 0:
                close(actual)
        accounting.append((sum(count) + unserved, ret) if known and case.acks != -1 else None)
    return placed, by_index, by_place, accounting


def _timestamp_ok(op, run, ts):
    if ts[0] != shmlog.TIMESTAMP_CREATE_TIME:
        return False
    given = op["timestamp"]
    if given in ("absent", 0, None):
        lo, hi = run.windows[op["index"]]
        return lo - 1 <= ts[1] <= hi + 1
    return ts[1] == int(given)


def _check_run(case, run, placed, by_index, by_place):
    """A run's delivery reports and read-back records match what was produced."""
    at = f"seed {case.seed}, {run.side.name} side"
    ops = {op["index"]: op for op, err, _, _ in run.results if op["kind"] == "produce" and err is None}
    wants_reports = {i for i, op in ops.items() if op["callback"] != "none" or case.default_callback}
    reported = {i for i in by_index} | {i for i in ops if placed[i] in by_place}
    assert reported == wants_reports, at
    for i in wants_reports:
        op = ops[i]
        rep = by_index.get(i) or by_place[placed[i]]
        err, topic, part, offset, key, value, _headers, ts, length = rep
        assert err is None and topic == case.topic and (part, offset) == placed[i], f"{at}, op {i}"
        assert (key, value) == (_to_bytes(op["key"]), _to_bytes(op["value"])), f"{at}, op {i}"
        assert length == _len(op["value"]), f"{at}, op {i}"
        assert _timestamp_ok(op, run, ts), f"{at}, op {i}: report timestamp {ts}"
    read = _read_back(run.side.conf, case.topic, case.partitions, len(ops))
    where = {place: i for i, place in placed.items()}
    for p, msgs in read.items():
        assert [m.offset() for m in msgs] == list(range(len(msgs))), f"{at}, partition {p}"
        for m in msgs:
            op = ops[where[(p, m.offset())]]
            assert (m.key(), m.value(), m.headers(), len(m)) == \
                (_to_bytes(op["key"]), _to_bytes(op["value"]), _expected_headers(_headers_or_none(op)),
                 _len(op["value"])), f"{at}, op {op['index']} read back"
            assert _timestamp_ok(op, run, m.timestamp()), f"{at}, op {op['index']}: read back timestamp {m.timestamp()}"
    assert sum(len(msgs) for msgs in read.values()) == len(ops), at
    return read


def _headers_or_none(op):
    return None if op["headers"] == "absent" else op["headers"]


def _comparable_report(case, op, rep):
    """A report with what legitimately differs between the runs taken out."""
    err, topic, part, offset, key, value, headers, ts, length = rep
    now = op["timestamp"] in ("absent", 0, None)
    sticky = case.random_sticky and op["key"] is None and (op["partition"] == "absent" or op["partition"] < 0)
    place = None if sticky else part if case.random_sticky else (part, offset)
    return (err, topic, place, key, value, headers, "now" if now else ts, length)


@pytest.mark.parametrize("seed", range(5))
def test_produce_fast_and_slow_paths_agree_on_random_inputs(twins, seed):
    fast_side, slow_side = twins
    served = set()
    for n in range(4):       # 20 generated cases in all, each 30-50 operations
        case = Case(f"produce-{seed}-{n}", f"events-{n}")
        runs = []
        for side, slow in ((fast_side, False), (slow_side, True)):
            case.create_topic(side.admin)
            run = Run(case, side, slow)
            p = shmlog.Producer(case.producer_config(side.conf, run.report(None)))
            try:
                run.execute(p)
            finally:
                p.close()
            runs.append(run)
        fast, slow = runs
        where = f"seed {case.seed}"

        # what each call raised, len(producer) after it, what poll()/flush() returned; with
        # null keys spread at random and batches left open, the batches (so the reports ready
        # and len()) depend on the placement: each run is checked against its own below
        placement_free = not case.random_sticky or case.linger_ms == 0
        for (op, f_err, f_len, f_ret), (_, s_err, s_len, s_ret) in zip(fast.results, slow.results):
            at = f"{where}, op {op}"
            assert f_err == s_err, at
            if (case.acks != -1 and placement_free) or op["kind"] == "flush":
                assert (f_len, f_ret) == (s_len, s_ret), at

        # the fast side really ran in C wherever the C path applies, headers' neighbours included
        missed = [i for i, ok in fast.eligible.items() if ok and not fast.fast_served[i]]
        assert not missed, f"{where}: eligible produce() calls handed to _produce_slow: {missed}"
        served |= set(fast.fast_served.values())

        # placement, offsets, reports and read-back of each side against the rules
        checked = []
        for run in runs:
            placed, by_index, by_place, accounting = _placements(case, run)
            for (op, _, length, ret), want in zip(run.results, accounting):
                if want is not None:
                    assert (length, ret) == want, f"{where}, {run.side.name} side, op {op}: len(), poll()"
            read = _check_run(case, run, placed, by_index, by_place)
            checked.append((placed, by_index, by_place, read))

        # and the two sides against each other
        (f_placed, f_idx, f_place, _), (s_placed, s_idx, s_place, _) = checked
        ops = {op["index"]: op for op, err, _, _ in fast.results if op["kind"] == "produce" and err is None}
        assert set(f_placed) == set(s_placed) == set(ops)
        for i, op in ops.items():
            sticky = case.random_sticky and op["key"] is None and (op["partition"] == "absent" or op["partition"] < 0)
            if not sticky:      # (offsets too, unless null-key records were spread at random)
                assert f_placed[i][0] == s_placed[i][0], f"{where}, op {i}"
                if not case.random_sticky:
                    assert f_placed[i] == s_placed[i], f"{where}, op {i}"
            f_rep = f_idx.get(i) or f_place.get(f_placed[i])
            s_rep = s_idx.get(i) or s_place.get(s_placed[i])
            assert (f_rep is None) == (s_rep is None)
            if f_rep is not None:
                assert _comparable_report(case, op, f_rep) == _comparable_report(case, op, s_rep), f"{where}, op {i}"
    assert served == {True, False}   # calls served in C and hand-overs to _produce_slow were both seen


def test_keyed_records_land_where_kafkas_java_partitioner_puts_them_on_both_paths(conf, admin):
    rng = random.Random("keys")
    keys = [rng.randbytes(n) for n in range(40) for _ in range(6)] + [f"user-{i}".encode() for i in range(100)]
    for partitions in (7, 16):
        topic = create_topic(admin, f"keyed-{partitions}", partitions, ring_bytes=RING_BYTES, retention_ms=-1)
        p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
        placed = {"fast": [], "slow": []}
        slow, slow_calls = p._produce_slow, []

        def counting(*args, _slow=slow, _calls=slow_calls, **kwargs):
            _calls.append(1)
            return _slow(*args, **kwargs)

        p._produce_slow = counting                  # ProducerCore.produce hands over through the attribute
        p.produce(topic, b"warm-up", key=b"")       # the first call for a topic caches its route (slow)
        for name, produce in (("fast", p.produce), ("slow", slow)):
            for key in keys:
                produce(topic, b"v", key=key,
                        on_delivery=lambda e, m, out=placed[name]: out.append((m.key(), m.partition())))
        assert len(slow_calls) == 1
        p.flush(10)
        p.close()
        want = [(k, java_partition(k, partitions)) for k in keys]
        assert placed["fast"] == want
        assert placed["slow"] == want


def test_records_at_the_default_size_limit_are_judged_alike_on_both_paths(conf, admin):
    """message.max.bytes=1000000 (the default): a record of exactly the limit is accepted and
    one byte more is MSG_SIZE_TOO_LARGE, whichever path gets it."""
    topic = create_topic(admin, "large", 2, ring_bytes=4 * RING_BYTES, retention_ms=-1)
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    outcomes, sent = {"fast": [], "slow": []}, []
    try:
        p.produce(topic, b"warm-up", partition=0)
        limit = p._routes[topic].record_limit
        assert limit == 1_000_000
        for name, produce in (("fast", p.produce), ("slow", p._produce_slow)):
            for key in (None, b"key"):
                for extra in (-1, 0, 1):
                    value = b"L" * (limit + extra - RECORD_OVERHEAD - _len(key))
                    try:
                        produce(topic, value, key, 1)
                        outcomes[name].append(None)
                        sent.append((key, len(value)))
                    except KafkaException as exc:
                        outcomes[name].append(_error_signature(exc))
        assert p.flush(30) == 0
    finally:
        p.close()
    assert outcomes["fast"] == outcomes["slow"]
    assert [o and o[1] for o in outcomes["fast"]] == [None, None, KafkaError.MSG_SIZE_TOO_LARGE] * 2
    read = _read_back(conf, topic, 2, len(sent) + 1)
    assert [(m.key(), len(m.value())) for m in read[1]] == sent


# --------------------------------------------------------------------------- poll()/consume(): the read paths

def _records(seed, partitions, count, big=False):
    """Random records with their placement: explicit partitions or keys (deterministic)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        key = rng.choice([None, b"", rng.randbytes(rng.randint(1, 10)), f"k{rng.randint(0, 30)}"])
        if big and rng.random() < 0.7:
            value = bytes([65 + i % 26]) * rng.randint(600, 1500)
        else:
            value = rng.choice([None, b"", rng.randbytes(rng.randint(1, 64)), "välue", b"z" * rng.randint(500, 9000)])
        headers = rng.choice([None, None, None, [("h", b"1"), ("h", None)], {"ü": "x", "b": b""}])
        timestamp = rng.choice([0, rng.randint(1, 1 << 41), 1, -1])
        partition = rng.randrange(partitions) if key is None or rng.random() < 0.3 else -1
        out.append({"key": key, "value": value, "headers": headers, "timestamp": timestamp, "partition": partition})
    return out


def _produce_records(conf, topic, records, seed, **extra):
    """Produce through randomly both paths; returns {partition: [expected message tuple]}."""
    rng = random.Random(seed)
    p = shmlog.Producer({**conf, "linger.ms": 60_000, "batch.num.messages": rng.choice([1, 4, 50]),
                         "message.max.bytes": 20_000, **extra})
    reports = []
    try:
        for i, r in enumerate(records):
            produce = p._produce_slow if rng.random() < 0.5 else p.produce
            produce(topic, r["value"], r["key"], r["partition"], lambda e, m, i=i: reports.append((i, e, m)),
                    r["timestamp"], r["headers"])
            if rng.random() < 0.03:
                p.flush(30)
        assert p.flush(30) == 0
    finally:
        p.close()
    assert len(reports) == len(records)
    expected = {}
    for i, err, m in sorted(reports, key=lambda x: (x[2].partition(), x[2].offset())):
        assert err is None
        r = records[i]
        value = _to_bytes(r["value"])
        expected.setdefault(m.partition(), []).append(
            (topic, m.partition(), m.offset(), _to_bytes(r["key"]), value, _expected_headers(r["headers"]),
             (shmlog.TIMESTAMP_CREATE_TIME, m.timestamp()[1]), None, len(value or b""), None))
    return expected


@contextlib.contextmanager
def _consumer(conf, topic, partitions, **extra):
    c = shmlog.Consumer({**conf, **extra})
    c.calls = {"_poll_slow": 0, "_decode": 0}
    for name in c.calls:
        method = getattr(c, name)

        def counting(*args, _method=method, _name=name, **kwargs):
            c.calls[_name] += 1
            return _method(*args, **kwargs)

        setattr(c, name, counting)    # ConsumerCore.poll hands over through the attribute, too
    c.assign([TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in partitions])
    try:
        yield c
    finally:
        c.close()


def _drain(total, step, deadline_s=15.0):
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < total and time.monotonic() < deadline:
        got += step()
    return got


def _by_partition(msgs):
    out = {}
    for m in msgs:
        out.setdefault(m[1], []).append(m)
    return out


def _read_modes(conf, topic, partitions, total, seed, fetch_bytes):
    """topic read through each path: {mode: {partition: [message tuple]}} plus call counts."""
    rng = random.Random(seed)
    extra = {"max.partition.fetch.bytes": fetch_bytes, "check.crcs": rng.random() < 0.5}
    out, calls = {}, {}
    one = lambda m: [_message_tuple(m)] if m is not None else []   # noqa: E731

    # one partition per consumer: C fetch + decode + pop (fast) against _poll_slow
    for mode, step in (("poll, one partition", lambda c: one(c.poll(0.5))),
                       ("_poll_slow, one partition", lambda c: one(c._poll_slow(0.5)))):
        got, calls[mode] = [], {"_poll_slow": 0, "_decode": 0}
        for p in range(partitions):
            with _consumer(conf, topic, [p], **extra) as c:
                low, high = c.get_watermark_offsets(TopicPartition(topic, p))
                got += _drain(high - low, partial(step, c))
                assert one(c.poll(0)) == [] and one(c._poll_slow(0)) == []
                for k in calls[mode]:
                    calls[mode][k] += c.calls[k]
        out[mode] = _by_partition(got)

    # every partition on one consumer: poll(), _poll_slow() and consume()
    for mode, step in (("poll, all partitions", lambda c: one(c.poll(0.5))),
                       ("_poll_slow, all partitions", lambda c: one(c._poll_slow(0.5))),
                       ("consume, all partitions",
                        lambda c: [_message_tuple(m) for m in c.consume(rng.randint(1, 40), 0.5)])):
        with _consumer(conf, topic, range(partitions), **extra) as c:
            out[mode] = _by_partition(_drain(total, partial(step, c)))
            assert c.consume(10, 0) == []
            calls[mode] = dict(c.calls)

    # one consumer, the paths interleaved at random, with seeks, position() and pause/resume
    with _consumer(conf, topic, range(partitions), **extra) as c:
        seen = {p: {} for p in range(partitions)}
        next_offset = {p: 0 for p in range(partitions)}
        paused = set()
        deadline = time.monotonic() + 20
        while sum(map(len, seen.values())) < total and time.monotonic() < deadline:
            r = rng.random()
            if r < 0.04:
                p = rng.randrange(partitions)
                to = rng.randint(0, len(seen[p])) if rng.random() < 0.8 else shmlog.OFFSET_BEGINNING
                c.seek(TopicPartition(topic, p, to))
                next_offset[p] = max(to, 0)
                continue
            if r < 0.07 and partitions > 1:
                p = rng.randrange(partitions)
                (c.resume if p in paused else c.pause)([TopicPartition(topic, p)])
                paused ^= {p}
                continue
            if r < 0.40:
                msgs = one(c.poll(0.2))
            elif r < 0.75:
                msgs = one(c._poll_slow(0.2))
            else:
                msgs = [_message_tuple(m) for m in c.consume(rng.randint(1, 7), 0.2)]
            if not msgs and paused:
                c.resume([TopicPartition(topic, p) for p in paused])
                paused = set()
            for m in msgs:
                p, offset = m[1], m[2]
                assert p not in paused, "a paused partition's record was returned"
                assert offset == next_offset[p], f"{p}: offset {offset} returned, {next_offset[p]} was next"
                assert seen[p].setdefault(offset, m) == m, "a record read twice differs"
                next_offset[p] = offset + 1
            if msgs:
                p, offset = msgs[-1][1], msgs[-1][2]
                assert c.position([TopicPartition(topic, p)])[0].offset == offset + 1
        out["interleaved, with seeks"] = {p: [d[o] for o in sorted(d)] for p, d in seen.items() if d}
        calls["interleaved, with seeks"] = dict(c.calls)
    return out, calls


def _python_decoder_read(conf, topic, partitions):
    """Each partition's ring frames fetched and decoded by the Python decoder (Consumer._decode,
    through _decode_rest, where the C decoder hands compressed batches over)."""
    got = {}
    for p in range(partitions):
        with _consumer(conf, topic, [p]) as c:
            reader = c._readers[(topic, p)]
            while True:
                n = reader.ring.fetch(reader.cursor, ffi.from_buffer(c._buffer), len(c._buffer), c._frames,
                                      MAX_FRAMES_PER_FETCH, c._check_crcs)
                if n == lib.SHMLOG_ESMALL:
                    c._buffer = bytearray(2 * len(c._buffer))
                    continue
                assert n >= 0
                if n == 0:
                    break
                c._decode_rest(reader, 0, n, 0)
                while reader.pending:
                    m = reader.pending.popleft()
                    got.setdefault(p, []).append(_message_tuple(m))
            assert c.poll(0) is None        # the position moved past them, as a fetch does
            assert c.calls["_decode"] > 0
    return got


@pytest.mark.parametrize("seed", range(3))
def test_poll_and_consume_paths_read_the_same_records(conf, admin, seed):
    rng = random.Random(f"consume-{seed}")
    partitions = rng.choice([1, 2, 3])
    records = _records(f"records-{seed}", partitions, rng.randint(120, 220))
    codec = ["gzip", "snappy", "lz4", "zstd"][seed % 4]
    plain = create_topic(admin, "plain", partitions, ring_bytes=RING_BYTES, retention_ms=-1)
    packed = create_topic(admin, "packed", partitions, ring_bytes=RING_BYTES, retention_ms=-1)
    expected = _produce_records(conf, plain, records, f"producer-{seed}", acks=1)
    expected_packed = _produce_records(conf, packed, records, f"producer-{seed}", acks=1, **{"compression.type": codec})
    total = len(records)
    fetch_bytes = rng.choice([1, 4096, 1_048_576])

    for topic, want in ((plain, expected), (packed, expected_packed)):
        modes, calls = _read_modes(conf, topic, partitions, total, f"read-{seed}-{topic}", fetch_bytes)
        for mode, got in modes.items():
            assert got == want, f"{topic}, {mode} (max.partition.fetch.bytes={fetch_bytes})"
        if topic == plain:
            # one partition: C fetched, decoded and returned records without _poll_slow
            fast = calls["poll, one partition"]
            assert 0 < fast["_poll_slow"] < total // 2, calls
            assert fast["_decode"] == 0, calls
            assert _python_decoder_read(conf, plain, partitions) == want
        else:
            assert all(c["_decode"] > 0 for c in calls.values()), calls   # compressed: the Python decoder
    # the same records, compressed or not, sit at the same offsets with the same contents
    # (timestamps aside: timestamp=0 is each producer's own "now")
    same = lambda msgs: {p: [m[1:6] + m[7:] for m in ms] for p, ms in msgs.items()}   # noqa: E731
    assert same(expected) == same(expected_packed)


def test_records_behind_the_ring_read_the_same_from_segment_files(conf, admin):
    """A 64 KiB ring with acks=all: older records are only in the segment files, which the
    Python decoder reads; both poll paths cross from segments to the ring the same way."""
    topic = create_topic(admin, "small-ring", 1, ring_bytes=65536, retention_ms=-1)
    records = _records("segments", 1, 400, big=True)
    want = _produce_records(conf, topic, records, "segments-producer", acks=-1)
    assert sum(len(_to_bytes(r["value"]) or b"") for r in records) > 3 * 65536
    modes, calls = _read_modes(conf, topic, 1, len(records), "segments-read", 1_048_576)
    for mode, got in modes.items():
        assert got == want, mode
    assert all(c["_decode"] > 0 for c in calls.values()), calls     # segments went through _decode


def test_stored_offsets_and_commits_agree_whichever_path_returned_the_records(conf, admin):
    topic = create_topic(admin, "grouped", 2, ring_bytes=RING_BYTES, retention_ms=-1)
    records = _records("grouped", 2, 300)
    want = _produce_records(conf, topic, records, "grouped-producer", acks=1)
    rng = random.Random("grouped")
    committed = []
    for _round in range(3):
        group = {"group.id": "g", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        with _consumer(conf, topic, [], **group) as c:
            c.assign([TopicPartition(topic, p, shmlog.OFFSET_STORED) for p in range(2)])
            last = {}
            for _ in range(rng.randint(10, 30)):
                r = rng.random()
                msgs = [c.poll(0.5)] if r < 0.4 else [c._poll_slow(0.5)] if r < 0.8 else \
                    c.consume(rng.randint(1, 5), 0.5)
                for m in msgs:
                    if m is not None:
                        assert _message_tuple(m) == want[m.partition()][m.offset()]
                        last[m.partition()] = m.offset()
                        committed.append((m.partition(), m.offset()))
            result = c.commit(asynchronous=False)
            assert sorted((tp.partition, tp.offset) for tp in result) == sorted((p, o + 1) for p, o in last.items())
            assert {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in last])} == \
                {p: o + 1 for p, o in last.items()}
    assert len(committed) < len(records)   # (each round ended before the data did)
    # every round resumed where the previous committed: no record twice, none skipped
    for p in range(2):
        offsets = [o for q, o in committed if q == p]
        assert offsets == list(range(len(offsets)))


# --------------------------------------------------------------------------- disagreements and defects found

def test_a_falsy_callable_delivery_callback_is_called_on_both_paths(conf, topic):
    class Reports(list):
        def __call__(self, err, msg):
            self.append(msg.offset())

    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    try:
        p.produce(topic, b"warm-up")                   # caches the route: the next call is served in C
        fast, slow = Reports(), Reports()
        p.produce(topic, b"x", on_delivery=fast)
        p._produce_slow(topic, b"x", on_delivery=slow)
        p.flush(10)
    finally:
        p.close()
    assert (fast, slow) == ([1], [2])


def test_bytes_subclasses_are_accepted_like_bytes(conf, topic):
    class Sub(bytes):
        pass

    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    outcomes = []
    try:
        p.produce(topic, b"warm-up")
        for produce in (p.produce, p._produce_slow):
            for kwargs in ({"value": Sub(b"x")}, {"value": b"x", "key": Sub(b"k")}):
                try:
                    produce(topic, **kwargs)
                    outcomes.append(None)
                except Exception as exc:
                    outcomes.append(_error_signature(exc))
        p.flush(10)
    finally:
        p.close()
    assert outcomes == [None] * 4


def test_a_topic_that_is_not_a_str_is_a_type_error_and_the_broker_survives(tmp_path):
    outcomes = []
    for bad in (None, 1):
        raised = alive = None
        try:
            with _broker(str(tmp_path / f"broker-{bad}")) as b:
                p = shmlog.Producer({"bootstrap.servers": b.bootstrap_servers, "acks": 1})
                try:
                    try:
                        p.produce(bad, b"x")
                    except Exception as exc:
                        raised = type(exc).__name__
                    try:
                        p.produce("after", b"x")
                        alive = p.flush(5) == 0
                    except KafkaException:
                        alive = False
                finally:
                    with contextlib.suppress(Exception):
                        p.close()
            teardown = None
        except Exception as exc:      # a dead broker leaves shared memory behind (_broker removes it)
            teardown = f"{type(exc).__name__}: {exc}"
        finally:
            for proc in broker_processes(str(tmp_path / f"broker-{bad}")):   # a broker that died halfway
                proc.kill()
        outcomes.append((bad, raised, alive, teardown))
    assert outcomes == [(None, "TypeError", True, None), (1, "TypeError", True, None)]


def test_queue_buffering_max_messages_zero_means_no_limit(conf, topic):
    p = shmlog.Producer({**conf, "acks": 1, "queue.buffering.max.messages": 0})
    outcomes = []
    try:
        for produce in (p._produce_slow, p.produce, p.produce):
            try:
                produce(topic, b"x")
                outcomes.append(None)
            except BufferError as exc:
                outcomes.append(str(exc))
        p.flush(10)
    finally:
        p.close()
    assert outcomes == [None, None, None]
