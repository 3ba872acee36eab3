"""`shmlog mirror run --tasks N`: the partitions are shared among N task processes, each source
partition copied by exactly one task (its order kept); a SIGKILLed task is started again and
resumes at its checkpoint; group offsets are translated by task 0 from every task's syncs."""
import signal

import psutil
import pytest

import shmlog
from shmlog.bridge.mirror import Mirror, owned_by
from tests.mirror_kafka.mirror_helpers import high_watermarks, mirror_log, read_all, start_mirror, stop, wait_until

PARTITIONS = 6
CHUNK = 600


@pytest.mark.parametrize("tasks", [1, 2, 3, 5])
def test_every_partition_of_every_topic_is_owned_by_exactly_one_task(tasks):
    for topic in ("trades", "orders", "a"):
        owners = [owned_by(topic, p, tasks) for p in range(12)]
        assert all(0 <= o < tasks for o in owners)
        counts = [owners.count(t) for t in range(tasks)]
        assert max(counts) - min(counts) <= 1     # round-robin within a topic


def produce(conf, topic, start, n):
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 2})
    try:
        for i in range(start, start + n):
            p.produce(topic, key=f"k{i % 31}", value=f"v{i};".encode() * 20, headers=[("seq", str(i).encode())])
        assert p.flush(60) == 0
    finally:
        p.close()


def copied(conf, topic):
    try:
        return sum(high_watermarks(conf, topic, PARTITIONS))
    except shmlog.KafkaException:   # not created yet
        return 0


def task_processes(parent, n):
    """The parent's n task processes, once all are up."""
    found = []

    def up():
        found[:] = [c for c in psutil.Process(parent.pid).children() if "spawn" in " ".join(c.cmdline())]
        return len(found) == n
    wait_until(up, f"{n} task processes", procs=[parent])
    return found


def test_two_tasks_copy_every_partition_in_order_and_a_killed_task_is_started_again(broker, second_broker, tmp_path):
    source = {"bootstrap.servers": broker.bootstrap_servers}
    target = {"bootstrap.servers": second_broker.bootstrap_servers}
    shmlog.AdminClient(source).create_topics([shmlog.NewTopic("trades", PARTITIONS)])["trades"].result()
    produce(source, "trades", 0, CHUNK)
    parent = start_mirror(tmp_path, broker.bootstrap_servers, second_broker.bootstrap_servers, ["trades"], "shared",
                          "--tasks", "2")
    try:
        wait_until(lambda: copied(target, "trades") >= CHUNK, "the first records copied", procs=[parent])
        first, second = task_processes(parent, 2)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        replaced = task_processes(parent, 2)
        assert first.pid not in {p.pid for p in replaced} and second.pid in {p.pid for p in replaced}
        produce(source, "trades", CHUNK, CHUNK)
        want = read_all(source, "trades", PARTITIONS, 2 * CHUNK)
        got = read_all(target, "trades", PARTITIONS, 2 * CHUNK)
    finally:
        code = stop(parent)
    assert code == 0, mirror_log(parent)
    assert got == want
    log = mirror_log(parent)
    assert "task 0" in log and "task 1" in log and "starting it again" in log


def test_task_0_translates_group_offsets_of_partitions_another_task_copies(broker, second_broker):
    source = {"bootstrap.servers": broker.bootstrap_servers}
    target = {"bootstrap.servers": second_broker.bootstrap_servers}
    shmlog.AdminClient(source).create_topics([shmlog.NewTopic("orders", PARTITIONS)])["orders"].result()
    produce(source, "orders", 0, 300)
    group = shmlog.Consumer({**source, "group.id": "billing", "enable.auto.commit": False})
    group.commit(offsets=[shmlog.TopicPartition("orders", p, 10) for p in range(PARTITIONS)], asynchronous=False)
    group.close()
    tasks = [Mirror(source, target, ["orders"], name="grouped", groups=["billing"], tasks=2, task=t) for t in (0, 1)]
    try:
        for m in tasks:
            m.start()
        assert {tp for m in tasks for tp in m.owned} == {("orders", p) for p in range(PARTITIONS)}
        assert tasks[1].owned
        wait_until(lambda: [m.step(0.2) for m in tasks] and sum(m.copied for m in tasks) >= 300, "everything copied")
        tasks[0]._load_syncs()
        moved = tasks[0].sync_groups()
    finally:
        for m in tasks:
            m.close()
    assert sorted((t, p, o) for _, t, p, o in moved) == [("orders", p, 10) for p in range(PARTITIONS)]
