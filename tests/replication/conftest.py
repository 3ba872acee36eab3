"""The replication tests' one set-up: brokers over several log dirs (optionally each a small
tmpfs this test mounts), topics with given replicas, the persister and mirror processes,
waiting on the ISR, warming a partition up, filling a disk, reading a replica's bytes."""
import os
import signal
import subprocess
import time

import psutil
import pytest

import shmlog
from shmlog import TopicPartition

WAIT_S = 30.0


def wait_for(predicate, what, timeout=WAIT_S):
    """Poll predicate() until it returns something truthy; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def mirror_pid(data_dir, index):
    """The pid of the running mirror of log dir `index` of data_dir, or None."""
    want = ["-m", "shmlog.broker.mirror", os.path.realpath(data_dir), str(index)]
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd[-4:] == want:
            return proc.pid
    return None


def persister_pid(data_dir):
    """The pid of the running persister of data_dir, or None."""
    want = ["-m", "shmlog.broker.persister", os.path.realpath(data_dir)]
    for proc in psutil.process_iter(["cmdline"]):
        if (proc.info["cmdline"] or [])[-3:] == want:
            return proc.pid
    return None


def partition_state(admin, topic, partition=0):
    return admin.list_topics(topic).topics[topic].partitions[partition]


def wait_isr(admin, topic, isr, partition=0, timeout=WAIT_S):
    return wait_for(lambda: sorted(partition_state(admin, topic, partition).isrs) == sorted(isr),
                    f"{topic}-{partition} ISR to become {isr}", timeout)


@pytest.fixture
def mounts(tmp_path):
    """mounts(n) -> n small tmpfs directories mounted for this test (unmounted at its end);
    skips the test, with the reason, where mounting is not allowed."""
    made = []

    def mount(n, size=16 << 20):
        for i in range(n):
            mnt = tmp_path / f"disk{i}"
            mnt.mkdir()
            try:
                done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mnt)],
                                      capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"cannot mount a tmpfs per log dir: {exc}")
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs per log dir (needs root or CAP_SYS_ADMIN): "
                            f"{done.stderr.strip() or 'mount exited with ' + str(done.returncode)}")
            made.append(str(mnt))
        return made[-n:]

    yield mount
    for mnt in made:
        subprocess.run(["umount", "-l", mnt], timeout=60)


@pytest.fixture
def replicated(data_dir, start_broker):
    """replicated(dirs=3, **broker_configs) -> (conf, admin, [log dirs]) of a broker over that
    many log dirs (given as paths, or a count of dirs made in the data dir)."""
    admins = []

    def start(dirs=3, **configs):
        if isinstance(dirs, int):
            dirs = [os.path.join(data_dir, f"d{i}") for i in range(dirs)]
        b = start_broker(log_dirs=",".join(dirs), **configs)
        conf = {"bootstrap.servers": b.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        admins.append(admin)
        return conf, admin, list(dirs)

    yield start
    for a in admins:
        a.close()


def create(admin, name, replicas=None, **new_topic):
    """Create topic `name` and wait until it exists. `replicas`: the replica list (log dir
    indexes, the first leading) of its one partition; other keyword arguments are NewTopic's
    (num_partitions, replication_factor, replica_assignment, config)."""
    if replicas is not None:
        new_topic["replica_assignment"] = [list(replicas)]
    admin.create_topics([shmlog.NewTopic(name, **new_topic)])[name].result()
    return name


def produce(conf, topic, values, keys=None, acks="all", **extra):
    """Produce and flush; [(error, partition, offset, value)] in report order."""
    p = shmlog.Producer({**conf, "acks": acks, "linger.ms": 0, **extra})
    reports = []
    for i, v in enumerate(values):
        p.produce(topic, v, key=keys[i] if keys else None,
                  on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset(), msg.value())))
    assert p.flush(WAIT_S) == 0
    return reports


def warm_up(conf, admin, topic, isr):
    """Produce one record (acks=all) until it is acknowledged, then wait for the ISR to be `isr`.
    A new partition's ISR is all its replicas before their mirrors have even started; on a
    loaded machine a mirror that starts later than replica.lag.time.max.ms leaves the ISR until
    it has copied the log, and acks=all fails with NOT_ENOUGH_REPLICAS meanwhile."""
    deadline = time.monotonic() + WAIT_S
    while True:
        err = produce(conf, topic, [b"warm-up"])[0][0]
        if err is None:
            break
        assert err.retriable() and time.monotonic() < deadline, f"no acknowledged warm-up record: {err}"
        wait_isr(admin, topic, isr)
    wait_isr(admin, topic, isr)


def fill(path):
    """Write a file into path until its filesystem is full (ENOSPC); returns its path."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 512, 1):   # down to the last bytes of the last page
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def log_bytes(log_dir, topic, partition=0):
    pdir = os.path.join(log_dir, f"{topic}-{partition}")
    return b"".join(open(os.path.join(pdir, n), "rb").read() for n in sorted(os.listdir(pdir)) if n.endswith(".log"))


def stopped(pid):
    """A context in which process pid is SIGSTOPped (SIGCONT on exit)."""
    class Stopped:
        def __enter__(self):
            os.kill(pid, signal.SIGSTOP)

        def __exit__(self, *exc):
            os.kill(pid, signal.SIGCONT)
    return Stopped()


def read_values(conf, topic, count):
    c = shmlog.Consumer({**conf, "group.id": "check", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline_left = WAIT_S
    while len(out) < count and deadline_left > 0:
        msgs = c.consume(1000, 0.5)
        deadline_left -= 0.5
        for m in msgs:
            assert m.error() is None, m.error()
            out.append((m.offset(), m.value()))
    c.close()
    return out
