"""Every public name of confluent_kafka and of the submodules users import from exists in
shmlog (an import change is all a move takes), with confluent-kafka's values and printed forms.

confluent-kafka is not a test dependency: the expected names and values below were taken
from confluent-kafka 2.16.1 (librdkafka 2.16.0) with `dir()`, `__all__` and `repr()`.
"""
import ast
import pathlib

import pytest

import shmlog
import shmlog.admin
import shmlog.aio
import shmlog.error
import shmlog.serialization
from shmlog import KafkaException, TopicPartition
from shmlog.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AlterConfigOpType,
    BrokerMetadata,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    GroupMetadata,
    ListOffsetsResultInfo,
    NewPartitions,
    OffsetSpec,
    PartitionMetadata,
    ResourcePatternType,
    ResourceType,
    ScramMechanism,
    TopicMetadata,
)
from tests.unit.test_package_rules import run_python

# confluent_kafka.__all__ (2.16.1)
CONFLUENT_KAFKA = [
    "AcknowledgeType", "ConcurrentModificationException", "Consumer", "ConsumerGroupState",
    "ConsumerGroupTopicPartitions", "ConsumerGroupType", "DeserializingConsumer", "DeserializingShareConsumer",
    "ElectionType", "IllegalStateException", "IsolationLevel", "KafkaError", "KafkaException", "Message", "Messages",
    "Node", "OFFSET_BEGINNING", "OFFSET_END", "OFFSET_INVALID", "OFFSET_STORED", "Producer", "SerializingProducer",
    "ShareConsumer", "TIMESTAMP_CREATE_TIME", "TIMESTAMP_LOG_APPEND_TIME", "TIMESTAMP_NOT_AVAILABLE",
    "TopicCollection", "TopicPartition", "TopicPartitionInfo", "Uuid", "admin", "aio", "consistent", "fnv1a",
    "kafkatest", "libversion", "murmur2", "version",
]
# Kafka's system-test harness: deliberately absent (shmlog.__getattr__ says why).
ABSENT = {"kafkatest"}

# [n for n in dir(confluent_kafka.admin) if not n.startswith("_")] (2.16.1)
CONFLUENT_KAFKA_ADMIN = [
    "AclBinding", "AclBindingFilter", "AclOperation", "AclPermissionType", "AdminClient", "AlterConfigOpType", "Any",
    "BrokerMetadata", "CONFIG_SOURCE_DEFAULT_CONFIG", "CONFIG_SOURCE_DYNAMIC_BROKER_CONFIG",
    "CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG", "CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG", "CONFIG_SOURCE_GROUP_CONFIG",
    "CONFIG_SOURCE_STATIC_BROKER_CONFIG", "CONFIG_SOURCE_UNKNOWN_CONFIG", "ClusterMetadata", "ConfigEntry",
    "ConfigResource", "ConfigSource", "ConsumerGroupDescription", "ConsumerGroupListing", "DeletedRecords",
    "DescribeClusterResult", "Dict", "GroupMember", "GroupMetadata", "KafkaError", "KafkaException", "List",
    "ListConsumerGroupsResult", "ListOffsetsResultInfo", "MemberAssignment", "MemberDescription", "NewPartitions",
    "NewTopic", "OFFSET_INVALID", "OffsetSpec", "Optional", "PartitionMetadata", "RESOURCE_ANY", "RESOURCE_BROKER",
    "RESOURCE_GROUP", "RESOURCE_TOPIC", "RESOURCE_TRANSACTIONAL_ID", "RESOURCE_UNKNOWN", "ResourcePatternType",
    "ResourceType", "ScramCredentialInfo", "ScramMechanism", "Set", "TopicDescription", "TopicMetadata", "Tuple",
    "Union", "UserScramCredentialAlteration", "UserScramCredentialDeletion", "UserScramCredentialUpsertion",
    "UserScramCredentialsDescription", "concurrent", "string_type", "warnings",
]

# confluent_kafka.serialization.__all__ (2.16.1)
CONFLUENT_KAFKA_SERIALIZATION = [
    "Deserializer", "DeserializerBuilder", "DoubleDeserializer", "DoubleSerializer", "IntegerDeserializer",
    "IntegerSerializer", "MessageField", "SerializationContext", "SerializationError", "Serializer",
    "SerializerBuilder", "StringDeserializer", "StringSerializer",
]

# [n for n in dir(confluent_kafka.error) if not n.startswith("_")] (2.16.1)
CONFLUENT_KAFKA_ERROR = [
    "ConsumeError", "KafkaError", "KafkaException", "KeyDeserializationError", "KeySerializationError", "Message",
    "Optional", "ProduceError", "SerializationError", "ValueDeserializationError", "ValueSerializationError",
]

# confluent_kafka.aio.__all__ (2.16.1)
CONFLUENT_KAFKA_AIO = ["AIOConsumer", "AIOProducer", "AsyncDeserializingConsumer", "AsyncSerializingProducer"]


# ---------------------------------------------------------------------------- names

def test_every_name_confluent_kafka_exports_is_in_shmlog():
    missing = [n for n in CONFLUENT_KAFKA if n not in ABSENT and not hasattr(shmlog, n)]
    assert missing == []


def test_the_one_absent_name_says_why_it_is_absent():
    with pytest.raises(AttributeError, match="system tests"):
        shmlog.kafkatest  # noqa: B018


def test_every_name_of_confluent_kafka_admin_is_in_shmlog_admin():
    assert [n for n in CONFLUENT_KAFKA_ADMIN if not hasattr(shmlog.admin, n)] == []


def test_every_name_of_confluent_kafka_serialization_is_in_shmlog_serialization():
    assert [n for n in CONFLUENT_KAFKA_SERIALIZATION if not hasattr(shmlog.serialization, n)] == []
    assert set(CONFLUENT_KAFKA_SERIALIZATION) <= set(shmlog.serialization.__all__)


def test_every_name_of_confluent_kafka_error_is_in_shmlog_error():
    assert [n for n in CONFLUENT_KAFKA_ERROR if not hasattr(shmlog.error, n)] == []


def test_every_name_of_confluent_kafka_aio_is_in_shmlog_aio():
    assert sorted(shmlog.aio.__all__) == CONFLUENT_KAFKA_AIO


def test_the_admin_submodule_is_reachable_as_an_attribute_of_the_package():
    assert shmlog.admin.AdminClient is shmlog.AdminClient


def test_new_names_load_without_the_client_stack():
    loaded = run_python("""
        import json, sys
        import shmlog
        shmlog.Node, shmlog.TopicCollection, shmlog.IsolationLevel, shmlog.Uuid, shmlog.version()
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("shmlog."))))
    """)
    assert "shmlog.model" in loaded
    assert not [m for m in loaded if m.startswith(("shmlog.client", "shmlog.broker", "shmlog.cli"))]


def test_type_checkers_see_every_lazily_exported_name():
    tree = ast.parse(pathlib.Path(shmlog.__file__).read_text())  # the package under test, installed or not
    block = next(node for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
    declared = {alias.asname or alias.name for node in ast.walk(block) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert set(shmlog._HOMES) | set(shmlog._SUBMODULES) <= declared


# ---------------------------------------------------------------------------- values

@pytest.mark.parametrize("enum, values", [
    (shmlog.IsolationLevel, {"READ_UNCOMMITTED": 0, "READ_COMMITTED": 1}),
    (shmlog.ElectionType, {"PREFERRED": 0, "UNCLEAN": 1}),
    (shmlog.AcknowledgeType, {"ACCEPT": 1, "RELEASE": 2, "REJECT": 3}),
    (shmlog.ConsumerGroupType, {"UNKNOWN": 0, "CONSUMER": 1, "CLASSIC": 2}),
    (shmlog.ConsumerGroupState, {"UNKNOWN": 0, "PREPARING_REBALANCING": 1, "COMPLETING_REBALANCING": 2, "STABLE": 3,
                                 "DEAD": 4, "EMPTY": 5}),
    (AclOperation, {"UNKNOWN": 0, "ANY": 1, "ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7,
                    "DESCRIBE": 8, "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11,
                    "IDEMPOTENT_WRITE": 12}),
    (AclPermissionType, {"UNKNOWN": 0, "ANY": 1, "DENY": 2, "ALLOW": 3}),
    (ConfigSource, {"UNKNOWN_CONFIG": 0, "DYNAMIC_TOPIC_CONFIG": 1, "DYNAMIC_BROKER_CONFIG": 2,
                    "DYNAMIC_DEFAULT_BROKER_CONFIG": 3, "STATIC_BROKER_CONFIG": 4, "DEFAULT_CONFIG": 5,
                    "GROUP_CONFIG": 8}),
    (AlterConfigOpType, {"SET": 0, "DELETE": 1, "APPEND": 2, "SUBTRACT": 3}),
    (ResourceType, {"UNKNOWN": 0, "ANY": 1, "TOPIC": 2, "GROUP": 3, "BROKER": 4, "TRANSACTIONAL_ID": 5}),
    (ResourcePatternType, {"UNKNOWN": 0, "ANY": 1, "MATCH": 2, "LITERAL": 3, "PREFIXED": 4}),
    (ScramMechanism, {"UNKNOWN": 0, "SCRAM_SHA_256": 1, "SCRAM_SHA_512": 2}),
])
def test_enums_have_confluent_kafkas_members_and_values(enum, values):
    assert {m.name: m.value for m in enum} == values


def test_admin_module_constants_are_the_enum_values():
    assert (shmlog.admin.RESOURCE_TOPIC, shmlog.admin.RESOURCE_BROKER) == (2, 4)
    assert shmlog.admin.CONFIG_SOURCE_DEFAULT_CONFIG == 5 and shmlog.admin.CONFIG_SOURCE_GROUP_CONFIG == 8


def test_a_config_source_compares_equal_to_its_int_and_prints_as_the_enum_does():
    assert ConfigSource.DEFAULT_CONFIG == 5 and ConfigSource(5) is ConfigSource.DEFAULT_CONFIG
    assert str(ConfigSource.DEFAULT_CONFIG) == "ConfigSource.DEFAULT_CONFIG"


@pytest.mark.parametrize("key, murmur2, consistent, fnv1a", [
    (b"", 2, 0, 2), (b"a", 5, 4, 6), (b"hello", 4, 2, 2), (b"key-123", 5, 0, 1),
])
def test_partitioner_functions_pick_confluent_kafkas_partitions(key, murmur2, consistent, fnv1a):
    # confluent_kafka.murmur2/consistent/fnv1a(key, 7)
    assert (shmlog.murmur2(key, 7), shmlog.consistent(key, 7), shmlog.fnv1a(key, 7)) == (murmur2, consistent, fnv1a)


def test_version_and_libversion_are_a_string_and_an_int():
    text, number = shmlog.version()
    assert text == shmlog.__version__ and number == 0x00010000
    assert shmlog.libversion() == shmlog.version()


def test_offset_spec_constructors_give_the_shared_specs():
    assert OffsetSpec(-1) is OffsetSpec.latest() and OffsetSpec(-2) is OffsetSpec.earliest()
    assert OffsetSpec(-3) is OffsetSpec.max_timestamp()
    assert OffsetSpec(1700000000000).timestamp == OffsetSpec.for_timestamp(1700000000000).timestamp == 1700000000000


def test_a_negative_leader_epoch_in_a_list_offsets_result_is_none():
    assert ListOffsetsResultInfo(5, -1, -1).leader_epoch is None


def test_a_config_resource_takes_its_type_as_a_name_or_a_number():
    assert ConfigResource("topic", "t") == ConfigResource(2, "t") == ConfigResource(ResourceType.TOPIC, "t")
    assert ConfigResource("Broker", "0").restype_int == 4
    with pytest.raises(ValueError):
        ConfigResource("table", "t")
    with pytest.raises(ValueError):
        ConfigResource("topic", None)


def test_set_config_without_overwrite_keeps_the_first_value():
    res = ConfigResource("topic", "t", set_config={"retention.ms": "1"})
    res.set_config("retention.ms", "2", overwrite=False)
    assert res.set_config_dict == {"retention.ms": "1"} and len(res) == 1


def test_uuid_prints_as_kafka_prints_a_topic_id():
    assert str(shmlog.Uuid(1, 2)) == repr(shmlog.Uuid(1, 2)) == "AAAAAAAAAAEAAAAAAAAAAg"
    u = shmlog.Uuid(0x123456789ABCDEF0, 0x0FEDCBA987654321)
    assert str(u) == "EjRWeJq83vAP7cuph2VDIQ"
    assert (u.get_most_significant_bits(), u.get_least_significant_bits()) == (1311768467463790320,
                                                                               1147797409030816545)
    assert shmlog.Uuid.from_string(str(u)) == u


def test_messages_is_a_read_only_sequence():
    batch = shmlog.Messages([1, 2, 3])
    assert (len(batch), batch.count(), batch[0], list(batch[1:]), batch.is_empty()) == (3, 3, 1, [2, 3], False)


# ---------------------------------------------------------------------------- printed forms

def test_topic_partition_prints_as_confluent_kafka_prints_it():
    assert repr(TopicPartition("t", 1, 5)) == str(TopicPartition("t", 1, 5)) == \
        "TopicPartition{topic=t,partition=1,offset=5,leader_epoch=None,error=None}"
    assert repr(TopicPartition("t", 0, 5, "meta", 3)) == \
        "TopicPartition{topic=t,partition=0,offset=5,leader_epoch=3,error=None}"


def test_metadata_objects_print_as_confluent_kafka_prints_them():
    assert (repr(ClusterMetadata()), str(ClusterMetadata())) == ("ClusterMetadata(None)", "None")
    assert (repr(BrokerMetadata()), str(BrokerMetadata())) == ("BrokerMetadata(-1, None:-1)", "None:-1/-1")
    assert (repr(TopicMetadata()), str(TopicMetadata())) == ("TopicMetadata(None, 0 partitions)", "None")
    assert (repr(PartitionMetadata()), str(PartitionMetadata())) == ("PartitionMetadata(-1)", "-1")
    assert repr(GroupMetadata()) == "GroupMetadata(None)"
    assert repr(BrokerMetadata(0, "/data", 0)) == "BrokerMetadata(0, /data:0)"
    assert repr(TopicMetadata("t", 3)) == "TopicMetadata(t, 3 partitions)"


def test_config_objects_print_as_confluent_kafka_prints_them():
    assert (repr(ConfigEntry("a", "b")), str(ConfigEntry("a", "b"))) == ('ConfigEntry(a="b")', 'a="b"')
    assert repr(ConfigResource(ConfigResource.Type.TOPIC, "t")) == "ConfigResource(ResourceType.TOPIC,t)"
    assert repr(NewPartitions("x", 4)) == "NewPartitions(topic=x,new_total_count=4)"


def test_a_node_prints_as_confluent_kafka_prints_it():
    assert str(shmlog.Node(0, "h", 9092)) == "(0) h:9092 "
    assert str(shmlog.Node(1, "h", 9092, "r1")) == "(1) h:9092 (Rack - r1)"


def test_an_acl_binding_prints_as_confluent_kafka_prints_it():
    acl = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:a", "*", AclOperation.READ,
                     AclPermissionType.ALLOW)
    assert repr(acl) == ("AclBinding(ResourceType.TOPIC,t,ResourcePatternType.LITERAL,User:a,*,AclOperation.READ,"
                         "AclPermissionType.ALLOW)")


# ---------------------------------------------------------------------------- what is not built

@pytest.mark.parametrize("cls", [shmlog.ShareConsumer, shmlog.DeserializingShareConsumer])
def test_a_share_consumer_cannot_be_made_and_says_why(cls):
    with pytest.raises(KafkaException, match="share groups"):
        cls({"bootstrap.servers": "shm:///nowhere", "group.id": "g"})


@pytest.mark.parametrize("name", CONFLUENT_KAFKA_AIO)
def test_every_asyncio_client_of_confluent_kafka_exists_in_shmlog_aio(name):
    assert isinstance(getattr(shmlog.aio, name), type)
