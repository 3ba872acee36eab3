"""consume_batch() of records that are only in the segment files (the ring wrapped past them):
views indexed in place in the mapped segment, the same records poll() reads, a compressed
batch handed out decompressed, aborted transactions left out for read_committed."""
import time

import shmlog
from shmlog import OFFSET_BEGINNING, TopicPartition
from tests.conftest import create_topic

RING = 65536
N = 6000      # ~14 rings of these records


def produce(conf, topic, start, n, **extra):
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 1, **extra})
    try:
        for i in range(start, start + n):
            p.produce(topic, key=b"k%d" % (i % 17), value=b"value-%06d-" % i + b"x" * 120,
                      timestamp=1_700_000_000_000 + i, partition=0)
        assert p.flush(30) == 0
    finally:
        p.close()


def behind_the_ring(conf, topic):
    """Offset 0 is in the segment files only."""
    from shmlog.client.cluster import Cluster
    cluster = Cluster(conf["bootstrap.servers"], "consumer")
    try:
        return cluster.ring(topic, 0).locate(0) is None
    finally:
        cluster.close()


def read_views(conf, topic, n, max_records=1000, **extra):
    """[(offset, key, value, timestamp)] of n records read with consume_batch, and the views' zero_copy flags."""
    c = shmlog.Consumer({**conf, **extra})
    out, flags = [], []
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            view = c.consume_batch(max_records, timeout=1)
            if view is None:
                continue
            assert len(view) <= max_records
            flags.append(view.zero_copy)
            out += zip(view.offsets.tolist(), [None if k is None else bytes(k) for k in view.keys()],
                       [bytes(v) for v in view.values()], view.timestamps.tolist())
    finally:
        c.close()
    return out, flags


def read_polled(conf, topic, n, **extra):
    c = shmlog.Consumer({**conf, **extra})
    out = []
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            out += [(m.offset(), m.key(), m.value(), m.timestamp()[1]) for m in c.consume(1000, 1) if not m.error()]
    finally:
        c.close()
    return out


def test_views_of_records_behind_the_ring_are_the_records_poll_reads(conf, admin):
    create_topic(admin, "behind", ring_bytes=RING, retention_ms=-1)
    produce(conf, "behind", 0, N)
    assert behind_the_ring(conf, "behind")
    views, flags = read_views(conf, "behind", N)
    assert len(views) == N and [o for o, *_ in views] == list(range(N))
    assert views == read_polled(conf, "behind", N)
    assert all(flags)    # in place: the segment files' bytes (then the ring's), never copies


def test_views_of_at_most_max_records_behind_the_ring_end_inside_batches_and_miss_nothing(conf, admin):
    create_topic(admin, "cut", ring_bytes=RING, retention_ms=-1)
    produce(conf, "cut", 0, N)     # batches of tens of records (linger.ms 1)
    assert behind_the_ring(conf, "cut")
    views, _ = read_views(conf, "cut", N, max_records=7)
    assert [o for o, *_ in views] == list(range(N))
    assert views == read_polled(conf, "cut", N)


def test_a_compressed_batch_behind_the_ring_ends_the_view_before_it_and_comes_out_decompressed(conf, admin):
    create_topic(admin, "mixed", ring_bytes=RING, retention_ms=-1)
    produce(conf, "mixed", 0, 100)
    produce(conf, "mixed", 100, 100, **{"compression.type": "zstd"})
    produce(conf, "mixed", 200, N)
    assert behind_the_ring(conf, "mixed")
    views, flags = read_views(conf, "mixed", N + 200)
    assert [o for o, *_ in views] == list(range(N + 200))
    assert views == read_polled(conf, "mixed", N + 200)
    assert False in flags and flags[0] is True


def test_read_committed_views_behind_the_ring_leave_out_aborted_transactions(conf, admin):
    create_topic(admin, "txns", ring_bytes=RING, retention_ms=-1)
    p = shmlog.Producer({**conf, "transactional.id": "behind-the-ring"})
    try:
        p.init_transactions(10)
        for round_ in range(4):
            p.begin_transaction()
            for i in range(300):
                p.produce("txns", value=b"r%d-%d-" % (round_, i) + b"y" * 200, partition=0)
            (p.abort_transaction if round_ == 1 else p.commit_transaction)(10)
    finally:
        p.close()
    produce(conf, "txns", 0, N)
    assert behind_the_ring(conf, "txns")
    views, _ = read_views(conf, "txns", 900 + N, **{"isolation.level": "read_committed"})
    values = [v for _, _, v, _ in views]
    assert not any(v.startswith(b"r1-") for v in values)
    assert sum(v.startswith(b"r") for v in values) == 900 and len(values) == 900 + N
    assert views == read_polled(conf, "txns", 900 + N, **{"isolation.level": "read_committed"})
