"""What each Kafka API does, in terms of the broker's rings, segment files and control channel.

A handler takes (conn, request, version) and returns a dict that wire.build turns into the
response class of that version (keys a version lacks are ignored), or None for a request
Kafka does not answer (Produce with acks=0). Errors are Kafka's error codes, per partition or
per topic where Kafka puts them.
"""
import datetime
import struct
import time

from shmlog._native import ffi, lib
from shmlog.broker.kafka_listener import batches, fetch_sessions, idempotence, templates
from shmlog.broker.kafka_listener.wire import EPOCH
from shmlog.errors import KafkaError, KafkaException, reason_of
from shmlog.log import batch as rb
from shmlog.log import control_record
from shmlog.log.segment import SegmentReader

NODE_ID = 0
NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
REQUEST_TIMED_OUT = 7
COORDINATOR_NOT_AVAILABLE = 15
INVALID_TOPIC = 17
TOPIC_AUTHORIZATION_FAILED = 29
NOT_ENOUGH_REPLICAS = 19
INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
KAFKA_STORAGE_ERROR = 56
UNKNOWN_SERVER_ERROR = -1
INVALID_CONFIG = 40
NOT_TAKEN = object()          # produce_one, fetch_one: the full handler answers this request
NO_COMMITTED_OFFSET = -1001   # the coordinator's "nothing committed" (Kafka answers offset -1)
FETCH_BUFFER_MIN_BYTES = 64 << 10
FRAMES_PER_FETCH = 256
ARENA_KEEP_BYTES = 8 << 20   # a connection's FetchArena keeps at most this

# shmlog's client-local (negative) codes, as the broker code Kafka would answer with
_LOCAL_TO_WIRE = {KafkaError._UNKNOWN_TOPIC: UNKNOWN_TOPIC_OR_PARTITION,
                  KafkaError._UNKNOWN_PARTITION: UNKNOWN_TOPIC_OR_PARTITION,
                  KafkaError._INVALID_ARG: INVALID_REQUEST, KafkaError._MSG_TIMED_OUT: REQUEST_TIMED_OUT,
                  KafkaError._TIMED_OUT: REQUEST_TIMED_OUT, KafkaError._BAD_MSG: KAFKA_STORAGE_ERROR}


def wire_code(code):
    code = int(code)
    return code if code >= 0 else _LOCAL_TO_WIRE.get(code, UNKNOWN_SERVER_ERROR)


def exc_code(exc):
    return wire_code(exc.args[0].code()) if isinstance(exc, KafkaException) else UNKNOWN_SERVER_ERROR


# ---------------------------------------------------------------------------- ApiVersions

def api_versions(conn, req, version):
    return {"error_code": NONE, "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi}
                                             for k, (lo, hi, _) in sorted(conn.server.apis.items())]}


def unsupported_api_versions(conn):
    """ApiVersions v0 answer to a version we do not speak (Kafka's rule: the client retries with v0)."""
    return {"error_code": UNSUPPORTED_VERSION, "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi}
                                                            for k, (lo, hi, _) in sorted(conn.server.apis.items())]}


# ---------------------------------------------------------------------------- Metadata

def _broker_entry(conn):
    host, port = conn.server.advertised
    return {"node_id": NODE_ID, "host": host, "port": port, "rack": None}


def metadata(conn, req, version):
    logs = conn.logs
    wanted = getattr(req, "topics", None)
    auto = bool(getattr(req, "allow_auto_topic_creation", True)) if version >= 4 else True
    meta = logs.maybe_refresh()
    if wanted is not None:
        names = [t.name for t in wanted if t.name is not None]
        missing = [n for n in names if n not in meta["topics"]]
        if missing and auto:
            try:
                meta = logs.refresh(auto_create=missing)
            except KafkaException:
                meta = logs.refresh()
    else:
        names = sorted(n for n in meta["topics"])
    topics = []
    for name in names:
        info = meta["topics"].get(name)
        if info is None:
            topics.append({"error_code": UNKNOWN_TOPIC_OR_PARTITION, "name": name, "partitions": []})
            continue
        states = info.get("partition_states") or [{}] * info["partitions"]
        topics.append({"error_code": NONE, "name": name, "is_internal": name.startswith("__"),
                       "partitions": [{"error_code": NONE, "partition_index": p, "leader_id": NODE_ID,
                                       "leader_epoch": int(states[p].get("leader_epoch", 0)),
                                       "replica_nodes": (NODE_ID,), "isr_nodes": (NODE_ID,),
                                       "offline_replicas": ()} for p in range(info["partitions"])]})
    return {"brokers": [_broker_entry(conn)], "cluster_id": conn.server.cluster_id, "controller_id": NODE_ID,
            "topics": topics, "cluster_authorized_operations": -2147483648}


# ---------------------------------------------------------------------------- Produce

def produce(conn, req, version):
    return produce_topics(conn, [(td.name, td.partition_data) for td in req.topic_data], req.acks,
                          int(req.timeout.total_seconds() * 1000))


def produce_topics(conn, topics, acks, timeout_ms):
    """The response body of a Produce of topics [(name, [partition data: .index, .records])]; for
    acks=all, once the batches are appended, a Pending whose result() waits for their fsync (the
    connection may meanwhile append the Produce requests the client pipelined behind this one, so
    one fsync covers several: see server.Connection.run)."""
    logs = conn.logs
    if acks not in (0, 1, -1):
        return _produce_all(topics, INVALID_REQUEST if acks else None, f"acks={acks}: use 0, 1 or -1 (all)",
                            acks=acks)
    max_message_bytes = broker_max_message_bytes(logs)
    out = []
    waits = []
    logs.hold()    # as `with logs.using()`, without a context manager's cost on every request
    try:
        for name, partition_data in topics:
            parts = []
            info = logs.topic(name)
            for pd in partition_data:
                entry, wait = _produce_partition(conn, name, info, pd, acks, timeout_ms, max_message_bytes)
                parts.append(entry)
                if wait is not None:
                    waits.append((entry, *wait))
            out.append({"name": name, "partition_responses": parts})
        if acks == 0:
            return None
        body = {"responses": out}
        return Pending(logs, body, waits, timeout_ms) if waits else body
    finally:
        logs.release()


class Pending:
    """An acks=all Produce whose batches are in the ring: result() is its response body once they
    are fsynced (or the error when they are not within the request's timeout). The rings stay
    mapped until result() or abandon() (LogsView.hold)."""

    def __init__(self, logs, body, waits, timeout_ms):
        self.logs = logs
        self.body = body
        self.waits = waits               # [(partition entry, ring, last offset)]
        self.deadline = time.monotonic() + timeout_ms / 1000
        logs.hold()
        self.held = True

    def ready(self):
        """True when result() will not wait: each wait is over (fsynced, or failed) or time is up."""
        if time.monotonic() >= self.deadline:
            return True
        bell = self.logs.doorbell.ptr
        return all(lib.shmlog_ring_wait_flushed(ring.map, last, 0, bell) != lib.SHMLOG_EAGAIN
                   for _, ring, last in self.waits)

    def result(self):
        try:
            for entry, ring, last in self.waits:
                remaining_ns = max(0, int((self.deadline - time.monotonic()) * 1e9))
                rc = lib.shmlog_ring_wait_flushed(ring.map, last, remaining_ns, self.logs.doorbell.ptr)
                if rc != 0:
                    # NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank meanwhile, KAFKA_STORAGE_ERROR, or a timeout.
                    err = ring.flush_wait_error(rc, last)
                    entry.update(error_code=wire_code(err.code()), log_start_offset=-1,
                                 error_message=f"offset {last} was not fsynced within the request's timeout"
                                 if rc == lib.SHMLOG_EAGAIN else err.str())
        finally:
            self.abandon()
        return self.body

    def abandon(self):
        if self.held:
            self.held = False
            self.logs.release()


def _produce_all(topics, code, message, acks):
    if acks == 0:
        return None
    return {"responses": [{"name": name, "partition_responses": [
        {"index": pd.index, "error_code": code, "base_offset": -1, "error_message": message}
        for pd in partition_data]} for name, partition_data in topics]}


def _produce_partition(conn, topic, info, pd, acks, timeout_ms, max_message_bytes):
    """(the partition's response entry, None or (ring, last offset) to wait for with acks=all)."""
    logs = conn.logs
    p = pd.index
    result = {"index": p, "base_offset": -1, "log_start_offset": -1}
    ring = logs.ring(topic, p) if info is not None else None
    if ring is None:
        return {**result, "error_code": UNKNOWN_TOPIC_OR_PARTITION,
                "error_message": f"unknown topic or partition {topic}-{p}"}, None
    limit = topic_max_message_bytes(info, max_message_bytes)
    try:
        found = batches.split(pd.records, limit)
    except batches.BadBatch as exc:
        conn.log_refusal(f"produce to {topic}-{p} refused: {exc}")
        return {**result, "error_code": exc.code, "error_message": str(exc)}, None
    first = last = None
    append_time = -1    # ms: the LogAppendTime of a topic that stamps one, else -1 (Kafka's log_append_time)
    producers = conn.server.producers
    try:
        with logs.append_lock(topic, p):
            if acks == -1:
                ring.check_insync()   # NOT_ENOUGH_REPLICAS before the append, as Kafka
            slot = logs.producer_slot(ring)
            for one, fields in found:
                count, pid, epoch, seq = fields[12], fields[9], fields[10], fields[11]
                base = producers.check(topic, p, pid, epoch, seq, count) if pid >= 0 else None
                if base is None:
                    base = _append(logs, ring, slot, one, fields, timeout_ms)
                    append_time = ring.map.last_log_append_time
                    if pid >= 0:
                        producers.note(topic, p, pid, epoch, seq, count, base)
                first = base if first is None else first
                last = base + count - 1
            if acks == -1 and last is not None:
                lib.shmlog_ring_request_flush(ring.map, last + 1)   # the persister starts its fsync now
    except KafkaException as exc:
        return _append_failed(result, first, exc), None
    except idempotence.Refused as exc:
        conn.log_refusal(f"produce to {topic}-{p} refused: {exc}")
        return {**result, "base_offset": first if first is not None else -1, "error_code": exc.code,
                "error_message": str(exc)}, None
    return _appended_entry(p, first, ring, append_time), ((ring, last) if acks == -1 else None)


def _appended_entry(partition, base_offset, ring, append_time):
    """A partition's Produce response entry once its batches are appended from base_offset."""
    return {"index": partition, "base_offset": base_offset, "error_code": NONE,
            "log_start_offset": ring.log_start_offset, "log_append_time": log_append_time(append_time)}


def log_append_time(ms):
    """A response's log_append_time: the topic's LogAppendTime stamp, None (-1 on the wire) if it has none."""
    return None if ms < 0 else EPOCH + datetime.timedelta(milliseconds=ms)


def broker_max_message_bytes(logs):
    return int(logs.broker_config.get("message.max.bytes") or 1_048_588)


def topic_max_message_bytes(info, broker_max):
    return int((info.get("config") or {}).get("max.message.bytes") or broker_max)


def _append(logs, ring, slot, one, fields, timeout_ms):
    """Append one checked batch (its HEADER fields) with the listener's producer slot; its base offset."""
    records = one[batches.rb.HEADER_BYTES:]
    pid = fields[9]
    return ring.append(slot, ffi.from_buffer(records), len(records), fields[12], fields[7], fields[8], timeout_ms,
                       logs.doorbell.ptr, attributes=fields[5], producer_id=pid, producer_epoch=fields[10],
                       base_sequence=fields[11] if pid >= 0 else -1)


def _append_failed(result, first, exc):
    return {**result, "base_offset": first if first is not None else -1, "error_code": exc_code(exc),
            "error_message": reason_of(exc)}


class PartitionTarget:
    """What produce_one and fetch_one need of a partition, kept by the connection until the
    metadata changes: the ring, its append lock and the topic's max.message.bytes."""
    __slots__ = ("ring", "lock", "limit")

    def __init__(self, ring, lock, limit):
        self.ring, self.lock, self.limit = ring, lock, limit


def produce_one(conn, version, correlation_id, topic, partition, one, acks, timeout_ms):
    """The response of a Produce of one batch to one partition, by the same rules as produce_topics
    with less around them (the request is what a client producing to a partition sends, one per
    record at linger.ms 0): the frame's parts, a Pending (acks=all), None (acks=0), or NOT_TAKEN,
    before anything is appended, for any other request -- not exactly one acceptable batch, an
    idempotent or transactional producer's batch (the producer table's rules), an unknown
    partition, acks=all short of in-sync replicas, acks other than 0, 1 and -1 --, which
    produce_topics then answers with its error or its append."""
    if acks not in (0, 1, -1):
        return NOT_TAKEN
    logs = conn.logs
    logs.hold()
    try:
        target = _partition_target(conn, topic, partition)
        fields = batches.check_one(one, target.limit) if target is not None else None
        if fields is None or fields[9] >= 0:   # fields[9]: the producer id
            return NOT_TAKEN
        ring = target.ring
        with target.lock:
            if acks == -1 and not ring.insync_enough():
                return NOT_TAKEN
            try:
                base = _append(logs, ring, logs.producer_slot(ring), one, fields, timeout_ms)
            except KafkaException as exc:
                result = {"index": partition, "base_offset": -1, "log_start_offset": -1}
                return None if acks == 0 else {"responses": [{"name": topic, "partition_responses": [
                    _append_failed(result, None, exc)]}]}
            if acks == -1:
                last = base + fields[12] - 1
                lib.shmlog_ring_request_flush(ring.map, last + 1)
        append_time = ring.map.last_log_append_time
        if acks == 1:
            return templates.produce_response(version, correlation_id, topic, partition, NONE, base,
                                              ring.log_start_offset, append_time)
        if acks == 0:
            return None
        entry = _appended_entry(partition, base, ring, append_time)
        return Pending(logs, {"responses": [{"name": topic, "partition_responses": [entry]}]}, [(entry, ring, last)],
                       timeout_ms)
    finally:
        logs.release()


def _partition_target(conn, topic, partition):
    """The connection's PartitionTarget of topic-partition, or None when there is no such partition
    (call between logs.hold() and release())."""
    logs = conn.logs
    meta = logs.maybe_refresh()
    if conn.partition_targets_meta is not meta:
        conn.partition_targets.clear()
        conn.partition_targets_meta = meta
    key = (topic, partition)
    target = conn.partition_targets.get(key)
    if target is None:
        info = meta["topics"].get(topic)
        ring = logs.ring(topic, partition) if info is not None else None
        if ring is None:
            return None
        limit = topic_max_message_bytes(info, broker_max_message_bytes(logs))
        target = conn.partition_targets[key] = PartitionTarget(ring, logs.append_lock(topic, partition), limit)
    return target


# ---------------------------------------------------------------------------- Fetch

def fetch(conn, req, version):
    session, topics, code = conn.server.fetch_sessions.open(req) if version >= 7 else (None, req.topics, NONE)
    if code:
        return {"error_code": code, "session_id": 0, "responses": []}
    total, out = fetch_topics(conn, topics, req.max_wait.total_seconds(), max(req.min_bytes, 1),
                              req.max_bytes if version >= 3 else 0x7FFFFFFF, getattr(req, "isolation_level", 0))
    # record_bytes is no field of the response: it tells the connection how to encode it.
    if session is None:
        return {"error_code": NONE, "session_id": 0, "responses": out, "record_bytes": total}
    with session.lock:
        out = session.trim(out, full=req.session_epoch == fetch_sessions.INITIAL_EPOCH)
    return {"error_code": NONE, "session_id": session.id, "responses": out, "record_bytes": total}


def fetch_one(conn, version, correlation_id, topic, partition, fetch_offset, partition_max_bytes, max_wait_ms,
              min_bytes, max_bytes, isolation):
    """The response of a sessionless Fetch of one partition, by the rules of fetch_topics with less
    around them (what a consumer of one partition sends, one per record when records come one by
    one): the frame's parts once min_bytes of records are there or max_wait_ms passed, or
    NOT_TAKEN for what fetch_topics answers -- an unknown partition, an error or an offset out of
    range to report, a read_committed fetch of transactional batches (whose aborted transactions
    are looked up)."""
    logs = conn.logs
    deadline = time.monotonic() + max(0, max_wait_ms / 1000)
    read_committed = isolation == 1
    wanted = max(1, min(partition_max_bytes, max_bytes))
    logs.hold()
    try:
        target = _partition_target(conn, topic, partition)
        if target is None:
            return NOT_TAKEN
        ring = target.ring
        while True:
            conn.fetch_arena.reset()
            try:
                io, data, transactional = read_partition(conn, ring, topic, partition, fetch_offset, read_committed,
                                                         wanted)
            except KafkaException:
                return NOT_TAKEN
            if io.out_of_range or (read_committed and transactional):
                return NOT_TAKEN
            # As _fetch_once watches a partition: one with records, or one read to its end.
            watched = bool(data) or fetch_offset >= (io.last_stable_offset if read_committed else io.high_watermark)
            if _fetch_done(len(data), min_bytes, deadline, watched):
                return templates.fetch_response(version, correlation_id, topic, partition, io.high_watermark,
                                                io.last_stable_offset, io.log_start_offset, data)
            conn.wait_for_data(((ring, io.end.position, io.end.next_offset),), max(0.0, deadline - time.monotonic()))
    finally:
        logs.release()


def fetch_topics(conn, topics, max_wait_s, min_bytes, max_bytes, isolation):
    """(record bytes, the response's topics) of a Fetch of topics [.topic, .partitions: [.partition,
    .fetch_offset, .partition_max_bytes]], once min_bytes are there or max_wait_s passed."""
    logs = conn.logs
    deadline = time.monotonic() + max(0, max_wait_s)
    logs.hold()
    try:
        while True:
            total, out, watch = _fetch_once(conn, topics, isolation, max_bytes)
            if _fetch_done(total, min_bytes, deadline, bool(watch)):
                return total, out
            conn.wait_for_data(watch, max(0.0, deadline - time.monotonic()))
    finally:
        logs.release()


def _fetch_done(record_bytes, min_bytes, deadline, watched):
    """Whether a Fetch is answered now: min_bytes of records are there, max.wait.ms has passed, or
    no partition read can get more records to wait for."""
    return record_bytes >= min_bytes or time.monotonic() >= deadline or not watched


def _fetch_once(conn, topics, isolation, max_bytes):
    """(record bytes, the response's topics, [(ring, end position, end offset)] of the partitions
    that more records may come to -- those read to their end, with records or without --: where
    to wait for more while the records are fewer than min_bytes)."""
    logs = conn.logs
    out, total, watch = [], 0, []
    conn.fetch_arena.reset()     # what an earlier pass of this fetch read is not sent
    acls = conn.server.authorizer
    read_committed = isolation == 1   # read_committed (librdkafka's default) reads up to the LSO only
    for t in topics:
        parts = []
        info = logs.topic(t.topic)
        # A fetch session's partitions are checked at every fetch, not only when the client names them.
        refused = acls is not None and not acls.allowed(conn, "READ", "TOPIC", t.topic)
        for fp in t.partitions:
            ring = logs.ring(t.topic, fp.partition) if info is not None and not refused else None
            if ring is None:
                parts.append({"partition_index": fp.partition,
                              "error_code": TOPIC_AUTHORIZATION_FAILED if refused else UNKNOWN_TOPIC_OR_PARTITION,
                              "high_watermark": -1, "last_stable_offset": -1, "log_start_offset": -1,
                              "aborted_transactions": None, "preferred_read_replica": -1, "records": b""})
                continue
            budget = max_bytes - total
            offset = fp.fetch_offset
            code, data = NONE, b""
            try:
                io, data, transactional = read_partition(conn, ring, t.topic, fp.partition, offset, read_committed,
                                                         max(1, min(fp.partition_max_bytes, budget))
                                                         if budget > 0 or total == 0 else 0)
            except KafkaException as exc:
                io, code, transactional = conn.partition_fetch, exc_code(exc), False
            entry = {"partition_index": fp.partition, "error_code": code, "high_watermark": io.high_watermark,
                     "last_stable_offset": io.last_stable_offset, "log_start_offset": io.log_start_offset,
                     "aborted_transactions": None, "preferred_read_replica": -1, "records": data}
            if io.out_of_range:
                entry["error_code"] = OFFSET_OUT_OF_RANGE
            elif data:
                total += len(data)
                # Only a transactional batch can be skipped by a read_committed client: without
                # one in the records, the aborted transactions are not looked up (a file read).
                if read_committed and transactional:
                    entry["aborted_transactions"] = aborted_transactions(
                        logs.partition_dir(t.topic, fp.partition), offset, io.last_stable_offset)
                watch.append((ring, io.end.position, io.end.next_offset))   # more of it may make min_bytes
            elif not code and offset >= (io.last_stable_offset if read_committed else io.high_watermark):
                watch.append((ring, io.end.position, io.end.next_offset))
            parts.append(entry)
        out.append({"topic": t.topic, "partitions": parts})
    return total, out, watch


BATCH_HEAD = struct.Struct(">qi9xh")   # a RecordBatch's base offset, length and attributes


def last_stable_offset(ring, high):
    """Kafka's LSO: below the first record of any transaction still open on the partition."""
    first_unstable = ring.txn_state()[0]
    return high if first_unstable is None else min(high, first_unstable)


def batches_below(data, end_offset):
    """(the whole batches of `data` that start below end_offset -- a fetch stops at the LSO --,
    whether one of them is transactional)."""
    pos = 0
    transactional = 0
    while pos + BATCH_HEAD.size <= len(data):
        base, length, attributes = BATCH_HEAD.unpack_from(data, pos)
        if base >= end_offset:
            break
        transactional |= attributes & rb.ATTR_TRANSACTIONAL
        pos += 12 + length
    return data[:min(pos, len(data))], bool(transactional)


def aborted_transactions(partition_dir, fetch_offset, stable):
    """The aborted transactions a read_committed client must skip in [fetch_offset, stable), as
    Kafka's Fetch lists them: producer id and first offset (the client skips that producer's
    batches from there to its ABORT marker)."""
    found = [{"producer_id": e.producer_id, "first_offset": e.first_offset}
             for e in control_record.aborted_overlapping(partition_dir, fetch_offset, stable)]
    return found or None


class FetchArena:
    """Where a connection's Fetch copies record batches out of rings and segment files: one
    buffer, reused from fetch to fetch (no fresh, zeroed megabytes per request), carved into a
    region per partition; a region that does not fit gets a buffer of its own. Regions are
    handed to the response as memoryviews, valid until the next fetch of the connection (its
    response is sent before the next request is read). At most ARENA_KEEP_BYTES are kept."""

    def __init__(self):
        self.buf = None
        self.used = 0

    def reset(self):
        self.used = 0

    def take(self, size):
        buf = self.buf
        if buf is None or self.used + size > len(buf):
            if self.used or size > ARENA_KEEP_BYTES:
                return memoryview(bytearray(size))
            self.buf = buf = bytearray(max(size, min(2 * len(buf or b""), ARENA_KEEP_BYTES), FETCH_BUFFER_MIN_BYTES))
        start = self.used
        self.used += size
        return memoryview(buf)[start:start + size]

    def trim(self, region, used):
        """Give back what the last region taken did not use."""
        if region.obj is self.buf and self.used >= len(region):
            self.used -= len(region) - used


def read_partition(conn, ring, topic, partition, offset, read_committed, max_bytes):
    """(the connection's shmlog_partition_fetch as shmlog_ring_fetch_partition left it, the whole
    batches from the one holding `offset` -- none with max_bytes 0 --, whether one of them is
    transactional). The records are as they are in the ring or the segment files, nothing decoded
    or re-encoded: a memoryview into the connection's FetchArena (one copy out of shared memory;
    the response sends it)."""
    io = conn.partition_fetch
    key = (topic, partition)
    last = conn.fetch_ends.get(key)     # a consumer reading on asks for where its last fetch ended
    io.hint_valid = last is not None and last[0] is ring
    if io.hint_valid:
        io.hint.position, io.hint.next_offset = last[1], last[2]
    io.fetch_offset, io.read_committed, io.max_bytes = offset, read_committed, max_bytes
    arena = conn.fetch_arena
    size = min(max(max_bytes, FETCH_BUFFER_MIN_BYTES), 1 << 26)
    for _ in range(4):
        region = arena.take(size)
        n = lib.shmlog_ring_fetch_partition(ring.map, io, ffi.from_buffer(region), len(region), conn.fetch_frames,
                                            FRAMES_PER_FETCH)
        if n >= 0:
            arena.trim(region, n)
            if io.whole:
                conn.fetch_ends[key] = (ring, io.next.position, io.next.next_offset)
            return io, region[:n], io.transactional
        arena.trim(region, 0)
        if n == lib.SHMLOG_ESMALL:
            size = io.needed_bytes
            continue
        if n == lib.SHMLOG_EOVERWRITTEN:
            break
        ring.fetch_failed(n, io.next)
    data, transactional = batches_below(_read_segments(conn, topic, partition, offset, max_bytes),
                                        io.last_stable_offset if read_committed else io.high_watermark)
    if not data:
        # Neither on disk nor reachable from the ring's index: where the persister stands? (A
        # corrupt frame there raises _BAD_MSG rather than leaving the client waiting forever.)
        at = ring.cursor_at_persister(offset)
        if at is not None:
            conn.fetch_ends[key] = (ring, at.position, at.next_offset)
    return io, data, transactional


def _read_segments(conn, topic, partition, offset, max_bytes):
    seg = conn.segments(topic, partition)
    try:
        data, found = seg.read(offset, max_bytes)
    except KafkaException:
        conn.drop_segments(topic, partition)
        raise
    if not found:
        return b""
    start = found[0][0]
    end = found[-1][0] + found[-1][3]
    region = conn.fetch_arena.take(end - start)
    region[:] = data[start:end]
    return region


def open_segments(logs, topic, partition):
    return SegmentReader(logs.partition_dir(topic, partition))


# ---------------------------------------------------------------------------- ListOffsets

EARLIEST, LATEST, MAX_TIMESTAMP = -2, -1, -3


def list_offsets(conn, req, version):
    from shmlog.log.partition_reader import offset_for_time
    logs = conn.logs
    out = []
    with logs.using():
        for t in req.topics:
            parts = []
            for lp in t.partitions:
                ring = logs.ring(t.name, lp.partition_index)
                states = (logs.topic(t.name) or {}).get("partition_states") or ()
                epoch = states[lp.partition_index].get("leader_epoch", 0) if lp.partition_index < len(states) else 0
                entry = {"partition_index": lp.partition_index, "timestamp": -1, "offset": -1, "leader_epoch": epoch}
                if ring is None:
                    parts.append({**entry, "error_code": UNKNOWN_TOPIC_OR_PARTITION})
                    continue
                try:
                    if lp.timestamp == EARLIEST:
                        offset = ring.log_start_offset
                    elif lp.timestamp in (LATEST, MAX_TIMESTAMP):
                        offset = ring.high_watermark
                        if getattr(req, "isolation_level", 0) == 1:
                            offset = last_stable_offset(ring, offset)
                    else:
                        offset = offset_for_time(logs.partition_dir(t.name, lp.partition_index), ring,
                                                 lp.timestamp)
                        if offset >= 0:
                            entry["timestamp"] = lp.timestamp
                    parts.append({**entry, "error_code": NONE, "offset": offset,
                                  "old_style_offsets": (offset,)})
                except KafkaException as exc:
                    parts.append({**entry, "error_code": exc_code(exc)})
            out.append({"name": t.name, "partitions": parts})
    return {"topics": out}


