"""`shmlog metrics` and `shmlog top` against a real broker, run as real subprocesses."""
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shmlog import Consumer, Producer, TopicPartition
from tests.conftest import create_topic

TIMEOUT_S = 60


def shmlog_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "SHMLOG_DATA_DIR"}
    env["COLUMNS"] = "160"
    return subprocess.run([sys.executable, "-m", "shmlog.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=TIMEOUT_S)


def samples(text):
    """{(metric name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


@pytest.fixture
def traffic(conf, admin):
    """Topic `t` (2 partitions) with 30 records in partition 0 and 12 in partition 1, and group `g`
    that has committed offset 20 on partition 0 and nothing on partition 1."""
    create_topic(admin, "t", partitions=2)
    producer = Producer(conf)
    for i in range(42):
        producer.produce("t", b"v", partition=0 if i < 30 else 1)
    assert producer.flush(TIMEOUT_S) == 0
    consumer = Consumer({**conf, "group.id": "g", "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("t", 0, 20)], asynchronous=False)
    consumer.close()
    return conf


def test_metrics_once_reports_each_partitions_offsets_and_each_groups_lag(broker, traffic):
    done = shmlog_cli("metrics", "--once", "--data-dir", broker.data_dir)
    assert done.returncode == 0, done.stderr
    got = samples(done.stdout)
    p0, p1 = frozenset({("topic", "t"), ("partition", "0")}), frozenset({("topic", "t"), ("partition", "1")})
    assert got[("shmlog_up", frozenset())] == 1
    assert got[("shmlog_partition_log_end_offset", p0)] == 30
    assert got[("shmlog_partition_log_end_offset", p1)] == 12
    assert got[("shmlog_partition_records_in_total", p0)] == 30
    g0 = frozenset({("group", "g"), ("topic", "t"), ("partition", "0")})
    assert got[("shmlog_group_committed_offset", g0)] == 20
    assert got[("shmlog_group_lag", g0)] == 10
    assert ("shmlog_group_lag", frozenset({("group", "g"), ("topic", "t"), ("partition", "1")})) not in got


def test_metrics_once_with_no_broker_reports_it_down(tmp_path):
    done = shmlog_cli("metrics", "--once", "--data-dir", tmp_path / "nothing")
    assert done.returncode == 0, done.stderr
    assert samples(done.stdout) == {("shmlog_up", frozenset()): 0}


def test_metrics_serves_prometheus_scrapes_over_http(broker, traffic):
    server = subprocess.Popen([sys.executable, "-m", "shmlog.cli", "metrics", "--port", "0", "--data-dir",
                               broker.data_dir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()  # "serving metrics of DIR on http://127.0.0.1:PORT/metrics"
        url = line.split(" on ", 1)[1].strip()
        for _ in range(2):  # every scrape looks again
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
                got = samples(reply.read().decode())
            assert got[("shmlog_up", frozenset())] == 1
            assert got[("shmlog_partition_log_end_offset", frozenset({("topic", "t"), ("partition", "0")}))] == 30
    finally:
        server.terminate()
        server.wait(TIMEOUT_S)
        server.stderr.close()


def test_top_once_shows_partitions_and_group_lag(broker, traffic):
    done = shmlog_cli("top", "--once", "--data-dir", broker.data_dir)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    partition_row = next(r for r in rows if r[1:4] == ["t", "│", "0"])
    assert "30" in partition_row
    group_row = next(r for r in rows if len(r) > 1 and r[1] == "g")
    assert "Stable" in group_row or "Empty" in group_row
    assert "20" in group_row and "10" in group_row


def test_top_once_with_no_broker_fails_with_one_line(tmp_path):
    done = shmlog_cli("top", "--once", "--data-dir", tmp_path / "nothing")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "no shmlog broker is running" in done.stderr


def test_fsync_histogram_after_acks_all_traffic(broker, conf, admin):
    """acks=all waits for the persister's fdatasync; each one is timed into a histogram per log dir
    that `shmlog metrics` exports as shmlog_persister_fsync_seconds and `shmlog top` summarises."""
    create_topic(admin, "durable")
    producer = Producer({**conf, "acks": "all", "linger.ms": 0})
    for _ in range(20):
        producer.produce("durable", b"v")
        assert producer.flush(TIMEOUT_S) == 0   # one at a time: each waits for its own fdatasync
    log_dir = os.path.join(broker.data_dir, "logs")
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # the persister publishes its stats at most once a second
        done = shmlog_cli("metrics", "--once", "--data-dir", broker.data_dir)
        assert done.returncode == 0, done.stderr
        got = samples(done.stdout)
        count = got.get(("shmlog_persister_fsync_seconds_count", frozenset({("log_dir", log_dir)})), 0)
        if count >= 20:
            break
        assert time.monotonic() < deadline, f"fsync count {count} after 20 acks=all produces:\n{done.stdout}"
        time.sleep(0.1)
    families = {f.name: f for f in text_string_to_metric_families(done.stdout)}
    assert families["shmlog_persister_fsync_seconds"].type == "histogram"
    buckets = sorted((float(dict(labels)["le"]), value) for (name, labels), value in got.items()
                     if name == "shmlog_persister_fsync_seconds_bucket" and dict(labels)["log_dir"] == log_dir)
    bounds = [b for b, _ in buckets]
    assert bounds == [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, float("inf")]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"cumulative buckets must not decrease: {buckets}"
    assert counts[-1] == count
    total = got[("shmlog_persister_fsync_seconds_sum", frozenset({("log_dir", log_dir)}))]
    assert 0 < total < count * 60

    shown = shmlog_cli("top", "--once", "--data-dir", broker.data_dir)
    assert shown.returncode == 0, shown.stderr
    line = next(ln for ln in shown.stdout.splitlines() if ln.startswith("fsync "))
    assert "p50" in line and "p99" in line and "ms" in line, line
