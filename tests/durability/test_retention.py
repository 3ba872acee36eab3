"""Retention and the log start offset: retention.ms / retention.bytes delete whole old
segments, delete_records moves the log start offset, consumers below it follow
auto.offset.reset, and offsets_for_times answers from the time indexes.

The persister checks retention every log.retention.check.interval.ms (50 ms here); tests wait
for what it publishes (the log start offset in the ring header, the files in the partition
directory), never for a fixed time.
"""
import os
import time

import pytest

import shmlog
from shmlog import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from .conftest import (
    create_topic,
    partition_dir,
    produce,
    read_all,
    segment_bases,
    wait_for,
)

CHECK = {"log_retention_check_interval_ms": 50}
RECORD = b"r" * 1000


def now_ms():
    return time.time_ns() // 1_000_000


def low_watermark(conf, topic, partition=0):
    c = shmlog.Consumer({**conf, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition))[0]
    finally:
        c.close()


def delete_records(conf, topic, offset, partition=0):
    admin = shmlog.AdminClient(conf)
    try:
        tp = TopicPartition(topic, partition, offset)
        return admin.delete_records([tp])[tp].result()
    finally:
        admin.close()


def test_retention_bytes_deletes_the_oldest_segments_and_advances_the_log_start_offset(data_dir, start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=10_000, retention_bytes=30_000)
    produce(conf, "t", [RECORD] * 100, linger_ms=0)  # ~105 KB: 11 segments of 9 records

    start = wait_for(lambda: low_watermark(conf, "t") or None, "retention.bytes to delete segments")
    pdir = partition_dir(data_dir, "t")
    wait_for(lambda: segment_bases(pdir)[0] == start, "the files below the log start offset to go")

    bases = segment_bases(pdir)
    sizes = [os.path.getsize(os.path.join(pdir, f"{b:020d}.log")) for b in bases]
    assert sum(sizes) >= 30_000 > sum(sizes) - sizes[0]  # as many kept as fit, not one more
    assert [o for _, o, _ in read_all(conf, "t")] == list(range(start, 100))


def test_retention_ms_deletes_segments_whose_newest_record_is_older_than_it(data_dir, start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=10_000, retention_ms=3_600_000)
    old, new = now_ms() - 7_200_000, now_ms()
    produce(conf, "t", [RECORD] * 30, timestamps=[old] * 20 + [new] * 10, linger_ms=0)

    wait_for(lambda: low_watermark(conf, "t") == 18, "retention.ms to move the log start past two segments")
    # the third segment (offsets 18..26) holds new records too: it stays whole
    wait_for(lambda: segment_bases(partition_dir(data_dir, "t"))[0] == 18, "the two old segments to go")
    assert low_watermark(conf, "t") == 18


def test_retention_deleting_everything_keeps_offsets_continuing_after_a_restart(data_dir, start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", retention_ms=1000)
    produce(conf, "t", [RECORD] * 5, timestamps=[now_ms() - 60_000] * 5)
    wait_for(lambda: low_watermark(conf, "t") == 5, "retention.ms to delete the only segment")
    broker.stop()
    assert segment_bases(partition_dir(data_dir, "t")) == [5]

    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    assert [o for _, _, o, _ in produce(conf, "t", [RECORD])] == [5]


def test_delete_records_returns_the_new_low_watermark_and_consumers_stop_seeing_records_below_it(data_dir,
                                                                                                start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"%d" % i for i in range(20)])

    assert delete_records(conf, "t", 12).low_watermark == 12

    assert [v for _, _, v in read_all(conf, "t")] == [b"%d" % i for i in range(12, 20)]


def test_delete_records_deletes_the_segments_wholly_below_the_new_log_start_offset(data_dir, start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=10_000)
    produce(conf, "t", [RECORD] * 40, linger_ms=0)
    pdir = partition_dir(data_dir, "t")
    assert segment_bases(pdir)[:3] == [0, 9, 18]

    delete_records(conf, "t", 20)

    wait_for(lambda: segment_bases(pdir)[0] == 18, "the segments below offset 20 to go")


def test_delete_records_with_offset_end_deletes_everything_produced_so_far(data_dir, start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"x"] * 7)
    assert delete_records(conf, "t", OFFSET_END).low_watermark == 7


def test_delete_records_survives_a_broker_restart(data_dir, start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"x"] * 10)
    delete_records(conf, "t", 6)
    broker.stop()

    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    assert low_watermark(conf, "t") == 6


def test_delete_records_past_the_high_watermark_fails_with_offset_out_of_range(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"x"] * 3)
    with pytest.raises(KafkaException) as caught:
        delete_records(conf, "t", 4)
    assert caught.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE


def test_delete_records_of_an_unknown_partition_fails_with_unknown_topic_or_part(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    with pytest.raises(KafkaException) as caught:
        delete_records(conf, "t", 0, partition=3)
    assert caught.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


@pytest.fixture
def consumer_below_log_start(data_dir, start_broker):
    """(conf, make_consumer): a consumer positioned at offset 2, then records 0..9 deleted."""
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    produce(conf, "t", [b"%d" % i for i in range(15)])
    consumers = []

    def make(reset):
        c = shmlog.Consumer({**conf, "group.id": "g", "auto.offset.reset": reset})
        consumers.append(c)
        c.assign([TopicPartition("t", 0, 2)])
        delete_records(conf, "t", 10)
        return c

    yield make
    for c in consumers:
        c.close()


def test_a_consumer_below_the_log_start_offset_with_earliest_continues_from_it(consumer_below_log_start):
    c = consumer_below_log_start("earliest")
    msg = c.poll(10)
    assert (msg.error(), msg.offset(), msg.value()) == (None, 10, b"10")


def test_a_consumer_below_the_log_start_offset_with_latest_continues_from_the_end(consumer_below_log_start):
    c = consumer_below_log_start("latest")
    assert c.poll(0.2) is None
    assert c.position([TopicPartition("t", 0)])[0].offset == 15


def test_a_consumer_below_the_log_start_offset_with_error_gets_offset_out_of_range(consumer_below_log_start):
    c = consumer_below_log_start("error")
    with pytest.raises(KafkaException) as caught:
        c.poll(1)
    assert caught.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    c.seek(TopicPartition("t", 0, 12))
    assert c.poll(10).offset() == 12


def test_a_consumer_reading_segments_when_retention_deletes_them_resets_to_the_new_log_start(data_dir,
                                                                                             start_broker):
    broker = start_broker(**CHECK)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=10_000, ring_bytes=65536)
    produce(conf, "t", [RECORD] * 200, linger_ms=0)
    c = shmlog.Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("t", 0, OFFSET_BEGINNING)])
    assert c.poll(10).offset() == 0  # reading the oldest segment
    delete_records(conf, "t", 150)
    wait_for(lambda: segment_bases(partition_dir(data_dir, "t"))[0] > 100, "the old segments to go")

    offsets = []
    while not offsets or offsets[-1] < 199:
        batch = c.consume(1000, 10)
        assert batch, f"nothing more after {offsets}"
        offsets += [m.offset() for m in batch]

    # What the first fetch had already decoded is still delivered (as from Kafka), then the log start.
    prefetched = [o for o in offsets if o < 150]
    assert prefetched == list(range(1, len(prefetched) + 1))
    assert offsets[len(prefetched):] == list(range(150, 200))
    c.close()


def test_offsets_for_times_returns_the_earliest_offset_whose_timestamp_is_at_or_after_it(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=10_000, ring_bytes=65536)
    t0 = now_ms() - 1_000_000
    produce(conf, "t", [RECORD] * 300, timestamps=[t0 + 1000 * i for i in range(300)], linger_ms=0)
    c = shmlog.Consumer({**conf, "group.id": "g"})

    asked = [TopicPartition("t", 0, t0 + 1000 * i + d) for i, d in ((0, 0), (17, 1), (150, -1), (299, 0))]
    got = [tp.offset for tp in c.offsets_for_times(asked)]

    assert got == [0, 18, 150, 299]
    c.close()


def test_offsets_for_times_past_the_newest_record_returns_offset_end(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    t0 = now_ms()
    produce(conf, "t", [b"a", b"b"], timestamps=[t0, t0 + 1000])
    c = shmlog.Consumer({**conf, "group.id": "g"})
    assert c.offsets_for_times([TopicPartition("t", 0, t0 + 1001)])[0].offset == OFFSET_END
    c.close()


def test_offsets_for_times_finds_records_still_only_in_the_ring(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    t0 = now_ms()
    produce(conf, "t", [b"a", b"b", b"c"], timestamps=[t0, t0 + 2000, t0 + 1000], acks=1)
    c = shmlog.Consumer({**conf, "group.id": "g"})
    assert c.offsets_for_times([TopicPartition("t", 0, t0 + 1500)])[0].offset == 1
    c.close()


def test_offsets_for_times_ignores_records_below_the_log_start_offset(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t")
    t0 = now_ms()
    produce(conf, "t", [b"a", b"b", b"c"], timestamps=[t0, t0 + 1, t0 + 2])
    delete_records(conf, "t", 2)
    c = shmlog.Consumer({**conf, "group.id": "g"})
    assert c.offsets_for_times([TopicPartition("t", 0, t0)])[0].offset == 2
    c.close()
