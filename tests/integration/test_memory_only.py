"""Memory-only topics (topic config shmlog.persist=false; docs/durability.md): the ring is all
there is. Producers overwrite it as it wraps (nothing waits for a persister), nothing is written
to disk, a consumer the ring left behind is out of range (auto.offset.reset), acks=all is
refused. Real broker, real processes."""
import os

import pytest

import shmlog
from shmlog import KafkaError, KafkaException, TopicPartition
from tests.conftest import create_topic

RING_BYTES = 65536
RECORD = b"x" * 200


def produce(conf, topic, n, **extra):
    p = shmlog.Producer({**conf, "acks": "1", "linger.ms": 0, **extra})
    for i in range(n):
        p.produce(topic, RECORD + i.to_bytes(8, "big"), partition=0)
        if i % 256 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return p


def topic_dirs(data_dir, topic):
    logs = os.path.join(data_dir, "logs")   # the default log.dirs
    return [d for d in os.listdir(logs) if d.startswith(f"{topic}-")]


def test_producers_overwrite_a_memory_only_ring_without_a_persister_and_nothing_reaches_disk(conf, admin, data_dir):
    create_topic(admin, "mem", 1, ring_bytes=RING_BYTES, shmlog_persist="false")
    n = 20 * RING_BYTES // len(RECORD)   # twenty rings' worth: the ring wraps about twenty times
    produce(conf, "mem", n)
    low, high = shmlog.Consumer({**conf, "group.id": "g"}).get_watermark_offsets(TopicPartition("mem", 0))
    assert high == n
    assert 0 < low < high                 # only the newest records are still there
    assert topic_dirs(data_dir, "mem") == []


def test_a_consumer_behind_a_memory_only_ring_resets_to_the_oldest_record_it_holds(conf, admin):
    create_topic(admin, "mem", 1, ring_bytes=RING_BYTES, shmlog_persist="false")
    n = 5 * RING_BYTES // len(RECORD)
    produce(conf, "mem", n)
    c = shmlog.Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("mem", 0, 0)])
    offsets = []
    while not offsets or offsets[-1] < n - 1:
        m = c.poll(10)
        assert m is not None and m.error() is None, m and m.error()
        offsets.append(m.offset())
    c.close()
    assert offsets[0] > 0
    assert offsets == list(range(offsets[0], n))   # dense from where the ring starts


def test_a_consumer_behind_a_memory_only_ring_with_reset_error_gets_offset_out_of_range(conf, admin):
    create_topic(admin, "mem", 1, ring_bytes=RING_BYTES, shmlog_persist="false")
    produce(conf, "mem", 5 * RING_BYTES // len(RECORD))
    c = shmlog.Consumer({**conf, "group.id": "g", "auto.offset.reset": "error"})
    with pytest.raises(KafkaException) as raised:
        c.assign([TopicPartition("mem", 0, 0)])
        c.poll(5)
    c.close()
    assert raised.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    assert "memory-only" in raised.value.args[0].str() or "outside" in raised.value.args[0].str()


def test_acks_all_to_a_memory_only_topic_is_refused_naming_the_topic_config(conf, admin):
    create_topic(admin, "mem", 1, shmlog_persist="false")
    p = shmlog.Producer({**conf, "acks": "all"})
    with pytest.raises(KafkaException) as raised:
        p.produce("mem", b"v")
    assert raised.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert "shmlog.persist=false" in raised.value.args[0].str()


def test_a_memory_only_topic_cannot_be_compacted_and_its_persist_setting_cannot_change(admin):
    futures = admin.create_topics([shmlog.NewTopic("memc", 1, config={"shmlog.persist": "false",
                                                                       "cleanup.policy": "compact"})])
    with pytest.raises(KafkaException) as raised:
        futures["memc"].result()
    assert "shmlog.persist=false" in raised.value.args[0].str()
    create_topic(admin, "mem", 1, shmlog_persist="false")
    res = admin.alter_configs([shmlog.ConfigResource("topic", "mem", set_config={"shmlog.persist": "true"})])
    with pytest.raises(KafkaException) as raised:
        list(res.values())[0].result()
    assert "shmlog.persist cannot change" in raised.value.args[0].str()


def test_the_persister_does_not_open_memory_only_topics(conf, admin, data_dir):
    create_topic(admin, "mem", 4, shmlog_persist="false")
    create_topic(admin, "disk", 1)
    produce(conf, "mem", 100)
    produce(conf, "disk", 100)
    # The disk topic is persisted (an acks=all record there returns once fsynced), the memory-only
    # one never gets a directory.
    p = shmlog.Producer({**conf, "acks": "all"})
    p.produce("disk", b"durable", partition=0)
    assert p.flush(30) == 0
    assert any(f.endswith(".log") for f in os.listdir(os.path.join(data_dir, "logs", "disk-0")))
    assert topic_dirs(data_dir, "mem") == []
