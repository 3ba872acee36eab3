"""The Kafka-protocol listener against real Kafka clients (confluent-kafka/librdkafka,
kafka-python, kcat): they produce, fetch, join groups and commit through TCP while shmlog's
shared-memory clients use the same logs, offsets and groups."""
import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import psutil
import pytest

import shmlog

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
ck = pytest.importorskip("confluent_kafka")

from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData  # noqa: E402
from kio.schema.request_header.v2 import RequestHeader  # noqa: E402
from kio.serial import entity_writer  # noqa: E402

from shmlog.log.batch import RecordsBuilder, record_size  # noqa: E402
from tests.conftest import create_topic  # noqa: E402

STARTUP_S = 30.0


def listener_status(admin):
    return admin._cluster.control.request("status")["kafka_listener"]


def wait_for_listener(admin, pid_not=None):
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        st = listener_status(admin)
        if st is not None and st["pid"] != pid_not:
            return st
        time.sleep(0.05)
    raise AssertionError("the kafka listener did not come up")


def start_with_listener(start_broker, **configs):
    """A broker with a Kafka listener on a free loopback port: .kafka_bootstrap, .admin (close it)."""
    b = start_broker(**{"listeners": "PLAINTEXT://127.0.0.1:0", "group.initial.rebalance.delay.ms": 0, **configs})
    b.admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
    b.kafka_bootstrap = f"127.0.0.1:{wait_for_listener(b.admin)['port']}"
    return b


@pytest.fixture
def kbroker(start_broker):
    b = start_with_listener(start_broker)
    yield b
    b.admin.close()


def kconf(b, **extra):
    return {"bootstrap.servers": b.kafka_bootstrap, **extra}


def shm_conf(b, **extra):
    return {"bootstrap.servers": b.bootstrap_servers, **extra}


def consume_n(consumer, n, timeout_s=30):
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        out.append((m.partition(), m.offset(), m.key(), m.value()))
    return out


def produce_tcp(b, topic, values, **extra):
    p = ck.Producer(kconf(b, **extra))
    for i, v in enumerate(values):
        p.produce(topic, value=v, key=b"k%d" % i, partition=0)
    assert p.flush(30) == 0
    return p


# ---------------------------------------------------------------------------- data path

def test_records_produced_by_confluent_kafka_are_read_by_a_shared_memory_consumer_at_the_same_offsets(kbroker):
    create_topic(kbroker.admin, "t", 1)
    produce_tcp(kbroker, "t", [b"v%d" % i for i in range(20)])
    c = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "g", "auto.offset.reset": "earliest"}))
    c.assign([shmlog.TopicPartition("t", 0, 0)])
    got = consume_n(c, 20)
    c.close()
    assert [(o, v) for _, o, _, v in got] == [(i, b"v%d" % i) for i in range(20)]


def test_records_produced_over_shared_memory_are_fetched_by_confluent_kafka_from_a_seeked_offset(kbroker):
    create_topic(kbroker.admin, "t", 1)
    p = shmlog.Producer(shm_conf(kbroker))
    for i in range(30):
        p.produce("t", value=b"s%d" % i, key=b"k", partition=0)
    p.flush(10)
    p.close() if hasattr(p, "close") else None
    c = ck.Consumer(kconf(kbroker, **{"group.id": "g", "enable.auto.commit": False}))
    c.assign([ck.TopicPartition("t", 0, 10)])
    got = consume_n(c, 20)
    c.close()
    assert [(o, v) for _, o, _, v in got] == [(i, b"s%d" % i) for i in range(10, 30)]


def test_a_fetch_waits_for_records_produced_over_shared_memory_while_it_long_polls(kbroker):
    create_topic(kbroker.admin, "t", 1)
    c = ck.Consumer(kconf(kbroker, **{"group.id": "g", "fetch.wait.max.ms": 5000}))
    c.assign([ck.TopicPartition("t", 0, 0)])
    assert c.poll(1.0) is None
    p = shmlog.Producer(shm_conf(kbroker))
    p.produce("t", value=b"late", partition=0)
    p.flush(10)
    got = consume_n(c, 1, timeout_s=10)
    c.close()
    assert [(o, v) for _, o, _, v in got] == [(0, b"late")]


def test_a_tcp_consumer_reading_on_while_a_small_ring_laps_gets_every_record_in_order(kbroker):
    # Each fetch starts where the connection's last fetch of the partition ended; when the ring
    # has lapped those bytes meanwhile (the consumer fell behind), the read comes from the segments.
    kbroker.admin.create_topics([shmlog.NewTopic("t", 1, config={"ring.bytes": "65536"})])["t"].result()
    p = shmlog.Producer(shm_conf(kbroker, **{"linger.ms": 0}))
    c = ck.Consumer(kconf(kbroker, **{"group.id": "g", "enable.auto.commit": False}))
    c.assign([ck.TopicPartition("t", 0, 0)])
    value = lambda i: b"%06d" % i + bytes(194)   # noqa: E731 - 200 B: a 64 KiB ring holds ~300
    got, n = [], 0
    for chunk in (50, 50, 100, 400, 1200, 50, 50):   # 1,200 at once: four laps behind the reader
        for _ in range(chunk):
            p.produce("t", value=value(n), partition=0)
            n += 1
        p.flush(10)
        got += [(o, v) for _, o, _, v in consume_n(c, n - len(got))]
    c.close()
    p.close()
    assert [o for o, _ in got] == list(range(n))
    assert all(v == value(o) for o, v in got)


def test_acks_all_is_acknowledged_once_the_records_are_fsynced(kbroker):
    create_topic(kbroker.admin, "t", 1)
    reports = []
    p = ck.Producer(kconf(kbroker, acks="all"))
    p.produce("t", value=b"durable", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert p.flush(30) == 0
    status = kbroker.admin._cluster.control.request("status")
    flushed = [x["flushed_offset"] for x in status["partitions"] if x["topic"] == "t"][0]
    assert reports == [(None, 0)] and flushed >= 1


def test_list_offsets_gives_the_log_start_and_end_offsets(kbroker):
    create_topic(kbroker.admin, "t", 1)
    produce_tcp(kbroker, "t", [b"x"] * 7)
    c = ck.Consumer(kconf(kbroker, **{"group.id": "g"}))
    assert c.get_watermark_offsets(ck.TopicPartition("t", 0), timeout=10) == (0, 7)
    c.close()


def test_gzip_and_lz4_batches_are_stored_as_produced_and_decoded_by_shared_memory_consumers(kbroker):
    create_topic(kbroker.admin, "t", 1)
    for codec in ("gzip", "lz4"):
        produce_tcp(kbroker, "t", [b"%s-%d" % (codec.encode(), i) for i in range(5)],
                    **{"compression.type": codec})
    c = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "g"}))
    c.assign([shmlog.TopicPartition("t", 0, 0)])
    got = consume_n(c, 10)
    c.close()
    assert [v for *_, v in got] == [b"gzip-%d" % i for i in range(5)] + [b"lz4-%d" % i for i in range(5)]


# ---------------------------------------------------------------------------- groups

def test_a_tcp_member_and_a_shared_memory_member_split_the_partitions_of_one_group(kbroker):
    create_topic(kbroker.admin, "t", 4)
    tcp = ck.Consumer(kconf(kbroker, **{"group.id": "mixed", "auto.offset.reset": "earliest",
                                        "partition.assignment.strategy": "range"}))
    shm = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "mixed", "auto.offset.reset": "earliest",
                                               "partition.assignment.strategy": "range"}))
    tcp.subscribe(["t"])
    shm.subscribe(["t"])
    deadline = time.monotonic() + 30
    a = b = []
    while time.monotonic() < deadline:
        tcp.poll(0.1)
        shm.poll(0.1)
        a = sorted(tp.partition for tp in tcp.assignment())
        b = sorted(tp.partition for tp in shm.assignment())
        if len(a) == 2 and len(b) == 2:
            break
    tcp.close()
    shm.close()
    assert len(a) == 2 and len(b) == 2 and sorted(a + b) == [0, 1, 2, 3]


def test_offsets_committed_by_a_tcp_member_are_the_group_offsets_a_shared_memory_consumer_sees(kbroker):
    create_topic(kbroker.admin, "t", 1)
    produce_tcp(kbroker, "t", [b"x"] * 5)
    c = ck.Consumer(kconf(kbroker, **{"group.id": "g1", "enable.auto.commit": False}))
    c.commit(offsets=[ck.TopicPartition("t", 0, 3)], asynchronous=False)
    c.close()
    s = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "g1"}))
    committed = s.committed([shmlog.TopicPartition("t", 0)], timeout=10)
    s.close()
    assert committed[0].offset == 3


def test_offsets_committed_over_shared_memory_are_fetched_by_a_tcp_client(kbroker):
    create_topic(kbroker.admin, "t", 1)
    s = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "g2"}))
    s.commit(offsets=[shmlog.TopicPartition("t", 0, 4)], asynchronous=False)
    s.close()
    c = ck.Consumer(kconf(kbroker, **{"group.id": "g2"}))
    committed = c.committed([ck.TopicPartition("t", 0)], timeout=10)
    c.close()
    assert committed[0].offset == 4


# ---------------------------------------------------------------------------- admin

def test_topics_created_over_tcp_exist_for_shared_memory_clients_and_can_be_deleted(kbroker):
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
    a = AdminClient(kconf(kbroker))
    a.create_topics([NewTopic("made", 3, 1)])["made"].result(10)
    assert kbroker.admin.list_topics(timeout=10).topics["made"].partitions.keys() == {0, 1, 2}
    a.create_partitions([NewPartitions("made", 5)])["made"].result(10)
    assert set(a.list_topics(timeout=10).topics["made"].partitions) == {0, 1, 2, 3, 4}
    a.delete_topics(["made"])["made"].result(10)
    assert "made" not in kbroker.admin.list_topics(timeout=10).topics


def test_a_read_committed_tcp_consumer_skips_aborted_records_and_stops_before_an_open_transaction(kbroker):
    create_topic(kbroker.admin, "t", 1)
    tx = shmlog.Producer(shm_conf(kbroker, **{"transactional.id": "over-tcp"}))
    tx.init_transactions(30)
    for outcome in ("commit", "abort", "open"):
        tx.begin_transaction()
        for i in range(3):
            tx.produce("t", value=b"%s-%d" % (outcome.encode(), i), partition=0)
        if outcome == "commit":
            tx.commit_transaction(30)
        elif outcome == "abort":
            tx.flush(30)   # appended first: an abort drops what is still queued
            tx.abort_transaction(30)
        else:
            tx.flush(30)   # appended, but the transaction stays open
    plain = shmlog.Producer(shm_conf(kbroker, acks=1))
    plain.produce("t", value=b"after", partition=0)
    plain.flush(10)
    committed = ck.Consumer(kconf(kbroker, **{"group.id": "rc", "enable.auto.commit": False,
                                              "isolation.level": "read_committed"}))
    committed.assign([ck.TopicPartition("t", 0, 0)])
    uncommitted = ck.Consumer(kconf(kbroker, **{"group.id": "ru", "enable.auto.commit": False,
                                                "isolation.level": "read_uncommitted"}))
    uncommitted.assign([ck.TopicPartition("t", 0, 0)])
    read = consume_n(uncommitted, 10)
    everything = [v for *_, v in read]
    first_open = next(o for _, o, _, v in read if v == b"open-0")
    stable = [v for *_, v in consume_n(committed, 3)]
    assert not consume_n(committed, 1, timeout_s=2), "read past the open transaction"
    low, high = committed.get_watermark_offsets(ck.TopicPartition("t", 0), timeout=10)
    committed.close()
    uncommitted.close()
    tx.abort_transaction(30)
    assert everything == [b"commit-0", b"commit-1", b"commit-2", b"abort-0", b"abort-1", b"abort-2",
                          b"open-0", b"open-1", b"open-2", b"after"]
    assert stable == [b"commit-0", b"commit-1", b"commit-2"]
    assert high == first_open, "read_committed: the end offset is the last stable offset, as Kafka's ListOffsets"


def test_a_topic_created_over_tcp_gets_the_replication_factor_asked_for(start_broker, tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic
    dirs = [str(tmp_path / f"disk{i}") for i in range(2)]
    b = start_broker(**{"listeners": "PLAINTEXT://127.0.0.1:0", "log.dirs": ",".join(dirs)})
    admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
    try:
        port = wait_for_listener(admin)["port"]
        a = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        a.create_topics([NewTopic("twice", 1, 2)])["twice"].result(10)
        assert sorted(admin.list_topics(timeout=10).topics["twice"].partitions[0].replicas) == [0, 1]
        with pytest.raises(ck.KafkaException) as exc:
            a.create_topics([NewTopic("thrice", 1, 3)])["thrice"].result(10)
        assert exc.value.args[0].code() == ck.KafkaError.INVALID_REPLICATION_FACTOR
    finally:
        admin.close()


def test_creating_an_existing_topic_over_tcp_fails_with_topic_already_exists(kbroker):
    from confluent_kafka.admin import AdminClient, NewTopic
    create_topic(kbroker.admin, "t", 1)
    a = AdminClient(kconf(kbroker))
    with pytest.raises(ck.KafkaException) as exc:
        a.create_topics([NewTopic("t", 1, 1)])["t"].result(10)
    assert exc.value.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS


def test_a_topic_config_altered_over_tcp_is_the_topic_config_everyone_describes(kbroker):
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
    create_topic(kbroker.admin, "t", 1)
    a = AdminClient(kconf(kbroker))
    resource = ConfigResource(ConfigResource.Type.TOPIC, "t", incremental_configs=[
        ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET)])
    list(a.incremental_alter_configs([resource]).values())[0].result(10)
    described = list(a.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "t")]).values())[0].result(10)
    assert described["retention.ms"].value == "123456"
    shm_view = list(kbroker.admin.describe_configs([shmlog.ConfigResource("topic", "t")]).values())[0].result(10)
    assert str(shm_view["retention.ms"].value) == "123456"


# ---------------------------------------------------------------------------- raw frames

def raw_produce(records, topic="t", acks=1):
    req = ProduceRequest(transactional_id=None, acks=acks, timeout=__import__("datetime").timedelta(seconds=5),
                         topic_data=(TopicProduceData(name=topic, partition_data=(
                             PartitionProduceData(index=0, records=records),)),))
    out = io.BytesIO()
    entity_writer(RequestHeader)(out, RequestHeader(request_api_key=0, request_api_version=9, correlation_id=7,
                                                    client_id="raw"))
    entity_writer(ProduceRequest)(out, req)
    body = out.getvalue()
    return struct.pack(">i", len(body)) + body


def good_batch(value=b"v"):
    builder = RecordsBuilder()
    # A current timestamp: one from 1970 is past retention.ms, and retention may delete it at once.
    builder.add(b"k", value, int(time.time() * 1000), None, record_size(b"k", value))
    records, base_ts, max_ts = builder.encode()
    from shmlog._native import lib
    from shmlog.log.batch import HEADER
    header = bytearray(HEADER.pack(0, HEADER.size - 12 + len(records), 0, 2, 0, 0, len(builder) - 1, base_ts,
                                   max_ts, -1, -1, -1, len(builder)))
    body = bytes(header) + bytes(records)
    crc = lib.shmlog_crc32c(0, body[21:], len(body) - 21)
    return body[:17] + struct.pack(">I", crc) + body[21:]


def exchange(port, frame, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(frame)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        return recv_exact(s, size)


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def produce_error_code(reply):
    from kio.schema.produce.v9.response import ProduceResponse
    from kio.schema.response_header.v1 import ResponseHeader
    from kio.serial import entity_reader
    _, used = entity_reader(ResponseHeader)(reply, 0)
    resp, _ = entity_reader(ProduceResponse)(reply, used)
    return int(resp.responses[0].partition_responses[0].error_code)


def test_a_hand_built_batch_is_appended_and_one_with_a_bad_crc_is_refused_with_corrupt_message(kbroker):
    create_topic(kbroker.admin, "t", 1)
    port = int(kbroker.kafka_bootstrap.rsplit(":", 1)[1])
    assert produce_error_code(exchange(port, raw_produce(good_batch()))) == 0
    bad = bytearray(good_batch(b"w"))
    bad[-1] ^= 0xFF
    assert produce_error_code(exchange(port, raw_produce(bytes(bad)))) == 2   # CORRUPT_MESSAGE
    c = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "g"}))
    c.assign([shmlog.TopicPartition("t", 0, 0)])
    got = consume_n(c, 1, timeout_s=10)
    c.close()
    assert [(o, v) for _, o, _, v in got] == [(0, b"v")]
    assert kbroker.admin._cluster.ring("t", 0).end()[1] == 1


def test_a_request_over_socket_request_max_bytes_closes_only_that_connection(kbroker):
    port = int(kbroker.kafka_bootstrap.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">i", 0x7FFFFFF0))
        assert s.recv(1) == b""
    create_topic(kbroker.admin, "t", 1)
    produce_tcp(kbroker, "t", [b"still-served"])


def test_a_client_stalled_in_the_middle_of_a_request_does_not_hold_up_another_client(kbroker):
    create_topic(kbroker.admin, "t", 1)
    port = int(kbroker.kafka_bootstrap.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(struct.pack(">i", 100) + b"\0" * 10)   # 90 bytes of the request never come
        produce_tcp(kbroker, "t", [b"served"])
        c = shmlog.Consumer(shm_conf(kbroker, **{"group.id": "g"}))
        c.assign([shmlog.TopicPartition("t", 0, 0)])
        assert [v for *_, v in consume_n(c, 1)] == [b"served"]
        c.close()


def test_connections_beyond_max_connections_are_closed_and_the_others_still_served(start_broker):
    b = start_broker(**{"listeners": "PLAINTEXT://127.0.0.1:0", "max.connections": 8})
    admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
    port = wait_for_listener(admin)["port"]
    create_topic(admin, "t", 1)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            assert extra.recv(1) == b""   # closed as it was accepted
        held.pop().close()
        held.pop().close()
        b.kafka_bootstrap = f"127.0.0.1:{port}"
        produce_tcp(b, "t", [b"within-the-limit"])
    finally:
        for s in held:
            s.close()
        admin.close()


def test_random_and_mutated_frames_never_stop_the_listener_from_serving_a_good_client(kbroker):
    import random
    rng = random.Random(int(os.environ.get("SHMLOG_FUZZ_SEED", "1234")))
    rounds = int(os.environ.get("SHMLOG_LISTENER_FUZZ_ROUNDS", "300"))
    create_topic(kbroker.admin, "t", 1)
    port = int(kbroker.kafka_bootstrap.rsplit(":", 1)[1])
    pid = listener_status(kbroker.admin)["pid"]
    seed = raw_produce(good_batch())
    for i in range(rounds):
        kind = i % 3
        if kind == 0:
            frame = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
        elif kind == 1:
            frame = bytearray(seed)
            for _ in range(rng.randrange(1, 6)):
                frame[rng.randrange(4, len(frame))] = rng.getrandbits(8)
            frame = bytes(frame)
        else:
            body = struct.pack(">hhi", rng.randrange(-5, 80), rng.randrange(-2, 20), i) + \
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
            frame = struct.pack(">i", len(body)) + body
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                s.sendall(frame)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):   # an answer, or the listener closing the connection
                    pass
            except OSError:
                pass   # the listener closed it first
    assert listener_status(kbroker.admin)["pid"] == pid
    produce_tcp(kbroker, "t", [b"after-fuzz"])


def test_a_killed_listener_is_restarted_by_the_supervisor(kbroker):
    old = listener_status(kbroker.admin)
    os.kill(old["pid"], signal.SIGKILL)
    new = wait_for_listener(kbroker.admin, pid_not=old["pid"])
    assert new["pid"] != old["pid"]
    create_topic(kbroker.admin, "t", 1)
    b = kbroker
    b.kafka_bootstrap = f"127.0.0.1:{new['port']}"
    produce_tcp(b, "t", [b"after-restart"])


def test_a_non_loopback_plaintext_listener_without_the_opt_in_keeps_the_broker_from_starting(data_dir):
    with pytest.raises(shmlog.KafkaException, match="shmlog.listener.allow.insecure"):
        shmlog.Broker(data_dir, listeners="PLAINTEXT://0.0.0.0:0").start()


# ---------------------------------------------------------------------------- TLS

OPENSSL = shutil.which("openssl")


def make_cert(tmp_path, name, ca=None):
    """A key and certificate for CN=name (self-signed, or signed by ca=(cert, key)): (cert, key) paths."""
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subj = ["-subj", f"/CN={name}"]
    if ca is None:
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", *subj, "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
    else:
        csr, ext = tmp_path / f"{name}.csr", tmp_path / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        subprocess.run([OPENSSL, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                        *subj], check=True, capture_output=True)
        subprocess.run([OPENSSL, "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)], check=True,
                       capture_output=True)
    return cert, key


@pytest.fixture
def tls_files(tmp_path):
    if OPENSSL is None:
        pytest.skip("openssl is not installed (needed to make test certificates)")
    ca = make_cert(tmp_path, "test-ca")
    server_cert, server_key = make_cert(tmp_path, "localhost", ca)
    bundle = tmp_path / "server-bundle.pem"
    bundle.write_bytes(server_cert.read_bytes() + server_key.read_bytes())
    client = make_cert(tmp_path, "client", ca)
    return {"ca": str(ca[0]), "server": str(bundle), "client_cert": str(client[0]), "client_key": str(client[1])}


def test_an_ssl_listener_serves_confluent_kafka_over_tls_with_a_required_client_certificate(start_broker, tls_files):
    b = start_broker(**{"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": tls_files["server"],
                        "ssl.truststore.location": tls_files["ca"], "ssl.client.auth": "required"})
    admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
    b.kafka_bootstrap = f"127.0.0.1:{wait_for_listener(admin)['port']}"
    create_topic(admin, "t", 1)
    tls = {"security.protocol": "SSL", "ssl.ca.location": tls_files["ca"],
           "ssl.certificate.location": tls_files["client_cert"], "ssl.key.location": tls_files["client_key"]}
    produce_tcp(b, "t", [b"encrypted"], **tls)
    c = ck.Consumer(kconf(b, **tls, **{"group.id": "g"}))
    c.assign([ck.TopicPartition("t", 0, 0)])
    assert [v for *_, v in consume_n(c, 1)] == [b"encrypted"]
    c.close()
    plain = ck.Producer(kconf(b, **{"security.protocol": "SSL", "ssl.ca.location": tls_files["ca"],
                                    "message.timeout.ms": 3000}))
    reports = []
    plain.produce("t", value=b"no-client-cert", partition=0, on_delivery=lambda err, m: reports.append(err))
    plain.flush(10)
    assert len(reports) == 1 and reports[0] is not None   # refused at the handshake: never delivered
    assert admin._cluster.ring("t", 0).end()[1] == 1
    admin.close()


def test_an_ssl_listener_without_a_keystore_keeps_the_broker_from_starting(data_dir):
    with pytest.raises(shmlog.KafkaException, match="ssl.keystore.location"):
        shmlog.Broker(data_dir, listeners="SSL://127.0.0.1:0").start()


# ---------------------------------------------------------------------------- SASL

@pytest.fixture
def sasl_broker(start_broker, data_dir):
    from click.testing import CliRunner

    from shmlog.cli.app import cli
    b = start_broker(**{"listeners": "SASL_PLAINTEXT://127.0.0.1:0",
                        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"})
    result = CliRunner().invoke(cli, ["users", "set", "alice", "--data-dir", data_dir], input="alice-secret\n")
    assert result.exit_code == 0, result.output
    admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
    b.kafka_bootstrap = f"127.0.0.1:{wait_for_listener(admin)['port']}"
    create_topic(admin, "t", 1)
    b.admin = admin
    yield b
    admin.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_a_sasl_user_set_with_the_cli_produces_and_consumes_with_each_mechanism(sasl_broker, mechanism):
    auth = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism, "sasl.username": "alice",
            "sasl.password": "alice-secret"}
    produce_tcp(sasl_broker, "t", [mechanism.encode()], **auth)
    c = ck.Consumer(kconf(sasl_broker, **auth, **{"group.id": "g"}))
    c.assign([ck.TopicPartition("t", 0, 0)])
    assert [v for *_, v in consume_n(c, 1)] == [mechanism.encode()]
    c.close()


def test_a_wrong_sasl_password_is_refused_and_nothing_is_appended(sasl_broker):
    errors = []
    p = ck.Producer(kconf(sasl_broker, **{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                                          "sasl.username": "alice", "sasl.password": "wrong",
                                          "message.timeout.ms": 3000, "error_cb": errors.append}))
    reports = []
    p.produce("t", value=b"x", partition=0, on_delivery=lambda err, m: reports.append(err))
    p.flush(10)
    assert reports and reports[0] is not None
    assert any(e.code() == ck.KafkaError._AUTHENTICATION for e in errors)
    assert sasl_broker.admin._cluster.ring("t", 0).end()[1] == 0


def test_a_request_before_sasl_authentication_closes_the_connection(sasl_broker):
    port = int(sasl_broker.kafka_bootstrap.rsplit(":", 1)[1])
    with pytest.raises(ConnectionError):
        exchange(port, raw_produce(good_batch()))
    assert sasl_broker.admin._cluster.ring("t", 0).end()[1] == 0


# ---------------------------------------------------------------------------- other clients

def test_kafka_python_produces_and_consumes_through_the_listener(kbroker):
    kp = pytest.importorskip("kafka")
    create_topic(kbroker.admin, "t", 1)
    p = kp.KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, enable_idempotence=False)
    for i in range(5):
        p.send("t", value=b"kp%d" % i, partition=0)
    p.flush(30)
    p.close()
    c = kp.KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, auto_offset_reset="earliest",
                         consumer_timeout_ms=10000, enable_auto_commit=False)
    c.assign([kp.TopicPartition("t", 0)])
    got = []
    for m in c:
        got.append((m.offset, m.value))
        if len(got) == 5:
            break
    c.close()
    assert got == [(i, b"kp%d" % i) for i in range(5)]


KCAT = shutil.which("kcat") or shutil.which("kafkacat")


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed (Debian: apt-get install kcat)")
def test_kcat_lists_metadata_produces_and_consumes_through_the_listener(kbroker):
    create_topic(kbroker.admin, "t", 1)
    b = kbroker.kafka_bootstrap
    meta = subprocess.run([KCAT, "-b", b, "-L", "-t", "t"], capture_output=True, text=True, timeout=30)
    assert meta.returncode == 0 and 'topic "t" with 1 partitions' in meta.stdout
    put = subprocess.run([KCAT, "-b", b, "-P", "-t", "t", "-p", "0"], input="one\ntwo\n", capture_output=True,
                         text=True, timeout=30)
    assert put.returncode == 0, put.stderr
    got = subprocess.run([KCAT, "-b", b, "-C", "-t", "t", "-p", "0", "-o", "beginning", "-e", "-f", "%o:%s\n"],
                         capture_output=True, text=True, timeout=30)
    assert got.returncode == 0 and got.stdout.splitlines() == ["0:one", "1:two"]


__all__ = ["psutil", "sys"]
