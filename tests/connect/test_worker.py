"""The worker's own rules, without a broker: restart backoff, config checks before any task runs."""
import pytest

from shmlog.connect.api import ConfigException
from shmlog.connect.config import parse_properties
from shmlog.connect.worker import TaskState, Worker

SINK = {"name": "s", "connector.class": "FileStreamSink", "topics": "t", "file": "/dev/null"}


def test_a_failing_task_waits_twice_as_long_after_each_failure_in_a_row_up_to_the_maximum():
    w = Worker({"bootstrap.servers": "shm:///nowhere", "task.restart.backoff.ms": "100",
                "task.restart.backoff.max.ms": "400"}, [SINK])
    state = TaskState("s", 0, {})
    waits = []
    for failures in range(1, 6):
        state.failures_in_a_row = failures
        waits.append(w._backoff_s(state))
    assert waits == [0.1, 0.2, 0.4, 0.4, 0.4]


def test_two_connectors_with_one_name_are_refused():
    with pytest.raises(ConfigException, match="share a name"):
        Worker({"bootstrap.servers": "shm:///nowhere"}, [SINK, SINK])


def test_an_unknown_worker_key_is_refused_naming_it():
    with pytest.raises(ConfigException, match="offset.flush.intervall.ms in the worker config"):
        Worker({"bootstrap.servers": "shm:///nowhere", "offset.flush.intervall.ms": "5"}, [SINK])


def test_a_sink_needs_topics_or_topics_regex():
    with pytest.raises(ConfigException, match="one of topics or topics.regex"):
        Worker({"bootstrap.servers": "shm:///nowhere"}, [{**SINK, "topics": ""}])


def test_properties_files_read_as_java_reads_them():
    text = "# comment\n! also a comment\na=1\nb : two words \nc\\\n  ontinued=x\\\n  y\nempty=\n"
    assert parse_properties(text) == {"a": "1", "b": "two words ", "continued": "xy", "empty": ""}
