"""The listener process: accepts Kafka clients on TCP and serves each connection in its own
thread, one request at a time in the order they came (as a Kafka broker does).

A request that cannot be framed or decoded, an API or version we do not speak (other than
ApiVersions, answered with UNSUPPORTED_VERSION as Kafka does), a frame over
`socket.request.max.bytes` or one that does not arrive within REQUEST_READ_TIMEOUT_S closes
that connection; nothing a client sends stops the process or stalls another connection.
"""
import gc
import json
import logging
import os
import select
import signal
import socket
import struct
import threading
import time
import traceback

from shmlog import control
from shmlog._native import ffi, lib
from shmlog.broker import logs as broker_logs
from shmlog.broker.kafka_listener import (
    admin,
    auth,
    authorizer,
    epochs,
    fetch_sessions,
    groups,
    handlers,
    idempotence,
    lanes,
    templates,
    txn,
    wire,
)
from shmlog.broker.kafka_listener import config as lconfig
from shmlog.broker.kafka_listener.logs_view import LogsView
from shmlog.errors import KafkaException

STATE_FILE = "kafka-listener.json"   # in <data_dir>/run: the bound address, for status and tests
REQUEST_READ_TIMEOUT_S = 30.0          # a started request must arrive whole within this
IDLE_TIMEOUT_S = 600.0                  # Kafka's connections.max.idle.ms default
WAKE_S = 5                              # a blocked plaintext read or write comes back this often to look at the time
PARENT_CHECK_S = 0.5
WAIT_SPIN_NS = 20_000
READ_BUFFER_BYTES = 16 << 10            # read ahead per connection; a larger request gets a buffer of its own
PIPELINE_MAX = 1000                     # responses queued behind acks=all fsyncs at most (see Connection.run)
FSYNC_LOOK_S = 0.001                    # how often a connection waiting for fsyncs looks whether they are done
LARGE_KEEP_BYTES = 8 << 20              # a connection keeps a large request's buffer up to this size
SPLIT_RESPONSE_BYTES = 64 << 10         # a Fetch response with this many record bytes is sent without a join
SEND_PARTS_MAX = 512                    # buffers per sendmsg (IOV_MAX is 1024)
PRODUCE, FETCH, METADATA, LIST_GROUPS = 0, 1, 3, 16
ACL_APIS = (29, 30, 31)     # DescribeAcls, CreateAcls, DeleteAcls
SECURITY_DISABLED = 54

APIS = {
    # api key: (lowest version, highest version, handler)
    0: (3, 9, handlers.produce),
    1: (4, 12, handlers.fetch),
    2: (1, 7, handlers.list_offsets),
    3: (0, 12, handlers.metadata),
    8: (2, 8, groups.offset_commit),
    9: (1, 7, groups.offset_fetch),
    10: (0, 3, groups.find_coordinator),
    11: (0, 7, groups.join_group),
    12: (0, 4, groups.heartbeat),
    13: (0, 4, groups.leave_group),
    14: (0, 5, groups.sync_group),
    15: (0, 5, groups.describe_groups),
    16: (0, 4, groups.list_groups),
    17: (1, 1, auth.sasl_handshake),
    18: (0, 3, handlers.api_versions),
    19: (2, 7, admin.create_topics),
    20: (1, 5, admin.delete_topics),
    21: (0, 2, admin.delete_records),
    22: (0, 4, txn.init_producer_id),
    23: (2, 4, epochs.offset_for_leader_epoch),
    24: (0, 3, txn.add_partitions_to_txn),
    25: (0, 3, txn.add_offsets_to_txn),
    26: (0, 3, txn.end_txn),
    28: (0, 3, txn.txn_offset_commit),
    29: (1, 3, authorizer.describe_acls),
    30: (1, 3, authorizer.create_acls),
    31: (1, 3, authorizer.delete_acls),
    32: (1, 4, admin.describe_configs),
    33: (0, 2, admin.alter_configs),
    36: (0, 2, auth.sasl_authenticate),
    37: (0, 3, admin.create_partitions),
    44: (0, 1, admin.incremental_alter_configs),
    60: (0, 1, admin.describe_cluster),
}

# ApiVersions (v0 too: a client's first try may be newer than we speak), Metadata, Produce,
# Fetch, ListOffsets, FindCoordinator, OffsetCommit/Fetch, the group APIs, InitProducerId: the
# highest versions, the ones current clients negotiate.
WARM_VERSIONS = [(18, 0)] + [(key, APIS[key][1]) for key in (18, 3, 0, 1, 2, 10, 8, 9, 11, 12, 13, 14, 22)]


def log():
    return broker_logs.get()


class Server:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.logs = LogsView(data_dir)
        self.settings = lconfig.settings(self.logs.broker_config)
        self.ssl_context = lconfig.ssl_context(self.settings) if self.settings.tls else None
        # The SASL APIs are advertised by SASL listeners only (librdkafka checks ApiVersions for them).
        self.apis = APIS if self.settings.sasl else {k: v for k, v in APIS.items() if k not in (17, 36)}
        self.cluster_id = self.logs.request("describe_cluster").get("cluster_id")
        self.producers = idempotence.ProducerTable()
        self.fetch_sessions = fetch_sessions.Sessions()
        self.authorizer = (authorizer.Authorizer(data_dir, self.logs.broker_config)
                           if self.logs.broker_config.get("authorizer.class.name") else None)
        self.connections = set()
        self.lock = threading.Lock()
        self.running = True
        self.refusals = broker_logs.RateLimited()
        self.sock = None
        self.advertised = None

    def bind(self):
        s = self.settings
        if not s.loopback and not s.tls:
            log().warning(f"kafka listener: {s.listener} accepts unauthenticated, unencrypted clients from the "
                          f"network (shmlog.listener.allow.insecure=true)")
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((s.host, s.port))
        sock.listen(128)
        sock.settimeout(PARENT_CHECK_S)
        self.sock = sock
        port = sock.getsockname()[1]
        self.advertised = (s.advertised_host or s.host, s.advertised_port or port)
        state = {"listener": s.listener, "host": s.host, "port": port, "advertised_host": self.advertised[0],
                 "advertised_port": self.advertised[1], "pid": os.getpid()}
        path = os.path.join(control.run_dir(self.data_dir), STATE_FILE)
        tmp = path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)
        log().info(f"kafka listener on {s.host}:{port} (advertised as {self.advertised[0]}:{self.advertised[1]})")

    def serve(self, parent):
        while self.running:
            if os.getppid() != parent:
                log().info("kafka listener: the supervisor that started it is gone; exiting")
                break
            try:
                client, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self.running:
                    break
                log().warning(f"kafka listener: accept failed: {exc}")
                time.sleep(0.05)
                continue
            with self.lock:
                full = len(self.connections) >= self.settings.max_connections
            if full:
                self.refusals(logging.WARNING, f"kafka listener: refused {addr[0]}:{addr[1]}: max.connections="
                                               f"{self.settings.max_connections} reached")
                client.close()
                continue
            conn = None
            try:
                conn = Connection(self, client, addr)
                with self.lock:
                    self.connections.add(conn)
                threading.Thread(target=conn.run, name=f"kafka-conn-{addr[1]}", daemon=True).start()
            except (OSError, RuntimeError) as exc:   # no thread to be had: refuse this one, serve the rest
                self.refusals(logging.WARNING, f"kafka listener: refused {addr[0]}:{addr[1]}: {exc}")
                with self.lock:
                    self.connections.discard(conn)
                client.close()

    def stop(self):
        self.running = False
        try:
            os.unlink(os.path.join(control.run_dir(self.data_dir), STATE_FILE))
        except OSError:
            pass


class Closed(Exception):
    pass


def encode_response(api_key, version, correlation_id, body):
    """The response frame's parts: a copy of a template for the one-partition Produce and Fetch
    responses most requests get (templates.py), else kio's encoding of the whole body."""
    if api_key in (PRODUCE, FETCH):
        parts = templates.encode(api_key, version, correlation_id, body)
        if parts is not None:
            return parts
    response = wire.build(wire.response_class(api_key, version), body)
    return wire.encode_response(api_key, version, correlation_id, response,
                                split=api_key == FETCH and body.get("record_bytes", 0) >= SPLIT_RESPONSE_BYTES)


class Deferred:
    """The response to an acks=all Produce whose batches are appended but maybe not fsynced yet."""
    __slots__ = ("pending", "api_key", "version", "correlation_id")

    def __init__(self, pending, api_key, version, correlation_id):
        self.pending = pending
        self.api_key = api_key
        self.version = version
        self.correlation_id = correlation_id

    def ready(self):
        return self.pending.ready()

    def finish(self):
        """The response frame's parts, once the batches are fsynced (or the request's timeout passed)."""
        return encode_response(self.api_key, self.version, self.correlation_id, self.pending.result())

    def abandon(self):
        self.pending.abandon()


class Connection:
    def __init__(self, server, sock, addr):
        self.server = server
        self.sock = sock
        self.addr = addr
        self.logs = server.logs
        self.group_channel = None
        self.segment_readers = {}
        self.doorbell_slot = None
        self.client_id = None
        self.deadline = None
        self.idle_wakes = 0                         # WAKE_S periods waited for a request's first byte
        self.tls = False
        self.principal = None if server.settings.sasl else "ANONYMOUS"
        self.sasl_mechanism = None
        self.sasl_exchange = None
        self.close_after_reply = False
        self.where = f"{addr[0]}:{addr[1]}"
        self.rbuf = bytearray(READ_BUFFER_BYTES)    # bytes read ahead: rbuf[rpos:rend]
        self.rview = memoryview(self.rbuf)
        self.rpos = self.rend = 0
        self.large = None                           # the buffer of the last large request
        self.bad_size = None
        self.readable = select.poll()               # poll, not select: file descriptors past 1024 work
        self.readable.register(sock.fileno(), select.POLLIN)
        self.writable = None
        self.queue = []                             # responses not sent yet, in request order
        self.fetch_arena = handlers.FetchArena()
        self.fetch_ends = {}                        # (topic, partition) -> (ring, position, offset) last fetched to
        self.partition_targets = {}                 # (topic, partition) -> handlers.PartitionTarget, for:
        self.partition_targets_meta = None          # the metadata they were looked up in
        self._fetch_frames = None
        self.partition_fetch = ffi.new("shmlog_partition_fetch *")   # shmlog_ring_fetch_partition's in and out
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def fetch_frames(self):
        if self._fetch_frames is None:
            self._fetch_frames = ffi.new("shmlog_frame_ref[]", handlers.FRAMES_PER_FETCH)
        return self._fetch_frames

    # ------------------------------------------------------------------ framing

    def _wait_readable(self):
        """(TLS) The first byte of a request may wait IDLE_TIMEOUT_S; the whole request must then
        come within REQUEST_READ_TIMEOUT_S of it (a client trickling a frame forever is cut off)."""
        if self.deadline is None:
            timeout, why = IDLE_TIMEOUT_S, "idle"
        else:
            timeout, why = max(0.0, self.deadline - time.monotonic()), "request not received in time"
        if not self.readable.poll(int(timeout * 1000)):
            raise Closed(why)

    def _block_with_kernel_timeouts(self):
        """(Plaintext) Reads and writes block in the kernel: a request that is not there yet costs
        one system call, not a read, a poll and a read again. SO_RCVTIMEO and SO_SNDTIMEO bring a
        blocked call back every WAKE_S to hold the connection to the same time limits as _wait_readable
        (to within WAKE_S)."""
        wake = struct.pack("ll", int(WAKE_S), int(WAKE_S % 1 * 1_000_000))   # a struct timeval
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, wake)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, wake)

    def _woken_without_bytes(self):
        if self.deadline is not None:
            if time.monotonic() >= self.deadline:
                raise Closed("request not received in time")
        else:
            self.idle_wakes += 1
            if self.idle_wakes * WAKE_S >= IDLE_TIMEOUT_S:
                raise Closed("idle")

    def _recv_into(self, view):
        """At least one byte into view."""
        while True:
            if self.tls and not self.sock.pending():   # decrypted bytes poll() cannot see
                self._wait_readable()
            try:
                n = self.sock.recv_into(view)
            except BlockingIOError:
                self._woken_without_bytes()
                continue
            if not n:
                raise Closed("closed by the client")
            if self.deadline is None:
                self.deadline = time.monotonic() + REQUEST_READ_TIMEOUT_S
                self.idle_wakes = 0
            return n

    def _buffered(self, n):
        """At least n (<= READ_BUFFER_BYTES) bytes in rbuf from rpos, reading as many as come."""
        if self.rend - self.rpos >= n:
            return
        if len(self.rbuf) - self.rpos < n:   # move what is left to the front
            left = bytes(self.rview[self.rpos:self.rend])
            self.rbuf[:len(left)] = left
            self.rpos, self.rend = 0, len(left)
        while self.rend - self.rpos < n:
            self.rend += self._recv_into(self.rview[self.rend:])

    def _input_waiting(self, timeout_s=0.0):
        """Whether the client has sent more than what was handled (waiting up to timeout_s)."""
        return self.rend > self.rpos or (self.tls and self.sock.pending() > 0) \
            or bool(self.readable.poll(int(timeout_s * 1000)))

    def _read_frame(self):
        """The next request frame (without its size), or None when its size is not acceptable."""
        if self.rend > self.rpos:
            self.deadline = time.monotonic() + REQUEST_READ_TIMEOUT_S
        self._buffered(4)
        size = wire.SIZE.unpack_from(self.rbuf, self.rpos)[0]
        self.rpos += 4
        if size < 8 or size > self.server.settings.request_max_bytes:
            self.bad_size = size
            return None
        if size <= len(self.rbuf):
            self._buffered(size)
            frame = bytes(self.rview[self.rpos:self.rpos + size])
            self.rpos += size
        else:   # a large request is read straight into a buffer of its own, kept for the next ones
            if self.large is None or len(self.large) < size:
                self.large = bytearray(size)
            view = memoryview(self.large)[:size]
            have = self.rend - self.rpos
            view[:have] = self.rview[self.rpos:self.rend]
            self.rpos = self.rend = 0
            while have < size:
                have += self._recv_into(view[have:])
            frame = view.toreadonly()   # kio's readers take read-only buffers only
            if size > LARGE_KEEP_BYTES:
                self.large = None
        self.deadline = None
        return frame

    def _send(self, parts):
        """Send a list of buffers whole: sendmsg hands them to the kernel without joining them."""
        if self.tls:
            for part in parts:
                self.sock.sendall(part)
            return
        i = 0
        while i < len(parts):
            try:
                sent = self.sock.sendmsg(parts[i:i + SEND_PARTS_MAX])
            except BlockingIOError:
                if self.writable is None:
                    self.writable = select.poll()
                    self.writable.register(self.sock.fileno(), select.POLLOUT)
                if not self.writable.poll(int(IDLE_TIMEOUT_S * 1000)):
                    raise Closed("the client reads no responses") from None
                continue
            while i < len(parts) and len(parts[i]) <= sent:   # empty parts are passed over too
                sent -= len(parts[i])
                i += 1
            if sent:
                parts[i] = memoryview(parts[i])[sent:]

    def _answer(self, ready_only=False):
        """Send the queued responses in order: all of them (waiting for fsyncs), or with ready_only
        those ahead of the first acks=all Produce whose batches are not fsynced yet."""
        parts = []
        queue = self.queue
        while queue:
            item = queue[0]
            if isinstance(item, Deferred):
                if ready_only and not item.ready():
                    break
                del queue[0]
                parts.extend(item.finish())
            else:
                del queue[0]
                parts.extend(item)
        if parts:
            self._send(parts)

    def _pump(self):
        """Send the queued responses that are ready until all are sent or the client sends another
        request. The wait is on the socket, looking at the fsyncs every FSYNC_LOOK_S: a request
        that comes is read at once (its records reach consumers without waiting for earlier
        fsyncs), an fsync is answered at most FSYNC_LOOK_S after it is done."""
        while self.queue:
            self._answer(ready_only=True)
            if not self.queue or self._input_waiting(FSYNC_LOOK_S):
                return

    def start_tls(self):
        """The TLS handshake, bounded by REQUEST_READ_TIMEOUT_S; reads then never block longer either."""
        self.sock.settimeout(REQUEST_READ_TIMEOUT_S)
        self.sock = self.server.ssl_context.wrap_socket(self.sock, server_side=True)
        self.tls = True

    def run(self):
        """Requests are handled one at a time in the order they came. An acks=all Produce is
        answered once its batches are fsynced; while they are not, Produce requests the client
        already sent are read and appended too (the next request being a Produce, and at most
        PIPELINE_MAX of them), and their answers go out in order once fsynced: one fsync of the
        persister then acknowledges several requests. Any other request is handled only once
        every earlier response is sent."""
        reason = "closed"
        try:
            if self.server.ssl_context is not None:
                self.start_tls()
            else:
                self._block_with_kernel_timeouts()
            while self.server.running:
                if self.queue:
                    self._pump()
                frame = self._read_frame()
                if frame is None:
                    reason = (f"a request of {self.bad_size} bytes is outside [8, socket.request.max.bytes="
                              f"{self.server.settings.request_max_bytes}]")
                    self._answer()
                    break
                if self.queue and (wire.peek_header(frame)[0] != PRODUCE or len(self.queue) >= PIPELINE_MAX):
                    self._answer()
                out = self.handle(frame)
                if isinstance(out, Deferred) or (self.queue and out is not None):
                    self.queue.append(out)
                elif out is not None:
                    self._send(out)
                if self.close_after_reply:
                    reason = "closed after a failed authentication"
                    break
        except Closed as exc:
            reason = str(exc)
        except wire.BadFrame as exc:
            reason = str(exc)
            self._answer_before_closing()
        except OSError as exc:   # ssl.SSLError is one too
            reason = f"socket error: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bug serving one client must not stop the others
            reason = f"internal error: {exc!r}"
            log().error(f"kafka listener: {self.where}: {traceback.format_exc()}")
        finally:
            self.close(reason)

    def _answer_before_closing(self):
        """Answer the requests handled before one that closes the connection, as far as possible."""
        try:
            self._answer()
        except (Closed, OSError):
            pass

    def handle(self, frame):
        """The response frame as a list of buffers, a Deferred one, or None (acks=0 Produce)."""
        api_key, version, correlation_id = wire.peek_header(frame)
        spec = self.server.apis.get(api_key)
        if spec is None or not spec[0] <= version <= spec[1]:
            if api_key == wire.API_VERSIONS:
                body = handlers.unsupported_api_versions(self)
                return wire.encode_response(api_key, 0, correlation_id, wire.build(wire.response_class(18, 0), body))
            raise wire.BadFrame(f"api key {api_key} v{version} is not served (see ApiVersions)")
        if self.principal is None and api_key not in auth.SASL_APIS:
            raise wire.BadFrame(f"api key {api_key} before SASL authentication")
        if api_key <= FETCH and self.server.authorizer is None:
            body = lanes.serve(self, api_key, version, correlation_id, frame)
            if body is not lanes.NOT_TAKEN:
                return self.respond(api_key, version, correlation_id, body)
        header, request = wire.decode_request(frame)
        self.client_id = header.client_id
        acls = self.server.authorizer
        if acls is None:
            body = (authorizer.refused(api_key, request, SECURITY_DISABLED, "no authorizer.class.name is configured")
                    if api_key in ACL_APIS else spec[2](self, request, version))
        else:
            body = self.handle_authorized(acls, api_key, request, version, spec[2])
        return self.respond(api_key, version, correlation_id, body)

    @staticmethod
    def respond(api_key, version, correlation_id, body):
        if body is None or isinstance(body, list):   # no response (acks=0), or its parts already
            return body
        if isinstance(body, handlers.Pending):
            return Deferred(body, api_key, version, correlation_id)
        return encode_response(api_key, version, correlation_id, body)

    def handle_authorized(self, acls, api_key, request, version, handler):
        refused = acls.denial(self, api_key, request)
        if refused is not None:
            self.log_refusal(f"api key {api_key} refused: {refused[1]}")
            if api_key == 0 and request.acks == 0:
                return None     # Kafka answers no acks=0 Produce, refused or not
            return authorizer.refused(api_key, request, *refused)
        if api_key == METADATA:
            request, hidden = authorizer.metadata_request(acls, self, request)
            return authorizer.metadata_response(acls, self, request, handler(self, request, version), hidden)
        body = handler(self, request, version)
        return authorizer.list_groups_response(acls, self, body) if api_key == LIST_GROUPS else body

    def log_refusal(self, message):
        self.server.refusals(logging.WARNING, f"kafka listener: {self.where}: {message}")

    # ------------------------------------------------------------------ per-connection resources

    def segments(self, topic, partition):
        key = (topic, partition)
        reader = self.segment_readers.get(key)
        if reader is None:
            reader = self.segment_readers[key] = handlers.open_segments(self.logs, topic, partition)
        return reader

    def drop_segments(self, topic, partition):
        reader = self.segment_readers.pop((topic, partition), None)
        if reader is not None:
            reader.close()

    def wait_for_data(self, watch, timeout_s):
        """Sleep until one of the rings gets a batch at or past its end as it was seen ((ring,
        end position, end offset) each), or timeout_s passes."""
        if self.doorbell_slot is None:
            self.doorbell_slot = self.logs.doorbell.acquire()
        handles = ffi.new("shmlog_ring_handle *[]", [ring.map for ring, _, _ in watch])
        cursors = [ffi.new("shmlog_cursor *", (position, offset)) for _, position, offset in watch]
        arr = ffi.new("shmlog_cursor *[]", cursors)
        waited = ffi.new("int64_t *")
        timeout_ns = int(min(timeout_s, 0.1) * 1e9)
        if self.doorbell_slot < 0:
            lib.shmlog_wait_any(ffi.NULL, -1, handles, arr, len(watch), WAIT_SPIN_NS, WAIT_SPIN_NS, waited)
            time.sleep(min(timeout_s, 0.001))
        else:
            lib.shmlog_wait_any(self.logs.doorbell.ptr, self.doorbell_slot, handles, arr, len(watch), WAIT_SPIN_NS,
                                timeout_ns, waited)

    def group(self):
        if self.group_channel is None:
            self.group_channel = groups.Channel(self.server.data_dir)
        return self.group_channel

    def drop_group_channel(self):
        if self.group_channel is not None:
            self.group_channel.close()
            self.group_channel = None

    def close(self, reason):
        log().debug(f"kafka listener: {self.where}: connection closed: {reason}")
        for item in self.queue:
            if isinstance(item, Deferred):
                item.abandon()   # appended, never answered: the client retries (idempotence dedups)
        self.queue.clear()
        try:
            self.sock.close()
        except OSError:
            pass
        for reader in self.segment_readers.values():
            reader.close()
        self.segment_readers.clear()
        if self.group_channel is not None:
            self.group_channel.close()   # the supervisor removes this connection's group members at once
        if self.doorbell_slot is not None and self.doorbell_slot >= 0:
            self.logs.doorbell.release(self.doorbell_slot)
        with self.server.lock:
            self.server.connections.discard(self)


def warm():
    """kio loads a schema module on first use (tens of ms each): load those of the data path and
    of groups beside the first requests, not in their way. Then move what is loaded out of the
    garbage collector's sight (gc.freeze): its full collections otherwise walk kio's thousands
    of classes again and again, a few percent of a busy listener's time."""
    wire.warm(WARM_VERSIONS)
    gc.freeze()


def main(argv):
    data_dir = argv[1]
    broker_logs.setup("kafka-listener")
    parent = os.getppid()
    try:
        server = Server(data_dir)
    except KafkaException as exc:
        raise SystemExit(f"shmlog kafka listener: cannot start: {exc}") from None
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    try:
        server.bind()
    except OSError as exc:
        raise SystemExit(f"shmlog kafka listener: cannot listen on {server.settings.listener}: {exc}") from None
    threading.Thread(target=warm, name="kafka-warm", daemon=True).start()
    try:
        server.serve(parent)
    finally:
        server.stop()


