"""TopicPartition checks its arguments as confluent-kafka's does (PyArg "s|iLsi"): the same
exception types and messages, numpy ints taken as ints; bools refused (a shmlog rule)."""
import numpy as np
import pytest

from shmlog import OFFSET_INVALID, TopicPartition


@pytest.mark.parametrize("args, exc, message", [
    ((1,), TypeError, "argument 1 must be str, not int"),
    ((b"t",), TypeError, "argument 1 must be str, not bytes"),
    ((None,), TypeError, "argument 1 must be str, not None"),
    (("t", "0"), TypeError, "'str' object cannot be interpreted as an integer"),
    (("t", 1.0), TypeError, "'float' object cannot be interpreted as an integer"),
    (("t", None), TypeError, "'NoneType' object cannot be interpreted as an integer"),
    (("t", True), TypeError, "argument 'partition' must be int, not bool"),
    (("t", 0, "5"), TypeError, "'str' object cannot be interpreted as an integer"),
    (("t", 0, 5.0), TypeError, "'float' object cannot be interpreted as an integer"),
    (("t", 0, False), TypeError, "argument 'offset' must be int, not bool"),
    (("t", 0, 5, 1), TypeError, "argument 4 must be str, not int"),
    (("t", 0, 5, b"m"), TypeError, "argument 4 must be str, not bytes"),
    (("t", 0, 5, "m", 1.5), TypeError, "'float' object cannot be interpreted as an integer"),
    (("t", 0, 5, "m", True), TypeError, "argument 'leader_epoch' must be int, not bool"),
    (("t", 2**31), OverflowError, "signed integer is greater than maximum"),
    (("t", -2**31 - 1), OverflowError, "signed integer is less than minimum"),
    (("t", 0, 2**63), OverflowError, "int too big to convert"),
    (("t", 0, 5, "m", 2**31), OverflowError, "signed integer is greater than maximum"),
])
def test_a_wrong_argument_type_is_refused_as_confluent_kafka_refuses_it(args, exc, message):
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)")):
        TopicPartition(*args)


def test_good_arguments_are_kept_and_numpy_ints_become_ints():
    tp = TopicPartition("t", np.int64(3), np.int32(7), "meta", 2)
    assert (tp.topic, tp.partition, tp.offset, tp.metadata, tp.leader_epoch) == ("t", 3, 7, "meta", 2)
    assert type(tp.partition) is int and type(tp.offset) is int
    tp = TopicPartition("t")
    assert (tp.partition, tp.offset, tp.metadata, tp.leader_epoch) == (-1, OFFSET_INVALID, None, None)
    assert TopicPartition("t", 0, 5, None, None).metadata is None
    assert TopicPartition("t", 0, 5, "m", -1).leader_epoch is None   # as confluent-kafka: negative is none
    assert TopicPartition("t", -2**31, -2**63).offset == -2**63
