"""The mirror copies the configs set on a source topic to its target topic: at creation (a
compacted topic stays compacted, with its retention) and again when they change on the source
(MirrorMaker 2's sync.topic.configs); shmlog's own keys do not go to a Kafka cluster."""
import shmlog
from shmlog import clients
from shmlog.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from shmlog.bridge.mirror import Mirror

CONFIG = {"cleanup.policy": "compact", "retention.ms": "86400000", "ring.bytes": "1048576", "min.insync.replicas": "1"}


def source_topic(broker, name):
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    with shmlog.AdminClient(conf) as admin:
        for f in admin.create_topics([shmlog.NewTopic(name, 2, config=CONFIG)]).values():
            f.result()
    return conf


def set_on_source(conf, topic, key, value):
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    with shmlog.AdminClient(conf) as admin:
        admin.incremental_alter_configs([res])[res].result()


def target_configs(conf, topic):
    types, admin = clients.admin_types(conf), clients.AdminClient(conf)
    try:
        res = types.ConfigResource("topic", topic)
        return {k: e.value for k, e in admin.describe_configs([res])[res].result().items()}
    finally:
        if hasattr(admin, "close"):
            admin.close()


def test_a_target_topic_the_mirror_creates_gets_the_configs_set_on_the_source_topic(broker, second_broker):
    source = source_topic(broker, "compacted")
    target = {"bootstrap.servers": second_broker.bootstrap_servers}
    m = Mirror(source, target, ["compacted"], name="configs")
    try:
        m.start()
        got = target_configs(target, "compacted")
    finally:
        m.close()
    assert {k: got[k] for k in ("cleanup.policy", "retention.ms", "ring.bytes")} == {
        "cleanup.policy": "compact", "retention.ms": "86400000", "ring.bytes": "1048576"}


def test_a_config_changed_on_the_source_is_set_on_the_target_at_the_next_sync(broker, second_broker):
    source = source_topic(broker, "changing")
    target = {"bootstrap.servers": second_broker.bootstrap_servers}
    m = Mirror(source, target, ["changing"], name="configs")
    try:
        m.start()
        assert m.sync_topic_configs() == []
        set_on_source(source, "changing", "retention.ms", "3600000")
        assert m.sync_topic_configs() == [("changing", "retention.ms", "3600000")]
        assert target_configs(target, "changing")["retention.ms"] == "3600000"
        assert m.sync_topic_configs() == []
    finally:
        m.close()


def test_a_mirror_without_config_sync_creates_the_target_topic_with_the_targets_defaults(broker, second_broker):
    source = source_topic(broker, "plain")
    target = {"bootstrap.servers": second_broker.bootstrap_servers}
    m = Mirror(source, target, ["plain"], name="configs", sync_topic_configs=False)
    try:
        m.start()
        assert m.sync_topic_configs() == []
    finally:
        m.close()
    assert target_configs(target, "plain")["cleanup.policy"] == "delete"


def test_a_topic_mirrored_to_a_kafka_cluster_gets_its_kafka_configs_and_not_shmlogs_own(broker, kafka):
    topic = kafka.name("compacted")
    source = source_topic(broker, topic)
    m = Mirror(source, kafka.conf, [topic], name=kafka.name("configs"))
    try:
        m.start()
        got = target_configs(kafka.conf, topic)
    finally:
        m.close()
    assert (got.get("cleanup.policy"), got.get("retention.ms"), "ring.bytes" in got) == ("compact", "86400000", False)
