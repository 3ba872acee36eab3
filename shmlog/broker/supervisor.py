"""The supervisor: one per data dir. Owns topic metadata, the control channel, the
persister process and the liveness of registered clients.

Run as `python -m shmlog.broker.supervisor <data_dir> <broker config json>`; shmlog.Broker and
`shmlog broker start` start it. A lock on <data_dir>/supervisor.lock keeps it unique.
"""
import fcntl
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

from shmlog import control
from shmlog._native import lib, shm
from shmlog._native.ring import Doorbell, Ring
from shmlog.broker import metadata
from shmlog.broker.group_service import DEFERRED, GroupService
from shmlog.config import (
    effective_topic_config,
    parse_broker_config,
    parse_topic_config,
)
from shmlog.errors import KafkaError, KafkaException
from shmlog.log import retention
from shmlog.log.segment import log_end_offset, log_start_offset, partition_dir

HOUSEKEEPING_INTERVAL_S = 0.1  # persister restarts, dead producers' claims, retired partition dirs
PERSISTER_RESTART_BACKOFF_S = 0.2
PERSISTER_DRAIN_TIMEOUT_S = 60.0  # the persister gives up draining after 30 s (its DRAIN_TIMEOUT_S)
DELETE_DELAY_S = 1.0  # file.delete.delay.ms: how long a deleted partition's files linger


class Refused(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Supervisor:
    def __init__(self, data_dir, broker_config):
        self.data_dir = os.path.realpath(data_dir)
        self.config = parse_broker_config(broker_config)
        self.ns = shm.namespace(self.data_dir)
        self.log_dirs = self._log_dirs()
        self.mode = self.config.shm_mode
        self.meta = metadata.load(self.data_dir)
        self.rings = {}            # (topic, partition) -> Ring
        self.doorbell = None
        self.persister = None
        self.persister_started = 0.0
        self.clients = {}          # socket -> {"buf": bytes, "pid": int, "kind": str}
        self.groups = None         # GroupService: the consumer-group coordinator
        self.running = True
        self.selector = selectors.DefaultSelector()

    # ------------------------------------------------------------------ startup

    def _log_dirs(self):
        dirs = self.config.log_dirs
        if isinstance(dirs, str):
            dirs = [d.strip() for d in dirs.split(",") if d.strip()]
        dirs = [os.path.realpath(os.path.join(self.data_dir, d)) for d in (dirs or ["logs"])]
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        return dirs

    def lock(self):
        self.lock_fd = os.open(os.path.join(self.data_dir, "supervisor.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"shmlog: another broker already runs for data dir {self.data_dir}")
        os.ftruncate(self.lock_fd, 0)
        os.write(self.lock_fd, str(os.getpid()).encode())

    def reclaim_shared_memory(self):
        """Adopt valid objects of this data dir (a supervisor restart keeps clients running),
        unlink anything stale or unknown a crashed broker left behind."""
        wanted = {self.ring_name(t, p): (t, p) for t, p in self.partitions()}
        bell = shm.doorbell_name(self.ns)
        for name in shm.names_in_namespace(self.ns):
            if name == bell:
                try:
                    self.doorbell = Doorbell.open(name)
                    continue
                except (KafkaException, ValueError, OSError):
                    pass
            elif name in wanted:
                topic, partition = wanted[name]
                try:
                    ring = Ring.open(name, topic, partition)
                    d = ring.header.descriptor
                    if d.topic_id == self.meta["topics"][topic]["id"] and d.partition == partition:
                        self.rings[(topic, partition)] = ring
                        continue
                    ring.close()
                except (KafkaException, ValueError, OSError):
                    pass
            log(f"reclaimed stale shared memory {name}")
            shm.unlink(name)
        if self.doorbell is None:
            self.doorbell = Doorbell.create(bell, self.mode)
        self.doorbell.header.supervisor_pid = os.getpid()
        for topic, partition in self.partitions():
            if (topic, partition) not in self.rings:
                self.create_ring(topic, partition)

    def partitions(self):
        for name, t in self.meta["topics"].items():
            for p in range(t["partitions"]):
                yield name, p

    def ring_name(self, topic, partition):
        return shm.ring_name(self.ns, self.meta["topics"][topic]["id"], partition)

    def partition_log_dir(self, topic, partition):
        return self.log_dirs[(self.meta["topics"][topic]["id"] + partition) % len(self.log_dirs)]

    def create_ring(self, topic, partition):
        t = self.meta["topics"][topic]
        pdir = partition_dir(self.partition_log_dir(topic, partition), topic, partition)
        # Where recovery will cut the newest segment (CRC-checked), so the ring continues the disk's offsets.
        end = log_end_offset(pdir, check_crc=True) if os.path.isdir(pdir) else 0
        first = max(log_start_offset(pdir), retention.read_checkpoint(pdir)) if os.path.isdir(pdir) else 0
        first = max(first, self.requested_log_starts(t)[partition])
        # Offsets below the log start offset are never handed out again (Kafka restarts the log there).
        ring = Ring.create(self.ring_name(topic, partition), metadata.topic_config(t)["ring.bytes"], topic,
                           t["id"], partition, start_offset=max(end, first), mode=self.mode)
        ring.header.persist.log_start_offset = first  # nobody else maps the ring yet
        self.rings[(topic, partition)] = ring

    def listen(self):
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.server.bind(control.socket_address(self.data_dir))
        except OSError as exc:
            raise SystemExit(f"shmlog: cannot bind the control socket for {self.data_dir}: {exc}")
        self.server.listen(128)
        self.server.setblocking(False)
        self.selector.register(self.server, selectors.EVENT_READ)

    # ------------------------------------------------------------------ persister

    def ensure_persister(self):
        if self.persister is not None and self.persister.poll() is None:
            return
        if self.persister is not None:
            log(f"persister exited with {self.persister.returncode}; restarting")
            self.persister = None
        if time.monotonic() - self.persister_started < PERSISTER_RESTART_BACKOFF_S:
            return
        self.persister_started = time.monotonic()
        # The persister starts with SIGTERM and SIGINT blocked and unblocks them once its handler
        # is installed: a stop that comes while it is still starting makes it drain, not die.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self.persister = subprocess.Popen([sys.executable, "-m", "shmlog.broker.persister", self.data_dir],
                                              stdin=subprocess.DEVNULL)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def stop_persister(self):
        """SIGTERM the persister and keep answering control requests until it has drained and
        exited: one that was still starting needs its metadata from us to drain."""
        if self.persister is None:
            return
        if self.persister.poll() is None:
            self.persister.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + PERSISTER_DRAIN_TIMEOUT_S
            while self.persister.poll() is None and time.monotonic() < deadline:
                self.serve_once(0.05)
            if self.persister.poll() is None:
                log(f"persister did not drain within {PERSISTER_DRAIN_TIMEOUT_S:.0f} s; killing it (what it "
                    f"had not written stays in the rings' shared memory only until they are unlinked)")
                self.persister.kill()
                self.persister.wait()
        self.persister = None

    def serve_once(self, timeout_s):
        for key, _ in self.selector.select(timeout_s):
            if key.fileobj is self.server:
                self.accept()
            else:
                self.receive(key.fileobj)

    # ------------------------------------------------------------------ requests

    def handle(self, sock, request):
        op = request.get("op")
        if op in GroupService.OPS:
            return self.groups.handle(sock, request)   # consumer groups: broker/group_service.py
        handler = getattr(self, "op_" + str(op), None)
        if handler is None:
            raise Refused(KafkaError._INVALID_ARG, f"unknown control operation {op!r}")
        return handler(sock, request) or {}

    def op_register(self, sock, request):
        self.clients[sock]["pid"] = int(request.get("pid", 0))
        self.clients[sock]["kind"] = str(request.get("kind", "client"))

    def op_metadata(self, sock, request):
        for topic in request.get("auto_create", []):
            if topic not in self.meta["topics"] and self.config.auto_create_topics_enable \
                    and not topic.startswith("__"):
                self.create_topic(topic, self.config.num_partitions, {})
        return self.describe()

    def describe(self):
        topics = {}
        for name, t in self.meta["topics"].items():
            topics[name] = {
                "id": t["id"], "partitions": t["partitions"], "config": self.topic_config(t),
                "log_start_offsets": self.requested_log_starts(t),
                "rings": [self.ring_name(name, p) for p in range(t["partitions"])],
                "log_dirs": [self.partition_log_dir(name, p) for p in range(t["partitions"])],
            }
        return {"epoch": self.doorbell.metadata_epoch, "doorbell": shm.doorbell_name(self.ns),
                "log_dirs": self.log_dirs, "broker": self.config.as_dict(), "topics": topics,
                "message_max_bytes": self.config.message_max_bytes}

    def topic_config(self, t):
        # Kafka's precedence: the topic's own setting, else the broker's default for it (log.segment.bytes,
        # log.roll.ms, log.retention.*, log.flush.*, and message.max.bytes for max.message.bytes), else Kafka's.
        return effective_topic_config(t["config"], self.config)

    def requested_log_starts(self, t):
        """Per partition, the log start offset delete_records asked for (0: none)."""
        asked = t.get("log_start_offsets") or {}
        return [int(asked.get(str(p), 0)) for p in range(t["partitions"])]

    def op_create_topics(self, sock, request):
        results = {}
        for spec in request["topics"]:
            try:
                self.create_topic(spec["topic"], spec.get("num_partitions", -1), spec.get("config") or {},
                                  validate_only=request.get("validate_only", False))
                results[spec["topic"]] = None
            except Refused as exc:
                results[spec["topic"]] = [exc.code, str(exc)]
            except KafkaException as exc:
                results[spec["topic"]] = [exc.args[0].code(), str(exc)]
        return {"results": results}

    def create_topic(self, topic, num_partitions, config, validate_only=False):
        if not isinstance(topic, str) or not topic or len(topic) > 249 or \
                any(not (c.isalnum() or c in "._-") for c in topic) or topic in (".", ".."):
            raise Refused(KafkaError.TOPIC_EXCEPTION, f"invalid topic name {topic!r}: use 1-249 characters "
                          f"from [a-zA-Z0-9._-]")
        if topic in self.meta["topics"]:
            raise Refused(KafkaError.TOPIC_ALREADY_EXISTS, f"topic {topic!r} already exists")
        if num_partitions in (-1, None):
            num_partitions = self.config.num_partitions
        if not isinstance(num_partitions, int) or num_partitions < 1 or num_partitions > 10000:
            raise Refused(KafkaError.INVALID_PARTITIONS, f"num_partitions={num_partitions!r} must be 1..10000")
        cfg = parse_topic_config(config)
        cfg.setdefault("ring.bytes", self.config.ring_bytes)
        if validate_only:
            return
        self.meta["topics"][topic] = {"id": self.meta["next_topic_id"], "partitions": num_partitions, "config": cfg}
        self.meta["next_topic_id"] += 1
        metadata.save(self.data_dir, self.meta)
        for p in range(num_partitions):
            self.create_ring(topic, p)
        self.doorbell.bump_metadata_epoch()

    def op_delete_topics(self, sock, request):
        results = {}
        for topic in request["topics"]:
            if topic not in self.meta["topics"]:
                results[topic] = [KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}"]
                continue
            parts = self.meta["topics"][topic]["partitions"]
            dirs = [partition_dir(self.partition_log_dir(topic, p), topic, p) for p in range(parts)]
            for p in range(parts):
                ring = self.rings.pop((topic, p), None)
                if ring:
                    shm.unlink(ring.mapping.name)
                    ring.close()
            del self.meta["topics"][topic]
            metadata.save(self.data_dir, self.meta)
            self.doorbell.bump_metadata_epoch()
            for d in dirs:
                retire_dir(d)
            results[topic] = None
        return {"results": results}

    def op_create_partitions(self, sock, request):
        results = {}
        for spec in request["topics"]:
            topic, total = spec["topic"], spec["new_total_count"]
            t = self.meta["topics"].get(topic)
            if t is None:
                results[topic] = [KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}"]
            elif not isinstance(total, int) or total <= t["partitions"]:
                results[topic] = [KafkaError.INVALID_PARTITIONS, f"topic {topic!r} has {t['partitions']} "
                                  f"partitions; new_total_count={total!r} must be larger"]
            elif not request.get("validate_only"):
                old = t["partitions"]
                t["partitions"] = total
                metadata.save(self.data_dir, self.meta)
                for p in range(old, total):
                    self.create_ring(topic, p)
                self.doorbell.bump_metadata_epoch()
                results[topic] = None
            else:
                results[topic] = None
        return {"results": results}

    def op_alter_configs(self, sock, request):
        results = {}
        for topic, config in request["topics"].items():
            t = self.meta["topics"].get(topic)
            if t is None:
                results[topic] = [KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}"]
                continue
            try:
                cfg = parse_topic_config(config)
            except KafkaException as exc:
                results[topic] = [KafkaError.INVALID_CONFIG, str(exc)]
                continue
            if "ring.bytes" in cfg and cfg["ring.bytes"] != metadata.topic_config(t)["ring.bytes"]:
                results[topic] = [KafkaError.INVALID_CONFIG, "ring.bytes cannot change after creation"]
                continue
            if not request.get("validate_only"):
                t["config"].update(cfg)
                metadata.save(self.data_dir, self.meta)
                self.doorbell.bump_metadata_epoch()
            results[topic] = None
        return {"results": results}

    def op_delete_records(self, sock, request):
        """AdminClient.delete_records: move each partition's log start offset forward.

        The request is durable (topic metadata, fsynced) before the ring header shows it, so
        consumers stop seeing those records at once and a host crash does not bring them
        back; the persister deletes the segments wholly below it and checkpoints it.
        """
        results, changed = [], []
        for item in request["partitions"]:
            topic, partition, offset = item["topic"], item["partition"], item["offset"]
            t = self.meta["topics"].get(topic)
            if t is None or not isinstance(partition, int) or not 0 <= partition < t["partitions"]:
                results.append([KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown partition {topic}-{partition}"])
                continue
            ring = self.rings[(topic, partition)]
            high = ring.end()[1]
            if offset == -1:  # OFFSET_END: everything up to the high watermark
                offset = high
            if not isinstance(offset, int) or offset < 0 or offset > high:
                results.append([KafkaError.OFFSET_OUT_OF_RANGE, f"{topic}-{partition}: cannot delete records before "
                                f"offset {offset}: the high watermark is {high}"])
                continue
            asked = t.setdefault("log_start_offsets", {})
            if offset > int(asked.get(str(partition), 0)) and offset > ring.log_start_offset:
                asked[str(partition)] = offset
                changed.append((ring, offset))
            results.append(None)
        if changed:
            metadata.save(self.data_dir, self.meta)
            self.doorbell.bump_metadata_epoch()  # the persister rereads metadata and deletes
        for ring, offset in changed:
            lib.shmlog_ring_advance_log_start(ring.map, offset)
        out = []
        for item, result in zip(request["partitions"], results):
            if result is None:
                ring = self.rings[(item["topic"], item["partition"])]
                out.append({"low_watermark": ring.log_start_offset})
            else:
                out.append({"error": result})
        return {"results": out}

    def op_status(self, sock, request):
        partitions = []
        for (topic, p), ring in sorted(self.rings.items()):
            pos, end = ring.end()
            persist = ring.header.persist
            used = pos - ring.header.release.release_position
            partitions.append({
                "topic": topic, "partition": p, "log_start_offset": persist.log_start_offset,
                "log_end_offset": end, "persisted_offset": persist.persisted_offset,
                "flushed_offset": persist.flushed_offset, "ring_bytes": ring.capacity_bytes,
                "ring_used_bytes": used,
            })
        clients = [{"pid": c["pid"], "kind": c["kind"]} for c in self.clients.values() if c["pid"]]
        return {"pid": os.getpid(), "data_dir": self.data_dir, "bootstrap_servers": control.SCHEME + self.data_dir,
                "persister_pid": self.persister.pid if self.persister else None,
                "partitions": partitions, "clients": clients}

    def op_shutdown(self, sock, request):
        self.running = False

    # ------------------------------------------------------------------ loop

    def accept(self):
        try:
            sock, _ = self.server.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self.clients[sock] = {"buf": b"", "pid": 0, "kind": "client"}
        self.selector.register(sock, selectors.EVENT_READ)

    def drop(self, sock):
        self.selector.unregister(sock)
        client = self.clients.pop(sock)
        sock.close()
        if self.groups is not None:
            self.groups.disconnected(sock)  # a member's process exited or died: its group hears at once
        if client["pid"] and client["kind"] == "producer":
            self.reclaim_dead_producers()

    def receive(self, sock):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(sock)
            return
        client = self.clients[sock]
        client["buf"] += data
        while b"\n" in client["buf"]:
            line, client["buf"] = client["buf"].split(b"\n", 1)
            self.respond(sock, line)

    def respond(self, sock, line):
        request = {}
        try:
            request = json.loads(line)
            result = self.handle(sock, request)
            if result is DEFERRED:
                return  # answered later (a group join waits for the rebalance)
            reply = {"ok": True, **result}
        except Refused as exc:
            reply = {"ok": False, "code": exc.code, "error": str(exc)}
        except KafkaException as exc:
            reply = {"ok": False, "code": exc.args[0].code(), "error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "code": KafkaError._INVALID_ARG, "error": f"bad request: {exc!r}"}
        reply["id"] = request.get("id") if isinstance(request, dict) else None
        sock.setblocking(True)
        try:
            sock.sendall(control.encode(reply))
        except OSError:
            pass
        finally:
            sock.setblocking(False)

    def reclaim_dead_producers(self):
        for ring in self.rings.values():
            ring.reclaim_dead_slots(self.doorbell.ptr)

    def run(self):
        self.lock()
        self.reclaim_shared_memory()
        self.groups = GroupService(self)
        self.groups.start()
        self.listen()
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "running", False))
        self.ensure_persister()
        print(f"shmlog broker ready {control.SCHEME}{self.data_dir}", flush=True)
        next_housekeeping = 0.0
        while self.running:
            self.serve_once(self.sleep_s(next_housekeeping))
            self.groups.tick()
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
                self.ensure_persister()
                self.reclaim_dead_producers()
                remove_retired_dirs(self.log_dirs)
        self.shutdown()

    def sleep_s(self, next_housekeeping):
        """How long the loop may wait for a request: until the next housekeeping round or the
        next group timer (a join phase ending, a session running out), whichever is first, so
        a group timer fires on time rather than on a housekeeping tick."""
        wake = next_housekeeping
        group_deadline = self.groups.next_deadline()
        if group_deadline is not None:
            wake = min(wake, group_deadline)
        return max(0.0, wake - time.monotonic())

    def shutdown(self):
        self.stop_persister()
        remove_retired_dirs(self.log_dirs, older_than_s=0)
        for sock in list(self.clients):
            self.drop(sock)
        self.server.close()
        for ring in self.rings.values():
            ring.close()
        self.doorbell.close()
        for name in shm.names_in_namespace(self.ns):
            shm.unlink(name)
        os.close(self.lock_fd)


def retire_dir(path):
    """Rename a deleted partition's dir aside (as Kafka's `.deleted` suffix) and remove it
    later: the persister may still hold its files open until it sees the new metadata."""
    if os.path.isdir(path):
        os.replace(path, f"{path}.{int(time.time() * 1000)}.deleted")


def remove_retired_dirs(log_dirs, older_than_s=DELETE_DELAY_S):
    now = time.time()
    for log_dir in log_dirs:
        for name in os.listdir(log_dir):
            if name.endswith(".deleted") and now - int(name.rsplit(".", 2)[-2]) / 1000 >= older_than_s:
                shutil.rmtree(os.path.join(log_dir, name), ignore_errors=True)


def log(message):
    print(f"shmlog supervisor: {message}", file=sys.stderr, flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    data_dir = argv[0]
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    os.makedirs(data_dir, exist_ok=True)
    Supervisor(data_dir, config).run()


if __name__ == "__main__":
    main()
