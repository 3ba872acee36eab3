"""AdminClient: topic and consumer-group management returning futures, as confluent-kafka does."""
import concurrent.futures
import enum

from shmlog.client.cluster import connect
from shmlog.config import parse_admin_config, topic_name_problem
from shmlog.errors import KafkaError, KafkaException, error
from shmlog.message import TopicPartition


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
    def __init__(self, topic, num_partitions=-1, replication_factor=-1, replica_assignment=None, config=None):
        self.topic = _must_be_topic("NewTopic", topic)
        self.num_partitions = _must_be_int("NewTopic", "num_partitions", num_partitions)
        self.replication_factor = _must_be_int("NewTopic", "replication_factor", replication_factor)
        self.replica_assignment = replica_assignment
        self.config = _config_dict("NewTopic() argument 'config'", config) if config is not None else {}

    def __repr__(self):
        return f"NewTopic(topic={self.topic!r}, num_partitions={self.num_partitions})"


class NewPartitions:
    def __init__(self, topic, new_total_count, replica_assignment=None):
        self.topic = _must_be_topic("NewPartitions", topic)
        self.new_total_count = _must_be_int("NewPartitions", "new_total_count", new_total_count)
        self.replica_assignment = replica_assignment


class DeletedRecords:
    """What delete_records did to one partition: `low_watermark` is its new log start offset."""

    def __init__(self, low_watermark):
        self.low_watermark = low_watermark

    def __repr__(self):
        return f"DeletedRecords(low_watermark={self.low_watermark})"


class ConfigResource:
    class Type:
        UNKNOWN, ANY, TOPIC, GROUP, BROKER = 0, 1, 2, 3, 4

    def __init__(self, restype, name, set_config=None, described_configs=None, error=None):
        if isinstance(restype, str):
            if restype.upper() not in ("UNKNOWN", "ANY", "TOPIC", "GROUP", "BROKER"):
                raise ValueError(f"ConfigResource() argument 'restype': unknown resource type {restype!r}")
            restype = getattr(ConfigResource.Type, restype.upper())
        if not isinstance(restype, int) or isinstance(restype, bool):
            raise TypeError(f"ConfigResource() argument 'restype' must be a ConfigResource.Type, "
                            f"not {type(restype).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"ConfigResource() argument 'name' must be str, not {type(name).__name__}")
        self.restype = restype
        self.name = name
        self.set_config_dict = _config_dict("ConfigResource() argument 'set_config'", set_config or {})

    def set_config(self, name, value, overwrite=True):
        self.set_config_dict.update(_config_dict("ConfigResource.set_config()", {name: value}))

    def __hash__(self):
        return hash((self.restype, self.name))

    def __eq__(self, other):
        return isinstance(other, ConfigResource) and (self.restype, self.name) == (other.restype, other.name)

    def __repr__(self):
        return f"ConfigResource({self.restype}, {self.name!r})"


class ConfigEntry:
    def __init__(self, name, value, is_default=False, source=None):
        self.name = name
        self.value = value
        self.is_default = is_default
        self.is_read_only = False
        self.is_sensitive = False
        self.source = source

    def __repr__(self):
        return f"ConfigEntry({self.name}={self.value!r})"


class PartitionMetadata:
    def __init__(self, partition):
        self.id = partition
        self.leader = 0
        self.replicas = [0]
        self.isrs = [0]
        self.error = None


class TopicMetadata:
    def __init__(self, topic, partitions):
        self.topic = topic
        self.partitions = {p: PartitionMetadata(p) for p in range(partitions)}
        self.error = None

    def __repr__(self):
        return f"TopicMetadata({self.topic!r}, {len(self.partitions)} partitions)"


class BrokerMetadata:
    def __init__(self, broker_id, host):
        self.id = broker_id
        self.host = host
        self.port = 0


class ClusterMetadata:
    def __init__(self):
        self.cluster_id = None
        self.controller_id = 0
        self.brokers = {}
        self.topics = {}
        self.orig_broker_id = 0
        self.orig_broker_name = None


def cluster_metadata(meta, topic=None):
    md = ClusterMetadata()
    md.brokers[0] = BrokerMetadata(0, meta.get("log_dirs", [""])[0])
    for name, info in meta["topics"].items():
        if topic is None or name == topic:
            md.topics[name] = TopicMetadata(name, info["partitions"])
    if topic is not None and topic not in md.topics:
        t = md.topics[topic] = TopicMetadata(topic, 0)
        t.error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}")
    return md


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


class AdminClient:
    def __init__(self, conf=None, **kwargs):
        conf = dict(conf or {})
        conf.update(kwargs)
        self._cfg = parse_admin_config(conf)
        self._cluster = connect(self._cfg, "admin")

    def create_topics(self, new_topics, operation_timeout=0, request_timeout=None, validate_only=False):
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
                specs.append({"topic": t.topic, "num_partitions": t.num_partitions, "config": t.config})
        if len({t.topic for t in new_topics}) != len(new_topics):
            raise error(KafkaError._INVALID_ARG, "create_topics: a topic is listed twice")
        results = dict(refused)
        if specs:
            reply = self._cluster.control.request("create_topics", topics=specs, validate_only=validate_only)
            results.update(reply["results"])
        return _futures(results, [(t.topic, t.topic) for t in new_topics])

    def delete_topics(self, topics, operation_timeout=0, request_timeout=None):
        topics = _list_of("delete_topics", "topics", topics, str)
        reply = self._cluster.control.request("delete_topics", topics=topics)
        return _futures(reply["results"], [(t, t) for t in topics])

    def create_partitions(self, new_partitions, operation_timeout=0, request_timeout=None, validate_only=False):
        new_partitions = _list_of("create_partitions", "new_partitions", new_partitions, NewPartitions)
        specs = [{"topic": p.topic, "new_total_count": p.new_total_count} for p in new_partitions]
        reply = self._cluster.control.request("create_partitions", topics=specs, validate_only=validate_only)
        return _futures(reply["results"], [(s["topic"], s["topic"]) for s in specs])

    def list_topics(self, topic=None, timeout=-1):
        if topic is not None:
            _must_be_topic("list_topics", topic)
        self._cluster.refresh()
        return cluster_metadata(self._cluster.meta, topic)

    def describe_configs(self, resources, request_timeout=None):
        resources = _list_of("describe_configs", "resources", resources, ConfigResource)
        self._cluster.refresh()
        out = {}
        for res in resources:
            f = concurrent.futures.Future()
            if res.restype == ConfigResource.Type.TOPIC:
                info = self._cluster.meta["topics"].get(res.name)
                if info is None:
                    f.set_exception(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                              f"unknown topic {res.name!r}")))
                else:
                    f.set_result({k: ConfigEntry(k, v) for k, v in info["config"].items()})
            elif res.restype == ConfigResource.Type.BROKER:
                f.set_result({k: ConfigEntry(k, v) for k, v in self._cluster.meta["broker"].items()})
            else:
                f.set_exception(KafkaException(KafkaError(KafkaError._INVALID_ARG,
                                                          f"cannot describe resource type {res.restype}")))
            out[res] = f
        return out

    def alter_configs(self, resources, request_timeout=None, validate_only=False):
        topics = {}
        out = {}
        resources = _list_of("alter_configs", "resources", resources, ConfigResource)
        for res in resources:
            if res.restype != ConfigResource.Type.TOPIC:
                f = concurrent.futures.Future()
                f.set_exception(KafkaException(KafkaError(KafkaError._INVALID_ARG,
                                                          "only topic configs can be altered")))
                out[res] = f
            else:
                topics[res.name] = res.set_config_dict
        if topics:
            reply = self._cluster.control.request("alter_configs", topics=topics, validate_only=validate_only)
            for res, f in _futures(reply["results"], [(r, r.name) for r in resources if r.name in topics]).items():
                out[res] = f
        return out

    def delete_records(self, topic_partition_offsets, request_timeout=None, operation_timeout=None):
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

    def list_consumer_groups(self, request_timeout=None, states=None, **kwargs):
        """Future of a ListConsumerGroupsResult: every group the coordinator knows (groups with
        members, and empty ones that still have committed offsets), optionally only `states`."""
        reply = self._cluster.control.request("list_groups")
        wanted = {ConsumerGroupState(s) for s in states} if states else None
        valid = [ConsumerGroupListing(g["group_id"], g["protocol_type"] == "", ConsumerGroupState.of(g["state"]))
                 for g in reply["groups"]]
        return _done(ListConsumerGroupsResult([g for g in valid if wanted is None or g.state in wanted], []))

    def describe_consumer_groups(self, group_ids, request_timeout=None, include_authorized_operations=False,
                                 **kwargs):
        """{group_id: future of a ConsumerGroupDescription}: state, strategy, members and their
        assignments. An unknown group is described as DEAD with no members, as Kafka does."""
        group_ids = _list_of("describe_consumer_groups", "group_ids", group_ids, str)
        if not group_ids or len(set(group_ids)) != len(group_ids):
            raise ValueError("describe_consumer_groups expects a non-empty list of distinct group ids")
        reply = self._cluster.control.request("describe_groups", groups=group_ids)
        node = Node(0, self._cluster.data_dir)
        out = {}
        for g in reply["groups"]:
            members = [MemberDescription(m["member_id"], m["client_id"], m["host"],
                                         MemberAssignment([TopicPartition(t, p) for t, p in m["assignment"]]),
                                         m["instance_id"]) for m in g["members"]]
            out[g["group_id"]] = _done(ConsumerGroupDescription(
                g["group_id"], g["protocol_type"] == "" and g["state"] != "Dead", members, g["protocol"],
                ConsumerGroupState.of(g["state"]), node))
        return out

    def delete_consumer_groups(self, group_ids, request_timeout=None, **kwargs):
        """{group_id: future}: deletes the committed offsets of groups without members
        (NON_EMPTY_GROUP (68) while members remain, GROUP_ID_NOT_FOUND if unknown)."""
        group_ids = _list_of("delete_consumer_groups", "group_ids", group_ids, str)
        reply = self._cluster.control.request("delete_groups", groups=group_ids)
        return _futures(reply["results"], [(g, g) for g in group_ids])

    def list_consumer_group_offsets(self, list_consumer_group_offsets_request, require_stable=False,
                                    request_timeout=None, **kwargs):
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

    def alter_consumer_group_offsets(self, alter_consumer_group_offsets_request, request_timeout=None, **kwargs):
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

    def list_consumer_group_lag(self, group_id):
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

    def close(self):
        self._cluster.close()

    def __del__(self):
        try:
            self._cluster.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------- consumer group models
# (confluent_kafka.ConsumerGroupState, ConsumerGroupTopicPartitions and confluent_kafka.admin's
# group descriptions, with the same attributes)

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


class ConsumerGroupState(enum.Enum):
    UNKNOWN = 0
    PREPARING_REBALANCING = 1
    COMPLETING_REBALANCING = 2
    STABLE = 3
    DEAD = 4
    EMPTY = 5

    @classmethod
    def of(cls, kafka_name):
        return {"PreparingRebalance": cls.PREPARING_REBALANCING, "CompletingRebalance": cls.COMPLETING_REBALANCING,
                "Stable": cls.STABLE, "Dead": cls.DEAD, "Empty": cls.EMPTY}.get(kafka_name, cls.UNKNOWN)

    def __lt__(self, other):
        return self.value < other.value


class ConsumerGroupTopicPartitions:
    def __init__(self, group_id, topic_partitions=None):
        self.group_id = group_id
        self.topic_partitions = topic_partitions

    def __repr__(self):
        return f"ConsumerGroupTopicPartitions({self.group_id!r}, {self.topic_partitions!r})"


class ConsumerGroupListing:
    def __init__(self, group_id, is_simple_consumer_group, state=None, type=None):
        self.group_id = group_id
        self.is_simple_consumer_group = is_simple_consumer_group
        self.state = state
        self.type = type

    def __repr__(self):
        return f"ConsumerGroupListing({self.group_id!r}, {self.state})"


class ListConsumerGroupsResult:
    def __init__(self, valid=None, errors=None):
        self.valid = valid or []
        self.errors = errors or []


class Node:
    def __init__(self, id, host, port=0, rack=None):
        self.id = id
        self.id_string = str(id)
        self.host = host
        self.port = port
        self.rack = rack


class MemberAssignment:
    def __init__(self, topic_partitions=None):
        self.topic_partitions = topic_partitions or []


class MemberDescription:
    def __init__(self, member_id, client_id, host, assignment, group_instance_id=None, target_assignment=None):
        self.member_id = member_id
        self.client_id = client_id
        self.host = host
        self.assignment = assignment
        self.group_instance_id = group_instance_id
        self.target_assignment = target_assignment

    def __repr__(self):
        return f"MemberDescription({self.member_id!r}, {len(self.assignment.topic_partitions)} partitions)"


class ConsumerGroupDescription:
    def __init__(self, group_id, is_simple_consumer_group, members, partition_assignor, state, coordinator,
                 authorized_operations=None, type=None):
        self.group_id = group_id
        self.is_simple_consumer_group = is_simple_consumer_group
        self.members = members
        self.partition_assignor = partition_assignor
        self.state = state
        self.coordinator = coordinator
        self.authorized_operations = authorized_operations
        self.type = type

    def __repr__(self):
        return f"ConsumerGroupDescription({self.group_id!r}, {self.state}, {len(self.members)} members)"


class PartitionLag:
    """shmlog extension: one row of `shmlog groups describe` (offsets None where unknown)."""

    __slots__ = ("topic", "partition", "committed", "log_end_offset", "lag", "member_id", "client_id", "host",
                 "group_instance_id")

    def __init__(self, topic, partition, committed, log_end_offset, lag, member_id, client_id, host,
                 group_instance_id=None):
        self.topic, self.partition = topic, partition
        self.committed, self.log_end_offset, self.lag = committed, log_end_offset, lag
        self.member_id, self.client_id, self.host = member_id, client_id, host
        self.group_instance_id = group_instance_id

    def __repr__(self):
        return f"PartitionLag({self.topic}-{self.partition}, committed={self.committed}, lag={self.lag})"
