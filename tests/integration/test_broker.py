"""The broker process: one per data dir, reclaim after a crash, owner-only objects, survival of clients."""
import os
import signal
import stat

import psutil
import pytest

import shmlog
from shmlog import TopicPartition
from shmlog._native import shm
from shmlog.broker.launcher import status


def create_topic(admin, name, partitions=1):
    admin.create_topics([shmlog.NewTopic(name, partitions)])[name].result()


def kill_broker_hard(data_dir):
    """SIGKILL the keeper, the supervisor and its persister, as a crash would (the keeper first:
    it would start the supervisor again)."""
    info = status(data_dir)
    victims = [psutil.Process(info["keeper_pid"]), psutil.Process(info["pid"])]
    if info.get("persister_pid"):
        victims.append(psutil.Process(info["persister_pid"]))
    for p in victims:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)


def test_a_second_broker_on_the_same_data_dir_is_refused(broker, data_dir):
    with pytest.raises(shmlog.KafkaException) as exc:
        shmlog.Broker(data_dir).start()
    assert "another broker already runs" in str(exc.value)


def test_shared_memory_objects_are_created_owner_only(admin, data_dir):
    create_topic(admin, "private", 2)
    names = shm.names_in_namespace(shm.namespace(data_dir))
    assert names
    for name in names:
        assert stat.S_IMODE(os.stat("/dev/shm" + name).st_mode) == 0o600, name


def test_a_restarted_broker_reclaims_what_a_crashed_one_left_and_keeps_the_data(data_dir):
    b = shmlog.Broker(data_dir).start()
    conf = {"bootstrap.servers": b.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, "kept", 1)
    admin.close()
    p = shmlog.Producer({**conf, "acks": "all"})
    for i in range(20):
        p.produce("kept", b"%d" % i)
    assert p.flush(10) == 0
    p.close()
    kill_broker_hard(data_dir)
    b.process.wait()
    b.process = None
    stray = f"/shmlog.{shm.namespace(data_dir)}.t999.p0"
    shm.Mapping.create(stray, 4096).close()
    with shmlog.Broker(data_dir) as again:
        assert stray not in shm.names_in_namespace(shm.namespace(data_dir))
        c = shmlog.Consumer({"bootstrap.servers": again.bootstrap_servers})
        c.assign([TopicPartition("kept", 0, shmlog.OFFSET_BEGINNING)])
        got = []
        while len(got) < 20:
            batch = c.consume(100, timeout=10)
            assert batch, f"only {len(got)} of 20 records after restart"
            got += batch
        assert [m.value() for m in got] == [b"%d" % i for i in range(20)]
        c.close()


def test_attached_clients_keep_moving_records_while_the_supervisor_is_dead(data_dir):
    b = shmlog.Broker(data_dir).start()
    conf = {"bootstrap.servers": b.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, "live", 1)
    admin.close()
    p = shmlog.Producer({**conf, "acks": 1})
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition("live", 0, shmlog.OFFSET_BEGINNING)])
    kill_broker_hard(data_dir)
    b.process.wait()
    b.process = None
    for i in range(50):
        p.produce("live", b"%d" % i)
    assert p.flush(10) == 0
    got = []
    while len(got) < 50:
        batch = c.consume(100, timeout=10)
        assert batch
        got += batch
    assert [m.offset() for m in got] == list(range(50))
    c.close()
    p.close()
    for name in shm.names_in_namespace(shm.namespace(data_dir)):
        shm.unlink(name)


def test_a_client_naming_a_data_dir_with_no_broker_gets_a_clear_error(tmp_path):
    with pytest.raises(shmlog.KafkaException) as exc:
        shmlog.Consumer({"bootstrap.servers": f"shm://{tmp_path}"})
    assert "no shmlog broker is running" in str(exc.value)
    assert str(tmp_path) in str(exc.value)


def test_a_bootstrap_string_that_is_not_a_shmlog_url_is_refused_with_the_expected_form():
    with pytest.raises(shmlog.KafkaException) as exc:
        shmlog.Producer({"bootstrap.servers": "localhost:9092"})
    assert "shm:///" in str(exc.value)


def test_a_broker_stopped_right_after_it_started_keeps_every_acknowledged_record(data_dir):
    """A clean stop drains the rings to disk even when it comes before the persister finished
    starting (it must not die of the SIGTERM meant to make it drain)."""
    sent = []
    for run in range(3):
        with shmlog.Broker(data_dir) as broker:
            p = shmlog.Producer({"bootstrap.servers": broker.bootstrap_servers, "acks": 1, "linger.ms": 0})
            for i in range(50):
                sent.append(b"%d-%d" % (run, i))
                p.produce("early", sent[-1], partition=0)
            assert p.flush(10) == 0
            p.close()
    with shmlog.Broker(data_dir) as broker:
        c = shmlog.Consumer({"bootstrap.servers": broker.bootstrap_servers})
        c.assign([TopicPartition("early", 0, shmlog.OFFSET_BEGINNING)])
        got = []
        while len(got) < len(sent):
            m = c.poll(10)
            assert m is not None, f"only {len(got)} of {len(sent)} records survived the stops"
            got.append(m.value())
        assert got == sent
        c.close()


def test_clients_carry_on_with_a_restarted_supervisor(data_dir):
    """The supervisor dies and comes back (adopting the rings): the clients that lived through
    it reconnect for their next metadata request and see topics created after the restart."""
    b = shmlog.Broker(data_dir).start()
    conf = {"bootstrap.servers": b.bootstrap_servers}
    p = shmlog.Producer({**conf, "acks": 1})
    c = shmlog.Consumer(conf)
    p.produce("before", b"0")
    p.flush()
    c.assign([TopicPartition("before", 0, shmlog.OFFSET_BEGINNING)])
    assert c.poll(10).value() == b"0"
    kill_broker_hard(data_dir)
    b.process.wait()
    b.process = None
    with shmlog.Broker(data_dir):
        p.produce("after", b"1")          # a new topic: needs the restarted supervisor
        assert p.flush(10) == 0
        c.assign([TopicPartition("after", 0, shmlog.OFFSET_BEGINNING)])
        m = c.poll(10)
        assert m is not None and m.value() == b"1"
        assert "after" in c.list_topics().topics
        c.close()
        p.close()
