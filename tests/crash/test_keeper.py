"""The keeper (shmlog/broker/keeper.py) brings a SIGKILLed supervisor back by itself, in the
embedded and the daemon form, while producers and consumers in other processes carry on; a
killed keeper leaves the supervisor serving; a clean stop is never mistaken for a crash.
Real processes, real SIGKILL."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import shmlog
from shmlog import TopicPartition
from shmlog.broker import launcher
from shmlog.errors import KafkaException
from tests.conftest import broker_processes, create_topic

pytestmark = [pytest.mark.crash, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
RESTART_WITHIN_S = 1.0   # the keeper's promise: a supervisor answering again within a second
ANSWER_WITHIN_S = 30.0   # how long to wait for it before calling it a failure, not a slow answer
TOPIC = "load"
PARTITIONS = 2


def wait_for(check, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.005)


def answering_pid(data_dir):
    try:
        return launcher.status(data_dir)["pid"]
    except (KafkaException, OSError):
        return None


def standby_waiting(data_dir, keeper_pid):
    """The keeper's warm standby is imported and waiting for the lock (it has supervisor.lock open)."""
    active = answering_pid(data_dir)
    lock = os.path.join(os.path.realpath(data_dir), "supervisor.lock")
    for child in psutil.Process(keeper_pid).children():
        try:
            if child.pid != active and any(f.path == lock for f in child.open_files()):
                return True
        except psutil.Error:
            pass
    return False


def kill_supervisor_and_wait_for_the_next(data_dir, keeper_pid):
    """SIGKILL the supervisor; assert the keeper's next one (its warm standby, or a new process)
    answers control requests within RESTART_WITHIN_S."""
    wait_for(lambda: standby_waiting(data_dir, keeper_pid), ANSWER_WITHIN_S, "the keeper's standby")
    old = launcher.status(data_dir)["pid"]
    children = {p.pid for p in psutil.Process(keeper_pid).children()}
    assert old in children
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    new = wait_for(lambda: answering_pid(data_dir) not in (None, old), ANSWER_WITHIN_S, "a new supervisor answering")
    new = answering_pid(data_dir)
    took = time.monotonic() - killed
    print(f"supervisor {old} SIGKILLed; {new} answering after {took:.2f} s")
    assert new in {p.pid for p in psutil.Process(keeper_pid).children()}
    assert took < RESTART_WITHIN_S, f"the broker took {took:.2f} s to answer again"
    return new


# ---------------------------------------------------------------------------- load in other processes

def producer_main(bootstrap, stop, acked_count, out):
    """Produce acks=all until told to stop; send back (value, partition, offset) of every ack."""
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1,
                         "message.timeout.ms": 60000})
    acked = []

    def report(err, msg):
        if err is None:
            acked.append((msg.value().decode(), msg.partition(), msg.offset()))
            acked_count.value = len(acked)

    i = 0
    while not stop.is_set():
        try:
            p.produce(TOPIC, b"%d" % i, key=b"%d" % (i % 7), on_delivery=report)
            i += 1
        except BufferError:
            p.poll(0.05)
            continue
        p.poll(0)
        if i % 50 == 0:
            p.poll(0.005)
    left = p.flush(60)
    p.close()
    out.put((acked, left))


def consumer_main(bootstrap, stop, seen_count, out):
    """A group member: consume and commit until told to stop; send back what it saw."""
    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "readers", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    c.subscribe([TOPIC])
    seen, errors, last_seen = [], [], {}
    committed = False
    # After the stop, go on until one commit covers everything seen: a member whose supervisor
    # was replaced rejoins the group first (its old generation is unknown to the new
    # coordinator), and commits fail until then, as Kafka's do with ILLEGAL_GENERATION.
    deadline = None
    while not (stop.is_set() and committed):
        if stop.is_set():
            deadline = deadline or time.monotonic() + 60
            if time.monotonic() > deadline:
                break
        for m in c.consume(500, timeout=0.1):
            if m.error() is None:
                seen.append((m.value().decode(), m.partition(), m.offset()))
                last_seen[m.partition()] = max(last_seen.get(m.partition(), -1), m.offset())
        seen_count.value = len(seen)
        committed = False
        if seen:
            try:
                done = c.commit(asynchronous=False)
            except KafkaException as exc:
                errors.append(str(exc))
            else:
                # A member that lost its partitions in the restart resumes from the last commit,
                # so a commit right after the rejoin can lie behind what was seen before it.
                at = {tp.partition: tp.offset for tp in done}
                committed = all(at.get(p, -1) > o for p, o in last_seen.items())
    assignment = [(tp.topic, tp.partition) for tp in c.assignment()]
    c.close()
    out.put((seen, errors, assignment))


def read_everything(bootstrap):
    """Every record of the topic, from the log: {(partition, offset): value}."""
    c = shmlog.Consumer({"bootstrap.servers": bootstrap})
    got = {}
    for p in range(PARTITIONS):
        low, high = c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
        c.assign([TopicPartition(TOPIC, p, shmlog.OFFSET_BEGINNING)])
        deadline = time.monotonic() + 60
        while sum(1 for k in got if k[0] == p) < high - low:
            assert time.monotonic() < deadline, f"{TOPIC}-{p}: read {len(got)} of {high - low}"
            for m in c.consume(1000, timeout=0.2):
                got[(m.partition(), m.offset())] = m.value().decode()
    c.close()
    return got


def run_load_through_a_supervisor_kill(data_dir, bootstrap, keeper_pid):
    """Producer and group consumer processes run; the supervisor is SIGKILLed under them; both
    must make progress afterwards. Returns what the producer had acknowledged."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    acked_count, seen_count = ctx.Value("i", 0), ctx.Value("i", 0)
    produced, consumed = ctx.Queue(), ctx.Queue()
    producer = ctx.Process(target=producer_main, args=(bootstrap, stop, acked_count, produced))
    consumer = ctx.Process(target=consumer_main, args=(bootstrap, stop, seen_count, consumed))
    producer.start()
    consumer.start()
    try:
        wait_for(lambda: acked_count.value > 500 and seen_count.value > 200, 60, "load before the kill")
        kill_supervisor_and_wait_for_the_next(data_dir, keeper_pid)
        acked_then, seen_then = acked_count.value, seen_count.value
        wait_for(lambda: acked_count.value > acked_then + 500, 60, "the producer carrying on")
        wait_for(lambda: seen_count.value > seen_then + 500, 60, "the consumer carrying on")
        stop.set()
        acked, unsent = produced.get(timeout=90)
        seen, errors, assignment = consumed.get(timeout=90)
        producer.join(30)
        consumer.join(30)
    finally:
        stop.set()
        for proc in (producer, consumer):
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert producer.exitcode == 0 and consumer.exitcode == 0
    assert unsent == 0
    # The group kept working: the member holds every partition and its commits went through
    # once the new supervisor was up (a commit during the restart may fail; later ones succeed).
    assert sorted(assignment) == [(TOPIC, p) for p in range(PARTITIONS)]
    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "readers"})
    committed = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
    c.close()
    last_seen = {}
    for _, p, offset in seen:
        last_seen[p] = max(last_seen.get(p, -1), offset)
    assert {tp.partition: tp.offset for tp in committed} == {p: o + 1 for p, o in last_seen.items()}, errors
    return acked


def assert_every_acknowledged_record_once(bootstrap, acked):
    log = read_everything(bootstrap)
    values = list(log.values())
    assert len(values) == len(set(values)), "a record is in the log more than once"
    missing = [a for a in acked if log.get((a[1], a[2])) != a[0]]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged records are not at their offsets: {missing[:5]}"


# ---------------------------------------------------------------------------- embedded

def test_a_sigkilled_supervisor_is_back_within_a_second_and_clients_lose_nothing(data_dir):
    with shmlog.Broker(data_dir, ring_bytes=1 << 20) as b:
        admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        create_topic(admin, TOPIC, PARTITIONS)
        admin.close()
        acked = run_load_through_a_supervisor_kill(data_dir, b.bootstrap_servers, b.process.pid)
        assert b.process.poll() is None
    assert b.process is None
    assert not broker_processes(data_dir)
    with shmlog.Broker(data_dir) as b:   # and on disk, after a clean stop and a restart
        assert_every_acknowledged_record_once(b.bootstrap_servers, acked)


def test_one_persister_runs_after_the_supervisor_is_killed_and_the_old_one_exits(data_dir):
    with shmlog.Broker(data_dir) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        p = shmlog.Producer({**conf, "acks": "all"})
        p.produce("t", b"before")
        assert p.flush(30) == 0
        old = psutil.Process(launcher.status(data_dir)["persister_pid"])
        kill_supervisor_and_wait_for_the_next(data_dir, b.process.pid)
        old.wait(30)   # it notices its supervisor went, drains and exits: not orphaned
        persisters = wait_for(lambda: [x for x in broker_processes(data_dir)
                                       if "shmlog.broker.persister" in x.info["cmdline"]], 30, "a new persister")
        assert len(persisters) == 1 and persisters[0].pid == launcher.status(data_dir)["persister_pid"]
        p.produce("t", b"after")            # acks=all: the new persister writes it
        assert p.flush(30) == 0
        p.close()


def test_a_supervisor_killed_again_and_again_keeps_coming_back(data_dir):
    with shmlog.Broker(data_dir) as b:
        p = shmlog.Producer({"bootstrap.servers": b.bootstrap_servers, "acks": 1})
        for i in range(3):
            kill_supervisor_and_wait_for_the_next(data_dir, b.process.pid)
            p.produce("again", b"%d" % i)
            assert p.flush(30) == 0
        p.close()


def test_a_clean_stop_is_not_restarted_and_leaves_no_process(data_dir):
    b = shmlog.Broker(data_dir).start()
    keeper = b.process
    b.stop()
    assert keeper.returncode == 0
    assert not broker_processes(data_dir)


def test_a_killed_keeper_leaves_the_supervisor_serving_and_a_stop_still_works(data_dir, capfd):
    b = shmlog.Broker(data_dir).start()
    try:
        sup = launcher.status(data_dir)["pid"]
        wait_for(lambda: standby_waiting(data_dir, b.process.pid), ANSWER_WITHIN_S, "the keeper's standby")
        b.process.kill()
        b.process.wait()
        # Its standby dies with it (it must never start a broker of its own later).
        wait_for(lambda: [p.pid for p in broker_processes(data_dir) if "shmlog.broker.supervisor" in p.info["cmdline"]]
                 == [sup], 10, "the standby gone")
        # The supervisor notices its keeper is gone, says so and serves on.
        wait_for(lambda: launcher.status(data_dir)["keeper_pid"] is None, 10, "the supervisor noticing")
        seen = ""
        deadline = time.monotonic() + 10
        while "serving on without one" not in seen and time.monotonic() < deadline:
            seen += capfd.readouterr().err
            time.sleep(0.05)
        assert "serving on without one" in seen
        p = shmlog.Producer({"bootstrap.servers": b.bootstrap_servers, "acks": "all"})
        p.produce("still", b"x")
        assert p.flush(30) == 0
        p.close()
        assert launcher.status(data_dir)["pid"] == sup
    finally:
        b.stop()   # the keeper is gone: over the control channel
    assert not broker_processes(data_dir)


# ---------------------------------------------------------------------------- daemon

def cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "SHMLOG_DATA_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-m", "shmlog.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_daemon_brings_a_sigkilled_supervisor_back_and_clients_lose_nothing(data_dir):
    cli("broker", "start", "--data-dir", data_dir, "--config", "ring.bytes=1048576")
    try:
        st = json.loads(cli("broker", "status", "--data-dir", data_dir, "--json"))
        keeper = st["keeper_pid"]
        assert keeper and st["pid"] in [c.pid for c in psutil.Process(keeper).children()]
        bootstrap = st["bootstrap_servers"]
        admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
        create_topic(admin, TOPIC, PARTITIONS)
        admin.close()
        acked = run_load_through_a_supervisor_kill(data_dir, bootstrap, keeper)
        stopped = cli("broker", "stop", "--data-dir", data_dir)
        assert "stopped shmlog broker" in stopped
        assert not psutil.pid_exists(keeper) or psutil.Process(keeper).status() == psutil.STATUS_ZOMBIE
        assert not broker_processes(data_dir)
        cli("broker", "start", "--data-dir", data_dir)
        assert_every_acknowledged_record_once(bootstrap, acked)
    finally:
        subprocess.run([sys.executable, "-m", "shmlog.cli", "broker", "stop", "--data-dir", data_dir],
                       capture_output=True, cwd=REPO, timeout=120)
        for proc in broker_processes(data_dir):
            proc.kill()
