"""Producer ids (shmlog/broker/producer_ids.py): reserved in durable blocks, so no id is handed
out twice in a data dir's life, whatever happens to the process that handed it out."""
import json
import os

import pytest

from shmlog.broker.producer_ids import ProducerIdAllocator, ProducerIdsUnavailable, ids_path


def test_ids_of_one_allocator_are_distinct_and_cross_block_boundaries(tmp_path):
    ids = ProducerIdAllocator(str(tmp_path), block_size=3)
    got = [ids.allocate() for _ in range(10)]
    assert got == list(range(10))


def test_an_allocator_started_after_another_skips_the_rest_of_its_block(tmp_path):
    first = ProducerIdAllocator(str(tmp_path), block_size=5)
    used = [first.allocate() for _ in range(2)]
    # A new allocator is what a restarted supervisor makes (the first one may still be running
    # its block in a process that was SIGKILLed: nothing of that block may come back).
    second = ProducerIdAllocator(str(tmp_path), block_size=5)
    assert second.allocate() == 5
    assert set(used).isdisjoint(range(5, 10))


def test_the_next_block_is_on_disk_before_an_id_of_the_current_one_is_handed_out(tmp_path):
    ids = ProducerIdAllocator(str(tmp_path), block_size=7)
    assert ids.allocate() == 0
    with open(ids_path(str(tmp_path))) as f:
        assert json.load(f)["next_block_start"] == 7


def test_a_damaged_block_file_refuses_ids_and_names_the_file(tmp_path):
    ProducerIdAllocator(str(tmp_path)).allocate()
    path = ids_path(str(tmp_path))
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(ProducerIdsUnavailable, match="producer_ids.json is damaged"):
        ProducerIdAllocator(str(tmp_path)).allocate()


def test_a_block_file_with_a_negative_start_is_refused(tmp_path):
    os.makedirs(tmp_path / "meta")
    with open(ids_path(str(tmp_path)), "w") as f:
        json.dump({"version": 1, "next_block_start": -4}, f)
    with pytest.raises(ProducerIdsUnavailable, match="next_block_start -4"):
        ProducerIdAllocator(str(tmp_path)).allocate()
