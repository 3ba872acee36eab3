"""The listener's checks of produced record batches (shmlog/broker/kafka_listener/batches.py):
every refusal names what is wrong and carries Kafka's error code."""
import struct

import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")

from shmlog._native import lib  # noqa: E402
from shmlog.broker.kafka_listener import batches  # noqa: E402
from shmlog.log.batch import HEADER, RecordsBuilder, record_size  # noqa: E402


def batch(values=(b"v",), magic=2, attributes=0, count=None, last_delta=None, fix_crc=True, producer=(-1, -1, -1)):
    builder = RecordsBuilder()
    for v in values:
        builder.add(b"k", v, 1000, None, record_size(b"k", v))
    records, base_ts, max_ts = builder.encode()
    n = len(builder)
    header = HEADER.pack(0, HEADER.size - 12 + len(records), 0, magic, 0, attributes,
                         n - 1 if last_delta is None else last_delta, base_ts, max_ts, *producer,
                         n if count is None else count)
    body = bytearray(header + bytes(records))
    if fix_crc:
        struct.pack_into(">I", body, 17, lib.shmlog_crc32c(0, bytes(body[21:]), len(body) - 21))
    return bytes(body)


def refusal(data, limit=1 << 20):
    with pytest.raises(batches.BadBatch) as exc:
        batches.split(data, limit)
    return exc.value.code, str(exc.value)


def test_two_valid_batches_in_one_request_are_both_accepted_with_their_record_counts():
    found = batches.split(batch((b"a", b"b")) + batch((b"c",)), 1 << 20)
    assert [fields[12] for _, fields in found] == [2, 1]


def test_a_batch_whose_crc_does_not_match_is_corrupt_message():
    data = bytearray(batch())
    data[-1] ^= 1
    assert refusal(bytes(data))[0] == batches.CORRUPT_MESSAGE


def test_a_batch_longer_than_the_request_is_corrupt_message():
    code, text = refusal(batch()[:-3])
    assert code == batches.CORRUPT_MESSAGE and "bytes long" in text


def test_a_request_with_a_few_bytes_after_the_last_batch_is_corrupt_message():
    assert refusal(batch() + b"\0" * 5)[0] == batches.CORRUPT_MESSAGE


def test_an_old_message_format_is_unsupported_for_message_format():
    assert refusal(batch(magic=1))[0] == batches.UNSUPPORTED_FOR_MESSAGE_FORMAT


def test_a_batch_over_max_message_bytes_is_message_too_large():
    data = batch((b"x" * 1000,))
    code, text = refusal(data, limit=len(data) - 1)
    assert code == batches.MESSAGE_TOO_LARGE and "max.message.bytes" in text


def test_a_control_or_transactional_batch_is_an_invalid_record():
    assert refusal(batch(attributes=0x20))[0] == batches.INVALID_RECORD
    assert refusal(batch(attributes=0x10))[0] == batches.INVALID_RECORD


def test_an_idempotent_batch_without_a_producer_epoch_or_base_sequence_is_an_invalid_record():
    assert batches.split(batch(producer=(7, 0, 0)), 1 << 20)[0][1][9] == 7
    code, text = refusal(batch(producer=(7, -1, 0)))
    assert code == batches.INVALID_RECORD and "producer id 7" in text
    assert refusal(batch(producer=(7, 0, -1)))[0] == batches.INVALID_RECORD


def test_a_record_count_that_cannot_fit_in_the_batch_is_corrupt_message():
    code, text = refusal(batch((b"a",), count=1000, last_delta=999))
    assert code == batches.CORRUPT_MESSAGE and "cannot fit" in text


def test_the_rules_are_checked_in_order_and_the_first_broken_one_is_named():
    assert refusal(batch(magic=1, attributes=0x20))[0] == batches.UNSUPPORTED_FOR_MESSAGE_FORMAT
    assert refusal(batch(attributes=0x20, last_delta=5))[0] == batches.INVALID_RECORD


def test_a_record_count_that_disagrees_with_the_last_offset_delta_is_an_invalid_record():
    assert refusal(batch((b"a", b"b"), last_delta=5))[0] == batches.INVALID_RECORD


def test_a_record_count_larger_than_the_records_held_is_corrupt_message():
    assert refusal(batch((b"a",), count=3, last_delta=2))[0] == batches.CORRUPT_MESSAGE


def test_an_empty_records_field_is_an_invalid_record():
    assert refusal(b"")[0] == batches.INVALID_RECORD
