"""The transaction coordinator: Kafka's transaction protocol as a state machine.

As coordinator.py (the group coordinator) there is no I/O here: every input is a method
call that carries the time (`now`, milliseconds of a monotonic clock) and returns a list
of effects for the caller (shmlog/broker/txn_service.py, TxnService) to carry out:

    Reply(ref, body)       answer request `ref`. end_txn is answered late: once the caller
                           reports the markers written (`markers_written`).
    Persist(record)        write this TxnRecord (the transactional id's whole state) to
                           `__transaction_state`, then tell the coordinator how it went:
                           `persisted(id)` or `persist_failed(id, reason)`, and carry out the
                           effects that call returns. A Persist is the last effect of its step.
    WriteMarkers(...)      write COMMIT or ABORT control batches to every partition of the
                           transaction and, for a commit, its consumer offsets plus a COMMIT
                           marker to `__consumer_offsets`; then call `markers_written`.

A change of a transactional id's state is staged, not made (Kafka's pendingState): the table
holds the old state until the caller reports the record written, and the replies, markers
and everything else that depends on the change wait with it. A write that fails leaves the
table as it was, answers the requests of that step with COORDINATOR_NOT_AVAILABLE (Kafka's
answer when its append to the transaction log fails: retriable), and a step no request waits
for (a timeout abort, an expiry, the Complete state after the markers) is tried again by the
caller later. While a change is staged, other requests for the id are told
CONCURRENT_TRANSACTIONS.

A transactional id's states are Kafka's (TransactionState.scala) and the events that move
between them are data (TRANSITIONS); `_transition` refuses anything else, so a bug is an
error, never a stray state. Epochs fence zombies: init_producer_id bumps the epoch, and every
request carrying an older one is refused with PRODUCER_FENCED (fatal for that producer). A
transaction Ongoing for longer than its timeout is aborted by the coordinator, which bumps
the epoch as it does so: the producer that let it expire is fenced, as Kafka does.

Offsets sent with a transaction (txn_offset_commit) are kept in the transaction's state
(and so in `__transaction_state`) and written to `__consumer_offsets` only by a commit's
WriteMarkers: they become visible exactly when the transaction commits, and a crash between
PrepareCommit and CompleteCommit re-runs the same WriteMarkers on replay.
"""
import json
from dataclasses import dataclass, field, replace
from typing import Any

from shmlog.broker.coordinator import java_string_hash
from shmlog.errors import KafkaError

TXN_TOPIC = "__transaction_state"
TXN_TOPIC_PARTITIONS = 4
MAX_EPOCH = 32767 - 1          # Kafka bumps to a new producer id rather than reach Short.MaxValue

# ---------------------------------------------------------------------------- states

EMPTY = "Empty"
ONGOING = "Ongoing"
PREPARE_COMMIT = "PrepareCommit"
PREPARE_ABORT = "PrepareAbort"
COMPLETE_COMMIT = "CompleteCommit"
COMPLETE_ABORT = "CompleteAbort"
DEAD = "Dead"

STATES = (EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT, COMPLETE_COMMIT, COMPLETE_ABORT, DEAD)

# (state, event) -> next state; nothing else is allowed (InvalidTransition).
TRANSITIONS = {
    (EMPTY, "init"): EMPTY,
    (COMPLETE_COMMIT, "init"): EMPTY,
    (COMPLETE_ABORT, "init"): EMPTY,
    (EMPTY, "add"): ONGOING,
    (ONGOING, "add"): ONGOING,
    (COMPLETE_COMMIT, "add"): ONGOING,
    (COMPLETE_ABORT, "add"): ONGOING,
    (ONGOING, "commit"): PREPARE_COMMIT,
    (ONGOING, "abort"): PREPARE_ABORT,
    (PREPARE_COMMIT, "markers_written"): COMPLETE_COMMIT,
    (PREPARE_ABORT, "markers_written"): COMPLETE_ABORT,
    (EMPTY, "expired"): DEAD,
    (COMPLETE_COMMIT, "expired"): DEAD,
    (COMPLETE_ABORT, "expired"): DEAD,
}

# What a request may find: states from which no marker write is pending.
SETTLED = (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT)


class InvalidTransition(Exception):
    """The coordinator tried a state change its table does not allow (a bug, never user input)."""


# ---------------------------------------------------------------------------- effects

@dataclass(frozen=True)
class Reply:
    ref: Any
    body: dict


@dataclass(frozen=True)
class TxnRecord:
    """A transactional id's state as written to __transaction_state; state None deletes it."""
    transactional_id: str
    producer_id: int = -1
    producer_epoch: int = -1
    timeout_ms: int = 0
    state: str | None = EMPTY
    partitions: tuple = ()          # ((topic, partition, first offset bound), ...)
    offsets: tuple = ()             # ((group, topic, partition, offset, metadata), ...)
    started_ms: int = 0             # wall clock, for describe; timers run on `now`
    fenced: tuple = ()              # PrepareAbort only: (producer id, epoch) the abort fenced


@dataclass(frozen=True)
class Persist:
    record: TxnRecord


@dataclass(frozen=True)
class _Staged:
    txn: Any            # the Txn to install once the record is written (None: delete the id)
    then: tuple         # effects that wait for the write
    refs: tuple         # requests answered COORDINATOR_NOT_AVAILABLE if the write fails


@dataclass(frozen=True)
class WriteMarkers:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: bool
    partitions: tuple               # ((topic, partition, first offset bound), ...)
    offsets: tuple                  # ((group, topic, partition, offset, metadata), ...): commit only
    fenced: tuple = ()              # (producer id, epoch) this abort fenced for good, or ()


def error_body(code, message):
    return {"error": int(code), "message": message}


# ---------------------------------------------------------------------------- state

@dataclass
class Txn:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: str = EMPTY
    partitions: dict = field(default_factory=dict)   # (topic, partition) -> first offset bound
    groups: set = field(default_factory=set)         # consumer groups added with add_offsets
    offsets: dict = field(default_factory=dict)      # (group, topic, partition) -> (offset, metadata)
    started: int = 0                                 # `now` when it went Ongoing
    started_ms: int = 0                              # wall clock of the same moment
    last_update: int = 0
    end_ref: Any = None                              # the end_txn waiting for its markers
    fenced: tuple = ()                               # (id, epoch) a pending abort fenced, or ()

    def copy(self):
        """A working copy a step changes; the table keeps this one until the change is persisted."""
        return replace(self, partitions=dict(self.partitions), groups=set(self.groups), offsets=dict(self.offsets))

    def record(self):
        return TxnRecord(self.transactional_id, self.producer_id, self.producer_epoch, self.timeout_ms,
                         self.state, tuple((t, p, o) for (t, p), o in sorted(self.partitions.items())),
                         tuple((g, t, p, o, m) for (g, t, p), (o, m) in sorted(self.offsets.items())),
                         self.started_ms, self.fenced if self.state == PREPARE_ABORT else ())

    def describe(self, now):
        return {"transactional_id": self.transactional_id, "producer_id": self.producer_id,
                "producer_epoch": self.producer_epoch, "state": self.state,
                "transaction_timeout_ms": self.timeout_ms,
                "transaction_start_ms": self.started_ms if self.state not in SETTLED else -1,
                "transaction_duration_ms": now - self.started if self.state not in SETTLED else 0,
                "partitions": [[t, p] for (t, p) in sorted(self.partitions)],
                "groups": sorted(self.groups)}


# ---------------------------------------------------------------------------- the coordinator

class TxnCoordinator:
    """Every transactional id of one broker. Inputs are methods; each returns a list of effects.

    new_producer_id(): a fresh producer id (the broker's allocator; the coordinator never
    hands out one itself). max_timeout_ms: Kafka's transaction.max.timeout.ms.
    transactional_id_expiration_ms: a settled id unused for this long is forgotten.
    """

    def __init__(self, new_producer_id, max_timeout_ms=900_000, transactional_id_expiration_ms=7 * 24 * 3_600_000):
        self.new_producer_id = new_producer_id
        self.max_timeout = max_timeout_ms
        self.expiration = transactional_id_expiration_ms
        self.txns = {}
        self.pending = {}   # transactional id -> _Staged: a change waiting for its Persist

    # ------------------------------------------------------------------ inputs

    def init_producer_id(self, ref, transactional_id, timeout_ms, now):
        """InitProducerId for a transactional producer: the id's producer id with its epoch
        bumped (fencing every older instance), or a new id at epoch 0. An open transaction
        of the old instance is aborted first: the caller is told CONCURRENT_TRANSACTIONS and
        retries, as Kafka's clients do."""
        if not isinstance(transactional_id, str) or not transactional_id:
            return [Reply(ref, error_body(KafkaError.INVALID_REQUEST, "transactional.id must be a non-empty string"))]
        if not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= self.max_timeout:
            return [Reply(ref, error_body(KafkaError.INVALID_TRANSACTION_TIMEOUT,
                                          f"transaction.timeout.ms={timeout_ms} is outside the broker's "
                                          f"[1, transaction.max.timeout.ms={self.max_timeout}]"))]
        if transactional_id in self.pending:
            return [Reply(ref, self._concurrent_pending(transactional_id))]
        t = self.txns.get(transactional_id)
        if t is None or t.state == DEAD:
            t = Txn(transactional_id, self.new_producer_id(), 0, timeout_ms, last_update=now)
            return self._stage(t, [Reply(ref, self._ids(t))], [ref])
        if t.state not in SETTLED and t.state != ONGOING:
            return [Reply(ref, self._concurrent(t))]
        t = t.copy()
        if t.state == ONGOING:
            markers = self._abort(t, now, bump=True)
            return self._stage(t, [markers, Reply(ref, self._concurrent(t))], [ref])
        self._bump(t)
        t.timeout_ms, t.last_update = timeout_ms, now
        self._transition(t, "init")
        self._clear(t)
        return self._stage(t, [Reply(ref, self._ids(t))], [ref])

    def add_partitions(self, ref, transactional_id, producer_id, producer_epoch, partitions, now, wall_ms=0):
        """AddPartitionsToTxn. partitions: (topic, partition, log end offset now) each; the end
        offset bounds from below where the transaction's records in that partition start
        (the producer appends there only after this reply), which is what the partition's
        last stable offset needs."""
        t, problem = self._check(transactional_id, producer_id, producer_epoch)
        if problem:
            return [Reply(ref, problem)]
        t = t.copy()
        self._begin(t, now, wall_ms)
        for topic, partition, end in partitions:
            t.partitions.setdefault((topic, int(partition)), int(end))
        return self._stage(t, [Reply(ref, {})], [ref])

    def add_offsets(self, ref, transactional_id, producer_id, producer_epoch, group, now, wall_ms=0):
        """AddOffsetsToTxn: the group's offsets will be committed (or dropped) with the transaction."""
        if not isinstance(group, str) or not group:
            return [Reply(ref, error_body(KafkaError.INVALID_GROUP_ID, "group.id must be a non-empty string"))]
        t, problem = self._check(transactional_id, producer_id, producer_epoch)
        if problem:
            return [Reply(ref, problem)]
        t = t.copy()
        self._begin(t, now, wall_ms)
        t.groups.add(group)
        return self._stage(t, [Reply(ref, {})], [ref])

    def txn_offset_commit(self, ref, transactional_id, producer_id, producer_epoch, group, offsets, now):
        """TxnOffsetCommit: offsets (topic, partition, offset, metadata) of a group already in
        the transaction (add_offsets), visible to the group only once it commits."""
        t, problem = self._check(transactional_id, producer_id, producer_epoch)
        if problem:
            return [Reply(ref, problem)]
        if t.state != ONGOING or group not in t.groups:
            return [Reply(ref, error_body(KafkaError.INVALID_TXN_STATE,
                                          f"transactional id {transactional_id!r}: group {group!r} was not added to "
                                          f"the transaction (add_offsets_to_txn comes first)"))]
        t = t.copy()
        for topic, partition, offset, metadata in offsets:
            t.offsets[(group, topic, int(partition))] = (int(offset), metadata or "")
        t.last_update = now
        return self._stage(t, [Reply(ref, {})], [ref])

    def end_txn(self, ref, transactional_id, producer_id, producer_epoch, commit, now):
        """EndTxn: commit or abort. Answered once the markers are written."""
        t, problem = self._check(transactional_id, producer_id, producer_epoch, ending=True)
        if problem:
            return [Reply(ref, problem)]
        wanted = COMPLETE_COMMIT if commit else COMPLETE_ABORT
        if t.state == ONGOING:
            t = t.copy()
            if commit:
                self._transition(t, "commit")
                t.last_update = now
                markers = self._markers(t)
            else:
                markers = self._abort(t, now, bump=False)
            t.end_ref = ref
            return self._stage(t, [markers], [ref])
        if t.state == wanted or (t.state == EMPTY and not commit):
            # A retry of an end that already happened, or an abort of a transaction that never
            # began (Kafka's clients send none; ours may after a failed begin): nothing to do.
            return [Reply(ref, {})]
        if t.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return [Reply(ref, self._concurrent(t))]
        return [Reply(ref, error_body(KafkaError.INVALID_TXN_STATE,
                                      f"transactional id {transactional_id!r} is {t.state}: cannot "
                                      f"{'commit' if commit else 'abort'}"))]

    def abort(self, ref, transactional_id, now):
        """An operator's abort of a hanging transaction (the CLI): aborts it and bumps the epoch,
        so the producer that left it is fenced."""
        if transactional_id in self.pending:
            return [Reply(ref, self._concurrent_pending(transactional_id))]
        t = self.txns.get(transactional_id)
        if t is None or t.state == DEAD:
            return [Reply(ref, error_body(KafkaError.INVALID_PRODUCER_ID_MAPPING,
                                          f"no transactional id {transactional_id!r}"))]
        if t.state != ONGOING:
            return [Reply(ref, error_body(KafkaError.INVALID_TXN_STATE,
                                          f"transactional id {transactional_id!r} is {t.state}: nothing to abort"))]
        t = t.copy()
        markers = self._abort(t, now, bump=True)
        t.end_ref = ref
        return self._stage(t, [markers], [ref])

    def markers_written(self, transactional_id, now):
        """The caller wrote the markers of the transaction's WriteMarkers. If the Complete state
        cannot be persisted, the id stays Prepare* (its end_txn still waiting) and the caller
        calls this again later."""
        t = self.txns.get(transactional_id)
        if t is None or t.state not in (PREPARE_COMMIT, PREPARE_ABORT) or transactional_id in self.pending:
            return []
        t = t.copy()
        self._transition(t, "markers_written")
        t.last_update = now
        ref, t.end_ref = t.end_ref, None
        self._clear(t)
        return self._stage(t, [Reply(ref, {})] if ref is not None else [], [])

    def persisted(self, transactional_id, now):
        """The record of the id's staged change is written: the change is made; returns the
        effects that waited for it."""
        staged = self.pending.pop(transactional_id, None)
        if staged is None:
            return []
        if staged.txn is None:
            self.txns.pop(transactional_id, None)
        else:
            self.txns[transactional_id] = staged.txn
        return list(staged.then)

    def persist_failed(self, transactional_id, reason, now):
        """The record of the id's staged change could not be written: the change is dropped (the
        table holds the state before it) and the requests of that step are told to retry."""
        staged = self.pending.pop(transactional_id, None)
        if staged is None:
            return []
        body = error_body(KafkaError.COORDINATOR_NOT_AVAILABLE,
                          f"transactional id {transactional_id!r}: the transaction coordinator could not write "
                          f"its state ({reason}); nothing changed, retry")
        return [Reply(ref, body) for ref in staged.refs]

    def tick(self, now):
        """Timers: abort every transaction past its timeout; forget ids unused past expiration."""
        effects = []
        try:
            for t in list(self.txns.values()):
                if t.transactional_id in self.pending:
                    continue
                if t.state == ONGOING and now >= t.started + t.timeout_ms:
                    t = t.copy()
                    effects += self._stage(t, [self._abort(t, now, bump=True)], [])
                elif t.state in SETTLED and now >= t.last_update + self.expiration:
                    self._transition(t.copy(), "expired")
                    effects += self._stage(None, [], [], transactional_id=t.transactional_id)
        except BaseException:
            # (No new producer id for an epoch bump, say.) What this tick staged is dropped with
            # its effects: nothing changed, the next tick tries again.
            for e in effects:
                self.pending.pop(e.record.transactional_id, None)
            raise
        return effects

    def next_deadline(self):
        """When tick() next has something to do (in `now` units), or None."""
        times = [t.started + t.timeout_ms if t.state == ONGOING else t.last_update + self.expiration
                 for t in self.txns.values() if t.state == ONGOING or t.state in SETTLED]
        return min(times, default=None)

    def loaded(self, records, now):
        """Replay of __transaction_state: the last record of each id wins. Returns the
        WriteMarkers of every transaction a crash left between Prepare and Complete, which
        the caller carries out (then markers_written) before serving requests."""
        for r in records:
            if r.state is None:
                self.txns.pop(r.transactional_id, None)
                continue
            t = Txn(r.transactional_id, r.producer_id, r.producer_epoch, r.timeout_ms, r.state,
                    {(tp, int(p)): int(o) for tp, p, o in r.partitions},
                    {g for g, *_ in r.offsets},
                    {(g, tp, int(p)): (int(o), m) for g, tp, p, o, m in r.offsets},
                    # an Ongoing transaction's clock starts again: its timeout runs from the replay
                    started=now, started_ms=r.started_ms, last_update=now, fenced=tuple(r.fenced))
            self.txns[r.transactional_id] = t
        return [self._markers(t) for t in self.txns.values() if t.state in (PREPARE_COMMIT, PREPARE_ABORT)]

    # ------------------------------------------------------------------ queries

    def list_transactions(self, ref, now, states=None):
        rows = [{"transactional_id": t.transactional_id, "producer_id": t.producer_id, "state": t.state}
                for t in sorted(self.txns.values(), key=lambda t: t.transactional_id)
                if not states or t.state in states]
        return [Reply(ref, {"transactions": rows})]

    def describe_transactions(self, ref, transactional_ids, now):
        out = []
        for tid in transactional_ids:
            t = self.txns.get(tid)
            if t is None:
                out.append({"transactional_id": tid, "error": int(KafkaError.INVALID_PRODUCER_ID_MAPPING),
                            "message": f"no transactional id {tid!r}"})
            else:
                out.append(t.describe(now))
        return [Reply(ref, {"transactions": out})]

    def open_partitions(self):
        """(topic, partition) -> the lowest first-offset bound of the transactions open on it:
        each partition's first unstable offset (its last stable offset when below the high
        watermark). A transaction stays open until its markers are written."""
        out = {}
        for t in self.txns.values():
            if t.state in (ONGOING, PREPARE_COMMIT, PREPARE_ABORT):
                for tp, first in t.partitions.items():
                    out[tp] = min(first, out.get(tp, first))
        return out

    # ------------------------------------------------------------------ rules

    def _check(self, transactional_id, producer_id, producer_epoch, ending=False):
        if transactional_id in self.pending:
            return None, self._concurrent_pending(transactional_id)
        t = self.txns.get(transactional_id)
        if t is None or t.state == DEAD or t.producer_id != producer_id:
            return None, error_body(KafkaError.INVALID_PRODUCER_ID_MAPPING,
                                    f"transactional id {transactional_id!r} does not belong to producer id "
                                    f"{producer_id} (init_transactions first)")
        if producer_epoch != t.producer_epoch:
            return None, error_body(KafkaError.PRODUCER_FENCED,
                                    f"transactional id {transactional_id!r}: producer epoch {producer_epoch} is "
                                    f"fenced by epoch {t.producer_epoch} (another producer with this "
                                    f"transactional.id started, or the transaction timed out)")
        if not ending and t.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return None, self._concurrent(t)
        return t, None

    def _stage(self, t, then, refs, transactional_id=None):
        """Stage t (None: the id is deleted) as the id's next state: [Persist] now, `then` once
        it is written (persisted), error replies to `refs` if it is not (persist_failed)."""
        tid = t.transactional_id if t is not None else transactional_id
        self.pending[tid] = _Staged(t, tuple(then), tuple(refs))
        return [Persist(t.record() if t is not None else TxnRecord(tid, state=None))]

    def _begin(self, t, now, wall_ms):
        if t.state != ONGOING:
            self._clear(t)
            t.started, t.started_ms = now, wall_ms
        self._transition(t, "add")
        t.last_update = now

    def _abort(self, t, now, bump):
        """Make t PrepareAbort (bumping the epoch first when the producer is to be fenced); its markers."""
        fenced = ()
        if bump:
            fenced = (t.producer_id, t.producer_epoch)
            self._bump(t)
        self._transition(t, "abort")
        t.fenced, t.last_update = fenced, now
        return self._markers(t)

    def _bump(self, t):
        if t.producer_epoch >= MAX_EPOCH:
            t.producer_id, t.producer_epoch = self.new_producer_id(), 0
        else:
            t.producer_epoch += 1

    @staticmethod
    def _markers(t):
        commit = t.state == PREPARE_COMMIT
        return WriteMarkers(t.transactional_id, t.producer_id, t.producer_epoch, commit,
                            tuple((tp, p, o) for (tp, p), o in sorted(t.partitions.items())),
                            tuple((g, tp, p, o, m) for (g, tp, p), (o, m) in sorted(t.offsets.items()))
                            if commit else (), t.fenced if not commit else ())

    @staticmethod
    def _clear(t):
        t.partitions, t.groups, t.offsets, t.fenced = {}, set(), {}, ()

    @staticmethod
    def _ids(t):
        return {"producer_id": t.producer_id, "producer_epoch": t.producer_epoch}

    @staticmethod
    def _concurrent(t):
        return error_body(KafkaError.CONCURRENT_TRANSACTIONS,
                          f"transactional id {t.transactional_id!r} is completing a transaction ({t.state}); "
                          f"retry")

    def _concurrent_pending(self, transactional_id):
        return error_body(KafkaError.CONCURRENT_TRANSACTIONS,
                          f"transactional id {transactional_id!r} is writing a change of its state; retry")

    @staticmethod
    def _transition(t, event):
        nxt = TRANSITIONS.get((t.state, event))
        if nxt is None:
            raise InvalidTransition(f"transactional id {t.transactional_id!r}: no transition from {t.state} on {event}")
        t.state = nxt


# ---------------------------------------------------------------------------- the log

def encode_txn_record(r):
    """(key, value) of a TxnRecord in __transaction_state: JSON, value None deletes the id."""
    key = json.dumps([r.transactional_id]).encode()
    if r.state is None:
        return key, None
    return key, json.dumps({"producer_id": r.producer_id, "producer_epoch": r.producer_epoch,
                            "timeout_ms": r.timeout_ms, "state": r.state, "partitions": r.partitions,
                            "offsets": r.offsets, "started_ms": r.started_ms, "fenced": r.fenced}).encode()


def decode_txn_record(key, value):
    (tid,) = json.loads(key)
    if value is None:
        return TxnRecord(tid, state=None)
    v = json.loads(value)
    if v["state"] not in STATES:
        raise ValueError(f"unknown transaction state {v['state']!r}")
    return TxnRecord(tid, int(v["producer_id"]), int(v["producer_epoch"]), int(v["timeout_ms"]), v["state"],
                     tuple((str(t), int(p), int(o)) for t, p, o in v["partitions"]),
                     tuple((str(g), str(t), int(p), int(o), str(m)) for g, t, p, o, m in v["offsets"]),
                     int(v.get("started_ms", 0)), tuple(int(x) for x in v.get("fenced") or ()))


def txn_partition(transactional_id, partitions=TXN_TOPIC_PARTITIONS):
    """Which partition of __transaction_state holds an id: Kafka's abs(transactionalId.hashCode) % n."""
    h = java_string_hash(transactional_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions
