"""The mirror's offset syncs (shmlog/bridge/syncs.py): runs, their records, and the translation
of a committed source offset to the target's numbering."""
import pytest

from shmlog.bridge.syncs import PartitionSyncs, SyncLog, decode, encode, runs_of


def test_runs_of_merges_pairs_that_advance_together_on_both_sides():
    assert runs_of([(0, 10), (1, 11), (2, 12), (4, 13), (5, 15)]) == [[0, 10, 3], [4, 13, 1], [5, 15, 1]]


def test_a_sync_record_decodes_to_what_was_encoded():
    assert decode(*encode("t", 3, [[5, 9, 2]], 8)) == ("t", 3, [[5, 9, 2]], 8)


@pytest.mark.parametrize("key, value", [(b"{}", b"{}"), (b"not json", b"{}"),
                                        (b'{"topic":"t","partition":0}', b'{"runs":[[1,2]],"next":3}')])
def test_a_record_that_is_not_a_sync_is_refused_by_decode(key, value):
    with pytest.raises(ValueError, match="not an offset-sync record"):
        decode(key, value)


def syncs():
    """Upstream 10..14 -> downstream 0..4 (one transaction), a marker downstream, upstream 20..21
    (after a gap: an aborted transaction upstream) -> 6..7; the mirror's position is upstream 25."""
    s = PartitionSyncs()
    s.add([[10, 0, 5]], 15)
    s.add([[20, 6, 2]], 25)
    return s


@pytest.mark.parametrize("committed, translated", [
    (10, 0),    # nothing consumed of the mirrored range: its first record
    (12, 2),    # inside a run: the same record's downstream offset
    (15, 6),    # in the gap: the first mirrored record at or after it
    (17, 6),
    (21, 7),
    (22, 8),    # after the last mirrored record, within what the mirror read: just after it downstream
    (25, 8),
    (0, 0),     # before anything mirrored: the first mirrored record
])
def test_a_committed_offset_translates_to_the_first_mirrored_record_at_or_after_it(committed, translated):
    assert syncs().translate(committed) == translated


def test_an_offset_the_mirror_has_not_reached_has_no_translation():
    assert syncs().translate(26) is None
    assert PartitionSyncs().translate(0) is None
    assert SyncLog().translate("t", 0, 0) is None


def test_a_range_mirrored_twice_keeps_the_first_copy_and_the_latest_position():
    s = PartitionSyncs()
    s.add([[0, 0, 10]], 10)
    s.add([[5, 10, 5]], 10)     # an at-least-once restart copied 5..9 again
    assert s.translate(7) == 7
    assert s.next_upstream == 10


def test_consecutive_batches_that_continue_a_run_are_kept_as_one():
    s = PartitionSyncs()
    s.add([[0, 0, 10]], 10)
    s.add([[10, 10, 10]], 20)
    assert s.runs == [[0, 0, 20]]
