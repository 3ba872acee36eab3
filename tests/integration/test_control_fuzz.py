"""Fuzzing the control channel: no request, however bad, takes the broker down.

Raw connections (shmlog.control.connect: the greeting and credential checks, nothing else)
send random bytes, mutated real requests of every op (tests/control_corpus.py), JSON that is
not an object, deep nesting, invalid UTF-8, NaN, huge integers, oversize lines and partial
lines. Every complete line must get a well-formed reply (an error for a bad one); afterwards
the supervisor is the same process, alive, and well-behaved clients work: a topic is
created, records produced and consumed by a group member, offsets committed.

SHMLOG_FUZZ_ROUNDS (default 300) sets how many lines each fuzz test sends; see
tests/README.md, "Longer runs". Each test prints its seed; SHMLOG_FUZZ_SEED replays one.
"""
import json
import os
import random
import socket
import time

import psutil
import pytest

import shmlog
from shmlog import TopicPartition, control
from shmlog.broker.requests import MAX_DEPTH, MAX_LINE_BYTES
from tests.conftest import create_topic
from tests.control_corpus import DEFERRED_OPS, FUZZ_GROUP, FUZZ_TOPIC, corpus

ROUNDS = int(os.environ.get("SHMLOG_FUZZ_ROUNDS", "300"))
SEED = int(os.environ.get("SHMLOG_FUZZ_SEED", str(random.randrange(1 << 32))))
REPLY_TIMEOUT_S = 10.0
RING_BYTES = 65536

# Values a mutation puts into a request: every JSON type, the edges of the schema's ranges,
# names that exist and names that do not (never the internal topics: deleting those is a
# legitimate, if unwise, request).
POOL = [None, True, False, 0, 1, -1, 2, -2, 1 << 31, -(1 << 31) - 1, 1 << 63, -(1 << 63) - 1, 1 << 64, 10 ** 19,
        0.5, -1e300, 1e308, float("nan"), float("inf"), "", "x", FUZZ_TOPIC, FUZZ_GROUP, "fuzz-other", "a" * 300,
        "\ud800", "\x00", "^fuzz.*", "range", "status", "metadata", "join_group", [], [None], [FUZZ_TOPIC, 0],
        [[FUZZ_TOPIC, 0, 0, ""]], {}, {"topic": FUZZ_TOPIC}, {"": None}, "g" * 40000]


@pytest.fixture
def fuzz_broker(start_broker, capfd):
    """A broker with small rings (a mutated request may create topics) and no rebalance delay.
    Its log must not show the last-resort catch-all: the schema refuses bad requests first."""
    b = start_broker(ring_bytes=RING_BYTES, group_initial_rebalance_delay_ms=0)
    admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
    try:
        create_topic(admin, FUZZ_TOPIC, 1, ring_bytes=RING_BYTES)
    finally:
        admin.close()
    b.pid = _supervisor_pid(b)
    print(f"control fuzz seed {SEED} (replay with SHMLOG_FUZZ_SEED={SEED})")
    yield b
    log = capfd.readouterr().err
    assert "internal error" not in log, log[-5000:]


def _supervisor_pid(b):
    sock, greeting = control.connect(b.data_dir)
    sock.close()
    return greeting["pid"]


class Raw:
    """A control connection speaking bytes: lines out, reply lines in."""

    def __init__(self, data_dir):
        self.sock, _ = control.connect(data_dir)
        self.sock.settimeout(REPLY_TIMEOUT_S)
        self.buf = b""

    def send(self, raw):
        self.sock.sendall(raw)

    def line(self):
        """The next line from the broker; b"" once it closed the connection."""
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def reply(self, ids):
        """The next reply, whose id must be in ids (None: any id, the line's bytes were mutated);
        pushes and late answers to deferred requests are skipped."""
        while True:
            raw = self.line()
            assert raw, f"the broker closed the connection instead of answering a request with id in {ids}"
            message = json.loads(raw)
            assert isinstance(message, dict), raw
            if message.get("push"):
                continue
            assert ids is None or message.get("id") in ids, f"reply {raw[:300]!r} answers none of {ids}"
            return _well_formed(message)

    def close(self):
        self.sock.close()


def _well_formed(reply):
    assert isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert isinstance(reply.get("code"), int) and isinstance(reply.get("error"), str) and reply["error"], reply
    return reply


def assert_broker_serves_clients(b):
    """Same supervisor, alive, and a topic, records, a group member and its commit all work."""
    assert _supervisor_pid(b) == b.pid
    assert b.process.poll() is None and psutil.pid_exists(b.pid)
    conf = {"bootstrap.servers": b.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    try:
        topic = create_topic(admin, f"after-{time.monotonic_ns()}", 2, ring_bytes=RING_BYTES)
    finally:
        admin.close()
    p = shmlog.Producer({**conf, "acks": 1})
    try:
        for i in range(20):
            p.produce(topic, f"v{i}".encode(), key=f"k{i}".encode())
        assert p.flush(10) == 0
    finally:
        p.close()
    c = shmlog.Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        got, deadline = [], time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                got.append(m)
        assert sorted(m.value() for m in got) == sorted(f"v{i}".encode() for i in range(20))
        c.commit(asynchronous=False)
        ends = {}
        for m in got:
            ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
        committed = c.committed([TopicPartition(topic, p) for p in ends], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == ends
    finally:
        c.close()


# ---------------------------------------------------------------------------- generators

def _mutate_value(rng, value, depth=0):
    """value with one random change somewhere inside it."""
    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        r = rng.random()
        if r < 0.2:
            return {k: v for k, v in value.items() if k != key}
        if r < 0.3:
            return {**value, rng.choice(["extra", "", "op", "id", "x" * 50]): rng.choice(POOL)}
        return {**value, key: _mutate_value(rng, value[key], depth + 1)}
    if isinstance(value, list) and value and depth < 4 and rng.random() < 0.7:
        i = rng.randrange(len(value))
        r = rng.random()
        if r < 0.15:
            return value[:i] + value[i + 1:]
        if r < 0.25:
            return value + [rng.choice(POOL)]
        return value[:i] + [_mutate_value(rng, value[i], depth + 1)] + value[i + 1:]
    if rng.random() < 0.15:
        return [value] if rng.random() < 0.5 else {"v": value}
    return rng.choice(POOL)


def _mutate_bytes(rng, raw):
    raw = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        r, i = rng.random(), rng.randrange(len(raw) + 1)
        if r < 0.4 and i < len(raw):
            raw[i] = rng.randrange(256)
        elif r < 0.7:
            raw[i:i] = rng.randbytes(rng.randint(1, 4))
        else:
            del raw[i:i + rng.randint(1, 8)]
    return bytes(raw).replace(b"\n", b" ")


def _nasty(rng):
    """(line, what) of a line that is no valid request at all."""
    choices = [
        (lambda: rng.randbytes(rng.randint(0, 300)).replace(b"\n", b" "), "random bytes"),
        (lambda: json.dumps(rng.choice([[], [1, 2], "status", 5, -1.5, None, True, [{"op": "status"}]])).encode(),
         "JSON that is not an object"),
        (lambda: b"[" * rng.randint(MAX_DEPTH + 1, 200_000), "open brackets"),
        (lambda: (b'{"op":"status","x":' + b'{"a":' * (MAX_DEPTH + rng.randint(0, 50)) + b"1" +
                  b"}" * (MAX_DEPTH + 50))[:-1], "deep valid-looking nesting"),
        (lambda: b'{"op":"status","x":"' + rng.randbytes(8).replace(b"\n", b" ") + b'\xff\xfe"}', "invalid UTF-8"),
        (lambda: b'{"op":"status","id":' + rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999",
                                                        b"9" * rng.randint(21, 5000)]) + b"}", "bad numbers"),
        (lambda: b'{"op":"status","op":"metadata"}', "a key twice"),
        (lambda: b'{"op":"metadata","auto_create":[' + b",".join([b"null", b"123", b'"\\ud800"']) + b"]}",
         "bad topics"),
        (lambda: b"", "an empty line"),
    ]
    make, what = rng.choice(choices)
    return make(), what


def _requests(rng):
    return [r for r in corpus() if r["op"] != "shutdown"]


def _fuzz(b, rng, rounds, kinds):
    """Send `rounds` lines of the given kinds ("nasty", "mutated"), each answered before the next."""
    raw = Raw(b.data_dir)
    deferred = Raw(b.data_dir)      # mutated joins and syncs: answered whenever the group decides
    next_id = 0
    try:
        for _ in range(rounds):
            kind = rng.choice(kinds)
            if kind == "nasty":
                line, what = _nasty(rng)
                raw.send(line + b"\n")
                reply = raw.reply({None})
                assert not reply["ok"], (what, line[:200], reply)
                continue
            request = rng.choice(_requests(rng))
            for _ in range(rng.randint(1, 3)):
                request = _mutate_value(rng, request)
            next_id += 1
            if not isinstance(request, dict):
                line, ids = json.dumps(request).encode(), {None}
            else:
                if rng.random() < 0.9:
                    request["id"] = next_id
                line = json.dumps(request).encode()
                ids = {request.get("id"), None} if isinstance(request.get("id"), int) else {None}
            op = request.get("op") if isinstance(request, dict) else None
            if isinstance(op, str) and op in DEFERRED_OPS:
                deferred.send(line + b"\n")    # its reply, if any, comes whenever: never waited for
                continue
            if rng.random() < 0.2:
                line, ids = _mutate_bytes(rng, line), None   # it may now carry any id, or none
            raw.send(line + b"\n")
            raw.reply(ids)
    finally:
        raw.close()
        deferred.close()


# ---------------------------------------------------------------------------- tests

def test_mutated_requests_of_every_op_get_well_formed_replies_and_the_broker_serves_clients_after(fuzz_broker):
    _fuzz(fuzz_broker, random.Random(SEED), ROUNDS, ["mutated"])
    assert_broker_serves_clients(fuzz_broker)


def test_random_bytes_and_malformed_json_get_error_replies_and_the_broker_serves_clients_after(fuzz_broker):
    _fuzz(fuzz_broker, random.Random(SEED + 1), ROUNDS, ["nasty"])
    assert_broker_serves_clients(fuzz_broker)


def test_every_kind_of_bad_line_interleaved_on_many_connections_leaves_the_broker_serving(fuzz_broker):
    rng = random.Random(SEED + 2)
    for _ in range(10):
        _fuzz(fuzz_broker, rng, max(1, ROUNDS // 10), ["nasty", "mutated"])
    assert_broker_serves_clients(fuzz_broker)


def test_a_produce_to_a_topic_that_is_not_a_str_is_a_type_error_and_the_broker_stays_up(fuzz_broker):
    p = shmlog.Producer({"bootstrap.servers": fuzz_broker.bootstrap_servers})
    try:
        for bad in (None, 123, b"bytes", ["t"]):
            with pytest.raises(TypeError, match="argument 'topic' must be str"):
                p.produce(bad, b"x")
    finally:
        p.close()
    assert_broker_serves_clients(fuzz_broker)


@pytest.mark.parametrize("newline", [True, False], ids=["with a newline", "without a newline"])
def test_a_line_over_the_limit_is_answered_with_an_error_and_its_connection_closed(fuzz_broker, newline):
    raw = Raw(fuzz_broker.data_dir)
    try:
        try:
            raw.send(b'{"op":"status","pad":"' + b"x" * MAX_LINE_BYTES + b'"}' + (b"\n" if newline else b""))
        except (BrokenPipeError, ConnectionResetError):
            pass   # the broker stopped reading once the line was too long
        reply = json.loads(raw.line())
        assert (reply["ok"], reply["id"]) == (False, None)
        assert f"longer than the limit of {MAX_LINE_BYTES} bytes; closing the connection" in reply["error"]
        assert raw.line() == b""
    finally:
        raw.close()
    assert_broker_serves_clients(fuzz_broker)


def test_partial_lines_then_a_close_leave_the_broker_serving(fuzz_broker):
    rng = random.Random(SEED + 3)
    for request in _requests(rng):
        line = json.dumps(request).encode()
        raw = Raw(fuzz_broker.data_dir)
        raw.send(line[:rng.randrange(len(line))])
        raw.close()
    raw = Raw(fuzz_broker.data_dir)      # a request and the start of the next, then a close
    raw.send(b'{"op":"status","id":1}\n{"op":"sta')
    assert raw.reply({1})["ok"]
    raw.close()
    assert_broker_serves_clients(fuzz_broker)


def test_a_client_that_never_reads_its_replies_does_not_stall_the_broker(fuzz_broker):
    raw = Raw(fuzz_broker.data_dir)
    try:
        # Far more replies than a socket buffer holds; the broker must keep serving others meanwhile.
        batch = b'{"op":"metadata"}\n' * 1000
        for _ in range(10):
            raw.send(batch)
        started = time.monotonic()
        other = Raw(fuzz_broker.data_dir)
        other.send(b'{"op":"status","id":7}\n')
        assert other.reply({7})["ok"]
        other.close()
        assert time.monotonic() - started < REPLY_TIMEOUT_S
        assert_broker_serves_clients(fuzz_broker)
    finally:
        raw.sock.shutdown(socket.SHUT_RDWR)
        raw.close()


def test_a_client_that_lets_too_many_replies_pile_up_unread_is_disconnected(fuzz_broker):
    raw = Raw(fuzz_broker.data_dir)
    batch = b'{"op":"metadata"}\n' * 1000
    sent = 0
    try:
        # Each reply is about 2 KB: a few hundred MiB of replies would be needed without the limit.
        while sent < 200_000:
            raw.send(batch)
            sent += 1000
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        raw.close()
    assert sent < 200_000, "the broker kept queueing replies nobody read"
    assert_broker_serves_clients(fuzz_broker)
