"""KafkaError and KafkaException, with confluent-kafka's codes and accessors.

Codes are librdkafka's numbers: negative ones are client-local (`_TIMED_OUT`),
non-negative ones are Kafka protocol errors (`MSG_SIZE_TOO_LARGE` = 10), so code
that switches on `err.code()` behaves the same after a move to confluent-kafka.
"""

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
    "KAFKA_STORAGE_ERROR": 56, "LOG_DIR_NOT_FOUND": 57,
    "NON_EMPTY_GROUP": 68, "GROUP_ID_NOT_FOUND": 69, "TOPIC_DELETION_DISABLED": 73,
    "FENCED_INSTANCE_ID": 82, "PRODUCER_FENCED": 90, "UNKNOWN_TOPIC_ID": 100,
}

_NAME_BY_CODE = {code: name for name, code in {**_LOCAL_CODES, **_BROKER_CODES}.items()}

_FATAL_CODES = {_LOCAL_CODES["_FATAL"], _BROKER_CODES["INVALID_PRODUCER_EPOCH"], _BROKER_CODES["PRODUCER_FENCED"]}
_RETRIABLE_CODES = {
    _LOCAL_CODES["_TIMED_OUT"], _LOCAL_CODES["_QUEUE_FULL"],
    _BROKER_CODES["LEADER_NOT_AVAILABLE"], _BROKER_CODES["NOT_ENOUGH_REPLICAS"],
    _BROKER_CODES["REQUEST_TIMED_OUT"], _BROKER_CODES["COORDINATOR_NOT_AVAILABLE"],
    _BROKER_CODES["KAFKA_STORAGE_ERROR"], _BROKER_CODES["CONCURRENT_TRANSACTIONS"],
}


class KafkaError:
    """An error code with a human-readable reason, as confluent_kafka.KafkaError."""

    __slots__ = ("_code", "_reason", "_fatal", "_retriable", "_txn_requires_abort")

    def __init__(self, error, reason=None, fatal=False, retriable=None,
                 txn_requires_abort=False):
        self._code = int(error)
        self._reason = reason if reason is not None else self.name()
        self._fatal = bool(fatal) or self._code in _FATAL_CODES
        self._retriable = (self._code in _RETRIABLE_CODES) if retriable is None else bool(retriable)
        self._txn_requires_abort = bool(txn_requires_abort)

    def code(self):
        return self._code

    def name(self):
        return _NAME_BY_CODE.get(self._code, f"ERR_{self._code}")

    def str(self):
        return self._reason

    def fatal(self):
        return self._fatal

    def retriable(self):
        return self._retriable

    def txn_requires_abort(self):
        return self._txn_requires_abort

    def __str__(self):   # confluent-kafka prints the same form for str() and repr(); .str() is the reason
        return f"KafkaError{{code={self.name()},val={self._code},str=\"{self._reason}\"}}"

    __repr__ = __str__

    def __eq__(self, other):
        if isinstance(other, KafkaError):
            return self._code == other._code
        if isinstance(other, int):
            return self._code == other
        return NotImplemented

    def __hash__(self):
        return hash(self._code)


for _name, _code in {**_LOCAL_CODES, **_BROKER_CODES}.items():
    setattr(KafkaError, _name, _code)


class KafkaException(Exception):
    """Raised with a KafkaError as its first argument, as confluent_kafka.KafkaException."""

    def __init__(self, *args, **kwargs):
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            args = (KafkaError(args[0], *args[1:], **kwargs),)
        super().__init__(*args)

    def __str__(self):
        # The KafkaError's reason text (confluent-kafka prints KafkaError{...} here): shmlog's own
        # messages nest str(exc) in theirs (docs/compatibility.md, "Printed forms").
        if not self.args:
            return ""
        return self.args[0].str() if isinstance(self.args[0], KafkaError) else str(self.args[0])


def error(code, reason, **kwargs):
    """A KafkaException carrying KafkaError(code, reason): the one way we raise."""
    return KafkaException(KafkaError(code, reason, **kwargs))
