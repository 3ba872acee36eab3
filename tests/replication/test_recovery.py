"""Recovery after a host crash: every process SIGKILLed and the shared memory gone; per
partition the in-sync replica with the longest log leads, and the others catch up from it."""
import os
import signal

import psutil

import shmlog
from shmlog import TopicPartition
from shmlog._native import shm
from shmlog.log.segment import list_segments

from .conftest import WAIT_S, create, log_bytes, partition_state, produce, wait_for, wait_isr


def crash(broker, data_dir):
    """SIGKILL the keeper, the supervisor and all their children; unlink the shared memory."""
    top = psutil.Process(broker.process.pid)
    procs = [top] + top.children(recursive=True)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    broker.process.wait()
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive
    broker.process.stdout.close()
    broker.process = None
    for name in shm.names_in_namespace(shm.namespace(os.path.realpath(data_dir))):
        shm.unlink(name)


def test_after_a_host_crash_the_replica_with_the_longest_log_leads_and_the_other_catches_up(
        data_dir, start_broker):
    dirs = [os.path.join(data_dir, f"d{i}") for i in range(2)]
    broker = start_broker(log_dirs=",".join(dirs))
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create(admin, "t", [0, 1])
    reports = produce(conf, "t", [b"v%d" % i for i in range(100)])
    assert all(err is None for err, *_ in reports)
    wait_isr(admin, "t", [0, 1])
    admin.close()
    crash(broker, data_dir)
    # The leader's disk lost the tail of its log (the follower's copy has it).
    newest = list_segments(os.path.join(dirs[0], "t-0"))[-1]
    leader_log = os.path.join(dirs[0], "t-0", f"{newest:020d}.log")
    os.truncate(leader_log, os.path.getsize(leader_log) // 2)

    broker = start_broker(log_dirs=",".join(dirs))
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    try:
        assert partition_state(admin, "t").leader == 1
        c = shmlog.Consumer({**conf, "group.id": "check", "enable.auto.commit": False})
        c.assign([TopicPartition("t", 0, 0)])
        got = []
        while len(got) < 100:
            m = c.poll(WAIT_S)
            assert m is not None and m.error() is None
            got.append(m.value())
        c.close()
        assert got == [b"v%d" % i for i in range(100)]
        wait_for(lambda: log_bytes(dirs[0], "t") == log_bytes(dirs[1], "t"), "the old leader to catch up")
        wait_isr(admin, "t", [0, 1])
    finally:
        admin.close()
