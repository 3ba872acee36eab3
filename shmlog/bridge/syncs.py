"""Offset syncs: which target (downstream) offset each mirrored source (upstream) record got.

The mirror writes one sync record per source partition per batch to the internal topic
`mirror.<name>.offset-syncs.internal` on the target cluster (one partition), in the same
transaction as the batch's records when the mirror is exactly-once. Key: the JSON
{"topic", "partition"} of the source partition. Value: the JSON {"runs": [[u, d, n], ...],
"next": N}: upstream offsets u..u+n-1 went to downstream offsets d..d+n-1, and N is the source
position after the batch (it can be past the last record: transaction markers, compacted
gaps). These records are both the mirror's checkpoint (a restart resumes every partition at
its last N) and the history that group offsets are translated with.

Translation (MirrorMaker 2's checkpoint rule, made exact by keeping every run): a group whose
committed source offset is U has consumed every record below U. Its downstream offset is the
downstream offset of the first mirrored record whose upstream offset is >= U, or, when every
mirrored record is below U and U <= N, the downstream offset just after the last mirrored
record. An offset past N (not mirrored yet), or of a partition nothing was mirrored from, has
no translation yet. So a translated group never skips a record and re-reads none (except
where another producer wrote into the target partition during an exactly-once batch: the
mirror then knows only that batch's two ends, and the runs between them hold the lowest
offsets the records can have, so a group translated there re-reads a few: mirror.Deliveries).

Pure data: no I/O here (the mirror reads and writes the topic).
"""
from __future__ import annotations

import bisect
import dataclasses

import orjson


def sync_topic(name: str) -> str:
    return f"mirror.{name}.offset-syncs.internal"


def runs_of(pairs: list[tuple[int, int]]) -> list[list[int]]:
    """[(upstream, downstream)] in upstream order -> [[u, d, n]]: maximal runs where both advance by 1."""
    runs: list[list[int]] = []
    for u, d in pairs:
        if runs and runs[-1][0] + runs[-1][2] == u and runs[-1][1] + runs[-1][2] == d:
            runs[-1][2] += 1
        else:
            runs.append([u, d, 1])
    return runs


def encode(topic: str, partition: int, runs: list[list[int]], next_upstream: int) -> tuple[bytes, bytes]:
    return (orjson.dumps({"topic": topic, "partition": partition}),
            orjson.dumps({"runs": runs, "next": next_upstream}))


def decode(key: bytes, value: bytes) -> tuple[str, int, list[list[int]], int]:
    """-> (topic, partition, runs, next); ValueError for a record that is not a sync."""
    try:
        k, v = orjson.loads(key), orjson.loads(value)
        runs = [[int(u), int(d), int(n)] for u, d, n in v["runs"]]
        return str(k["topic"]), int(k["partition"]), runs, int(v["next"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an offset-sync record: {exc}") from None


@dataclasses.dataclass
class PartitionSyncs:
    starts: list[int] = dataclasses.field(default_factory=list)   # u of each run (ascending)
    runs: list[list[int]] = dataclasses.field(default_factory=list)
    next_upstream: int = -1                                        # -1: nothing checkpointed

    def add(self, runs: list[list[int]], next_upstream: int) -> None:
        for u, d, n in runs:
            if self.runs and u < self.runs[-1][0] + self.runs[-1][2]:
                # mirrored again (an at-least-once restart between a batch's records and its
                # sync): keep the first copy; a group translated into it reads the copy too
                # (a duplicate, never a gap).
                continue
            last = self.runs[-1] if self.runs else None
            if last is not None and last[0] + last[2] == u and last[1] + last[2] == d:
                last[2] += n
            else:
                self.runs.append([u, d, n])
                self.starts.append(u)
        self.next_upstream = max(self.next_upstream, next_upstream)

    def translate(self, upstream: int) -> int | None:
        if not self.runs or upstream > self.next_upstream or upstream < 0:
            return None
        i = bisect.bisect_right(self.starts, upstream) - 1
        if i >= 0:
            u, d, n = self.runs[i]
            if upstream < u + n:
                return d + (upstream - u)
            i += 1
        else:
            i = 0
        if i < len(self.runs):
            return self.runs[i][1]
        u, d, n = self.runs[-1]
        return d + n


class SyncLog:
    """Every sync read from (or written to) the sync topic, by source partition."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], PartitionSyncs] = {}

    def add(self, topic: str, partition: int, runs: list[list[int]], next_upstream: int) -> None:
        self.partitions.setdefault((topic, partition), PartitionSyncs()).add(runs, next_upstream)

    def next_upstream(self, topic: str, partition: int) -> int:
        """Where the mirror resumes this source partition; -1 when it never checkpointed it."""
        syncs = self.partitions.get((topic, partition))
        return -1 if syncs is None else syncs.next_upstream

    def translate(self, topic: str, partition: int, upstream: int) -> int | None:
        syncs = self.partitions.get((topic, partition))
        return None if syncs is None else syncs.translate(upstream)
