"""Transaction markers and the aborted-transaction index (shmlog/log/control_record.py)."""
import os

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


def test_aborted_overlapping_returns_the_transactions_that_touch_the_range(tmp_path):
    d = str(tmp_path)
    cr.append_aborted(d, 1, 0, 0, 5, 0)
    cr.append_aborted(d, 2, 0, 10, 20, 10)
    cr.append_aborted(d, 3, 1, 30, cr.OPEN_ENDED, 30)
    assert [e.producer_id for e in cr.aborted_overlapping(d, 0, 100)] == [1, 2, 3]
    assert [e.producer_id for e in cr.aborted_overlapping(d, 6, 10)] == []
    assert [e.producer_id for e in cr.aborted_overlapping(d, 20, 21)] == [2]
    assert [e.producer_id for e in cr.aborted_overlapping(d, 1000, 2000)] == [3]
    assert cr.aborted_overlapping(d, 5, 6)[0] == cr.AbortedTxn(1, 0, 0, 5, 0)


def test_trimming_to_the_log_start_offset_drops_the_entries_below_it_and_keeps_open_ended_ones(tmp_path):
    d = str(tmp_path)
    cr.append_aborted(d, 1, 0, 0, 5, 0)
    cr.append_aborted(d, 2, 0, 3, cr.OPEN_ENDED, 3)
    cr.append_aborted(d, 3, 0, 10, 20, 10)
    assert cr.trim_aborted(d, 6) == 1
    assert [e.producer_id for e in cr.read_aborted(d)] == [2, 3]
    assert cr.trim_aborted(d, 6) == 0
    assert cr.trim_aborted(d, 21) == 1
    assert [e.producer_id for e in cr.read_aborted(d)] == [2]


def test_the_generation_only_grows_through_trims_so_readers_never_miss_a_new_entry(tmp_path):
    d = str(tmp_path)
    for pid in range(3):
        cr.append_aborted(d, pid, 0, pid * 10, pid * 10 + 5, pid * 10)
    assert cr.aborted_generation(d) == 3
    cr.trim_aborted(d, 16)
    assert cr.aborted_generation(d) == 3 and len(cr.read_aborted(d)) == 1
    assert cr.append_aborted(d, 9, 0, 40, 45, 40) == 4
    cr.trim_aborted(d, 46)
    assert cr.append_aborted(d, 10, 0, 50, 55, 50) == 5


def test_a_reader_counts_a_transactional_batch_below_the_trimmed_offset_as_aborted(tmp_path):
    d = str(tmp_path)
    cr.append_aborted(d, 1, 0, 0, 5, 0)
    cr.append_aborted(d, 2, 0, 10, 12, 10)
    cr.trim_aborted(d, 8)
    index = cr.AbortedIndex(d)
    index.refresh(cr.aborted_generation(d))
    assert index.aborted(1, 0, 3) and index.aborted(7, 0, 7)       # below the log start: never returned
    assert index.aborted(2, 0, 11) and not index.aborted(2, 0, 13) and not index.aborted(7, 0, 8)


def index_file(d):
    with open(cr.index_path(d), "rb") as f:
        return f.read()


def test_a_followers_copy_of_the_index_stays_equal_to_the_leaders_through_trims_and_later_aborts(tmp_path):
    leader, follower = str(tmp_path / "leader"), str(tmp_path / "follower")
    os.makedirs(follower)
    for pid in range(5):
        cr.append_aborted(leader, pid, 0, pid * 10, pid * 10 + 5, pid * 10)
    cr.copy_index(leader, follower)
    cr.trim_aborted(leader, 36)              # the leader's file is rewritten shorter
    cr.append_aborted(leader, 7, 0, 60, 65, 60)
    cr.copy_index(leader, follower)
    assert index_file(follower) == index_file(leader)
    assert [e.producer_id for e in cr.read_aborted(follower)] == [4, 7]
    assert cr.aborted_generation(follower) == 6


def test_a_followers_copy_drops_entries_the_leaders_history_does_not_have(tmp_path):
    leader, follower = str(tmp_path / "leader"), str(tmp_path / "follower")
    cr.append_aborted(leader, 1, 0, 0, 5, 0)
    cr.append_aborted(follower, 1, 0, 0, 5, 0)
    cr.append_aborted(follower, 2, 0, 10, 15, 10)   # an abort of a history cut back
    cr.copy_index(leader, follower)
    assert [e.producer_id for e in cr.read_aborted(follower)] == [1]
    os.unlink(cr.index_path(leader))
    cr.copy_index(leader, follower)
    assert not os.path.exists(cr.index_path(follower))


def test_a_copy_leaves_out_a_torn_entry_of_an_append_in_progress(tmp_path):
    leader, follower = str(tmp_path / "leader"), str(tmp_path / "follower")
    os.makedirs(follower)
    cr.append_aborted(leader, 1, 0, 0, 5, 0)
    with open(cr.index_path(leader), "ab") as f:
        f.write(cr.ENTRY.pack(0, 2, 0, 10, 15, 10)[:20])
    cr.copy_index(leader, follower)
    assert len(index_file(follower)) == cr.ENTRY.size


def test_a_new_leader_takes_in_the_entries_of_the_old_leaders_index_it_lacks_once(tmp_path):
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    for pid in range(4):
        cr.append_aborted(old, pid, 0, pid * 10, pid * 10 + 5, pid * 10)
    cr.append_aborted(new, 0, 0, 0, 5, 0)
    cr.append_aborted(new, 1, 0, 10, 15, 10)
    cr.trim_aborted(old, 12)                 # the old leader trimmed what the new one still lists
    assert cr.merge_index(old, new) == 2
    assert [e.producer_id for e in cr.read_aborted(new)] == [0, 1, 2, 3]
    assert cr.aborted_generation(new) == 5   # never below the old leader's: readers re-read on the next abort
    assert cr.merge_index(old, new) == 0
