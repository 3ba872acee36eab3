"""Shared fixtures: a real broker per test, in its own data dir, and leak checks.

Every test that starts a broker gets a data dir under pytest's tmp_path, so its
shared-memory namespace is its own and xdist workers never collide.
"""
import signal

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


@pytest.fixture
def broker(data_dir):
    with shmlog.Broker(data_dir) as b:
        yield b
    children = psutil.Process().children(recursive=True)
    for child in children:
        if "shmlog" in " ".join(child.cmdline()):
            child.send_signal(signal.SIGKILL)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                and "shmlog" in " ".join(c.cmdline())], "broker processes left behind"


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
