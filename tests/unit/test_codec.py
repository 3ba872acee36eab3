"""Compression codecs: round trips, and the exact framing Apache Kafka's Java client writes.

The framing checks decode the bytes by hand (Kafka's published formats: xerial snappy's
header and chunks, the LZ4 frame descriptor and its xxHash32 header checksum) rather than
trusting the same library that wrote them.
"""
import gzip
import json
import os
import random
import struct

import cramjam
import numpy as np
import pytest

from shmlog._native import ffi, layout, lib
from shmlog.client.producer import _Batch
from shmlog.log import codec

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def trade_events(n, seed=1):
    rnd = random.Random(seed)
    return [json.dumps({"id": i, "symbol": rnd.choice(["AAPL", "MSFT", "NVDA"]), "price": rnd.uniform(1, 500),
                        "qty": rnd.randint(1, 1000), "venue": rnd.choice(["XNAS", "XNYS"]),
                        "note": "trade " * rnd.randint(1, 40)}).encode() for i in range(n)]


def records_section(values, keys=None, headers=None):
    batch = _Batch()
    for i, v in enumerate(values):
        key = keys[i] if keys else None
        batch.add(key, v, 1_700_000_000_000 + i, headers[i] if headers else None, None, len(v))
    records, _, _ = batch.encode()
    return bytes(records)


def compressed_batch(values, codec_name, base_offset=100, level=-1):
    """A whole RecordBatch v2 as the producer builds it: header + compressed records."""
    section = records_section(values)
    packed, attributes = codec.compress_records(section, codec.codec_id(codec_name), level)
    packed = bytes(packed)
    batch = bytearray(layout.BATCH_HEADER_BYTES + len(packed))
    batch[layout.BATCH_HEADER_BYTES:] = packed
    lib.shmlog_batch_write_header(ffi.from_buffer(batch), len(packed), base_offset, 0, attributes, len(values),
                                  1_700_000_000_000, 1_700_000_000_000 + len(values) - 1, -1, -1, -1)
    return batch


def xxh32(data, seed=0):
    """xxHash32 (the LZ4 frame header checksum), for inputs shorter than 16 bytes."""
    p1, p2, p3, p4, p5, m = 2654435761, 2246822519, 3266489917, 668265263, 374761393, 0xFFFFFFFF
    assert len(data) < 16
    h = (seed + p5 + len(data)) & m
    i = 0
    while i + 4 <= len(data):
        h = (h + int.from_bytes(data[i:i + 4], "little") * p3) & m
        h = ((h << 17 | h >> 15) & m) * p4 & m
        i += 4
    for b in data[i:]:
        h = (h + b * p5) & m
        h = ((h << 11 | h >> 21) & m) * p1 & m
    h ^= h >> 15
    h = h * p2 & m
    h ^= h >> 13
    h = h * p3 & m
    return h ^ (h >> 16)


# ---------------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", CODECS)
def test_each_codec_round_trips_a_records_section(name):
    section = records_section(trade_events(500))
    packed = codec.compress(codec.codec_id(name), section)
    assert len(packed) < len(section)
    assert bytes(codec.decompress(codec.codec_id(name), bytes(packed))) == section


@pytest.mark.parametrize("name", CODECS)
def test_each_codec_round_trips_an_empty_and_a_multi_block_input(name):
    big = os.urandom(50_000) * 4  # 200 KB: several snappy chunks and lz4 blocks, partly incompressible
    for data in (b"", big):
        packed = codec.compress(codec.codec_id(name), data)
        assert bytes(codec.decompress(codec.codec_id(name), bytes(packed))) == data


@pytest.mark.parametrize("name", CODECS)
def test_every_compression_level_round_trips(name):
    section = records_section(trade_events(100))
    for level in range(-1, 13):
        packed = codec.compress(codec.codec_id(name), section, level)
        assert bytes(codec.decompress(codec.codec_id(name), bytes(packed))) == section


# ---------------------------------------------------------------------- Kafka's framing

def test_snappy_is_written_in_xerial_framing_as_the_java_client_writes_it():
    section = records_section(trade_events(600))
    assert len(section) > 3 * 32 * 1024
    packed = bytes(codec.compress(codec.SNAPPY, section))
    assert packed[:8] == b"\x82SNAPPY\x00"
    assert struct.unpack(">ii", packed[8:16]) == (1, 1)  # version, compatible version
    pos, chunks = 16, []
    while pos < len(packed):
        n, = struct.unpack_from(">i", packed, pos)
        chunks.append(bytes(cramjam.snappy.decompress_raw(packed[pos + 4:pos + 4 + n])))
        pos += 4 + n
    assert pos == len(packed)
    assert [len(c) for c in chunks[:-1]] == [32 * 1024] * (len(chunks) - 1)  # snappy-java's block size
    assert b"".join(chunks) == section


def test_raw_snappy_as_librdkafka_writes_it_is_read_too():
    section = records_section(trade_events(50))
    raw = bytes(cramjam.snappy.compress_raw(section))
    assert bytes(codec.decompress(codec.SNAPPY, raw)) == section


def test_lz4_is_written_as_kafkas_frame_with_independent_blocks_and_no_checksums():
    section = records_section(trade_events(600))
    packed = bytes(codec.compress(codec.LZ4, section))
    magic, flg, bd, hc = struct.unpack_from("<IBBB", packed, 0)
    assert magic == 0x184D2204
    assert flg == 0b01_1_0_0_0_00  # version 01, block independence, no block/content checksum or size
    assert bd == 4 << 4             # 64 KiB blocks
    assert hc == (xxh32(bytes([flg, bd])) >> 8) & 0xFF
    pos, out = 7, []
    while True:
        size, = struct.unpack_from("<I", packed, pos)
        pos += 4
        if size == 0:
            break
        n = size & 0x7FFFFFFF
        block = packed[pos:pos + n]
        expected = min(64 * 1024, len(section) - 64 * 1024 * len(out))
        # Each block decodes on its own: Kafka's reader decompresses blocks without a dictionary.
        out.append(block if size & 0x80000000 else bytes(cramjam.lz4.decompress_block(block, output_len=expected)))
        pos += n
    assert pos == len(packed)
    assert all(len(b) == 64 * 1024 for b in out[:-1])
    assert b"".join(out) == section


def test_incompressible_lz4_blocks_are_stored_with_the_high_bit_set():
    data = os.urandom(70_000)
    packed = bytes(codec.compress(codec.LZ4, data))
    first, = struct.unpack_from("<I", packed, 7)
    assert first == (64 * 1024) | 0x80000000
    assert packed[11:11 + 64 * 1024] == data[:64 * 1024]


def test_an_lz4_frame_with_linked_blocks_and_checksums_is_read_too():
    section = records_section(trade_events(300))
    c = cramjam.lz4.Compressor()
    c.compress(section)
    frame = bytes(c.finish())
    assert frame[4] & 0x20 == 0  # this library's default frame links its blocks
    assert bytes(codec.decompress(codec.LZ4, frame)) == section


def test_gzip_output_is_one_standard_gzip_member():
    section = records_section(trade_events(100))
    packed = bytes(codec.compress(codec.GZIP, section))
    assert packed[:3] == b"\x1f\x8b\x08"
    assert gzip.decompress(packed) == section


def test_gzip_written_by_another_library_is_read():
    section = records_section(trade_events(100))
    assert bytes(codec.decompress(codec.GZIP, gzip.compress(section, 1))) == section


def test_zstd_output_is_one_standard_zstd_frame():
    section = records_section(trade_events(100))
    packed = bytes(codec.compress(codec.ZSTD, section))
    assert packed[:4] == b"\x28\xb5\x2f\xfd"
    assert bytes(codec.decompress(codec.ZSTD, packed)) == section


def test_a_streamed_zstd_frame_without_a_content_size_is_read():
    section = records_section(trade_events(100))
    c = cramjam.zstd.Compressor(level=3)
    c.compress(section)
    frame = bytes(c.finish())
    assert bytes(codec.decompress(codec.ZSTD, frame)) == section


# ---------------------------------------------------------------------- levels and choices

def test_compression_level_minus_one_means_the_codecs_default():
    assert [codec.effective_level(c, -1) for c in (codec.GZIP, codec.LZ4, codec.ZSTD)] == [6, 0, 3]


def test_a_level_above_the_codecs_range_is_clamped_as_librdkafka_does():
    assert codec.effective_level(codec.GZIP, 12) == 9
    assert codec.effective_level(codec.SNAPPY, 5) == 0


def test_a_higher_gzip_level_compresses_at_least_as_well():
    section = records_section(trade_events(300))
    assert len(codec.compress(codec.GZIP, section, 9)) <= len(codec.compress(codec.GZIP, section, 1))


def test_records_that_do_not_shrink_are_sent_uncompressed():
    data = os.urandom(5000)
    packed, attributes = codec.compress_records(data, codec.ZSTD)
    assert (bytes(packed), attributes) == (data, 0)


def test_codec_names_follow_compression_type():
    assert [codec.codec_id(n) for n in ("none", "GZIP", "snappy", "lz4", "zstd", "uncompressed")] == [0, 1, 2, 3, 4, 0]
    with pytest.raises(ValueError, match="brotli"):
        codec.codec_id("brotli")


# ---------------------------------------------------------------------- whole batches

@pytest.mark.parametrize("name", CODECS)
def test_a_compressed_batch_keeps_the_uncompressed_count_and_a_crc_over_the_compressed_bytes(name):
    values = trade_events(50)
    batch = compressed_batch(values, name)
    count, = struct.unpack_from(">i", batch, 57)
    attributes, = struct.unpack_from(">h", batch, 21)
    crc, = struct.unpack_from(">I", batch, 17)
    assert count == 50
    assert attributes & 7 == codec.codec_id(name)
    assert crc == lib.shmlog_crc32c(0, ffi.from_buffer(batch) + 21, len(batch) - 21)
    assert len(batch) < layout.BATCH_HEADER_BYTES + len(records_section(values))


@pytest.mark.parametrize("name", CODECS)
def test_a_compressed_batch_is_indexed_into_its_records(name):
    values = trade_events(20)
    refs = np.empty(20, layout.RECORD_REF_DTYPE)
    records, n = codec.index_compressed_batch(compressed_batch(values, name, base_offset=100), refs, True)
    assert n == 20
    assert refs["offset"].tolist() == list(range(100, 120))
    assert refs["timestamp"].tolist() == [1_700_000_000_000 + i for i in range(20)]
    assert [bytes(records[p:p + k]) for p, k in zip(refs["value_pos"], refs["value_len"])] == values


def test_the_records_index_reports_keys_headers_and_nulls_of_a_decompressed_section():
    section = records_section([b"v0", b""], keys=[b"k0", None], headers=[[("h", b"x")], None])
    refs = np.empty(2, layout.RECORD_REF_DTYPE)
    n = lib.shmlog_records_index(section, len(section), 2, 7, 1000, 1001, 0,
                                 ffi.from_buffer("shmlog_record_ref[]", refs), 2)
    assert n == 2
    assert refs["key_len"].tolist() == [2, -1]
    assert section[refs["key_pos"][0]:refs["key_pos"][0] + 2] == b"k0"
    assert refs["headers_count"].tolist() == [1, 0]


def test_a_decompressed_section_with_bytes_after_its_last_record_is_corrupt():
    section = records_section([b"a", b"b"]) + b"\0"
    refs = np.empty(2, layout.RECORD_REF_DTYPE)
    assert lib.shmlog_records_index(section, len(section), 2, 0, 0, 0, 0,
                                    ffi.from_buffer("shmlog_record_ref[]", refs), 2) == lib.SHMLOG_ECORRUPT


def test_a_decompressed_section_holding_fewer_records_than_its_header_counts_is_corrupt():
    section = records_section([b"a", b"b"])
    refs = np.empty(3, layout.RECORD_REF_DTYPE)
    assert lib.shmlog_records_index(section, len(section), 3, 0, 0, 0, 0,
                                    ffi.from_buffer("shmlog_record_ref[]", refs), 3) == lib.SHMLOG_ECORRUPT


@pytest.mark.parametrize("name", CODECS)
def test_garbage_in_a_compressed_batch_is_a_codec_error_naming_the_codec(name):
    batch = compressed_batch(trade_events(20), name)
    garbage = bytes(random.Random(3).getrandbits(8) for _ in range(len(batch) - 61))
    batch[61:] = garbage
    lib.shmlog_batch_write_header(ffi.from_buffer(batch), len(garbage), 100, 0, codec.codec_id(name), 20, 0, 0,
                                  -1, -1, -1)
    with pytest.raises(codec.CodecError, match=name):
        codec.index_compressed_batch(batch, np.empty(20, layout.RECORD_REF_DTYPE), False)


@pytest.mark.parametrize("name", CODECS)
def test_decode_compressed_batch_returns_the_records_and_one_ref_per_record(name):
    values = trade_events(30)
    records, refs = codec.decode_compressed_batch(compressed_batch(values, name, base_offset=5), False)
    assert refs["offset"].tolist() == list(range(5, 35))
    assert [bytes(records[p:p + k]) for p, k in zip(refs["value_pos"], refs["value_len"])] == values


def test_a_record_count_the_decompressed_section_cannot_hold_is_refused_before_allocating():
    batch = compressed_batch(trade_events(3), "lz4")
    struct.pack_into(">i", batch, 57, 2**31 - 1)   # a garbage count, CRC not checked
    struct.pack_into(">i", batch, 23, 2**31 - 2)   # lastOffsetDelta to match, so the header validates
    with pytest.raises(codec.CodecError, match="cannot hold them"):
        codec.decode_compressed_batch(batch, False)


def test_a_flipped_bit_in_a_compressed_batch_is_a_crc_error_when_crcs_are_checked():
    batch = compressed_batch(trade_events(20), "zstd")
    batch[80] ^= 0x01
    with pytest.raises(codec.ChecksumError):
        codec.index_compressed_batch(batch, np.empty(20, layout.RECORD_REF_DTYPE), True)
