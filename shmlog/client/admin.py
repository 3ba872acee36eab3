"""AdminClient: topic and consumer-group management returning futures, as confluent-kafka does."""
from __future__ import annotations

import concurrent.futures
import enum
import functools
import struct
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from shmlog.client.cluster import connect
from shmlog.config import _TOPIC_DEFAULT_FROM_BROKER, INTERNAL_TOPICS, parse_admin_config, topic_name_problem
from shmlog.errors import KafkaError, KafkaException, error, reason_of
from shmlog.message import TopicPartition
from shmlog.model import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    IsolationLevel,
    Node,
    TopicCollection,
    TopicPartitionInfo,
    Uuid,
    enum_member,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from shmlog._types import Config
    from shmlog.model import ElectionType


def _must_be_int(cls, name, value):
    # confluent-kafka parses these with PyArg "i": a non-int is a TypeError at construction. A bool
    # is refused too (True partitions is a slip, not a count), as shmlog's config parsing does.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{cls}() argument '{name}' must be int, not {type(value).__name__}")
    return value


def _must_be_topic(cls, value):
    if not isinstance(value, str):
        raise TypeError(f"{cls}() argument 'topic' must be str, not {type(value).__name__}")
    return value


# What AdminClient methods take, checked before anything is sent: a wrong type is a TypeError
# (a bad value a ValueError) naming the method and the argument, as confluent-kafka raises them.

def _list_of(method, name, values, kind, kind_name=None):
    """values as a list, each an instance of kind; a str (a list of characters) is refused."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{method}() argument '{name}' must be a list of {kind_name or kind.__name__}, "
                        f"not {type(values).__name__}")
    values = list(values)
    for v in values:
        if not isinstance(v, kind):
            raise TypeError(f"{method}() argument '{name}' must be a list of {kind_name or kind.__name__}, "
                            f"but holds {type(v).__name__} {v!r:.80}")
    return values


def _config_dict(what, config):
    """A config dict of str keys and str (or int, float, bool, None) values."""
    if not isinstance(config, dict):
        raise TypeError(f"{what} must be a dict of strings, not {type(config).__name__}")
    for k, v in config.items():
        if not isinstance(k, str):
            raise TypeError(f"{what} keys must be str, not {type(k).__name__} {k!r:.80}")
        if v is not None and not isinstance(v, (str, int, float)):
            raise TypeError(f"{what}[{k!r}] must be a str, not {type(v).__name__}")
    return dict(config)


def _topic_partitions(method, name, tps, with_offsets=False):
    """A list of TopicPartition whose topic is a str, partition an int (offset too, if used)."""
    tps = _list_of(method, name, tps, TopicPartition)
    for tp in tps:
        fields = (("topic", tp.topic, str), ("partition", tp.partition, int)) + \
            ((("offset", tp.offset, int),) if with_offsets else ())
        for field, value, kind in fields:
            if not isinstance(value, kind) or isinstance(value, bool):
                raise TypeError(f"{method}() argument '{name}': TopicPartition.{field} must be {kind.__name__}, "
                                f"not {type(value).__name__} {value!r:.80}")
    return tps


def _group_id(method, name, group_id):
    if not isinstance(group_id, str):
        raise TypeError(f"{method}() argument '{name}' must be str, not {type(group_id).__name__}")
    return group_id


class NewTopic:
    def __init__(self, topic: str, num_partitions: int = -1, replication_factor: int = -1,
                 replica_assignment: list[list[int]] | None = None, config: dict[str, str] | None = None) -> None:
        self.topic = _must_be_topic("NewTopic", topic)
        self.num_partitions = _must_be_int("NewTopic", "num_partitions", num_partitions)
        self.replication_factor = _must_be_int("NewTopic", "replication_factor", replication_factor)
        self.replica_assignment = replica_assignment
        self.config = _config_dict("NewTopic() argument 'config'", config) if config is not None else {}

    def __repr__(self):   # confluent-kafka's NewTopic_str0: no quotes, no spaces, -1 partitions left out
        if self.num_partitions == -1:
            return f"NewTopic(topic={self.topic})"
        return f"NewTopic(topic={self.topic},num_partitions={self.num_partitions})"


class NewPartitions:
    def __init__(self, topic: str, new_total_count: int, replica_assignment: list[list[int]] | None = None) -> None:
        self.topic = _must_be_topic("NewPartitions", topic)
        self.new_total_count = _must_be_int("NewPartitions", "new_total_count", new_total_count)
        self.replica_assignment = replica_assignment

    def __repr__(self):
        return f"NewPartitions(topic={self.topic},new_total_count={self.new_total_count})"


class DeletedRecords:
    """What delete_records did to one partition: `low_watermark` is its new log start offset."""

    def __init__(self, low_watermark: int) -> None:
        self.low_watermark = low_watermark

    def __repr__(self):
        return f"DeletedRecords(low_watermark={self.low_watermark})"


# ---------------------------------------------------------------------------- enums
# confluent_kafka.admin's, with its values (librdkafka's numbers).

class _Ordered(enum.Enum):
    def __lt__(self, other):
        if not isinstance(other, type(self)):
            return NotImplemented
        return self.value < other.value


class ResourceType(_Ordered):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    BROKER = 4
    TRANSACTIONAL_ID = 5


class ResourcePatternType(_Ordered):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(_Ordered):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class AclPermissionType(_Ordered):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


class AlterConfigOpType(enum.Enum):
    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


class ConfigSource(enum.IntEnum):
    """Where a described config value comes from. confluent-kafka's ConfigEntry.source is the
    plain int librdkafka reports (its examples print ConfigSource(entry.source)); shmlog's is
    this enum, which is an int too, so `entry.source == 5`, `ConfigSource(entry.source)` and
    `entry.source == ConfigSource.DEFAULT_CONFIG` all hold."""

    UNKNOWN_CONFIG = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5
    GROUP_CONFIG = 8

    __str__ = enum.Enum.__str__
    __format__ = enum.Enum.__format__


# ---------------------------------------------------------------------------- configs

@functools.total_ordering
class ConfigResource:
    restype: ResourceType
    restype_int: int
    name: str
    set_config_dict: dict[str, str]
    incremental_configs: list[ConfigEntry]
    configs: dict[str, ConfigEntry] | None
    error: KafkaError | None
    Type = ResourceType

    def __init__(self, restype: ResourceType | str | int, name: str, set_config: dict[str, str] | None = None,
                 described_configs: dict[str, ConfigEntry] | None = None, error: KafkaError | None = None,
                 incremental_configs: list[ConfigEntry] | None = None) -> None:
        if name is None:
            raise ValueError("Expected resource name to be a string")
        if isinstance(restype, str):
            try:
                restype = ResourceType[restype.upper()]
            except KeyError:
                raise ValueError(f"ConfigResource() argument 'restype': unknown resource type {restype!r}, "
                                 f"expected one of {', '.join(t.name for t in ResourceType)}") from None
        elif isinstance(restype, int) and not isinstance(restype, bool):
            restype = ResourceType(restype)
        if not isinstance(restype, ResourceType):
            raise TypeError(f"ConfigResource() argument 'restype' must be a ConfigResource.Type, "
                            f"not {type(restype).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"ConfigResource() argument 'name' must be str, not {type(name).__name__}")
        self.restype = restype
        self.restype_int = int(restype.value)
        self.name = name
        self.set_config_dict = _config_dict("ConfigResource() argument 'set_config'", set_config or {})
        self.incremental_configs = list(incremental_configs or [])
        self.configs = described_configs
        self.error = error

    def set_config(self, name: str, value: str, overwrite: bool = True) -> None:
        if not overwrite and name in self.set_config_dict:
            return
        self.set_config_dict.update(_config_dict("ConfigResource.set_config()", {name: value}))

    def add_incremental_config(self, config_entry: ConfigEntry) -> None:
        self.incremental_configs.append(config_entry)

    def __len__(self):
        return len(self.set_config_dict)

    def __hash__(self):
        return hash((self.restype, self.name))

    def __eq__(self, other):
        if not isinstance(other, ConfigResource):
            return NotImplemented
        return (self.restype, self.name) == (other.restype, other.name)

    def __lt__(self, other):
        if not isinstance(other, ConfigResource):
            return NotImplemented
        return (self.restype.value, self.name) < (other.restype.value, other.name)

    def __repr__(self):
        if self.error is not None:
            return f"ConfigResource({self.restype},{self.name},{self.error!r})"
        return f"ConfigResource({self.restype},{self.name})"


class ConfigEntry:
    name: str
    value: str | None
    source: ConfigSource | int
    is_read_only: bool
    is_default: bool
    is_sensitive: bool
    is_synonym: bool
    synonyms: dict[str, ConfigEntry]
    incremental_operation: AlterConfigOpType | None

    def __init__(self, name: str, value: str | None, source: ConfigSource | int = ConfigSource.UNKNOWN_CONFIG,
                 is_read_only: bool = False, is_default: bool = False, is_sensitive: bool = False,
                 is_synonym: bool = False, synonyms: dict[str, ConfigEntry] | None = None,
                 incremental_operation: AlterConfigOpType | None = None) -> None:
        self.name = name
        self.value = value
        self.source = source
        self.is_read_only = bool(is_read_only)
        self.is_default = bool(is_default)
        self.is_sensitive = bool(is_sensitive)
        self.is_synonym = bool(is_synonym)
        self.synonyms = {} if synonyms is None else synonyms
        self.incremental_operation = incremental_operation

    def __repr__(self):
        return f'ConfigEntry({self.name}="{self.value}")'

    def __str__(self):
        return f'{self.name}="{self.value}"'


def _config_text(value):
    """A config value as Kafka describes it: a string (true/false, numbers in decimal, lists
    comma-separated), None when unset."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_config_text(v) for v in value)
    return str(value)


# Broker keys of the same duration in other units (log.retention.hours sets log.retention.ms).
_BROKER_KEY_FAMILY = {"log.retention.ms": ("log.retention.ms", "log.retention.minutes", "log.retention.hours"),
                      "log.roll.ms": ("log.roll.ms", "log.roll.hours")}
_SECRET_WORDS = ("password", "secret", "passphrase", ".pem", "sasl.oauthbearer.config")
_READ_ONLY_TOPIC_KEYS = ("ring.bytes",)   # fixed when the topic's rings are made


def _topic_entries(described, broker):
    """{key: ConfigEntry} of a topic from op describe_configs' answer, with Kafka's sources:
    set on the topic (DYNAMIC_TOPIC_CONFIG), from a setting the broker was started with
    (STATIC_BROKER_CONFIG), else the default (DEFAULT_CONFIG)."""
    broker_set, broker_values = set(broker["set"]), broker["config"]
    out = {}
    for key, value in sorted(described["config"].items()):
        synonyms = {}
        if key in described["set"]:
            synonyms[key] = ConfigEntry(key, _config_text(described["set"][key]), ConfigSource.DYNAMIC_TOPIC_CONFIG,
                                        is_synonym=True)
        broker_key = _TOPIC_DEFAULT_FROM_BROKER.get(key)
        from_broker = False
        if broker_key is not None:
            from_broker = any(k in broker_set for k in _BROKER_KEY_FAMILY.get(broker_key, (broker_key,)))
            source = ConfigSource.STATIC_BROKER_CONFIG if from_broker else ConfigSource.DEFAULT_CONFIG
            synonyms[broker_key] = ConfigEntry(broker_key, _config_text(broker_values.get(broker_key)), source,
                                               is_default=not from_broker, is_synonym=True)
        if key in described["set"]:
            source = ConfigSource.DYNAMIC_TOPIC_CONFIG
        elif from_broker:
            source = ConfigSource.STATIC_BROKER_CONFIG
        else:
            source = ConfigSource.DEFAULT_CONFIG
        out[key] = ConfigEntry(key, _config_text(value), source, is_read_only=key in _READ_ONLY_TOPIC_KEYS,
                               is_default=source == ConfigSource.DEFAULT_CONFIG, synonyms=synonyms)
    return out


def _broker_entries(broker):
    """{key: ConfigEntry} of the broker: every setting is static (read-only: the broker takes its
    settings when it starts); secrets are described without their value, as Kafka does."""
    out = {}
    for key, value in sorted(broker["config"].items()):
        given = key in broker["set"]
        source = ConfigSource.STATIC_BROKER_CONFIG if given else ConfigSource.DEFAULT_CONFIG
        sensitive = any(w in key for w in _SECRET_WORDS)
        text = None if sensitive else _config_text(value)
        out[key] = ConfigEntry(key, text, source, is_read_only=True, is_default=not given, is_sensitive=sensitive,
                               synonyms={key: ConfigEntry(key, text, source, is_read_only=True, is_default=not given,
                                                          is_sensitive=sensitive, is_synonym=True)})
    return out


# ---------------------------------------------------------------------------- metadata
# list_topics() and list_groups(): confluent_kafka.admin's classes, printed as it prints them.

class ClusterMetadata:
    cluster_id: str | None
    controller_id: int
    brokers: dict[int, BrokerMetadata]
    topics: dict[str, TopicMetadata]
    orig_broker_id: int
    orig_broker_name: str | None

    def __init__(self):
        self.cluster_id = None
        self.controller_id = -1
        self.brokers = {}
        self.topics = {}
        self.orig_broker_id = -1
        self.orig_broker_name = None

    def __repr__(self):
        return f"ClusterMetadata({self.cluster_id})"

    def __str__(self):
        return str(self.cluster_id)


class BrokerMetadata:
    id: int
    host: str | None
    port: int

    def __init__(self, broker_id: int = -1, host: str | None = None, port: int = -1) -> None:
        self.id = broker_id
        self.host = host
        self.port = port

    def __repr__(self):
        return f"BrokerMetadata({self.id}, {self.host}:{self.port})"

    def __str__(self):
        return f"{self.host}:{self.port}/{self.id}"


class TopicMetadata:
    topic: str | None
    partitions: dict[int, PartitionMetadata]
    error: KafkaError | None

    def __init__(self, topic: str | None = None, partitions: int = 0,
                 states: list[dict[str, Any]] | None = None) -> None:
        self.topic = topic
        self.partitions = {p: PartitionMetadata(p, states[p] if states else None) for p in range(partitions)}
        self.error = None

    def __repr__(self):
        if self.error is not None:
            return f"TopicMetadata({self.topic}, {len(self.partitions)} partitions, {self.error})"
        return f"TopicMetadata({self.topic}, {len(self.partitions)} partitions)"

    def __str__(self):
        return str(self.topic)


class PartitionMetadata:
    """One partition: its leader, replicas and in-sync replicas, as replica ids (the index of
    the replica's log dir in the broker's log.dirs; docs/replication.md)."""

    id: int
    leader: int
    replicas: list[int]
    isrs: list[int]
    offline: list[int]
    error: KafkaError | None

    def __init__(self, partition: int = -1, state: dict[str, Any] | None = None) -> None:
        self.id = partition
        if state is None:
            state = {"leader": 0, "replicas": [0], "isr": [0]} if partition >= 0 else \
                {"leader": -1, "replicas": [], "isr": []}
        self.leader = state["leader"]
        self.replicas = list(state["replicas"])
        self.isrs = list(state["isr"])
        self.offline = list(state.get("offline", ()))   # shmlog: replicas whose log dir failed (kafka-topics' Offline)
        self.error = None

    def __repr__(self):
        if self.error is not None:
            return f"PartitionMetadata({self.id}, {self.error})"
        return f"PartitionMetadata({self.id})"

    def __str__(self):
        return str(self.id)


class GroupMember:
    id: str | None
    client_id: str | None
    client_host: str | None
    metadata: bytes | None
    assignment: bytes | None

    def __init__(self):
        self.id = None
        self.client_id = None
        self.client_host = None
        self.metadata = None
        self.assignment = None


class GroupMetadata:
    broker: BrokerMetadata | None
    id: str | None
    error: KafkaError | None
    state: str | None
    protocol_type: str | None
    protocol: str | None
    members: list[GroupMember]

    def __init__(self):
        self.broker = None
        self.id = None
        self.error = None
        self.state = None
        self.protocol_type = None
        self.protocol = None
        self.members = []

    def __repr__(self):
        if self.error is not None:
            return f"GroupMetadata({self.id}, {self.error})"
        return f"GroupMetadata({self.id})"

    def __str__(self):
        return str(self.id)


def _assignment_bytes(assignment):
    """A member's assignment as Kafka's ConsumerProtocolAssignment v0 (what list_groups gives)."""
    topics = {}
    for t, p in assignment:
        topics.setdefault(t, []).append(p)
    out = [struct.pack(">hi", 0, len(topics))]
    for t, parts in sorted(topics.items()):
        name = t.encode()
        out.append(struct.pack(f">h{len(name)}si{len(parts)}i", len(name), name, len(parts), *sorted(parts)))
    out.append(struct.pack(">i", -1))  # no user data
    return b"".join(out)


def _assignment(what, assignment):
    """A replica assignment as confluent-kafka takes it: a list (per partition) of lists of
    replica ids; TypeError naming what is wrong otherwise."""
    if not isinstance(assignment, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in assignment):
        raise TypeError(f"{what}: replica_assignment must be a list of lists of replica ids")
    for replicas in assignment:
        for r in replicas:
            if not isinstance(r, int) or isinstance(r, bool):
                raise TypeError(f"{what}: replica_assignment holds {r!r}; replica ids are ints")
    return [list(r) for r in assignment]


def cluster_metadata(meta: dict[str, Any], topic: str | None = None, cluster_id: str | None = None,
                     host: str | None = None) -> ClusterMetadata:
    md = ClusterMetadata()
    md.cluster_id = cluster_id
    md.controller_id = md.orig_broker_id = 0
    host = host if host is not None else meta.get("log_dirs", [""])[0]
    md.orig_broker_name = f"{host}:0/0"
    md.brokers[0] = BrokerMetadata(0, host, 0)
    for name, info in meta["topics"].items():
        if topic is None or name == topic:
            md.topics[name] = TopicMetadata(name, info["partitions"], info.get("partition_states"))
    if topic is not None and topic not in md.topics:
        t = md.topics[topic] = TopicMetadata(topic, 0)
        t.error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}")
    return md


# ---------------------------------------------------------------------------- describe_topics, describe_cluster

class TopicDescription:
    authorized_operations: list[AclOperation] | None

    def __init__(self, name: str, topic_id: Uuid | None, is_internal: bool, partitions: list[TopicPartitionInfo],
                 authorized_operations: list[AclOperation | str | int] | None = None) -> None:
        self.name = name
        self.topic_id = topic_id
        self.is_internal = is_internal
        self.partitions = partitions
        self.authorized_operations = None if authorized_operations is None else [
            enum_member(op, AclOperation) for op in authorized_operations]

    def __repr__(self):
        return f"TopicDescription({self.name!r}, {len(self.partitions)} partitions)"


class DescribeClusterResult:
    authorized_operations: list[AclOperation] | None

    def __init__(self, controller: Node, nodes: list[Node], cluster_id: str | None = None,
                 authorized_operations: list[AclOperation | str | int] | None = None) -> None:
        self.cluster_id = cluster_id
        self.controller = controller
        self.nodes = nodes
        self.authorized_operations = None if authorized_operations is None else [
            enum_member(op, AclOperation) for op in authorized_operations]

    def __repr__(self):
        return f"DescribeClusterResult({self.cluster_id!r}, {len(self.nodes)} nodes)"


# What the broker's owner may do (every operation: on one host access is all or nothing).
_TOPIC_OPERATIONS = [AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
                     AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
                     AclOperation.ALTER_CONFIGS]
_CLUSTER_OPERATIONS = [AclOperation.CREATE, AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.CLUSTER_ACTION,
                       AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE]


# ---------------------------------------------------------------------------- list_offsets

class OffsetSpec:
    """What list_offsets looks for in a partition: OffsetSpec.earliest(), .latest(),
    .max_timestamp() or .for_timestamp(ms). OffsetSpec(-2/-1/-3) or OffsetSpec(ms) too."""

    _value = None

    def __new__(cls, index):
        if index < 0:
            return _SPECS[index]
        return TimestampSpec(index)

    @classmethod
    def earliest(cls) -> OffsetSpec:
        return _SPECS[-2]

    @classmethod
    def latest(cls) -> OffsetSpec:
        return _SPECS[-1]

    @classmethod
    def max_timestamp(cls) -> OffsetSpec:
        return _SPECS[-3]

    @classmethod
    def for_timestamp(cls, timestamp: int) -> OffsetSpec:
        return TimestampSpec(timestamp)

    def __lt__(self, other):
        if not isinstance(other, OffsetSpec):
            return NotImplemented
        return self._value < other._value


class TimestampSpec(OffsetSpec):
    def __new__(cls, _timestamp):
        return object.__new__(cls)

    def __init__(self, timestamp: int) -> None:
        self.timestamp = timestamp

    @property
    def _value(self):
        return self.timestamp

    def __repr__(self):
        return f"TimestampSpec({self.timestamp})"


class MaxTimestampSpec(OffsetSpec):
    _value = -3

    def __new__(cls):
        return object.__new__(cls)

    def __repr__(self):
        return "OffsetSpec.max_timestamp()"


class LatestSpec(OffsetSpec):
    _value = -1

    def __new__(cls):
        return object.__new__(cls)

    def __repr__(self):
        return "OffsetSpec.latest()"


class EarliestSpec(OffsetSpec):
    _value = -2

    def __new__(cls):
        return object.__new__(cls)

    def __repr__(self):
        return "OffsetSpec.earliest()"


_SPECS = {-3: MaxTimestampSpec(), -2: EarliestSpec(), -1: LatestSpec()}


class ListOffsetsResultInfo:
    leader_epoch: int | None

    def __init__(self, offset: int, timestamp: int, leader_epoch: int | None) -> None:
        self.offset = offset
        self.timestamp = timestamp
        self.leader_epoch = None if leader_epoch is None or leader_epoch < 0 else leader_epoch

    def __repr__(self):
        return (f"ListOffsetsResultInfo(offset={self.offset}, timestamp={self.timestamp}, "
                f"leader_epoch={self.leader_epoch})")


def _check_list_offsets(topic_partition_offsets, isolation_level):
    # confluent-kafka's checks, with its messages
    if not isinstance(topic_partition_offsets, dict):
        raise TypeError("Expected topic_partition_offsets to be dict of [TopicPartitions,OffsetSpec] for list "
                        "offsets request")
    for tp, spec in topic_partition_offsets.items():
        if tp is None:
            raise TypeError("partition cannot be None")
        if not isinstance(tp, TopicPartition):
            raise TypeError("partition must be a TopicPartition")
        if tp.topic is None:
            raise TypeError("partition topic name cannot be None")
        if not isinstance(tp.topic, str):
            raise TypeError("partition topic name must be string")
        if not tp.topic:
            raise ValueError("partition topic name cannot be empty")
        if tp.partition < 0:
            raise ValueError("partition index must be non-negative")
        if spec is None:
            raise TypeError("OffsetSpec cannot be None")
        if not isinstance(spec, OffsetSpec):
            raise TypeError("Value must be a OffsetSpec")
    if isolation_level is not None and not isinstance(isolation_level, IsolationLevel):
        raise TypeError("isolation_level argument should be an IsolationLevel")


def _check_resources(resources, what):
    if not isinstance(resources, list) or not resources:
        raise ValueError("Expected non-empty list of ConfigResource objects")
    for res in resources:
        if not isinstance(res, ConfigResource):
            raise TypeError(f"{what}: expected a list of ConfigResource, found {type(res).__name__}")


def _check_incremental(resources):
    _check_resources(resources, "incremental_alter_configs")
    for res in resources:
        if not res.incremental_configs:
            raise ValueError("expected non-empty list of ConfigEntry to alter incrementally in incremental_configs "
                             "field")
        for i, entry in enumerate(res.incremental_configs):
            if not isinstance(entry, ConfigEntry):
                raise TypeError(f"expected ConfigEntry type in incremental_configs field, index {i}")
            if not isinstance(entry.incremental_operation, AlterConfigOpType):
                raise TypeError(f"{entry.name}: incremental_operation must be an AlterConfigOpType, not "
                                f"{type(entry.incremental_operation).__name__}")
            if not isinstance(entry.name, str):
                raise TypeError(f"Expected .name to be str type, not {type(entry.name).__name__}")
            if entry.incremental_operation != AlterConfigOpType.DELETE and not isinstance(entry.value, str):
                raise TypeError(f"Expected .value to be str type, not {type(entry.value).__name__}")


def _unsupported(what, why):
    """The error of a call that cannot mean anything on one host: raised at once, never a no-op."""
    return error(KafkaError._UNSUPPORTED_FEATURE, f"{what} is not supported by shmlog: {why}")


_NO_ACLS = ("access to a broker is decided by file permissions and the peer credentials of its control socket "
            "(shmlog.allowed.users / shmlog.allowed.groups / shmlog.shared.group, docs/security.md), not by ACLs")
_NO_SASL = ("clients reach the broker through a unix socket and shared memory checked by peer credentials; there "
            "is no SASL (docs/security.md)")
_NO_ELECTION = "the leader of a partition stays on its log dir: leader election is not built (docs/replication.md)"


def _failed(code, reason):
    f = concurrent.futures.Future()
    f.set_exception(KafkaException(KafkaError(code, reason)))
    return f


class AdminClient:
    def __init__(self, conf: Config | None = None, **kwargs: Any) -> None:
        conf = dict(conf or {})
        conf.update(kwargs)
        self._cfg = parse_admin_config(conf)
        self._closed = False
        self._connection = connect(self._cfg, "admin")

    @property
    def _cluster(self):
        if self._closed:
            raise RuntimeError("AdminClient has been closed")   # confluent-kafka's error, word for word
        return self._connection

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc_value: object, traceback: object) -> None:
        self.close()
        return None

    def __len__(self):
        return 0   # results are futures completed before each call returns: nothing waits for poll()

    def poll(self, timeout: float = -1) -> int:
        """Serve queued callbacks: AdminClient has none (errors raise, results are futures)."""
        self._cluster  # noqa: B018  (raises once closed)
        return 0

    @property
    def _host(self):
        return self._cluster.data_dir

    def _node(self):
        return Node(0, self._host, 0)

    # ------------------------------------------------------------------ topics

    def create_topics(self, new_topics: list[NewTopic], operation_timeout: float = 0,
                      request_timeout: float | None = None, validate_only: bool = False) -> dict[str, Future[None]]:
        """{topic: future}. A name Kafka would refuse (not 1..249 of [a-zA-Z0-9._-]) fails its
        future with TOPIC_EXCEPTION (Kafka's INVALID_TOPIC_EXCEPTION) without asking the broker;
        counts out of librdkafka's ranges raise ValueError here, as confluent-kafka does."""
        specs, refused = [], {}
        new_topics = _list_of("create_topics", "new_topics", new_topics, NewTopic)
        for t in new_topics:
            if not -1 <= t.num_partitions <= 100000:
                raise ValueError(f"Invalid NewTopic({t.topic}): num_partitions out of expected range -1..100000")
            if not -1 <= t.replication_factor <= 10000:
                raise ValueError(f"Invalid NewTopic({t.topic}): replication_factor out of expected range -1..10000")
            problem = topic_name_problem(t.topic)
            if problem:
                refused[t.topic] = [KafkaError.TOPIC_EXCEPTION, problem]
            else:
                spec = {"topic": t.topic, "num_partitions": t.num_partitions, "config": t.config,
                        "replication_factor": t.replication_factor}
                if t.replica_assignment is not None:
                    spec["replica_assignment"] = _assignment(f"NewTopic({t.topic})", t.replica_assignment)
                specs.append(spec)
        if len({t.topic for t in new_topics}) != len(new_topics):
            raise error(KafkaError._INVALID_ARG, "create_topics: a topic is listed twice")
        results = dict(refused)
        if specs:
            reply = self._cluster.control.request("create_topics", topics=specs, validate_only=validate_only)
            results.update(reply["results"])
        return _futures(results, [(t.topic, t.topic) for t in new_topics])

    def delete_topics(self, topics: list[str], operation_timeout: float = 0,
                      request_timeout: float | None = None) -> dict[str, Future[None]]:
        topics = _list_of("delete_topics", "topics", topics, str)
        reply = self._cluster.control.request("delete_topics", topics=topics)
        return _futures(reply["results"], [(t, t) for t in topics])

    def create_partitions(self, new_partitions: list[NewPartitions], operation_timeout: float = 0,
                          request_timeout: float | None = None,
                          validate_only: bool = False) -> dict[str, Future[None]]:
        new_partitions = _list_of("create_partitions", "new_partitions", new_partitions, NewPartitions)
        specs = [{"topic": p.topic, "new_total_count": p.new_total_count} for p in new_partitions]
        for spec, p in zip(specs, new_partitions):
            if p.replica_assignment is not None:
                spec["replica_assignment"] = _assignment(f"NewPartitions({p.topic})", p.replica_assignment)
        reply = self._cluster.control.request("create_partitions", topics=specs, validate_only=validate_only)
        return _futures(reply["results"], [(s["topic"], s["topic"]) for s in specs])

    def list_topics(self, topic=None, timeout=-1):
        if topic is not None:
            _must_be_topic("list_topics", topic)
        self._cluster.refresh()
        return cluster_metadata(self._cluster.meta, topic, self.cluster_id(), self._host)

    def cluster_id(self, timeout: float = -1) -> str:
        """The data dir's cluster id: made when first asked for, the same for the data dir's life."""
        return self._cluster.control.request("describe_cluster")["cluster_id"]

    def describe_cluster(self, request_timeout: float | None = None, include_authorized_operations: bool = False,
                         **kwargs: Any) -> Future[DescribeClusterResult]:
        """Future of a DescribeClusterResult: the cluster id and its one node (id 0, host the
        data dir, port 0), which is the controller too."""
        node = self._node()
        return _done(DescribeClusterResult(node, [node], self.cluster_id(),
                                           list(_CLUSTER_OPERATIONS) if include_authorized_operations else None))

    def describe_topics(self, topics: TopicCollection, request_timeout: float | None = None,
                        include_authorized_operations: bool = False,
                        **kwargs: Any) -> dict[str, Future[TopicDescription]]:
        """{topic: future of a TopicDescription}: its id, whether it is internal, and per
        partition its leader, replicas and in-sync replicas (nodes named by replica id: the
        index of the replica's log dir)."""
        if not isinstance(topics, TopicCollection):
            raise TypeError("Expected input to be instance of TopicCollection")
        names = topics.topic_names
        if not isinstance(names, list):
            raise TypeError("Expected list of topic names to be described")
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise TypeError(f"Expected list of topics strings, not {type(name).__name__}")
            if not name:
                raise ValueError(f"Empty topic name at index {i} isn't allowed")
        self._cluster.refresh()
        node = self._node()
        out = {}
        for name in names:
            info = self._cluster.meta["topics"].get(name)
            if info is None:
                out[name] = _failed(KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {name!r}")
                continue
            topic_id = Uuid.from_string(info["topic_id"]) if info.get("topic_id") else None
            states = info.get("partition_states")
            if not states:
                partitions = [TopicPartitionInfo(p, node, [node], [node]) for p in range(info["partitions"])]
            else:   # replica ids are log dir indexes (docs/replication.md)
                nodes = {r: Node(r, self._host, 0) for st in states for r in st["replicas"]}
                partitions = [TopicPartitionInfo(p, nodes[st["leader"]], [nodes[r] for r in st["replicas"]],
                                                 [nodes[r] for r in st["isr"]]) for p, st in enumerate(states)]
            out[name] = _done(TopicDescription(name, topic_id, name in INTERNAL_TOPICS, partitions,
                                               list(_TOPIC_OPERATIONS) if include_authorized_operations else None))
        return out

    # ------------------------------------------------------------------ configs

    def describe_configs(self, resources: list[ConfigResource], request_timeout: float | None = None,
                         **kwargs: Any) -> dict[ConfigResource, Future[dict[str, ConfigEntry]]]:
        """{ConfigResource: future of {name: ConfigEntry}}: a topic's every config (values as
        strings, with source, is_default and synonyms as Kafka reports them) or the broker's
        (resource name "0")."""
        _check_resources(resources, "describe_configs")
        topics = [r.name for r in resources if r.restype == ResourceType.TOPIC]
        reply = self._cluster.control.request("describe_configs", topics=topics)
        out = {}
        for res in resources:
            if res.restype == ResourceType.TOPIC:
                described = reply["topics"].get(res.name)
                out[res] = _done(_topic_entries(described, reply["broker"])) if described else \
                    _failed(KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {res.name!r}")
            elif res.restype == ResourceType.BROKER:
                out[res] = _done(_broker_entries(reply["broker"])) if str(res.name) in ("0", "") else \
                    _failed(KafkaError._UNKNOWN_BROKER, f"broker {res.name!r}: this cluster has one broker, id 0")
            else:
                out[res] = _failed(KafkaError.INVALID_REQUEST, f"cannot describe the configs of a {res.restype.name} "
                                   f"resource: shmlog has topic and broker configs only")
        return out

    def alter_configs(self, resources: list[ConfigResource], request_timeout: float | None = None,
                      validate_only: bool = False, **kwargs: Any) -> dict[ConfigResource, Future[None]]:
        _check_resources(resources, "alter_configs")
        topics = {}
        out = {}
        resources = _list_of("alter_configs", "resources", resources, ConfigResource)
        for res in resources:
            if res.restype != ResourceType.TOPIC:
                out[res] = _failed(KafkaError._INVALID_ARG, _static_broker(res))
            else:
                topics[res.name] = res.set_config_dict
        if topics:
            reply = self._cluster.control.request("alter_configs", topics=topics, validate_only=validate_only)
            for res, f in _futures(reply["results"], [(r, r.name) for r in resources
                                                      if r.restype == ResourceType.TOPIC]).items():
                out[res] = f
        return out

    def incremental_alter_configs(self, resources: list[ConfigResource], request_timeout: float | None = None,
                                  validate_only: bool = False,
                                  **kwargs: Any) -> dict[ConfigResource, Future[None]]:
        """{ConfigResource: future}: apply each resource's incremental_configs (SET a value,
        DELETE: back to the default, APPEND/SUBTRACT items of a list such as cleanup.policy)
        to what is set on the topic, keeping the rest. Checked as alter_configs is."""
        _check_incremental(resources)
        out, topics = {}, {}
        for res in resources:
            names = [e.name for e in res.incremental_configs]
            if res.restype != ResourceType.TOPIC:
                out[res] = _failed(KafkaError._INVALID_ARG, _static_broker(res))
            elif resources.count(res) > 1:
                out[res] = _failed(KafkaError.INVALID_REQUEST, f"topic {res.name!r} is listed twice")
            elif len(set(names)) != len(names):
                out[res] = _failed(KafkaError.INVALID_REQUEST, f"Error due to duplicate config keys: "
                                   f"{sorted({n for n in names if names.count(n) > 1})}")
            else:
                topics[res.name] = [[e.name, e.incremental_operation.value, e.value] for e in res.incremental_configs]
        if topics:
            reply = self._cluster.control.request("incremental_alter_configs", topics=topics,
                                                  validate_only=validate_only)
            for res, f in _futures(reply["results"], [(r, r.name) for r in resources if r.name in topics
                                                      and r.restype == ResourceType.TOPIC]).items():
                out[res] = f
        return out

    # ------------------------------------------------------------------ records

    def list_offsets(self, topic_partition_offsets: dict[TopicPartition, OffsetSpec],
                     isolation_level: IsolationLevel | None = None, request_timeout: float | None = None,
                     **kwargs: Any) -> dict[TopicPartition, Future[ListOffsetsResultInfo]]:
        """{TopicPartition: future of a ListOffsetsResultInfo}: per partition its earliest offset
        (the log start), latest (the high watermark), the first offset whose record timestamp
        is >= a time, or the record with the greatest timestamp (offset and timestamp -1 when
        there is none). Both isolation levels give the same answers: shmlog has no transactions,
        so the last stable offset is the high watermark."""
        _check_list_offsets(topic_partition_offsets, isolation_level)
        out = {}
        for tp, spec in topic_partition_offsets.items():
            key = TopicPartition(tp.topic, tp.partition)
            try:
                out[key] = _done(self._list_offset(tp.topic, tp.partition, spec))
            except KafkaException as exc:
                code = exc.args[0].code()
                if code in (KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
                    code = KafkaError.UNKNOWN_TOPIC_OR_PART   # what the broker answers Kafka's clients
                out[key] = _failed(code, reason_of(exc))
        return out

    def _list_offset(self, topic, partition, spec):
        from shmlog.log.partition_reader import offset_for_time
        from shmlog.log.segment import partition_dir
        ring = self._cluster.ring(topic, partition)
        if isinstance(spec, EarliestSpec):
            return ListOffsetsResultInfo(ring.log_start_offset, -1, 0)
        if isinstance(spec, LatestSpec):
            return ListOffsetsResultInfo(ring.end()[1], -1, 0)
        if isinstance(spec, MaxTimestampSpec):
            return self._max_timestamp(topic, partition)
        info = self._cluster.topic(topic)
        offset = offset_for_time(partition_dir(info["log_dirs"][partition], topic, partition), ring, spec.timestamp)
        if offset < 0:
            return ListOffsetsResultInfo(-1, -1, 0)
        for msg in self._records(topic, partition, offset, first_only=True):
            return ListOffsetsResultInfo(msg.offset(), msg.timestamp()[1], msg.leader_epoch() or 0)
        return ListOffsetsResultInfo(-1, -1, 0)

    def _max_timestamp(self, topic, partition):
        best = ListOffsetsResultInfo(-1, -1, 0)
        for msg in self._records(topic, partition, None):
            ts = msg.timestamp()[1]
            if ts > best.timestamp:
                best = ListOffsetsResultInfo(msg.offset(), ts, msg.leader_epoch() or 0)
        return best

    def _records(self, topic, partition, offset, first_only=False):
        """The records of a partition from offset (None: the log start) to its high watermark,
        read by a consumer outside any group."""
        from shmlog.client.consumer import Consumer
        from shmlog.message import OFFSET_BEGINNING
        ring = self._cluster.ring(topic, partition)
        if ring.end()[1] <= (offset or 0):
            return
        consumer = Consumer({"bootstrap.servers": self._cfg.bootstrap_servers, "enable.partition.eof": True})
        try:
            consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING if offset is None else offset)])
            while True:
                msgs = consumer.consume(1 if first_only else 1000, timeout=10.0)
                if not msgs:
                    return
                for msg in msgs:
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            return
                        raise KafkaException(msg.error())
                    yield msg
                    if first_only:
                        return
        finally:
            consumer.close()

    def delete_records(self, topic_partition_offsets: list[TopicPartition], request_timeout: float | None = None,
                       operation_timeout: float | None = None) -> dict[TopicPartition, Future[DeletedRecords]]:
        """Delete every record before each TopicPartition's offset (OFFSET_END (-1): all of them).

        Returns {TopicPartition: future}; a future's result() is a DeletedRecords whose
        low_watermark is the partition's new log start offset, or raises KafkaException
        (UNKNOWN_TOPIC_OR_PART, OFFSET_OUT_OF_RANGE past the high watermark). Consumers stop
        seeing the records at once; the persister deletes the segment files wholly below.
        """
        tps = _topic_partitions("delete_records", "topic_partition_offsets", topic_partition_offsets,
                                with_offsets=True)
        if len({(tp.topic, tp.partition) for tp in tps}) != len(tps):
            raise ValueError("delete_records: a partition is listed twice")
        reply = self._cluster.control.request("delete_records", partitions=[
            {"topic": tp.topic, "partition": tp.partition, "offset": tp.offset} for tp in tps])
        out = {}
        for tp, result in zip(tps, reply["results"]):
            f = concurrent.futures.Future()
            if "error" in result:
                f.set_exception(KafkaException(KafkaError(result["error"][0], result["error"][1])))
            else:
                f.set_result(DeletedRecords(result["low_watermark"]))
            out[tp] = f
        return out

    # ------------------------------------------------------------------ consumer groups

    def list_groups(self, group: str | None = None, timeout: float = -1) -> list[GroupMetadata]:
        """The legacy group listing: [GroupMetadata] of every group (or only `group`), with
        state, protocol and members (their assignments in Kafka's consumer protocol bytes)."""
        ids = [group] if group is not None else [g["group_id"] for g in
                                                 self._cluster.control.request("list_groups")["groups"]]
        if not ids:
            return []
        broker = BrokerMetadata(0, self._host, 0)
        out = []
        for g in self._cluster.control.request("describe_groups", groups=ids)["groups"]:
            md = GroupMetadata()
            md.broker, md.id, md.state = broker, g["group_id"], g["state"]
            md.protocol_type, md.protocol = g["protocol_type"], g["protocol"]
            for m in g["members"]:
                member = GroupMember()
                member.id, member.client_id, member.client_host = m["member_id"], m["client_id"], m["host"]
                member.assignment = _assignment_bytes(m["assignment"])
                md.members.append(member)
            out.append(md)
        return out

    def list_consumer_groups(self, request_timeout: float | None = None, states: set[ConsumerGroupState] | None = None,
                             types: set[ConsumerGroupType] | None = None,
                             **kwargs: Any) -> Future[ListConsumerGroupsResult]:
        """Future of a ListConsumerGroupsResult: every group the coordinator knows (groups with
        members, and empty ones that still have committed offsets), optionally only `states`
        and `types` (every shmlog group is CLASSIC: the JoinGroup/SyncGroup protocol)."""
        for name, given, cls in (("states", states, ConsumerGroupState), ("types", types, ConsumerGroupType)):
            if given is not None and not isinstance(given, set):
                raise TypeError(f"'{name}' must be a set")
            if given and not all(isinstance(v, cls) for v in given):
                raise TypeError(f"All elements of {name} must be of type {cls.__name__}")
        reply = self._cluster.control.request("list_groups")
        wanted = set(states) if states else None
        if types and ConsumerGroupType.CLASSIC not in types:
            return _done(ListConsumerGroupsResult([], []))
        valid = [ConsumerGroupListing(g["group_id"], g["protocol_type"] == "", ConsumerGroupState.of(g["state"]),
                                      ConsumerGroupType.CLASSIC)
                 for g in reply["groups"]]
        return _done(ListConsumerGroupsResult([g for g in valid if wanted is None or g.state in wanted], []))

    def describe_consumer_groups(self, group_ids: list[str], request_timeout: float | None = None,
                                 include_authorized_operations: bool = False,
                                 **kwargs: Any) -> dict[str, Future[ConsumerGroupDescription]]:
        """{group_id: future of a ConsumerGroupDescription}: state, strategy, members and their
        assignments. An unknown group is described as DEAD with no members, as Kafka does."""
        group_ids = _list_of("describe_consumer_groups", "group_ids", group_ids, str)
        if not group_ids or len(set(group_ids)) != len(group_ids):
            raise ValueError("describe_consumer_groups expects a non-empty list of distinct group ids")
        reply = self._cluster.control.request("describe_groups", groups=group_ids)
        node = self._node()
        out = {}
        for g in reply["groups"]:
            members = [MemberDescription(m["member_id"], m["client_id"], m["host"],
                                         MemberAssignment([TopicPartition(t, p) for t, p in m["assignment"]]),
                                         m["instance_id"]) for m in g["members"]]
            out[g["group_id"]] = _done(ConsumerGroupDescription(
                g["group_id"], g["protocol_type"] == "" and g["state"] != "Dead", members, g["protocol"],
                ConsumerGroupState.of(g["state"]), node,
                [AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE] if include_authorized_operations
                else None, ConsumerGroupType.CLASSIC))
        return out

    def delete_consumer_groups(self, group_ids: list[str], request_timeout: float | None = None,
                               **kwargs: Any) -> dict[str, Future[None]]:
        """{group_id: future}: deletes the committed offsets of groups without members
        (NON_EMPTY_GROUP (68) while members remain, GROUP_ID_NOT_FOUND if unknown)."""
        group_ids = _list_of("delete_consumer_groups", "group_ids", group_ids, str)
        reply = self._cluster.control.request("delete_groups", groups=group_ids)
        return _futures(reply["results"], [(g, g) for g in group_ids])

    def list_consumer_group_offsets(self, list_consumer_group_offsets_request: list[ConsumerGroupTopicPartitions],
                                    require_stable: bool = False, request_timeout: float | None = None,
                                    **kwargs: Any) -> dict[str, Future[ConsumerGroupTopicPartitions]]:
        """{group_id: future of ConsumerGroupTopicPartitions}: committed offsets of the given
        partitions (offset -1001 where none), or of every committed partition if none given."""
        out = {}
        for req in _group_requests("list_consumer_group_offsets", "list_consumer_group_offsets_request",
                                   list_consumer_group_offsets_request, with_offsets=False):
            parts = None if not req.topic_partitions else [[tp.topic, tp.partition] for tp in req.topic_partitions]
            reply = self._cluster.control.request("offset_fetch", group=req.group_id, partitions=parts)
            out[req.group_id] = _done(ConsumerGroupTopicPartitions(
                req.group_id, [TopicPartition(t, p, o, m or None) for t, p, o, m in reply["offsets"]]))
        return out

    def alter_consumer_group_offsets(self, alter_consumer_group_offsets_request: list[ConsumerGroupTopicPartitions],
                                     request_timeout: float | None = None,
                                     **kwargs: Any) -> dict[str, Future[ConsumerGroupTopicPartitions]]:
        """{group_id: future of ConsumerGroupTopicPartitions}: set committed offsets of a group
        with no active members (an active group's are refused with UNKNOWN_MEMBER_ID, as Kafka does)."""
        out = {}
        for req in _group_requests("alter_consumer_group_offsets", "alter_consumer_group_offsets_request",
                                   alter_consumer_group_offsets_request, with_offsets=True):
            tps = list(req.topic_partitions or ())
            f = concurrent.futures.Future()
            try:
                reply = self._cluster.control.request(
                    "offset_commit", group=req.group_id, member_id="", generation=-1, instance_id=None,
                    offsets=[[tp.topic, tp.partition, tp.offset, tp.metadata or ""] for tp in tps])
            except KafkaException as exc:
                f.set_exception(exc)
            else:
                codes = {(t, p): c for t, p, c in reply["results"]}
                bad = [(tp, codes[(tp.topic, tp.partition)]) for tp in tps if codes.get((tp.topic, tp.partition))]
                if bad:
                    tp, code = bad[0]
                    f.set_exception(KafkaException(KafkaError(code, f"{tp.topic}-{tp.partition}: offset refused")))
                else:
                    f.set_result(ConsumerGroupTopicPartitions(req.group_id, tps))
            out[req.group_id] = f
        return out

    def list_consumer_group_lag(self, group_id: str) -> Future[list[PartitionLag]]:
        """shmlog extension: future of [PartitionLag] for every committed or assigned partition of
        the group: committed offset, log end offset, lag and owning member (what
        kafka-consumer-groups --describe prints)."""
        _group_id("list_consumer_group_lag", "group_id", group_id)
        described = self._cluster.control.request("describe_groups", groups=[group_id])["groups"][0]
        owners = {(t, p): m for m in described["members"] for t, p in m["assignment"]}
        committed = self._cluster.control.request("offset_fetch", group=group_id, partitions=None)["offsets"]
        keys = sorted({(t, p) for t, p, *_ in committed} | set(owners))
        reply = self._cluster.control.request("offset_fetch", group=group_id, partitions=[list(k) for k in keys],
                                              log_end=True)
        rows = []
        for (t, p, o, _), end in zip(reply["offsets"], reply["log_end"]):
            m = owners.get((t, p))
            rows.append(PartitionLag(t, p, o if o >= 0 else None, end if end >= 0 else None,
                                     (end - o) if o >= 0 and end >= 0 else None,
                                     m["member_id"] if m else None, m["client_id"] if m else None,
                                     m["host"] if m else None, m["instance_id"] if m else None))
        return _done(rows)

    # ------------------------------------------------------------------ what one host cannot have

    def create_acls(self, acls: list[Any], request_timeout: float | None = None,
                    **kwargs: Any) -> dict[Any, Future[None]]:
        raise _unsupported("create_acls", _NO_ACLS)

    def describe_acls(self, acl_binding_filter: Any, request_timeout: float | None = None,
                      **kwargs: Any) -> Future[list[Any]]:
        raise _unsupported("describe_acls", _NO_ACLS)

    def delete_acls(self, acl_binding_filters: list[Any], request_timeout: float | None = None,
                    **kwargs: Any) -> dict[Any, Future[list[Any]]]:
        raise _unsupported("delete_acls", _NO_ACLS)

    def describe_user_scram_credentials(self, users: list[str] | None = None, request_timeout: float | None = None,
                                        **kwargs: Any) -> Any:
        raise _unsupported("describe_user_scram_credentials", _NO_SASL)

    def alter_user_scram_credentials(self, alterations: list[Any], request_timeout: float | None = None,
                                     **kwargs: Any) -> dict[str, Future[None]]:
        raise _unsupported("alter_user_scram_credentials", _NO_SASL)

    def set_sasl_credentials(self, username: str, password: str) -> None:
        raise _unsupported("set_sasl_credentials", _NO_SASL)

    def elect_leaders(self, election_type: ElectionType, partitions: list[TopicPartition] | None = None,
                      request_timeout: float | None = None, operation_timeout: float | None = None,
                      **kwargs: Any) -> Future[dict[TopicPartition, KafkaError | None]]:
        raise _unsupported("elect_leaders", _NO_ELECTION)

    def close(self) -> None:
        """Let go of the broker; later calls raise RuntimeError, as confluent-kafka's do."""
        if not self._closed:
            self._closed = True
            self._connection.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _static_broker(res):
    if res.restype == ResourceType.BROKER:
        return ("broker configs cannot be altered: a shmlog broker takes its settings when it starts "
                "(shmlog.Broker(data_dir, **configs), shmlog broker start); restart it with new ones")
    return f"cannot alter the configs of a {res.restype.name} resource: only topic configs can be altered"


def _futures(results, keys):
    out = {}
    for key, name in keys:
        f = concurrent.futures.Future()
        result = results.get(name)
        if result is None:
            f.set_result(None)
        else:
            f.set_exception(KafkaException(KafkaError(result[0], result[1])))
        out[key] = f
    return out


# ---------------------------------------------------------------------------- consumer group models
# (confluent_kafka.admin's group descriptions, with the same attributes; ConsumerGroupState,
# ConsumerGroupType and ConsumerGroupTopicPartitions are in shmlog.model)

def _group_requests(method, name, requests, with_offsets):
    """A list of ConsumerGroupTopicPartitions with a str group_id and well-typed TopicPartitions."""
    requests = _list_of(method, name, requests, ConsumerGroupTopicPartitions)
    for req in requests:
        _group_id(method, f"{name}[].group_id", req.group_id)
        if req.topic_partitions:
            _topic_partitions(method, f"{name}[].topic_partitions", req.topic_partitions, with_offsets)
    return requests


def _done(result):
    f = concurrent.futures.Future()
    f.set_result(result)
    return f


class ConsumerGroupListing:
    state: ConsumerGroupState | None
    type: ConsumerGroupType | None

    def __init__(self, group_id: str, is_simple_consumer_group: bool,
                 state: ConsumerGroupState | str | int | None = None,
                 type: ConsumerGroupType | str | int | None = None) -> None:
        self.group_id = group_id
        self.is_simple_consumer_group = is_simple_consumer_group
        self.state = None if state is None else enum_member(state, ConsumerGroupState)
        self.type = None if type is None else enum_member(type, ConsumerGroupType)

    def __repr__(self):
        return f"ConsumerGroupListing({self.group_id!r}, {self.state})"


class ListConsumerGroupsResult:
    def __init__(self, valid: list[ConsumerGroupListing] | None = None,
                 errors: list[KafkaException] | None = None) -> None:
        self.valid = valid or []
        self.errors = errors or []


class MemberAssignment:
    def __init__(self, topic_partitions: list[TopicPartition] | None = None) -> None:
        self.topic_partitions = topic_partitions or []


class MemberDescription:
    def __init__(self, member_id: str, client_id: str, host: str, assignment: MemberAssignment,
                 group_instance_id: str | None = None, target_assignment: MemberAssignment | None = None) -> None:
        self.member_id = member_id
        self.client_id = client_id
        self.host = host
        self.assignment = assignment
        self.group_instance_id = group_instance_id
        self.target_assignment = target_assignment

    def __repr__(self):
        return f"MemberDescription({self.member_id!r}, {len(self.assignment.topic_partitions)} partitions)"


class ConsumerGroupDescription:
    state: ConsumerGroupState | None
    type: ConsumerGroupType | None
    authorized_operations: list[AclOperation] | None

    def __init__(self, group_id: str, is_simple_consumer_group: bool, members: list[MemberDescription],
                 partition_assignor: str, state: ConsumerGroupState | str | int | None, coordinator: Node,
                 authorized_operations: list[AclOperation | str | int] | None = None,
                 type: ConsumerGroupType | str | int | None = ConsumerGroupType.UNKNOWN) -> None:
        self.group_id = group_id
        self.is_simple_consumer_group = is_simple_consumer_group
        self.members = members
        self.partition_assignor = partition_assignor
        self.state = None if state is None else enum_member(state, ConsumerGroupState)
        self.coordinator = coordinator
        self.authorized_operations = None if authorized_operations is None else [
            enum_member(op, AclOperation) for op in authorized_operations]
        self.type = None if type is None else enum_member(type, ConsumerGroupType)

    def __repr__(self):
        return f"ConsumerGroupDescription({self.group_id!r}, {self.state}, {len(self.members)} members)"


class PartitionLag:
    """shmlog extension: one row of `shmlog groups describe` (offsets None where unknown)."""

    __slots__ = ("topic", "partition", "committed", "log_end_offset", "lag", "member_id", "client_id", "host",
                 "group_instance_id")

    def __init__(self, topic: str, partition: int, committed: int | None, log_end_offset: int | None, lag: int | None,
                 member_id: str | None, client_id: str | None, host: str | None,
                 group_instance_id: str | None = None) -> None:
        self.topic, self.partition = topic, partition
        self.committed, self.log_end_offset, self.lag = committed, log_end_offset, lag
        self.member_id, self.client_id, self.host = member_id, client_id, host
        self.group_instance_id = group_instance_id

    def __repr__(self):
        return f"PartitionLag({self.topic}-{self.partition}, committed={self.committed}, lag={self.lag})"
