"""AdminClient: topic management returning futures, as confluent-kafka does."""
import concurrent.futures

from .client import connect
from .config import parse_admin_config, parse_topic_config
from .errors import KafkaError, KafkaException, error


class NewTopic:
    def __init__(self, topic, num_partitions=-1, replication_factor=-1, replica_assignment=None, config=None):
        self.topic = topic
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor
        self.replica_assignment = replica_assignment
        self.config = dict(config or {})

    def __repr__(self):
        return f"NewTopic(topic={self.topic!r}, num_partitions={self.num_partitions})"


class NewPartitions:
    def __init__(self, topic, new_total_count, replica_assignment=None):
        self.topic = topic
        self.new_total_count = new_total_count
        self.replica_assignment = replica_assignment


class ConfigResource:
    class Type:
        UNKNOWN, ANY, TOPIC, GROUP, BROKER = 0, 1, 2, 3, 4

    def __init__(self, restype, name, set_config=None, described_configs=None, error=None):
        if isinstance(restype, str):
            restype = getattr(ConfigResource.Type, restype.upper())
        self.restype = restype
        self.name = name
        self.set_config_dict = dict(set_config or {})

    def set_config(self, name, value, overwrite=True):
        self.set_config_dict[name] = value

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
        specs = []
        for t in new_topics:
            if not isinstance(t, NewTopic):
                raise TypeError("create_topics expects a list of NewTopic")
            specs.append({"topic": t.topic, "num_partitions": t.num_partitions, "config": t.config})
        if len({s["topic"] for s in specs}) != len(specs):
            raise error(KafkaError._INVALID_ARG, "create_topics: a topic is listed twice")
        reply = self._cluster.control.request("create_topics", topics=specs, validate_only=validate_only)
        return _futures(reply["results"], [(s["topic"], s["topic"]) for s in specs])

    def delete_topics(self, topics, operation_timeout=0, request_timeout=None):
        reply = self._cluster.control.request("delete_topics", topics=list(topics))
        return _futures(reply["results"], [(t, t) for t in topics])

    def create_partitions(self, new_partitions, operation_timeout=0, request_timeout=None, validate_only=False):
        specs = [{"topic": p.topic, "new_total_count": p.new_total_count} for p in new_partitions]
        reply = self._cluster.control.request("create_partitions", topics=specs, validate_only=validate_only)
        return _futures(reply["results"], [(s["topic"], s["topic"]) for s in specs])

    def list_topics(self, topic=None, timeout=-1):
        self._cluster.refresh()
        return cluster_metadata(self._cluster.meta, topic)

    def describe_configs(self, resources, request_timeout=None):
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

    def close(self):
        self._cluster.close()

    def __del__(self):
        try:
            self._cluster.close()
        except Exception:
            pass
