"""Starting and stopping a broker: the embedded `Broker` and the daemon form.

Both run the keeper (broker/keeper.py), a tiny parent that runs the supervisor and starts it
again at once if it dies; stopping goes through the keeper, so it does not restart what is
being stopped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from shmlog import control
from shmlog._native import procs
from shmlog.config import parse_broker_config
from shmlog.errors import KafkaError, KafkaException, error

if TYPE_CHECKING:
    from typing_extensions import Self

START_TIMEOUT_S = 30.0
# The working directory of every broker process (docs/security.md, "What the broker processes
# import"): one nothing can put a shmlog/ package in. Python 3.10 has no -P (3.11+), so the
# directory `python -m` adds to sys.path is made harmless instead.
BROKER_CWD = "/"


def _normalize(configs):
    return {k.replace("_", ".") if "." not in k else k: v for k, v in configs.items()}


def _wait_ready(proc, data_dir, timeout_s):
    deadline = time.monotonic() + timeout_s
    while True:
        line = proc.stdout.readline() if proc.stdout else b""
        if line.startswith(b"shmlog broker ready"):
            return
        if not line and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise error(KafkaError._TRANSPORT, f"shmlog broker for {data_dir} failed to start: {err or proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise error(KafkaError._TIMED_OUT, f"shmlog broker for {data_dir} did not start within {timeout_s}s")


# The broker's processes import NumPy (index arrays) but never call BLAS: with its default thread
# pool, OpenBLAS starts a thread per core that spins for a while after the import, a fifth of a
# core-second per process on every start (and restart) of a broker.
BROKER_ENV = {"OPENBLAS_NUM_THREADS": "1"}


def spawn_keeper(data_dir, configs, daemon=False):
    """Start the keeper, which starts the supervisor; returns the keeper's Popen once the
    supervisor is ready (the keeper passes its ready line on)."""
    data_dir = os.path.realpath(data_dir)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)  # the supervisor gives it its final mode (security.Policy)
    stderr = subprocess.PIPE
    # Made before the supervisor starts, which gives the data dir's files their modes (security.Policy).
    log_file = _open_log(data_dir)
    if daemon:
        stderr, log_file = log_file, None   # the daemon's stderr is its log
        if stderr is None:
            raise error(KafkaError._FS, f"cannot write {os.path.join(data_dir, 'supervisor.log')}")
    # cwd=BROKER_CWD: `python -m` puts its working directory first on sys.path, so a shmlog/
    # folder in the caller's (a checkout of another version) would be imported instead of the
    # installed package; the keeper's children (supervisor, persister) inherit it.
    proc = subprocess.Popen([sys.executable, "-m", "shmlog.broker.keeper", data_dir, json.dumps(configs)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                            start_new_session=daemon, cwd=BROKER_CWD, env={**os.environ, **BROKER_ENV})
    try:
        _wait_ready(proc, data_dir, START_TIMEOUT_S)
    except BaseException:
        if log_file is not None:
            log_file.close()
        raise
    finally:
        if daemon:
            stderr.close()
    if not daemon and proc.stderr:
        # Keep draining stderr so the supervisor never blocks on a full pipe.
        import threading
        threading.Thread(target=_forward, args=(proc.stderr, log_file), daemon=True).start()
    return proc


def _open_log(data_dir):
    """DIR/supervisor.log for appending (0600), as the daemon writes it; None if it cannot be opened."""
    try:
        return open(os.open(os.path.join(data_dir, "supervisor.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                    "ab", buffering=0)
    except OSError:
        return None


# A broker log line's level (broker/logs.py: "<time>Z LEVEL shmlog role[pid]: message").
_QUIET_LEVELS = (b"Z DEBUG shmlog ", b"Z INFO shmlog ")
_LEVELLED = b" shmlog "


def _forward(stream, log_file):
    """An embedded broker's log: every line to DIR/supervisor.log, and the WARNING and worse ones
    (with the lines that continue them, such as a traceback) to this process's stderr, so an
    application embedding a broker hears of problems, not of every client that comes and goes."""
    quiet = False
    for line in iter(stream.readline, b""):
        if log_file is not None:
            try:
                log_file.write(line)
            except OSError:
                log_file = None
        head = line[:40]
        if _LEVELLED in head and b"Z " in head:
            quiet = any(level in head for level in _QUIET_LEVELS)
        elif line.startswith(b"shmlog "):   # the keeper's own lines: a supervisor that died, a stop
            quiet = False
        if not quiet or log_file is None:
            sys.stderr.write(line.decode(errors="replace"))


class Broker:
    """An embedded broker: `with shmlog.Broker(data_dir) as broker:` runs a supervisor for
    data_dir until the block ends; clients use `broker.bootstrap_servers`. `process` is the
    keeper that runs the supervisor (and restarts it if it dies); `supervisor_pid` the
    supervisor running now."""

    data_dir: str
    configs: dict[str, str]
    bootstrap_servers: str
    process: subprocess.Popen[bytes] | None


    def __init__(self, data_dir: str | os.PathLike[str], **broker_configs: Any) -> None:
        self.data_dir = os.path.realpath(data_dir)
        self.configs = _normalize(broker_configs)
        parse_broker_config(self.configs)  # fail here, in the caller, on a bad key or value
        self.bootstrap_servers = control.SCHEME + self.data_dir
        self.process = None

    def start(self) -> Self:
        if self.process is None:
            self.process = spawn_keeper(self.data_dir, self.configs)
        return self

    @property
    def supervisor_pid(self) -> int:
        """The pid of the supervisor serving now (a restarted one has a new pid)."""
        return status(self.data_dir)["pid"]

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop through the keeper: its SIGTERM makes it stop the supervisor (which drains
        every ring to disk) and exit instead of restarting it. If the keeper has died, the
        supervisor serves on without it and is stopped over the control channel."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                _kill_supervisor(self.data_dir)
        else:
            try:
                stop(self.data_dir, timeout_s)
            except KafkaException:
                pass
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self):
        return f"Broker({self.data_dir!r}, running={self.process is not None})"


def start(data_dir, configs):
    """`shmlog broker start`: a detached keeper and supervisor that outlive the caller; the
    supervisor's pid."""
    proc = spawn_keeper(data_dir, _normalize(configs), daemon=True)
    if proc.stdout:
        proc.stdout.close()
    return status(data_dir)["pid"]


def status(data_dir):
    ctl = control.Control(os.path.realpath(data_dir))
    try:
        return ctl.request("status")
    finally:
        ctl.close()


def stop(data_dir, timeout_s=60.0):
    """Stop the broker of data_dir and wait until its supervisor (and keeper) have exited; the
    supervisor's pid. With a keeper the stop is its SIGTERM, which it passes on to the
    supervisor and then exits rather than restart it; without one (the keeper died, or another
    user stops a shared broker) the control channel's shutdown."""
    data_dir = os.path.realpath(data_dir)
    ctl = control.Control(data_dir)
    try:
        st = ctl.request("status")
        pid, keeper = st["pid"], st.get("keeper_pid")
        if keeper:
            try:
                os.kill(keeper, signal.SIGTERM)
            except OSError:
                keeper = None
        if not keeper:
            ctl.request("shutdown")
    finally:
        ctl.close()
    pids = [p for p in (keeper, pid) if p]
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if not _gone(p)]
        if pids:
            time.sleep(0.01)
    for p in pids:  # the keeper first: it must not restart the supervisor we kill
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return pid


def _kill_supervisor(data_dir):
    try:
        pid = status(data_dir)["pid"]
    except KafkaException:
        return  # none answers
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _gone(pid):
    if not procs.alive(pid, 0):  # a zombie counts as gone: its parent may reap it late
        return True
    try:
        # Reap it when it is our child (the embedded broker's keeper); harmless otherwise.
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False
