"""shmlog.admin against a real broker, called as confluent_kafka.admin is: describe_topics,
describe_cluster, cluster_id, list_offsets, describe_configs, incremental_alter_configs,
list_groups, the context manager, and the calls one host cannot have."""
import time

import pytest

import shmlog
from shmlog import ElectionType, IsolationLevel, KafkaError, KafkaException, TopicCollection, TopicPartition
from shmlog.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    OffsetSpec,
)
from tests.conftest import create_topic

DEADLINE_S = 30.0


def code_of(future):
    with pytest.raises(KafkaException) as exc:
        future.result()
    return exc.value.args[0].code()


# Record times are T0 + a few seconds: recent, so retention (7 days) leaves the records alone.
T0 = int(time.time() * 1000) - 60_000


def produce(conf, topic, seconds, partition=0):
    """One record per entry of seconds, stamped T0 + that many seconds."""
    p = shmlog.Producer({**conf, "linger.ms": 0})
    for i, s in enumerate(seconds):
        p.produce(topic, b"v%d" % i, partition=partition, timestamp=T0 + s * 1000)
    assert p.flush(10) == 0


def one(futures):
    (future,) = futures.values()
    return future.result()


def topic_configs(admin, topic):
    res = ConfigResource("topic", topic)
    return admin.describe_configs([res])[res].result()


def incremental(topic, *entries):
    return ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=op) for name, op, value in entries])


# ---------------------------------------------------------------------------- the client itself

def test_admin_client_is_a_context_manager_and_refuses_calls_after_it(conf):
    with AdminClient(conf) as admin:
        assert admin.list_topics().topics == {}
    with pytest.raises(RuntimeError, match="AdminClient has been closed"):
        admin.list_topics()


def test_poll_has_nothing_to_serve(admin):
    assert admin.poll(0) == 0 and len(admin) == 0


@pytest.mark.parametrize("call", [
    lambda a: a.create_acls([]),
    lambda a: a.describe_acls(None),
    lambda a: a.delete_acls([]),
    lambda a: a.describe_user_scram_credentials(),
    lambda a: a.alter_user_scram_credentials([]),
    lambda a: a.set_sasl_credentials("user", "secret"),
    lambda a: a.elect_leaders(ElectionType.PREFERRED, None),
])
def test_a_call_one_host_cannot_have_raises_saying_why(admin, call):
    with pytest.raises(KafkaException, match="not supported by shmlog: ") as exc:
        call(admin)
    assert exc.value.args[0].code() == KafkaError._UNSUPPORTED_FEATURE


# ---------------------------------------------------------------------------- cluster

def test_cluster_id_is_kafka_shaped_and_the_same_for_every_client(admin, conf):
    with AdminClient(conf) as other:
        assert other.cluster_id() == admin.cluster_id()
    assert len(admin.cluster_id()) == 22


def test_cluster_id_survives_a_broker_restart(start_broker):
    broker = start_broker()
    with AdminClient({"bootstrap.servers": broker.bootstrap_servers}) as admin:
        before = admin.cluster_id()
    broker.stop()
    broker = start_broker()
    with AdminClient({"bootstrap.servers": broker.bootstrap_servers}) as admin:
        assert admin.cluster_id() == before


def test_list_topics_names_the_cluster_and_its_one_broker(admin, data_dir):
    md = admin.list_topics()
    assert md.cluster_id == admin.cluster_id() and md.controller_id == 0
    assert list(md.brokers) == [0] and md.brokers[0].host == data_dir


def test_describe_cluster_gives_one_node_that_is_the_controller(admin, data_dir):
    result = admin.describe_cluster().result()
    assert result.cluster_id == admin.cluster_id()
    assert [(n.id, n.host, n.port) for n in result.nodes] == [(0, data_dir, 0)]
    assert result.controller == result.nodes[0] and result.authorized_operations is None


def test_describe_cluster_lists_the_owners_operations_when_asked(admin):
    ops = admin.describe_cluster(include_authorized_operations=True).result().authorized_operations
    assert shmlog.admin.AclOperation.ALTER in ops and shmlog.admin.AclOperation.DESCRIBE in ops


# ---------------------------------------------------------------------------- describe_topics

def test_describe_topics_gives_the_topic_id_and_every_partition_on_node_0(admin):
    create_topic(admin, "orders", 3)
    desc = admin.describe_topics(TopicCollection(["orders"]))["orders"].result()
    assert desc.name == "orders" and not desc.is_internal and len(str(desc.topic_id)) == 22
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    assert all(p.leader.id == 0 and [n.id for n in p.replicas] == [0] and [n.id for n in p.isr] == [0]
               for p in desc.partitions)


def test_describe_topics_gives_a_topic_the_same_id_every_time(admin):
    create_topic(admin, "orders")
    first = admin.describe_topics(TopicCollection(["orders"]))["orders"].result().topic_id
    assert admin.describe_topics(TopicCollection(["orders"]))["orders"].result().topic_id == first


def test_describe_topics_fails_the_future_of_an_unknown_topic(admin):
    assert code_of(admin.describe_topics(TopicCollection(["nope"]))["nope"]) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_topics_marks_the_offsets_topic_internal(admin, conf, topic):
    c = shmlog.Consumer({**conf, "group.id": "g"})
    c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    c.close()
    desc = admin.describe_topics(TopicCollection(["__consumer_offsets"]))["__consumer_offsets"].result()
    assert desc.is_internal


def test_describe_topics_wants_a_topic_collection_of_names(admin):
    with pytest.raises(TypeError):
        admin.describe_topics(["orders"])
    with pytest.raises(TypeError):
        admin.describe_topics(TopicCollection([1]))
    with pytest.raises(ValueError):
        admin.describe_topics(TopicCollection([""]))


# ---------------------------------------------------------------------------- list_offsets

def test_list_offsets_gives_the_log_start_and_the_high_watermark(admin, conf, topic):
    produce(conf, topic, [1, 2, 3])
    admin.delete_records([TopicPartition(topic, 0, 1)])[TopicPartition(topic, 0, 1)].result()
    tp = TopicPartition(topic, 0)
    earliest = one(admin.list_offsets({tp: OffsetSpec.earliest()}))
    latest = one(admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=IsolationLevel.READ_COMMITTED))
    assert (earliest.offset, latest.offset, earliest.timestamp, latest.timestamp) == (1, 3, -1, -1)


def test_list_offsets_for_a_time_gives_the_first_record_at_or_after_it(admin, conf, topic):
    produce(conf, topic, [1, 5, 3, 2])
    found = one(admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.for_timestamp(T0 + 2500)}))
    assert (found.offset, found.timestamp, found.leader_epoch) == (1, T0 + 5000, 0)


def test_list_offsets_for_a_time_after_every_record_gives_minus_one(admin, conf, topic):
    produce(conf, topic, [1, 2])
    found = one(admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.for_timestamp(T0 + 9000)}))
    assert (found.offset, found.timestamp) == (-1, -1)


def test_list_offsets_max_timestamp_gives_the_record_with_the_greatest_time(admin, conf, topic):
    produce(conf, topic, [1, 5, 3, 5, 2])
    found = one(admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.max_timestamp()}))
    assert (found.offset, found.timestamp) == (1, T0 + 5000)


def test_list_offsets_max_timestamp_of_an_empty_partition_is_minus_one(admin, topic):
    found = one(admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.max_timestamp()}))
    assert (found.offset, found.timestamp) == (-1, -1)


def test_list_offsets_fails_the_future_of_an_unknown_partition(admin, topic):
    futures = admin.list_offsets({TopicPartition(topic, 5): OffsetSpec.latest(),
                                  TopicPartition("nope", 0): OffsetSpec.latest()})
    assert [code_of(f) for f in futures.values()] == [KafkaError.UNKNOWN_TOPIC_OR_PART] * 2


def test_list_offsets_checks_its_arguments_as_confluent_kafka_does(admin, topic):
    with pytest.raises(TypeError):
        admin.list_offsets([TopicPartition(topic, 0)])
    with pytest.raises(ValueError):
        admin.list_offsets({TopicPartition(topic, -1): OffsetSpec.latest()})
    with pytest.raises(TypeError):
        admin.list_offsets({TopicPartition(topic, 0): -1})
    with pytest.raises(TypeError):
        admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.latest()}, isolation_level=1)


# ---------------------------------------------------------------------------- describe_configs

def test_describe_configs_gives_string_values_with_kafkas_sources(admin):
    create_topic(admin, "orders", retention_ms=1000)
    configs = topic_configs(admin, "orders")
    assert all(isinstance(e.value, str) for e in configs.values())
    retention, segment = configs["retention.ms"], configs["segment.bytes"]
    assert (retention.value, retention.source, retention.is_default) == ("1000", ConfigSource.DYNAMIC_TOPIC_CONFIG,
                                                                          False)
    assert (segment.value, segment.source, segment.is_default) == ("1073741824", ConfigSource.DEFAULT_CONFIG, True)


def test_a_topic_setting_lists_the_broker_setting_it_overrides_as_a_synonym(admin):
    create_topic(admin, "orders", retention_ms=1000)
    synonyms = topic_configs(admin, "orders")["retention.ms"].synonyms
    assert synonyms["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert (synonyms["log.retention.ms"].value, synonyms["log.retention.ms"].source) == \
        ("604800000", ConfigSource.DEFAULT_CONFIG)


def test_a_setting_the_broker_was_started_with_is_a_static_broker_config_of_its_topics(start_broker):
    broker = start_broker(log_retention_hours=2)
    with AdminClient({"bootstrap.servers": broker.bootstrap_servers}) as admin:
        create_topic(admin, "orders")
        retention = topic_configs(admin, "orders")["retention.ms"]
    assert (retention.value, retention.source, retention.is_default) == \
        ("7200000", ConfigSource.STATIC_BROKER_CONFIG, False)


def test_describe_configs_of_the_broker_marks_what_it_was_started_with(start_broker):
    broker = start_broker(num_partitions=3)
    with AdminClient({"bootstrap.servers": broker.bootstrap_servers}) as admin:
        res = ConfigResource(ConfigResource.Type.BROKER, "0")
        configs = admin.describe_configs([res])[res].result()
    given, default = configs["num.partitions"], configs["delete.topic.enable"]
    assert (given.value, given.source, given.is_default, given.is_read_only) == \
        ("3", ConfigSource.STATIC_BROKER_CONFIG, False, True)
    assert (default.value, default.source, default.is_default) == ("true", ConfigSource.DEFAULT_CONFIG, True)


def test_describe_configs_of_another_broker_id_fails_its_future(admin):
    res = ConfigResource("broker", "1")
    assert code_of(admin.describe_configs([res])[res]) == KafkaError._UNKNOWN_BROKER


def test_describe_configs_of_an_unknown_topic_fails_its_future(admin):
    res = ConfigResource("topic", "nope")
    assert code_of(admin.describe_configs([res])[res]) == KafkaError.UNKNOWN_TOPIC_OR_PART


# ---------------------------------------------------------------------------- incremental_alter_configs

def test_incremental_set_changes_one_key_and_keeps_the_others(admin):
    create_topic(admin, "orders", retention_ms=1000)
    res = incremental("orders", ("segment.ms", AlterConfigOpType.SET, "60000"))
    assert admin.incremental_alter_configs([res])[res].result() is None
    configs = topic_configs(admin, "orders")
    assert (configs["segment.ms"].value, configs["retention.ms"].value) == ("60000", "1000")


def test_incremental_delete_reverts_a_key_to_its_default(admin):
    create_topic(admin, "orders", retention_ms=1000)
    res = incremental("orders", ("retention.ms", AlterConfigOpType.DELETE, None))
    admin.incremental_alter_configs([res])[res].result()
    retention = topic_configs(admin, "orders")["retention.ms"]
    assert (retention.value, retention.source) == ("604800000", ConfigSource.DEFAULT_CONFIG)


def test_incremental_append_and_subtract_edit_a_list_setting(admin):
    create_topic(admin, "orders")
    res = incremental("orders", ("cleanup.policy", AlterConfigOpType.APPEND, "compact"))
    admin.incremental_alter_configs([res])[res].result()
    assert topic_configs(admin, "orders")["cleanup.policy"].value == "compact,delete"
    res = incremental("orders", ("cleanup.policy", AlterConfigOpType.SUBTRACT, "delete"))
    admin.incremental_alter_configs([res])[res].result()
    assert topic_configs(admin, "orders")["cleanup.policy"].value == "compact"


def test_incremental_append_to_a_setting_that_is_not_a_list_is_refused(admin):
    create_topic(admin, "orders")
    res = incremental("orders", ("retention.ms", AlterConfigOpType.APPEND, "5"))
    assert code_of(admin.incremental_alter_configs([res])[res]) == KafkaError.INVALID_REQUEST


def test_incremental_alter_configs_refuses_a_bad_value_as_alter_configs_does(admin):
    create_topic(admin, "orders")
    res = incremental("orders", ("retention.ms", AlterConfigOpType.SET, "soon"))
    assert code_of(admin.incremental_alter_configs([res])[res]) == KafkaError.INVALID_CONFIG
    assert topic_configs(admin, "orders")["retention.ms"].value == "604800000"


def test_incremental_alter_configs_cannot_change_ring_bytes(admin):
    create_topic(admin, "orders")
    res = incremental("orders", ("ring.bytes", AlterConfigOpType.SET, str(1 << 20)))
    assert code_of(admin.incremental_alter_configs([res])[res]) == KafkaError.INVALID_CONFIG


def test_incremental_alter_configs_with_validate_only_changes_nothing(admin):
    create_topic(admin, "orders")
    res = incremental("orders", ("retention.ms", AlterConfigOpType.SET, "1000"))
    assert admin.incremental_alter_configs([res], validate_only=True)[res].result() is None
    assert topic_configs(admin, "orders")["retention.ms"].value == "604800000"


def test_incremental_alter_configs_of_an_unknown_topic_fails_its_future(admin):
    res = incremental("nope", ("retention.ms", AlterConfigOpType.SET, "1000"))
    assert code_of(admin.incremental_alter_configs([res])[res]) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_incremental_alter_configs_of_the_broker_fails_saying_its_settings_are_static(admin):
    res = ConfigResource("broker", "0", incremental_configs=[
        ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException, match="takes its settings when it starts"):
        admin.incremental_alter_configs([res])[res].result()


def test_incremental_alter_configs_checks_its_arguments_as_confluent_kafka_does(admin):
    with pytest.raises(ValueError):
        admin.incremental_alter_configs([])
    with pytest.raises(ValueError):
        admin.incremental_alter_configs([ConfigResource("topic", "orders")])
    with pytest.raises(TypeError):
        admin.incremental_alter_configs([incremental("orders", ("retention.ms", None, "1000"))])
    with pytest.raises(TypeError):
        admin.incremental_alter_configs([incremental("orders", ("retention.ms", AlterConfigOpType.SET, 1000))])


def test_incremental_alter_configs_refuses_a_key_given_twice(admin):
    create_topic(admin, "orders")
    res = incremental("orders", ("retention.ms", AlterConfigOpType.SET, "1"), ("retention.ms",
                                                                               AlterConfigOpType.DELETE, None))
    assert code_of(admin.incremental_alter_configs([res])[res]) == KafkaError.INVALID_REQUEST


# ---------------------------------------------------------------------------- list_groups

def test_list_groups_gives_each_group_with_its_members_and_their_assignment(admin, conf, topic):
    c = shmlog.Consumer({**conf, "group.id": "billing", "client.id": "biller"})
    c.subscribe([topic])
    deadline = time.monotonic() + DEADLINE_S
    while not c.assignment():
        assert time.monotonic() < deadline, "never assigned"
        c.poll(0.05)
    try:
        (group,) = admin.list_groups()
        (member,) = group.members
        assert (group.id, group.state, group.protocol_type, group.broker.id) == ("billing", "Stable", "consumer", 0)
        assert member.client_id == "biller"
        # ConsumerProtocolAssignment v0: version, [topic, [partition]], no user data
        assert member.assignment == b"\x00\x00" + b"\x00\x00\x00\x01" + b"\x00\x06events" + \
            b"\x00\x00\x00\x01" + b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff"
    finally:
        c.close()


def test_list_groups_with_no_groups_is_empty(admin):
    assert admin.list_groups() == []


def test_list_consumer_groups_finds_no_group_of_the_consumer_type(admin, conf, topic):
    c = shmlog.Consumer({**conf, "group.id": "g"})
    c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    c.close()
    classic = admin.list_consumer_groups(types={shmlog.ConsumerGroupType.CLASSIC}).result().valid
    consumer = admin.list_consumer_groups(types={shmlog.ConsumerGroupType.CONSUMER}).result().valid
    assert [g.group_id for g in classic] == ["g"] and consumer == []


@pytest.mark.parametrize("topics", [["orders"], {"orders": "SET"}, {"orders": [["retention.ms", 9, "1"]]},
                                    {"orders": [[1, 0, "1"]]}, {"orders": [["retention.ms", True, "1"]]}])
def test_a_malformed_incremental_request_is_refused_and_the_broker_keeps_serving(admin, topics):
    create_topic(admin, "orders")
    with pytest.raises(KafkaException) as refused:  # by the request schema, before the op runs
        admin._cluster.control.request("incremental_alter_configs", topics=topics)
    assert refused.value.args[0].code() == KafkaError._INVALID_ARG
    assert topic_configs(admin, "orders")["retention.ms"].value == "604800000"
