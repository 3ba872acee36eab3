"""A replica's leader epochs: Kafka's `leader-epoch-checkpoint` file in each partition directory.

    0                 the format version
    2                 the number of entries
    0 0               leader epoch, the first offset written in it
    1 1534

Each replica (the leader's persister, each follower's mirror) adds an entry when it writes the
first batch of a newer epoch (the partitionLeaderEpoch producers stamp from the ring header).
A replica that rejoins compares its newest epoch with the leader's file: what it holds at or
above the offset where the leader's next epoch began is history the leader does not share,
and is cut (Kafka's OffsetsForLeaderEpoch truncation).
"""
import os
import struct

FILE_NAME = "leader-epoch-checkpoint"
_EPOCH = struct.Struct(">i")
EPOCH_FIELD = 12   # partitionLeaderEpoch inside a RecordBatch v2 (csrc/shmlog_layout.h)


def read(pdir):
    """[(epoch, start offset)], oldest first; [] for a missing or unreadable file."""
    try:
        with open(os.path.join(pdir, FILE_NAME)) as f:
            lines = f.read().split("\n")
        count = int(lines[1])
        entries = [tuple(int(x) for x in line.split()) for line in lines[2:2 + count]]
        return [(e, o) for e, o in entries]
    except (OSError, ValueError, IndexError, TypeError):
        return []


def write(pdir, entries):
    """Replace the file (temp file, fsync, rename, fsync the directory)."""
    path = os.path.join(pdir, FILE_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"0\n{len(entries)}\n" + "".join(f"{e} {o}\n" for e, o in entries))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(pdir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def batch_epoch(view, pos):
    return _EPOCH.unpack_from(view, pos + EPOCH_FIELD)[0]


class EpochCache:
    """The entries of one replica, kept in memory and written when an epoch begins."""

    def __init__(self, pdir):
        self.pdir = pdir
        self.entries = read(pdir)

    @property
    def latest(self):
        return self.entries[-1][0] if self.entries else -1

    def note(self, view, batches):
        """batches: [(position in view, base offset)] just written, in order."""
        if not batches or batch_epoch(view, batches[-1][0]) <= self.latest:
            return
        for pos, base in batches:
            epoch = batch_epoch(view, pos)
            if epoch > self.latest:
                self.entries.append((epoch, base))
        write(self.pdir, self.entries)

    def truncate_to(self, end):
        """The log was cut at `end`: entries starting at or past it go."""
        kept = [(e, o) for e, o in self.entries if o < end]
        if kept != self.entries:
            self.entries = kept
            write(self.pdir, kept)


def divergence(follower_entries, leader_entries, leader_end):
    """Where a follower's log stops agreeing with the leader's (Kafka's OffsetsForLeaderEpoch):
    take the leader's newest epoch not above the follower's newest; it ends, in the leader's
    history, where the leader's next epoch began (or at the leader's log end), and in the
    follower's where the follower's next epoch began; the smaller of the two. None when the
    follower has no epochs to compare."""
    if not follower_entries:
        return None
    newest = follower_entries[-1][0]
    shared = [e for e, _ in leader_entries if e <= newest]
    if not shared:
        return leader_entries[0][1] if leader_entries else leader_end
    epoch = max(shared)
    leader_side = min((o for e, o in leader_entries if e > epoch), default=leader_end)
    follower_side = min((o for e, o in follower_entries if e > epoch), default=leader_side)
    return min(leader_side, follower_side)
