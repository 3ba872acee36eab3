"""Follower replicas of a compacted topic are compacted too, each on its own (its own cleaner
checkpoint in its own log dir), as Kafka's cleaner compacts every replica a broker holds; the
mirror keeps appending to a follower whose sealed segments were cleaned."""
import os

from shmlog.broker import cleaner as cleaner_process
from shmlog.log.segment import list_segments
from tests.unit.test_cleaner import read_all

from ..integration.test_cli import ok, shmlog_cli
from .conftest import create, produce, wait_for


def cleaned_up_to(data_dir, key, table):
    st = ((cleaner_process.read(os.path.realpath(data_dir)) or {}).get(table) or {}).get(key) or {}
    return st.get("first_dirty_offset", 0) if st.get("cleans") else 0


def fully_cleaned(data_dir, pdir, key, table):
    bases = list_segments(pdir)
    return len(bases) > 1 and cleaned_up_to(data_dir, key, table) == bases[-1]


def check_compacted(pdir, produced):
    """The log holds each key's latest record below its newest segment, every record at its
    offset, offsets increasing, and its newest segment whole."""
    got = read_all(pdir)
    active = list_segments(pdir)[-1]
    latest = {}
    for record in produced:
        if record[0] < active:
            latest[record[1]] = record
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets))
    assert set(got) <= set(produced)
    assert set(latest.values()) <= set(got)
    assert len([r for r in got if r[0] < active]) == len(latest)
    assert [r for r in got if r[0] >= active] == [r for r in produced if r[0] >= active]


def test_a_follower_replica_is_compacted_on_its_own_and_the_mirror_keeps_appending_to_it(replicated, data_dir):
    conf, admin, dirs = replicated(2, **{"log.cleaner.backoff.ms": 20})
    create(admin, "c", replication_factor=2, config={"cleanup.policy": "compact", "segment.bytes": "1024",
                                                     "min.cleanable.dirty.ratio": "0.01"})
    leader_index = admin.list_topics("c").topics["c"].partitions[0].leader
    follower_index = 1 - leader_index
    leader_dir = os.path.join(dirs[leader_index], "c-0")
    follower_dir = os.path.join(dirs[follower_index], "c-0")
    produced = []

    def more(n):
        start = len(produced)
        values = [b"v%d" % i for i in range(start, start + n)]
        keys = [b"k%d" % (i % 7) for i in range(start, start + n)]
        reports = produce(conf, "c", values, keys=keys)
        assert all(err is None for err, *_ in reports)
        produced.extend((offset, keys[i], value) for i, (_, _, offset, value) in enumerate(reports))

    more(200)
    follower_key = cleaner_process.follower_name("c", 0, follower_index)
    wait_for(lambda: fully_cleaned(data_dir, follower_dir, follower_key, "followers"), "the follower's clean")
    wait_for(lambda: fully_cleaned(data_dir, leader_dir, "c-0", "partitions"), "the leader's clean")
    check_compacted(follower_dir, produced)
    status = ok(shmlog_cli("log", "cleaner-status", "--data-dir", data_dir)).stdout
    assert follower_key in status and "c-0 " in status
    more(100)
    end = produced[-1][0] + 1
    wait_for(lambda: (read_all(follower_dir) or [(-1,)])[-1][0] == end - 1, "the mirror to copy the new records")
    wait_for(lambda: fully_cleaned(data_dir, follower_dir, follower_key, "followers"), "the follower's next clean")
    check_compacted(follower_dir, produced)
    wait_for(lambda: fully_cleaned(data_dir, leader_dir, "c-0", "partitions"), "the leader's next clean")
    check_compacted(leader_dir, produced)
