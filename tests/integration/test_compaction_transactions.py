"""Compaction of a transactional topic on a real broker: random workloads of committed and
aborted transactions interleaved with plain records; after the cleaner process compacted the
sealed segments, read_committed and read_uncommitted consumers reading from offset 0 see
exactly the model: below the active segment each key's latest committed value (aborted
records gone from both), the active segment as it was."""
import random

import pytest

import shmlog
from shmlog import Consumer, KafkaError, Producer, TopicPartition
from tests.conftest import create_topic
from tests.integration.test_compaction import FAST, wait_fully_cleaned

pytestmark = pytest.mark.timeout(180)


def read_from_start(conf, topic, isolation):
    """(offset, key, value) of every record a fresh consumer reads from offset 0 to the end."""
    c = Consumer({**conf, "isolation.level": isolation, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    try:
        while True:
            m = c.poll(10)
            assert m is not None, f"no end of partition reached after {out[-3:]}"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF
                return out
            out.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()


def run_workload(conf, topic, seed):
    """Two transactional producers and a plain one, interleaved: transactions of 1-4 keyed
    records (some tombstones) that commit or abort at random; every transaction ends."""
    rnd = random.Random(seed)
    txn = [Producer({**conf, "transactional.id": f"tx{i}", "linger.ms": 0}) for i in range(2)]
    plain = Producer({**conf, "linger.ms": 0, "acks": "all"})
    for p in txn:
        p.init_transactions()
    open_ = [False, False]
    n = 0

    def record():
        nonlocal n
        n += 1
        return b"k%d" % rnd.randrange(6), None if rnd.random() < 0.15 else b"v%d" % n

    for _ in range(60):
        who = rnd.randrange(3)
        if who == 2:
            key, value = record()
            plain.produce(topic, key=key, value=value)
            plain.flush(10)
            continue
        p = txn[who]
        if not open_[who]:
            p.begin_transaction()
            open_[who] = True
        for _ in range(rnd.randint(1, 4)):
            key, value = record()
            p.produce(topic, key=key, value=value)
            p.flush(10)   # one batch each, appended in this order
        if rnd.random() < 0.5:
            (p.commit_transaction if rnd.random() < 0.6 else p.abort_transaction)()
            open_[who] = False
    for who, p in enumerate(txn):
        if open_[who]:
            p.commit_transaction()
        p.close()
    # plain records after the last markers, so that every marker lies in a sealed segment
    for i in range(4):
        plain.produce(topic, key=b"filler-%d" % i, value=b"f" * 600)
        plain.flush(10)
    plain.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_after_cleaning_read_committed_and_read_uncommitted_readers_see_the_models_records(start_broker, seed):
    b = start_broker(**FAST)
    conf = {"bootstrap.servers": b.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, "tx", 1, cleanup_policy="compact", segment_bytes=1024, min_cleanable_dirty_ratio=0.01,
                 delete_retention_ms=0, min_compaction_lag_ms=2**62)
    run_workload(conf, "tx", seed)
    committed = read_from_start(conf, "tx", "read_committed")
    everything = read_from_start(conf, "tx", "read_uncommitted")
    assert len(committed) < len(everything)   # the workload aborted something
    resource = shmlog.admin.ConfigResource("topic", "tx", set_config={"min.compaction.lag.ms": "0"})
    for future in admin.alter_configs([resource]).values():
        future.result()
    admin.close()
    active = wait_fully_cleaned(b.data_dir, "tx-0")
    latest = {}
    for offset, key, value in committed:
        if offset < active:
            latest[key] = (offset, key, value)
    below = sorted(r for r in latest.values() if r[2] is not None)   # delete.retention.ms 0: tombstones go
    assert read_from_start(conf, "tx", "read_committed") == below + [r for r in committed if r[0] >= active]
    assert read_from_start(conf, "tx", "read_uncommitted") == below + [r for r in everything if r[0] >= active]
