"""The listener's producer table: Kafka's rules for which idempotent batch may be appended next."""
import pytest

from shmlog.broker.kafka_listener.idempotence import (
    DUPLICATE_WINDOW,
    INVALID_PRODUCER_EPOCH,
    OUT_OF_ORDER_SEQUENCE_NUMBER,
    ProducerTable,
    Refused,
)


def appended(table, pid, epoch, seq, count, base):
    assert table.check("t", 0, pid, epoch, seq, count) is None
    table.note("t", 0, pid, epoch, seq, count, base)


def refused_code(table, *args):
    with pytest.raises(Refused) as raised:
        table.check("t", 0, *args)
    return raised.value.code


def test_a_producer_unknown_to_the_partition_may_start_at_any_sequence():
    assert ProducerTable().check("t", 0, 7, 0, 42, 3) is None


def test_the_next_batch_must_start_right_after_the_last_one():
    table = ProducerTable()
    appended(table, 7, 0, 0, 3, 100)
    assert table.check("t", 0, 7, 0, 3, 1) is None
    assert refused_code(table, 7, 0, 4, 1) == OUT_OF_ORDER_SEQUENCE_NUMBER


def test_a_retried_batch_within_the_window_is_answered_with_its_base_offset():
    table = ProducerTable()
    for i in range(DUPLICATE_WINDOW + 1):
        appended(table, 7, 0, i * 2, 2, 100 + i * 2)
    assert table.check("t", 0, 7, 0, 2, 2) == 102
    assert table.check("t", 0, 7, 0, 2 * DUPLICATE_WINDOW, 2) == 100 + 2 * DUPLICATE_WINDOW
    assert refused_code(table, 7, 0, 0, 2) == OUT_OF_ORDER_SEQUENCE_NUMBER, "older than the window"


def test_an_older_epoch_is_fenced_once_a_newer_one_wrote_or_was_handed_out():
    table = ProducerTable()
    appended(table, 7, 1, 0, 1, 0)
    assert refused_code(table, 7, 0, 1, 1) == INVALID_PRODUCER_EPOCH
    table.note_epoch(9, 3)
    assert refused_code(table, 9, 2, 0, 1) == INVALID_PRODUCER_EPOCH
    assert table.check("t", 0, 9, 3, 0, 1) is None


def test_a_new_epoch_starts_at_sequence_zero():
    table = ProducerTable()
    appended(table, 7, 0, 0, 5, 0)
    assert refused_code(table, 7, 1, 5, 1) == OUT_OF_ORDER_SEQUENCE_NUMBER
    assert table.check("t", 0, 7, 1, 0, 1) is None


def test_sequences_wrap_to_zero_after_int32_max():
    table = ProducerTable()
    appended(table, 7, 0, 0x7FFFFFFE, 2, 0)
    assert table.check("t", 0, 7, 0, 0, 1) is None
