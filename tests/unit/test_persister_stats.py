"""The persister's fdatasync histogram (shmlog/broker/persister_stats.py) and how `shmlog top`
estimates its quantiles (shmlog/cli/observe.py)."""
import json
import os

from shmlog.broker import persister_stats as ps
from shmlog.cli.observe import FsyncHistogram, fsync_histograms


def test_durations_land_in_cumulative_buckets_with_inclusive_upper_bounds(tmp_path):
    os.mkdir(tmp_path / "run")
    stats = ps.FsyncStats(str(tmp_path))
    for seconds in (0.00005, 0.001, 0.0011, 0.3, 5.0):
        stats.observe("/logs", seconds)
    stats.maybe_write(0.0)
    written = ps.read(str(tmp_path))
    h = written["fsync"]["/logs"]
    assert written["bucket_bounds_seconds"] == list(ps.BOUNDS_S)
    assert dict(zip(ps.BOUNDS_S, h["buckets"])) == {0.0001: 1, 0.0005: 1, 0.001: 2, 0.002: 3, 0.005: 3, 0.01: 3,
                                                      0.025: 3, 0.05: 3, 0.1: 3, 0.25: 3, 1.0: 4}
    assert h["count"] == 5 and abs(h["sum_seconds"] - 5.30215) < 1e-9
    assert not [n for n in os.listdir(tmp_path / "run") if n.endswith(".tmp")]


def test_a_new_persister_continues_the_counts_it_finds(tmp_path):
    os.mkdir(tmp_path / "run")
    first = ps.FsyncStats(str(tmp_path))
    first.observe("/logs", 0.003)
    first.maybe_write(0.0)
    second = ps.FsyncStats(str(tmp_path))
    second.observe("/logs", 0.0002)
    second.maybe_write(0.0)
    h = ps.read(str(tmp_path))["fsync"]["/logs"]
    assert h["count"] == 2 and h["buckets"][:5] == [0, 1, 1, 1, 2]


def test_a_damaged_or_foreign_stats_file_is_ignored(tmp_path):
    os.mkdir(tmp_path / "run")
    with open(ps.path(str(tmp_path)), "w") as f:
        json.dump({"bucket_bounds_seconds": [1, 2], "fsync": {"/logs": {"buckets": [1], "count": 1}}}, f)
    assert ps.FsyncStats(str(tmp_path)).dirs == {}
    with open(ps.path(str(tmp_path)), "w") as f:
        f.write("{not json")
    assert ps.read(str(tmp_path)) is None
    assert ps.FsyncStats(str(tmp_path)).dirs == {}


def test_nothing_is_written_while_nothing_changed_and_at_most_once_a_second(tmp_path):
    os.mkdir(tmp_path / "run")
    stats = ps.FsyncStats(str(tmp_path))
    stats.maybe_write(100.0)
    assert ps.read(str(tmp_path)) is None
    stats.observe("/logs", 0.001)
    stats.maybe_write(100.0)
    stats.observe("/logs", 0.001)
    stats.maybe_write(100.5)
    assert ps.read(str(tmp_path))["fsync"]["/logs"]["count"] == 1
    stats.maybe_write(101.0)
    assert ps.read(str(tmp_path))["fsync"]["/logs"]["count"] == 2


def test_quantiles_interpolate_within_a_bucket_as_histogram_quantile_does():
    h = FsyncHistogram("/logs", [(0.001, 0), (0.002, 10), (0.005, 10)], 10, 0.015)
    assert abs(h.quantile(0.5) - 0.0015) < 1e-12
    assert abs(h.quantile(0.99) - 0.00199) < 1e-12
    above = FsyncHistogram("/logs", [(0.001, 0), (0.002, 0)], 5, 10.0)
    assert above.quantile(0.5) == 0.002   # all above the largest bound: that bound
    assert FsyncHistogram("/logs", [(0.001, 0)], 0, 0.0).quantile(0.5) is None


def test_status_stats_become_one_histogram_per_log_dir():
    stats = {"bucket_bounds_seconds": [0.001, 0.002], "fsync": {"/b": {"buckets": [1, 2], "count": 3,
                                                                          "sum_seconds": 0.01},
                                                                   "/a": {"buckets": "junk"}}}
    assert fsync_histograms(stats) == [FsyncHistogram("/b", [(0.001, 1), (0.002, 2)], 3, 0.01)]
    assert fsync_histograms(None) == []
