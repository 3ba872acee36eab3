"""A broker that stops under running clients (docs/durability.md, "When the broker stops").

Producers and consumers run in their own processes while `with shmlog.Broker` exits or
`shmlog broker stop` runs. A stopping broker closes every ring (producers claim nothing more),
waits for claims in flight, drains everything published to disk, and only then unlinks the
shared memory. So a delivery report that says delivered names a record that is in the log, a
consumer never reads a record the log does not have, every other record gets an error report
(or is delivered by the broker that comes back within message.timeout.ms), and error_cb hears
_ALL_BROKERS_DOWN.
"""
import multiprocessing
import os
import signal
import subprocess
import sys

import psutil
import pytest

import shmlog
from shmlog._native import ffi, lib, shm
from shmlog._native.ring import Doorbell, Ring
from shmlog.broker.launcher import status
from shmlog.errors import KafkaError
from tests.conftest import create_topic

SPAWN = multiprocessing.get_context("spawn")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPIC = "orders"
DELIVERED_BEFORE_STOP = 2000     # records delivered before the broker is stopped under the producer
READ_BEFORE_STOP = 2000          # records a consumer read before the broker is stopped under it
EVENT_TIMEOUT_S = 60.0


def producer_role(bootstrap, going, outage, stop, results, message_timeout_ms):
    """Produces numbered records until `stop`, then flushes; reports what each report said."""
    delivered, failed, errors = {}, {}, []

    def on_error(err):
        errors.append(err.code())
        outage.set()

    def report(err, msg):
        if err is None:
            delivered[msg.value().decode()] = msg.offset()
            if len(delivered) >= DELIVERED_BEFORE_STOP:
                going.set()
        else:
            failed[msg.value().decode()] = err.code()

    p = shmlog.Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "message.timeout.ms": message_timeout_ms,
                         "error_cb": on_error, "on_delivery": report})
    n = 0
    while not stop.is_set():
        try:
            p.produce(TOPIC, value=str(n).encode())
            n += 1
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    left = p.flush(120)
    p.close()
    results.put({"produced": n, "delivered": delivered, "failed": failed, "errors": errors, "left": left})


def consumer_role(bootstrap, going, outage, stop, results, until):
    """Reads the topic from the beginning until `stop` is set, it has read `until.value` records
    and nothing more arrives."""
    got, errors = [], []

    def on_error(err):
        errors.append(err.code())
        outage.set()

    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "error_cb": on_error})
    c.assign([shmlog.TopicPartition(TOPIC, 0, shmlog.OFFSET_BEGINNING)])
    while True:
        msg = c.poll(0.2)
        if msg is None:
            if stop.is_set() and len(got) >= until.value:
                break
            continue
        assert msg.error() is None, msg.error()
        got.append((msg.offset(), msg.value().decode()))
        if len(got) >= READ_BEFORE_STOP:
            going.set()
    c.close()
    results.put({"got": got, "errors": errors})


class Role:
    """One client process and its events."""

    def __init__(self, target, *args):
        self.going, self.outage, self.stop = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
        self.results = SPAWN.Queue()
        if target is consumer_role:
            self.until = SPAWN.Value("q", 0)
            args = (*args, self.until)
        self.process = SPAWN.Process(target=target, args=(*args[:1], self.going, self.outage, self.stop,
                                                          self.results, *args[1:]), daemon=True)
        self.process.start()

    def wait(self, event, what):
        assert event.wait(EVENT_TIMEOUT_S), f"{what} did not happen within {EVENT_TIMEOUT_S:.0f} s"

    def finish(self):
        self.stop.set()
        result = self.results.get(timeout=300)
        self.process.join(30)
        return result

    def kill(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)


@pytest.fixture
def roles():
    started = []

    def start(target, *args):
        role = Role(target, *args)
        started.append(role)
        return role

    yield start
    for role in started:
        role.kill()


def read_log(bootstrap):
    """offset -> value of everything in the log, read by a fresh consumer."""
    c = shmlog.Consumer({"bootstrap.servers": bootstrap})
    c.assign([shmlog.TopicPartition(TOPIC, 0, shmlog.OFFSET_BEGINNING)])
    high = c.get_watermark_offsets(shmlog.TopicPartition(TOPIC, 0))[1]
    log = {}
    while len(log) < high:
        msg = c.poll(10)
        assert msg is not None, f"the log ends at {high} but reading stopped at {len(log)}"
        log[msg.offset()] = msg.value().decode()
    c.close()
    return log


def stop_with_the_cli(data_dir):
    result = subprocess.run([sys.executable, "-m", "shmlog.cli", "broker", "stop", "--data-dir", data_dir],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode == 0, result.stderr


def assert_every_delivered_record_is_in_the_log_at_its_offset(log, delivered):
    wrong = {v: o for v, o in delivered.items() if log.get(o) != v}
    assert not wrong, f"{len(wrong)} records reported delivered are not in the log at their offsets, e.g. " \
                      f"{sorted(wrong.items())[:5]}"


def test_a_producer_whose_broker_stops_for_good_gets_a_report_for_every_record_and_success_only_for_logged_ones(
        data_dir, roles):
    with shmlog.Broker(data_dir) as broker:
        admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        create_topic(admin, TOPIC)
        admin.close()
        producer = roles(producer_role, broker.bootstrap_servers, 2000)
        producer.wait(producer.going, "the first deliveries")
    producer.wait(producer.outage, "error_cb")
    result = producer.finish()
    with shmlog.Broker(data_dir) as broker:
        log = read_log(broker.bootstrap_servers)
    delivered, failed = result["delivered"], result["failed"]
    assert result["left"] == 0
    assert len(delivered) + len(failed) == result["produced"], "a record got no delivery report"
    assert_every_delivered_record_is_in_the_log_at_its_offset(log, delivered)
    assert sorted(log.values(), key=int) == sorted(delivered, key=int), "the log holds records reported as failed"
    assert failed, "the producer kept producing after the stop, so some records must have failed"
    assert set(failed.values()) == {KafkaError._MSG_TIMED_OUT}
    assert result["errors"] == [KafkaError._ALL_BROKERS_DOWN]


def test_a_producer_whose_broker_comes_back_within_message_timeout_delivers_every_record(data_dir, start_broker,
                                                                                          roles):
    broker = start_broker()
    admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    create_topic(admin, TOPIC)
    admin.close()
    producer = roles(producer_role, broker.bootstrap_servers, 120_000)
    producer.wait(producer.going, "the first deliveries")
    stop_with_the_cli(data_dir)
    producer.wait(producer.outage, "error_cb")
    broker.stop()
    broker = start_broker()
    result = producer.finish()
    log = read_log(broker.bootstrap_servers)
    assert result["failed"] == {} and result["left"] == 0
    assert len(result["delivered"]) == result["produced"]
    assert_every_delivered_record_is_in_the_log_at_its_offset(log, result["delivered"])
    assert len(log) == result["produced"], "records are in the log twice, or records nobody produced"
    assert result["errors"] == [KafkaError._ALL_BROKERS_DOWN]


def test_a_consumer_reading_while_the_broker_stops_reads_only_records_that_are_in_the_log(data_dir, roles):
    with shmlog.Broker(data_dir) as broker:
        admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        create_topic(admin, TOPIC)
        admin.close()
        producer = roles(producer_role, broker.bootstrap_servers, 2000)
        consumer = roles(consumer_role, broker.bootstrap_servers)
        consumer.wait(consumer.going, "the first records read")
    consumer.wait(consumer.outage, "the consumer's error_cb")
    produced = producer.finish()
    read = consumer.finish()
    with shmlog.Broker(data_dir) as broker:
        log = read_log(broker.bootstrap_servers)
    phantoms = [(o, v) for o, v in read["got"] if log.get(o) != v]
    assert not phantoms, f"the consumer read {len(phantoms)} records the log does not have, e.g. {phantoms[:5]}"
    assert [o for o, _ in read["got"]] == list(range(len(read["got"])))
    assert read["errors"] == [KafkaError._ALL_BROKERS_DOWN]
    assert_every_delivered_record_is_in_the_log_at_its_offset(log, produced["delivered"])


def test_a_consumer_whose_broker_comes_back_continues_from_its_position_with_the_new_broker_s_records(
        data_dir, start_broker, roles):
    broker = start_broker()
    admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    create_topic(admin, TOPIC)
    admin.close()
    producer = roles(producer_role, broker.bootstrap_servers, 120_000)
    consumer = roles(consumer_role, broker.bootstrap_servers)
    consumer.wait(consumer.going, "the first records read")
    broker.stop()
    consumer.wait(consumer.outage, "the consumer's error_cb")
    producer.wait(producer.outage, "the producer's error_cb")
    broker = start_broker()
    produced = producer.finish()
    consumer.until.value = produced["produced"]
    read = consumer.finish()
    log = read_log(broker.bootstrap_servers)
    assert len(log) == produced["produced"] == len(produced["delivered"])
    assert read["got"] == sorted(log.items()), "the consumer did not read the whole log once, in order"


def test_a_producer_refused_by_a_supervisor_that_died_mid_stop_delivers_to_the_one_that_adopts_the_closed_rings(
        data_dir):
    errors, reports = [], []
    broker = shmlog.Broker(data_dir).start()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, TOPIC)
    admin.close()
    p = shmlog.Producer({**conf, "linger.ms": 0, "message.timeout.ms": 120_000, "error_cb": errors.append,
                         "on_delivery": lambda err, msg: reports.append((err, msg.value()))})
    p.produce(TOPIC, b"before")
    assert p.flush(30) == 0
    # The first step of a stop (rings closed), then the supervisor and persister die: nothing is unlinked.
    ns = shm.namespace(data_dir)
    bell = Doorbell.open(shm.doorbell_name(ns))
    bell.header.broker_state = lib.SHMLOG_BROKER_STOPPING
    for name in shm.names_in_namespace(ns):
        if name != shm.doorbell_name(ns):
            ring = Ring.open(name, TOPIC, 0)
            ring.close_for_stop(ffi.NULL)
            ring.close()
    bell.close()
    info = status(data_dir)
    broker.process.kill()  # the keeper first (its standby dies with it), so nothing restarts the broker
    broker.process.wait()
    broker.process = None
    victims = [psutil.Process(pid) for pid in (info["pid"], info["persister_pid"]) if pid]
    for victim in victims:
        victim.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)
    p.produce(TOPIC, b"while it was down")
    p.poll(0)
    assert [e.code() for e in errors] == [KafkaError._ALL_BROKERS_DOWN]
    assert len(p) == 1 and reports == [(None, b"before")]
    with shmlog.Broker(data_dir) as again:
        assert p.flush(60) == 0
        assert reports == [(None, b"before"), (None, b"while it was down")]
        p.close()
        assert list(read_log(again.bootstrap_servers).values()) == ["before", "while it was down"]


def test_records_expiring_during_one_outage_do_not_make_error_cb_report_it_twice(data_dir):
    with shmlog.Broker(data_dir) as broker:
        admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        create_topic(admin, TOPIC)
        admin.close()
        errors, failed = [], []
        p = shmlog.Producer({"bootstrap.servers": broker.bootstrap_servers, "acks": 1, "linger.ms": 0,
                             "message.timeout.ms": 300, "error_cb": lambda e: errors.append(e.code()),
                             "on_delivery": lambda err, msg: failed.append(err and err.code())})
        p.produce(TOPIC, value=b"before")
        assert p.flush(30) == 0 and failed == [None]
        failed.clear()
    for round_ in range(2):          # each round's records all expire before the next is produced
        for n in range(50):
            p.produce(TOPIC, value=b"%d" % n)
        while len(failed) < 50 * (round_ + 1):
            p.poll(0.1)
    assert set(failed) == {KafkaError._MSG_TIMED_OUT}
    assert errors == [KafkaError._ALL_BROKERS_DOWN]
    p.close()
