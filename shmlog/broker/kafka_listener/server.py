"""The listener process: accepts Kafka clients on TCP and serves each connection in its own
thread, one request at a time in the order they came (as a Kafka broker does).

A request that cannot be framed or decoded, an API or version we do not speak (other than
ApiVersions, answered with UNSUPPORTED_VERSION as Kafka does), a frame over
`socket.request.max.bytes` or one that does not arrive within REQUEST_READ_TIMEOUT_S closes
that connection; nothing a client sends stops the process or stalls another connection.
"""
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
    txn,
    wire,
)
from shmlog.broker.kafka_listener import config as lconfig
from shmlog.broker.kafka_listener.logs_view import LogsView
from shmlog.errors import KafkaException

STATE_FILE = "kafka-listener.json"   # in <data_dir>/run: the bound address, for status and tests
REQUEST_READ_TIMEOUT_S = 30.0          # a started request must arrive whole within this
IDLE_TIMEOUT_S = 600.0                  # Kafka's connections.max.idle.ms default
PARENT_CHECK_S = 0.5
WAIT_SPIN_NS = 20_000
METADATA, LIST_GROUPS = 3, 16
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
        self.tls = False
        self.principal = None if server.settings.sasl else "ANONYMOUS"
        self.sasl_mechanism = None
        self.sasl_exchange = None
        self.close_after_reply = False
        self.where = f"{addr[0]}:{addr[1]}"
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ------------------------------------------------------------------ framing

    def _recv_exact(self, n, first):
        """n bytes; the first byte of a request may wait IDLE_TIMEOUT_S, the whole request must
        then come within REQUEST_READ_TIMEOUT_S (a client trickling a frame forever is cut off)."""
        chunks, got = [], 0
        if not first:
            self.deadline = self.deadline or time.monotonic() + REQUEST_READ_TIMEOUT_S
        while got < n:
            if first and got == 0:
                timeout = IDLE_TIMEOUT_S
            else:
                timeout = max(0.0, self.deadline - time.monotonic())
            pending = self.sock.pending() if self.tls else 0   # decrypted bytes select() cannot see
            if not pending and not select.select([self.sock], [], [], timeout)[0]:
                raise Closed("idle" if first and got == 0 else "request not received in time")
            chunk = self.sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise Closed("closed by the client")
            if first and got == 0:
                self.deadline = time.monotonic() + REQUEST_READ_TIMEOUT_S
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def start_tls(self):
        """The TLS handshake, bounded by REQUEST_READ_TIMEOUT_S; reads then never block longer either."""
        self.sock.settimeout(REQUEST_READ_TIMEOUT_S)
        self.sock = self.server.ssl_context.wrap_socket(self.sock, server_side=True)
        self.tls = True

    def run(self):
        reason = "closed"
        try:
            if self.server.ssl_context is not None:
                self.start_tls()
            while self.server.running:
                size = struct.unpack(">i", self._recv_exact(4, True))[0]
                if size < 8 or size > self.server.settings.request_max_bytes:
                    reason = (f"a request of {size} bytes is outside [8, socket.request.max.bytes="
                              f"{self.server.settings.request_max_bytes}]")
                    break
                frame = self._recv_exact(size, False)
                self.deadline = None
                out = self.handle(frame)
                if out:
                    self.sock.sendall(out)
                if self.close_after_reply:
                    reason = "closed after a failed authentication"
                    break
        except Closed as exc:
            reason = str(exc)
        except wire.BadFrame as exc:
            reason = str(exc)
        except OSError as exc:   # ssl.SSLError is one too
            reason = f"socket error: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bug serving one client must not stop the others
            reason = f"internal error: {exc!r}"
            log().error(f"kafka listener: {self.where}: {traceback.format_exc()}")
        finally:
            self.close(reason)

    def handle(self, frame):
        api_key, version, correlation_id = wire.peek_header(frame)
        spec = self.server.apis.get(api_key)
        if spec is None or not spec[0] <= version <= spec[1]:
            if api_key == wire.API_VERSIONS:
                body = handlers.unsupported_api_versions(self)
                return wire.encode_response(api_key, 0, correlation_id, wire.build(wire.response_class(18, 0), body))
            raise wire.BadFrame(f"api key {api_key} v{version} is not served (see ApiVersions)")
        if self.principal is None and api_key not in auth.SASL_APIS:
            raise wire.BadFrame(f"api key {api_key} before SASL authentication")
        header, request = wire.decode_request(frame)
        self.client_id = header.client_id
        acls = self.server.authorizer
        if acls is None:
            body = (authorizer.refused(api_key, request, SECURITY_DISABLED, "no authorizer.class.name is configured")
                    if api_key in ACL_APIS else spec[2](self, request, version))
        else:
            body = self.handle_authorized(acls, api_key, request, version, spec[2])
        if body is None:
            return None
        return wire.encode_response(api_key, version, correlation_id,
                                     wire.build(wire.response_class(api_key, version), body))

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

    def wait_for_data(self, rings, timeout_s):
        """Sleep until one of rings gets a new batch past its end now, or timeout_s passes."""
        if self.doorbell_slot is None:
            self.doorbell_slot = self.logs.doorbell.acquire()
        handles = ffi.new("shmlog_ring_handle *[]", [r.map for r in rings])
        cursors = [ffi.new("shmlog_cursor *") for _ in rings]
        for c, r in zip(cursors, rings):
            c.position, c.next_offset = r.end()
        arr = ffi.new("shmlog_cursor *[]", cursors)
        waited = ffi.new("int64_t *")
        timeout_ns = int(min(timeout_s, 0.1) * 1e9)
        if self.doorbell_slot < 0:
            lib.shmlog_wait_any(ffi.NULL, -1, handles, arr, len(rings), WAIT_SPIN_NS, WAIT_SPIN_NS, waited)
            time.sleep(min(timeout_s, 0.001))
        else:
            lib.shmlog_wait_any(self.logs.doorbell.ptr, self.doorbell_slot, handles, arr, len(rings), WAIT_SPIN_NS,
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
    try:
        server.serve(parent)
    finally:
        server.stop()


