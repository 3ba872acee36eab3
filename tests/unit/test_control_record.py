"""Transaction markers and the aborted-transaction index (shmlog/log/control_record.py)."""
import pytest

from shmlog.log import control_record as cr


def test_a_marker_record_round_trips_in_kafkas_control_record_format():
    assert cr.marker_key(True) == b"\x00\x00\x00\x01" and cr.marker_key(False) == b"\x00\x00\x00\x00"
    assert cr.decode_marker(cr.marker_key(True), cr.marker_value(7)) == (True, 7)
    assert cr.decode_marker(cr.marker_key(False), cr.marker_value(0)) == (False, 0)


def test_a_record_that_is_not_a_marker_is_refused():
    with pytest.raises(ValueError):
        cr.decode_marker(b"\x00\x00\x00\x05", cr.marker_value())
    with pytest.raises(ValueError):
        cr.decode_marker(None, None)


def test_a_plain_abort_covers_its_offsets_only(tmp_path):
    cr.append_aborted(str(tmp_path), 7, 0, 10, 20, 10)
    index = cr.AbortedIndex(str(tmp_path))
    index.refresh(1)
    assert index.aborted(7, 0, 10) and index.aborted(7, 0, 20)
    assert not index.aborted(7, 0, 9) and not index.aborted(7, 0, 21) and not index.aborted(8, 0, 15)


def test_an_abort_that_fenced_its_producer_covers_every_later_batch_of_that_epoch_only(tmp_path):
    cr.append_aborted(str(tmp_path), 7, 3, 10, cr.OPEN_ENDED, 10)
    index = cr.AbortedIndex(str(tmp_path))
    index.refresh(1)
    assert index.aborted(7, 3, 10) and index.aborted(7, 3, 10_000)
    assert not index.aborted(7, 4, 10_000) and not index.aborted(7, 3, 9)


def test_the_index_is_read_again_only_when_its_count_moves(tmp_path):
    index = cr.AbortedIndex(str(tmp_path))
    index.refresh(0)
    assert cr.append_aborted(str(tmp_path), 1, 0, 0, 5, 0) == 1
    index.refresh(0)
    assert not index.aborted(1, 0, 3)
    index.refresh(1)
    assert index.aborted(1, 0, 3)


def test_a_torn_entry_left_by_a_crash_is_cut_before_the_next_append(tmp_path):
    cr.append_aborted(str(tmp_path), 1, 0, 0, 5, 0)
    with open(cr.index_path(str(tmp_path)), "ab") as f:
        f.write(b"\x00" * 7)
    assert cr.append_aborted(str(tmp_path), 2, 0, 6, 9, 6) == 2
    assert [e[0] for e in cr.read_aborted(str(tmp_path))] == [1, 2]
