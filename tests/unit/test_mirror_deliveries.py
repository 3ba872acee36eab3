"""Where a mirrored batch's records landed in the target partition, from their delivery reports
(shmlog/bridge/mirror.py Deliveries): every record's report, or only the two ends'."""
import pytest

from shmlog.bridge.mirror import Deliveries
from shmlog.bridge.syncs import PartitionSyncs, runs_of


class Delivered:
    """What a delivery report hands the callback: only offset() is read."""

    def __init__(self, offset):
        self._offset = offset

    def offset(self):
        return self._offset


def reported(*offsets, errors=()):
    d = Deliveries("m", "t-0")
    for offset in offsets:
        d.report(None, Delivered(offset))
    for err in errors:
        d.report(err, None)
    return d


def test_every_record_reported_gives_every_offset_in_produce_order_whatever_order_the_reports_came_in():
    assert list(reported(12, 10, 11).downstream(3)) == [10, 11, 12]


def test_two_ends_that_span_exactly_n_offsets_place_the_records_one_after_the_other():
    assert list(reported(100, 104).downstream(5)) == [100, 101, 102, 103, 104]


def test_two_ends_with_a_wider_span_give_the_middle_records_the_lowest_offsets_they_can_have():
    assert list(reported(100, 109).downstream(4)) == [100, 101, 102, 109]


def test_a_group_translated_into_a_wider_span_re_reads_and_never_skips():
    upstream = [50, 51, 52, 53]
    true_downstream = [100, 103, 106, 109]            # another producer wrote between them
    syncs = PartitionSyncs()
    syncs.add(runs_of(list(zip(upstream, reported(100, 109).downstream(4)))), 54)
    for committed, truth in zip(upstream, true_downstream):
        assert syncs.translate(committed) <= truth
    assert syncs.translate(54) == 110


def test_ends_spanning_fewer_offsets_than_records_are_refused():
    with pytest.raises(RuntimeError, match=r"delivery reports at \[100, 102\] for 5 records"):
        reported(100, 102).downstream(5)


def test_a_failed_delivery_is_refused_with_its_error():
    with pytest.raises(RuntimeError, match="m: t-0: records not delivered: boom"):
        reported(100, errors=["boom"]).downstream(2)
