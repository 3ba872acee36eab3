"""OffsetForLeaderEpoch's answer from a leader-epoch checkpoint (Kafka's endOffsetFor)."""
import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")

from shmlog.broker.kafka_listener.epochs import UNDEFINED, end_offset_for  # noqa: E402

CHECKPOINT = [(0, 0), (2, 100), (5, 250)]


def test_the_current_epoch_ends_at_the_log_end():
    assert end_offset_for(CHECKPOINT, 5, 400) == (5, 400)


def test_an_older_epoch_ends_where_the_next_newer_one_begins():
    assert end_offset_for(CHECKPOINT, 0, 400) == (0, 100)
    assert end_offset_for(CHECKPOINT, 2, 400) == (2, 250)


def test_an_epoch_between_two_known_ones_is_answered_as_the_older_of_them():
    assert end_offset_for(CHECKPOINT, 3, 400) == (2, 250)


def test_an_epoch_older_than_any_known_ends_where_the_oldest_begins():
    assert end_offset_for([(3, 40), (4, 90)], 1, 400) == (1, 40)


def test_an_epoch_newer_than_the_current_one_or_none_asked_is_undefined():
    assert end_offset_for(CHECKPOINT, 6, 400) == (UNDEFINED, UNDEFINED)
    assert end_offset_for(CHECKPOINT, -1, 400) == (UNDEFINED, UNDEFINED)
