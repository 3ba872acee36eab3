"""The broker's log file (DIR/supervisor.log of `shmlog broker start`) holds INFO lines for its
significant events: topic changes, group rebalances, clients attached and lost, persister restarts.
Real daemon, real client processes; every wait is for a condition, with a deadline."""
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

import shmlog
from shmlog import control
from shmlog.broker import launcher
from tests.conftest import broker_processes, create_topic, stop_leftover_broker

TIMEOUT_S = 60
RING = "ring.bytes=1048576"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) shmlog "
                  r"(supervisor|persister)\[\d+\]: ")


def shmlog_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "SHMLOG_DATA_DIR"}
    return subprocess.run([sys.executable, "-m", "shmlog.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=TIMEOUT_S)


@pytest.fixture
def daemon(data_dir):
    """A broker started with `shmlog broker start`; yields its data dir, stopped after the test."""
    started = shmlog_cli("broker", "start", "--data-dir", data_dir, "-X", RING,
                         "-X", "group.initial.rebalance.delay.ms=0")
    assert started.returncode == 0, started.stderr
    yield data_dir
    stopped = shmlog_cli("broker", "stop", "--data-dir", data_dir)
    assert stopped.returncode == 0, stopped.stderr
    stop_leftover_broker(data_dir)


def log_path(data_dir):
    return os.path.join(data_dir, "supervisor.log")


def wait_for_line(data_dir, *words, timeout_s=30.0):
    """The first line of the broker's log that holds every one of `words`, once there is one."""
    deadline = time.monotonic() + timeout_s
    while True:
        with open(log_path(data_dir), errors="replace") as f:
            for line in f:
                if all(w in line for w in words):
                    return line.rstrip("\n")
        if time.monotonic() > deadline:
            with open(log_path(data_dir), errors="replace") as f:
                text = f.read()
            raise AssertionError(f"no line with {words} in {log_path(data_dir)} within {timeout_s} s:\n{text[-4000:]}")
        time.sleep(0.05)


def info(line):
    match = LINE.match(line)
    assert match, f"not in the broker's log format: {line!r}"
    assert match.group(1) == "INFO", line
    return line


def conf_of(data_dir):
    return {"bootstrap.servers": control.SCHEME + os.path.realpath(data_dir)}


def test_a_topic_creation_is_logged_at_info(daemon):
    admin = shmlog.AdminClient(conf_of(daemon))
    try:
        create_topic(admin, "orders", partitions=3)
    finally:
        admin.close()
    line = info(wait_for_line(daemon, "created topic 'orders'"))
    assert "3 partitions" in line and "supervisor[" in line


def test_a_group_rebalance_is_logged_at_info(daemon):
    conf = conf_of(daemon)
    admin = shmlog.AdminClient(conf)
    try:
        create_topic(admin, "t", partitions=2)
    finally:
        admin.close()
    consumer = shmlog.Consumer({**conf, "group.id": "g1", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["t"])
        deadline = time.monotonic() + TIMEOUT_S
        while not consumer.assignment():
            assert time.monotonic() < deadline, "the consumer was never assigned its partitions"
            consumer.poll(0.1)
        started = info(wait_for_line(daemon, "group 'g1': rebalance started"))
        complete = info(wait_for_line(daemon, "group 'g1': rebalance complete"))
        assert "generation 1" in complete and "1 member" in complete, complete
        assert "generation 0" in started, started
    finally:
        consumer.close()


CLIENT = """
import sys, shmlog
producer = shmlog.Producer({"bootstrap.servers": sys.argv[1]})
producer.produce("events", b"x")
assert producer.flush(30) == 0
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_client_killed_with_sigkill_is_logged_as_lost(daemon):
    conf = conf_of(daemon)
    admin = shmlog.AdminClient(conf)
    try:
        create_topic(admin, "events")
    finally:
        admin.close()
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, conf["bootstrap.servers"]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        info(wait_for_line(daemon, f"client pid {proc.pid} (producer) attached"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT_S)
        proc.stdin.close()
        proc.stdout.close()
    info(wait_for_line(daemon, f"client pid {proc.pid} (producer) lost"))


def persister_of(data_dir):
    found = [p for p in broker_processes(data_dir) if "shmlog.broker.persister" in p.info["cmdline"]]
    return found[0] if len(found) == 1 else None


def test_a_persister_killed_with_sigkill_is_logged_and_restarted(daemon):
    deadline = time.monotonic() + TIMEOUT_S
    while (first := persister_of(daemon)) is None:
        assert time.monotonic() < deadline, "no persister is running"
        time.sleep(0.05)
    info(wait_for_line(daemon, f"started the persister: pid {first.pid}"))
    info(wait_for_line(daemon, f"persister[{first.pid}]", "started for"))
    first.send_signal(signal.SIGKILL)
    psutil.wait_procs([first], timeout=TIMEOUT_S)
    exited = wait_for_line(daemon, f"persister pid {first.pid} exited with -9", "killed by SIGKILL", "restarting")
    assert LINE.match(exited) and " WARNING " in exited, exited
    restarted = info(wait_for_line(daemon, "restarted the persister: pid"))
    second = int(re.search(r"restarted the persister: pid (\d+)", restarted).group(1))
    assert second != first.pid
    info(wait_for_line(daemon, f"persister[{second}]", "started for"))


def test_shmlog_log_level_warning_leaves_info_lines_out(data_dir):
    started = shmlog_cli("broker", "start", "--data-dir", data_dir, "-X", RING, "-X", "shmlog.log.level=WARNING")
    assert started.returncode == 0, started.stderr
    try:
        admin = shmlog.AdminClient(conf_of(data_dir))
        try:
            create_topic(admin, "quiet")
        finally:
            admin.close()
    finally:
        stopped = shmlog_cli("broker", "stop", "--data-dir", data_dir)
        assert stopped.returncode == 0, stopped.stderr
        stop_leftover_broker(data_dir)
    with open(log_path(data_dir)) as f:
        text = f.read()
    assert " INFO " not in text, text
    assert "created topic" not in text



def test_a_supervisor_killed_with_sigkill_is_taken_over_and_logged(daemon):
    old = psutil.Process(launcher.status(daemon)["pid"])
    old.send_signal(signal.SIGKILL)
    psutil.wait_procs([old], timeout=TIMEOUT_S)
    info(wait_for_line(daemon, f"taking over from supervisor pid {old.pid}, which died"))
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # the one that took over serves: the daemon stops cleanly after the test
        try:
            if launcher.status(daemon)["pid"] not in (None, old.pid):
                break
        except shmlog.KafkaException:
            pass
        assert time.monotonic() < deadline, "no supervisor serves after the takeover"
        time.sleep(0.05)
