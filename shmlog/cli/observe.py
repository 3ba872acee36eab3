"""One look at a running broker, for `shmlog metrics` and `shmlog top`.

A snapshot is what the supervisor answers now (its `status`, every group, each group's
committed offsets against the log end): nothing is kept between looks, so an exporter or a
screen that polls it shows the broker as it is, and a broker that is gone shows as down.
"""
import dataclasses
import time

from shmlog.control import Control
from shmlog.errors import KafkaException


@dataclasses.dataclass
class Partition:
    topic: str
    partition: int
    log_start_offset: int
    log_end_offset: int
    persisted_offset: int
    flushed_offset: int
    ring_size_bytes: int
    ring_used_bytes: int


@dataclasses.dataclass
class GroupPartition:
    topic: str
    partition: int
    committed_offset: int  # -1: nothing committed
    log_end_offset: int    # -1: the partition no longer exists

    @property
    def lag(self):
        return None if self.committed_offset < 0 or self.log_end_offset < 0 \
            else max(0, self.log_end_offset - self.committed_offset)


@dataclasses.dataclass
class Group:
    group_id: str
    state: str
    protocol: str
    generation: int
    members: int
    partitions: list


@dataclasses.dataclass
class FsyncHistogram:
    """The persister's fdatasync durations in one log dir: cumulative (upper bound in seconds,
    count at or below it) pairs, the +Inf bucket being `count`; `sum_seconds` their total."""
    log_dir: str
    buckets: list
    count: int
    sum_seconds: float

    def quantile(self, q):
        """An estimate of the q-quantile in seconds (linear within a bucket, as Prometheus'
        histogram_quantile); None with nothing counted. Above the largest bound: that bound."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower


def fsync_histograms(stats):
    """The `persister_stats` of a status reply -> [FsyncHistogram], one per log dir."""
    if not isinstance(stats, dict):
        return []
    bounds = stats.get("bucket_bounds_seconds") or []
    out = []
    for log_dir, h in sorted((stats.get("fsync") or {}).items()):
        try:
            out.append(FsyncHistogram(log_dir, list(zip(map(float, bounds), map(int, h["buckets"]))),
                                      int(h["count"]), float(h["sum_seconds"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


@dataclasses.dataclass
class Snapshot:
    taken_at: float
    up: bool
    error: str = ""
    supervisor_pid: int = 0
    persister_pid: int = 0
    clients: dict = dataclasses.field(default_factory=dict)   # kind -> count
    partitions: list = dataclasses.field(default_factory=list)
    groups: list = dataclasses.field(default_factory=list)
    fsync: list = dataclasses.field(default_factory=list)     # [FsyncHistogram], one per log dir
    cleaner_pid: int = 0
    cleaner: dict = dataclasses.field(default_factory=dict)   # the log cleaner's status (run/cleaner-stats.json)
    telemetry: list = dataclasses.field(default_factory=list)  # (name, labels, value) that clients pushed


class Observer:
    """Looks at the broker of data_dir over one control connection, reconnecting when needed."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.control = None

    def snapshot(self):
        try:
            if self.control is None:
                self.control = Control(self.data_dir)
            return self._look(self.control)
        except (KafkaException, OSError, ValueError) as exc:
            self.close()
            message = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            return Snapshot(taken_at=time.time(), up=False, error=message)

    def _look(self, control):
        status = control.request("status")
        clients, telemetry = {}, []
        for c in status.get("clients", ()):
            clients[c["kind"]] = clients.get(c["kind"], 0) + 1
            telemetry += [(name, {**labels, "pid": str(c["pid"])}, value)
                          for name, labels, value in c.get("telemetry", ())]
        partitions = [Partition(p["topic"], p["partition"], p["log_start_offset"], p["log_end_offset"],
                                p["persisted_offset"], p["flushed_offset"], p["ring_bytes"], p["ring_used_bytes"])
                      for p in status.get("partitions", ())]
        group_ids = [g["group_id"] for g in control.request("list_groups")["groups"]]
        groups = []
        if group_ids:
            for g in control.request("describe_groups", groups=group_ids)["groups"]:
                offsets = control.request("offset_fetch", group=g["group_id"], partitions=None)["offsets"]
                keys = sorted({(t, p) for t, p, *_ in offsets}
                              | {tuple(tp) for m in g["members"] for tp in m["assignment"]})
                rows = []
                if keys:
                    reply = control.request("offset_fetch", group=g["group_id"], partitions=[list(k) for k in keys],
                                            log_end=True)
                    rows = [GroupPartition(t, p, o, end)
                            for (t, p, o, _), end in zip(reply["offsets"], reply["log_end"])]
                groups.append(Group(g["group_id"], g["state"], g["protocol"], g["generation"], len(g["members"]), rows))
        return Snapshot(taken_at=time.time(), up=True, supervisor_pid=status.get("pid") or 0,
                        persister_pid=status.get("persister_pid") or 0, clients=clients,
                        partitions=partitions, groups=groups,
                        fsync=fsync_histograms(status.get("persister_stats")),
                        cleaner_pid=status.get("cleaner_pid") or 0, cleaner=status.get("cleaner_stats") or {},
                        telemetry=telemetry)

    def close(self):
        if self.control is not None:
            self.control.close()
            self.control = None
