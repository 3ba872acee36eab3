"""The supervisor's transaction service: the I/O around the pure state machine in
txn_coordinator.py.

It feeds the transactional requests of the control channel to the TxnCoordinator with the
time and carries out its effects:

- Persist: the transactional id's state is appended to the internal topic
  `__transaction_state` (TXN_TOPIC_PARTITIONS partitions, Kafka's hash of the id picks one,
  key = [transactional id], value = the state as JSON, null deletes). On start the table is
  rebuilt from it (segment files first, then the ring), as GroupService rebuilds offsets.
  The coordinator makes the change only once the append succeeded (`persisted`); an append
  that fails (the partition's ring full because the persister cannot write, a stopping
  broker) leaves its table as it was (`persist_failed`): the requests get
  COORDINATOR_NOT_AVAILABLE, and the steps no request waits for are tried again after
  PERSIST_RETRY_S.
- WriteMarkers: a COMMIT or ABORT control batch (shmlog/log/control_record.py) appended to
  every partition the transaction touched; for an abort first an entry in the partition's
  aborted.txnindex; for a commit the transaction's consumer offsets go to
  `__consumer_offsets` (through the group service, so they become visible at this moment)
  followed by a COMMIT marker in that partition. A marker that cannot be written (a full
  ring) is tried again at the next tick; the transaction stays Prepare* until then, and its
  end_txn is answered when all are written.
- After every step, each partition's transaction line in its ring (shmlog_ring_txn: the
  first unstable offset, the aborted-index entry count) is brought up to date, so
  read_committed readers stop at the last stable offset.
- The aborted.txnindex of a partition follows its log start offset: once retention or
  delete_records moved it past an entry's last offset, the entry is dropped
  (control_record.trim_aborted). The service is the index's only writer, so it trims too.
"""
import logging
import time

from shmlog._native import ffi
from shmlog.broker import coordinator as group_co
from shmlog.broker import logs
from shmlog.broker import txn_coordinator as tc
from shmlog.broker.group_service import APPEND_TIMEOUT_MS
from shmlog.broker.producer_ids import ProducerIdsUnavailable
from shmlog.broker.service_guard import DEFERRED, ServiceGuard, wire
from shmlog.errors import KafkaError, KafkaException
from shmlog.log import control_record
from shmlog.log.batch import RecordsBuilder, record_size
from shmlog.log.partition_reader import read_partition
from shmlog.log.segment import partition_dir

TXN_RING_BYTES = 1 << 20
PERSIST_RETRY_S = 0.1     # after a failed write, timers and retries wait this long before writing again
TRIM_GRACE_S = 1.0        # a log start offset is trimmed to once it has been published this long


def _now_ms():
    return int(time.monotonic() * 1000)


def _log(message, level=logging.WARNING):
    logs.get().log(level, message)


class TxnService:
    """The supervisor's transaction coordinator: log, rings and clock around txn_coordinator.py."""

    OPS = ("add_partitions_to_txn", "add_offsets_to_txn", "txn_offset_commit", "end_txn",
           "list_transactions", "describe_transactions", "abort_transaction")

    def __init__(self, supervisor):
        self.sup = supervisor
        cfg = supervisor.config
        self.coordinator = tc.TxnCoordinator(self._new_producer_id, max_timeout_ms=cfg.transaction_max_timeout_ms,
                                             transactional_id_expiration_ms=cfg.transactional_id_expiration_ms)
        self.slots = {}
        self.unwritten = {}        # transactional id -> WriteMarkers still to write (retried on tick)
        self.published = {}        # (topic, partition) -> first unstable offset as last published
        self.aborted_counts = {}   # (topic, partition) -> entries ever appended to its aborted.txnindex
        self.trimmed = {}          # (topic, partition) -> log start offset its index was last trimmed to
        self.trim_next = {}        # (topic, partition) -> (log start offset, time.monotonic() it was seen)
        self.uncompleted = set()   # transactional ids whose markers are written but Complete* not persisted
        self.retry_at = 0.0        # time.monotonic() before which no failed write is tried again
        self.guard = ServiceGuard("transaction coordinator", (tc.InvalidTransition,), (ProducerIdsUnavailable,))

    def _new_producer_id(self):
        return self.sup.producer_ids.allocate()   # ProducerIdsUnavailable is answered by the caller

    # ------------------------------------------------------------------ start

    def start(self):
        """Rebuild the transaction table from __transaction_state, publish every partition's
        transaction line, then finish what a crash left between Prepare and Complete."""
        records = []
        if tc.TXN_TOPIC in self.sup.meta["topics"]:
            self.sup.reclaim_dead_producers()
            for p in range(self.sup.meta["topics"][tc.TXN_TOPIC]["partitions"]):
                where = f"{tc.TXN_TOPIC}-{p}"

                def damaged(what, where=where):
                    _log(f"{where}: {what}; the transaction states it held are not loaded")

                ring = self.sup.rings[(tc.TXN_TOPIC, p)]
                for offset, k, v in read_partition(ring, self._pdir(tc.TXN_TOPIC, p), on_corrupt=damaged):
                    try:
                        records.append(tc.decode_txn_record(k, v))
                    except Exception as exc:  # noqa: BLE001 - any undecodable record is skipped, never fatal
                        damaged(f"the record at offset {offset} does not decode ({exc!r})")
        # Each id lives in one partition: replaying partition by partition keeps its records in order.
        unfinished = self.coordinator.loaded(records, _now_ms())
        # Every ring's line is set from the replayed table, not left as a crashed supervisor left
        # it: a ring adopted from before the crash may say a transaction is open that has ended.
        open_now = self.coordinator.open_partitions()
        for (name, p), ring in self.sup.rings.items():
            count = control_record.aborted_generation(self._pdir(name, p))
            if count:
                self.aborted_counts[(name, p)] = count
            if count or (name, p) in open_now or ring.txn_state()[2]:
                ring.set_txn(open_now.get((name, p)), count)
        self.published = dict(open_now)
        self.execute(unfinished)
        return len(records)

    def _pdir(self, topic, p):
        return partition_dir(self.sup.partition_log_dir(topic, p), topic, p)

    # ------------------------------------------------------------------ requests

    def init_producer_id(self, sock, request):
        """InitProducerId with a transactional id (the supervisor's op for both kinds)."""
        ref = (sock, request.get("id"))
        try:
            effects = self.coordinator.init_producer_id(ref, request["transactional_id"],
                                                        request.get("transaction_timeout_ms", 60_000), _now_ms())
        except ProducerIdsUnavailable as exc:
            return wire(tc.error_body(KafkaError.KAFKA_STORAGE_ERROR, f"init_producer_id: {exc}"))
        return self.execute(effects, ref)

    def handle(self, sock, request):
        return self.guard.request(self._handle, sock, request)

    def _handle(self, sock, request):
        op = request["op"]
        ref = (sock, request.get("id"))
        now = _now_ms()
        c = self.coordinator
        ids = (request.get("transactional_id"), request.get("producer_id"), request.get("producer_epoch"))
        if op == "add_partitions_to_txn":
            parts, unknown = [], []
            for topic, p in request["partitions"]:
                ring = self.sup.rings.get((topic, int(p)))
                if ring is None:
                    unknown.append(f"{topic}-{p}")
                else:
                    parts.append((topic, int(p), ring.end()[1]))
            if unknown:
                return wire(tc.error_body(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                          f"add_partitions_to_txn: no partition {', '.join(unknown)}"))
            effects = c.add_partitions(ref, *ids, parts, now, wall_ms=int(time.time() * 1000))
        elif op == "add_offsets_to_txn":
            effects = c.add_offsets(ref, *ids, request["group"], now, wall_ms=int(time.time() * 1000))
        elif op == "txn_offset_commit":
            if request.get("generation", -1) >= 0:   # a group member's offsets: KIP-447's fencing
                problem = self.sup.groups.coordinator.fencing_problem(
                    request["group"], request.get("member_id") or "", request["generation"], request.get("instance_id"))
                if problem is not None:
                    return wire(problem)
            effects = c.txn_offset_commit(ref, *ids, request["group"],
                                          [(t, int(p), o, m) for t, p, o, m in request["offsets"]], now)
        elif op == "end_txn":
            effects = c.end_txn(ref, *ids, request["commit"], now)
        elif op == "list_transactions":
            effects = c.list_transactions(ref, now, request.get("states"))
        elif op == "describe_transactions":
            effects = c.describe_transactions(ref, request["transactional_ids"], now)
        elif op == "abort_transaction":
            effects = c.abort(ref, request["transactional_id"], now)
        else:
            raise KeyError(op)
        return self.execute(effects, ref)

    def execute(self, effects, own=None):
        """Carry out effects in order; returns the wire reply to `own` or DEFERRED."""
        reply = DEFERRED
        for e in effects:
            if isinstance(e, tc.Persist):
                tid = e.record.transactional_id
                problem = self.persist(e.record)
                if problem is None:
                    follow = self.coordinator.persisted(tid, _now_ms())
                else:
                    _log(f"transactional id {tid!r}: {problem}; its state is unchanged")
                    self.retry_at = time.monotonic() + PERSIST_RETRY_S
                    follow = self.coordinator.persist_failed(tid, problem, _now_ms())
                answer = self.execute(follow, own)
                if answer is not DEFERRED:
                    reply = answer
            elif isinstance(e, tc.WriteMarkers):
                self.unwritten[e.transactional_id] = e
                self.publish_lso()     # an ending transaction keeps its partitions unstable until done
                self.write_markers(e.transactional_id)
            elif isinstance(e, tc.Reply):
                if e.ref == own:
                    reply = wire(e.body)
                elif e.ref is not None:
                    self.sup.send(e.ref[0], {**wire(e.body), "id": e.ref[1]})
        self.publish_lso()
        return reply

    # ------------------------------------------------------------------ the log

    def _ensure_topic(self):
        if tc.TXN_TOPIC not in self.sup.meta["topics"]:
            self.sup.create_topic(tc.TXN_TOPIC, tc.TXN_TOPIC_PARTITIONS,
                                  {"cleanup.policy": "compact", "ring.bytes": TXN_RING_BYTES}, internal=True)

    def _append(self, ring, data, count, base_ts, max_ts, **producer):
        slot = self.slots.get(ring)
        if slot is None:
            slot = self.slots[ring] = ring.acquire_producer_slot()
        return ring.append(slot, ffi.from_buffer(data), len(data), count, base_ts, max_ts, APPEND_TIMEOUT_MS,
                           self.sup.doorbell.ptr, **producer)

    def persist(self, record):
        """Append one state record to __transaction_state; None, or why it failed."""
        try:
            self._ensure_topic()
        except Exception as exc:  # noqa: BLE001 - any reason not to have the topic fails the request
            return f"cannot create {tc.TXN_TOPIC}: {exc}"
        p = tc.txn_partition(record.transactional_id, self.sup.meta["topics"][tc.TXN_TOPIC]["partitions"])
        key, value = tc.encode_txn_record(record)
        batch = RecordsBuilder()
        batch.add(key, value, int(time.time() * 1000), None, record_size(key, value))
        data, base_ts, max_ts = batch.encode()
        try:
            self._append(self.sup.rings[(tc.TXN_TOPIC, p)], data, 1, base_ts, max_ts)
        except KafkaException as exc:
            return f"cannot write the transaction state to {tc.TXN_TOPIC}-{p}: {exc}"
        return None

    def write_markers(self, transactional_id):
        """Write what is left of a transaction's markers; when all are, the coordinator hears it."""
        m = self.unwritten[transactional_id]
        producer = dict(attributes=control_record.MARKER_ATTRIBUTES, producer_id=m.producer_id,
                        producer_epoch=m.producer_epoch)
        now = int(time.time() * 1000)
        data, base_ts, max_ts = control_record.marker_records(m.commit, now)
        done = []
        try:
            for topic, p, first in m.partitions:
                ring = self.sup.rings.get((topic, p))
                if ring is None:      # the topic was deleted meanwhile: nothing to mark
                    done.append((topic, p, first))
                    continue
                if not m.commit:
                    self._index_abort(topic, p, ring, m, first)
                self._append(ring, data, 1, base_ts, max_ts, **producer)
                done.append((topic, p, first))
            if m.commit and m.offsets:
                self._commit_offsets(m, data, base_ts, max_ts, producer)
        except (KafkaException, OSError) as exc:
            left = tuple(x for x in m.partitions if x not in done)
            self.unwritten[transactional_id] = tc.WriteMarkers(m.transactional_id, m.producer_id, m.producer_epoch,
                                                               m.commit, left, m.offsets, m.fenced)
            self.retry_at = time.monotonic() + PERSIST_RETRY_S
            _log(f"transactional id {transactional_id!r}: cannot write its {'COMMIT' if m.commit else 'ABORT'} "
                 f"markers yet ({exc}); trying again")
            return
        del self.unwritten[transactional_id]
        self.complete(transactional_id)

    def complete(self, transactional_id):
        """The markers are written: persist Complete*; if that write fails it is tried again later."""
        self.execute(self.coordinator.markers_written(transactional_id, _now_ms()))
        t = self.coordinator.txns.get(transactional_id)
        if t is not None and t.state in (tc.PREPARE_COMMIT, tc.PREPARE_ABORT):
            self.uncompleted.add(transactional_id)
        else:
            self.uncompleted.discard(transactional_id)

    def _index_abort(self, topic, p, ring, m, first):
        """The aborted.txnindex entry comes before the ABORT marker (control_record.py says why)."""
        end = ring.end()[1]
        pid, epoch, last = m.producer_id, m.producer_epoch, end
        if m.fenced:
            (pid, epoch), last = m.fenced, control_record.OPEN_ENDED
        count = control_record.append_aborted(self._pdir(topic, p), pid, epoch, first, last, first)
        self.aborted_counts[(topic, p)] = count
        ring.set_txn(self.published.get((topic, p)), count)

    def trim_aborted_indexes(self):
        """Drop the aborted.txnindex entries the log start offset has passed (retention,
        delete_records), once that log start offset has been published for TRIM_GRACE_S: a
        reader (the Kafka listener's Fetch, say) that read a batch just before the log start
        moved past it still finds its entry. The ring's aborted count is not moved: a reader's
        older copy only holds more entries, of offsets it never returns (control_record.AbortedIndex)."""
        now = time.monotonic()
        for tp in self.aborted_counts:
            ring = self.sup.rings.get(tp)
            if ring is None or ring.closed:
                continue
            seen = self.trim_next.get(tp)
            if seen is None:
                if ring.log_start_offset > self.trimmed.get(tp, 0):
                    self.trim_next[tp] = (ring.log_start_offset, now)
                continue
            start, since = seen
            if now - since < TRIM_GRACE_S:
                continue
            try:
                control_record.trim_aborted(self._pdir(*tp), start)
            except OSError as exc:
                _log(f"{tp[0]}-{tp[1]}: cannot trim {control_record.INDEX_NAME} to the log start offset {start}: "
                     f"{exc}; trying again in {TRIM_GRACE_S:g} s")
                self.trim_next[tp] = (start, now)
                continue
            self.trimmed[tp] = start
            del self.trim_next[tp]

    def _commit_offsets(self, m, data, base_ts, max_ts, producer):
        groups = self.sup.groups
        records = [group_co.OffsetRecord(g, t, p, o, md, int(time.time() * 1000)) for g, t, p, o, md in m.offsets]
        problem = groups.persist(records)
        if problem is not None:
            raise KafkaException(KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, problem))
        n = self.sup.meta["topics"][group_co.OFFSETS_TOPIC]["partitions"]
        for p in sorted({group_co.offsets_partition(g, n) for g, *_ in m.offsets}):
            self._append(self.sup.rings[(group_co.OFFSETS_TOPIC, p)], data, 1, base_ts, max_ts, **producer)

    def publish_lso(self):
        """Bring every partition's transaction line up to date with the open transactions."""
        now = self.coordinator.open_partitions()
        for tp in set(now) | set(self.published):
            first = now.get(tp)
            if self.published.get(tp) == first:
                continue
            ring = self.sup.rings.get(tp)
            if ring is not None:
                ring.set_txn(first, self.aborted_counts.get(tp, 0))
            if first is None:
                self.published.pop(tp, None)
            else:
                self.published[tp] = first

    # ------------------------------------------------------------------ timers

    def next_deadline(self):
        """When (time.monotonic() seconds) tick() next has a timer to run, or None."""
        if self.unwritten or self.uncompleted:
            return max(self.retry_at, time.monotonic() + PERSIST_RETRY_S)
        deadline_ms = self.coordinator.next_deadline()
        return None if deadline_ms is None else max(deadline_ms / 1000, self.retry_at)

    def tick(self):
        self.guard.event(self._tick)

    def _tick(self):
        self.trim_aborted_indexes()
        if time.monotonic() < self.retry_at:
            return      # a write failed a moment ago: timers and retries wait rather than block again
        for tid in list(self.unwritten):
            self.write_markers(tid)
        for tid in list(self.uncompleted):
            self.complete(tid)
        # A timeout abort past the last epoch needs a new producer id: ProducerIdsUnavailable is logged.
        self.execute(self.coordinator.tick(_now_ms()))
