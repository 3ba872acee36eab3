"""The supervisor's side of the listener process: start it when `listeners` is set, start it
again when it exits unasked, stop it first on shutdown, and say where it listens.

Kept apart from the listener's own modules so the supervisor loads neither kio nor the
protocol code.
"""
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time

from shmlog import control
from shmlog.broker import children, logs
from shmlog.broker.kafka_listener import config as lconfig

RESTART_BACKOFF_S = 0.5
STOP_TIMEOUT_S = 5.0
STATE_FILE = "kafka-listener.json"   # written by the listener (server.STATE_FILE)


class ListenerProcess:
    def __init__(self, data_dir, config):
        self.data_dir = data_dir
        self.config = config
        self.proc = None
        self.started = 0.0
        self.restarts = 0
        if self.wanted:
            try:
                lconfig.check(lconfig.settings(config.as_dict()))
            except lconfig.ListenerConfigError as exc:
                raise SystemExit(f"shmlog: {exc}") from None
        if self.wanted and importlib.util.find_spec("kio") is None:
            raise SystemExit("shmlog: listeners is set but the Kafka listener's protocol codec (the kio package, "
                             "Python 3.11+) is not installed: pip install 'shmlog[kafka]'")

    @property
    def wanted(self):
        return bool(self.config.listeners)

    def ensure(self):
        if not self.wanted:
            return
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            logs.get().warning(f"kafka listener pid {self.proc.pid} exited with {self.proc.returncode}; restarting")
            self.proc = None
            self.restarts += 1
        if time.monotonic() - self.started < RESTART_BACKOFF_S:
            return
        self.started = time.monotonic()
        # cwd "/": `-m` puts the cwd first on sys.path (shmlog.broker.launcher.BROKER_CWD).
        self.proc = subprocess.Popen([sys.executable, "-m", "shmlog.broker.kafka_listener", self.data_dir],
                                     stdin=subprocess.DEVNULL, cwd="/",
                                     env={**os.environ, logs.LEVEL_ENV: self.config.shmlog_log_level})
        logs.get().log(logging.INFO, f"{'restarted' if self.restarts else 'started'} the kafka listener: "
                                     f"pid {self.proc.pid}")

    def stop(self, serve):
        """SIGTERM, then wait while serve() answers requests (broker/children.py); SIGKILL at STOP_TIMEOUT_S."""
        if self.proc is None:
            return
        children.stop([self.proc], STOP_TIMEOUT_S, serve)
        self.proc = None
        try:
            os.unlink(os.path.join(control.run_dir(self.data_dir), STATE_FILE))
        except OSError:
            pass

    def status(self):
        """Where the listener is bound (the port it got for port 0), or None when it is not up."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            with open(os.path.join(control.run_dir(self.data_dir), STATE_FILE)) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return None
        return state if state.get("pid") == self.proc.pid else None
