"""str()/repr() of NewTopic and KafkaError as confluent-kafka 2.16 prints them
(checked against confluent_kafka installed next to shmlog; docs/compatibility.md, "Printed forms")."""
import pytest

from shmlog import KafkaError, KafkaException
from shmlog.admin import NewTopic
from shmlog.errors import reason_of


def test_a_new_topic_prints_as_confluent_kafka_prints_it_without_quotes_or_spaces():
    assert repr(NewTopic("t", num_partitions=3)) == str(NewTopic("t", 3, 2)) == "NewTopic(topic=t,num_partitions=3)"


def test_a_new_topic_with_the_default_partition_count_prints_only_its_topic():
    assert repr(NewTopic("t")) == "NewTopic(topic=t)"


def test_str_of_a_kafka_error_is_its_full_form_as_in_confluent_kafka():
    e = KafkaError(KafkaError._MSG_TIMED_OUT, "boom")
    assert str(e) == repr(e) == 'KafkaError{code=_MSG_TIMED_OUT,val=-192,str="boom"}'


def test_a_kafka_errors_str_method_is_still_the_reason_text():
    assert KafkaError(KafkaError._MSG_TIMED_OUT, "boom").str() == "boom"


def test_str_of_a_kafka_exception_is_its_errors_full_form_as_in_confluent_kafka():
    # confluent-kafka's KafkaException is a plain Exception whose args[0] is the KafkaError.
    assert str(KafkaException(KafkaError(3, "x"))) == 'KafkaError{code=UNKNOWN_TOPIC_OR_PART,val=3,str="x"}'


def test_a_kafka_exception_made_from_a_code_prints_the_same_as_one_made_from_its_error():
    assert str(KafkaException(KafkaError._TIMED_OUT)) == str(KafkaException(KafkaError(KafkaError._TIMED_OUT)))


def test_a_fatal_kafka_error_says_so_first_as_in_confluent_kafka():
    e = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    assert repr(e) == 'KafkaError{FATAL,code=_FATAL,val=-150,str="fenced"}'


@pytest.mark.parametrize("code, text", [
    (KafkaError._MSG_TIMED_OUT, "Local: Message timed out"),
    (KafkaError._PARTITION_EOF, "Broker: No more messages"),
    (KafkaError._UNSUPPORTED_FEATURE, "Local: Required feature not supported by broker"),
    (KafkaError.UNKNOWN_TOPIC_OR_PART, "Broker: Unknown topic or partition"),
    (KafkaError.INVALID_CONFIG, "Broker: Configuration is invalid"),
    (KafkaError.NO_ERROR, "Success"),
])
def test_a_kafka_error_made_without_a_reason_has_librdkafkas_text_for_its_code(code, text):
    e = KafkaError(code)
    assert e.str() == text
    assert str(e) == f'KafkaError{{code={e.name()},val={code},str="{text}"}}'


def test_every_code_shmlog_defines_has_librdkafkas_text():
    codes = {v for k, v in vars(KafkaError).items() if k.isupper() or k.startswith("_") and k[1:].isupper()}
    assert codes and all(not KafkaError(c).str().startswith("Err-") for c in codes)


def test_every_code_shmlog_defines_is_declared_for_type_checkers():
    codes = {k for k, v in vars(KafkaError).items() if isinstance(v, int) and (k.isupper() or k[1:].isupper())}
    assert codes and codes <= set(KafkaError.__annotations__)


def test_an_unknown_code_without_a_reason_says_what_librdkafka_says():
    assert KafkaError(-9999).str() == "Err--9999?"


def test_reason_of_a_kafka_exception_is_its_errors_text_alone():
    assert reason_of(KafkaException(KafkaError(3, "no such topic 't'"))) == "no such topic 't'"
    assert reason_of(ValueError("bad")) == "bad"
