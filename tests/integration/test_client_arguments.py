"""Wrong argument types and values are refused in the client, naming the argument, before
anything reaches the broker (docs/architecture.md, "Request validation and limits")."""
import pytest

import shmlog
from shmlog import KafkaError, KafkaException, TopicPartition
from shmlog.client.admin import ConsumerGroupTopicPartitions


@pytest.fixture
def producer(conf, topic):
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    p.produce(topic, b"warm-up")      # the route is cached: a plain call is served by the C fast path
    p.flush(10)
    yield p
    p.close()


# ---------------------------------------------------------------------------- Producer.produce

@pytest.mark.parametrize("bad", [None, 123, b"events", ["events"]])
def test_produce_to_a_topic_that_is_not_a_str_is_a_type_error_naming_topic(producer, bad):
    with pytest.raises(TypeError, match="argument 'topic' must be str"):
        producer.produce(bad, b"x")
    assert len(producer) == 0


@pytest.mark.parametrize("path", ["produce", "_produce_slow"])
def test_a_partition_below_minus_one_is_a_value_error_on_both_paths(producer, topic, path):
    with pytest.raises(ValueError, match=r"argument 'partition' must be -1 \(PARTITION_UA"):
        getattr(producer, path)(topic, b"x", partition=-5)
    assert len(producer) == 0


@pytest.mark.parametrize("bad", ["0", True, 0.0, None])
def test_a_partition_that_is_not_an_int_is_a_type_error(producer, topic, bad):
    with pytest.raises(TypeError, match="argument 'partition' must be int"):
        producer.produce(topic, b"x", partition=bad)


def test_a_partition_the_topic_does_not_have_is_unknown_partition(producer, topic):
    with pytest.raises(KafkaException) as caught:
        producer.produce(topic, b"x", partition=7)
    assert caught.value.args[0].code() == KafkaError._UNKNOWN_PARTITION


def test_partition_minus_one_lets_the_partitioner_choose(producer, topic):
    reports = []
    producer.produce(topic, b"x", partition=-1, on_delivery=lambda err, msg: reports.append((err, msg.partition())))
    producer.flush(10)
    assert reports == [(None, 0)]


@pytest.mark.parametrize("name", ["on_delivery", "callback"])
def test_a_delivery_callback_that_is_not_callable_is_a_type_error(producer, topic, name):
    with pytest.raises(TypeError, match=f"argument '{name}' must be callable"):
        producer.produce(topic, b"x", **{name: 5})
    assert len(producer) == 0


@pytest.mark.parametrize("bad", ["5", 1.5, True])
def test_a_timestamp_that_is_not_an_int_is_a_type_error(producer, topic, bad):
    with pytest.raises(TypeError, match="argument 'timestamp' must be int"):
        producer.produce(topic, b"x", timestamp=bad)


# ---------------------------------------------------------------------------- Producer.produce_values

def test_produce_values_to_a_partition_the_topic_does_not_have_is_unknown_partition_like_produce(producer, topic):
    with pytest.raises(KafkaException) as caught:
        producer.produce_values(topic, [b"a", b"b"], partition=7)
    assert caught.value.args[0].code() == KafkaError._UNKNOWN_PARTITION


def test_produce_values_with_a_partition_below_minus_one_is_a_value_error(producer, topic):
    with pytest.raises(ValueError, match="argument 'partition'"):
        producer.produce_values(topic, [b"a"], partition=-5)


def test_produce_values_to_a_topic_that_is_not_a_str_is_a_type_error(producer):
    with pytest.raises(TypeError, match="argument 'topic' must be str"):
        producer.produce_values(None, [b"a"])


# ---------------------------------------------------------------------------- AdminClient and its types

@pytest.mark.parametrize("bad", [None, 123, b"t"])
def test_new_topic_with_a_name_that_is_not_a_str_is_a_type_error(bad):
    with pytest.raises(TypeError, match="NewTopic\\(\\) argument 'topic' must be str"):
        shmlog.NewTopic(bad, 1)


def test_new_topic_with_a_boolean_partition_count_is_a_type_error():
    with pytest.raises(TypeError, match="argument 'num_partitions' must be int, not bool"):
        shmlog.NewTopic("t", num_partitions=True)


@pytest.mark.parametrize("bad", [["retention.ms"], {1: "x"}, {"retention.ms": ["1"]}])
def test_new_topic_with_a_config_that_is_not_a_dict_of_strings_is_a_type_error(bad):
    with pytest.raises(TypeError, match="NewTopic\\(\\) argument 'config'"):
        shmlog.NewTopic("t", 1, config=bad)


def test_create_topics_of_something_that_is_not_a_new_topic_is_a_type_error(admin):
    with pytest.raises(TypeError, match="create_topics\\(\\) argument 'new_topics' must be a list of NewTopic"):
        admin.create_topics(["t"])


@pytest.mark.parametrize("bad", ["events", [None], [b"events"]])
def test_delete_topics_of_anything_but_a_list_of_str_is_a_type_error(admin, topic, bad):
    with pytest.raises(TypeError, match="delete_topics\\(\\) argument 'topics' must be a list of str"):
        admin.delete_topics(bad)
    assert topic in admin.list_topics().topics


def test_create_partitions_of_something_that_is_not_new_partitions_is_a_type_error(admin, topic):
    with pytest.raises(TypeError, match="argument 'new_partitions' must be a list of NewPartitions"):
        admin.create_partitions([(topic, 2)])


def test_a_config_resource_of_an_unknown_type_is_a_value_error():
    with pytest.raises(ValueError, match="unknown resource type 'nope'"):
        shmlog.ConfigResource("nope", "t")


def test_a_config_resource_whose_name_is_not_a_str_is_a_type_error():
    with pytest.raises(TypeError, match="ConfigResource\\(\\) argument 'name' must be str"):
        shmlog.ConfigResource("topic", 5)


def test_describe_consumer_groups_of_ids_that_are_not_str_is_a_type_error(admin):
    with pytest.raises(TypeError, match="describe_consumer_groups\\(\\) argument 'group_ids' must be a list of str"):
        admin.describe_consumer_groups([1])


def test_delete_records_of_a_topic_partition_with_a_str_partition_is_a_type_error(admin, topic):
    with pytest.raises(TypeError, match="'str' object cannot be interpreted as an integer"):
        TopicPartition(topic, "0", 1)          # refused at construction, as confluent-kafka does
    tp = TopicPartition(topic, 0, 1)
    tp.partition = "0"                         # and by delete_records when set afterwards
    with pytest.raises(TypeError, match="TopicPartition.partition must be int"):
        admin.delete_records([tp])


def test_list_consumer_group_offsets_of_a_group_id_that_is_not_a_str_is_a_type_error(admin):
    with pytest.raises(TypeError, match="group_id' must be str"):
        admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(None)])
