"""An idempotent producer's acks=all batches that a stopped broker could not make durable are
sent again to the next broker of the data dir and end up in the log once (docs/exactly-once.md,
"Which re-sends happen"). The disk refuses every fdatasync through the LD_PRELOAD shim of
test_fsync_failure.py (which also drops what the file gained since its last good sync, as
Linux may), so the stopping broker's drain cannot confirm them."""
import os

import shmlog

from .conftest import create_topic, partition_dir, read_all, wait_for
from .test_fsync_failure import faults, shim  # noqa: F401  (fixtures)

TOPIC = "t"


def test_acks_all_batches_a_stopped_broker_could_not_fsync_are_sent_again_and_logged_once(
        faults, data_dir, start_broker):  # noqa: F811
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, TOPIC, ring_bytes=4 << 20)
    reports = {}

    def report(err, msg):
        reports.setdefault(msg.value(), []).append((err, msg.offset()))

    p = shmlog.Producer({**conf, "linger.ms": 0, "message.timeout.ms": 120_000, "on_delivery": report})
    try:
        for i in range(50):
            p.produce(TOPIC, b"before-%d" % i)
        assert p.flush(30) == 0
        faults.arm(-1, os.path.join(partition_dir(data_dir, TOPIC), "*.log"))
        for i in range(50):
            p.produce(TOPIC, b"during-%d" % i)   # linger.ms=0: in the ring at once, never confirmed
        ring = p._cluster.ring(TOPIC, 0)
        wait_for(lambda: ring.header.persist.storage_error, "the persister's failed fdatasync")
        broker.stop()        # its drain cannot make them durable either
        faults.arm(0, "*")
        broker = start_broker()
        assert p.flush(60) == 0
    finally:
        p.close()
    values = [b"before-%d" % i for i in range(50)] + [b"during-%d" % i for i in range(50)]
    assert sorted(reports) == sorted(values)
    assert all(len(r) == 1 and r[0][0] is None for r in reports.values()), \
        {v: r for v, r in reports.items() if len(r) != 1 or r[0][0] is not None}
    logged = {}
    for _, offset, value in read_all({"bootstrap.servers": broker.bootstrap_servers}, TOPIC):
        logged.setdefault(value, []).append(offset)
    assert sorted(logged) == sorted(values), "a record is missing from the log"
    assert all(len(offsets) == 1 for offsets in logged.values()), "a record is in the log twice"
    assert all(logged[v] == [reports[v][0][1]] for v in values), "a record is not at the offset its report gave"
