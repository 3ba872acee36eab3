"""Shared fixtures: a real broker per test, in its own data dir, and leak checks.

Every test that starts a broker gets a data dir under pytest's tmp_path, so its
shared-memory namespace is its own and xdist workers never collide.
"""
import gc
import os
import signal
import time

import psutil
import pytest

import shmlog
from shmlog._native import shm


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    yield str(d)
    leftovers = shm.names_in_namespace(shm.namespace(str(d)))
    for name in leftovers:
        shm.unlink(name)
    assert not leftovers, f"shared memory left behind: {leftovers}"


BROKER_MODULES = ("shmlog.broker.keeper", "shmlog.broker.supervisor", "shmlog.broker.persister",
                  "shmlog.broker.kafka_listener", "shmlog.broker.cleaner")


def broker_processes(data_dir):
    """The live keeper, supervisor, persister and log cleaner of data_dir, known by what they run and for which data
    dir (`python -m shmlog.broker.<process> <data_dir>`), never by a word that a path may hold."""
    real = os.path.realpath(data_dir)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and "-m" in cmd and real in cmd[cmd.index("-m"):] \
                and any(m in cmd for m in BROKER_MODULES):
            found.append(proc)
    return found


def stop_leftover_broker(data_dir):
    """Kill and report what a stopped broker of data_dir left running (nothing, if all is well)."""
    left = broker_processes(data_dir)
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"broker processes left behind: {[p.info['cmdline'] for p in left]}"


def _shmlog_children():
    return [c for c in psutil.Process().children(recursive=True)
            if _alive(c) and any(m in _cmdline(c) for m in BROKER_MODULES)]


def _cmdline(proc):
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _alive(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def start_broker(data_dir):
    """start_broker(**broker_configs) -> a running shmlog.Broker for data_dir (stopped after the test)."""
    started = []

    def start(**configs):
        b = shmlog.Broker(data_dir, **configs).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
    left = _shmlog_children()
    for proc in left:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(left, timeout=10)
    assert not left, f"broker processes left behind: {[p.pid for p in left]}"


@pytest.fixture
def broker(data_dir):
    with shmlog.Broker(data_dir) as b:
        yield b
    stop_leftover_broker(data_dir)


@pytest.fixture
def conf(broker):
    return {"bootstrap.servers": broker.bootstrap_servers}


@pytest.fixture
def admin(conf):
    a = shmlog.AdminClient(conf)
    yield a
    a.close()


def create_topic(admin, name, partitions=1, **config):
    futures = admin.create_topics([shmlog.NewTopic(name, partitions, config={k.replace("_", "."): str(v)
                                                                              for k, v in config.items()})])
    futures[name].result()
    return name


@pytest.fixture
def topic(admin):
    return create_topic(admin, "events", 1)


def collect_until_ended(threads, timeout_s):
    """Collect garbage until the threads end; the names of those still running after timeout_s.
    A client's thread holding its client for a moment keeps the client's reference cycle through
    the collection that runs then; a program's later collections free it, as these do."""
    deadline = time.monotonic() + timeout_s
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        gc.collect()
        for t in threads:
            t.join(0.05)
    return [t.name for t in threads if t.is_alive()]
