"""Replication, the supervisor's part (docs/replication.md): where new partitions' replicas go,
the mirror processes of the follower replicas, ISR tracking, moving a partition's leadership
off a failed log dir, and choosing leaders after a host crash. The rules themselves are pure
(replicas.py, isr.py); this applies them to the supervisor's metadata, rings and processes.
"""
import collections
import copy
import logging
import os
import shutil
import subprocess
import sys
import time

from shmlog._native import lib
from shmlog.broker import breadcrumb, children, isr, logs, metadata, replicas
from shmlog.errors import KafkaError
from shmlog.log import control_record
from shmlog.log.segment import log_end_offset, partition_dir

MIRROR_RESTART_BACKOFF_S = 0.2
MIRROR_STOP_TIMEOUT_S = 5.0
# A persister or mirror that dies this many times within the window while working on the same
# partition (breadcrumb.py) is crash-looping there: that replica goes offline, as a failed log dir.
CRASH_LOOP_DEATHS = 3
CRASH_LOOP_WINDOW_S = 60.0


def log(message, level=logging.WARNING):
    logs.get().log(level, message)


def info(message):
    logs.get().info(message)


class ReplicaManager:
    """`sup`: the Supervisor; `refused`: its Refused exception class, raised with Kafka's codes."""

    def __init__(self, sup, refused, describe_status):
        self.sup = sup
        self.Refused = refused
        self.describe_status = describe_status
        self.mirrors = {}          # log dir index -> Popen of its mirror (follower replicas; mirror.py)
        self.mirror_started = {}   # log dir index -> when its mirror was last started
        self.lag = {}              # (topic, partition) -> isr.LagTracker
        self.offline = {}          # (topic, partition) -> replica ids whose log dir failed, until back in the ISR
        # (topic, partition) -> {offline replica id: the ring's end offset when it went offline}: it
        # may rejoin the ISR only once it fsynced past that, i.e. wrote again (copied new records)
        self.offline_end = {}
        self.elected_at = {}       # (topic, partition) -> when its leader was last moved
        self.deaths = {}           # (process kind, (topic, partition)) -> deque of death times
        self.crash_looped = {}     # (process kind, (topic, partition)) -> why, until track_isr acts on it

    def choose_leaders_after_crash(self, missing):
        """Rings that must be made anew (the host restarted, or they were lost) start where their
        leader's log ends: per replicated partition, the in-sync replica holding the longest log
        (CRC-checked, as recovery will cut it) leads, so everything any acks=all producer was
        told is in it. The others cut back or catch up from it (mirror.py)."""
        new = copy.deepcopy(self.sup.meta)
        moved = []
        for topic, p in missing:
            t = new["topics"][topic]
            state = self.sup.partition_states(t)[p]
            if len(state["replicas"]) < 2:
                continue
            ends = {}
            for r in state["isr"]:
                pdir = partition_dir(self.sup.log_dirs[r % len(self.sup.log_dirs)], topic, p)
                try:
                    ends[r] = log_end_offset(pdir, check_crc=True) if os.path.isdir(pdir) else -1
                except OSError as exc:
                    log(f"{topic}-{p}: cannot read the replica in {pdir}: {exc}")
            if not ends:
                continue
            best = max(ends, key=lambda r: (ends[r], r == state["leader"]))
            if best == state["leader"]:
                continue
            t["partition_states"] = self.sup.partition_states(t)
            t["partition_states"][p] = {**state, "leader": best, "leader_epoch": state["leader_epoch"] + 1}
            moved.append(f"{topic}-{p}: replica {best} leads at leader epoch {state['leader_epoch'] + 1} (its log "
                         f"ends at {ends[best]}, leader {state['leader']}'s at {ends.get(state['leader'])})")
        if not moved:
            return
        try:
            metadata.save(self.sup.data_dir, new)
        except OSError as exc:
            raise SystemExit(f"shmlog: cannot start: cannot write {metadata.metadata_path(self.sup.data_dir)}: {exc}") \
                from None
        self.sup.meta = new
        for line in moved:
            log(f"recovery: {line}")

    def place_replicas(self, partitions, replication_factor=-1, assignment=None, first_partition=0, counts=None):
        """Replica lists (log dir indexes) for new partitions: the explicit assignment once
        checked, else replication_factor (-1: default.replication.factor) replicas each on
        distinct log dirs, leaders balanced across topics. Refused with Kafka's codes.
        counts: the partitions each log dir leads (replicas.leader_counts), counted up here with
        the new leaders, when the caller places many topics' partitions (else worked out here)."""
        n = len(self.sup.log_dirs)
        if assignment:
            if replication_factor not in (-1, None):
                raise self.Refused(KafkaError.INVALID_REQUEST,
                                   "give replication_factor or replica_assignment, not both")
            problem = replicas.assignment_problem(assignment, partitions, n, first_partition)
            if problem:
                raise self.Refused(*problem)
            for r in assignment if counts is not None else ():
                counts[r[0]] += 1   # its first replica leads (replicas.new_state)
            return [list(r) for r in assignment]
        rf = self.sup.config.default_replication_factor if replication_factor in (-1, None) else replication_factor
        problem = replicas.factor_problem(rf, n)
        if problem:
            raise self.Refused(*problem)
        if counts is None:
            counts = replicas.leader_counts(self.sup.meta["topics"].values(), n)
        return replicas.assign(partitions, rf, n, counts, first_partition)

    def replicated_partitions(self):
        """[(topic, partition, topic entry, state)] of the partitions with more than one replica,
        worked out again only when the metadata changes (it is replaced whole, never edited in
        place): housekeeping rounds then cost nothing per unreplicated partition."""
        meta = self.sup.meta
        if getattr(self, "_replicated_of", None) is not meta:
            self._replicated = [(name, p, t, s) for name, t in meta["topics"].items()
                                for p, s in enumerate(self.sup.partition_states(t)) if len(s["replicas"]) > 1]
            self._replicated_of = meta
        return self._replicated

    def follower_dirs(self):
        """Log dir indexes that hold a follower replica of some partition."""
        return {r for _, _, _, s in self.replicated_partitions()
                for r in s["replicas"] if r != s["leader"] and r < len(self.sup.log_dirs)}

    def ensure_mirrors(self):
        """One mirror process per log dir that holds followers, restarted when it exits."""
        wanted = self.follower_dirs()
        now = time.monotonic()
        for index in sorted(wanted | set(self.mirrors)):
            proc = self.mirrors.get(index)
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                log(f"mirror of log dir {self.sup.log_dirs[index]} (pid {proc.pid}) exited with {proc.returncode}"
                    f"{self.describe_status(proc.returncode)}; restarting")
                del self.mirrors[index]
                self.process_died(f"mirror-{index}", proc.returncode, now)
            if index not in wanted or now - self.mirror_started.get(index, 0.0) < MIRROR_RESTART_BACKOFF_S:
                continue
            self.mirror_started[index] = now
            self.mirrors[index] = subprocess.Popen(
                [sys.executable, "-m", "shmlog.broker.mirror", self.sup.data_dir, str(index)],
                stdin=subprocess.DEVNULL, cwd="/", env={**os.environ, logs.LEVEL_ENV: self.sup.config.shmlog_log_level})
            info(f"started the mirror of log dir {self.sup.log_dirs[index]}: pid {self.mirrors[index].pid}")

    def stop_mirrors(self, serve):
        """SIGTERM every mirror, then wait while serve() answers requests (broker/children.py)."""
        children.stop(list(self.mirrors.values()), MIRROR_STOP_TIMEOUT_S, serve)
        self.mirrors.clear()

    def process_died(self, kind, returncode, now):
        """A persister ("persister") or mirror ("mirror-<log dir index>") exited: a death (not a
        clean exit) counts against the partition it was working on (breadcrumb.py); the
        CRASH_LOOP_DEATHS-th within CRASH_LOOP_WINDOW_S takes that replica offline at the next
        track_isr: the leader's (persister) moves leadership, a follower's (mirror) leaves the ISR."""
        if returncode == 0:
            return
        key = breadcrumb.read(self.sup.data_dir, kind)
        if key is None:
            return
        deaths = self.deaths.setdefault((kind, key), collections.deque())
        deaths.append(now)
        while deaths and deaths[0] < now - CRASH_LOOP_WINDOW_S:
            deaths.popleft()
        if len(deaths) < CRASH_LOOP_DEATHS:
            return
        deaths.clear()
        name, p = key
        t = self.sup.meta["topics"].get(name)
        what = f"its {kind.split('-')[0]} died {CRASH_LOOP_DEATHS} times within {CRASH_LOOP_WINDOW_S:g} s while " \
               f"working on it"
        if t is None or p >= t["partitions"] or len(self.sup.partition_states(t)[p]["replicas"]) < 2:
            log(f"{name}-{p}: {what} (crash loop); it has no other replica to take over, so it is only restarted")
            return
        self.crash_looped[(kind, key)] = what

    def leader_failed(self, name, p, state, ring, now):
        """Why the partition's leader replica cannot go on (its persister cannot write or sync its
        log dir, or the directory is gone), or None."""
        looped = self.crash_looped.pop(("persister", (name, p)), None)
        if looped:
            return looped
        leader_dir = self.sup.log_dirs[state["leader"]]
        code = ring.header.persist.storage_error
        if code:
            return f"its persister cannot write to {leader_dir} (errno {code})"
        # The partition's directory, not only the log dir: the persister's writes to the files it
        # has open still succeed once they are unlinked, and a log dir made again (empty) by
        # someone else must not hide that the replica in it is gone.
        if not os.path.isdir(partition_dir(leader_dir, name, p)):
            return f"its log dir {leader_dir} is gone" if not os.path.isdir(leader_dir) else \
                f"its directory {partition_dir(leader_dir, name, p)} is gone"
        return None

    def elect(self, name, p, t, state, ring, why, now):
        """Move the partition's leadership off a failed log dir (replicas.elect); the new state, or None."""
        offline = self.offline.setdefault((name, p), set())
        offline.add(state["leader"])
        unclean = bool(self.sup.topic_config(t)["unclean.leader.election.enable"])
        new = replicas.elect(state, offline, unclean)
        if new is None:
            if self.elected_at.get((name, p)) != "stuck":
                log(f"{name}-{p}: leader {state['leader']} failed ({why}) and no in-sync replica can take over "
                    f"(ISR {state['isr']}; unclean.leader.election.enable={str(unclean).lower()}): the partition "
                    f"stays with it until its log dir works again")
                self.elected_at[(name, p)] = "stuck"
            return None
        # aborted.txnindex entries the new leader's mirror had not copied yet (the old log dir is
        # often still readable: a full disk, a failed fsync), so read_committed stays right.
        try:
            control_record.merge_index(partition_dir(self.sup.log_dirs[state["leader"]], name, p),
                                       partition_dir(self.sup.log_dirs[new["leader"]], name, p))
        except OSError as exc:
            log(f"{name}-{p}: cannot copy the old leader's aborted.txnindex to the new leader: {exc}")
        clean = new["leader"] in state["isr"]
        unclean_note = "" if clean else " (UNCLEAN: it was not in the ISR; acknowledged records may be lost)"
        log(f"{name}-{p}: leader {state['leader']} failed ({why}): replica {new['leader']} leads at leader epoch "
            f"{new['leader_epoch']}{unclean_note}; ISR {','.join(map(str, new['isr']))}")
        # The old leader is a follower from now on: its word starts from nothing, so it joins the
        # ISR only once its mirror has really fsynced up to the high watermark.
        ring.header.replication.replica_fsynced_offset[state["replicas"].index(state["leader"])] = 0
        # Its mirror soon says it fsynced all the log it wrote as leader, though its disk may still
        # refuse every write: that is not being in sync.
        self.offline_end.setdefault((name, p), {})[state["leader"]] = ring.end()[1]
        self.elected_at[(name, p)] = now
        return new

    def track_isr(self, now):
        """Move the leadership of partitions whose leader's log dir failed (elect), then shrink and
        expand each replicated partition's ISR (isr.decide, by replica.lag.time.max.ms); a change
        is written to topics.json and the ring header."""
        window_s = self.sup.config.replica_lag_time_max_ms / 1000
        changes, elected = {}, []
        for name, p, t, state in self.replicated_partitions():
            if (name, p) not in self.sup.rings:
                continue
            ring = self.sup.rings[(name, p)]
            why = self.leader_failed(name, p, state, ring, now)
            if why:
                new_state = self.elect(name, p, t, state, ring, why, now)
                if new_state is not None:
                    changes.setdefault(name, {})[p] = new_state
                    self.lag.pop((name, p), None)
                    elected.append((name, p))
                    continue
                # Nobody can lead yet: the ISR is still tracked, so a follower that catches up
                # with what the failed leader wrote joins it and leads at a later round.
            tracker = self.lag.setdefault((name, p), isr.LagTracker())
            tracker.observe(now, ring.persisted_offset, window_s)
            for r in state["replicas"]:
                why = self.crash_looped.pop((f"mirror-{r}", (name, p)), None)
                if why and r != state["leader"]:
                    # Offline as a failed log dir's replica: out of the ISR now, back once it copied
                    # records produced after this.
                    log(f"{name}-{p}: replica {r} goes offline: {why}")
                    self.offline.setdefault((name, p), set()).add(r)
                    self.offline_end.setdefault((name, p), {})[r] = ring.end()[1]
            gone = self.offline_end.get((name, p), {})
            words = [lib.shmlog_ring_replica_fsynced(ring.map, i) for i in range(len(state["replicas"]))]
            fsynced = {r: words[i] for i, r in enumerate(state["replicas"])
                       if r != state["leader"] and words[i] > gone.get(r, -1)}
            new_isr = isr.decide(state, fsynced, ring.flushed_offset, tracker, now, window_s)
            if new_isr is not None:
                changes.setdefault(name, {})[p] = {**state, "isr": new_isr}
                back = self.offline.get((name, p), set()) & set(new_isr)
                if back:
                    self.offline[(name, p)] -= back
                    for r in back:
                        self.offline_end.get((name, p), {}).pop(r, None)
        if not changes:
            return
        new = copy.deepcopy(self.sup.meta)
        for name, parts in changes.items():
            t = new["topics"][name]
            t["partition_states"] = self.sup.partition_states(t)
            for p, new_state in parts.items():
                old = t["partition_states"][p]["isr"]
                t["partition_states"][p] = new_state
                if new_state["isr"] != old:
                    info(f"{name}-{p}: ISR {','.join(map(str, old))} -> {','.join(map(str, new_state['isr']))}")
        try:
            self.sup.save_meta(new)
        except self.Refused as exc:
            log(f"cannot record ISR changes: {exc}")
            return
        self.sup.meta = new
        for name, parts in changes.items():
            for p in parts:
                self.sup.apply_replication(name, p)
        self.sup.doorbell.bump_metadata_epoch()
        for key in elected:
            ring = self.sup.rings[key]
            # The old leader's error is not the new one's (a deposed persister writes no more of it),
            # so a failure of the new leader is seen as soon as its persister reports one.
            ring.header.persist.storage_error = 0
            lib.shmlog_ring_wake_persister(ring.map, self.sup.doorbell.ptr)   # it takes over now, not at its timer

    # ------------------------------------------------------------------ moving a replica

    def alter_replica_log_dirs(self, moves):
        """Move replicas to other log dirs (Kafka's AlterReplicaLogDirs): for each
        [topic, partition, from log dir, to log dir] the replica on `from` is replaced, in the
        same place of the replica list, by a new follower on `to`, which the mirror of `to`
        fills from the leader and which joins the ISR once caught up. A leader is moved off
        `from` first (to an in-sync replica, at the next leader epoch). Per move None or
        [code, message]."""
        sup, n = self.sup, len(self.sup.log_dirs)
        results, changed = [], {}
        new = copy.deepcopy(sup.meta)
        for topic, p, src, dst in moves:
            t = new["topics"].get(topic)
            if t is None or not 0 <= p < t["partitions"]:
                results.append([KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown partition {topic}-{p}"])
                continue
            t["partition_states"] = sup.partition_states(t)
            state = t["partition_states"][p]
            problem = None
            if src not in state["replicas"]:
                problem = f"{topic}-{p} has no replica on log dir {src} (its replicas: {state['replicas']})"
            elif not 0 <= dst < n:
                problem = f"log dir {dst} does not exist: log dirs are 0..{n - 1}"
            elif dst in state["replicas"]:
                problem = f"{topic}-{p} already has a replica on log dir {dst}"
            if problem:
                results.append([KafkaError.INVALID_REPLICA_ASSIGNMENT, problem])
                continue
            if state["leader"] == src:
                moved = replicas.elect(state, {src})
                if moved is None:
                    results.append([KafkaError.NOT_ENOUGH_REPLICAS, f"{topic}-{p}: the leader is on log dir {src} "
                                    f"and no other replica is in sync to take over (ISR {state['isr']})"])
                    continue
                state = moved
            i = state["replicas"].index(src)
            reps = list(state["replicas"])
            reps[i] = dst
            state = {**state, "replicas": reps, "isr": [r for r in state["isr"] if r != src]}
            t["partition_states"][p] = state
            changed[(topic, p)] = (i, src, dst)
            results.append(None)
        if not changed:
            return results
        claimed = []
        try:
            for (topic, p), (_, _, dst) in changed.items():
                pdir = partition_dir(sup.log_dirs[dst], topic, p)
                claimed.append(sup.claim_replica_dir(pdir, topic, p, new["topics"][topic], True))
            sup.save_meta(new)
        except (self.Refused, OSError) as exc:
            for d in claimed:
                shutil.rmtree(d, ignore_errors=True)
            code = exc.code if isinstance(exc, self.Refused) else KafkaError.KAFKA_STORAGE_ERROR
            return [r if r is not None else [code, f"nothing was moved: {exc}"] for r in results]
        old = sup.meta
        sup.meta = new
        for (topic, p), (i, src, dst) in changed.items():
            ring = sup.rings.get((topic, p))
            if ring is not None:
                # The new follower's word starts from nothing: it joins the ISR once really caught up.
                ring.header.replication.replica_fsynced_offset[i] = 0
            sup.apply_replication(topic, p)
            self.lag.pop((topic, p), None)
            info(f"{topic}-{p}: replica moved from log dir {sup.log_dirs[src]} to {sup.log_dirs[dst]}; "
                 f"replicas {new['topics'][topic]['partition_states'][p]['replicas']}")
        sup.doorbell.bump_metadata_epoch()
        for (topic, p), (_, src, _) in changed.items():
            if topic in old["topics"]:
                sup.retire(partition_dir(sup.log_dirs[src], topic, p))
        return results
