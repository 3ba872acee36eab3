"""Consumer groups, the member's end of the wire.

`GroupClient` gives a Consumer with a group.id its offsets (commit, committed, stored
offsets, auto-commit); `GroupMember` is its membership once it subscribes: a background
thread with its own control connection joins, syncs, heartbeats, auto-commits, enforces
max.poll.interval.ms and reacts to pushes, and hands rebalances to the application
thread, which runs on_assign/on_revoke/on_lost inside poll(), as confluent-kafka does.
The broker's end is shmlog/broker/group_service.py.
"""
import collections
import ctypes
import ctypes.util
import json
import os
import platform
import selectors
import threading
import time
import weakref

from shmlog import control
from shmlog._native import ffi
from shmlog.config import COOPERATIVE_ASSIGNORS
from shmlog.errors import KafkaError, KafkaException, error
from shmlog.message import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    OFFSET_STORED,
    Message,
    TopicPartition,
)

REQUEST_TIMEOUT_S = 30.0
RECONNECT_INTERVAL_S = 0.2
RETRY_BACKOFF_S = 0.1


def _now_ms():
    return int(time.monotonic() * 1000)


_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "riscv64": 98, "ppc64le": 221, "s390x": 238}.get(platform.machine())
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def wake_doorbell_slot(doorbell, slot):
    """Wake a thread of this process sleeping on its doorbell slot (a consumer inside poll()).

    The futex word changes, so a sleeper that has not yet gone to sleep will not; the
    increment is not atomic, but a concurrent producer's increment lost to it still
    changes the word. Without the syscall number for this machine the sleeper wakes at
    its next 100 ms slice instead."""
    if slot is None or slot < 0:
        return
    word = ffi.addressof(doorbell.header.slots[slot], "futex_seq")
    word[0] = (word[0] + 1) & 0xFFFFFFFF
    if _SYS_FUTEX is not None:
        _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(int(ffi.cast("uintptr_t", word))), 1, 0x7FFFFFFF, None, None, 0)


def _raise_for(reply):
    if not reply.get("ok"):
        code = reply.get("code", KafkaError._FAIL)
        raise KafkaException(KafkaError(code, reply.get("error", "request failed"),
                                        fatal=code == KafkaError.FENCED_INSTANCE_ID))
    return reply


def _tps(keys, offsets=None):
    return [TopicPartition(t, p, OFFSET_INVALID if offsets is None else offsets[(t, p)]) for t, p in sorted(keys)]


class _Pending:
    __slots__ = ("event", "reply", "callback")

    def __init__(self, callback=None):
        self.event = threading.Event()
        self.reply = None
        self.callback = callback


class _Connection:
    """A control connection multiplexed between threads: any thread sends, the member's
    background thread reads, replies are matched by id, pushes go to the member."""

    def __init__(self, data_dir):
        self.sock, _ = control.connect(data_dir)  # checked both ways, greeting read
        self.send_lock = threading.Lock()
        self.pending = {}
        self.next_id = 0
        self.buf = b""
        self.dead = False

    def send(self, op, callback=None, **fields):
        p = _Pending(callback)
        with self.send_lock:
            self.next_id += 1
            rid = self.next_id
            self.pending[rid] = p
            try:
                if self.dead:
                    raise OSError("connection closed")
                self.sock.sendall(control.encode({"op": op, "id": rid, **fields}))
            except OSError as exc:
                self.pending.pop(rid, None)
                p.reply = {"ok": False, "code": KafkaError._TRANSPORT,
                           "error": f"lost the shmlog broker's control channel: {exc}"}
        if p.reply is not None:
            p.event.set()
            if callback is not None:
                callback(p.reply)
        return p

    def read(self):
        """Lines available now: [(pending or None, message)]; raises EOFError when closed."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            raise EOFError
        self.buf += data
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            message = json.loads(line)
            out.append((self.pending.pop(message.get("id"), None) if not message.get("push") else None, message))
        return out

    def fail_all(self, reason):
        with self.send_lock:
            self.dead = True
            pending, self.pending = self.pending, {}
        for p in pending.values():
            p.reply = {"ok": False, "code": KafkaError._TRANSPORT, "error": reason}
        return list(pending.values())

    def close(self):
        self.dead = True
        try:
            self.sock.close()
        except OSError:
            pass


class GroupClient:
    """The group side of a Consumer with a group.id: committed offsets, stored offsets and
    (after subscribe) membership. Offsets go over the member's connection when there is a
    member, so commits stay ordered with the membership they are fenced by; otherwise over
    the consumer's own control connection."""

    def __init__(self, consumer):
        self.consumer = consumer
        cfg = consumer._cfg
        self.cfg = cfg
        self.group_id = cfg.group_id
        self.member = None
        self.results = collections.deque()     # async commit outcomes for on_commit, served in poll
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ requests

    def request(self, op, timeout=REQUEST_TIMEOUT_S, **fields):
        member = self.member
        if member is not None and member.conn is not None:
            return member.request(op, timeout, **fields)
        return self.consumer._cluster.control.request(op, **fields)

    # ------------------------------------------------------------------ offsets

    def fetch(self, keys, timeout=REQUEST_TIMEOUT_S):
        """{(topic, partition): (offset, metadata)} committed for keys (offset -1001: none)."""
        reply = _raise_for(self._safe_request("offset_fetch", timeout, group=self.group_id,
                                              partitions=[list(k) for k in keys]))
        return {(t, p): (o, m) for t, p, o, m in reply["offsets"]}

    def _safe_request(self, op, timeout, **fields):
        try:
            return self.request(op, timeout, **fields)
        except KafkaException as exc:
            err = exc.args[0]
            return {"ok": False, "code": err.code(), "error": err.str()}

    def start_offsets(self, partitions):
        """TopicPartitions whose offset says "stored" get the committed offset (or keep
        theirs, so auto.offset.reset decides); the others are left as given."""
        want = [(tp.topic, tp.partition) for tp in partitions if tp.offset in (OFFSET_INVALID, OFFSET_STORED)]
        if not want:
            return partitions
        committed = self.fetch(want)
        out = []
        for tp in partitions:
            c = committed.get((tp.topic, tp.partition))
            if c is not None and c[0] >= 0:
                tp = TopicPartition(tp.topic, tp.partition, c[0], c[1] or None)
            out.append(tp)
        return out

    def commit(self, message=None, offsets=None, asynchronous=True):
        if message is not None and offsets is not None:
            raise error(KafkaError._INVALID_ARG, "commit() takes message or offsets, not both")
        if message is not None:
            if message.error() is not None or message.offset() < 0:
                raise error(KafkaError._INVALID_ARG, "cannot commit the offset of an error message")
            entries = [(message.topic(), message.partition(), message.offset() + 1, "")]
        elif offsets is not None:
            entries = [(tp.topic, tp.partition, tp.offset, tp.metadata or "") for tp in offsets]
        else:
            assigned = set(self.consumer._readers)
            entries = [(t, p, o, "") for (t, p), o in sorted(dict(self.consumer._stored).items())
                       if (t, p) in assigned]
        entries = [e for e in entries if e[2] >= 0]
        if not entries:
            err = KafkaError(KafkaError._NO_OFFSET, "no stored offsets to commit")
            if asynchronous:
                self._report(err, [])
                return None
            raise KafkaException(err)
        tps = [TopicPartition(t, p, o, m or None) for t, p, o, m in entries]
        member = self.member
        if asynchronous and member is not None and member.conn is not None:
            member.send_commit(entries, lambda reply: self._report(*self._outcome(reply, tps)))
            return None
        reply = self._safe_request("offset_commit", REQUEST_TIMEOUT_S, group=self.group_id,
                                   offsets=[list(e) for e in entries], **self._identity())
        err, tps = self._outcome(reply, tps)
        if asynchronous:
            self._report(err, tps)
            return None
        if self.cfg.on_commit is not None:
            self._report(err, tps)
        if err is not None:
            raise KafkaException(err)
        return tps

    def _identity(self):
        member = self.member
        return member.identity() if member is not None else {"member_id": "", "generation": -1,
                                                              "instance_id": None}

    def _outcome(self, reply, tps):
        if not reply.get("ok"):
            code = reply.get("code", KafkaError._FAIL)
            return KafkaError(code, reply.get("error"), fatal=code == KafkaError.FENCED_INSTANCE_ID), tps
        failed = None
        by_key = {(t, p): code for t, p, code in reply.get("results", ())}
        for tp in tps:
            code = by_key.get((tp.topic, tp.partition), 0)
            if code:
                tp.error = KafkaError(code, f"{tp.topic}-{tp.partition}: commit refused ({KafkaError(code).name()})")
                failed = failed or tp.error
        return failed, tps

    def _report(self, err, tps):
        if self.cfg.on_commit is not None:
            self.results.append((err, tps))
            self.consumer._serve_needed = True
            self.wake()

    def committed(self, partitions, timeout=None):
        keys = [(tp.topic, tp.partition) for tp in partitions]
        got = self.fetch(keys, REQUEST_TIMEOUT_S if timeout is None or timeout < 0 else timeout)
        out = []
        for tp in partitions:
            o, m = got.get((tp.topic, tp.partition), (OFFSET_INVALID, ""))
            out.append(TopicPartition(tp.topic, tp.partition, o if o >= 0 else OFFSET_INVALID, m or None))
        return out

    def store_offsets(self, message=None, offsets=None):
        if self.cfg.enable_auto_offset_store:
            raise error(KafkaError._INVALID_ARG, "store_offsets() needs enable.auto.offset.store=false "
                        "(with it true, every record poll() returns is stored already)")
        if (message is None) == (offsets is None):
            raise error(KafkaError._INVALID_ARG, "store_offsets() takes message or offsets")
        if message is not None:
            self.consumer._stored[(message.topic(), message.partition())] = message.offset() + 1
            return
        for tp in offsets:
            self.consumer._stored[(tp.topic, tp.partition)] = tp.offset

    # ------------------------------------------------------------------ membership

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        if isinstance(topics, str):
            raise TypeError("subscribe() takes a list of topic names or ^patterns, not a str")
        topics = list(topics)
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise error(KafkaError._INVALID_ARG, "subscribe() needs a non-empty list of topic names or ^patterns")
        literal = [t for t in topics if not t.startswith("^")]
        if literal:
            self.consumer._cluster.refresh(auto_create=literal)
        if self.member is not None:
            self.member.resubscribe(topics, on_assign, on_revoke, on_lost)
            return
        self.member = GroupMember(self, topics, on_assign, on_revoke, on_lost)
        self.member.start()

    def unsubscribe(self):
        member = self.member
        if member is not None:
            try:
                member.leave()       # revokes and commits as a member: self.member must still be it
            finally:
                self.member = None

    def serve(self):
        """Application thread, inside poll(): rebalance callbacks, commit reports. Returns an
        error Message for poll() to return, or None."""
        while self.results:
            err, tps = self.results.popleft()
            self.cfg.on_commit(err, tps)
        if self.member is not None:
            return self.member.serve()
        return None

    def wake(self):
        wake_doorbell_slot(self.consumer._cluster.doorbell, getattr(self.consumer._wait, "slot", -1))

    def close(self):
        self.unsubscribe()
        while self.results:
            err, tps = self.results.popleft()
            self.cfg.on_commit(err, tps)


def _serve(member_ref, selector, wake_r, wake_w):
    """The group thread. It holds its member only while acting on it, so a consumer the
    application drops without close() is collected, as confluent-kafka's is; the thread then
    closes the member's control channel (the broker removes the members of a closed channel
    at once, as Kafka's coordinator removes one that leaves: its partitions go to the others)
    and ends."""
    timeout_s = 0.0
    while True:
        ready = selector.select(timeout_s)
        member = member_ref()
        if member is None:
            break
        timeout_s = member._step(ready)
        del member
        if timeout_s is None:
            return
    for key in list(selector.get_map().values()):
        if key.data != "wake":
            key.fileobj.close()
    selector.close()
    os.close(wake_r)
    os.close(wake_w)


class GroupMember:
    """A subscribed consumer's membership. State lives in the background thread; the
    application thread sees rebalances as events it handles in poll()."""

    def __init__(self, client, topics, on_assign, on_revoke, on_lost):
        self.client = client
        self.consumer = client.consumer
        cfg = client.cfg
        self.group_id = cfg.group_id
        self.instance_id = cfg.group_instance_id
        self.client_id = cfg.get("client.id") or "rdkafka"
        self.protocols = list(cfg.partition_assignment_strategy)
        self.log = self.consumer._cluster.log
        self.cooperative = self.protocols[0] in COOPERATIVE_ASSIGNORS
        self.session_timeout = cfg.session_timeout_ms
        self.heartbeat_s = cfg.heartbeat_interval_ms / 1000.0
        self.max_poll_s = cfg.max_poll_interval_ms / 1000.0
        self.auto_commit_s = cfg.auto_commit_interval_ms / 1000.0 if cfg.enable_auto_commit else 0
        self.topics = topics
        self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost
        self.data_dir = self.consumer._cluster.data_dir
        self.lock = threading.RLock()
        self.events = collections.deque()          # to the application thread
        self.conn = None
        self.member_id = ""
        self.generation = -1
        self.protocol = None
        self.state = "idle"     # idle joining syncing stable revoking left fatal
        self.owned = set()      # what the coordinator believes we own (cooperative joins report it)
        self.revoke_pending = False
        self.last_poll = time.monotonic()
        self.next_heartbeat = 0.0
        self.next_auto_commit = time.monotonic() + self.auto_commit_s
        self.retry_at = 0.0
        self.last_committed = {}
        self.rebalances = 0            # assignments received (statistics: rebalance_cnt)
        self.rebalanced_at = None
        self.leaving = False    # close/unsubscribe began: no more joins; replies are still read
        self.stopped = False
        self.fatal = None
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.thread = threading.Thread(target=_serve, args=(weakref.ref(self), self.selector, self.wake_r, self.wake_w),
                                       name=f"shmlog-group-{self.group_id}", daemon=True)

    def start(self):
        self._connect()
        self.thread.start()

    # ------------------------------------------------------------------ used by both threads

    _JOIN_STATES = {"idle": "init", "joining": "wait-join", "syncing": "wait-sync", "stable": "steady",
                    "revoking": "wait-unassign-call", "left": "init", "fatal": "init"}

    def statistics(self, now):
        """The `cgrp` object of the statistics JSON (librdkafka's names)."""
        with self.lock:
            return {"state": "up" if self.conn is not None else "wait-coord",
                    "join_state": self._JOIN_STATES.get(self.state, self.state),
                    "rebalance_age": int((now - self.rebalanced_at) * 1000) if self.rebalanced_at else 0,
                    "rebalance_cnt": self.rebalances, "rebalance_reason": "",
                    "assignment_size": len(self.owned), "generation": self.generation}

    def identity(self):
        with self.lock:
            return {"member_id": self.member_id, "generation": self.generation, "instance_id": self.instance_id}

    def request(self, op, timeout, **fields):
        conn = self.conn
        if conn is None:
            raise error(KafkaError._TRANSPORT, "the shmlog broker's control channel is down (reconnecting)")
        p = conn.send(op, **fields)
        if not p.event.wait(timeout):
            raise error(KafkaError._TIMED_OUT, f"{op}: no answer from the shmlog broker within {timeout:g}s")
        return p.reply

    def send_commit(self, entries, callback):
        conn = self.conn
        fields = dict(group=self.group_id, offsets=[list(e) for e in entries], **self.identity())
        if conn is None:
            callback({"ok": False, "code": KafkaError._TRANSPORT, "error": "control channel down"})
            return
        conn.send("offset_commit", callback=callback, **fields)

    def _wake_thread(self):
        try:
            os.write(self.wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _post(self, *event):
        self.events.append(event)
        self.consumer._serve_needed = True
        self.client.wake()

    # ------------------------------------------------------------------ application thread

    @property
    def last_poll(self):
        """When the application last polled: here, or in the consumer's C fast path."""
        return max(self._last_poll, self.consumer._fast_last_poll)

    @last_poll.setter
    def last_poll(self, when):
        self._last_poll = when

    def serve(self):
        now = time.monotonic()
        self.last_poll = now
        if self.state == "left" and not self.leaving:
            with self.lock:
                self.state = "idle"
            self._wake_thread()
        while self.events:
            event = self.events.popleft()
            kind = event[0]
            if kind == "revoke":
                self._app_revoke(event[1], event[2])
            elif kind == "assign":
                self._app_assign(event[1], event[2])
            elif kind == "error":
                return Message(error=event[1])
        return None

    def _app_revoke(self, keys, lost):
        c = self.consumer
        keys = [k for k in keys if k in c._readers] if not lost else list(keys)
        tps = _tps(keys)
        if not lost and self.auto_commit_s and keys:
            self._commit_stored(keys)
        calls = c._rebalance_calls
        cb = (self.on_lost or self.on_revoke) if lost else self.on_revoke
        try:
            if cb is not None:
                cb(c, tps)
        finally:
            if c._rebalance_calls == calls:
                if self.cooperative:
                    c.incremental_unassign(tps)
                else:
                    c.unassign()
            for k in keys:
                c._stored.pop(k, None)
                self.last_committed.pop(k, None)
            if not lost:
                with self.lock:
                    self.revoke_pending = False
                self._wake_thread()

    def _app_assign(self, keys, incremental):
        c = self.consumer
        tps = _tps(keys)
        calls = c._rebalance_calls
        try:
            if self.on_assign is not None:
                self.on_assign(c, tps)
        finally:
            if c._rebalance_calls == calls:
                self._assign(tps, incremental)

    def _assign(self, tps, incremental):
        """The assignment the application did not make itself: committed offsets, else
        auto.offset.reset; with reset=error a partition without a commit is left out and
        poll() returns an _AUTO_OFFSET_RESET error for it, as librdkafka does."""
        c = self.consumer
        resolved, failed = [], []
        for tp in self.client.start_offsets(tps):
            if tp.offset in (OFFSET_INVALID, OFFSET_STORED):
                if c._reset == "error":
                    failed.append(tp)
                    continue
                tp = TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING if c._reset == "earliest" else OFFSET_END)
            resolved.append(tp)
        if incremental:
            c.incremental_assign(resolved)
        else:
            c.assign(resolved)
        for tp in failed:
            self.consumer._serve_needed = True
            self.events.appendleft(("error", KafkaError(
                KafkaError._AUTO_OFFSET_RESET, f"{tp.topic}-{tp.partition}: group {self.group_id!r} has no committed "
                f"offset for it and auto.offset.reset=error: assign it an offset explicitly")))

    def _commit_stored(self, keys):
        stored = dict(self.consumer._stored)
        entries = [(t, p, stored[(t, p)], "") for t, p in keys if (t, p) in stored]
        entries = [e for e in entries if self.last_committed.get((e[0], e[1])) != e[2]]
        if not entries:
            return
        try:
            self.client.commit(offsets=[TopicPartition(t, p, o) for t, p, o, _ in entries], asynchronous=False)
            for t, p, o, _ in entries:
                self.last_committed[(t, p)] = o
        except KafkaException:
            pass   # fenced or broker gone: the next owner starts from the previous commit

    def resubscribe(self, topics, on_assign, on_revoke, on_lost):
        with self.lock:
            self.topics = topics
            self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost
            if self.state == "stable":
                self._rebalance_locked()
        self._wake_thread()

    def leave(self):
        """close() / unsubscribe(): revoke here (on_revoke, commit), leave the group, stop.
        Static members do not leave: a restart within session.timeout.ms keeps their partitions."""
        with self.lock:
            self.leaving = True
        self.events.clear()
        keys = list(self.consumer._readers)
        try:
            if keys and self.fatal is None:
                self._app_revoke(keys, lost=False)
            if self.member_id and not self.instance_id and self.conn is not None:
                try:
                    self.request("leave_group", 5.0, group=self.group_id, member_id=self.member_id,
                                 instance_id=self.instance_id)
                except KafkaException:
                    pass
        finally:
            self.stopped = True
            self._wake_thread()
            if self.thread.is_alive():
                self.thread.join(timeout=5)
            if self.conn is not None:
                self.conn.close()
            self.selector.close()
            os.close(self.wake_r)
            os.close(self.wake_w)

    # ------------------------------------------------------------------ background thread

    def _connect(self):
        try:
            conn = _Connection(self.data_dir)
        except (OSError, KafkaException):
            return False
        conn.sock.setblocking(False)
        self.selector.register(conn.sock, selectors.EVENT_READ, "sock")
        self.conn = conn
        conn.send("register", kind="group", pid=os.getpid())
        return True

    def _step(self, ready):
        """One turn of the group thread: what select() found, then the timers. The timeout of
        the next select(), or None once the member stopped or failed."""
        try:
            for key, _ in ready:
                if self.stopped:
                    return None
                if key.data == "wake":
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                else:
                    self._read()
            if self.stopped:
                return None
            self._act(time.monotonic())
            return max(0.0, min(self._next_timer() - time.monotonic(), 1.0))
        except Exception as exc:  # never die silently: the application sees it in poll()
            self.fatal = KafkaError(KafkaError._FATAL, f"consumer group thread failed: {exc!r}", fatal=True)
            self._post("error", self.fatal)
            return None

    def _read(self):
        try:
            lines = self.conn.read()
        except EOFError:
            self._lost_connection()
            return
        for pending, message in lines:
            if pending is None:
                if message.get("push"):
                    self._on_push(message)
                continue
            pending.reply = message
            pending.event.set()
            if pending.callback is not None:
                pending.callback(message)

    def _lost_connection(self):
        conn, self.conn = self.conn, None
        self.selector.unregister(conn.sock)
        conn.close()
        for p in conn.fail_all(f"the shmlog broker for {self.data_dir} closed the control channel"):
            p.event.set()
            if p.callback is not None:
                p.callback(p.reply)
        self.log.warning("CGRPCONN", f"group {self.group_id!r}: lost the broker's control channel; "
                         f"partitions are lost, rejoining once it is back")
        with self.lock:
            # A restarted broker does not know us: our partitions are lost, we join again.
            self._lose_locked()
            self.member_id, self.generation = "", -1
            if self.state != "fatal":
                self.state = "idle"
            self.retry_at = time.monotonic() + RECONNECT_INTERVAL_S

    def _next_timer(self):
        now = time.monotonic()
        times = [now + 1.0]
        if self.state in ("stable", "revoking"):
            times.append(self.next_heartbeat)
            if self.auto_commit_s:
                times.append(self.next_auto_commit)
        if self.state not in ("left", "fatal"):
            times.append(self.last_poll + self.max_poll_s)
        if self.state == "idle" and not self.revoke_pending:
            times.append(self.retry_at)
        return min(times)

    def _act(self, now):
        with self.lock:
            if self.state == "fatal" or self.leaving:
                return
            if self.conn is None:
                if now >= self.retry_at and not self._connect():
                    self.retry_at = now + RECONNECT_INTERVAL_S
                    return
                if self.conn is None:
                    return
            if self.state not in ("left", "idle") and now - self.last_poll > self.max_poll_s:
                self._max_poll_exceeded()
                return
            if self.state == "revoking" and not self.revoke_pending:
                self.state = "idle"
            if self.state == "idle" and not self.revoke_pending and now >= self.retry_at:
                self._join()
            if self.state in ("stable", "revoking") and now >= self.next_heartbeat:
                self.next_heartbeat = now + self.heartbeat_s
                gen = self.generation
                self.conn.send("heartbeat", callback=lambda reply: self._on_heartbeat(reply, gen),
                               group=self.group_id, member_id=self.member_id, instance_id=self.instance_id,
                               generation=gen)
            if self.state == "stable" and self.auto_commit_s and now >= self.next_auto_commit:
                self.next_auto_commit = now + self.auto_commit_s
                self._auto_commit()

    def _max_poll_exceeded(self):
        over_ms = int((time.monotonic() - self.last_poll - self.max_poll_s) * 1000)
        self.log.warning("MAXPOLL", f"Application maximum poll interval ({int(self.max_poll_s * 1000)}ms) exceeded "
                         f"by {over_ms}ms: leaving group {self.group_id!r}")
        self._lose_locked()
        self._post("error", KafkaError(KafkaError._MAX_POLL_EXCEEDED,
                                       f"Application maximum poll interval ({int(self.max_poll_s * 1000)}ms) "
                                       f"exceeded by {over_ms}ms: the consumer left group {self.group_id!r}; "
                                       f"the next poll() rejoins"))
        if self.member_id and not self.instance_id:
            self.conn.send("leave_group", group=self.group_id, member_id=self.member_id, instance_id=None)
        # A static member stays in the group until its session times out; rejoining by
        # group.instance.id before that gets its partitions back without a rebalance.
        self.member_id = ""
        self.generation = -1
        self.state = "left"

    def _lose_locked(self):
        if self.owned or self.consumer._readers:
            self._post("revoke", sorted(self.owned | set(self.consumer._readers)), True)
        self.owned = set()
        self.revoke_pending = False

    def _join(self):
        self.log.debug("cgrp", "JOIN", f"group {self.group_id!r}: joining as {self.member_id or 'a new member'} "
                       f"with {','.join(self.protocols)} for {self.topics}")
        self.state = "joining"
        self.conn.send("join_group", callback=self._on_join, group=self.group_id, member_id=self.member_id,
                       instance_id=self.instance_id, client_id=self.client_id, protocols=self.protocols,
                       subscription=self.topics,
                       owned=[list(k) for k in sorted(self.owned)] if self.cooperative else [],
                       session_timeout_ms=self.session_timeout, rebalance_timeout_ms=int(self.max_poll_s * 1000))

    def _on_join(self, reply):
        with self.lock:
            if self.leaving or self.state != "joining":
                return
            if reply.get("ok"):
                self.member_id, self.generation = reply["member_id"], reply["generation"]
                self.protocol = reply["protocol"]
                self.log.debug("cgrp", "JOINED", f"group {self.group_id!r}: member {self.member_id} joined "
                               f"generation {self.generation} (assignor {self.protocol})")
                self.state = "syncing"
                self.conn.send("sync_group", callback=self._on_sync, group=self.group_id, member_id=self.member_id,
                               instance_id=self.instance_id, generation=self.generation)
                return
            self._on_error(reply)

    def _on_sync(self, reply):
        with self.lock:
            if self.leaving or self.state != "syncing":
                return
            if not reply.get("ok"):
                self._on_error(reply)
                return
            new = {(t, p) for t, p in reply["assignment"]}
            self.rebalances += 1
            self.rebalanced_at = time.monotonic()
            if self.log.enabled("cgrp"):
                self.log.debug("cgrp", "ASSIGNMENT", f"group {self.group_id!r} generation {self.generation}: "
                               f"assigned {', '.join(f'{t}[{p}]' for t, p in sorted(new)) or 'nothing'}")
            self.state = "stable"
            self.next_heartbeat = time.monotonic() + self.heartbeat_s
            if not self.cooperative:
                self._post("assign", sorted(new), False)
                self.owned = new
                return
            revoked, added = self.owned - new, new - self.owned
            if revoked:
                self.revoke_pending = True
                self.state = "revoking"
                self._post("revoke", sorted(revoked), False)
            self._post("assign", sorted(added), True)
            self.owned = new

    def _on_error(self, reply):
        code = reply.get("code")
        if code == KafkaError._TRANSPORT:
            return   # _lost_connection takes it from here
        self.log.debug("cgrp", "CGRPERR", f"group {self.group_id!r}: {reply.get('error', code)}")
        if code in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION):
            self._lose_locked()
            if code == KafkaError.UNKNOWN_MEMBER_ID:
                self.member_id = ""
            self.state = "idle"
            return
        if code == KafkaError.REBALANCE_IN_PROGRESS:
            self.state = "idle"
            return
        if code in (KafkaError.FENCED_INSTANCE_ID, KafkaError.INCONSISTENT_GROUP_PROTOCOL,
                    KafkaError.INVALID_SESSION_TIMEOUT, KafkaError.INVALID_GROUP_ID, KafkaError.INVALID_REQUEST):
            self._lose_locked()
            self.state = "fatal"
            self.fatal = KafkaError(code, reply.get("error"), fatal=True)
            self._post("error", self.fatal)
            return
        self.state = "idle"
        self.retry_at = time.monotonic() + RETRY_BACKOFF_S

    def _on_heartbeat(self, reply, generation):
        with self.lock:
            if reply.get("ok") or self.leaving or generation != self.generation:
                return
            if reply.get("code") == KafkaError.REBALANCE_IN_PROGRESS:
                if self.state == "stable":
                    self._rebalance_locked()
                return
            if self.state in ("stable", "revoking"):
                self._on_error(reply)

    def _on_push(self, message):
        with self.lock:
            if message.get("event") == "rebalance" and message.get("member_id") == self.member_id \
                    and self.state == "stable" and not self.leaving:
                self._rebalance_locked()
        self._wake_thread()

    def _rebalance_locked(self):
        """The group rebalances: eager protocols give everything back first (after the
        application's on_revoke), cooperative ones rejoin at once keeping what they own."""
        if not self.cooperative and self.owned:
            self.revoke_pending = True
            self.state = "revoking"
            self._post("revoke", sorted(self.owned), False)
            self.owned = set()
        else:
            self.state = "idle"

    def _auto_commit(self):
        c = self.consumer
        stored = dict(c._stored)
        entries = [(t, p, o, "") for (t, p), o in sorted(stored.items())
                   if (t, p) in self.owned and self.last_committed.get((t, p)) != o]
        if not entries:
            return
        tps = [TopicPartition(t, p, o) for t, p, o, _ in entries]

        def done(reply):
            err, _ = self.client._outcome(reply, tps)
            if err is None:
                for t, p, o, _ in entries:
                    self.last_committed[(t, p)] = o
            self.client._report(err, tps)
        self.conn.send("offset_commit", callback=done, group=self.group_id,
                       offsets=[list(e) for e in entries], member_id=self.member_id,
                       generation=self.generation, instance_id=self.instance_id)
