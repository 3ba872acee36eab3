"""A transactional producer's side of Kafka's transaction protocol (librdkafka's state machine).

    Init --init_transactions--> Ready --begin_transaction--> InTransaction
    InTransaction --commit_transaction / abort_transaction--> Ready
    any --abortable error--> AbortableError --abort_transaction--> Ready
    any --fenced (PRODUCER_FENCED) or fatal--> Fatal (every call raises; make a new producer)

The producer's records are appended by its C core with the transactional bit and the id and
epoch init_transactions got (ProducerCore._set_transactional). Before a record goes to a
partition for the first time in a transaction, the partition is added to the transaction
(add_partitions_to_txn), so the coordinator knows where its markers go and each partition's
last stable offset stays below the transaction's first record. Requests the coordinator
answers CONCURRENT_TRANSACTIONS (an earlier end still writing its markers), or that a
restarting supervisor did not answer, are sent again until the call's timeout: every one of
them is idempotent at the coordinator.

Errors are confluent-kafka's: KafkaException whose KafkaError says retriable() (try the call
again), txn_requires_abort() (abort_transaction(), then go on) or fatal() (this producer
instance is fenced or broken for good).
"""
import time

from shmlog.errors import KafkaError, KafkaException, error

INIT, READY, IN_TRANSACTION, COMMITTING, ABORTING, ABORTABLE_ERROR, FATAL = (
    "Init", "Ready", "InTransaction", "CommittingTransaction", "AbortingTransaction", "AbortableError", "Fatal")

# Answers that mean "send it again": the coordinator is finishing something, or the control
# channel dropped under a restarting supervisor (the next request reconnects).
_RETRY_CODES = {KafkaError.CONCURRENT_TRANSACTIONS, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TRANSPORT,
                KafkaError.COORDINATOR_LOAD_IN_PROGRESS}
_FENCED_CODES = {KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.INVALID_PRODUCER_ID_MAPPING}
RETRY_BACKOFF_S = 0.02
DEFAULT_TIMEOUT_S = 60.0


class Transactions:
    """The transactional state of one Producer (its `transactional.id`)."""

    def __init__(self, producer, transactional_id, timeout_ms):
        self.producer = producer
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.state = INIT
        self.producer_id, self.producer_epoch = -1, -1
        self.partitions = set()     # (topic, partition) added to the current transaction
        self.groups = set()         # consumer groups whose offsets it carries
        self.error = None           # the KafkaError that made it abortable or fatal

    # ------------------------------------------------------------------ requests

    def _request(self, op, deadline, **fields):
        """One coordinator request, sent again on a retriable answer until the deadline."""
        control = self.producer._cluster.control
        while True:
            try:
                return control.request(op, **fields)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() in _FENCED_CODES:
                    self._fatal(err)
                if err.code() not in _RETRY_CODES:
                    raise
                if time.monotonic() >= deadline:
                    raise error(KafkaError._TIMED_OUT, f"{op} for transactional.id {self.transactional_id!r} did "
                                f"not complete in time (last answer: {err.str()})", retriable=True) from None
            time.sleep(RETRY_BACKOFF_S)

    def _ids(self):
        return dict(transactional_id=self.transactional_id, producer_id=self.producer_id,
                    producer_epoch=self.producer_epoch)

    def _fatal(self, err):
        self.state = FATAL
        self.error = KafkaError(KafkaError._FENCED, f"producer fenced: transactional.id {self.transactional_id!r} "
                                f"is in use by a newer producer instance, or its transaction timed out "
                                f"({err.str()})", fatal=True)
        self.producer._producer_id = self.producer._producer_epoch = -1
        self.producer._locked(self.producer._set_transactional, -1, -1)   # nothing more is written as this instance
        raise KafkaException(self.error)

    def _require(self, call, *states):
        if self.state == FATAL:
            raise KafkaException(self.error)
        if self.state not in states:
            if self.state == ABORTABLE_ERROR:
                raise error(KafkaError._STATE, f"{call}(): the transaction failed ({self.error.str()}); "
                            f"call abort_transaction()", txn_requires_abort=True)
            raise error(KafkaError._STATE, f"{call}(): not allowed in transaction state {self.state}")

    @staticmethod
    def _deadline(timeout):
        return time.monotonic() + (DEFAULT_TIMEOUT_S if timeout is None or timeout < 0 else timeout)

    # ------------------------------------------------------------------ the calls

    def init(self, timeout):
        self._require("init_transactions", INIT)
        reply = self._request("init_producer_id", self._deadline(timeout), transactional_id=self.transactional_id,
                              transaction_timeout_ms=self.timeout_ms)
        self.producer_id, self.producer_epoch = reply["producer_id"], reply["producer_epoch"]
        self.producer._producer_id, self.producer._producer_epoch = self.producer_id, self.producer_epoch
        self.producer._locked(self.producer._set_transactional, self.producer_id, self.producer_epoch)
        self.state = READY

    def begin(self):
        self._require("begin_transaction", READY)
        self.partitions.clear()
        self.groups.clear()
        self.error = None
        self.state = IN_TRANSACTION

    def producing(self):
        """Whether records may be produced now (inside a transaction)."""
        return self.state == IN_TRANSACTION

    def producing_refused(self, call):
        """The KafkaError for producing outside a transaction (librdkafka's _STATE)."""
        if self.state == FATAL:
            return self.error
        return KafkaError(KafkaError._STATE, f"{call}(): producing is not allowed in transaction state "
                          f"{self.state} (begin_transaction() first)", txn_requires_abort=self.state == ABORTABLE_ERROR)

    def before_produce(self, topic, partition):
        """A record is about to be queued for topic-partition: add it to the transaction first."""
        if self.state != IN_TRANSACTION:
            self._require("produce", IN_TRANSACTION)
        if (topic, partition) in self.partitions:
            return
        try:
            self._request("add_partitions_to_txn", self._deadline(None), partitions=[[topic, partition]],
                          **self._ids())
        except KafkaException as exc:
            if not exc.args[0].fatal():
                self.abortable(exc.args[0])
            raise
        self.partitions.add((topic, partition))

    def abortable(self, err):
        """A failure inside the transaction (a delivery that failed, a refused request)."""
        if self.state in (IN_TRANSACTION, COMMITTING):
            self.state = ABORTABLE_ERROR
            self.error = KafkaError(err.code(), err.str(), txn_requires_abort=True)

    def send_offsets(self, offsets, group_metadata, timeout):
        self._require("send_offsets_to_transaction", IN_TRANSACTION)
        group = getattr(group_metadata, "group_id", None)
        if not isinstance(group, str) or not group:
            raise error(KafkaError._INVALID_ARG, "send_offsets_to_transaction(): group_metadata must be "
                        "consumer.consumer_group_metadata()")
        wire = []
        for tp in offsets:
            if tp.offset < 0:
                raise error(KafkaError._INVALID_ARG, f"send_offsets_to_transaction(): {tp.topic}-{tp.partition} "
                            f"has no valid offset ({tp.offset})")
            wire.append([tp.topic, tp.partition, tp.offset, getattr(tp, "metadata", None) or ""])
        if not wire:
            return
        deadline = self._deadline(timeout)
        try:
            if group not in self.groups:
                self._request("add_offsets_to_txn", deadline, group=group, **self._ids())
                self.groups.add(group)
            self._request("txn_offset_commit", deadline, group=group, offsets=wire,
                          generation=getattr(group_metadata, "generation_id", -1),
                          member_id=getattr(group_metadata, "member_id", "") or "",
                          instance_id=getattr(group_metadata, "group_instance_id", None), **self._ids())
        except KafkaException as exc:
            if not exc.args[0].fatal() and not exc.args[0].retriable():
                self.abortable(exc.args[0])
            raise

    def commit(self, timeout):
        self._require("commit_transaction", IN_TRANSACTION, COMMITTING)
        deadline = self._deadline(timeout)
        self.state = COMMITTING
        while True:
            # flush() can come back early while the linger thread still holds batches it is
            # appending: flush again until nothing is queued, a delivery failed, or time is up.
            left = self.producer.flush(max(0.0, deadline - time.monotonic()))
            if not left or self.state == ABORTABLE_ERROR or time.monotonic() >= deadline:
                break
            time.sleep(RETRY_BACKOFF_S / 4)
        if self.state == ABORTABLE_ERROR:     # a delivery failed while flushing
            raise KafkaException(self.error)
        if left:
            self.state = IN_TRANSACTION       # the commit can be called again once they are delivered
            raise error(KafkaError._TIMED_OUT, f"commit_transaction(): {left} records not yet delivered",
                        retriable=True)
        if self.partitions or self.groups:
            try:
                self._request("end_txn", deadline, commit=True, **self._ids())
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable():
                    self.state = IN_TRANSACTION
                elif not err.fatal():
                    self.abortable(err)
                raise
        self.state = READY

    def abort(self, timeout):
        self._require("abort_transaction", IN_TRANSACTION, ABORTABLE_ERROR, COMMITTING, ABORTING)
        deadline = self._deadline(timeout)
        self.state = ABORTING
        self.producer.purge(in_queue=True, in_flight=False)
        self.producer.flush(max(0.0, deadline - time.monotonic()))
        if self.partitions or self.groups:
            self._request("end_txn", deadline, commit=False, **self._ids())
        self.state = READY
