"""The `shmlog` command, run as a real subprocess against a real broker.

Each test has its own data dir under tmp_path (so its own /dev/shm namespace and control
socket, safe under xdist), stops every broker it started in a finally, and checks that
nothing of its namespace is left in /dev/shm.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shmlog._native import shm
from tests.conftest import broker_processes

REPO = Path(__file__).resolve().parents[2]
RING = "ring.bytes=1048576"  # 1 MiB rings keep /dev/shm small
RUN_TIMEOUT_S = 60


def cli_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "SHMLOG_DATA_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def shmlog_cli(*args, input=None, env=None, timeout=RUN_TIMEOUT_S):
    return subprocess.run([sys.executable, "-m", "shmlog.cli", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env or cli_env())


def shmlog_popen(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "shmlog.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=cli_env(), **kwargs)


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result


def leftovers(data_dir):
    return shm.names_in_namespace(shm.namespace(data_dir))


@pytest.fixture
def data_dir(tmp_path):
    """A data dir of this test alone; whatever broker runs for it is stopped at the end."""
    d = str(tmp_path / "data")
    try:
        yield d
    finally:
        try:
            shmlog_cli("broker", "stop", "--data-dir", d)  # fails harmlessly when none runs
        except subprocess.TimeoutExpired:
            pass    # a stop that hangs (a loaded machine, a broken test) still ends in the kills below
        procs = broker_processes(d)
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        left = leftovers(d)
        for name in left:
            shm.unlink(name)
        assert not procs, f"broker processes left running: {procs}"
        assert not left, f"shared memory left behind: {left}"


@pytest.fixture
def broker(data_dir):
    """A daemon broker started with `shmlog broker start`; yields its data dir."""
    ok(shmlog_cli("broker", "start", "--data-dir", data_dir, "--config", RING))
    return data_dir


def status(data_dir):
    return json.loads(ok(shmlog_cli("broker", "status", "--data-dir", data_dir, "--json")).stdout)


def wait_for_consumer(data_dir, timeout_s=30.0):
    """Until the broker has a registered consumer client (the CLI's consumer is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(c["kind"] == "consumer" for c in status(data_dir)["clients"]):
            return
        time.sleep(0.05)
    raise AssertionError("the consumer never registered with the broker")


def one_line_error(result):
    """The failure was reported as one line on stderr, without a traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------------------- broker

def test_broker_start_status_and_stop_round_trip(data_dir):
    started = ok(shmlog_cli("broker", "start", "--data-dir", data_dir, "--config", RING))
    real = os.path.realpath(data_dir)
    assert f"bootstrap.servers=shm://{real}" in started.stdout
    pid = int(started.stdout.split("pid ")[1].split()[0])
    assert psutil.pid_exists(pid)

    table = ok(shmlog_cli("broker", "status", "--data-dir", data_dir)).stdout
    assert f"pid {pid}" in table

    stopped = ok(shmlog_cli("broker", "stop", "--data-dir", data_dir))
    assert f"pid {pid}" in stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert leftovers(data_dir) == []
    after = shmlog_cli("broker", "status", "--data-dir", data_dir)
    assert "no shmlog broker is running" in one_line_error(after)


def test_broker_status_json_has_offsets_of_every_partition(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 2, "--data-dir", broker))
    ok(shmlog_cli("produce", "orders", "--data-dir", broker, "--partition", 1, input="a\nb\nc\n"))
    st = status(broker)
    assert st["pid"] > 0 and st["persister_pid"] > 0
    parts = {(p["topic"], p["partition"]): p for p in st["partitions"]}
    assert set(parts) == {("orders", 0), ("orders", 1)}
    assert parts[("orders", 1)]["log_end_offset"] == 3
    assert parts[("orders", 1)]["flushed_offset"] == 3  # default acks=all: fsynced before delivery
    assert parts[("orders", 0)]["log_end_offset"] == 0


def test_broker_status_table_shows_log_offsets_persisted_offset_and_ring_fill(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    ok(shmlog_cli("produce", "orders", "--data-dir", broker, input="x\ny\n"))
    out = ok(shmlog_cli("broker", "status", "--data-dir", broker)).stdout.splitlines()
    header = next(line for line in out if line.startswith("TOPIC"))
    for column in ("LOG-START", "LOG-END", "PERSISTED", "RING-FILL"):
        assert column in header
    row = next(line for line in out if line.startswith("orders")).split()
    assert row[:5] == ["orders", "0", "0", "2", "2"]
    assert row[header.split().index("RING-FILL")].endswith("%")


def test_starting_a_second_broker_for_the_same_data_dir_fails_clearly(broker):
    again = shmlog_cli("broker", "start", "--data-dir", broker)
    assert "already running" in one_line_error(again)
    assert again.returncode == 1


def test_broker_start_with_an_unknown_config_key_names_the_key(data_dir):
    result = shmlog_cli("broker", "start", "--data-dir", data_dir, "--config", "no.such.key=1")
    assert "no.such.key" in one_line_error(result)
    assert leftovers(data_dir) == []


# ---------------------------------------------------------------------------- topics

def test_topics_create_then_list_shows_the_topic(broker):
    created = ok(shmlog_cli("topics", "create", "orders", "--partitions", 3, "--data-dir", broker))
    assert "orders" in created.stdout
    ok(shmlog_cli("topics", "create", "audit", "--partitions", 1, "--data-dir", broker))
    assert ok(shmlog_cli("topics", "list", "--data-dir", broker)).stdout.split() == ["audit", "orders"]


def test_topics_describe_shows_partitions_and_configs(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 3, "--config", "retention.ms=60000",
                  "--data-dir", broker))
    out = ok(shmlog_cli("topics", "describe", "orders", "--data-dir", broker)).stdout
    assert "Topic orders: 3 partitions" in out
    partition_rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"])]
    assert [r[0] for r in partition_rows] == ["0", "1", "2"]
    configs = dict((k.strip(), v) for k, v in (line.split(" = ", 1) for line in out.splitlines() if " = " in line))
    assert configs["retention.ms"] == "60000"
    assert configs["cleanup.policy"] == "delete"


def test_topics_delete_removes_the_topic(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 2, "--data-dir", broker))
    deleted = ok(shmlog_cli("topics", "delete", "orders", "--data-dir", broker))
    assert "deleted topic orders" in deleted.stdout
    assert ok(shmlog_cli("topics", "list", "--data-dir", broker)).stdout.split() == []
    assert [n for n in leftovers(broker) if "doorbell" not in n] == []


def test_topics_commands_take_the_name_as_kafka_topics_does_with_dash_dash_topic(broker):
    ok(shmlog_cli("topics", "create", "--topic", "orders", "--partitions", 2, "--data-dir", broker))
    assert "Topic orders: 2 partitions" in ok(shmlog_cli("topics", "describe", "--topic", "orders",
                                                         "--data-dir", broker)).stdout
    ok(shmlog_cli("topics", "alter", "--topic", "orders", "--partitions", 3, "--data-dir", broker))
    deleted = ok(shmlog_cli("topics", "delete", "--topic", "orders", "--data-dir", broker))
    assert "deleted topic orders" in deleted.stdout


def test_two_different_topic_names_or_none_are_refused_naming_what_was_wrong(broker):
    both = shmlog_cli("topics", "create", "a", "--topic", "b", "--partitions", 1, "--data-dir", broker)
    assert both.returncode == 2 and "two topic names: 'a' and --topic 'b'" in both.stderr
    neither = shmlog_cli("topics", "delete", "--data-dir", broker)
    assert neither.returncode == 2 and "give the topic: NAME or --topic NAME" in neither.stderr
    assert ok(shmlog_cli("topics", "list", "--data-dir", broker)).stdout.split() == []


def test_creating_a_topic_that_exists_prints_the_error_and_exits_1(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    again = shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker)
    assert "already exists" in one_line_error(again)
    assert again.returncode == 1


def test_a_broker_refusal_is_shown_as_its_reason_without_the_kafka_error_wrapping(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    line = one_line_error(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    assert line.startswith("shmlog: error: ") and "already exists" in line
    assert "KafkaError{" not in line and "code=" not in line, line


def test_describing_an_unknown_topic_exits_1(broker):
    result = shmlog_cli("topics", "describe", "nope", "--data-dir", broker)
    assert "nope" in one_line_error(result)
    assert result.returncode == 1


# ---------------------------------------------------------------------------- produce and consume

def test_produced_lines_with_key_separator_and_headers_consume_from_beginning_with_key_partition_offset(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    produced = ok(shmlog_cli("produce", "orders", "--data-dir", broker, "--key-separator", ":",
                             "--header", "source=cli", "--header", "v=2", input="k1:v1\nk2:a:b\nnokey\n"))
    assert "delivered 3 records" in produced.stderr
    consumed = ok(shmlog_cli("consume", "orders", "--data-dir", broker, "--from-beginning", "--max-messages", 3,
                             "--format", r"{partition}/{offset}\t{key}\t{value}\t{headers}"))
    assert consumed.stdout.splitlines() == [
        "0/0\tk1\tv1\tsource=cli,v=2",
        "0/1\tk2\ta:b\tsource=cli,v=2",
        "0/2\t\tnokey\tsource=cli,v=2",
    ]


def test_consume_exits_after_max_messages(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 2, "--data-dir", broker))
    ok(shmlog_cli("produce", "orders", "--data-dir", broker, input="".join(f"r{i}\n" for i in range(10))))
    consumed = ok(shmlog_cli("consume", "orders", "--data-dir", broker, "--from-beginning", "--max-messages", 4))
    lines = consumed.stdout.splitlines()
    assert len(lines) == 4
    assert set(lines) <= {f"r{i}" for i in range(10)}


def test_consume_with_a_timeout_exits_0_when_idle(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    ok(shmlog_cli("produce", "orders", "--data-dir", broker, input="a\nb\n"))
    started = time.monotonic()
    consumed = ok(shmlog_cli("consume", "orders", "--data-dir", broker, "--from-beginning", "--timeout", 0.5))
    assert consumed.stdout.splitlines() == ["a", "b"]
    assert time.monotonic() - started < 30


def test_consume_offset_starts_at_that_offset_of_the_partition(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    ok(shmlog_cli("produce", "orders", "--data-dir", broker, input="a\nb\nc\nd\n"))
    consumed = ok(shmlog_cli("consume", "orders", "--data-dir", broker, "--offset", 2, "--timeout", 0.3,
                             "--format", "{offset}={value}"))
    assert consumed.stdout.splitlines() == ["2=c", "3=d"]


def test_consume_by_default_prints_only_records_produced_after_it_started(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    ok(shmlog_cli("produce", "orders", "--data-dir", broker, input="old\n"))
    consumer = shmlog_popen("consume", "orders", "--data-dir", broker, "--max-messages", 1, "--timeout", 30)
    try:
        wait_for_consumer(broker)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while consumer.poll() is None and time.monotonic() < deadline:
            # Keep producing until it prints one: however late it reaches the end, it sees a "new".
            ok(shmlog_cli("produce", "orders", "--data-dir", broker, input="new\n"))
            time.sleep(0.2)
        out, err = consumer.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        consumer.kill()
        consumer.wait()
    assert consumer.returncode == 0, err
    assert out.splitlines() == ["new"]


def test_ctrl_c_stops_consume_quietly_with_exit_0(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    consumer = shmlog_popen("consume", "orders", "--data-dir", broker)
    try:
        wait_for_consumer(broker)
        consumer.send_signal(signal.SIGINT)
        out, err = consumer.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        consumer.kill()
        consumer.wait()
    assert consumer.returncode == 0
    assert err == ""


def test_an_unknown_format_field_is_a_usage_error(broker):
    result = shmlog_cli("consume", "orders", "--data-dir", broker, "--format", "{nope}")
    assert "{nope}" in one_line_error(result)
    assert result.returncode == 2


def test_produce_to_a_missing_broker_prints_a_clear_error_and_exits_non_zero(data_dir):
    result = shmlog_cli("produce", "orders", "--data-dir", data_dir, input="a\n")
    line = one_line_error(result)
    assert "no shmlog broker is running" in line and os.path.realpath(data_dir) in line


def test_the_data_dir_can_come_from_SHMLOG_DATA_DIR(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 1, "--data-dir", broker))
    listed = ok(shmlog_cli("topics", "list", env=cli_env(SHMLOG_DATA_DIR=broker)))
    assert listed.stdout.split() == ["orders"]


def test_a_command_without_a_data_dir_says_which_option_is_missing():
    result = shmlog_cli("topics", "list")
    assert "--data-dir" in one_line_error(result)
    assert result.returncode == 2


# ---------------------------------------------------------------------------- cleanup

def make_stale_object(data_dir, suffix="stale"):
    name = f"/{shm.PREFIX}{shm.namespace(data_dir)}.{suffix}"
    shm.Mapping.create(name, 4096).close()
    return name


def test_cleanup_removes_a_stale_object_of_the_data_dir(data_dir):
    name = make_stale_object(data_dir)
    assert leftovers(data_dir) == [name]
    result = ok(shmlog_cli("cleanup", "--data-dir", data_dir))
    assert f"removed {name}" in result.stdout
    assert leftovers(data_dir) == []


def test_cleanup_removes_what_a_killed_broker_left_behind(broker):
    ok(shmlog_cli("topics", "create", "orders", "--partitions", 2, "--data-dir", broker))
    st = status(broker)
    # The keeper first: it would start the supervisor again.
    procs = [psutil.Process(st["keeper_pid"]), psutil.Process(st["pid"]), psutil.Process(st["persister_pid"])]
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=30)  # gone, or a zombie until init reaps it
    assert len(leftovers(broker)) == 3  # doorbell + two rings, now owned by nobody
    result = ok(shmlog_cli("cleanup", "--data-dir", broker))
    assert "removed 3 shared-memory objects" in result.stdout
    assert leftovers(broker) == []


def test_cleanup_refuses_while_the_data_dirs_broker_runs(broker):
    result = shmlog_cli("cleanup", "--data-dir", broker)
    assert "running" in one_line_error(result)
    assert result.returncode == 1
    assert any(n.endswith(".doorbell") for n in leftovers(broker))  # the broker's objects are untouched


def test_cleanup_without_a_data_dir_lists_stale_objects_and_removes_nothing(data_dir):
    name = make_stale_object(data_dir)
    result = ok(shmlog_cli("cleanup"))
    assert name in result.stdout
    assert f"namespace {shm.namespace(data_dir)}" in result.stdout
    assert leftovers(data_dir) == [name]
    shm.unlink(name)


def test_cleanup_without_a_data_dir_shows_which_namespace_has_a_running_broker(broker):
    result = ok(shmlog_cli("cleanup"))
    header = next(line for line in result.stdout.splitlines()
                  if line.startswith(f"namespace {shm.namespace(broker)}:"))
    assert f"broker running: pid {status(broker)['pid']}, data dir {os.path.realpath(broker)}" in header


def test_cleanup_all_without_force_is_refused(data_dir):
    name = make_stale_object(data_dir)
    result = shmlog_cli("cleanup", "--all")
    assert "--force" in one_line_error(result)
    assert leftovers(data_dir) == [name]
    shm.unlink(name)
