"""Starting and stopping a supervisor: the embedded `Broker` and the daemon form."""
import json
import os
import signal
import subprocess
import sys
import time

from shmlog import control
from shmlog._native import procs
from shmlog.config import parse_broker_config
from shmlog.errors import KafkaError, KafkaException, error

START_TIMEOUT_S = 30.0


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


def spawn_supervisor(data_dir, configs, daemon=False):
    data_dir = os.path.realpath(data_dir)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)  # the supervisor gives it its final mode (security.Policy)
    stderr = subprocess.PIPE
    if daemon:
        stderr = open(os.open(os.path.join(data_dir, "supervisor.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                      "ab")
    proc = subprocess.Popen([sys.executable, "-m", "shmlog.broker.supervisor", data_dir, json.dumps(configs)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                            start_new_session=daemon)
    try:
        _wait_ready(proc, data_dir, START_TIMEOUT_S)
    finally:
        if daemon:
            stderr.close()
    if not daemon and proc.stderr:
        # Keep draining stderr so the supervisor never blocks on a full pipe.
        import threading
        threading.Thread(target=_forward, args=(proc.stderr,), daemon=True).start()
    return proc


def _forward(stream):
    for line in iter(stream.readline, b""):
        sys.stderr.write(line.decode(errors="replace"))


class Broker:
    """An embedded broker: `with shmlog.Broker(data_dir) as broker:` runs a supervisor for
    data_dir until the block ends; clients use `broker.bootstrap_servers`."""

    def __init__(self, data_dir, **broker_configs):
        self.data_dir = os.path.realpath(data_dir)
        self.configs = _normalize(broker_configs)
        parse_broker_config(self.configs)  # fail here, in the caller, on a bad key or value
        self.bootstrap_servers = control.SCHEME + self.data_dir
        self.process = None

    def start(self):
        if self.process is None:
            self.process = spawn_supervisor(self.data_dir, self.configs)
        return self

    def stop(self, timeout_s=60.0):
        if self.process is None:
            return
        try:
            stop(self.data_dir, timeout_s)
        except KafkaException:
            pass
        try:
            self.process.wait(timeout=timeout_s)
        except Exception:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"Broker({self.data_dir!r}, running={self.process is not None})"


def start(data_dir, configs):
    """`shmlog broker start`: a detached supervisor that outlives the caller."""
    proc = spawn_supervisor(data_dir, _normalize(configs), daemon=True)
    return proc.pid


def status(data_dir):
    ctl = control.Control(os.path.realpath(data_dir))
    try:
        return ctl.request("status")
    finally:
        ctl.close()


def stop(data_dir, timeout_s=60.0):
    data_dir = os.path.realpath(data_dir)
    ctl = control.Control(data_dir)
    try:
        pid = ctl.request("status")["pid"]
        ctl.request("shutdown")
    finally:
        ctl.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not procs.alive(pid, 0):  # a zombie counts as gone: its parent may reap it late
            return pid
        try:
            # Reap it when it is our child (embedded broker); harmless otherwise.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return pid
        except ChildProcessError:
            pass
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    return pid
