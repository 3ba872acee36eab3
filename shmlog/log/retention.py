"""Retention: which old segments go, and where the log starts.

Kafka's rules, applied by the persister every `log.retention.check.interval.ms` (and at
once when delete_records moves the log start offset):

- retention.ms: a segment whose largest record timestamp is more than retention.ms old;
- retention.bytes: the oldest segments, while the partition stays at or above
  retention.bytes without them;
- the log start offset (delete_records): a segment whose every offset lies below it.

Only whole segments are deleted, oldest first, and each rule stops at the first segment it
must keep (a prefix, as in Kafka). The time and size rules apply when cleanup.policy
contains "delete" (so "compact,delete" both compacts, in the log cleaner, and deletes by
age and size here); sizes are those of the files as they are now, after any cleaning.
The active segment goes too when every record in it qualifies; the writer then rolls an
empty segment at the log end offset first, so offsets continue.

The log start offset is the larger of: the oldest segment's base offset, this partition's
checkpoint file (what retention and delete_records established before), and what the
supervisor publishes in the ring header (`persist.log_start_offset`; delete_records raises
it there, with a durable copy in the topic metadata). It may lie inside a segment: readers
never return records below it (consumers check the ring header), and that segment goes
once all of it is below.
"""
import os

CHECKPOINT_NAME = "log-start-offset"


def checkpoint_path(partition_dir):
    return os.path.join(partition_dir, CHECKPOINT_NAME)


def read_checkpoint(partition_dir, name=CHECKPOINT_NAME):
    """The offset recorded in a checkpoint file of partition_dir (0 when none or unreadable).

    name: this module's log start offset checkpoint, or the log cleaner's
    (shmlog.log.cleaner.CHECKPOINT_NAME)."""
    try:
        with open(os.path.join(partition_dir, name)) as f:
            return max(0, int(f.read().strip() or 0))
    except (FileNotFoundError, ValueError):
        return 0


def write_checkpoint(partition_dir, offset, name=CHECKPOINT_NAME):
    """Record an offset durably (temp file, fsync, rename, fsync the directory)."""
    path = os.path.join(partition_dir, name)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, b"%d\n" % offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(partition_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def deletable(segments, now_ms, retention_ms, retention_bytes, log_start_offset, delete_policy=True):
    """How many of the oldest segments may be deleted, and the rule that took the most.

    segments: [(base offset, end offset, size bytes, largest timestamp ms)], oldest first,
    the last one being the active segment (end offset = log end offset). Returns
    (count, reason) with reason one of "log start offset", "retention.ms",
    "retention.bytes" or None. An empty active segment is never counted.
    """
    usable = [s for i, s in enumerate(segments) if i < len(segments) - 1 or s[1] > s[0]]
    counts = {"log start offset": _prefix(usable, lambda s: s[1] <= log_start_offset)}
    if delete_policy and retention_ms is not None and retention_ms >= 0:
        counts["retention.ms"] = _prefix(usable, lambda s: now_ms - s[3] > retention_ms)
    if delete_policy and retention_bytes is not None and retention_bytes >= 0:
        excess = sum(s[2] for s in segments) - retention_bytes
        n = 0
        for s in usable:
            if excess - s[2] < 0:
                break
            excess -= s[2]
            n += 1
        counts["retention.bytes"] = n
    reason = max(counts, key=lambda k: counts[k])
    return (counts[reason], reason) if counts[reason] else (0, None)


def _prefix(segments, predicate):
    n = 0
    for s in segments:
        if not predicate(s):
            break
        n += 1
    return n
