"""FileStreamSource and FileStreamSink through `shmlog.connect.Worker`, with task processes
SIGKILLed mid-run: nothing is lost, and duplicates stay within the uncommitted window."""
import collections

import shmlog
from shmlog.connect.worker import Worker
from tests.conftest import create_topic
from tests.connect.helpers import kill_task, lines, read_topic, wait_until, worker_props

BATCH = 50


def source(name, path, topic, **extra):
    return {"name": name, "connector.class": "FileStreamSource", "file": str(path), "topic": topic,
            "batch.size": str(BATCH), **extra}


def write_lines(path, start, stop):
    with open(path, "a") as f:
        f.writelines(f"line-{i}\n" for i in range(start, stop))


def test_file_source_copies_every_line_through_task_kills_with_duplicates_bounded_by_one_batch(conf, admin, tmp_path):
    create_topic(admin, "lines", 1)
    path = tmp_path / "in.txt"
    write_lines(path, 0, 2000)
    kills = 0
    with Worker(worker_props(conf), [source("file-src", path, "lines")]) as w:
        w.wait_running()
        for step in range(1, 4):
            read_topic(conf, "lines", count=300 * step)
            kill_task(w, ("file-src", 0))
            kills += 1
            write_lines(path, 2000 * step, 2000 * (step + 1))
        got = [m.value().decode() for m in read_topic(conf, "lines", distinct=8000)]
    counts = collections.Counter(got)
    assert set(counts) == {f"line-{i}" for i in range(8000)}
    duplicates = len(got) - len(counts)
    assert duplicates <= kills * BATCH, (duplicates, kills)


def test_file_source_resumes_at_its_stored_position_after_a_restart(conf, admin, tmp_path):
    create_topic(admin, "lines", 1)
    path = tmp_path / "in.txt"
    write_lines(path, 0, 100)
    with Worker(worker_props(conf), [source("file-src", path, "lines")]) as w:
        w.wait_running()
        read_topic(conf, "lines", count=100)
    write_lines(path, 100, 150)
    with open(path, "a") as f:
        f.write("partial-without-newline")
    with Worker(worker_props(conf), [source("file-src", path, "lines")]) as w:
        w.wait_running()
        got = [m.value().decode() for m in read_topic(conf, "lines", count=150)]
    assert got == [f"line-{i}" for i in range(150)]     # each once, in order; the partial line waits


def test_file_sink_writes_every_record_through_task_kills_with_duplicates_bounded(conf, admin, tmp_path):
    create_topic(admin, "events", 3)
    out = tmp_path / "out.txt"
    p = shmlog.Producer(conf)
    for i in range(6000):
        p.produce("events", value=f"v-{i}", key=str(i))
    assert p.flush(30) == 0
    sink = {"name": "file-sink", "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "tasks.max": "2", "topics": "events", "file": str(out), "consumer.override.max.poll.records": str(BATCH)}
    kills = 0
    with Worker(worker_props(conf), [sink]) as w:
        w.wait_running()
        wait_until(lambda: len(lines(out)) >= 1000, "1000 lines in the sink file")
        kill_task(w, ("file-sink", 0))
        kills += 1
        wait_until(lambda: len(lines(out)) >= 3000, "3000 lines in the sink file")
        kill_task(w, ("file-sink", 1))
        kills += 1
        wait_until(lambda: set(lines(out)) >= {f"v-{i}" for i in range(6000)}, "every record in the sink file")
    got = lines(out)
    counts = collections.Counter(got)
    assert set(counts) == {f"v-{i}" for i in range(6000)}
    # Each killed task had at most one batch put but not committed per partition it owned.
    assert len(got) - len(counts) <= kills * 3 * BATCH


def test_sink_tasks_share_the_partitions_of_their_topics_as_one_group(conf, admin, tmp_path):
    create_topic(admin, "events", 4)
    sink = {"name": "file-sink", "connector.class": "FileStreamSink", "tasks.max": "2", "topics": "events",
            "file": str(tmp_path / "out.txt")}
    with Worker(worker_props(conf), [sink]) as w:
        w.wait_running()

        def members():
            desc = admin.describe_consumer_groups(["connect-file-sink"])["connect-file-sink"].result()
            owned = sorted(tp.partition for m in desc.members for tp in m.assignment.topic_partitions)
            return desc if len(desc.members) == 2 and owned == [0, 1, 2, 3] else None
        desc = wait_until(members, "two members owning the four partitions")
    assert sorted(len(m.assignment.topic_partitions) for m in desc.members) == [2, 2]
