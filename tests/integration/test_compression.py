"""Producer-side compression against a real broker: what lands in the ring and the segment
files, what consumers read back, and what a corrupt compressed batch does."""
import json
import os
import random
import struct
import time

import numpy as np
import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from shmlog._native import ffi, lib
from shmlog.client.cluster import Cluster
from shmlog.log import codec
from shmlog.log.segment import list_segments, partition_dir, segment_path
from tests.conftest import create_topic

CODECS = ["gzip", "snappy", "lz4", "zstd"]
T0 = int(time.time() * 1000) - 60_000  # record timestamps: recent, so retention.ms keeps them


def events(n, tag="", seed=7):
    rnd = random.Random(seed)
    return [json.dumps({"tag": tag, "seq": i, "symbol": rnd.choice(["AAPL", "MSFT", "NVDA", "AMZN"]),
                        "price": round(rnd.uniform(10, 900), 2), "qty": rnd.randint(1, 5000),
                        "side": rnd.choice(["buy", "sell"]), "notes": "x" * rnd.randint(0, 300)}).encode()
            for i in range(n)]


def produce(conf, topic, values, codec_name, partition=0, extra=None, keys=True):
    p = shmlog.Producer({**conf, "compression.type": codec_name, "linger.ms": 1000, "acks": "all",
                         **(extra or {})})
    acked = []
    for i, v in enumerate(values):
        p.produce(topic, value=v, key=f"k{i}" if keys else None, partition=partition, timestamp=T0 + i,
                  headers={"codec": codec_name, "i": str(i)}, on_delivery=lambda e, m: acked.append(e))
    assert p.flush(30) == 0
    p.close()
    assert acked == [None] * len(values)


def consume_all(conf, topic, expected, partition=0, extra=None):
    c = shmlog.Consumer({**conf, **(extra or {})})
    c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    out = []
    while len(out) < expected:
        got = c.consume(1000, timeout=10)
        assert got, f"only {len(out)} of {expected} records arrived"
        out += got
    c.close()
    return out


def segment_batches(conf, topic, partition=0):
    """(attributes, record_count, batch bytes) of every batch in the partition's segment files."""
    cluster = Cluster(conf["bootstrap.servers"], "consumer")
    try:
        pdir = partition_dir(cluster.topic(topic)["log_dirs"][partition], topic, partition)
    finally:
        cluster.close()
    out = []
    for base in list_segments(pdir):
        data = open(segment_path(pdir, base), "rb").read()
        pos = 0
        while pos < len(data):
            length, = struct.unpack_from(">i", data, pos + 8)
            batch = data[pos:pos + 12 + length]
            out.append((struct.unpack_from(">h", batch, 21)[0], struct.unpack_from(">i", batch, 57)[0], batch))
            pos += 12 + length
    return out


@pytest.mark.parametrize("name", CODECS)
def test_each_codec_round_trips_keys_values_headers_and_timestamps(conf, topic, name):
    values = events(300, name)
    produce(conf, topic, values, name)
    got = consume_all(conf, topic, 300)
    assert [m.value() for m in got] == values
    assert [m.key() for m in got] == [b"k%d" % i for i in range(300)]
    assert [m.offset() for m in got] == list(range(300))
    assert [m.timestamp()[1] for m in got] == [T0 + i for i in range(300)]
    assert got[7].headers() == [("codec", name.encode()), ("i", b"7")]


def test_codecs_mix_within_one_partition(conf, topic):
    sent = []
    for name in ["none", "gzip", "snappy", "lz4", "zstd", "gzip"]:
        values = events(50, name)
        produce(conf, topic, values, name)
        sent += values
    assert [m.value() for m in consume_all(conf, topic, len(sent))] == sent
    assert [a & 7 for a, _, _ in segment_batches(conf, topic)] == [0, 1, 2, 3, 4, 1]


@pytest.mark.parametrize("name", CODECS)
def test_batches_stay_compressed_in_segment_files_with_kafkas_header_fields(conf, topic, name):
    values = events(200, name)
    produce(conf, topic, values, name)
    [(attributes, count, batch)] = segment_batches(conf, topic)
    assert attributes & 7 == codec.codec_id(name)
    assert count == 200
    crc, = struct.unpack_from(">I", batch, 17)
    assert crc == lib.shmlog_crc32c(0, ffi.from_buffer(batch) + 21, len(batch) - 21)
    records = bytes(codec.decompress(codec.codec_id(name), batch[61:]))
    assert len(batch) - 61 < len(records)
    assert all(v in records for v in values[:5])


def test_batches_stay_compressed_in_the_ring(conf, topic):
    produce(conf, topic, events(100), "zstd")
    cluster = Cluster(conf["bootstrap.servers"], "consumer")
    try:
        ring = cluster.ring(topic, 0)
        cursor = ring.locate(0)
        frames = ffi.new("shmlog_frame_ref[]", 8)
        assert ring.fetch(cursor, ffi.NULL, 0, frames, 8, 1) == 1
        batch = ring.mapping.view()[frames[0].map_pos:frames[0].map_pos + frames[0].batch_bytes]
        assert struct.unpack_from(">h", batch, 21)[0] & 7 == codec.ZSTD
        assert bytes(batch[61:65]) == b"\x28\xb5\x2f\xfd"  # a zstd frame right after the header
        del batch
    finally:
        cluster.close()


def test_a_consumer_behind_the_ring_reads_compressed_batches_from_the_segment_files(conf, admin):
    create_topic(admin, "small", 1, ring_bytes=65536)
    sent = []
    for round_ in range(12):  # ~12 x 40 KB compressed: the 64 KB ring is reused many times over
        values = [os.urandom(60) + v for v in events(250, f"r{round_}", seed=round_)]
        produce(conf, "small", values, "lz4")
        sent += values
    cluster = Cluster(conf["bootstrap.servers"], "consumer")
    try:
        assert cluster.ring("small", 0).locate(0) is None  # offset 0 is only in the segment files now
    finally:
        cluster.close()
    assert [m.value() for m in consume_all(conf, "small", len(sent))] == sent


def test_consume_batch_hands_out_a_decompressed_copy_of_a_compressed_batch(conf, topic):
    values = events(100)
    produce(conf, topic, values, "snappy", keys=False)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    view = c.consume_batch(timeout=10)
    assert not view.zero_copy
    assert view.offsets.tolist() == list(range(100))
    assert [bytes(v) for v in view.values()] == values
    assert view.keys() == [None] * 100
    c.close()


def test_consume_batch_returns_uncompressed_records_in_place_before_a_compressed_batch(conf, topic):
    produce(conf, topic, events(10, "plain"), "none")
    produce(conf, topic, events(10, "packed"), "gzip")
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    first, second = c.consume_batch(timeout=10), c.consume_batch(timeout=10)
    assert (first.zero_copy, first.offsets.tolist()) == (True, list(range(10)))
    assert (second.zero_copy, second.offsets.tolist()) == (False, list(range(10, 20)))
    assert [bytes(v) for v in second.values()] == events(10, "packed")
    c.close()


def test_numpy_rows_sent_with_produce_values_are_compressed_and_read_back_with_values_as(conf, topic):
    rows = np.zeros(2000, dtype=[("ts", "<i8"), ("price", "<f8"), ("qty", "<i4")])
    rows["ts"] = np.arange(2000)
    rows["price"] = 100.25
    p = shmlog.Producer({**conf, "compression.type": "lz4"})
    p.produce_values(topic, rows, partition=0)
    p.close()
    [(attributes, _, _)] = segment_batches(conf, topic)
    assert attributes & 7 == codec.LZ4
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    view = c.consume_batch(timeout=10)
    np.testing.assert_array_equal(view.values_as(rows.dtype), rows)
    c.close()


def test_compression_level_is_applied_to_the_stored_batches(conf, admin):
    for level in (1, 9):
        create_topic(admin, f"level{level}", 1)
        produce(conf, f"level{level}", events(400), "gzip", extra={"compression.level": level})
    size = {level: len(segment_batches(conf, f"level{level}")[0][2]) for level in (1, 9)}
    assert size[9] < size[1]


def test_records_that_do_not_shrink_are_stored_uncompressed(conf, topic):
    p = shmlog.Producer({**conf, "compression.type": "zstd", "linger.ms": 1000, "acks": "all"})
    for _ in range(20):
        p.produce(topic, value=os.urandom(500), partition=0)
    assert p.flush(30) == 0
    p.close()
    assert [a & 7 for a, _, _ in segment_batches(conf, topic)] == [0]
    assert len(consume_all(conf, topic, 20)) == 20


# ---------------------------------------------------------------------- corruption

def three_batches_with_a_corrupt_middle(conf, topic):
    """Three gzip batches of 10 records (offsets 0-9, 10-19, 20-29); the middle one's
    compressed bytes are then overwritten in the ring (its CRC no longer matches)."""
    for i in range(3):
        produce(conf, topic, events(10, f"b{i}"), "gzip")
    cluster = Cluster(conf["bootstrap.servers"], "consumer")
    try:
        ring = cluster.ring(topic, 0)
        frames = ffi.new("shmlog_frame_ref[]", 8)
        assert ring.fetch(ring.locate(0), ffi.NULL, 0, frames, 8, 1) == 3
        batch_at = frames[1].map_pos
        assert struct.unpack_from(">q", ring.mapping.mm, batch_at)[0] == 10
        ring.mapping.mm[batch_at + 61 + 20:batch_at + 61 + 60] = b"\xa5" * 40
    finally:
        cluster.close()


def test_a_corrupt_compressed_batch_raises_a_clear_error_naming_topic_partition_and_offset(conf, topic):
    three_batches_with_a_corrupt_middle(conf, topic)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, 10)])
    with pytest.raises(KafkaException) as exc:
        c.poll(5)
    err = exc.value.args[0]
    assert err.code() == KafkaError._BAD_COMPRESSION
    assert f"{topic}-0" in err.str() and "offset 10" in err.str() and "gzip" in err.str()
    c.close()


def test_records_before_a_corrupt_compressed_batch_are_returned_before_the_error(conf, topic):
    three_batches_with_a_corrupt_middle(conf, topic)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    assert [m.offset() for m in c.consume(100, 5)] == list(range(10))
    with pytest.raises(KafkaException):
        c.consume(100, 5)
    with pytest.raises(KafkaException):  # still there until the application seeks past it
        c.poll(1)
    assert c.position([TopicPartition(topic, 0)])[0].offset == 10
    c.close()


def test_the_consumer_skips_a_corrupt_compressed_batch_by_seeking_past_it(conf, topic):
    three_batches_with_a_corrupt_middle(conf, topic)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, 10)])
    with pytest.raises(KafkaException):
        c.poll(5)
    c.seek(TopicPartition(topic, 0, 20))
    got = c.consume(100, 5)
    assert [m.offset() for m in got] == list(range(20, 30))
    assert [m.value() for m in got] == events(10, "b2")
    c.close()


def test_consume_batch_raises_on_a_corrupt_compressed_batch_and_skips_it_after_a_seek(conf, topic):
    three_batches_with_a_corrupt_middle(conf, topic)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, 10)])
    with pytest.raises(KafkaException, match=f"{topic}-0.*offset 10"):
        c.consume_batch(timeout=5)
    c.seek(TopicPartition(topic, 0, 20))
    assert c.consume_batch(timeout=5).offsets.tolist() == list(range(20, 30))
    c.close()


def test_with_check_crcs_a_corrupt_compressed_batch_is_a_crc_error(conf, topic):
    three_batches_with_a_corrupt_middle(conf, topic)
    c = shmlog.Consumer({**conf, "check.crcs": True})
    c.assign([TopicPartition(topic, 0, 10)])
    with pytest.raises(KafkaException) as exc:
        c.poll(5)
    assert exc.value.args[0].code() == KafkaError._BAD_MSG
    c.close()
