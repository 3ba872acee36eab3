"""A clean stop drains every ring that exists at the moment of the stop before anything is
unlinked: a topic and the internal __consumer_offsets created a moment before included, and
rings no persister had drained when the stop came. Real broker processes, many trials."""
import time

import psutil
import pytest

import shmlog
from shmlog import TopicPartition
from shmlog._native import shm
from shmlog.broker import launcher
from tests.conftest import broker_processes

pytestmark = pytest.mark.timeout(300)

TRIALS = 8


@pytest.fixture
def data_dirs(tmp_path):
    """A fresh data dir per trial (so each trial's commit is its broker's first); checked clean."""
    made = []

    def make(trial):
        d = tmp_path / f"data{trial}"
        d.mkdir()
        made.append(str(d))
        return str(d)

    yield make
    for d in made:
        left = shm.names_in_namespace(shm.namespace(d))
        for name in left:
            shm.unlink(name)
        assert not left, f"shared memory left behind: {left}"
        assert not broker_processes(d)


def produce(conf, topic, values):
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0
    p.close()


def read_partition(conf, topic, partition=0):
    c = shmlog.Consumer(conf)
    low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    c.assign([TopicPartition(topic, partition, shmlog.OFFSET_BEGINNING)])
    got, deadline = [], time.monotonic() + 30
    while len(got) < high - low and time.monotonic() < deadline:
        got += [m.value() for m in c.consume(100, timeout=0.2) if m.error() is None]
    c.close()
    return got


def committed(conf, group, topic):
    c = shmlog.Consumer({**conf, "group.id": group})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        c.close()


def test_a_new_topic_and_a_groups_first_commit_made_right_before_a_clean_stop_are_kept(data_dirs):
    for trial in range(TRIALS):
        data_dir = data_dirs(trial)
        values = [b"%d-%d" % (trial, i) for i in range(20)]
        with shmlog.Broker(data_dir) as b:
            conf = {"bootstrap.servers": b.bootstrap_servers}
            a = shmlog.AdminClient(conf)
            a.create_topics([shmlog.NewTopic("fresh", 1)])["fresh"].result()
            a.close()
            produce(conf, "fresh", values)
            c = shmlog.Consumer({**conf, "group.id": "g", "enable.auto.commit": False})
            # The broker's first commit: it creates __consumer_offsets and appends to it.
            c.commit(offsets=[TopicPartition("fresh", 0, 7 + trial)], asynchronous=False)
            c.close()
        with shmlog.Broker(data_dir) as b:
            conf = {"bootstrap.servers": b.bootstrap_servers}
            assert read_partition(conf, "fresh") == values, f"trial {trial}"
            assert committed(conf, "g", "fresh") == 7 + trial, f"trial {trial}"


def test_records_published_while_no_persister_runs_are_drained_by_the_stop(data_dirs):
    """The persister is stopped (SIGSTOP), records are produced (acks=1), it is SIGKILLed and the
    broker stopped at once, before the supervisor's housekeeping restarts it: the stop must
    start a persister to drain them rather than unlink them."""
    for trial in range(TRIALS // 2):
        data_dir = data_dirs(trial)
        values = [b"%d-%d" % (trial, i) for i in range(20)]
        with shmlog.Broker(data_dir) as b:
            conf = {"bootstrap.servers": b.bootstrap_servers}
            produce(conf, "t", [b"warm-up"])
            persister = psutil.Process(launcher.status(data_dir)["persister_pid"])
            persister.suspend()
            produce(conf, "t", values)
            persister.kill()
            persister.wait(30)
        with shmlog.Broker(data_dir) as b:
            assert read_partition({"bootstrap.servers": b.bootstrap_servers}, "t") == [b"warm-up", *values], \
                f"trial {trial}"
