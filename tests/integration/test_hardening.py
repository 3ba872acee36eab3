"""What no client can do to the broker: delete its internal topics, stall the supervisor with
a pattern subscription, or have the broker processes import a shmlog/ folder from its cwd."""
import time

import psutil
import pytest

import shmlog
from shmlog import KafkaError, KafkaException, TopicPartition
from tests.conftest import create_topic, stop_leftover_broker

DEADLINE_S = 20.0


def drive(consumers, until, timeout=DEADLINE_S):
    """Poll every consumer in turn until until() holds; the error Messages polled."""
    errors = []
    deadline = time.monotonic() + timeout
    while not until(errors):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s (errors polled: {errors})")
        for c in consumers:
            try:
                m = c.poll(0.01)
            except KafkaException as exc:
                errors.append(exc.args[0])
                continue
            if m is not None and m.error() is not None:
                errors.append(m.error())
    return errors


def test_internal_topics_cannot_be_deleted_and_committed_offsets_survive_a_restart(data_dir):
    with shmlog.Broker(data_dir) as broker:
        conf = {"bootstrap.servers": broker.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        create_topic(admin, "t", 1)
        c = shmlog.Consumer({**conf, "group.id": "g"})
        c.commit(offsets=[TopicPartition("t", 0, 5)], asynchronous=False)
        c.close()
        assert "__consumer_offsets" in admin.list_topics(timeout=10).topics
        futures = admin.delete_topics(["__consumer_offsets", "__transaction_state", "_schemas", "t"])
        for name in ("__consumer_offsets", "__transaction_state", "_schemas"):
            with pytest.raises(KafkaException) as exc:
                futures[name].result(timeout=10)
            err = exc.value.args[0]
            assert err.code() == KafkaError.INVALID_REQUEST
            assert f"topic {name} is an internal topic and is not allowed to be deleted" in err.str()
        futures["t"].result(timeout=10)    # the others in the same request go ahead
        create_topic(admin, "t", 1)
        admin.close()
    stop_leftover_broker(data_dir)
    with shmlog.Broker(data_dir) as broker:
        c = shmlog.Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "g"})
        assert [tp.offset for tp in c.committed([TopicPartition("t", 0)], timeout=10)] == [5]
        c.close()
    stop_leftover_broker(data_dir)


@pytest.fixture
def group_broker(data_dir):
    with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0) as b:
        yield b
    stop_leftover_broker(data_dir)


def test_a_catastrophic_backtracking_pattern_does_not_stall_the_supervisor(group_broker):
    conf = {"bootstrap.servers": group_broker.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    # Backtracking regex engines take 2**41 steps to find that ^(a+)+$ does not match this name.
    create_topic(admin, "a" * 41 + "b", 1)
    create_topic(admin, "aaaa", 1)
    create_topic(admin, "other", 1)
    member = {"auto.offset.reset": "earliest", "session.timeout.ms": 10_000}
    evil = shmlog.Consumer({**conf, **member, "group.id": "evil"})
    evil.subscribe(["^(a+)+$"])
    bystander = shmlog.Consumer({**conf, **member, "group.id": "bystander"})
    bystander.subscribe(["other"])
    # Both groups rebalance (the pattern is resolved against every topic name) within the
    # deadline, and the supervisor goes on answering other clients.
    drive([evil, bystander], lambda _: [tp.topic for tp in evil.assignment()] == ["aaaa"]
          and [tp.topic for tp in bystander.assignment()] == ["other"])
    assert "other" in admin.list_topics(timeout=5).topics
    evil.close()
    bystander.close()
    admin.close()


@pytest.mark.parametrize("pattern, reason", [
    ("^(a)\\1", "invalid escape sequence"),          # backreferences: no linear-time match
    ("^(?=a)", "invalid perl operator"),              # lookaround: likewise
    ("^" + "a" * 1000, "1001 characters, more than the 1000 allowed"),
])
def test_a_pattern_the_broker_cannot_bound_fails_that_member_only(group_broker, pattern, reason):
    conf = {"bootstrap.servers": group_broker.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, "other", 1)
    member = {"auto.offset.reset": "earliest", "session.timeout.ms": 10_000}
    bad = shmlog.Consumer({**conf, **member, "group.id": "bad"})
    bad.subscribe([pattern])
    errors = drive([bad], lambda errors: bool(errors))
    assert errors[0].code() == KafkaError.INVALID_REQUEST and reason in errors[0].str(), errors
    good = shmlog.Consumer({**conf, **member, "group.id": "good"})
    good.subscribe(["^oth.*"])
    drive([good], lambda _: [tp.topic for tp in good.assignment()] == ["other"])
    bad.close()
    good.close()
    admin.close()


def test_a_shmlog_folder_in_the_callers_cwd_does_not_shadow_the_broker_processes_package(
        data_dir, tmp_path, monkeypatch):
    fake = tmp_path / "elsewhere" / "shmlog"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the shmlog/ folder of the cwd was imported')\n")
    monkeypatch.chdir(fake.parent)
    with shmlog.Broker(data_dir) as broker:
        conf = {"bootstrap.servers": broker.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        create_topic(admin, "t", 1)
        p = shmlog.Producer({**conf, "acks": "all"})
        p.produce("t", b"v", partition=0)
        assert p.flush(10) == 0
        p.close()
        c = shmlog.Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
        c.assign([TopicPartition("t", 0, 0)])
        deadline = time.monotonic() + DEADLINE_S
        m = None
        while m is None and time.monotonic() < deadline:
            m = c.poll(0.1)
        assert m is not None and m.error() is None and m.value() == b"v"
        c.close()
        admin.close()
        supervisor = psutil.Process(broker.supervisor_pid)
        persisters = [p for p in supervisor.children() if "shmlog.broker.persister" in p.cmdline()]
        for proc in (psutil.Process(broker.process.pid), supervisor, *persisters):
            assert proc.cwd() == "/", proc.cmdline()
    stop_leftover_broker(data_dir)
