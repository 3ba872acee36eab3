"""Well-formed control requests, one or more for every op, as the clients send them
(shmlog/client/*, shmlog/control.py, the persister): the seed of the control-channel fuzz
test and of the schema's unit tests. They name the topic FUZZ_TOPIC and the group FUZZ_GROUP;
requests that would change a lot are validate_only or aimed at names that do not exist."""
import copy

FUZZ_TOPIC = "fuzz"
FUZZ_GROUP = "fuzz-group"

CORPUS = [
    {"op": "register", "kind": "producer", "pid": 1},
    {"op": "register", "kind": "persister", "pid": 1},
    {"op": "metadata"},
    {"op": "metadata", "auto_create": ["fuzz-auto"]},
    {"op": "replica_failed"},
    {"op": "create_topics", "topics": [{"topic": "fuzz-new", "num_partitions": 1, "config": {"ring.bytes": "65536"},
                                       "replication_factor": 1, "replica_assignment": None}],
     "validate_only": True},
    {"op": "delete_topics", "topics": ["fuzz-never-created"]},
    {"op": "create_partitions", "topics": [{"topic": FUZZ_TOPIC, "new_total_count": 2, "replica_assignment": [[0]]}],
     "validate_only": True},
    {"op": "alter_configs", "topics": {FUZZ_TOPIC: {"retention.ms": "600000"}}, "validate_only": True},
    {"op": "delete_records", "partitions": [{"topic": FUZZ_TOPIC, "partition": 0, "offset": 0}]},
    {"op": "alter_replica_log_dirs", "moves": [[FUZZ_TOPIC, 0, 1, 0]]},
    {"op": "status"},
    {"op": "push_telemetry", "metrics": [["streams_step_records_in_total", {"application": "fuzz", "step": "s"}, 1]]},
    {"op": "shutdown"},
    {"op": "describe_cluster"},
    {"op": "init_producer_id", "transactional_id": None, "transaction_timeout_ms": 60000},
    {"op": "describe_producers", "partitions": [[FUZZ_TOPIC, 0]]},
    {"op": "describe_configs", "topics": [FUZZ_TOPIC]},
    {"op": "incremental_alter_configs",
     "topics": {FUZZ_TOPIC: [["retention.ms", 0, "600000"], ["segment.ms", 1, None]]}, "validate_only": True},
    {"op": "join_group", "group": FUZZ_GROUP, "member_id": "", "instance_id": None, "client_id": "fuzz",
     "protocols": ["range"], "subscription": [FUZZ_TOPIC], "owned": [], "session_timeout_ms": 10000,
     "rebalance_timeout_ms": 10000},
    {"op": "sync_group", "group": FUZZ_GROUP, "member_id": "m", "instance_id": None, "generation": 1},
    {"op": "heartbeat", "group": FUZZ_GROUP, "member_id": "m", "instance_id": None, "generation": 1},
    {"op": "leave_group", "group": FUZZ_GROUP, "member_id": "m", "instance_id": None},
    {"op": "offset_commit", "group": FUZZ_GROUP, "offsets": [[FUZZ_TOPIC, 0, 0, ""]], "member_id": "",
     "generation": -1, "instance_id": None},
    {"op": "offset_fetch", "group": FUZZ_GROUP, "partitions": [[FUZZ_TOPIC, 0]]},
    {"op": "offset_fetch", "group": FUZZ_GROUP, "partitions": None, "log_end": True},
    {"op": "list_groups"},
    {"op": "describe_groups", "groups": [FUZZ_GROUP]},
    {"op": "delete_groups", "groups": ["fuzz-never-created-group"]},
    {"op": "init_producer_id", "transactional_id": "fuzz-txn", "transaction_timeout_ms": 60000},
    {"op": "add_partitions_to_txn", "transactional_id": "fuzz-txn-never", "producer_id": 1, "producer_epoch": 0,
     "partitions": [[FUZZ_TOPIC, 0]]},
    {"op": "add_offsets_to_txn", "transactional_id": "fuzz-txn-never", "producer_id": 1, "producer_epoch": 0,
     "group": FUZZ_GROUP},
    {"op": "txn_offset_commit", "transactional_id": "fuzz-txn-never", "producer_id": 1, "producer_epoch": 0,
     "group": FUZZ_GROUP, "offsets": [[FUZZ_TOPIC, 0, 0, ""]], "generation": -1, "member_id": "", "instance_id": None},
    {"op": "end_txn", "transactional_id": "fuzz-txn-never", "producer_id": 1, "producer_epoch": 0, "commit": False},
    {"op": "list_transactions", "states": []},
    {"op": "describe_transactions", "transactional_ids": ["fuzz-txn"]},
    {"op": "abort_transaction", "transactional_id": "fuzz-txn-never"},
]

# Answered later, or not at all while the group rebalances: not waited for one by one.
DEFERRED_OPS = frozenset({"join_group", "sync_group"})


def corpus():
    """A fresh copy (tests mutate what they get)."""
    return copy.deepcopy(CORPUS)
