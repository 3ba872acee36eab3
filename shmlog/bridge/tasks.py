"""`shmlog mirror run --tasks N`: N mirror tasks (Mirror(tasks=N, task=i)), each in a process of
its own, kept running: a task that dies is started again after a backoff (1 s, doubling to
30 s; back to 1 s once it ran a minute), as Connect restarts a failed task. Stopping (stop())
sends every task SIGTERM, which it answers by finishing its batch and closing, and waits.

The tasks are `spawn`ed: nothing of the parent's client state reaches them.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("shmlog.mirror")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0       # a task that ran this long starts its backoff again from the first step
STOP_TIMEOUT_S = 60.0
POLL_S = 0.2


class TaskProcesses:
    """run(target, args) in `tasks` processes as target(*args, task, tasks)."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], tasks: int, label: str) -> None:
        self.target, self.args, self.tasks, self.label = target, args, tasks, label
        self.context = multiprocessing.get_context("spawn")
        self.procs: dict[int, Any] = {}
        self.started_at: dict[int, float] = {}
        self.backoff_s = dict.fromkeys(range(tasks), BACKOFF_FIRST_S)
        self.restart_at: dict[int, float] = {}
        self.stopping = threading.Event()

    def _start(self, task: int) -> None:
        proc = self.context.Process(target=self.target, args=(*self.args, task, self.tasks),
                                    name=f"{self.label}-task-{task}")
        proc.start()
        self.procs[task], self.started_at[task] = proc, time.monotonic()

    def _look_after(self, task: int) -> None:
        proc, now = self.procs[task], time.monotonic()
        if proc.exitcode is None:
            return
        if task not in self.restart_at:
            if now - self.started_at[task] >= HEALTHY_AFTER_S:
                self.backoff_s[task] = BACKOFF_FIRST_S
            self.restart_at[task] = now + self.backoff_s[task]
            log.warning("%s task %d exited (code %s); starting it again in %.0f s", self.label, task,
                        proc.exitcode, self.backoff_s[task])
            self.backoff_s[task] = min(self.backoff_s[task] * 2, BACKOFF_MAX_S)
        elif now >= self.restart_at[task]:
            del self.restart_at[task]
            self._start(task)

    def run(self) -> None:
        """Start every task and keep them running until stop()."""
        for task in range(self.tasks):
            self._start(task)
        try:
            while not self.stopping.wait(POLL_S):
                for task in range(self.tasks):
                    self._look_after(task)
        finally:
            self._stop_all()

    def stop(self) -> None:
        self.stopping.set()

    def _stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.exitcode is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                log.warning("%s: %s did not stop in %.0f s: killed", self.label, proc.name, STOP_TIMEOUT_S)
                proc.kill()
                proc.join()
