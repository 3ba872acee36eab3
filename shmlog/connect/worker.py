"""The worker: one process per task, restarted with backoff when it fails (standalone mode).

    with Worker(worker_props, [connector_props, ...]) as w:   # what `shmlog connect run` does
        w.wait_running()
        ...

start() checks every config (a wrong key fails here, before any task runs), creates the
offsets topic (compacted) and the dead-letter topics if they are missing, asks each connector
for its task configs (at most `tasks.max`) and spawns a process per task. A task process that
exits with an error (an exception, SIGKILL) is started again after `task.restart.backoff.ms`,
doubled for each failure in a row up to `task.restart.backoff.max.ms`; a task that ran longer
than its last backoff starts again at the first. stop() asks every task to commit and exit
(SIGTERM or Ctrl-C does the same), and kills those still running after
`task.shutdown.graceful.timeout.ms`.
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from typing import Any

from shmlog.connect.api import ConfigException
from shmlog.connect.config import connector_config, with_prefix, worker_config
from shmlog.stop_event import StopEvent

SPAWN = multiprocessing.get_context("spawn")
log = logging.getLogger("shmlog.connect")


def task_main(worker_props: dict, connector_props: dict, task_id: int, task_props: dict, reports: Any) -> None:
    """A task process (spawned); SIGTERM (or Ctrl-C) stops it after it committed."""

    from shmlog.connect import sink_task, source_task
    stopping = StopEvent()
    stopping.set_on_signals()
    worker = worker_config(worker_props)
    cfg = connector_config(connector_props, worker)
    pid = os.getpid()
    sending = threading.Lock()

    def report(kind, payload):
        with sending:
            reports.send((kind, cfg.name, task_id, pid, payload))

    try:
        (sink_task if cfg.kind == "sink" else source_task).run(cfg, worker, task_id, task_props, stopping, report)
        report("stopped", None)
    except BaseException:
        report("failed", traceback.format_exc())
        raise


class TaskState:
    def __init__(self, connector: str, task_id: int, props: dict):
        self.connector = connector
        self.task_id = task_id
        self.props = props
        self.process: Any = None
        self.started_at = 0.0
        self.failures_in_a_row = 0
        self.restart_at: float | None = None
        self.restarts = 0
        self.running_pid: int | None = None
        self.committed = 0
        # One pipe per task process, not a queue shared by all: a task SIGKILLed while it
        # held a shared queue's write lock would silence every task after it.
        self.reports: Any = None


class Worker:
    def __init__(self, worker_props: dict[str, Any], connector_props: list[dict[str, Any]]) -> None:
        self.worker_props = {k: str(v) for k, v in worker_props.items()}
        self.worker = worker_config(self.worker_props)
        self.connector_props = [{k: str(v) for k, v in p.items()} for p in connector_props]
        self.configs = [connector_config(p, self.worker) for p in self.connector_props]
        names = [c.name for c in self.configs]
        if len(set(names)) != len(names):
            raise ConfigException(f"two connectors share a name: {sorted(n for n in names if names.count(n) > 1)}")
        self.tasks: dict[tuple[str, int], TaskState] = {}
        self.failures: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._stopping = False
        self._monitor: threading.Thread | None = None
        self._done = threading.Event()
        self._connectors: list[Any] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Worker:
        self._prepare_topics()
        # Every connector is started and split before any task runs: one that refuses its
        # config leaves nothing running.
        plan = []
        try:
            for cfg in self.configs:
                connector = cfg.connector_class()
                connector.start({**cfg.props, **cfg.own})
                self._connectors.append(connector)
                task_configs = connector.task_configs(cfg.common["tasks.max"])[:cfg.common["tasks.max"]]
                plan += [TaskState(cfg.name, i, props) for i, props in enumerate(task_configs)]
        except BaseException:
            for connector in self._connectors:
                connector.stop()
            self._connectors = []
            raise
        for state in plan:
            self.tasks[(state.connector, state.task_id)] = state
            self._spawn(state)
        self._monitor = threading.Thread(target=self._watch, name="shmlog-connect-worker", daemon=True)
        self._monitor.start()
        return self

    def _prepare_topics(self):
        import shmlog
        from shmlog.connect.offsets import ensure_topic
        admin = shmlog.AdminClient({"bootstrap.servers": self.worker["bootstrap.servers"],
                                    **with_prefix(self.worker_props, "admin.")})
        try:
            ensure_topic(admin, self.worker["offset.storage.topic"], self.worker["offset.storage.partitions"],
                         self.worker["offset.storage.replication.factor"], compacted=True)
            for cfg in self.configs:
                dlq = cfg.common.get("errors.deadletterqueue.topic.name")
                if dlq:
                    ensure_topic(admin, dlq, 1, cfg.common["errors.deadletterqueue.topic.replication.factor"],
                                 compacted=False)
        finally:
            admin.close()

    def _spawn(self, state: TaskState) -> None:
        cfg_props = next(p for p in self.connector_props if p["name"] == state.connector)
        self._drain()      # what the previous process said before it died
        reader, writer = SPAWN.Pipe(duplex=False)
        proc = SPAWN.Process(target=task_main, name=f"connect-{state.connector}-{state.task_id}",
                             args=(self.worker_props, cfg_props, state.task_id, state.props, writer))
        proc.start()
        writer.close()     # the task's copy is the only writer: its death is EOF here
        with self._drain_lock:
            if state.reports is not None:
                state.reports.close()
            state.reports = reader
        state.process = proc
        state.started_at = time.monotonic()
        state.restart_at = None
        state.running_pid = None

    def _backoff_s(self, state: TaskState) -> float:
        base = self.worker["task.restart.backoff.ms"] / 1000
        cap = self.worker["task.restart.backoff.max.ms"] / 1000
        return min(cap, base * (2 ** max(state.failures_in_a_row - 1, 0)))

    def _watch(self) -> None:
        while True:
            with self._lock:
                live = {t.process.sentinel: t for t in self.tasks.values()
                        if t.process is not None and t.restart_at is None}
                waiting = [t.restart_at for t in self.tasks.values() if t.restart_at is not None]
                if not live and (self._stopping or not waiting):
                    break
            timeout = max(0.0, min(waiting) - time.monotonic()) if waiting else 1.0
            ready = multiprocessing.connection.wait(list(live) + self._report_pipes(), timeout=min(timeout, 1.0))
            self._drain()
            with self._lock:
                for s in ready:
                    state = live.get(s)
                    if state is None:
                        continue
                    state.process.join()
                    if self._stopping or state.process.exitcode == 0:
                        state.process = None
                        continue
                    ran_s = time.monotonic() - state.started_at
                    if ran_s > self._backoff_s(state) and state.failures_in_a_row:
                        state.failures_in_a_row = 0
                    state.failures_in_a_row += 1
                    delay = self._backoff_s(state)
                    log.warning("connector %s task %d (pid %d) exited with %s; restarting in %.1f s", state.connector,
                                state.task_id, state.process.pid, state.process.exitcode, delay)
                    state.restart_at = time.monotonic() + delay
                now = time.monotonic()
                for state in self.tasks.values():
                    if state.restart_at is not None and (self._stopping or now >= state.restart_at):
                        if self._stopping:
                            state.restart_at = None
                            state.process = None
                        else:
                            state.restarts += 1
                            self._spawn(state)
        self._drain()
        self._done.set()

    def _report_pipes(self) -> list[Any]:
        with self._drain_lock:
            return [t.reports for t in self.tasks.values() if t.reports is not None]

    def _drain(self) -> None:
        with self._drain_lock:
            for state in list(self.tasks.values()):
                while state.reports is not None and state.reports.poll(0):
                    try:
                        report = state.reports.recv()
                    except (EOFError, OSError):     # the task exited (or died mid-report)
                        state.reports.close()
                        state.reports = None
                        break
                    self._take(state, *report)

    def _take(self, state: TaskState, kind: str, name: str, task_id: int, pid: int, payload: Any) -> None:
        if kind == "running":
            state.running_pid = pid
        elif kind == "committed":
            state.committed += 1
        elif kind == "failed":
            self.failures.append((name, task_id, payload))
            log.error("connector %s task %d failed:\n%s", name, task_id, payload)

    def stop(self) -> None:
        # SIGTERM, not a shared Event: a multiprocessing Event's set() waits for every process
        # that sleeps on it to wake, and a SIGKILLed task never does.
        with self._lock:
            self._stopping = True
            for t in self.tasks.values():
                if t.process is not None and t.process.is_alive():
                    try:
                        os.kill(t.process.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass

    def join(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = max(self.worker["task.shutdown.graceful.timeout.ms"] / 1000, 30.0)
        if self._monitor is not None and not self._done.wait(timeout):
            with self._lock:
                for t in self.tasks.values():
                    if t.process is not None and t.process.is_alive():
                        t.process.kill()
            self._done.wait(10)
        for connector in self._connectors:
            connector.stop()
        self._connectors = []

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    # ------------------------------------------------------------------ observing

    def task_pids(self, connector: str | None = None) -> dict[tuple[str, int], int]:
        with self._lock:
            return {k: t.process.pid for k, t in self.tasks.items()
                    if t.process is not None and t.process.is_alive() and (connector is None or k[0] == connector)}

    def wait_running(self, timeout: float = 60.0) -> None:
        """Until every task process has started its task (subscribed, or read its offsets)."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            with self._lock:
                pending = [k for k, t in self.tasks.items()
                           if t.process is None or t.running_pid != t.process.pid]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"tasks not running within {timeout} s: {pending}; failures: "
                                   f"{[f[2].splitlines()[-1] for f in self.failures]}")
            multiprocessing.connection.wait(self._report_pipes(), timeout=0.05)   # woken by the next report

    def restarts(self) -> int:
        with self._lock:
            return sum(t.restarts for t in self.tasks.values())
