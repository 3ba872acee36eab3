"""SIGKILL of the log cleaner at every step of a clean: nothing is lost, nothing duplicated.

The cleaner runs in a child process on real segment files and kills itself (SIGKILL) at a
named point (SHMLOG_CLEANER_CRASH_AT, see shmlog/log/cleaner.py); recover_swaps() then runs
as the next cleaner would, and a reader must find every key's latest record at its offset,
each record at most once, offsets increasing; a second clean then gives the model exactly.
"""
import os
import signal
import subprocess
import sys

import pytest

from shmlog.log import cleaner
from shmlog.log.segment import list_segments
from tests.unit.test_cleaner import FORCE, NOW_MS, read_all, segment_ranges, write_log

CLEAN = ("import sys; from shmlog.log import cleaner; "
         "cleaner.clean(sys.argv[1], cleaner.Policy(0.0, 0, 2**63 - 1, 10**12), force=True)")
MERGE = ("import sys; from shmlog.log import cleaner; "
         "cleaner.clean(sys.argv[1], cleaner.Policy(0.0, 0, 2**63 - 1, 10**12, segment_bytes=2000), force=True)")


def workload():
    """40 single-record batches over 7 keys, with tombstones, one batch per small segment."""
    return [[(b"k%d" % (i % 7), None if i % 11 == 5 else b"v%d" % i, NOW_MS)] for i in range(40)]


def latest_below(records, end):
    latest = {}
    for offset, key, value in records:
        if offset < end:
            latest[key] = (offset, key, value)
    return sorted(latest.values())


@pytest.mark.parametrize("point", ["after-cleaned:1", "after-cleaned:5", "after-swap-rename:1",
                                   "after-swap-rename:3", "after-log-exchange:1", "after-log-exchange:4",
                                   "after-segment:2", "after-segment:9"])
def test_a_cleaner_killed_at_any_step_loses_nothing_and_duplicates_nothing(tmp_path, point):
    pdir = str(tmp_path / "t-0")
    write_log(pdir, workload(), segment_bytes=150)
    before = read_all(pdir)
    active = list_segments(pdir)[-1]
    env = {**os.environ, "SHMLOG_CLEANER_CRASH_AT": point}
    done = subprocess.run([sys.executable, "-c", CLEAN, pdir], env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL
    cleaner.recover_swaps(pdir)
    assert not [n for n in os.listdir(pdir) if n.endswith((".cleaned", ".swap"))]
    got = read_all(pdir)
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets))                  # no duplicates, increasing
    assert set(got) <= set(before)                          # every record is an original, at its offset
    assert set(latest_below(before, active)) <= set(got)    # every key's latest is still there
    assert [r for r in got if r[0] >= active] == [r for r in before if r[0] >= active]
    cleaner.clean(pdir, FORCE._replace(delete_retention_ms=10**12), NOW_MS, force=True)
    assert read_all(pdir) == latest_below(before, active) + [r for r in before if r[0] >= active]


@pytest.mark.parametrize("delay_ms", [5, 40, 120, 300])
def test_a_cleaner_sigkilled_at_a_random_moment_loses_nothing_and_duplicates_nothing(tmp_path, delay_ms):
    """The same check with a real SIGKILL from outside, delay_ms into a clean of a larger log
    (whatever step the clean is at then)."""
    pdir = str(tmp_path / "t-0")
    write_log(pdir, [[(b"k%d" % ((i * 7 + j) % 50), b"v%d" % i, NOW_MS) for j in range(20)] for i in range(600)],
              segment_bytes=8192)
    before = read_all(pdir)
    active = list_segments(pdir)[-1]
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('go\\n'); sys.stdout.flush(); "
                              + CLEAN, pdir], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "go\n"   # the interpreter is up; the clean starts now
    try:
        child.wait(delay_ms / 1000)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    child.stdout.close()
    cleaner.recover_swaps(pdir)
    got = read_all(pdir)
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets))
    assert set(got) <= set(before)
    assert set(latest_below(before, active)) <= set(got)
    cleaner.clean(pdir, FORCE._replace(delete_retention_ms=10**12), NOW_MS, force=True)
    assert read_all(pdir) == latest_below(before, active) + [r for r in before if r[0] >= active]


@pytest.mark.parametrize("point", ["after-cleaned:1", "after-swap-rename:2", "after-log-exchange:1",
                                   "after-log-exchange:2", "after-covered-unlink:1", "after-covered-unlink:4",
                                   "after-segment:2"])
def test_a_cleaner_killed_while_merging_segments_loses_nothing_and_duplicates_nothing(tmp_path, point):
    pdir = str(tmp_path / "t-0")
    write_log(pdir, workload(), segment_bytes=150)
    before = read_all(pdir)
    active = list_segments(pdir)[-1]
    subprocess.run([sys.executable, "-c", CLEAN, pdir], timeout=60, check=True)   # small cleaned segments
    cleaned = read_all(pdir)
    env = {**os.environ, "SHMLOG_CLEANER_CRASH_AT": point}
    done = subprocess.run([sys.executable, "-c", MERGE, pdir], env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL
    offsets = [o for o, _, _ in read_all(pdir)]
    assert offsets == sorted(set(offsets))                  # even before recovery: no record read twice
    cleaner.recover_swaps(pdir)
    assert not [n for n in os.listdir(pdir) if n.endswith((".cleaned", ".swap"))]
    bases = list_segments(pdir)
    ends = [end for _, end, _ in segment_ranges(pdir)]
    assert all(end <= next_base for end, next_base in zip(ends, bases[1:]))   # no segment overlaps the next
    assert read_all(pdir) == cleaned
    cleaner.clean(pdir, FORCE._replace(delete_retention_ms=10**12, segment_bytes=2000), NOW_MS, force=True)
    assert read_all(pdir) == latest_below(before, active) + [r for r in before if r[0] >= active]
