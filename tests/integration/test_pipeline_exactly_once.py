"""shmlog.pipeline with processing_guarantee="exactly_once": each batch one transaction, worker
processes SIGKILLed at chosen points (inside the function, half-way through a batch) and at
random moments; the output read with read_committed holds each input's output exactly once,
in per-key order."""
import os
import signal
import time

import pytest

import shmlog
from shmlog import TopicPartition
from shmlog.pipeline import Pipeline
from tests.conftest import create_topic
from tests.integration.test_pipeline import broker, lag, per_key_in_order, produce, shout  # noqa: F401

pytestmark = pytest.mark.timeout(180)
DEADLINE_S = 60.0


def shout_or_die(msg):
    """Dies (SIGKILL) the first time it meets a record whose marker file exists, once per record."""
    marker = os.path.join(os.environ["SHMLOG_TEST_KILL_DIR"], msg.value().decode())
    if os.path.exists(marker):
        os.unlink(marker)
        os.kill(os.getpid(), signal.SIGKILL)
    return msg.value().upper()


def read_committed_until_idle(conf, topic, partitions, expected_count, timeout=DEADLINE_S):
    """read_committed records of topic until expected_count have arrived and nothing more comes
    for a second (a duplicate would come within it: every transaction is committed by then)."""
    c = shmlog.Consumer({**conf, "isolation.level": "read_committed"})
    c.assign([TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in range(partitions)])
    out, deadline, idle_since = [], time.monotonic() + timeout, None
    while True:
        got = [m for m in c.consume(1000, timeout=0.1) if m.error() is None]
        out += got
        now = time.monotonic()
        if got or len(out) < expected_count:
            idle_since = now
        elif now - idle_since >= 1.0:
            break
        assert now < deadline, f"only {len(out)} of {expected_count} records in {topic} after {timeout}s"
    c.close()
    return out


def expected(keys, per_key):
    return sorted(b"K%d-%06d" % (k, i) for k in range(keys) for i in range(per_key))


def test_an_exactly_once_pipeline_forwards_every_record_once_and_commits_every_offset(conf, admin):
    create_topic(admin, "in", 4)
    create_topic(admin, "out", 4)
    produce(conf, "in", 8, 50)
    p = Pipeline({**conf, "auto.offset.reset": "earliest"}, ["in"], shout, group_id="eos", workers=2,
                 output_topic="out", batch_size=40, processing_guarantee="exactly_once")
    with p:
        p.wait_ready()
        out = read_committed_until_idle(conf, "out", 4, 400)
    assert sorted(m.value() for m in out) == expected(8, 50) and per_key_in_order(out)
    assert lag(admin, "eos") == 0


def test_workers_killed_inside_a_batch_leave_each_output_exactly_once(conf, admin, tmp_path, monkeypatch):
    kills = tmp_path / "kills"
    kills.mkdir()
    monkeypatch.setenv("SHMLOG_TEST_KILL_DIR", str(kills))
    for victim in (b"k1-000010", b"k5-000070", b"k2-000120"):      # three deaths, in three batches
        (kills / victim.decode()).touch()
    create_topic(admin, "in", 4)
    create_topic(admin, "out", 4)
    produce(conf, "in", 8, 150)
    p = Pipeline({**conf, "auto.offset.reset": "earliest"}, ["in"], shout_or_die, group_id="eos", workers=2,
                 output_topic="out", batch_size=50, processing_guarantee="exactly_once")
    with p:
        p.wait_ready()
        out = read_committed_until_idle(conf, "out", 4, 1200)
        assert p.stats()["restarts"] == 3
    assert not list(kills.iterdir())
    assert sorted(m.value() for m in out) == expected(8, 150) and per_key_in_order(out)
    assert lag(admin, "eos") == 0


def test_workers_sigkilled_mid_stream_leave_each_output_exactly_once(conf, admin):
    create_topic(admin, "in", 4)
    create_topic(admin, "out", 4)
    p = Pipeline({**conf, "auto.offset.reset": "earliest"}, ["in"], shout, group_id="eos", workers=2,
                 output_topic="out", batch_size=20, processing_guarantee="exactly_once")
    with p:
        p.wait_ready()
        for round_ in range(3):
            produce(conf, "in", 8, 100, start=100 * round_)
            os.kill(p.worker_pids()[round_ % 2], signal.SIGKILL)
            p.wait_ready()
        out = read_committed_until_idle(conf, "out", 4, 2400)
        assert p.stats()["restarts"] == 3
    assert sorted(m.value() for m in out) == expected(8, 300) and per_key_in_order(out)
    assert lag(admin, "eos") == 0


def test_an_unknown_processing_guarantee_is_refused(conf):
    with pytest.raises(ValueError, match="processing_guarantee"):
        Pipeline(conf, ["in"], shout, group_id="g", processing_guarantee="exactly_twice")
