"""`shmlog mirror` from a shmlog broker to a Kafka-protocol broker and on to a second shmlog
broker, each mirror SIGKILLed mid-run and restarted: the last copy holds every record of the
first exactly once, with its key, headers, timestamp, partition and place in the order."""
import signal
import threading

import shmlog
from shmlog import clients
from tests.mirror_kafka.mirror_helpers import high_watermarks, read_all, start_mirror, stop, wait_until

PARTITIONS = 4
RECORDS = 4000
CHUNK = 250
TIMESTAMP_BASE = 1_700_000_000_000


def copied(conf, topic):
    if topic not in clients.AdminClient(conf).list_topics(timeout=30).topics:
        return 0
    return sum(high_watermarks(conf, topic, PARTITIONS))


def test_a_keyed_topic_mirrored_to_kafka_and_back_with_sigkilled_mirrors_is_identical(broker, second_broker, kafka,
                                                                                      tmp_path):
    topic = kafka.name("trades")
    first = {"bootstrap.servers": broker.bootstrap_servers}
    last = {"bootstrap.servers": second_broker.bootstrap_servers}
    shmlog.AdminClient(first).create_topics([shmlog.NewTopic(topic, PARTITIONS)])[topic].result()
    produced = threading.Event()
    failures = []

    def produce():
        """Chunk after chunk, each once the mirror to Kafka has copied all but the last two: the
        mirror is mid-stream whenever the test kills it."""
        try:
            p = shmlog.Producer({**first, "acks": "all", "linger.ms": 2})
            for start in range(0, RECORDS, CHUNK):
                wait_until(lambda s=start: copied(kafka.conf, topic) >= s - 2 * CHUNK, "the mirror to catch up")
                for i in range(start, start + CHUNK):
                    p.produce(topic, key=f"trade-{i % 97}", value=f"price={i};".encode() * 40,
                              headers=[("seq", str(i).encode()), ("desk", b"7")], timestamp=TIMESTAMP_BASE + i)
                assert p.flush(60) == 0
        except BaseException as exc:
            failures.append(exc)
        finally:
            produced.set()

    producer = threading.Thread(target=produce)
    producer.start()
    out = start_mirror(tmp_path, broker.bootstrap_servers, kafka.bootstrap, [topic], kafka.name("out"))
    back = start_mirror(tmp_path, kafka.bootstrap, second_broker.bootstrap_servers, [topic], kafka.name("back"))
    try:
        wait_until(lambda: copied(kafka.conf, topic) >= RECORDS // 4, "a quarter in the Kafka cluster", procs=[out])
        assert not produced.is_set()
        stop(out, signal.SIGKILL)
        out = start_mirror(tmp_path, broker.bootstrap_servers, kafka.bootstrap, [topic], kafka.name("out"))
        wait_until(lambda: copied(last, topic) >= RECORDS // 2, "half back in shmlog", procs=[out, back])
        assert not produced.is_set()
        stop(back, signal.SIGKILL)
        back = start_mirror(tmp_path, kafka.bootstrap, second_broker.bootstrap_servers, [topic], kafka.name("back"))
        producer.join(120)
        assert not failures, failures

        want = read_all(first, topic, PARTITIONS, RECORDS)
        got_kafka = read_all(kafka.conf, topic, PARTITIONS, RECORDS)
        got_back = read_all(last, topic, PARTITIONS, RECORDS)
    finally:
        produced.wait(120)
        assert stop(out) == 0 and stop(back) == 0
    assert sum(map(len, want.values())) == RECORDS
    for p in range(PARTITIONS):
        assert got_kafka[p] == want[p], f"partition {p} in the Kafka cluster differs"
        assert got_back[p] == want[p], f"partition {p} back in shmlog differs"
