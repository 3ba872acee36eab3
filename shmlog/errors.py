"""KafkaError and KafkaException, with confluent-kafka's codes and accessors.

Codes are librdkafka's numbers: negative ones are client-local (`_TIMED_OUT`),
non-negative ones are Kafka protocol errors (`MSG_SIZE_TOO_LARGE` = 10), so code
that switches on `err.code()` behaves the same after a move to confluent-kafka.
"""
from __future__ import annotations

import builtins
from typing import Any

_LOCAL_CODES = {
    "_BAD_MSG": -199, "_BAD_COMPRESSION": -198, "_DESTROY": -197, "_FAIL": -196,
    "_TRANSPORT": -195, "_CRIT_SYS_RESOURCE": -194, "_RESOLVE": -193,
    "_MSG_TIMED_OUT": -192, "_PARTITION_EOF": -191, "_UNKNOWN_PARTITION": -190,
    "_FS": -189, "_UNKNOWN_TOPIC": -188, "_ALL_BROKERS_DOWN": -187,
    "_INVALID_ARG": -186, "_TIMED_OUT": -185, "_QUEUE_FULL": -184,
    "_ISR_INSUFF": -183, "_NODE_UPDATE": -182, "_SSL": -181, "_WAIT_COORD": -180,
    "_UNKNOWN_GROUP": -179, "_IN_PROGRESS": -178, "_PREV_IN_PROGRESS": -177,
    "_EXISTING_SUBSCRIPTION": -176, "_ASSIGN_PARTITIONS": -175,
    "_REVOKE_PARTITIONS": -174, "_CONFLICT": -173, "_STATE": -172,
    "_UNKNOWN_PROTOCOL": -171, "_NOT_IMPLEMENTED": -170, "_AUTHENTICATION": -169,
    "_NO_OFFSET": -168, "_OUTDATED": -167, "_TIMED_OUT_QUEUE": -166,
    "_UNSUPPORTED_FEATURE": -165, "_WAIT_CACHE": -164, "_INTR": -163,
    "_KEY_SERIALIZATION": -162, "_VALUE_SERIALIZATION": -161,
    "_KEY_DESERIALIZATION": -160, "_VALUE_DESERIALIZATION": -159,
    "_PARTIAL": -158, "_READ_ONLY": -157, "_NOENT": -156, "_UNDERFLOW": -155,
    "_INVALID_TYPE": -154, "_RETRY": -153, "_PURGE_QUEUE": -152,
    "_PURGE_INFLIGHT": -151, "_FATAL": -150, "_INCONSISTENT": -149,
    "_GAPLESS_GUARANTEE": -148, "_MAX_POLL_EXCEEDED": -147,
    "_UNKNOWN_BROKER": -146, "_NOT_CONFIGURED": -145, "_FENCED": -144,
    "_APPLICATION": -143, "_ASSIGNMENT_LOST": -142, "_NOOP": -141,
    "_AUTO_OFFSET_RESET": -140, "_LOG_TRUNCATION": -139,
}

_BROKER_CODES = {
    "UNKNOWN": -1, "NO_ERROR": 0, "OFFSET_OUT_OF_RANGE": 1, "INVALID_MSG": 2,
    "UNKNOWN_TOPIC_OR_PART": 3, "INVALID_MSG_SIZE": 4, "LEADER_NOT_AVAILABLE": 5,
    "NOT_LEADER_FOR_PARTITION": 6, "REQUEST_TIMED_OUT": 7,
    "BROKER_NOT_AVAILABLE": 8, "REPLICA_NOT_AVAILABLE": 9,
    "MSG_SIZE_TOO_LARGE": 10, "STALE_CTRL_EPOCH": 11,
    "OFFSET_METADATA_TOO_LARGE": 12, "NETWORK_EXCEPTION": 13,
    "COORDINATOR_LOAD_IN_PROGRESS": 14, "COORDINATOR_NOT_AVAILABLE": 15,
    "NOT_COORDINATOR": 16, "TOPIC_EXCEPTION": 17, "RECORD_LIST_TOO_LARGE": 18,
    "NOT_ENOUGH_REPLICAS": 19, "NOT_ENOUGH_REPLICAS_AFTER_APPEND": 20,
    "INVALID_REQUIRED_ACKS": 21, "ILLEGAL_GENERATION": 22,
    "INCONSISTENT_GROUP_PROTOCOL": 23, "INVALID_GROUP_ID": 24,
    "UNKNOWN_MEMBER_ID": 25, "INVALID_SESSION_TIMEOUT": 26,
    "REBALANCE_IN_PROGRESS": 27, "INVALID_COMMIT_OFFSET_SIZE": 28,
    "CLUSTER_AUTHORIZATION_FAILED": 31, "INVALID_TIMESTAMP": 32, "UNSUPPORTED_VERSION": 35,
    "TOPIC_ALREADY_EXISTS": 36, "INVALID_PARTITIONS": 37,
    "INVALID_REPLICATION_FACTOR": 38, "INVALID_REPLICA_ASSIGNMENT": 39,
    "INVALID_CONFIG": 40, "NOT_CONTROLLER": 41, "INVALID_REQUEST": 42,
    "POLICY_VIOLATION": 44, "OUT_OF_ORDER_SEQUENCE_NUMBER": 45,
    "DUPLICATE_SEQUENCE_NUMBER": 46, "INVALID_PRODUCER_EPOCH": 47,
    "INVALID_TXN_STATE": 48, "INVALID_PRODUCER_ID_MAPPING": 49,
    "INVALID_TRANSACTION_TIMEOUT": 50, "CONCURRENT_TRANSACTIONS": 51,
    "KAFKA_STORAGE_ERROR": 56, "LOG_DIR_NOT_FOUND": 57, "UNKNOWN_PRODUCER_ID": 59,
    "NON_EMPTY_GROUP": 68, "GROUP_ID_NOT_FOUND": 69, "TOPIC_DELETION_DISABLED": 73,
    "FENCED_INSTANCE_ID": 82, "PRODUCER_FENCED": 90, "UNKNOWN_TOPIC_ID": 100,
}

_NAME_BY_CODE = {code: name for name, code in {**_LOCAL_CODES, **_BROKER_CODES}.items()}

# librdkafka's text for each code (rd_kafka_err2str), what a KafkaError made without a reason says.
_TEXT_BY_NAME = {
    "_BAD_MSG": "Local: Bad message format", "_BAD_COMPRESSION": "Local: Invalid compressed data",
    "_DESTROY": "Local: Broker handle destroyed for termination",
    "_FAIL": "Local: Communication failure with broker", "_TRANSPORT": "Local: Broker transport failure",
    "_CRIT_SYS_RESOURCE": "Local: Critical system resource failure", "_RESOLVE": "Local: Host resolution failure",
    "_MSG_TIMED_OUT": "Local: Message timed out", "_PARTITION_EOF": "Broker: No more messages",
    "_UNKNOWN_PARTITION": "Local: Unknown partition", "_FS": "Local: File or filesystem error",
    "_UNKNOWN_TOPIC": "Local: Unknown topic", "_ALL_BROKERS_DOWN": "Local: All broker connections are down",
    "_INVALID_ARG": "Local: Invalid argument or configuration", "_TIMED_OUT": "Local: Timed out",
    "_QUEUE_FULL": "Local: Queue full", "_ISR_INSUFF": "Local: ISR count insufficient",
    "_NODE_UPDATE": "Local: Broker node update", "_SSL": "Local: SSL error",
    "_WAIT_COORD": "Local: Waiting for coordinator", "_UNKNOWN_GROUP": "Local: Unknown group",
    "_IN_PROGRESS": "Local: Operation in progress", "_PREV_IN_PROGRESS": "Local: Previous operation in progress",
    "_EXISTING_SUBSCRIPTION": "Local: Existing subscription", "_ASSIGN_PARTITIONS": "Local: Assign partitions",
    "_REVOKE_PARTITIONS": "Local: Revoke partitions", "_CONFLICT": "Local: Conflicting use",
    "_STATE": "Local: Erroneous state", "_UNKNOWN_PROTOCOL": "Local: Unknown protocol",
    "_NOT_IMPLEMENTED": "Local: Not implemented", "_AUTHENTICATION": "Local: Authentication failure",
    "_NO_OFFSET": "Local: No offset stored", "_OUTDATED": "Local: Outdated",
    "_TIMED_OUT_QUEUE": "Local: Timed out in queue",
    "_UNSUPPORTED_FEATURE": "Local: Required feature not supported by broker",
    "_WAIT_CACHE": "Local: Awaiting cache update", "_INTR": "Local: Operation interrupted",
    "_KEY_SERIALIZATION": "Local: Key serialization error",
    "_VALUE_SERIALIZATION": "Local: Value serialization error",
    "_KEY_DESERIALIZATION": "Local: Key deserialization error",
    "_VALUE_DESERIALIZATION": "Local: Value deserialization error", "_PARTIAL": "Local: Partial response",
    "_READ_ONLY": "Local: Read-only object", "_NOENT": "Local: No such entry", "_UNDERFLOW": "Local: Read underflow",
    "_INVALID_TYPE": "Local: Invalid type", "_RETRY": "Local: Retry operation",
    "_PURGE_QUEUE": "Local: Purged in queue", "_PURGE_INFLIGHT": "Local: Purged in flight",
    "_FATAL": "Local: Fatal error", "_INCONSISTENT": "Local: Inconsistent state",
    "_GAPLESS_GUARANTEE": "Local: Gap-less ordering would not be guaranteed if proceeding",
    "_MAX_POLL_EXCEEDED": "Local: Maximum application poll interval (max.poll.interval.ms) exceeded",
    "_UNKNOWN_BROKER": "Local: Unknown broker", "_NOT_CONFIGURED": "Local: Functionality not configured",
    "_FENCED": "Local: This instance has been fenced by a newer instance",
    "_APPLICATION": "Local: Application generated error",
    "_ASSIGNMENT_LOST": "Local: Group partition assignment lost", "_NOOP": "Local: No operation performed",
    "_AUTO_OFFSET_RESET": "Local: No offset to automatically reset to",
    "_LOG_TRUNCATION": "Local: Partition log truncation detected", "UNKNOWN": "Unknown broker error",
    "NO_ERROR": "Success", "OFFSET_OUT_OF_RANGE": "Broker: Offset out of range",
    "INVALID_MSG": "Broker: Invalid message", "UNKNOWN_TOPIC_OR_PART": "Broker: Unknown topic or partition",
    "INVALID_MSG_SIZE": "Broker: Invalid message size", "LEADER_NOT_AVAILABLE": "Broker: Leader not available",
    "NOT_LEADER_FOR_PARTITION": "Broker: Not leader for partition", "REQUEST_TIMED_OUT": "Broker: Request timed out",
    "BROKER_NOT_AVAILABLE": "Broker: Broker not available", "REPLICA_NOT_AVAILABLE": "Broker: Replica not available",
    "MSG_SIZE_TOO_LARGE": "Broker: Message size too large", "STALE_CTRL_EPOCH": "Broker: StaleControllerEpochCode",
    "OFFSET_METADATA_TOO_LARGE": "Broker: Offset metadata string too large",
    "NETWORK_EXCEPTION": "Broker: Broker disconnected before response received",
    "COORDINATOR_LOAD_IN_PROGRESS": "Broker: Coordinator load in progress",
    "COORDINATOR_NOT_AVAILABLE": "Broker: Coordinator not available", "NOT_COORDINATOR": "Broker: Not coordinator",
    "TOPIC_EXCEPTION": "Broker: Invalid topic",
    "RECORD_LIST_TOO_LARGE": "Broker: Message batch larger than configured server segment size",
    "NOT_ENOUGH_REPLICAS": "Broker: Not enough in-sync replicas",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND": "Broker: Message(s) written to insufficient number of in-sync replicas",
    "INVALID_REQUIRED_ACKS": "Broker: Invalid required acks value",
    "ILLEGAL_GENERATION": "Broker: Specified group generation id is not valid",
    "INCONSISTENT_GROUP_PROTOCOL": "Broker: Inconsistent group protocol",
    "INVALID_GROUP_ID": "Broker: Invalid group.id", "UNKNOWN_MEMBER_ID": "Broker: Unknown member",
    "INVALID_SESSION_TIMEOUT": "Broker: Invalid session timeout",
    "REBALANCE_IN_PROGRESS": "Broker: Group rebalance in progress",
    "INVALID_COMMIT_OFFSET_SIZE": "Broker: Commit offset data size is not valid",
    "CLUSTER_AUTHORIZATION_FAILED": "Broker: Cluster authorization failed",
    "INVALID_TIMESTAMP": "Broker: Invalid timestamp", "UNSUPPORTED_VERSION": "Broker: API version not supported",
    "TOPIC_ALREADY_EXISTS": "Broker: Topic already exists",
    "INVALID_PARTITIONS": "Broker: Invalid number of partitions",
    "INVALID_REPLICATION_FACTOR": "Broker: Invalid replication factor",
    "INVALID_REPLICA_ASSIGNMENT": "Broker: Invalid replica assignment",
    "INVALID_CONFIG": "Broker: Configuration is invalid", "NOT_CONTROLLER": "Broker: Not controller for cluster",
    "INVALID_REQUEST": "Broker: Invalid request", "POLICY_VIOLATION": "Broker: Policy violation",
    "OUT_OF_ORDER_SEQUENCE_NUMBER": "Broker: Broker received an out of order sequence number",
    "DUPLICATE_SEQUENCE_NUMBER": "Broker: Broker received a duplicate sequence number",
    "INVALID_PRODUCER_EPOCH": "Broker: Producer attempted an operation with an old epoch",
    "INVALID_TXN_STATE": "Broker: Producer attempted a transactional operation in an invalid state",
    "CONCURRENT_TRANSACTIONS": "Broker: Producer attempted to update a transaction"
    " while another concurrent operation on the same transaction was ongoing",
    "KAFKA_STORAGE_ERROR": "Broker: Disk error when trying to access log file on disk",
    "LOG_DIR_NOT_FOUND": "Broker: The user-specified log directory is not found in the broker config",
    "UNKNOWN_PRODUCER_ID": "Broker: Unknown Producer Id",
    "NON_EMPTY_GROUP": "Broker: The group is not empty", "GROUP_ID_NOT_FOUND": "Broker: The group id does not exist",
    "TOPIC_DELETION_DISABLED": "Broker: Topic deletion is disabled",
    "FENCED_INSTANCE_ID": "Broker: Static consumer fenced by other consumer with same group.instance.id",
    "UNKNOWN_TOPIC_ID": "Broker: Unknown topic id",
    "INVALID_PRODUCER_ID_MAPPING": "Broker: Producer attempted to use a producer id which is not currently "
    "assigned to its transactional id",
    "INVALID_TRANSACTION_TIMEOUT": "Broker: Transaction timeout is larger than the maximum value allowed by "
    "the broker's max.transaction.timeout.ms",
    "PRODUCER_FENCED": "Broker: There is a newer producer with the same transactionalId which fences the "
    "current one",
}
_TEXT_BY_CODE = {_LOCAL_CODES.get(name, _BROKER_CODES.get(name)): text for name, text in _TEXT_BY_NAME.items()}

_FATAL_CODES = {_LOCAL_CODES["_FATAL"], _BROKER_CODES["INVALID_PRODUCER_EPOCH"], _BROKER_CODES["PRODUCER_FENCED"]}
_RETRIABLE_CODES = {
    _LOCAL_CODES["_TIMED_OUT"], _LOCAL_CODES["_QUEUE_FULL"],
    _BROKER_CODES["LEADER_NOT_AVAILABLE"], _BROKER_CODES["NOT_ENOUGH_REPLICAS"],
    _BROKER_CODES["REQUEST_TIMED_OUT"], _BROKER_CODES["COORDINATOR_NOT_AVAILABLE"],
    _BROKER_CODES["KAFKA_STORAGE_ERROR"], _BROKER_CODES["CONCURRENT_TRANSACTIONS"],
}


class KafkaError:
    """An error code with a human-readable reason, as confluent_kafka.KafkaError."""

    _BAD_MSG: int
    _BAD_COMPRESSION: int
    _DESTROY: int
    _FAIL: int
    _TRANSPORT: int
    _CRIT_SYS_RESOURCE: int
    _RESOLVE: int
    _MSG_TIMED_OUT: int
    _PARTITION_EOF: int
    _UNKNOWN_PARTITION: int
    _FS: int
    _UNKNOWN_TOPIC: int
    _ALL_BROKERS_DOWN: int
    _INVALID_ARG: int
    _TIMED_OUT: int
    _QUEUE_FULL: int
    _ISR_INSUFF: int
    _NODE_UPDATE: int
    _SSL: int
    _WAIT_COORD: int
    _UNKNOWN_GROUP: int
    _IN_PROGRESS: int
    _PREV_IN_PROGRESS: int
    _EXISTING_SUBSCRIPTION: int
    _ASSIGN_PARTITIONS: int
    _REVOKE_PARTITIONS: int
    _CONFLICT: int
    _STATE: int
    _UNKNOWN_PROTOCOL: int
    _NOT_IMPLEMENTED: int
    _AUTHENTICATION: int
    _NO_OFFSET: int
    _OUTDATED: int
    _TIMED_OUT_QUEUE: int
    _UNSUPPORTED_FEATURE: int
    _WAIT_CACHE: int
    _INTR: int
    _KEY_SERIALIZATION: int
    _VALUE_SERIALIZATION: int
    _KEY_DESERIALIZATION: int
    _VALUE_DESERIALIZATION: int
    _PARTIAL: int
    _READ_ONLY: int
    _NOENT: int
    _UNDERFLOW: int
    _INVALID_TYPE: int
    _RETRY: int
    _PURGE_QUEUE: int
    _PURGE_INFLIGHT: int
    _FATAL: int
    _INCONSISTENT: int
    _GAPLESS_GUARANTEE: int
    _MAX_POLL_EXCEEDED: int
    _UNKNOWN_BROKER: int
    _NOT_CONFIGURED: int
    _FENCED: int
    _APPLICATION: int
    _ASSIGNMENT_LOST: int
    _NOOP: int
    _AUTO_OFFSET_RESET: int
    _LOG_TRUNCATION: int
    UNKNOWN: int
    NO_ERROR: int
    OFFSET_OUT_OF_RANGE: int
    INVALID_MSG: int
    UNKNOWN_TOPIC_OR_PART: int
    INVALID_MSG_SIZE: int
    LEADER_NOT_AVAILABLE: int
    NOT_LEADER_FOR_PARTITION: int
    REQUEST_TIMED_OUT: int
    BROKER_NOT_AVAILABLE: int
    REPLICA_NOT_AVAILABLE: int
    MSG_SIZE_TOO_LARGE: int
    STALE_CTRL_EPOCH: int
    OFFSET_METADATA_TOO_LARGE: int
    NETWORK_EXCEPTION: int
    COORDINATOR_LOAD_IN_PROGRESS: int
    COORDINATOR_NOT_AVAILABLE: int
    NOT_COORDINATOR: int
    TOPIC_EXCEPTION: int
    RECORD_LIST_TOO_LARGE: int
    NOT_ENOUGH_REPLICAS: int
    NOT_ENOUGH_REPLICAS_AFTER_APPEND: int
    INVALID_REQUIRED_ACKS: int
    ILLEGAL_GENERATION: int
    INCONSISTENT_GROUP_PROTOCOL: int
    INVALID_GROUP_ID: int
    UNKNOWN_MEMBER_ID: int
    INVALID_SESSION_TIMEOUT: int
    REBALANCE_IN_PROGRESS: int
    INVALID_COMMIT_OFFSET_SIZE: int
    CLUSTER_AUTHORIZATION_FAILED: int
    INVALID_TIMESTAMP: int
    UNSUPPORTED_VERSION: int
    TOPIC_ALREADY_EXISTS: int
    INVALID_PARTITIONS: int
    INVALID_REPLICATION_FACTOR: int
    INVALID_REPLICA_ASSIGNMENT: int
    INVALID_CONFIG: int
    NOT_CONTROLLER: int
    INVALID_REQUEST: int
    POLICY_VIOLATION: int
    OUT_OF_ORDER_SEQUENCE_NUMBER: int
    DUPLICATE_SEQUENCE_NUMBER: int
    INVALID_PRODUCER_EPOCH: int
    INVALID_TXN_STATE: int
    CONCURRENT_TRANSACTIONS: int
    KAFKA_STORAGE_ERROR: int
    LOG_DIR_NOT_FOUND: int
    UNKNOWN_PRODUCER_ID: int
    NON_EMPTY_GROUP: int
    GROUP_ID_NOT_FOUND: int
    TOPIC_DELETION_DISABLED: int
    FENCED_INSTANCE_ID: int
    UNKNOWN_TOPIC_ID: int
    INVALID_PRODUCER_ID_MAPPING: int
    INVALID_TRANSACTION_TIMEOUT: int
    PRODUCER_FENCED: int


    __slots__ = ("_code", "_reason", "_fatal", "_retriable", "_txn_requires_abort")

    def __init__(self, error: int, reason: str | None = None, fatal: bool = False, retriable: bool | None = None,
                 txn_requires_abort: bool = False) -> None:
        self._code = int(error)
        self._reason = reason if reason is not None else _TEXT_BY_CODE.get(self._code, f"Err-{self._code}?")
        self._fatal = bool(fatal) or self._code in _FATAL_CODES
        self._retriable = (self._code in _RETRIABLE_CODES) if retriable is None else bool(retriable)
        self._txn_requires_abort = bool(txn_requires_abort)

    def code(self) -> int:
        return self._code

    def name(self) -> builtins.str:
        return _NAME_BY_CODE.get(self._code, f"ERR_{self._code}")

    def str(self) -> builtins.str:
        return self._reason

    def fatal(self) -> bool:
        return self._fatal

    def retriable(self) -> bool:
        return self._retriable

    def txn_requires_abort(self) -> bool:
        return self._txn_requires_abort

    # confluent-kafka prints the same form for str() and repr(); .str() is the reason
    def __str__(self) -> builtins.str:
        fatal = "FATAL," if self._fatal else ""
        return f"KafkaError{{{fatal}code={self.name()},val={self._code},str=\"{self._reason}\"}}"

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KafkaError):
            return self._code == other._code
        if isinstance(other, int):
            return self._code == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._code)


for _name, _code in {**_LOCAL_CODES, **_BROKER_CODES}.items():
    setattr(KafkaError, _name, _code)


class KafkaException(Exception):
    """Raised with a KafkaError as its first argument, as confluent_kafka.KafkaException."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            args = (KafkaError(args[0], *args[1:], **kwargs),)
        super().__init__(*args)

    # str() is Exception's, as confluent-kafka's: str(args[0]), the KafkaError{...} form. What a
    # person is shown is the reason alone: reason_of(exc).


def reason_of(exc: BaseException | KafkaError) -> str:
    """What an exception says to a person: a KafkaException's KafkaError reason (`.str()`, one
    line without the KafkaError{...} wrapping), else str(exc)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].str()
    if isinstance(exc, KafkaError):
        return exc.str()
    return str(exc)


def error(code: int, reason: str, **kwargs: Any) -> KafkaException:
    """A KafkaException carrying KafkaError(code, reason): the one way we raise."""
    return KafkaException(KafkaError(code, reason, **kwargs))
