"""The log cleaner process: compacts the topics whose cleanup.policy has compact.

Run as `python -m shmlog.broker.cleaner <data_dir>`; the supervisor starts it when
`log.cleaner.enable` is true and restarts it when it dies (CleanerProcess below). Each round
it plans from the supervisor's metadata (topics, their effective configs, log dirs; asked for
again only when the doorbell's metadata epoch moved, so an idle broker with 100,000 partitions
does not encode and decode them every round), cleans the partitions that are due, filthiest
first, `log.cleaner.threads` at a time, with shmlog/log/cleaner.py, and sleeps
`log.cleaner.backoff.ms` when none is. It only reads and swaps sealed segments, so it never
waits for producers or the persister, nor they for it.

It holds <data_dir>/run/cleaner.lock while it cleans, so one cleaner runs per data dir and
`shmlog log clean` (a clean run by hand) waits for a round to end. Before it first cleans a
partition it removes what an interrupted clean left there (recover_swaps).

Status goes to <data_dir>/run/cleaner-stats.json after every round (read()): per
partition its dirty ratio, cleanable bytes, the last clean's time, duration and bytes
reclaimed, and totals; `shmlog log cleaner-status`, `shmlog topics describe` and
`shmlog metrics` show it.
"""
import ctypes
import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from shmlog import control
from shmlog._native.ring import Doorbell
from shmlog.broker import children, logs
from shmlog.config import COMPACTED_TOPICS
from shmlog.errors import KafkaError, KafkaException
from shmlog.log import cleaner
from shmlog.log.segment import partition_dir
from shmlog.stop_event import StopEvent

LOCK_NAME = "cleaner.lock"
STATS_NAME = "cleaner-stats.json"
RESTART_BACKOFF_S = 1.0
STOP_TIMEOUT_S = 10.0
CLEANER_NICE = 19
IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_WHO_PROCESS = 1
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314, "ppc64le": 273, "s390x": 282}


def log(message, level=logging.WARNING):
    logs.get().log(level, message)


def stats_path(data_dir):
    return os.path.join(control.run_dir(data_dir), STATS_NAME)


def read(data_dir):
    """The cleaner's last published status (a dict), or None before it wrote one."""
    try:
        with open(stats_path(data_dir)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def lock(data_dir, blocking=True):
    """Hold run/cleaner.lock: the returned fd (close it to release), or None if busy and not blocking."""
    fd = os.open(os.path.join(control.run_dir(data_dir), LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


def follower_name(topic, partition, replica):
    """The status key of a follower replica's log: "topic-p replica r" (r: its log dir's index)."""
    return f"{topic}-{partition} replica {replica}"


def compacted_partitions(meta):
    """[(status key, partition dir, topic config)] of every log the cleaner compacts: each
    compacted partition's leader replica ("topic-p") and its followers (follower_name), each
    cleaned on its own with its own checkpoint, as Kafka's cleaner compacts every replica a
    broker holds. The mirror only appends to a follower's newest segment, which no clean
    touches."""
    out = []
    log_dirs = meta.get("log_dirs") or []
    for name, t in sorted(meta["topics"].items()):
        cfg = t.get("config") or {}
        if name in COMPACTED_TOPICS or cleaner.compacted(cfg):
            states = t.get("partition_states") or []
            for p in range(t["partitions"]):
                out.append((f"{name}-{p}", partition_dir(t["log_dirs"][p], name, p), cfg))
                state = states[p] if p < len(states) else {}
                for r in state.get("replicas") or ():
                    if r != state.get("leader") and r < len(log_dirs):
                        out.append((follower_name(name, p, r), partition_dir(log_dirs[r], name, p), cfg))
    return out


class Cleaner:
    def __init__(self, data_dir):
        self.data_dir = os.path.realpath(data_dir)
        self.control = control.Control(self.data_dir, register_as="cleaner")
        self.stopping = StopEvent()      # set by SIGTERM and SIGINT
        self.recovered = set()          # partition dirs whose leftovers were removed
        self.partitions = {}            # "topic-p" -> status dict of the leader replica's log
        self.followers = {}             # follower_name() -> status dict of a follower replica's log
        self.totals = {"cleans": 0, "bytes_read": 0, "bytes_reclaimed": 0, "records_removed": 0, "errors": 0}
        self.enabled = True
        self.started_ms = time.time_ns() // 1_000_000
        self.lock = threading.Lock()
        self.throttle = cleaner.Throttle(0)
        self.bell = None
        self.meta = None

    def metadata(self):
        """The supervisor's metadata, as of its current epoch."""
        if self.meta is not None and self.bell.metadata_epoch == self.meta["epoch"]:
            return self.meta
        meta = self.control.request("metadata")
        if self.bell is None or self.bell.mapping.name != meta["doorbell"]:
            if self.bell is not None:
                self.bell.close()
            self.bell = Doorbell.open(meta["doorbell"], owner=os.geteuid())
        self.meta = meta
        return meta

    def _pause(self, seconds):
        """Sleep up to `seconds`, waking at once for a stop or the supervisor's socket closing."""
        readable, _, _ = select.select([self.control.sock, self.stopping], [], [], seconds)
        if self.control.sock in readable and not self._supervisor_gone():
            self.stopping.wait(seconds)   # something else to read there: not ours to consume

    def run(self):
        try:
            while not self.stopping.is_set() and not self._supervisor_gone():
                meta = self.metadata()
                broker = meta.get("broker") or {}
                self.enabled = bool(broker.get("log.cleaner.enable", True))
                cleaned = self.round(broker, meta) if self.enabled else 0
                self.write_stats()
                if not cleaned:
                    self._pause(int(broker.get("log.cleaner.backoff.ms", 15_000)) / 1000)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._TRANSPORT:
                raise
        return 0

    def round(self, broker, meta):
        """Clean what is due; returns how many partitions a clean moved forward."""
        now_ms = time.time_ns() // 1_000_000
        due = []
        live = set()
        dirs = []
        for name, pdir, cfg in compacted_partitions(meta):
            live.add(name)
            dirs.append((name, pdir))
            policy = cleaner.policy_for(cfg)
            try:
                plan = cleaner.plan(pdir, policy, now_ms)
            except OSError as exc:
                self._status(name)["error"] = str(exc)
                continue
            st = self._status(name)
            st.update(dirty_ratio=round(plan.dirty_ratio, 4), clean_bytes=plan.clean_bytes,
                      dirty_bytes=plan.dirty_bytes, first_dirty_offset=plan.first_dirty,
                      min_cleanable_dirty_ratio=policy.min_cleanable_dirty_ratio)
            if plan.due:
                due.append((plan.dirty_ratio, name, pdir, policy))
        for table in (self.partitions, self.followers):
            for name in set(table) - live:
                del table[name]   # topic deleted, no longer compacted, or the replica moved
        unrecovered = [(name, pdir) for name, pdir in dirs if pdir not in self.recovered]
        if not due and not unrecovered:
            return 0
        due.sort(key=lambda d: -d[0])
        fd = lock(self.data_dir)
        try:
            for name, pdir in unrecovered:
                self._recover(name, pdir)
            throttle = self.throttle   # one for the process: a new round brings no fresh credit
            throttle.set_rate(float(broker.get("log.cleaner.io.max.bytes.per.second") or 0))
            dedupe = int(broker.get("log.cleaner.dedupe.buffer.size") or 128 << 20)
            threads = int(broker.get("log.cleaner.threads") or 1)
            jobs = [(name, pdir, policy, throttle, dedupe) for _, name, pdir, policy in due]
            if threads == 1:
                done = [self._clean(*job) for job in jobs]
            else:
                with ThreadPoolExecutor(threads, thread_name_prefix="cleaner") as pool:
                    done = list(pool.map(lambda job: self._clean(*job), jobs))
        finally:
            os.close(fd)
        return sum(done)   # 0 (a failing clean, say) pauses for the backoff rather than retrying at once

    def _recover(self, name, pdir):
        """Remove what an interrupted clean left in pdir (under the cleaner lock), once per process."""
        try:
            for note in cleaner.recover_swaps(pdir):
                log(f"{name}: {note}", logging.INFO)
        except OSError as exc:
            log(f"{name}: cannot remove what an interrupted clean left: {exc}; retrying in a later round")
            return
        self.recovered.add(pdir)

    def _status(self, name):
        table = self.followers if " replica " in name else self.partitions
        return table.setdefault(name, {"cleans": 0, "bytes_reclaimed": 0, "records_removed": 0,
                                                 "last_clean_ms": None, "error": None})

    def _clean(self, name, pdir, policy, throttle, dedupe):
        """Clean one partition; True if its cleaner checkpoint moved."""
        if self.stopping.is_set():
            return False
        try:
            result = cleaner.clean(pdir, policy, dedupe_buffer_bytes=dedupe, throttle=throttle,
                                   stopping=self.stopping)
        except (OSError, ValueError) as exc:   # one damaged partition must not stop the others
            with self.lock:
                self._status(name)["error"] = str(exc)
                self.totals["errors"] += 1
            log(f"{name}: the clean failed: {exc}; retrying in a later round")
            return False
        if result is None:
            return False
        with self.lock:
            st = self._status(name)
            st["cleans"] += 1
            st["bytes_reclaimed"] += result.bytes_reclaimed
            st["records_removed"] += result.records_removed
            st["last_clean_ms"] = time.time_ns() // 1_000_000
            st["last_clean"] = result.as_dict()
            st["error"] = None
            if result.cleaned_up_to is not None:
                st["first_dirty_offset"] = result.cleaned_up_to
                st["dirty_ratio"] = 0.0
            self.totals["cleans"] += 1
            self.totals["bytes_read"] += result.bytes_read
            self.totals["bytes_reclaimed"] += result.bytes_reclaimed
            self.totals["records_removed"] += result.records_removed
        if result.segments_rewritten:
            log(f"{name}: cleaned {result.segments_read} segments up to offset {result.cleaned_up_to} in "
                f"{result.seconds:.2f} s: {result.records_removed} records and {result.bytes_reclaimed} bytes "
                f"removed", logging.INFO)
        return result.cleaned_up_to is not None

    def write_stats(self):
        with self.lock:
            body = {"pid": os.getpid(), "enabled": self.enabled, "written_ms": time.time_ns() // 1_000_000,
                    "started_ms": self.started_ms, "totals": dict(self.totals), "partitions": self.partitions,
                    "followers": self.followers}
            data = json.dumps(body, sort_keys=True)
        target = stats_path(self.data_dir)
        tmp = f"{target}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(data)
            os.replace(tmp, target)
        except OSError as exc:
            log(f"cannot write {target}: {exc}")

    def _supervisor_gone(self):
        try:
            return self.control.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True


class CleanerProcess:
    """The supervisor's handle on the cleaner process: started when log.cleaner.enable is
    true, restarted (after RESTART_BACKOFF_S) when it exits unasked, stopped with the broker."""

    def __init__(self, data_dir, log_level):
        self.data_dir = data_dir
        self.log_level = log_level
        self.proc = None
        self.started = 0.0
        self.restarts = 0

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def ensure(self, enabled):
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            log(f"log cleaner pid {self.proc.pid} exited with {self.proc.returncode}; restarting")
            self.proc = None
            self.restarts += 1
        if not enabled or time.monotonic() - self.started < RESTART_BACKOFF_S:
            return
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "shmlog.broker.cleaner", self.data_dir],
                                     stdin=subprocess.DEVNULL, cwd="/",
                                     env={**os.environ, logs.LEVEL_ENV: self.log_level})

    def terminate(self):
        """Ask it to stop (SIGTERM): it finishes the segment it is rewriting and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, serve):
        """SIGTERM, then wait while serve() answers requests (broker/children.py); SIGKILL at
        STOP_TIMEOUT_S (a clean cut short loses nothing)."""
        if self.proc is None:
            return
        children.stop([self.proc], STOP_TIMEOUT_S, serve)
        self.proc = None


def become_background():
    """Give this process the CPU and the disk only when nothing else wants them: SCHED_IDLE
    (below nice 19; nice 19 where SCHED_IDLE is refused) and the idle I/O class (ioprio_set,
    which Python does not wrap). Producers, consumers and the persister go first; a cleaner
    that gets too little shows as a dirty ratio staying above its minimum (cleaner-status).
    Returns what was applied, for the log."""
    applied = []
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        applied.append("SCHED_IDLE")
    except (AttributeError, OSError):
        pass
    try:
        os.nice(CLEANER_NICE - os.nice(0))
        applied.append(f"nice {os.nice(0)}")
    except OSError:
        pass
    number = _SYS_IOPRIO_SET.get(os.uname().machine)
    if number is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT) == 0:
            applied.append("idle I/O class")
    return ", ".join(applied) or "normal priority (the system refused a lower one)"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m shmlog.broker.cleaner <data_dir>", file=sys.stderr)
        return 2
    logs.setup("cleaner")
    log(f"log cleaner: {become_background()}", logging.INFO)
    supervisor = os.getppid()
    try:
        c = Cleaner(argv[0])
    except KafkaException as exc:
        log(str(exc))
        return 1
    if c.control.peer_pid != supervisor:
        c.control.close()
        return 0
    c.stopping.set_on_signals()
    return c.run()


if __name__ == "__main__":
    logs.exit_process(main())
