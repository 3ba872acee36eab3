"""`shmlog bench`, run as a real subprocess (`python -m shmlog.cli bench ... --json`).

Small runs of every workload: the JSON result must be sane (counts equal what was sent,
latency percentiles ordered, positive throughput), the embedded broker's temporary data dir
and its /dev/shm objects must be gone afterwards, and bad options must fail with a message
naming the option. No timed assertions: the numbers depend on the machine and its load.
"""
import json
import os
import time

import numpy as np
import psutil
import pytest

from shmlog._native import shm
from shmlog.broker import launcher
from shmlog.cli import benchmark as bm

from .test_cli import broker_processes, cli_env, leftovers, ok, shmlog_cli, shmlog_popen

BENCH_TIMEOUT_S = 120


def bench(*args, expect_ok=True):
    started = time.time()
    result = shmlog_cli("bench", *args, "--json", "--no-progress", timeout=BENCH_TIMEOUT_S)
    if expect_ok:
        ok(result)
    doc = json.loads(result.stdout)
    assert_cleaned_up(doc, started)
    return doc


def assert_cleaned_up(doc, started):
    """The embedded broker's data dir, shared memory and processes are gone."""
    data_dir = doc["data_dir"]
    assert data_dir, "an embedded run reports its temporary data dir"
    assert doc["shm_left_behind"] == []
    assert not os.path.exists(data_dir), f"temporary data dir left behind: {data_dir}"
    assert shm.names_in_namespace(shm.namespace(data_dir)) == []
    assert not broker_processes(data_dir), "broker processes left behind"
    assert not stray_bench_children(started), "bench child processes left behind"


def stray_bench_children(since):
    """multiprocessing children started since `since` whose parent is gone (reparented)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time", "ppid", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "spawn_main" in cmd and proc.info["create_time"] >= since - 1 and proc.info["ppid"] == 1 \
                and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def assert_counts(doc, records):
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["records_sent"] == records
    assert doc["records_in_log"] == records
    assert doc["records_per_s"] > 0 and doc["mb_per_s"] > 0 and doc["seconds"] > 0
    if doc["config"]["consumers"]:
        assert doc["records_read"] == records
        assert doc["bytes_read"] == doc["bytes_sent"] > 0


def assert_latency(doc, samples_at_least=1):
    lat = doc["latency_us"]
    assert lat is not None
    assert 0 <= lat["min_us"] <= lat["p50_us"] <= lat["p99_us"] <= lat["p99_9_us"] <= lat["max_us"]
    assert lat["samples"] >= samples_at_least


# ---------------------------------------------------------------------------- workloads

def test_produce_only():
    doc = bench("produce", "--records", 5000, "--record-bytes", 64)
    assert doc["workload"] == "produce"
    assert_counts(doc, 5000)
    assert doc["records_read"] == 0 and doc["latency_us"] is None
    assert doc["bytes_sent"] == 5000 * 64
    assert len(doc["cpu_pct"]["producers"]) == 1 and doc["cpu_pct"]["consumers"] == []


def test_consume_batch_api_with_compression():
    doc = bench("consume", "--records", 8000, "--api", "batch", "--compression", "lz4", "--partitions", 2,
                "--consumers", 2)
    assert_counts(doc, 8000)
    assert doc["config"]["compression"] == "lz4" and doc["config"]["api"] == "batch"
    assert len(doc["cpu_pct"]["consumers"]) == 2


def test_e2e_several_producers_and_consumers_acks_all():
    doc = bench("e2e", "--records", 20000, "--partitions", 2, "--producers", 2, "--consumers", 2, "--acks", "all")
    assert_counts(doc, 20000)
    # Throughput runs sample latency: one record in STAMP_EVERY of each consumer's 10,000.
    assert_latency(doc, samples_at_least=2 * (10000 // bm.STAMP_EVERY))
    assert doc["config"]["acks"] == "all"
    assert doc["seconds"] >= doc["producer_seconds"] * 0.5   # end to end spans the producers' run


def test_e2e_fanout_every_consumer_reads_every_record():
    doc = bench("e2e", "--records", 5000, "--partitions", 2, "--consumers", 3, "--fanout")
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["records_sent"] == doc["records_in_log"] == 5000
    assert doc["records_read"] == 3 * 5000


def test_e2e_for_a_duration():
    doc = bench("e2e", "--duration", 0.5, "--api", "batch")
    assert doc["ok"] is True and doc["config"]["records"] is None
    assert doc["records_sent"] > 0
    assert doc["records_sent"] == doc["records_in_log"] == doc["records_read"]


@pytest.mark.parametrize("wait", ["busy", "blocking"])
def test_latency(wait):
    doc = bench("latency", "--records", 2000, "--rate", 4000, "--wait", wait)
    assert_counts(doc, 2000)
    assert doc["config"]["wait"] == wait and doc["config"]["rate_per_s"] == 4000
    assert_latency(doc, samples_at_least=2000 - bm.LATENCY_WARMUP_RECORDS)


@pytest.mark.parametrize("value_format,api", [("struct", "record"), ("json", "batch")])
def test_trades_keep_per_key_order(value_format, api):
    doc = bench("trades", "--records", 10000, "--value-format", value_format, "--api", api)
    assert_counts(doc, 10000)
    assert doc["config"]["partitions"] == 8 and doc["config"]["producers"] == 2
    assert_latency(doc, samples_at_least=10000)


def test_against_a_running_broker(tmp_path):
    data_dir = str(tmp_path / "data")
    try:
        ok(shmlog_cli("broker", "start", "--data-dir", data_dir, "--config", "ring.bytes=1048576"))
        result = ok(shmlog_cli("bench", "e2e", "--records", 5000, "--bootstrap", data_dir, "--json",
                               "--no-progress", timeout=BENCH_TIMEOUT_S))
        doc = json.loads(result.stdout)
        assert_counts(doc, 5000)
        assert doc["data_dir"] is None and doc["config"]["bootstrap"] == "shm://" + data_dir
        assert doc["cpu_pct"]["broker"] is not None
        topics = ok(shmlog_cli("topics", "list", "--data-dir", data_dir)).stdout.split()
        assert doc["topic"] not in topics, "the bench topic is deleted afterwards"
    finally:
        shmlog_cli("broker", "stop", "--data-dir", data_dir)
        left = leftovers(data_dir)
        for name in left:
            shm.unlink(name)
    assert not left


def test_acks_all_producers_wait_for_room_when_the_persister_lags(tmp_path):
    """A persister that lags fills the producer's local queue (acks=all records wait for its
    fsync; the bench's ring, sized to the run, is larger than the 32 MiB buffer.memory):
    produce() raises BufferError, and the bench serves reports with poll(1) and retries
    instead of dying (`shmlog bench e2e -n 2000000 -s 2048 --acks all` did). The lag is made
    certain: the persister is stopped until the log holds more than the queue can, then for
    half a second more."""
    data_dir = str(tmp_path / "data")
    records, record_bytes = 40000, 2048
    queue_records = 32 * 2**20 // record_bytes             # what buffer.memory (32 MiB) holds, about
    persister = bench_proc = None
    try:
        ok(shmlog_cli("broker", "start", "--data-dir", data_dir))
        persister = psutil.Process(launcher.status(data_dir)["persister_pid"])
        persister.suspend()
        bench_proc = shmlog_popen("bench", "e2e", "--records", records, "--record-bytes", record_bytes,
                                  "--acks", "all", "--bootstrap", data_dir, "--json", "--no-progress")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and bench_proc.poll() is None:
            ends = [p["log_end_offset"] for p in launcher.status(data_dir)["partitions"]
                    if p["topic"].startswith("bench-")]
            if ends and sum(ends) >= queue_records * 0.95:
                break
            time.sleep(0.02)
        time.sleep(0.5)               # the producer's queue is full by now: it waits in poll(1)
        persister.resume()
        out, err = bench_proc.communicate(timeout=BENCH_TIMEOUT_S)
        assert "BufferError" not in err and "Traceback" not in err
        assert bench_proc.returncode == 0, err
        doc = json.loads(out)
        assert_counts(doc, records)
        assert doc["latency_us"]["max_us"] > 400_000, "records waited for the stopped persister"
    finally:
        if persister is not None and persister.is_running():
            persister.resume()
        if bench_proc is not None and bench_proc.poll() is None:
            bench_proc.kill()
            bench_proc.communicate()
        shmlog_cli("broker", "stop", "--data-dir", data_dir)
        left = leftovers(data_dir)
        for name in left:
            shm.unlink(name)
    assert not left


def test_table_output_and_progress_to_stderr():
    result = ok(shmlog_cli("bench", "produce", "--records", 3000, timeout=BENCH_TIMEOUT_S))
    out = result.stdout
    assert out.startswith("shmlog bench produce: 3,000 records of 100 B")
    assert "records/s" in out and "MB/s" in out and "check: OK" in out
    assert "produce: running" in result.stderr          # the progress bar's label (stderr is not a tty)


def test_no_broker_at_bootstrap(tmp_path):
    result = shmlog_cli("bench", "produce", "--records", 10, "--bootstrap", str(tmp_path / "none"), "--no-progress")
    assert result.returncode == 1
    assert result.stderr.startswith("shmlog: error: bench produce:") and "\n" == result.stderr[-1]


# ---------------------------------------------------------------------------- bad options

@pytest.mark.parametrize("args,option", [
    (["e2e", "--records", "0"], "--records"),
    (["e2e", "--records", "many"], "--records"),
    (["e2e", "--records", "10", "--duration", "1"], "--records"),
    (["e2e", "--duration", "-1"], "--duration"),
    (["e2e", "--record-bytes", "8"], "--record-bytes"),
    (["trades", "--record-bytes", "30"], "--record-bytes"),
    (["e2e", "--partitions", "2", "--consumers", "3"], "--consumers"),
    (["produce", "--consumers", "1"], "--consumers"),
    (["e2e", "--acks", "2"], "--acks"),
    (["e2e", "--compression", "brotli"], "--compression"),
    (["e2e", "--api", "bulk"], "--api"),
    (["latency", "--wait", "spin"], "--wait"),
    (["latency", "--rate", "0"], "--rate"),
    (["consume", "--duration", "1"], "--duration"),
    (["e2e", "--bootstrap", "tcp://localhost:9092"], "--bootstrap"),
    (["fanout"], "WORKLOAD"),
])
def test_bad_option_is_a_usage_error_naming_it(args, option):
    result = shmlog_cli("bench", *args, "--no-progress", env=cli_env())
    assert result.returncode == 2, result.stderr
    assert option in result.stderr and result.stderr.startswith("shmlog bench: error:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


# ---------------------------------------------------------------------------- the parts, in process

def test_histogram_percentiles_match_numpy_within_a_thousandth():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.integers(0, 2000, 1000), rng.lognormal(11, 1.5, 50_000).astype(np.int64)])
    h = bm.LatencyHistogram()
    h.record_values(values[:30_000])
    other = bm.LatencyHistogram.from_wire(_wire_of(values[30_000:]))
    h.merge(other)
    assert h.total == len(values) and h.max_value == values.max() and h.min_value == values.min()
    exact = np.sort(values)
    for q in (50, 90, 99, 99.9):
        want = exact[int(np.ceil(len(values) * q / 100)) - 1]
        got = h.value_at_percentile(q)
        assert want <= got <= want * (1 + 1 / 1024) + 1
    assert h.value_at_percentile(100) == values.max()
    assert bm.LatencyHistogram().summary_us() is None


def _wire_of(values):
    h = bm.LatencyHistogram()
    h.record_values(values)
    return h.to_wire()


def test_sequence_check_reports_gaps_reordering_and_duplicates():
    config = bm.BenchConfig("e2e", records=10).resolved()
    job = bm.Job("consumer", 0, config, "t", "shm:///nowhere", partitions=(0,))
    check = bm.SequenceCheck(job)
    value = lambda seq: bm.HEADER.pack(0, 0, seq, 0) + b"x" * 76   # noqa: E731
    for offset, seq in [(0, 0), (1, 1), (3, 2), (4, 4), (5, 4)]:   # offset gap, seq gap, seq duplicate
        check.record(0, offset, None, value(seq), 1)
    problems = check.report()
    assert len(problems) == 3, problems
    assert "offset 3 where 2 was next" in problems[0]
    assert "sequence number 4 where 3 was next" in problems[1]
    assert "sequence number 4 where 5 was next" in problems[2]


def test_a_child_error_is_reported_in_one_line():
    def raised(exc):
        try:
            raise exc
        except BaseException as caught:
            return bm.error_line(caught)
    from shmlog.errors import KafkaError, KafkaException
    assert raised(bm.BenchError("stopped\n  before the start")) == "stopped before the start"
    assert raised(BufferError("local queue full")) == "BufferError: local queue full"
    line = raised(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "not fsynced")))
    assert line.startswith("KafkaException: ") and "not fsynced" in line and "\n" not in line
    line = raised(ValueError("bad\nvalue"))
    assert line.startswith("ValueError: bad value (at test_cli_bench.py:") and "in raised)" in line


def test_counts_that_disagree_fail_the_run():
    config = bm.BenchConfig("e2e", records=100).resolved()
    result = bm.BenchResult(config, "t", records_sent=100, records_in_log=100, records_read=99)
    result.problems.extend(bm.count_problems(result))
    assert not result.ok
    assert result.problems == ["read 99 records of the 100 in the log"]
    assert "check: FAILED - read 99 records" in bm.format_table(result)


def test_bulk_sequence_check_names_the_same_problems_as_the_per_record_check():
    config = bm.BenchConfig("e2e", records=10).resolved()
    job = bm.Job("consumer", 0, config, "t", "shm:///nowhere", partitions=(0,))
    check = bm.SequenceCheck(job)
    value = lambda seq: bm.HEADER.pack(0, 0, seq, 5) + b"x" * 76   # noqa: E731
    check.chunk(0, [value(s) for s in (0, 1, 2)], [(2, 9)])
    assert check.report() == [] and check.count == 3 and check.next_seq[(0, 0, 0)] == 3
    check.chunk(0, [value(s) for s in (4, 4)] + [b"short"], [])
    problems = check.report()
    assert len(problems) == 3, problems
    assert "sequence number 4 where 3 was next" in problems[0]
    assert "sequence number 4 where 5 was next" in problems[1]
    assert "a value of 5 bytes, not 100" in problems[2]
    assert check.count == 6
    assert [list(x) for x in check.latencies] == [[4]]
