"""The open-file cache of the persister and of each mirror: how many partitions keep their
segment files open.

A partition whose writer is open holds FILES_PER_PARTITION descriptors (the directory lock,
the active segment, its two indexes). Idle partitions need none: their writers are parked
(SegmentWriter.park: files closed, the lock given up, everything else kept) once more than
`limit` are open, least recently used first, and take their files again at their next write.
Parking fdatasyncs what a partition wrote and has not flushed yet (earlier than its flush.ms
would, never later); one whose log dir failed or that is rewriting after a failed sync stays
open, so the limit is exceeded only by partitions in trouble.

The limit comes from the process's descriptor limit (raised to the hard limit at start,
fd_limit.py), less a reserve for everything else the persister opens.
"""
import itertools
import resource
from collections import OrderedDict

FILES_PER_PARTITION = 4
RESERVED_FILES = 128     # sockets, logs, the doorbell, producer snapshots and index rewrites
MIN_OPEN_PARTITIONS = 8


def limit_from_rlimit():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MIN_OPEN_PARTITIONS, (soft - RESERVED_FILES) // FILES_PER_PARTITION)


class OpenFiles:
    """Partitions whose writers hold files, least recently used first."""

    def __init__(self, limit):
        self.limit = limit
        self.open = OrderedDict()    # persister.PartitionLog or mirror.FollowerLog -> None

    def used(self, part):
        """`part` did I/O now (its writer may have taken its files again); parks the least
        recently used others when that made too many open."""
        if part.writer.parked:
            self.open.pop(part, None)
            return
        self.open[part] = None
        self.open.move_to_end(part)
        if len(self.open) > self.limit:
            self.trim()

    def forget(self, part):
        self.open.pop(part, None)

    def trim(self):
        """Park the least recently used partitions until at most `limit` are open."""
        excess = len(self.open) - self.limit
        if excess <= 0:
            return
        parked = []
        for part in itertools.islice(self.open, len(self.open) - 1):   # never the one just used
            if part.park():
                parked.append(part)
                if len(parked) == excess:
                    break
        for part in parked:
            del self.open[part]
