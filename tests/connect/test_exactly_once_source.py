"""exactly.once.source.support=enabled: records and source offsets commit in one transaction,
so a source task SIGKILLed mid-run leaves read_committed consumers each line exactly once."""
import pytest

from shmlog.connect.api import ConfigException
from shmlog.connect.worker import Worker
from tests.conftest import create_topic
from tests.connect.helpers import kill_task, read_topic, worker_props


def write_lines(path, start, stop):
    with open(path, "a") as f:
        f.writelines(f"line-{i}\n" for i in range(start, stop))


def test_an_exactly_once_source_killed_mid_run_shows_each_record_once_under_read_committed(conf, admin, tmp_path):
    create_topic(admin, "lines", 2)
    path = tmp_path / "in.txt"
    write_lines(path, 0, 3000)
    src = {"name": "eos-src", "connector.class": "FileStreamSource", "file": str(path), "topic": "lines",
           "batch.size": "100", "exactly.once.support": "required"}
    with Worker(worker_props(conf, exactly_once_source_support="enabled"), [src]) as w:
        w.wait_running()
        for step in range(1, 4):
            read_topic(conf, "lines", isolation="read_committed", count=500 * step)
            kill_task(w, ("eos-src", 0))
            write_lines(path, 3000 * step, 3000 * (step + 1))
        got = read_topic(conf, "lines", isolation="read_committed", distinct=12000)
    values = [m.value().decode() for m in got]
    assert sorted(values, key=lambda v: int(v.split("-")[1])) == [f"line-{i}" for i in range(12000)]
    # The killed tasks' open transactions were aborted: read_uncommitted sees their records too.
    assert len(read_topic(conf, "lines", isolation="read_uncommitted")) >= len(values)


def test_a_transaction_per_interval_commits_records_with_their_offsets(conf, admin, tmp_path):
    create_topic(admin, "lines", 1)
    path = tmp_path / "in.txt"
    write_lines(path, 0, 500)
    src = {"name": "eos-src", "connector.class": "FileStreamSource", "file": str(path), "topic": "lines",
           "batch.size": "10", "transaction.boundary": "interval", "transaction.boundary.interval.ms": "50"}
    with Worker(worker_props(conf, exactly_once_source_support="enabled"), [src]) as w:
        w.wait_running()
        read_topic(conf, "lines", isolation="read_committed", count=500)
    write_lines(path, 500, 600)
    with Worker(worker_props(conf, exactly_once_source_support="enabled"), [src]) as w:
        w.wait_running()
        got = read_topic(conf, "lines", isolation="read_committed", count=600)
    assert [m.value().decode() for m in got] == [f"line-{i}" for i in range(600)]


def test_exactly_once_required_without_worker_support_is_refused(conf, tmp_path):
    src = {"name": "eos-src", "connector.class": "FileStreamSource", "file": str(tmp_path / "x"), "topic": "lines",
           "exactly.once.support": "required"}
    with pytest.raises(ConfigException, match="exactly.once.source.support=enabled"):
        Worker(worker_props(conf), [src])
