"""str()/repr() of NewTopic and KafkaError as confluent-kafka 2.16 prints them
(checked against confluent_kafka installed next to shmlog; docs/compatibility.md, "Printed forms")."""
from shmlog import KafkaError, KafkaException
from shmlog.admin import NewTopic


def test_a_new_topic_prints_as_confluent_kafka_prints_it_without_quotes_or_spaces():
    assert repr(NewTopic("t", num_partitions=3)) == str(NewTopic("t", 3, 2)) == "NewTopic(topic=t,num_partitions=3)"


def test_a_new_topic_with_the_default_partition_count_prints_only_its_topic():
    assert repr(NewTopic("t")) == "NewTopic(topic=t)"


def test_str_of_a_kafka_error_is_its_full_form_as_in_confluent_kafka():
    e = KafkaError(KafkaError._MSG_TIMED_OUT, "boom")
    assert str(e) == repr(e) == 'KafkaError{code=_MSG_TIMED_OUT,val=-192,str="boom"}'


def test_a_kafka_errors_str_method_is_still_the_reason_text():
    assert KafkaError(KafkaError._MSG_TIMED_OUT, "boom").str() == "boom"


def test_str_of_a_kafka_exception_stays_its_errors_reason_text():
    # confluent-kafka prints the KafkaError{...} form here too; shmlog's messages nest str(exc) in
    # their own reasons, so this one difference stays (docs/compatibility.md, "Printed forms").
    assert str(KafkaException(KafkaError(3, "x"))) == "x"
