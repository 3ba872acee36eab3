"""`shmlog bench --bootstrap HOST:PORT` runs its workloads on a Kafka-protocol broker through
confluent-kafka, with the same checks (no loss, no duplicate, order) as on shmlog."""
import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("workload, api", [("e2e", "record"), ("e2e", "batch"), ("trades", "record")])
def test_shmlog_bench_runs_and_checks_out_on_a_kafka_cluster(kafka, workload, api):
    done = subprocess.run([sys.executable, "-m", "shmlog.cli", "bench", workload, "--bootstrap", kafka.bootstrap,
                           "--records", "3000", "--api", api, "--json", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["ok"] and result["problems"] == []
    assert result["records_sent"] == result["records_in_log"] == result["records_read"] == 3000


def test_busy_polling_is_refused_on_a_kafka_cluster_saying_why():
    done = subprocess.run([sys.executable, "-m", "shmlog.cli", "bench", "e2e", "--bootstrap", "127.0.0.1:9",
                           "--wait", "busy"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "busy-polling is shmlog's shared-memory reader" in done.stderr
