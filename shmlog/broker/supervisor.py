"""The supervisor: one per data dir. Owns topic metadata, the control channel, the
persister process and the liveness of registered clients.

Run as `python -m shmlog.broker.supervisor <data_dir> <broker config json>`; shmlog.Broker and
`shmlog broker start` start it. A lock on <data_dir>/supervisor.lock keeps it unique.
"""
import collections
import copy
import fcntl
import functools
import json
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import posix_ipc

from shmlog import control, security
from shmlog._native import ffi, lib, shm
from shmlog._native.ring import Doorbell, Ring
from shmlog.broker import fd_limit, logs, metadata, persister_stats, replicas, requests
from shmlog.broker.cleaner import CleanerProcess
from shmlog.broker.cleaner import read as cleaner_stats
from shmlog.broker.group_service import DEFERRED, GroupService
from shmlog.broker.kafka_listener.process import ListenerProcess
from shmlog.broker.producer_ids import ProducerIdAllocator, ProducerIdsUnavailable
from shmlog.broker.replication import ReplicaManager
from shmlog.broker.ring_scan import HeldRings
from shmlog.broker.txn_service import TxnService
from shmlog.config import (
    INTERNAL_TOPICS,
    SCHEMAS_TOPIC,
    UNDELETABLE_TOPICS,
    effective_topic_config,
    memory_only_problem,
    parse_broker_config,
    parse_topic_config,
    topic_name_problem,
)
from shmlog.errors import KafkaError, KafkaException, reason_of
from shmlog.log import producer_state, retention
from shmlog.log.segment import log_end_offset, log_start_offset, partition_dir, recover

HOUSEKEEPING_INTERVAL_S = 0.1  # persister restarts, dead producers' claims, retired partition dirs
FULL_HELD_SCAN_S = 1.0         # every ring looked at for dead producers this often (and when a client goes)
PERSISTER_RESTART_BACKOFF_S = 0.2
PERSISTER_DRAIN_TIMEOUT_S = 60.0  # the persister gives up draining after 30 s (its DRAIN_TIMEOUT_S)
DELETE_DELAY_S = 1.0  # file.delete.delay.ms: how long a deleted partition's files linger
STOP_CLAIMS_TIMEOUT_S = 5.0  # how long a clean stop waits for producers to publish what they claimed
PERSISTER_LOCK = "persister.lock"  # the persister's (persister.LOCK_NAME); held while it writes segments
SHM_KEEP_FREE = 20    # a request may not take /dev/shm below 1/20 (5%) of its size free


def ring_geometry(topic_config):
    """(ring.bytes, ring.slots) of a topic's config; ring.slots 0 lets the C core size the slot tables."""
    return int(topic_config["ring.bytes"]), int(topic_config.get("ring.slots") or 0)
# A deleted partition's directory, renamed aside as Kafka does: <topic>-<partition>.<32 hex>-delete,
# the topic cut short so the name stays within NAME_MAX (255). Older versions used .<ms>.deleted.
RETIRED_DIR = re.compile(r"^.*-\d+\.[0-9a-f]{32}-delete$|^.*-\d+\.\d+\.deleted$")
PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")
TELEMETRY_NAME = re.compile(r"[a-z_][a-z0-9_]*")   # Prometheus-safe metric and label names
NAME_MAX = 255
MAX_UNREAD_REPLY_BYTES = 64 << 20   # replies queued for a client that does not read them
KEEPER_ENV = "SHMLOG_KEEPER_PID"  # keeper.ENV: set by the keeper for the supervisor it starts
STANDBY_ENV = "SHMLOG_STANDBY"     # keeper.STANDBY_ENV: "1" for the keeper's warm standby
STOPPED = b"stopped"               # in supervisor.lock after a clean stop
PROMOTE_WAIT_S = 30.0              # a standby holding the lock waits this long for the keeper's go-ahead
FINAL_DRAIN_ATTEMPTS = 3  # persisters started for the final drain when one left published records behind
DIR_THREAD_MIN = 64   # new partition directories made by a thread of their own from this many (DirMaker)


# What creating a ring takes from its topic's config (Supervisor.ring_settings).
RingSettings = collections.namedtuple("RingSettings", "ring_bytes slots memory_only min_insync log_append_time")


def fold_topic_name(name):
    """Names of equal folded form collide (topic_names_collide): '.' and '_' taken as one."""
    return name.replace(".", "_")


class NewTopics:
    """One create_topics request while its topics are checked and made (Supervisor.create_topics):
    they are written to the metadata together at the end, so each is checked against the
    broker's topics and those of the request before it."""

    def __init__(self, sup):
        self.meta = {**sup.meta, "topics": dict(sup.meta["topics"])}  # entries are replaced whole, never edited
        self.folded = {}   # folded name -> the (first) topic of that form
        for name in sorted(self.meta["topics"], reverse=True):
            self.folded[fold_topic_name(name)] = name
        self.leaders = replicas.leader_counts(self.meta["topics"].values(), len(sup.log_dirs))
        # Shared memory the broker's rings hold, counted as topics are made (shmlog.shm.max.bytes).
        self.shm_held = sup.shm_held() if sup.config.shmlog_shm_max_bytes is not None else None
        self.made = []     # (topic, entry, config as asked, directories made): none durable yet


class DirMaker:
    """Makes new partition directories, each holding its partition.metadata (not fsynced:
    commit_partitions does that for many at once). Many are made by a thread of its own, while
    the caller goes on (creating their rings); a few at once (a thread costs more)."""

    def __init__(self, pdirs, topic_id):
        self.pdirs, self.topic_id, self.error, self.thread = pdirs, topic_id, None, None
        if len(pdirs) >= DIR_THREAD_MIN:
            self.thread = threading.Thread(target=self.make, name="partition-dirs", daemon=True)
            self.thread.start()
        else:
            self.make()

    def make(self):
        try:
            for pdir in self.pdirs:
                metadata.write_partition_metadata(pdir, self.topic_id, sync=False)
        except BaseException as exc:   # raised in the caller's thread by wait()
            self.error = exc

    def wait(self, check=True):
        """Until every directory is made; raises what failed (check=False: only waits)."""
        if self.thread is not None:
            self.thread.join()
        if check and self.error is not None:
            raise self.error


class Refused(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Supervisor:
    def __init__(self, data_dir, broker_config):
        self.data_dir = os.path.realpath(data_dir)
        self.config = parse_broker_config(broker_config)
        logs.setup("supervisor", self.config.shmlog_log_level)
        # Who may use this broker (docs/security.md): files this process and the persister create
        # get the policy's modes from the umask; the data dir must be ours.
        self.policy = security.Policy(self.config)
        os.umask(self.policy.umask)
        self.policy.check_owned(self.data_dir, "data dir")
        self.refusals = [0.0, 0]   # when a refused peer was last logged, how many since
        self.client_events = logs.RateLimited(per_s=20)  # clients attached and lost: many may come at once
        self.ns = shm.namespace(self.data_dir)
        self.log_dirs = self._log_dirs()
        self.mode = self.config.shm_mode
        self.meta = None           # loaded by run(), under the data dir's lock
        self.retired = {}          # renamed-aside partition dir -> when (time.monotonic()) it may go
        self.rings = {}            # (topic, partition) -> Ring
        self.rings_version = 0     # raised whenever self.rings changes (HeldRings rebuilds its array)
        self.held_rings = HeldRings()
        self.next_full_held_scan = 0.0
        self.client_lost = False   # a full scan of the rings for dead producers is due at once
        self.doorbell = None
        self.persister = None
        # The Kafka-protocol listener process (kafka_listener/process.py): refused here, before anything is
        # allocated, when `listeners` is set but cannot be served.
        self.listener = ListenerProcess(data_dir, self.config)
        self.persister_started = 0.0
        self.persister_restarts = 0  # persisters that exited unasked and were started again
        self.cleaner = None          # the log cleaner process (cleaner.CleanerProcess), made in run()
        self.replication = ReplicaManager(self, Refused, describe_status)   # mirrors, ISR, elections
        # socket -> {"buf": bytes read, "pid": int, "kind": str, "out": bytearray to send, "closing": bool/"now"}
        self.clients = {}
        self.groups = None         # GroupService: the consumer-group coordinator
        self.txns = None           # TxnService: the transaction coordinator
        self.producer_ids = ProducerIdAllocator(self.data_dir)
        self.running = True
        self.selector = selectors.DefaultSelector()
        # The keeper (broker/keeper.py) that restarts us if we die: our parent, named in our
        # environment. 0: started without one, or it died (we carry on without it).
        keeper = os.environ.pop(KEEPER_ENV, "")
        self.keeper_pid = int(keeper) if keeper.isdigit() and int(keeper) == os.getppid() else 0
        self.standby = os.environ.pop(STANDBY_ENV, "") == "1"

    # ------------------------------------------------------------------ startup

    def _log_dirs(self):
        dirs = self.config.log_dirs
        if isinstance(dirs, str):
            dirs = [d.strip() for d in dirs.split(",") if d.strip()]
        return [os.path.realpath(os.path.join(self.data_dir, d)) for d in (dirs or ["logs"])]

    def make_log_dirs(self):
        """Only once supervisor.lock is ours: a warm standby (keeper.py) that made them while it
        waited would bring back a leader's log dir that was just removed, and hide its failure."""
        for d in self.log_dirs:
            os.makedirs(d, exist_ok=True)

    def lock(self):
        self.lock_fd = os.open(os.path.join(self.data_dir, "supervisor.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        if self.standby:
            # The keeper's warm standby: imported and waiting, it takes over the moment the
            # supervisor holding the lock dies, unless that one stopped cleanly (it says so in
            # the lock file before it lets go): then there is nothing to take over.
            # It dies with its keeper: one whose keeper was killed must not start a broker later.
            set_parent_death_signal(signal.SIGKILL)
            if not self.keeper_pid or os.getppid() != self.keeper_pid:
                raise SystemExit(0)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the group is for the others
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            previous = os.pread(self.lock_fd, 64, 0)
            if previous == STOPPED:
                raise SystemExit(0)
            # Take over only when the keeper says so (SIGUSR1, blocked since we started): it does
            # once it has reaped the supervisor that died. A keeper killed with it never does,
            # and its death signal ends us here.
            if signal.sigtimedwait({signal.SIGUSR1}, PROMOTE_WAIT_S) is None:
                raise SystemExit(0)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
            set_parent_death_signal(0)  # the supervisor now: it outlives a killed keeper
            info(f"taking over from supervisor pid {previous.decode(errors='replace')}, which died")
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"shmlog: another broker already runs for data dir {self.data_dir}")
        os.ftruncate(self.lock_fd, 0)
        os.write(self.lock_fd, str(os.getpid()).encode())

    def reclaim_shared_memory(self):
        """Adopt valid objects of this data dir (a supervisor restart keeps clients running),
        unlink anything stale or unknown a crashed broker left behind."""
        wanted = {self.ring_name(t, p): (t, p) for t, p in self.partitions()}
        bell = shm.doorbell_name(self.ns)
        for name in shm.names_in_namespace(self.ns):
            if self.remove_foreign_object(name):
                continue
            if name == bell:
                try:
                    self.doorbell = Doorbell.open(name, owner=self.policy.owner)
                    shm.set_access(name, self.mode, self.policy.group)
                    continue
                except (KafkaException, ValueError, OSError):
                    pass
            elif name in wanted:
                topic, partition = wanted[name]
                try:
                    ring = Ring.open(name, topic, partition, owner=self.policy.owner)
                    d = ring.header.descriptor
                    if d.topic_id == self.meta["topics"][topic]["id"] and d.partition == partition:
                        shm.set_access(name, self.mode, self.policy.group)
                        if ring.stopped:   # a broker that died half-way through its stop closed it
                            lib.shmlog_ring_reopen(ring.map)
                        self.rings[(topic, partition)] = ring
                        self.rings_version += 1
                        self.apply_replication(topic, partition, ring=ring)
                        continue
                    ring.close()
                except (KafkaException, ValueError, OSError):
                    pass
            info(f"reclaimed stale shared memory {name}")
            shm.unlink(name)
        missing = [(topic, p) for topic, p in self.partitions() if (topic, p) not in self.rings]
        shortage = self.shm_problem(f"the rings of {len(missing)} partitions", [
            ring_geometry(metadata.topic_config(self.meta["topics"][topic])) for topic, _ in missing], cap=False)
        if missing and shortage:
            raise SystemExit(f"shmlog: cannot start: {shortage[1]}")
        self.replication.choose_leaders_after_crash(missing)
        if self.doorbell is None:
            self.doorbell = Doorbell.create(bell, self.mode, self.policy.group)
        self.doorbell.header.supervisor_pid = os.getpid()
        self.doorbell.header.broker_state = lib.SHMLOG_BROKER_RUNNING
        for topic, partition in missing:
            self.create_ring(topic, partition)

    def partitions(self):
        for name, t in self.meta["topics"].items():
            for p in range(t["partitions"]):
                yield name, p

    def ring_name(self, topic, partition, t=None):
        return shm.ring_name(self.ns, (t or self.meta["topics"][topic])["id"], partition)

    def partition_states(self, t):
        return replicas.states(t, len(self.log_dirs))

    def partition_state(self, topic, partition, t=None):
        return replicas.state(t or self.meta["topics"][topic], partition, len(self.log_dirs))

    def partition_log_dir(self, topic, partition, t=None):
        """The leader replica's log dir: the ring's persister writes there."""
        state = self.partition_state(topic, partition, t)
        return self.log_dirs[state["leader"] % len(self.log_dirs)]

    def replica_dirs(self, topic, partition, t=None):
        """The partition directory of every replica, the leader's first."""
        state = self.partition_state(topic, partition, t)
        order = [state["leader"]] + [r for r in state["replicas"] if r != state["leader"]]
        return [partition_dir(self.log_dirs[r % len(self.log_dirs)], topic, partition) for r in order]

    def apply_replication(self, topic, partition, t=None, ring=None, min_insync=None):
        """State the partition's replication in its ring header (what acks=all checks).
        min_insync: the topic's min.insync.replicas, when the caller has it (many partitions)."""
        t = t or self.meta["topics"][topic]
        ring = ring or self.rings.get((topic, partition))
        if ring is None:
            return
        if min_insync is None:
            min_insync = int(self.topic_config(t)["min.insync.replicas"])
        state = self.partition_state(topic, partition, t)
        reps = state["replicas"]
        mask = sum(1 << i for i, r in enumerate(reps) if r in state["isr"])
        lib.shmlog_ring_set_replication(ring.map, len(reps), min_insync, mask,
                                        reps.index(state["leader"]), state["leader_epoch"], ffi.new("uint8_t[]", reps))

    def claim_partition_dir(self, topic, partition, t, new, sync=True):
        """Claim the directory of every replica of the partition (see claim_replica_dir);
        the leader's path. sync=False: the caller makes them durable (metadata.fsync_all)."""
        paths = [self.claim_replica_dir(pdir, topic, partition, t, new, sync)
                 for pdir in self.replica_dirs(topic, partition, t)]
        return paths[0]

    def claim_replica_dir(self, pdir, topic, partition, t, new, sync=True):
        """Make the partition's directory the topic's own before its ring exists: a directory
        of that name left by an earlier topic (deleted, or lost with its metadata) is renamed
        aside and removed, never read as this topic's log. partition.metadata says whose it is;
        one without it (written by an older version) is adopted by a topic that exists."""
        if os.path.isdir(pdir):
            owner = metadata.partition_topic_id(pdir)
            if new or (owner is not None and owner != t["topic_id"]):
                where = f"{topic}-{partition}"
                log(f"{pdir} belongs to an earlier topic named {topic!r} (topic id {owner or 'unknown'}, not "
                    f"{t['topic_id']}); moved aside and removed, so {where} starts with its own log")
                self.retire(pdir)
            elif owner == t["topic_id"]:
                return pdir
        metadata.write_partition_metadata(pdir, t["topic_id"], sync=sync)
        return pdir

    def shm_problem(self, what, ring_sizes, cap=True, held=None):
        """Why the shared memory of `ring_sizes` ((ring.bytes, ring.slots) per ring) cannot be
        allocated, or None: it must stay within shmlog.shm.max.bytes with what this broker holds
        already (cap=True; `held`: those bytes, when the caller keeps count), and leave 5% of
        /dev/shm free. Checked before anything is allocated."""
        need = sum(lib.shmlog_ring_map_bytes(b, s) for b, s in ring_sizes)
        rings = f"{len(ring_sizes)} ring{'s' if len(ring_sizes) != 1 else ''} of ring.bytes=" + \
            "/".join(str(b) for b in sorted({b for b, _ in ring_sizes}))
        limit = self.config.shmlog_shm_max_bytes
        if cap and limit is not None:
            if held is None:
                held = self.shm_held()
            if held + need > limit:
                return KafkaError.POLICY_VIOLATION, (
                    f"{what} needs {need} bytes of shared memory ({rings}, with headers); this broker's rings "
                    f"hold {held} already, and together that is above shmlog.shm.max.bytes={limit}")
        try:
            st = os.statvfs(shm.SHM_DIR)
        except OSError:
            return None  # no /dev/shm to measure: the allocation itself says what is wrong
        size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        usable = free - size // SHM_KEEP_FREE
        if need > usable:
            return KafkaError._CRIT_SYS_RESOURCE, (
                f"{what} needs {need} bytes of shared memory ({rings}, with headers), but {shm.SHM_DIR} has "
                f"{free} bytes free of {size}, and a request may use only what leaves 5% of it free "
                f"({max(usable, 0)} bytes): use a smaller ring.bytes or fewer partitions, or free space in "
                f"{shm.SHM_DIR}")
        return None

    def ring_settings(self, t):
        """What creating a ring of topic entry t takes from its config: worked out once for all
        the partitions of a topic being created, not once per partition."""
        cfg, effective = metadata.topic_config(t), self.topic_config(t)
        return RingSettings(*ring_geometry(cfg), not cfg["shmlog.persist"], int(effective["min.insync.replicas"]),
                            effective["message.timestamp.type"] == "LogAppendTime")

    def shm_held(self):
        """Bytes of shared memory this broker's rings hold."""
        return sum(r.mapping.size for r in self.rings.values())

    def create_ring(self, topic, partition, t=None, fresh=False, settings=None):
        """fresh: the partition's directory was just made, so there is no log on disk to continue."""
        t = t or self.meta["topics"][topic]
        settings = settings or self.ring_settings(t)
        first = self.requested_log_start(t, partition)
        end = 0
        pdir = None if fresh else partition_dir(self.partition_log_dir(topic, partition, t), topic, partition)
        if pdir is not None and os.path.isdir(pdir):
            # Where recovery will cut the newest segment (CRC-checked), so the ring continues the disk's offsets.
            end = log_end_offset(pdir, check_crc=True)
            first = max(first, log_start_offset(pdir), retention.read_checkpoint(pdir))
        # Offsets below the log start offset are never handed out again (Kafka restarts the log there).
        ring = Ring.create(self.ring_name(topic, partition, t), settings.ring_bytes, topic,
                           t["id"], partition, start_offset=max(end, first), mode=self.mode,
                           group=self.policy.group, slots=settings.slots)
        ring.header.persist.log_start_offset = first  # nobody else maps the ring yet
        if settings.memory_only:
            ring.header.descriptor.flags |= lib.SHMLOG_RING_FLAG_MEMORY_ONLY
        lib.shmlog_ring_set_log_append_time(ring.map, settings.log_append_time)
        self.apply_replication(topic, partition, t, ring, settings.min_insync)
        if self.doorbell.broker_state != lib.SHMLOG_BROKER_RUNNING:
            ring.close_for_stop(self.doorbell.ptr)  # created while stopping (the drain answers requests)
        self.rings[(topic, partition)] = ring
        self.rings_version += 1
        return ring

    def memory_only(self, t):
        """shmlog.persist=false: no directories, no persister; producers release the ring."""
        return not metadata.topic_config(t)["shmlog.persist"]

    def drop_ring(self, topic, partition):
        ring = self.rings.pop((topic, partition), None)
        self.rings_version += 1
        if ring is not None:
            shm.unlink(ring.mapping.name)
            ring.close()

    def retire(self, path):
        """Rename a partition directory aside, as Kafka does (<topic>-<partition>.<uuid>-delete,
        within NAME_MAX), and remove it DELETE_DELAY_S later: the persister may still hold its
        files open until it sees the new metadata."""
        head, name = os.path.split(path)
        suffix = f".{uuid.uuid4().hex}-delete"
        topic, sep, partition = name.rpartition("-")
        keep = max(NAME_MAX - len(suffix) - len(sep + partition), 1)
        aside = os.path.join(head, f"{topic[:keep]}{sep}{partition}{suffix}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        except OSError as exc:
            log(f"cannot move {path} aside ({exc}); removing it in place")
            shutil.rmtree(path, ignore_errors=True)
            return
        self.retired[aside] = time.monotonic() + DELETE_DELAY_S

    def remove_retired_dirs(self, now=None):
        for path, due in list(self.retired.items()):
            if now is None or now >= due:
                shutil.rmtree(path, ignore_errors=True)
                del self.retired[path]

    def check_log_dirs(self):
        """Look over the log dirs at start: directories a deleted topic left renamed aside are
        removed shortly; anything that is not a partition of a known topic is left alone and
        reported once (a stray file, a directory of a topic the metadata does not know)."""
        known = {d for name, p in self.partitions() for d in self.replica_dirs(name, p)}
        for log_dir in self.log_dirs:
            try:
                entries = sorted(os.listdir(log_dir))
            except OSError as exc:
                log(f"cannot list the log dir {log_dir}: {exc}")
                continue
            for name in entries:
                path = os.path.join(log_dir, name)
                if RETIRED_DIR.match(name) and os.path.isdir(path):
                    self.retired.setdefault(path, time.monotonic() + DELETE_DELAY_S)
                elif path not in known:
                    what = "directory" if os.path.isdir(path) else "file"
                    hint = " of a topic the metadata does not know" if PARTITION_DIR.match(name) and \
                        os.path.isdir(path) else ""
                    log(f"ignoring {what} {path}{hint}: it is not a partition of any topic (left as it is; "
                        f"a topic created under that name later starts empty)")

    def recover_internal_topics(self):
        """Recover the internal topics' partition directories (cut a torn or corrupt tail of the
        newest segment, rebuild indexes; reported like any other) before the offsets replay
        reads them. The persister does the same for every partition it opens; an earlier
        persister still draining holds its lock, and is waited for, so nobody appends while
        we cut."""
        dirs = [(f"{name}-{p}", partition_dir(self.partition_log_dir(name, p), name, p))
                for name, p in self.partitions() if name in INTERNAL_TOPICS]
        dirs = [(where, d) for where, d in dirs if os.path.isdir(d)]
        if not dirs:
            return
        fd = os.open(os.path.join(self.data_dir, PERSISTER_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + PERSISTER_DRAIN_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log("an earlier persister still holds its lock; reading the internal topics unrecovered "
                            "(damage found is skipped and reported)")
                        return
                    time.sleep(0.05)
            for where, d in dirs:
                try:
                    _, _, report = recover(d)
                except OSError as exc:
                    log(f"{where}: recovery of {d} failed: {exc}")
                    continue
                if report:
                    info(f"{where}: recovery: {report}")
        finally:
            os.close(fd)  # releases the lock

    def remove_foreign_object(self, name):
        """An object of our namespace that another user created (anyone may create names in
        /dev/shm) is never adopted; root removes it, anyone else cannot and says so."""
        uid = shm.owner(name)
        if uid is None or uid == self.policy.owner:
            return False
        try:
            shm.unlink(name)
        except (OSError, posix_ipc.Error) as exc:
            raise SystemExit(f"shmlog: cannot start: shared memory {name} of this data dir's namespace belongs to "
                             f"{security.user_name(uid)}, not to this broker's owner, and cannot be removed ({exc}): "
                             f"remove it as that user or as root (shmlog cleanup); {security.DOCS}") from None
        log(f"removed shared memory {name} of {security.user_name(uid)}: not this broker's")
        return True

    def secure_files(self):
        """Give the data dir, the log dirs and what they hold the modes and group of the policy
        (a data dir from an older version, or one started with other settings, is brought in
        line), and make the run dir for the control socket."""
        policy = self.policy
        for d in self.log_dirs:
            policy.check_owned(d, "log dir")
        run_dir = control.run_dir(self.data_dir)
        # shmlog.schema_registry's LOCK_FILE: clients flock it; made here so that members of a
        # shared group (who cannot create files in the data dir) can open it.
        os.close(os.open(os.path.join(self.data_dir, "schema-registry.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         policy.file_mode))
        problems = policy.secure_tree(self.data_dir, policy.path_mode, keep={run_dir})
        for d in self.log_dirs:
            if os.path.commonpath([d, self.data_dir]) != self.data_dir:
                problems += policy.secure_tree(d)
        policy.secure_dir(run_dir, policy.path_mode)
        for problem in problems:
            log(problem)

    def listen(self):
        """Bind <data_dir>/run/control.sock (through /proc/self/fd: any data dir length). We hold
        the data dir's lock, so a socket file there is a dead broker's: it goes first."""
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dir_fd = os.open(control.run_dir(self.data_dir), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            path = control.fd_path(dir_fd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self.server.bind(path)
            if self.policy.group is not None:
                os.chown(path, -1, self.policy.group)
            os.chmod(path, self.policy.socket_mode)
        except OSError as exc:
            raise SystemExit(f"shmlog: cannot bind the control socket {control.socket_path(self.data_dir)}: {exc}")
        finally:
            os.close(dir_fd)
        self.server.listen(128)
        self.server.setblocking(False)
        self.selector.register(self.server, selectors.EVENT_READ)

    # ------------------------------------------------------------------ persister

    def ensure_persister(self):
        if self.persister is not None and self.persister.poll() is None:
            return
        if self.persister is not None:
            log(f"persister pid {self.persister.pid} exited with {self.persister.returncode}"
                f"{describe_status(self.persister.returncode)}; restarting")
            self.replication.process_died("persister", self.persister.returncode, time.monotonic())
            self.persister = None
            self.persister_restarts += 1
        if time.monotonic() - self.persister_started < PERSISTER_RESTART_BACKOFF_S:
            return
        self.spawn_persister()

    def spawn_persister(self):
        self.persister_started = time.monotonic()
        # The persister starts with SIGTERM and SIGINT blocked and unblocks them once its handler
        # is installed: a stop that comes while it is still starting makes it drain, not die.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            # cwd "/": `-m` puts the cwd first on sys.path (shmlog.broker.launcher.BROKER_CWD).
            self.persister = subprocess.Popen([sys.executable, "-m", "shmlog.broker.persister", self.data_dir],
                                              stdin=subprocess.DEVNULL, cwd="/",
                                              env={**os.environ, logs.LEVEL_ENV: self.config.shmlog_log_level})
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        info(f"{'restarted' if self.persister_restarts else 'started'} the persister: pid {self.persister.pid}"
             + (f" (restart {self.persister_restarts})" if self.persister_restarts else ""))

    def stop_persister(self):
        """The final drain, before anything is unlinked: every ring that exists at the moment of
        the stop (topics and internal topics created a moment before included) is persisted up
        to what was published in it by then.

        The persister is told to stop (SIGTERM; it rereads the metadata and drains every ring),
        and we keep answering control requests until it has exited: one that was still starting
        needs its metadata from us to drain. Then the rings' headers are the acknowledgement:
        a ring whose persisted position stops short of a published batch that was claimed
        before the stop was not drained (no persister was running, it died, or it missed the
        ring), and a persister is started again to drain it, up to FINAL_DRAIN_ATTEMPTS times.
        """
        targets = {key: ring.end()[0] for key, ring in self.rings.items()
                   if not self.memory_only(self.meta["topics"].get(key[0]) or {"config": {}})}
        deadline = time.monotonic() + PERSISTER_DRAIN_TIMEOUT_S
        attempts = 0
        while True:
            code = self.drain_persister(deadline) if self.persister is not None else None
            left = self.undrained(targets)
            if not left:
                return
            where = ", ".join(f"{t}-{p}" for t, p in left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            if code == 1 or attempts >= FINAL_DRAIN_ATTEMPTS or time.monotonic() >= deadline:
                log(f"records published in {where} before the stop are not persisted; they stay in shared memory "
                    f"only until it is unlinked")
                return
            attempts += 1
            log(f"{where} hold published records the persister did not drain "
                f"({'no persister was running' if code is None else f'it exited with {code}'}); "
                f"starting one to drain them")
            self.spawn_persister()

    def drain_persister(self, deadline):
        """SIGTERM the persister, serve until it exits (killed at the deadline); its exit code."""
        if self.persister.poll() is None:
            self.persister.send_signal(signal.SIGTERM)
            while self.persister.poll() is None and time.monotonic() < deadline:
                self.serve_once(0.01)   # its exit shows in no socket of ours: poll soon, every stop waits on it
            if self.persister.poll() is None:
                log(f"persister did not drain within {PERSISTER_DRAIN_TIMEOUT_S:.0f} s; killing it (what it "
                    f"had not written stays in the rings' shared memory only until they are unlinked)")
                self.persister.kill()
                self.persister.wait()
        info(f"persister pid {self.persister.pid} exited with {self.persister.returncode}"
             f"{describe_status(self.persister.returncode)} (stopping)")
        code, self.persister = self.persister.returncode, None
        return code

    def undrained(self, targets):
        """The partitions whose ring holds a published batch, claimed before the stop (below its
        position in `targets`), past what the ring says is persisted."""
        left = []
        for key, target in sorted(targets.items()):
            ring = self.rings.get(key)
            if ring is None:
                continue
            persisted = ring.header.persist.persisted_position
            if persisted < target and ring.has_data(persisted):
                left.append(key)
        return left

    def check_keeper(self):
        """The keeper died (SIGKILLed, say): we are its orphan now. Serving on is better than
        stopping a working broker; only a crash of ours would go unrestarted, so say so once."""
        if self.keeper_pid and os.getppid() != self.keeper_pid:
            log(f"the keeper (pid {self.keeper_pid}) has gone; serving on without one: if this supervisor dies, "
                f"nothing restarts it (stop the broker and start it again to get a keeper back)")
            self.keeper_pid = 0

    def serve_once(self, timeout_s):
        for key, events in self.selector.select(timeout_s):
            sock = key.fileobj
            if sock is self.server:
                self.accept()
                continue
            if events & selectors.EVENT_WRITE and sock in self.clients:
                self.flush_replies(sock)
            if events & selectors.EVENT_READ and sock in self.clients and not self.clients[sock]["closing"]:
                self.receive(sock)
        for sock in [s for s, c in self.clients.items() if c["closing"] == "now"]:
            self.drop(sock)

    # ------------------------------------------------------------------ requests

    def handle(self, sock, request):
        op = request.get("op")
        if op in GroupService.OPS:
            return self.groups.handle(sock, request)   # consumer groups: broker/group_service.py
        if op in TxnService.OPS:
            return self.txns.handle(sock, request)     # transactions: broker/txn_service.py
        handler = getattr(self, "op_" + str(op), None)
        if handler is None:
            raise Refused(KafkaError._INVALID_ARG, f"unknown control operation {op!r}")
        return handler(sock, request) or {}

    def op_register(self, sock, request):
        self.clients[sock]["pid"] = int(request.get("pid", 0))
        self.clients[sock]["kind"] = str(request.get("kind", "client"))
        self.client_events(logging.INFO, f"client pid {self.clients[sock]['pid']} ({self.clients[sock]['kind']}) "
                                         f"attached")

    def op_replica_failed(self, sock, request):
        """The persister found a replicated leader's log dir failing: the leaders are checked now,
        not at the next housekeeping round (replication.py decides from the rings and dirs
        themselves, so a request nobody needed changes nothing)."""
        self.replication.track_isr(time.monotonic())

    def op_metadata(self, sock, request):
        wanted = [topic for topic in dict.fromkeys(request.get("auto_create", []))
                  if topic not in self.meta["topics"] and self.config.auto_create_topics_enable
                  and not topic.startswith("__")]
        if wanted:
            results = self.create_topics([{"topic": topic, "num_partitions": self.config.num_partitions}
                                          for topic in wanted])
            refused = [result for result in results.values() if result is not None]
            if refused:
                raise Refused(*refused[0])
        return self.describe()

    def describe(self):
        topics = {}
        for name, t in self.meta["topics"].items():
            topics[name] = {
                "id": t["id"], "topic_id": t.get("topic_id"), "partitions": t["partitions"],
                "config": self.topic_config(t),
                "log_start_offsets": self.requested_log_starts(t),
                "rings": [self.ring_name(name, p) for p in range(t["partitions"])],
                "log_dirs": [self.partition_log_dir(name, p) for p in range(t["partitions"])],
                "partition_states": [{**s, "offline": sorted(self.replication.offline.get((name, p), ()))}
                                     for p, s in enumerate(self.partition_states(t))],
            }
        return {"epoch": self.doorbell.metadata_epoch, "doorbell": shm.doorbell_name(self.ns),
                "log_dirs": self.log_dirs, "broker": self.config.as_dict(), "topics": topics,
                "message_max_bytes": self.config.message_max_bytes}

    def topic_config(self, t):
        # Kafka's precedence: the topic's own setting, else the broker's default for it (log.segment.bytes,
        # log.roll.ms, log.retention.*, log.flush.*, and message.max.bytes for max.message.bytes), else Kafka's.
        return effective_topic_config(t["config"], self.config)

    def requested_log_starts(self, t):
        """Per partition, the log start offset delete_records asked for (0: none)."""
        asked = t.get("log_start_offsets") or {}
        return [int(asked.get(str(p), 0)) for p in range(t["partitions"])]

    def requested_log_start(self, t, partition):
        return int((t.get("log_start_offsets") or {}).get(str(partition), 0))

    def op_create_topics(self, sock, request):
        return {"results": self.create_topics(request["topics"], request.get("validate_only", False))}

    def create_topic(self, topic, num_partitions, config, internal=False):
        """Create one topic (one of the broker's own, or one a metadata request auto-creates);
        Refused if it cannot be."""
        result = self.create_topics([{"topic": topic, "num_partitions": num_partitions, "config": config}],
                                    internal=internal)[topic]
        if result is not None:
            raise Refused(*result)

    def create_topics(self, specs, validate_only=False, internal=False):
        """Create the topics of one request, {topic: None, or [code, reason] if refused}: each is
        checked, then its rings allocated and its directories claimed; then all of them are made
        durable and written to meta/topics.json together, and only then is anyone told (one
        metadata write and one epoch bump per request: one per topic, each writing every topic so
        far, made creating many topics quadratic). A topic that fails on the way is undone alone;
        when the final write fails every topic of the request is, so the metadata never names a
        topic whose rings do not exist. `internal`: the broker creating one of its own topics."""
        request = NewTopics(self)
        results = {}
        for spec in specs:
            try:
                self.add_new_topic(request, spec, validate_only, internal)
                results[spec["topic"]] = None
            except Refused as exc:
                results[spec["topic"]] = [exc.code, str(exc)]
            except KafkaException as exc:
                results[spec["topic"]] = [exc.args[0].code(), reason_of(exc)]
            except BaseException:
                for topic, t, _, dirs in request.made:
                    self.undo_partitions(topic, range(t["partitions"]), dirs)
                raise
        if not request.made:
            return results
        what = f"topic {request.made[0][0]!r}" if len(request.made) == 1 else f"{len(request.made)} topics"
        try:
            self.commit_partitions(what, request.meta, [d for *_, dirs in request.made for d in dirs])
        except Refused as exc:
            for topic, t, _, dirs in request.made:
                self.undo_partitions(topic, range(t["partitions"]), dirs)
                results[topic] = [exc.code, str(exc)]
            return results
        self.meta = request.meta
        self.doorbell.bump_metadata_epoch()
        for topic, t, config, _ in request.made:
            info(f"created topic {topic!r}{' (internal)' if internal else ''}: {t['partitions']} partition"
                 f"{'s' if t['partitions'] != 1 else ''}, topic id {t['topic_id']}"
                 + (f", config {config}" if config else ""))
        return results

    def add_new_topic(self, request, spec, validate_only, internal):
        """Check one topic of a create_topics request against the broker and the request's topics
        before it, then (unless validate_only) claim its directories, create its rings and add it
        to request.meta. Refused (or KafkaException) if it cannot be made; nothing is left then."""
        topic, config = spec["topic"], spec.get("config") or {}
        num_partitions, replica_assignment = spec.get("num_partitions", -1), spec.get("replica_assignment")
        problem = topic_name_problem(topic)
        if problem:
            raise Refused(KafkaError.TOPIC_EXCEPTION, problem)
        if topic in INTERNAL_TOPICS and not internal:
            raise Refused(KafkaError.INVALID_REQUEST, f"creation of the internal topic {topic} is prohibited: the "
                          f"broker creates and owns it")
        if topic in request.meta["topics"]:
            raise Refused(KafkaError.TOPIC_ALREADY_EXISTS, f"topic {topic!r} already exists")
        collides = request.folded.get(fold_topic_name(topic))
        if collides is not None:
            raise Refused(KafkaError.TOPIC_EXCEPTION, f"topic {topic!r} collides with existing topic {collides!r}: "
                          f"names that differ only in '.' versus '_' are not allowed (Kafka's metric names "
                          f"cannot tell them apart)")
        if replica_assignment and num_partitions in (-1, None):
            num_partitions = len(replica_assignment)
        if num_partitions in (-1, None):
            num_partitions = self.config.num_partitions
        if not isinstance(num_partitions, int) or isinstance(num_partitions, bool) or \
                not 1 <= num_partitions <= 10000:
            raise Refused(KafkaError.INVALID_PARTITIONS, f"num_partitions={num_partitions!r} must be 1..10000")
        leaders = list(request.leaders)   # taken on only if the topic is made
        placement = self.replication.place_replicas(num_partitions, spec.get("replication_factor", -1),
                                                    replica_assignment, counts=leaders)
        cfg = parse_topic_config(config)
        problem = memory_only_problem(topic, effective_topic_config(cfg, self.config), len(placement[0]))
        if problem:
            raise Refused(KafkaError.INVALID_CONFIG, problem)
        cfg.setdefault("ring.bytes", self.config.ring_bytes)
        if topic == SCHEMAS_TOPIC:   # compacted once a segment rolls: small segments bound its replay
            cfg.setdefault("segment.bytes", self.config.schemas_topic_segment_bytes)
        ring_sizes = [ring_geometry(cfg)] * num_partitions
        shortage = self.shm_problem(f"topic {topic!r}", ring_sizes, held=request.shm_held)
        if shortage:
            raise Refused(*shortage)
        if validate_only:
            return
        t = {"id": request.meta["next_topic_id"], "topic_id": metadata.new_topic_id(),
             "partitions": num_partitions, "config": cfg,
             "partition_states": [replicas.new_state(r) for r in placement]}
        dirs = self.make_partitions(f"topic {topic!r}", topic, range(num_partitions), t)
        request.meta["topics"][topic] = t
        request.meta["next_topic_id"] += 1
        request.folded[fold_topic_name(topic)] = topic
        request.leaders = leaders
        if request.shm_held is not None:
            request.shm_held += sum(lib.shmlog_ring_map_bytes(b, s) for b, s in ring_sizes)
        request.made.append((topic, t, config, dirs))

    def make_partitions(self, what, topic, partitions, t):
        """Claim the directories and create the rings of new partitions of topic entry t (which
        self.meta need not hold yet); the directories made, not durable yet (commit_partitions).
        On any failure unlink what was created and raise Refused."""
        settings = self.ring_settings(t)   # once for the topic: its config is the same for every partition
        created, dirs, new_dirs, making = [], [], [], None
        try:
            if not settings.memory_only:
                for p in partitions:
                    for pdir in self.replica_dirs(topic, p, t):
                        dirs.append(pdir)
                        if os.path.isdir(pdir):   # an earlier topic's: moved aside, a new one made
                            self.claim_replica_dir(pdir, topic, p, t, new=True, sync=False)
                        else:
                            new_dirs.append(pdir)
                # Many are made by another thread while this one creates the rings: both are
                # mostly system calls, which let the other thread run.
                making = DirMaker(new_dirs, t["topic_id"])
            for p in partitions:
                # Its directory (claimed new: emptied) holds no log to continue from.
                self.create_ring(topic, p, t, fresh=not settings.memory_only, settings=settings)
                created.append(p)
            if making is not None:
                making.wait()
        except BaseException as exc:
            if making is not None:
                making.wait(check=False)   # done before its directories are removed
            self.undo_partitions(topic, created, dirs)
            if isinstance(exc, Refused):
                raise
            if isinstance(exc, KafkaException):
                code, reason = exc.args[0].code(), reason_of(exc)
            elif isinstance(exc, Exception):
                code, reason = KafkaError._CRIT_SYS_RESOURCE, f"{type(exc).__name__}: {exc}"
            else:
                raise
            raise Refused(code, f"cannot create {what}: {reason}; nothing was created") from None
        return dirs

    def undo_partitions(self, topic, partitions, dirs):
        """Unlink the rings and remove the directories make_partitions made."""
        for p in partitions:
            self.drop_ring(topic, p)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)   # just made: it holds only partition.metadata

    def commit_partitions(self, what, new_meta, dirs):
        """Make the new partitions' directories durable, then write new_meta: every
        partition.metadata is on disk before topics.json names its partition (the files, their
        new directories and the log dirs holding those, fsynced together: metadata.fsync_all).
        Refused if the disk refuses; the caller undoes the partitions."""
        try:
            metadata.fsync_all([os.path.join(d, metadata.PARTITION_METADATA) for d in dirs] + dirs
                               + sorted({os.path.dirname(d) for d in dirs}))
        except OSError as exc:
            raise Refused(KafkaError._CRIT_SYS_RESOURCE, f"cannot create {what}: {type(exc).__name__}: {exc}; "
                                                         f"nothing was created") from None
        self.save_meta(new_meta)

    def save_meta(self, meta):
        """Write meta/topics.json; Refused (KAFKA_STORAGE_ERROR) if the disk refuses."""
        try:
            metadata.save(self.data_dir, meta)
        except OSError as exc:
            raise Refused(KafkaError.KAFKA_STORAGE_ERROR, f"cannot write {metadata.metadata_path(self.data_dir)}: "
                          f"{exc}; nothing was changed") from None

    def op_delete_topics(self, sock, request):
        results = {}
        for topic in request["topics"]:
            if not self.config.delete_topic_enable:
                results[topic] = [KafkaError.TOPIC_DELETION_DISABLED, f"cannot delete topic {topic!r}: topic "
                                  f"deletion is disabled on this broker (delete.topic.enable=false)"]
                continue
            if topic in UNDELETABLE_TOPICS:
                # The one home for this rule: every client (AdminClient, CLI) just reports it.
                results[topic] = [KafkaError.INVALID_REQUEST, f"topic {topic} is an internal topic and is not "
                                  f"allowed to be deleted: what it holds (committed offsets, registered "
                                  f"schemas) would be lost"]
                continue
            if topic not in self.meta["topics"]:
                results[topic] = [KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}"]
                continue
            parts = self.meta["topics"][topic]["partitions"]
            dirs = [d for p in range(parts) for d in self.replica_dirs(topic, p)]
            new = copy.deepcopy(self.meta)
            del new["topics"][topic]
            try:
                self.save_meta(new)  # first: a crash from here on leaves the topic deleted
            except Refused as exc:
                results[topic] = [exc.code, str(exc)]
                continue
            self.meta = new
            for p in range(parts):
                self.drop_ring(topic, p)
            self.doorbell.bump_metadata_epoch()
            for d in dirs:
                if os.path.isdir(d):
                    self.retire(d)
            info(f"deleted topic {topic!r} ({parts} partition{'s' if parts != 1 else ''})")
            results[topic] = None
        return {"results": results}

    def op_create_partitions(self, sock, request):
        results = {}
        for spec in request["topics"]:
            topic, total = spec["topic"], spec["new_total_count"]
            t = self.meta["topics"].get(topic)
            if t is None:
                results[topic] = [KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}"]
            elif not isinstance(total, int) or total <= t["partitions"]:
                results[topic] = [KafkaError.INVALID_PARTITIONS, f"topic {topic!r} has {t['partitions']} "
                                  f"partitions; new_total_count={total!r} must be larger"]
            elif total > 10000:
                results[topic] = [KafkaError.INVALID_PARTITIONS, f"new_total_count={total} must be at most 10000"]
            else:
                shortage = self.shm_problem(f"{total - t['partitions']} new partitions of {topic!r}",
                                            [ring_geometry(metadata.topic_config(t))] * (total - t["partitions"]))
                if shortage:
                    results[topic] = list(shortage)
                    continue
                if request.get("validate_only"):
                    results[topic] = None
                    continue
                try:
                    asked = spec.get("replica_assignment")
                    rf = -1 if asked else len(self.partition_states(t)[0]["replicas"])
                    placement = self.replication.place_replicas(total - t["partitions"], rf, asked, t["partitions"])
                except Refused as exc:
                    results[topic] = [exc.code, str(exc)]
                    continue
                old = t["partitions"]
                nt = {**t, "partitions": total,
                      "partition_states": self.partition_states(t) + [replicas.new_state(r) for r in placement]}
                new = {**self.meta, "topics": {**self.meta["topics"], topic: nt}}  # entries are replaced whole
                what = f"partitions {old}..{total - 1} of {topic!r}"
                try:
                    dirs = self.make_partitions(what, topic, range(old, total), nt)
                    try:
                        self.commit_partitions(what, new, dirs)
                    except Refused:
                        self.undo_partitions(topic, range(old, total), dirs)
                        raise
                except Refused as exc:
                    results[topic] = [exc.code, str(exc)]
                    continue
                self.meta = new
                self.doorbell.bump_metadata_epoch()
                info(f"added partitions to topic {topic!r}: {old} -> {total} partitions")
                results[topic] = None
        return {"results": results}

    def op_alter_configs(self, sock, request):
        results = {}
        for topic, config in request["topics"].items():
            t = self.meta["topics"].get(topic)
            if t is None:
                results[topic] = [KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}"]
                continue
            try:
                cfg = parse_topic_config(config)
            except KafkaException as exc:
                results[topic] = [KafkaError.INVALID_CONFIG, reason_of(exc)]
                continue
            fixed = [k for k in ("ring.bytes", "ring.slots") if k in cfg and cfg[k] != metadata.topic_config(t)[k]]
            if fixed:
                results[topic] = [KafkaError.INVALID_CONFIG, f"{fixed[0]} cannot change after creation"]
                continue
            results[topic] = None if request.get("validate_only") else \
                self.set_topic_config(topic, {**t["config"], **cfg}, "alter_configs")
        return {"results": results}

    def op_alter_replica_log_dirs(self, sock, request):
        return {"results": self.replication.alter_replica_log_dirs(request["moves"])}

    def op_delete_records(self, sock, request):
        """AdminClient.delete_records: move each partition's log start offset forward.

        The request is durable (topic metadata, fsynced) before the ring header shows it, so
        consumers stop seeing those records at once and a host crash does not bring them
        back; the persister deletes the segments wholly below it and checkpoints it.
        """
        results, changed = [], []
        new = copy.deepcopy(self.meta)
        for item in request["partitions"]:
            topic, partition, offset = item["topic"], item["partition"], item["offset"]
            t = new["topics"].get(topic)
            if t is None or not isinstance(partition, int) or not 0 <= partition < t["partitions"]:
                results.append([KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown partition {topic}-{partition}"])
                continue
            ring = self.rings[(topic, partition)]
            high = ring.end()[1]
            if offset == -1:  # OFFSET_END: everything up to the high watermark
                offset = high
            if not isinstance(offset, int) or offset < 0 or offset > high:
                results.append([KafkaError.OFFSET_OUT_OF_RANGE, f"{topic}-{partition}: cannot delete records before "
                                f"offset {offset}: the high watermark is {high}"])
                continue
            asked = t.setdefault("log_start_offsets", {})
            if offset > int(asked.get(str(partition), 0)) and offset > ring.log_start_offset:
                asked[str(partition)] = offset
                changed.append((ring, offset, len(results)))
            results.append(None)
        if changed:
            try:
                self.save_meta(new)
            except Refused as exc:
                for _, _, i in changed:
                    results[i] = [exc.code, str(exc)]
                changed = []
            else:
                self.meta = new
                self.doorbell.bump_metadata_epoch()  # the persister rereads metadata and deletes
        for ring, offset, _ in changed:
            lib.shmlog_ring_advance_log_start(ring.map, offset)
        out = []
        for item, result in zip(request["partitions"], results):
            if result is None:
                ring = self.rings[(item["topic"], item["partition"])]
                out.append({"low_watermark": ring.log_start_offset})
            else:
                out.append({"error": result})
        return {"results": out}

    def op_status(self, sock, request):
        partitions = []
        for (topic, p), ring in sorted(self.rings.items()):
            pos, end = ring.end()
            persist = ring.header.persist
            used = pos - ring.header.release.release_position
            partitions.append({
                "topic": topic, "partition": p, "log_start_offset": persist.log_start_offset,
                "log_end_offset": end, "persisted_offset": persist.persisted_offset,
                "flushed_offset": persist.flushed_offset, "ring_bytes": ring.capacity_bytes,
                "ring_used_bytes": used,
            })
        clients = [{"pid": c["pid"], "kind": c["kind"], "telemetry": c.get("telemetry", [])}
                   for c in self.clients.values() if c["pid"]]
        return {"pid": os.getpid(), "data_dir": self.data_dir, "bootstrap_servers": control.SCHEME + self.data_dir,
                "persister_pid": self.persister.pid if self.persister else None,
                "keeper_pid": self.keeper_pid if self.keeper_pid and os.getppid() == self.keeper_pid else None,
                "partitions": partitions, "clients": clients,
                # What the persister last published of its fdatasync latency (persister_stats.py); None
                # before the first one wrote its stats file.
                "persister_stats": persister_stats.read(self.data_dir),
                "cleaner_pid": self.cleaner.pid if self.cleaner else None,
                "cleaner_stats": cleaner_stats(self.data_dir),
                # The Kafka listener's bound and advertised address (None: not configured or not up yet).
                "kafka_listener": self.listener.status()}

    def op_push_telemetry(self, sock, request):
        """A client's metrics replace what it pushed before; they go when it detaches."""
        for name, labels, value in request["metrics"]:
            if not TELEMETRY_NAME.fullmatch(name) or not all(TELEMETRY_NAME.fullmatch(k) for k in labels):
                raise Refused(KafkaError.INVALID_REQUEST, f"push_telemetry: {name!r} {sorted(labels)}: metric and "
                              f"label names are [a-z_][a-z0-9_]*")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Refused(KafkaError.INVALID_REQUEST, f"push_telemetry: {name!r} has value {value!r}, not a number")
        self.clients[sock]["telemetry"] = request["metrics"]

    def op_shutdown(self, sock, request):
        self.running = False

    def op_describe_cluster(self, sock, request):
        """AdminClient.describe_cluster/cluster_id: the data dir's cluster id (made on first ask)."""
        try:
            return {"cluster_id": metadata.cluster_id(self.data_dir)}
        except OSError as exc:
            raise Refused(KafkaError.KAFKA_STORAGE_ERROR, f"cannot read or write the cluster id under "
                          f"{self.data_dir}/meta: {exc}")

    def op_init_producer_id(self, sock, request):
        """Kafka's InitProducerId for an idempotent producer (transactional_id null): a producer
        id never handed out before in this data dir (producer_ids.py) and epoch 0."""
        if request.get("transactional_id") is not None:
            return self.txns.init_producer_id(sock, request)   # broker/txn_service.py
        try:
            return {"producer_id": self.producer_ids.allocate(), "producer_epoch": 0}
        except ProducerIdsUnavailable as exc:
            raise Refused(KafkaError.KAFKA_STORAGE_ERROR, f"init_producer_id: {exc}") from None

    def op_describe_producers(self, sock, request):
        """Kafka's DescribeProducers: per partition, each idempotent producer's epoch, last
        sequence and its offset, from the log on disk (producer_state.load) and, newer, the
        ring's sequence records. An idempotent producer asks before it re-sends batches to a
        restarted broker, so the append path knows which of them the log already holds."""
        results = []
        for topic, partition in request["partitions"]:
            t = self.meta["topics"].get(topic)
            if t is None or not 0 <= partition < t["partitions"]:
                results.append({"topic": topic, "partition": partition, "error": KafkaError.UNKNOWN_TOPIC_OR_PART,
                                "producers": []})
                continue
            pdir = partition_dir(self.partition_log_dir(topic, partition, t), topic, partition)
            try:
                state = producer_state.load(pdir, log_end_offset(pdir, check_crc=True)) if os.path.isdir(pdir) \
                    else producer_state.ProducerState()
            except OSError as exc:
                raise Refused(KafkaError.KAFKA_STORAGE_ERROR, f"describe_producers: cannot read {pdir}: {exc}")
            producers = {pid: {"producer_id": pid, "producer_epoch": e.producer_epoch,
                               "last_sequence": e.last_sequence, "last_offset": e.last_offset}
                         for pid, e in state.producers.items()}
            ring = self.rings.get((topic, partition))
            for live in (ring.producer_sequences() if ring is not None and not ring.closed else ()):
                known = producers.get(live["producer_id"])
                if known is None or live["last_offset"] > known["last_offset"]:
                    producers[live["producer_id"]] = live
            results.append({"topic": topic, "partition": partition, "error": 0,
                            "producers": sorted(producers.values(), key=lambda e: e["producer_id"])})
        return {"partitions": results}

    def op_describe_configs(self, sock, request):
        """AdminClient.describe_configs: per topic its effective config and what was set on it;
        the broker's config and which keys were given to it (the rest are defaults)."""
        names = request.get("topics") or []
        if not isinstance(names, list):
            raise Refused(KafkaError.INVALID_REQUEST, "describe_configs: topics must be a list of names")
        topics = {}
        for name in names:
            t = self.meta["topics"].get(name) if isinstance(name, str) else None
            if t is not None:
                topics[name] = {"config": self.topic_config(t), "set": dict(t["config"])}
        return {"topics": topics, "broker": {"config": self.config.as_dict(), "set": sorted(self.config.explicit)}}

    INCREMENTAL_OPS = ("SET", "DELETE", "APPEND", "SUBTRACT")   # AlterConfigOpType values 0..3
    LIST_TOPIC_KEYS = ("cleanup.policy",)

    def op_incremental_alter_configs(self, sock, request):
        """AdminClient.incremental_alter_configs: {topic: [[key, op, value], ...]} applied to what
        is set on each topic (DELETE reverts a key to its default), checked as alter_configs is."""
        results = {}
        topics = request.get("topics")
        if not isinstance(topics, dict) or not all(isinstance(ops, list) for ops in topics.values()):
            raise Refused(KafkaError.INVALID_REQUEST, "incremental_alter_configs: topics must map names to lists "
                          "of [key, op, value]")
        for topic, ops in topics.items():
            t = self.meta["topics"].get(topic)
            if t is None:
                results[topic] = [KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic!r}"]
                continue
            try:
                own = self.incremental_config(t, ops)
                cfg = parse_topic_config(own)
            except Refused as exc:
                results[topic] = [exc.code, str(exc)]
                continue
            except KafkaException as exc:
                results[topic] = [KafkaError.INVALID_CONFIG, reason_of(exc)]
                continue
            if effective_topic_config(cfg, self.config)["ring.bytes"] != self.topic_config(t)["ring.bytes"]:
                results[topic] = [KafkaError.INVALID_CONFIG, "ring.bytes cannot change after creation"]
                continue
            results[topic] = None if request.get("validate_only") else \
                self.set_topic_config(topic, cfg, "incremental_alter_configs")
        return {"results": results}

    def set_topic_config(self, topic, cfg, op):
        """Make `cfg` what is set on `topic`: saved (fsynced) before the metadata epoch bump tells
        the other processes. None, or the [code, reason] result when the save is refused."""
        t = self.meta["topics"][topic]
        old, wanted = self.topic_config(t), effective_topic_config(cfg, self.config)
        if old["shmlog.persist"] != wanted["shmlog.persist"]:
            return [KafkaError.INVALID_CONFIG, f"topic {topic!r}: shmlog.persist cannot change after creation "
                                               f"(it is {str(old['shmlog.persist']).lower()})"]
        problem = memory_only_problem(topic, wanted, len(self.partition_state(topic, 0, t)["replicas"]))
        if problem:
            return [KafkaError.INVALID_CONFIG, problem]
        new = copy.deepcopy(self.meta)
        new["topics"][topic]["config"] = cfg
        try:
            self.save_meta(new)
        except Refused as exc:
            return [exc.code, str(exc)]
        self.meta = new
        log_append_time = self.topic_config(new["topics"][topic])["message.timestamp.type"] == "LogAppendTime"
        for p in range(new["topics"][topic]["partitions"]):
            self.apply_replication(topic, p)   # min.insync.replicas, unclean election
            ring = self.rings.get((topic, p))
            if ring is not None:
                lib.shmlog_ring_set_log_append_time(ring.map, log_append_time)
        self.doorbell.bump_metadata_epoch()
        info(f"altered the config of topic {topic!r}: {cfg} ({op})")
        return None

    def incremental_config(self, t, ops):
        own = dict(t["config"])
        for item in ops:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
                raise Refused(KafkaError.INVALID_REQUEST, f"{item!r} is not a [key, op, value] triple")
            key, op, value = item
            if not isinstance(op, int) or isinstance(op, bool) or not 0 <= op < len(self.INCREMENTAL_OPS):
                raise Refused(KafkaError.INVALID_REQUEST, f"{key}: unknown incremental operation {op!r}")
            if key not in own and key not in self.topic_config(t):
                parse_topic_config({key: value})   # an unknown key: KafkaException naming it
            name = self.INCREMENTAL_OPS[op]
            if name == "SET":
                own.update(parse_topic_config({key: value}))
            elif name == "DELETE":
                own.pop(key, None)
            elif key not in self.LIST_TOPIC_KEYS:
                raise Refused(KafkaError.INVALID_REQUEST, f"Config value {name.lower()} is not allowed for config "
                              f"key: {key} (it is not a list)")
            else:
                current = [v for v in str(own.get(key, self.topic_config(t)[key])).split(",") if v]
                given = [v.strip() for v in str(value or "").split(",") if v.strip()]
                if name == "APPEND":
                    items = current + [v for v in given if v not in current]
                else:
                    items = [v for v in current if v not in given]
                if not items:
                    raise Refused(KafkaError.INVALID_CONFIG, f"{key}: removing {value!r} would leave it empty")
                own.update(parse_topic_config({key: ",".join(items)}))
        return own

    # ------------------------------------------------------------------ loop

    def accept(self):
        try:
            sock, _ = self.server.accept()
        except BlockingIOError:
            return
        # Every connection: the peer's credentials against the policy. A refused peer gets one
        # line saying why, and the broker carries on; an allowed one a greeting the client checks.
        try:
            allowed, uid = self.policy.allows(sock)
        except OSError:
            sock.close()  # gone before we could ask who it was
            return
        if allowed:
            first = {"ok": True, "hello": "shmlog", "data_dir": self.data_dir, "pid": os.getpid(),
                     "owner": self.policy.owner, "keeper_pid": self.keeper_pid or None}
        else:
            first = {"ok": False, "code": KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                     "error": self.policy.refusal(uid, self.data_dir)}
            self.log_refusal(first["error"])
        try:
            sock.sendall(control.encode(first))  # a fresh socket's buffer takes one short line
        except OSError:
            allowed = False
        if not allowed:
            sock.close()
            return
        sock.setblocking(False)
        self.clients[sock] = {"buf": b"", "pid": 0, "kind": "client", "out": bytearray(), "closing": False}
        self.selector.register(sock, selectors.EVENT_READ)

    def log_refusal(self, message):
        """At most one line a second, however fast refused peers knock."""
        now = time.monotonic()
        last, quiet = self.refusals
        if now - last >= 1.0:
            log(message + (f" ({quiet} more refused since the last report)" if quiet else ""))
            self.refusals = [now, 0]
        else:
            self.refusals[1] += 1

    def drop(self, sock):
        self.client_lost = True
        self.selector.unregister(sock)
        client = self.clients.pop(sock)
        sock.close()
        if client["pid"]:  # a registered client (status probes and one-off admin requests do not register)
            self.client_events(logging.INFO, f"client pid {client['pid']} ({client['kind']}) lost: its "
                                             f"connection closed")
        if self.groups is not None:
            self.groups.disconnected(sock)  # a member's process exited or died: its group hears at once
        if client["pid"] and client["kind"] == "producer":
            self.reclaim_dead_producers()

    def receive(self, sock):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(sock)
            return
        client = self.clients[sock]
        buf, start = client["buf"] + data, 0
        while sock in self.clients and not client["closing"]:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line, start = buf[start:end], end + 1
            self.respond(sock, line)
        client["buf"] = buf[start:]
        if len(client["buf"]) > requests.MAX_LINE_BYTES and not client["closing"]:
            self.respond(sock, client["buf"])   # too long already: refused, and the connection closed
        if client["closing"]:
            client["buf"] = b""

    def respond(self, sock, line):
        """Answer one request line. Nothing a request holds raises out of here: the schema
        (broker/requests.py) refuses a malformed one before any op sees it; an error an op
        raises anyway is logged in one line and answered as an internal error."""
        request_id, op, close = None, None, False
        try:
            request = requests.parse(line)
            request_id, op = request.get("id"), request["op"]
            result = self.handle(sock, request)
            if result is DEFERRED:
                return  # answered later (a group join waits for the rebalance)
            reply = {"ok": True, **result}
        except requests.BadRequest as exc:
            reply = {"ok": False, "code": exc.code, "error": str(exc)}
            request_id, close = exc.request_id, exc.close
        except Refused as exc:
            reply = {"ok": False, "code": exc.code, "error": str(exc)}
        except KafkaException as exc:
            reply = {"ok": False, "code": exc.args[0].code(), "error": reason_of(exc)}
        except Exception as exc:  # noqa: BLE001 - the last resort: a request never takes the broker down
            log(f"internal error answering a {op} request: {type(exc).__name__}: {exc}"[:2000])
            reply = {"ok": False, "code": KafkaError._FAIL,
                     "error": f"internal error in the broker answering {op}: {type(exc).__name__}: {exc}"[:2000]}
        reply["id"] = request_id
        self.send(sock, reply)
        if close:
            self.close_after_replies(sock)

    def send(self, sock, message):
        """Queue one line to a client without blocking: what the socket does not take now is
        sent when it can take more. A client that lets more than MAX_UNREAD_REPLY_BYTES of
        replies pile up unread is disconnected (it would otherwise hold the broker's memory)."""
        client = self.clients.get(sock)
        if client is None or client["closing"] == "now":
            return   # that connection is gone already
        client["out"] += control.encode(message)
        self.flush_replies(sock)
        if len(client["out"]) > MAX_UNREAD_REPLY_BYTES:
            log(f"disconnecting client pid {client['pid']} ({client['kind']}): it left more than "
                f"{MAX_UNREAD_REPLY_BYTES} bytes of replies unread")
            client["out"].clear()
            self.close_after_replies(sock)

    def flush_replies(self, sock):
        client = self.clients[sock]
        try:
            while client["out"]:
                sent = sock.send(client["out"])
                del client["out"][:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            client["out"].clear()   # the peer is gone: receive() sees it and drops the connection
        if client["closing"] and not client["out"]:
            client["closing"] = "now"   # dropped by serve_once, never in the middle of a request
            return
        # A closing connection is not read any more: only watched until its replies are out.
        events = (0 if client["closing"] else selectors.EVENT_READ) | (selectors.EVENT_WRITE if client["out"] else 0)
        if self.selector.get_key(sock).events != events:
            self.selector.modify(sock, events)

    def close_after_replies(self, sock):
        """Read no more from sock; close it once what is queued for it is sent."""
        client = self.clients.get(sock)
        if client is not None and not client["closing"]:
            client["closing"] = True
            self.flush_replies(sock)

    def reclaim_dead_producers(self, now=None):
        """Repair dead producers' and stalled claims in the rings where a slot is held at all:
        every ring once a second, when a client was lost, or when asked without `now`; else the
        ones held last time."""
        full = now is None or self.client_lost or now >= self.next_full_held_scan
        if full and now is not None:
            self.client_lost = False
            self.next_full_held_scan = now + FULL_HELD_SCAN_S
        for _, ring in self.held_rings.held(self.rings, self.rings_version, full):
            ring.reclaim_dead_slots(self.doorbell.ptr)
            ring.fence_stalled_claims(self.doorbell.ptr)

    def run(self):
        self.lock()
        self.make_log_dirs()
        self.secure_files()
        try:
            self.start()
        except BaseException:
            self.abandon_start()
            raise
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "running", False))
        self.ensure_persister()
        self.cleaner = CleanerProcess(self.data_dir, self.config.shmlog_log_level)
        self.cleaner.ensure(self.config.log_cleaner_enable)
        self.listener.ensure()
        print(f"shmlog broker ready {control.SCHEME}{self.data_dir}", flush=True)
        next_housekeeping = 0.0
        while self.running:
            self.serve_once(self.sleep_s(next_housekeeping))
            self.groups.tick()
            self.txns.tick()
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
                self.ensure_persister()
                self.cleaner.ensure(self.config.log_cleaner_enable)
                self.listener.ensure()
                self.replication.ensure_mirrors()
                self.replication.track_isr(now)
                self.reclaim_dead_producers(now)
                self.remove_retired_dirs(now)
                self.check_keeper()
                self.client_events.flush("client attached/lost lines")
        self.client_events.flush("client attached/lost lines")
        self.shutdown()

    def start(self):
        """Everything between taking the lock and serving: metadata, log dirs, the internal
        topics' recovery, shared memory, the committed offsets, the control socket."""
        try:
            self.meta = metadata.load(self.data_dir, warn=log)
        except metadata.MetadataError as exc:
            raise SystemExit(f"shmlog: cannot start: {exc}") from None
        self.assign_topic_ids()
        self.check_log_dirs()
        self.recover_internal_topics()
        for name, p in self.partitions():
            if self.memory_only(self.meta["topics"][name]):
                continue
            try:
                self.claim_partition_dir(name, p, self.meta["topics"][name], new=False)
            except OSError as exc:  # the persister reports it again when it cannot open the partition
                log(f"{name}-{p}: cannot prepare its directory: {exc}")
        self.reclaim_shared_memory()
        self.groups = GroupService(self)
        self.groups.start()
        self.txns = TxnService(self)    # after the groups: a commit left half-done writes offsets
        self.txns.start()
        self.listen()

    def abandon_start(self):
        """A start that fails leaves nothing in /dev/shm (nor a bound socket)."""
        for ring in self.rings.values():
            ring.close()
        self.rings.clear()
        if self.doorbell is not None:
            self.doorbell.close()
        for name in shm.names_in_namespace(self.ns):
            shm.unlink(name)
        server = getattr(self, "server", None)
        if server is not None:
            server.close()

    def assign_topic_ids(self):
        """Topics from an older version have no topic id yet: give them one (and their
        directories take it on at the next step)."""
        missing = [t for t in self.meta["topics"].values() if "topic_id" not in t]
        if not missing:
            return
        new = copy.deepcopy(self.meta)
        for t in new["topics"].values():
            t.setdefault("topic_id", metadata.new_topic_id())
        try:
            metadata.save(self.data_dir, new)
        except OSError as exc:
            raise SystemExit(f"shmlog: cannot start: cannot write {metadata.metadata_path(self.data_dir)}: {exc}") \
                from None
        self.meta = new

    def sleep_s(self, next_housekeeping):
        """How long the loop may wait for a request: until the next housekeeping round or the
        next group timer (a join phase ending, a session running out), whichever is first, so
        a group timer fires on time rather than on a housekeeping tick."""
        wake = next_housekeeping
        for deadline in (self.groups.next_deadline(), self.txns.next_deadline()):
            if deadline is not None:
                wake = min(wake, deadline)
        return max(0.0, wake - time.monotonic())

    def close_rings(self):
        """The first step of a clean stop, before the persister drains: close every ring, so no
        producer claims anything more in it (they get SHMLOG_ECLOSED and keep their records), then
        wait until every claim made before the close is published (or, a dead producer's,
        repaired). From then on nothing more is ever published, so the drain that follows
        persists everything a delivery report or a consumer has seen (csrc/core/close.c)."""
        self.doorbell.header.broker_state = lib.SHMLOG_BROKER_STOPPING
        for ring in self.rings.values():
            ring.close_for_stop(self.doorbell.ptr)
        deadline = time.monotonic() + STOP_CLAIMS_TIMEOUT_S
        claimed = dict(self.rings)
        while True:
            for key, ring in list(claimed.items()):
                if ring.open_claims():
                    ring.reclaim_dead_slots(self.doorbell.ptr)
                    # A live producer stopped (SIGSTOP) holding a claim is fenced once it is older than
                    # shmlog.claim.timeout.ms: its batch then fails, so no report says delivered for it.
                    ring.fence_stalled_claims(self.doorbell.ptr)
                if not ring.open_claims():
                    del claimed[key]
            if not claimed:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.001)  # a live producer publishes what it claimed within microseconds
        for (topic, partition), ring in claimed.items():
            pids = sorted({s.pid for s in ring.producer_slots() if Ring.slot_state(s) in (
                lib.SHMLOG_SLOT_CLAIMING, lib.SHMLOG_SLOT_OWNED, lib.SHMLOG_SLOT_COMMITTING)})
            log(f"{topic}-{partition}: producer process(es) {pids} still hold a claim {STOP_CLAIMS_TIMEOUT_S:.0f} s "
                f"after the ring was closed (stopped inside a commit?); what they publish later is not persisted")

    def shutdown(self):
        serve = functools.partial(self.serve_once, 0.01)   # while children stop (broker/children.py)
        self.listener.stop(serve)   # first: no Kafka client appends while the rings close
        if self.cleaner is not None:
            self.cleaner.terminate()   # it stops between segments while the persister drains
        self.close_rings()
        self.stop_persister()
        if self.cleaner is not None:
            self.cleaner.stop(serve)
        self.replication.stop_mirrors(serve)
        self.doorbell.header.broker_state = lib.SHMLOG_BROKER_STOPPED
        self.remove_retired_dirs()
        for sock in list(self.clients):
            self.drop(sock)
        self.server.close()
        try:
            os.unlink(control.socket_path(self.data_dir))
        except OSError:
            pass  # the next start replaces it anyway
        for ring in self.rings.values():
            ring.close()
        self.doorbell.close()
        for name in shm.names_in_namespace(self.ns):
            shm.unlink(name)
        os.ftruncate(self.lock_fd, 0)
        os.pwrite(self.lock_fd, STOPPED, 0)  # a standby waiting for the lock must not start a broker
        os.close(self.lock_fd)


def log(message, level=logging.WARNING):
    """One line in the broker's log (shmlog/broker/logs.py); WARNING unless said otherwise."""
    logs.get().log(level, message)


def info(message):
    logs.get().info(message)


def describe_status(returncode):
    """Popen.returncode -> "" or " (killed by SIGKILL)"."""
    if returncode is not None and returncode < 0:
        try:
            return f" (killed by {signal.Signals(-returncode).name})"
        except ValueError:
            return f" (killed by signal {-returncode})"
    return ""


def set_parent_death_signal(sig):
    """prctl(PR_SET_PDEATHSIG, sig): the kernel sends sig when our parent dies (0: nothing)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    data_dir = argv[0]
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    logs.setup("supervisor")
    limits = fd_limit.raise_to_hard_limit()
    if limits is None:
        log("cannot raise the open-descriptor limit (RLIMIT_NOFILE) to its hard limit; many partitions may "
            "run out of descriptors")
    elif limits[1] != limits[0]:
        info(f"open-descriptor limit (RLIMIT_NOFILE) raised from {limits[0]} to {limits[1]}")
    Supervisor(data_dir, config).run()


if __name__ == "__main__":
    logs.exit_process(main())
