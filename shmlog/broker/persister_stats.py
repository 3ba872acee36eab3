"""The persister's fdatasync latency, per log dir, as Prometheus-style cumulative histograms.

The persister times each flush that had something to sync (PartitionLog.flush: the segment's
fdatasync, and the directory's after a roll) and rewrites DIR/run/persister-stats.json at most
once a second when something changed (a temporary file renamed over it, so a reader never
sees half of one). The supervisor's `status` op reads it and returns it as `persister_stats`;
`shmlog metrics` exports `shmlog_persister_fsync_seconds`, `shmlog top` shows p50/p99.

The file:
    {"persister_pid": 1234, "updated": <unix time>, "bucket_bounds_seconds": [0.0001, ...],
     "fsync": {"<log dir>": {"buckets": [<cumulative count at or below each bound>, ...],
                             "count": <all flushes, the +Inf bucket>, "sum_seconds": <total>}}}

A persister that starts again continues the counts of the file it finds (same bounds), so
the histogram only grows while the data dir lives, as a Prometheus counter should.
"""
import bisect
import json
import os
import time

from shmlog import control

FILE_NAME = "persister-stats.json"
BUCKET_BOUNDS_MS = (0.1, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000)
BOUNDS_S = tuple(ms / 1000 for ms in BUCKET_BOUNDS_MS)
WRITE_INTERVAL_S = 1.0


def path(data_dir):
    return os.path.join(control.run_dir(data_dir), FILE_NAME)


def read(data_dir):
    """The stats file's content, or None when there is none (or it cannot be read)."""
    try:
        with open(path(data_dir)) as f:
            stats = json.load(f)
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) else None


class FsyncStats:
    """Per log dir: counts per bucket (not cumulative: bucket i counts bounds[i-1] < d <= bounds[i],
    the last one everything above the largest bound), how many, and their total seconds."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.dirs = {}           # log dir -> [per-bucket counts (len(BOUNDS_S) + 1), count, sum seconds]
        self.dirty = False
        self.next_write = 0.0
        self._continue_from(read(data_dir))

    def _continue_from(self, old):
        if not old or tuple(old.get("bucket_bounds_seconds") or ()) != BOUNDS_S:
            return
        for log_dir, h in (old.get("fsync") or {}).items():
            try:
                cumulative = [int(c) for c in h["buckets"]] + [int(h["count"])]
                if len(cumulative) != len(BOUNDS_S) + 1:
                    continue
                counts = [cumulative[0]] + [b - a for a, b in zip(cumulative, cumulative[1:])]
                if min(counts) < 0:
                    continue
                self.dirs[log_dir] = [counts, int(h["count"]), float(h["sum_seconds"])]
            except (KeyError, TypeError, ValueError):
                continue

    def observe(self, log_dir, seconds):
        h = self.dirs.get(log_dir)
        if h is None:
            h = self.dirs[log_dir] = [[0] * (len(BOUNDS_S) + 1), 0, 0.0]
        h[0][bisect.bisect_left(BOUNDS_S, seconds)] += 1
        h[1] += 1
        h[2] += seconds
        self.dirty = True

    def as_dict(self):
        fsync = {}
        for log_dir, (counts, count, total) in sorted(self.dirs.items()):
            cumulative, running = [], 0
            for c in counts[:-1]:
                running += c
                cumulative.append(running)
            fsync[log_dir] = {"buckets": cumulative, "count": count, "sum_seconds": total}
        return {"persister_pid": os.getpid(), "updated": time.time(), "bucket_bounds_seconds": list(BOUNDS_S),
                "fsync": fsync}

    def maybe_write(self, now, force=False):
        """Rewrite the file if something changed and a second has passed (or force); never raises:
        the stats are not worth stopping the persister for."""
        if not self.dirty or (now < self.next_write and not force):
            return
        self.next_write = now + WRITE_INTERVAL_S
        target = path(self.data_dir)
        tmp = f"{target}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.as_dict(), f)
            os.replace(tmp, target)
            self.dirty = False
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
