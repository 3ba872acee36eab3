"""The supervisor's consumer-group service: the I/O around the pure state machine in
coordinator.py.

The supervisor hands it the group requests of its control channel; it feeds them to the
Coordinator with the time, and carries out the effects: replies (a join is answered
late, when the rebalance's join phase ends), pushes ("rebalance" goes to every member at
once, so nobody waits for its next heartbeat to learn of it) and offset records appended
to the internal topic `__consumer_offsets` (8 partitions, the group picks one by Kafka's
hash, key = [group, topic, partition], value = offset + metadata as JSON, null deletes).
The topic is compacted (shmlog/broker/cleaner.py), so one commit per key survives and the
start-up replay reads about one record per committed partition, not every commit ever made.
On start it rebuilds the committed-offset table by reading that topic: segment files
first, then the ring. A member's control connection closing tells the coordinator at once.
"""
import logging
import time

from shmlog._native import ffi
from shmlog.broker import coordinator as co
from shmlog.broker import logs
from shmlog.broker.service_guard import DEFERRED, ServiceGuard, wire
from shmlog.errors import KafkaError, KafkaException, reason_of
from shmlog.log.batch import RecordsBuilder, record_size
from shmlog.log.partition_reader import read_partition
from shmlog.log.segment import partition_dir

OFFSETS_RING_BYTES = 4 << 20
APPEND_TIMEOUT_MS = 100          # the supervisor never blocks longer on a full offsets ring


def _now_ms():
    return int(time.monotonic() * 1000)


def _log(message, level=logging.WARNING):
    logs.get().log(level, message)


class GroupService:
    """The supervisor's consumer-group coordinator: sockets, clock and log around coordinator.py."""

    OPS = ("join_group", "sync_group", "heartbeat", "leave_group", "offset_commit", "offset_fetch",
           "list_groups", "describe_groups", "delete_groups")

    def __init__(self, supervisor):
        self.sup = supervisor
        cfg = supervisor.config
        self.coordinator = co.Coordinator(
            initial_rebalance_delay_ms=cfg.group_initial_rebalance_delay_ms,
            min_session_timeout_ms=cfg.group_min_session_timeout_ms,
            max_session_timeout_ms=cfg.group_max_session_timeout_ms,
            offsets_retention_ms=cfg.offsets_retention_minutes * 60_000)
        self.slots = {}
        self.epoch = None
        self.seen = {}   # group id -> (state, generation) as last logged
        self.guard = ServiceGuard("consumer group coordinator", (co.InvalidTransition,))

    # ------------------------------------------------------------------ start

    def start(self):
        """Rebuild the committed-offset table from __consumer_offsets, if there is one yet.

        The supervisor has recovered the topic's partition directories already (a torn or
        corrupt tail of the newest segment is cut and reported). What is still damaged (a
        batch of an older segment that fails its CRC, a record that does not decode) is
        reported and skipped: the commits it held are lost, later ones load as usual, and
        the broker starts.
        """
        count = 0
        if co.OFFSETS_TOPIC not in self.sup.meta["topics"]:
            self._topics_changed()
            return count
        self.sup.reclaim_dead_producers()   # a claim left by a crashed supervisor would stop the replay
        for p in range(self.sup.meta["topics"][co.OFFSETS_TOPIC]["partitions"]):
            where = f"{co.OFFSETS_TOPIC}-{p}"

            def damaged(what, where=where):
                _log(f"{where}: {what}; committed offsets it held are not loaded")

            records = []
            for offset, k, v in read_partition(*self._partition(p), on_corrupt=damaged):
                try:
                    records.append(co.decode_offset_record(k, v))
                except Exception as exc:  # noqa: BLE001 - any undecodable record is skipped, never fatal
                    damaged(f"the record at offset {offset} does not decode ({exc!r})")
            self.coordinator.offsets_written(records, _now_ms())
            count += len(records)
        self._topics_changed()
        return count

    def _ensure_offsets_topic(self):
        """Created on the first commit, as Kafka creates it on first use: a broker that never
        sees a consumer group has no internal topic (and no 8 rings for it)."""
        if co.OFFSETS_TOPIC not in self.sup.meta["topics"]:
            # Compacted (the log cleaner keeps the last commit per group, topic and partition: the key),
            # in segments of offsets.topic.segment.bytes: only sealed segments are cleaned.
            self.sup.create_topic(co.OFFSETS_TOPIC, co.OFFSETS_TOPIC_PARTITIONS,
                                  {"cleanup.policy": "compact", "ring.bytes": OFFSETS_RING_BYTES,
                                   "segment.bytes": self.sup.config.offsets_topic_segment_bytes}, internal=True)

    def _partition(self, p):
        ring = self.sup.rings[(co.OFFSETS_TOPIC, p)]
        pdir = partition_dir(self.sup.partition_log_dir(co.OFFSETS_TOPIC, p), co.OFFSETS_TOPIC, p)
        return ring, pdir

    def _topics_changed(self):
        self.epoch = self.sup.doorbell.metadata_epoch
        topics = {name: t["partitions"] for name, t in self.sup.meta["topics"].items()}
        self.execute(self.coordinator.topics_changed(topics, _now_ms()))

    # ------------------------------------------------------------------ requests

    def handle(self, sock, request):
        return self.guard.request(self._handle, sock, request)

    def _handle(self, sock, request):
        op = request["op"]
        ref = (sock, request.get("id"))
        now = _now_ms()
        c = self.coordinator
        group = request.get("group")
        member = dict(member_id=request.get("member_id") or "", instance_id=request.get("instance_id"))
        if op == "join_group":
            pid = self.sup.clients.get(sock, {}).get("pid", 0)
            effects = c.join(ref, sock, group, protocols=request["protocols"], subscription=request["subscription"],
                             session_timeout_ms=request["session_timeout_ms"],
                             rebalance_timeout_ms=request["rebalance_timeout_ms"], now=now,
                             client_id=request.get("client_id") or "", host=f"pid:{pid}",
                             owned=request.get("owned") or (), **member)
        elif op == "sync_group":
            effects = c.sync(ref, group, member["member_id"], request["generation"], now, member["instance_id"])
        elif op == "heartbeat":
            effects = c.heartbeat(ref, group, member["member_id"], request["generation"], now, member["instance_id"])
        elif op == "leave_group":
            effects = c.leave(ref, group, member["member_id"], now, member["instance_id"])
        elif op == "offset_commit":
            effects = c.commit(ref, group, [(t, int(p), o, m) for t, p, o, m in request["offsets"]], now,
                               generation=request.get("generation", -1), timestamp=int(time.time() * 1000),
                               **member)
        elif op == "offset_fetch":
            effects = c.fetch_offsets(ref, group, request.get("partitions"))
            if request.get("log_end"):
                effects = [self._with_log_end(e) for e in effects]
        elif op == "list_groups":
            effects = c.list_groups(ref)
        elif op == "describe_groups":
            effects = c.describe_groups(ref, request["groups"])
        elif op == "delete_groups":
            effects = c.delete_groups(ref, request["groups"])
        else:
            raise KeyError(op)
        return self.execute(effects, ref)

    def _with_log_end(self, effect):
        ends = []
        for topic, partition, *_ in effect.body.get("offsets", ()):
            ring = self.sup.rings.get((topic, partition))
            ends.append(ring.end()[1] if ring is not None else -1)
        return co.Reply(effect.ref, {**effect.body, "log_end": ends})

    def execute(self, effects, own=None):
        """Carry out effects in order; returns the wire reply to `own` or DEFERRED."""
        reply = DEFERRED
        failed = {}
        for e in effects:
            if isinstance(e, co.Persist):
                problem = self.persist(e.records)
                if problem is not None:
                    failed[e.ref] = problem
            elif isinstance(e, co.Reply):
                body = e.body
                if e.ref in failed:
                    body = co.error_body(KafkaError.COORDINATOR_NOT_AVAILABLE, failed.pop(e.ref))
                if e.ref == own:
                    reply = wire(body)
                else:
                    self.send(e.ref[0], {**wire(body), "id": e.ref[1]})
            elif isinstance(e, co.Push):
                self.send(e.conn, {"push": True, **e.body})
        self.log_rebalances()
        return reply

    def log_rebalances(self):
        """INFO lines for each group whose rebalance started or completed since the last call."""
        now = {}
        for gid, g in self.coordinator.groups.items():
            now[gid] = (g.state, g.generation)
            before = self.seen.get(gid, (co.EMPTY, 0))
            if now[gid] == before:
                continue
            state, generation = now[gid]
            members = len(g.members)
            started = state == co.PREPARING_REBALANCE and before[0] != co.PREPARING_REBALANCE
            if started or generation > before[1] and before[0] != co.PREPARING_REBALANCE:
                # Entered now, or entered and left within one request (no initial delay, every
                # member already joined): the rebalance started from the generation before.
                _log(f"group {gid!r}: rebalance started at generation {before[1] if not started else generation} "
                     f"({members} member{'s' if members != 1 else ''})", logging.INFO)
            if state == co.PREPARING_REBALANCE:
                pass
            elif state == co.STABLE and before[0] != co.STABLE:
                _log(f"group {gid!r}: rebalance complete: generation {generation}, {members} member"
                     f"{'s' if members != 1 else ''}, protocol {g.protocol}, leader {g.leader}", logging.INFO)
            elif state == co.EMPTY and before[0] != co.EMPTY:
                _log(f"group {gid!r}: rebalance complete: generation {generation}, no members left", logging.INFO)
        for gid in self.seen.keys() - now.keys():
            _log(f"group {gid!r} removed", logging.INFO)
        self.seen = now

    def send(self, sock, message):
        self.sup.send(sock, message)   # queued without blocking; nothing if the connection is gone

    def persist(self, records):
        """Append records to __consumer_offsets, applying each partition's once it is written.
        Returns None, or why (part of) it failed."""
        try:
            self._ensure_offsets_topic()
        except Exception as exc:  # noqa: BLE001 - any reason not to have the topic fails the commit
            return f"cannot create {co.OFFSETS_TOPIC}: {reason_of(exc)}"
        by_partition = {}
        n = self.sup.meta["topics"][co.OFFSETS_TOPIC]["partitions"]
        for r in records:
            by_partition.setdefault(co.offsets_partition(r.group, n), []).append(r)
        now = int(time.time() * 1000)
        for p, part in sorted(by_partition.items()):
            ring = self.sup.rings[(co.OFFSETS_TOPIC, p)]
            batch = RecordsBuilder()
            for r in part:
                key, value = co.encode_offset_record(r)
                batch.add(key, value, now, None, record_size(key, value))
            data, base_ts, max_ts = batch.encode()
            slot = self.slots.get(ring)
            try:
                if slot is None:
                    slot = self.slots[ring] = ring.acquire_producer_slot()
                ring.append(slot, ffi.from_buffer(data), len(data), len(batch), base_ts, max_ts,
                            APPEND_TIMEOUT_MS, self.sup.doorbell.ptr)
            except KafkaException as exc:
                return f"cannot write committed offsets to {co.OFFSETS_TOPIC}-{p}: {reason_of(exc)}"
            self.coordinator.offsets_written(part, _now_ms())
        return None

    # ------------------------------------------------------------------ liveness and timers

    def disconnected(self, sock):
        self.guard.event(lambda: self.execute(self.coordinator.disconnected(sock, _now_ms())))

    def next_deadline(self):
        """When (time.monotonic() seconds) tick() next has a timer to run, or None."""
        deadline_ms = self.coordinator.next_deadline()
        return None if deadline_ms is None else deadline_ms / 1000

    def tick(self):
        self.guard.event(self._tick)

    def _tick(self):
        if self.sup.doorbell.metadata_epoch != self.epoch:
            self._topics_changed()
        self.execute(self.coordinator.tick(_now_ms()))
