"""`shmlog connect run WORKER.properties CONNECTOR.json`: standalone mode as a process, stopped
by SIGTERM after every task committed; bad configs are refused naming the key."""
import os
import signal
import subprocess
import sys

from tests.conftest import create_topic
from tests.connect.helpers import lines, read_topic, wait_until


def shmlog_cmd(*args):
    return [sys.executable, "-m", "shmlog.cli", *args]


def test_connect_run_copies_a_file_through_a_topic_into_another_file_and_stops_on_sigterm(conf, admin, tmp_path):
    create_topic(admin, "lines", 1)
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(f"l{i}\n" for i in range(100)))
    worker = tmp_path / "worker.properties"
    worker.write_text(f"# connect-standalone.properties\nbootstrap.servers={conf['bootstrap.servers']}\n"
                      "key.converter=org.apache.kafka.connect.storage.StringConverter\n"
                      "value.converter=org.apache.kafka.connect.storage.StringConverter\n"
                      "offset.flush.interval.ms=100\n")
    (tmp_path / "source.properties").write_text(f"name=local-file-source\nconnector.class=FileStreamSource\n"
                                                f"tasks.max=1\nfile={src}\ntopic=lines\n")
    (tmp_path / "sink.json").write_text('{"name": "local-file-sink", "config": {"connector.class": '
                                        f'"FileStreamSink", "tasks.max": 1, "file": "{out}", "topics": "lines"}}}}')
    proc = subprocess.Popen(shmlog_cmd("connect", "run", str(worker), str(tmp_path / "source.properties"),
                                       str(tmp_path / "sink.json")), stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(lines(out)) >= 100, "100 lines in the sink file")
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "connector local-file-source: 1 task started" in err
    assert "stopped: every task committed" in err
    assert lines(out) == [f"l{i}" for i in range(100)]
    assert len(read_topic(conf, "lines")) == 100


def test_connect_run_refuses_an_unknown_key_naming_it(conf, tmp_path):
    worker = tmp_path / "worker.properties"
    worker.write_text(f"bootstrap.servers={conf['bootstrap.servers']}\n")
    bad = tmp_path / "bad.properties"
    bad.write_text("name=x\nconnector.class=FileStreamSink\ntopics=t\nfile=/dev/null\nfiel=typo\n")
    done = subprocess.run(shmlog_cmd("connect", "run", str(worker), str(bad)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "Unknown configuration key fiel of connector 'x'" in done.stderr
