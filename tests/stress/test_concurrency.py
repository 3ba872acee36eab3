"""N producer processes x M consumer processes on one topic, all at once.

Real processes (multiprocessing spawn context), one real broker per test. Producers start
together (an Event) while the consumers are already reading, so appends race on the ring's
claim CAS and reads race with publication. Every consumer is assigned ALL partitions from
OFFSET_BEGINNING (reads are non-destructive), so each must see every record exactly once.

Checked, for each consumer:
- every produced record read exactly once (no loss, no duplicate), nothing else read;
- offsets per partition dense: 0..n-1 with no gap, n = the high watermark;
- the offset read equals the offset the producer's delivery report gave;
- per (producer, key) the sequence increases (Kafka's per-key ordering);
- a keyed record sits in murmur2_partition(key, P) (Kafka's Java default partitioner).

SHMLOG_STRESS_SCALE (default 1) multiplies the record counts; at 1 the file stays well
under a minute on two cores.
"""
import multiprocessing
import os
import time
from collections import defaultdict

import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog.client.cluster import Cluster
from shmlog.client.partitioner import murmur2_partition

pytestmark = pytest.mark.stress

SCALE = max(1, int(os.environ.get("SHMLOG_STRESS_SCALE", "1")))
SPAWN = multiprocessing.get_context("spawn")
JOIN_TIMEOUT_S = 60.0 * SCALE
KEYS = 50
# Producer configs cycled over the producer processes: one batch per record, small lingering
# batches, and large batches, so claims of very different sizes interleave.
PRODUCER_STYLES = [
    {"linger.ms": 0},
    {"linger.ms": 1, "batch.num.messages": 7},
    {"linger.ms": 5, "batch.num.messages": 500},
]


def create_topic(admin, name, partitions, ring_bytes=8 << 20):
    admin.create_topics([shmlog.NewTopic(name, partitions, config={"ring.bytes": str(ring_bytes)})])[name].result()
    return name


def encode_value(producer_id, seq, target=-1):
    return b"%d:%d:%d:" % (producer_id, seq, target) + b"x" * (seq % 97)


def decode_value(value):
    producer_id, seq, target, _ = value.split(b":", 3)
    return int(producer_id), int(seq), int(target)


# ---------------------------------------------------------------------------- children

def producer_main(bootstrap, topic, producer_id, count, style, mode, partitions, go, results):
    """mode 'keyed': key k{i%50}, default partitioner; 'explicit': null key, partition i % P."""
    import shmlog

    reports, errors = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            reports.append((decode_value(msg.value())[1], msg.partition(), msg.offset()))

    producer = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, **style})
    assert go.wait(JOIN_TIMEOUT_S), "start signal never came"
    for seq in range(count):
        if mode == "keyed":
            producer.produce(topic, value=encode_value(producer_id, seq), key=b"k%d" % (seq % KEYS),
                             on_delivery=on_delivery)
        else:
            target = seq % partitions
            producer.produce(topic, value=encode_value(producer_id, seq, target), partition=target,
                             on_delivery=on_delivery)
        if seq % 100 == 0:
            producer.poll(0)
    left = producer.flush(JOIN_TIMEOUT_S)
    producer.close()
    results.put(("producer", producer_id, reports, errors, left))


def consumer_main(bootstrap, topic, consumer_id, partitions, expected, ready, results):
    """Read every partition from the beginning until `expected` records arrived."""
    import shmlog

    consumer = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "stress-%d" % consumer_id,
                                "check.crcs": consumer_id % 2 == 0})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    ready.set()
    records, problem = [], None
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    try:
        while len(records) < expected:
            if time.monotonic() > deadline:
                problem = f"timed out with {len(records)} of {expected} records"
                break
            for msg in consumer.consume(500, 0.5) if consumer_id % 2 else [consumer.poll(0.5)]:
                if msg is None:
                    continue
                if msg.error() is not None:
                    problem = f"message error {msg.error()!r}"
                    break
                records.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
            if problem:
                break
        positions = [tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in range(partitions)])]
    except shmlog.KafkaException as exc:
        problem, positions = f"KafkaException {exc}", []
    finally:
        consumer.close()
    results.put(("consumer", consumer_id, records, problem, positions))


# ---------------------------------------------------------------------------- harness

def run(conf, topic, partitions, producers, consumers, per_producer, mode):
    """Start consumers, then producers together; returns (producer reports, consumer results)."""
    bootstrap = conf["bootstrap.servers"]
    results = SPAWN.Queue()
    go = SPAWN.Event()
    expected = producers * per_producer
    readies = [SPAWN.Event() for _ in range(consumers)]
    procs = [SPAWN.Process(target=consumer_main, args=(bootstrap, topic, c, partitions, expected, readies[c],
                                                        results), daemon=True) for c in range(consumers)]
    procs += [SPAWN.Process(target=producer_main, daemon=True,
                            args=(bootstrap, topic, p, per_producer, PRODUCER_STYLES[p % len(PRODUCER_STYLES)],
                                  mode, partitions, go, results)) for p in range(producers)]
    try:
        for proc in procs:
            proc.start()
        for ready in readies:
            assert ready.wait(JOIN_TIMEOUT_S), "a consumer never got its assignment"
        go.set()
        produced, consumed = {}, {}
        deadline = time.monotonic() + 2 * JOIN_TIMEOUT_S
        while len(produced) < producers or len(consumed) < consumers:
            remaining = deadline - time.monotonic()
            assert remaining > 0, (f"children hung: producers done {sorted(produced)}, consumers done "
                                   f"{sorted(consumed)}, exit codes {[p.exitcode for p in procs]}")
            try:
                item = results.get(timeout=min(remaining, 1.0))
            except Exception:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"a child died: exit codes {[p.exitcode for p in procs]}"
                continue
            (produced if item[0] == "producer" else consumed)[item[1]] = item[2:]
        for proc in procs:
            proc.join(JOIN_TIMEOUT_S)
            assert proc.exitcode == 0, f"{proc.name} exited with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
        results.close()
    return produced, consumed


def check(conf, topic, partitions, produced, consumed, per_producer, mode):
    # Delivery reports: every record acknowledged once, offsets unique per partition.
    reported = {}  # (producer, seq) -> (partition, offset)
    for pid, (reports, errors, left) in produced.items():
        assert errors == [] and left == 0, f"producer {pid}: {errors[:3]}, {left} undelivered"
        assert sorted(seq for seq, _, _ in reports) == list(range(per_producer)), f"producer {pid} reports"
        for seq, partition, offset in reports:
            reported[(pid, seq)] = (partition, offset)
    assert len(set(reported.values())) == len(reported), "two records were acknowledged at one offset"

    consumer = shmlog.Consumer({**conf, "group.id": "stress-check"})
    try:
        high = [consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in range(partitions)]
    finally:
        consumer.close()
    assert sum(high) == len(reported)

    for cid, (records, problem, positions) in consumed.items():
        assert problem is None, f"consumer {cid}: {problem}"
        assert positions == high, f"consumer {cid} ended at {positions}, log ends at {high}"
        by_partition = defaultdict(list)
        seen = {}
        last_seq = {}
        for partition, offset, key, value in records:
            pid, seq, target = decode_value(value)
            assert (pid, seq) not in seen, f"consumer {cid} read ({pid}, {seq}) twice: {seen[(pid, seq)]}, " \
                                           f"{(partition, offset)}"
            seen[(pid, seq)] = (partition, offset)
            by_partition[partition].append(offset)
            if mode == "keyed":
                assert key == b"k%d" % (seq % KEYS)
                assert partition == murmur2_partition(key, partitions), f"{key} in partition {partition}"
                order = (pid, key)
            else:
                assert key is None
                assert partition == target
                order = (pid, partition)
            assert last_seq.get(order, -1) < seq, f"consumer {cid}: {order} went from {last_seq[order]} to {seq}"
            last_seq[order] = seq
        assert seen == reported, f"consumer {cid}: read offsets differ from delivery reports"
        for p in range(partitions):
            assert by_partition[p] == list(range(high[p])), f"consumer {cid}: partition {p} offsets not dense"


# ---------------------------------------------------------------------------- tests

@pytest.mark.parametrize("producers, consumers, partitions", [(3, 2, 3), (4, 2, 1)], ids=["3x2-p3", "4x2-p1"])
def test_keyed_records_from_many_producers_reach_every_consumer_once_in_key_order(
        conf, admin, producers, consumers, partitions):
    per_producer = 4000 * SCALE
    topic = create_topic(admin, "stress", partitions)
    produced, consumed = run(conf, topic, partitions, producers, consumers, per_producer, "keyed")
    check(conf, topic, partitions, produced, consumed, per_producer, "keyed")


def test_explicit_partitions_and_null_keys_from_many_producers(conf, admin):
    producers, consumers, partitions = 3, 2, 4
    per_producer = 4000 * SCALE
    topic = create_topic(admin, "explicit", partitions)
    produced, consumed = run(conf, topic, partitions, producers, consumers, per_producer, "explicit")
    check(conf, topic, partitions, produced, consumed, per_producer, "explicit")


def test_producers_keep_appending_through_a_small_ring_that_the_persister_recycles(conf, admin):
    """A ring far smaller than the data: producers block on back-pressure until the persister
    frees space, consumers that fall behind read the segment files; the log stays exact."""
    producers, consumers, partitions = 3, 2, 2
    per_producer = 4000 * SCALE
    ring_bytes = 1 << 16
    topic = create_topic(admin, "recycled", partitions, ring_bytes=ring_bytes)
    produced, consumed = run(conf, topic, partitions, producers, consumers, per_producer, "keyed")
    check(conf, topic, partitions, produced, consumed, per_producer, "keyed")
    cluster = Cluster(conf["bootstrap.servers"], "test")
    try:
        laps = [cluster.ring(topic, p).end()[0] / ring_bytes for p in range(partitions)]
    finally:
        cluster.close()
    assert min(laps) > 2, f"the ring should have been reused several times, went {laps} laps"
