"""The aborted-transaction index follows the log: once retention or delete_records moved the log
start offset past an aborted transaction's last offset, its entry leaves the partition's
aborted.txnindex (the transaction service trims it), while read_committed readers keep dropping
every aborted record that is still in the log. Real segments, a real persister applying
retention every 50 ms."""
import pytest

import shmlog
from shmlog import KafkaError, TopicPartition
from shmlog.log import control_record

from .conftest import create_topic, partition_dir, wait_for

pytestmark = pytest.mark.timeout(120)

CHECK = {"log_retention_check_interval_ms": 50}
RECORD = b"r" * 1000


def committed_values(conf, topic, isolation="read_committed"):
    """Every record a consumer returns, from the log start to the end: [(offset, value)]."""
    c = shmlog.Consumer({**conf, "group.id": "rc", "isolation.level": isolation,
                         "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
    out = []
    try:
        while True:
            m = c.poll(5.0)
            assert m is not None, f"no end of partition reached after {len(out)} records"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                return out
            out.append((m.offset(), m.value()))
    finally:
        c.close()


def log_start(conf, topic):
    c = shmlog.Consumer({**conf, "group.id": "wm", "isolation.level": "read_uncommitted"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0))[0]
    finally:
        c.close()


def transactions(conf, topic, count, tag):
    """`count` transactions of 5 records each, every even one aborted; the committed values."""
    p = shmlog.Producer({**conf, "transactional.id": "tx", "linger.ms": 0, "batch.size": 16384})
    p.init_transactions()
    committed = []
    for i in range(count):
        p.begin_transaction()
        batch = [RECORD + b"%s-%d-%d" % (tag, i, j) for j in range(5)]
        for value in batch:
            p.produce(topic, value)
        if i % 2:
            p.commit_transaction()
            committed += batch
        else:
            p.flush()
            p.abort_transaction()
    p.close()
    return committed


def test_delete_records_trims_the_index_entries_below_the_new_log_start_offset(data_dir, start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=10_000)
    committed = transactions(conf, "t", 10, b"a")
    pdir = partition_dir(data_dir, "t")
    offsets = {v: o for o, v in committed_values(conf, "t", "read_uncommitted")}
    before = control_record.read_aborted(pdir)
    assert len(before) == 5
    cut = before[2].last_offset + 1          # past the third aborted transaction
    admin = shmlog.AdminClient(conf)
    tp = TopicPartition("t", 0, cut)
    assert admin.delete_records([tp])[tp].result().low_watermark == cut
    admin.close()
    after = wait_for(lambda: (lambda e: e if len(e) == 2 else None)(control_record.read_aborted(pdir)),
                     "the transaction service to trim the index to the new log start offset")
    assert after == before[3:]
    assert control_record.aborted_generation(pdir) == 5     # what the ring publishes never goes back
    assert committed_values(conf, "t") == [(offsets[v], v) for v in committed if offsets[v] >= cut]


def test_retention_bytes_trims_the_index_with_the_segments_and_new_aborts_are_still_seen(data_dir, start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=10_000, retention_bytes=30_000)
    committed = transactions(conf, "t", 16, b"a")    # ~85 KB of records: retention deletes most segments
    pdir = partition_dir(data_dir, "t")
    start = wait_for(lambda: log_start(conf, "t") or None, "retention.bytes to move the log start offset")
    wait_for(lambda: all(e.last_offset >= start for e in control_record.read_aborted(pdir)),
             "the index entries below the log start offset to be trimmed")
    kept = control_record.read_aborted(pdir)
    assert 0 < len(kept) < 8 and all(e.first_offset < e.last_offset for e in kept)
    # A reader started now reads every committed record still in the log, and no aborted one.
    got = committed_values(conf, "t")
    assert [v for _, v in got] == committed[len(committed) - len(got):]
    assert all(o >= log_start(conf, "t") for o, _ in got)
    # New aborted transactions after the trim go to the same index and are dropped too.
    more = transactions(conf, "t", 2, b"b")
    assert control_record.aborted_generation(pdir) == 9
    assert [v for _, v in committed_values(conf, "t")][-5:] == more
