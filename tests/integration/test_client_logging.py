"""The `logger`, `debug` and `log_level` configs: client log lines reach the application's
logging.Logger as confluent-kafka delivers librdkafka's."""
import logging
import time

import pytest

import shmlog
from shmlog import Consumer, KafkaException
from tests.conftest import create_topic, stop_leftover_broker

DEADLINE_S = 30.0


@pytest.fixture
def broker(data_dir):
    with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0) as b:
        yield b
    stop_leftover_broker(data_dir)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def facilities(self):
        return [r.args[0] for r in self.records]


@pytest.fixture
def lines():
    handler = Lines()
    logger = logging.getLogger(f"test-client-logging-{id(handler)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    handler.logger = logger
    return handler


def join(consumer):
    deadline = time.monotonic() + DEADLINE_S
    while not consumer.assignment():
        assert time.monotonic() < deadline, "never assigned"
        consumer.poll(0.2)


def test_debug_cgrp_sends_the_group_join_and_assignment_to_the_logger(conf, admin, lines):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g", "logger": lines.logger, "debug": "cgrp", "client.id": "app"}) as c:
        c.subscribe(["t"])
        join(c)
    assert {"JOIN", "JOINED", "ASSIGNMENT"} <= set(lines.facilities())
    record = next(r for r in lines.records if r.args[0] == "ASSIGNMENT")
    assert record.levelno == logging.DEBUG
    assert record.msg == "%s [%s] %s" and record.args[1].startswith("app#consumer-")
    assert "t[0]" in record.args[2]


def test_without_debug_no_debug_lines_are_written(conf, admin, lines):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g", "logger": lines.logger}) as c:
        c.subscribe(["t"])
        join(c)
    assert [r for r in lines.records if r.levelno == logging.DEBUG] == []


def test_debug_all_includes_metadata_lines(conf, admin, lines):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g", "logger": lines.logger, "debug": "all"}) as c:
        c.list_topics()
    assert "CONNECT" in lines.facilities() and "METADATA" in lines.facilities()


def test_a_max_poll_interval_breach_is_a_warning_line(conf, admin, lines):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g", "logger": lines.logger, "max.poll.interval.ms": 300,
                   "session.timeout.ms": 6000}) as c:
        c.subscribe(["t"])
        join(c)
        time.sleep(0.6)  # the application that does not poll in time, which this test is about
        deadline = time.monotonic() + DEADLINE_S
        while "MAXPOLL" not in lines.facilities():  # written by the group thread when it notices
            assert time.monotonic() < deadline, "no MAXPOLL line"
            time.sleep(0.01)
    record = next(r for r in lines.records if r.args[0] == "MAXPOLL")
    assert record.levelno == logging.WARNING and "300ms" in record.args[2]


def test_log_level_below_warning_silences_warnings(conf, admin, lines):
    create_topic(admin, "t")
    with Consumer({**conf, "group.id": "g", "logger": lines.logger, "log_level": 3, "max.poll.interval.ms": 300,
                   "session.timeout.ms": 6000}) as c:
        c.subscribe(["t"])
        join(c)
        time.sleep(0.6)  # the application that does not poll in time, which this test is about
        deadline = time.monotonic() + DEADLINE_S
        while True:  # the breach reaches the application as an event whether or not it was logged
            msg = c.poll(0.1)
            if msg is not None and msg.error() is not None:
                break
            assert time.monotonic() < deadline, "no max-poll event"
    assert "MAXPOLL" not in lines.facilities()


def test_an_unknown_debug_context_is_a_config_error(conf):
    with pytest.raises(KafkaException, match='"debug"'):
        Consumer({**conf, "group.id": "g", "debug": "cgrp,nonsense"})


def test_debug_fetch_writes_a_line_per_fetched_run(conf, admin, lines):
    from shmlog import Producer, TopicPartition
    create_topic(admin, "t")
    with Producer({**conf, "linger.ms": 0}) as p:
        for _ in range(3):
            p.produce("t", b"v")
    with Consumer({**conf, "group.id": "g", "logger": lines.logger, "debug": "fetch"}) as c:
        c.assign([TopicPartition("t", 0, 0)])
        got = 0
        deadline = time.monotonic() + DEADLINE_S
        while got < 3:
            assert time.monotonic() < deadline, "records never arrived"
            got += c.poll(0.2) is not None
    fetches = [r.args[2] for r in lines.records if r.args[0] == "FETCH"]
    assert fetches and fetches[0].startswith("t [0]: ") and "offsets 0.." in fetches[0]
