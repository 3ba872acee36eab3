"""Record-batch compression with Kafka's framing for each codec (see docs/serialization.md).

A compressed batch is a Kafka RecordBatch v2 whose records section (everything after the
61-byte header) is one compressed blob; the header keeps the uncompressed record count,
attributes bits 0-2 name the codec, and the CRC32C covers the compressed bytes. The
framing inside the blob is what Apache Kafka's Java client writes, so segment files and
ring bytes are byte-compatible with Kafka's log:

- gzip (1): one gzip member (RFC 1952), as java.util.zip.GZIPOutputStream writes it.
- snappy (2): xerial snappy-java framing, as SnappyOutputStream writes it: the 16-byte
  header `\\x82SNAPPY\\x00` + version 1 + compatible version 1 (big-endian int32s), then
  chunks of [int32 big-endian length][raw snappy block], each from 32 KiB of input.
  Reading also accepts a bare raw snappy block (what librdkafka producers send).
- lz4 (3): the LZ4 frame format exactly as Kafka's Lz4BlockOutputStream writes it:
  FLG 0x60 (version 1, independent blocks, no checksums), BD 0x40 (64 KiB blocks),
  header checksum 0x82, blocks [int32 little-endian size, high bit = stored][data],
  end mark 0. (A library's default LZ4 frame links blocks, which Kafka's reader refuses.)
  Reading accepts any valid LZ4 frame.
- zstd (4): one zstd frame (RFC 8878).

The codecs themselves come from cramjam: one binary wheel with gzip, snappy, lz4 and zstd.
"""
import struct

import cramjam

from shmlog._native import ffi, lib
from shmlog.log.batch import ATTR_COMPRESSION_MASK, HEADER, HEADER_BYTES, LENGTH_FIELD_END

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CODEC_IDS = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
DEFAULT_LEVEL = -1

# librdkafka's `compression.level` ranges: a larger level is clamped, -1 is the codec's default.
_MAX_LEVEL = {GZIP: 9, SNAPPY: 0, LZ4: 12, ZSTD: 22}
_DEFAULT_LEVEL = {GZIP: 6, SNAPPY: 0, LZ4: 0, ZSTD: 3}

XERIAL_MAGIC = b"\x82SNAPPY\x00"
XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
XERIAL_BLOCK_BYTES = 32 * 1024          # snappy-java's SnappyOutputStream.DEFAULT_BLOCK_SIZE
LZ4_FRAME_HEADER = bytes.fromhex("04224d18" "60" "40" "82")  # magic, FLG, BD, HC = xxh32(FLG BD) >> 8
LZ4_BLOCK_BYTES = 64 * 1024             # BD 0x40
LZ4_STORED = 0x80000000
LZ4_HC_MIN_LEVEL = 3                    # LZ4F: levels below 3 are the fast compressor

_BE32 = struct.Struct(">I")
_LE32 = struct.Struct("<I")


class CodecError(Exception):
    """Compressed bytes that do not decompress (the message says why)."""


class ChecksumError(CodecError):
    """The batch's CRC32C does not match its bytes."""


def codec_id(name):
    """'gzip' -> 1; accepts the names of `compression.type` (and 'uncompressed')."""
    name = str(name).lower()
    if name == "uncompressed":
        return NONE
    try:
        return CODEC_IDS[name]
    except KeyError:
        raise ValueError(f"unknown compression codec {name!r} (one of {', '.join(CODEC_IDS)})") from None


def effective_level(codec, level=DEFAULT_LEVEL):
    """The level a codec runs at for a `compression.level` (-1: the codec's default)."""
    if codec == NONE:
        return 0
    if level is None or level < 0:
        return _DEFAULT_LEVEL[codec]
    return min(level, _MAX_LEVEL[codec])


# ---------------------------------------------------------------------- compress

def _xerial_snappy(data):
    view = memoryview(data)
    parts = [XERIAL_HEADER]
    for start in range(0, len(view), XERIAL_BLOCK_BYTES):
        block = cramjam.snappy.compress_raw(view[start:start + XERIAL_BLOCK_BYTES])
        parts.append(_BE32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def _lz4_frame(data, level):
    view = memoryview(data)
    if level >= LZ4_HC_MIN_LEVEL:
        kwargs = {"mode": "high_compression", "compression": level}
    else:
        kwargs = {}
    parts = [LZ4_FRAME_HEADER]
    for start in range(0, len(view), LZ4_BLOCK_BYTES):
        chunk = view[start:start + LZ4_BLOCK_BYTES]
        block = cramjam.lz4.compress_block(chunk, store_size=False, **kwargs)
        if len(block) >= len(chunk):  # incompressible: stored, as Kafka's writer does
            parts.append(_LE32.pack(len(chunk) | LZ4_STORED))
            parts.append(chunk)
        else:
            parts.append(_LE32.pack(len(block)))
            parts.append(block)
    parts.append(b"\0\0\0\0")
    return b"".join(parts)


def compress(codec, data, level=DEFAULT_LEVEL):
    """Compress a records section with codec (an id) in Kafka's framing; returns a bytes-like."""
    level = effective_level(codec, level)
    if codec == GZIP:
        return cramjam.gzip.compress(data, level=level)
    if codec == SNAPPY:
        return _xerial_snappy(data)
    if codec == LZ4:
        return _lz4_frame(data, level)
    if codec == ZSTD:
        return cramjam.zstd.compress(data, level=level)
    if codec == NONE:
        return data
    raise ValueError(f"unknown compression codec id {codec}")


def compress_records(records, codec, level=DEFAULT_LEVEL):
    """(section, attributes) to append for an encoded records section.

    As librdkafka does, a batch whose compressed form is not smaller than the records is
    sent uncompressed (attributes 0): consumers take either, and codecs may mix anyway.
    """
    if codec == NONE or not len(records):
        return records, 0
    packed = compress(codec, records, level)
    if len(packed) >= len(records):
        return records, 0
    return packed, codec


# ---------------------------------------------------------------------- decompress

def _unxerial_snappy(data):
    view = memoryview(data)
    if bytes(view[:len(XERIAL_MAGIC)]) != XERIAL_MAGIC:
        return cramjam.snappy.decompress_raw(view)  # raw snappy, as librdkafka writes it
    if len(view) < len(XERIAL_HEADER):
        raise CodecError("truncated xerial snappy header")
    pos, end, blocks = len(XERIAL_HEADER), len(view), []
    while pos < end:
        if end - pos < 4:
            raise CodecError(f"truncated xerial snappy chunk length at byte {pos}")
        n, = _BE32.unpack_from(view, pos)
        pos += 4
        if n > end - pos:
            raise CodecError(f"xerial snappy chunk of {n} bytes at byte {pos - 4} runs past the end ({end})")
        blocks.append(cramjam.snappy.decompress_raw(view[pos:pos + n]))
        pos += n
    return b"".join(blocks)


def decompress(codec, data):
    """The records section inside a compressed blob; returns a bytes-like. Raises CodecError."""
    try:
        if codec == GZIP:
            return cramjam.gzip.decompress(data)
        if codec == SNAPPY:
            return _unxerial_snappy(data)
        if codec == LZ4:
            return cramjam.lz4.decompress(data)
        if codec == ZSTD:
            return cramjam.zstd.decompress(data)
    except CodecError:
        raise
    except Exception as exc:  # cramjam.DecompressionError and the lz4/zstd bindings' errors
        raise CodecError(f"{CODEC_NAMES[codec]} data does not decompress: {exc}") from None
    raise CodecError(f"unknown compression codec id {codec} in the batch attributes")


# ---------------------------------------------------------------------- batches

MIN_RECORD_BYTES = 7  # length, attributes, timestamp delta, offset delta, key length, value length, header count


def _inflate_batch(batch, check_crc):
    """(header fields, decompressed records section as a memoryview) of a compressed batch."""
    view = memoryview(batch).cast("B")
    if len(view) < HEADER_BYTES:
        raise CodecError(f"a batch of {len(view)} bytes is shorter than its header")
    fields = HEADER.unpack_from(view, 0)
    src = ffi.from_buffer(view)
    rc = lib.shmlog_batch_verify(src, len(view), 1 if check_crc else 0)
    ffi.release(src)
    if rc == lib.SHMLOG_ECRC:
        raise ChecksumError("CRC32C mismatch")
    if rc != lib.SHMLOG_OK:
        raise CodecError("invalid batch header")
    length, attributes, count = fields[1], fields[5], fields[12]
    codec = attributes & ATTR_COMPRESSION_MASK
    records = decompress(codec, view[HEADER_BYTES:LENGTH_FIELD_END + length])
    records = records if isinstance(records, memoryview) else memoryview(records).cast("B")
    if count < 0 or count * MIN_RECORD_BYTES > len(records):
        raise CodecError(f"the header counts {count} records, the decompressed {CODEC_NAMES[codec]} records "
                         f"section ({len(records)} bytes) cannot hold them")
    return fields, records


def _index(fields, records, refs, count):
    base_offset, attributes, base_ts, max_ts = fields[0], fields[5], fields[7], fields[8]
    out = ffi.from_buffer("shmlog_record_ref[]", refs)
    ptr = ffi.from_buffer(records) if len(records) else ffi.new("uint8_t[]", 1)
    n = lib.shmlog_records_index(ptr, len(records), count, base_offset, base_ts, max_ts, attributes, out, len(refs))
    if n < 0:
        raise CodecError(f"the decompressed {CODEC_NAMES[attributes & ATTR_COMPRESSION_MASK]} records section "
                         f"({len(records)} bytes) does not hold the {count} records its header counts")
    return n


def decode_compressed_batch(batch, check_crc):
    """Decompress a compressed batch and index its records: (records, refs).

    batch: a bytes-like holding exactly one RecordBatch. records is the decompressed records
    section (a memoryview); refs a new NumPy array of layout.RECORD_REF_DTYPE, one entry per
    record, key/value/header positions relative to `records`. Raises CodecError saying what
    is wrong (CRC with check_crc, codec data, or the records inside).
    """
    import numpy as np

    from shmlog._native.layout import RECORD_REF_DTYPE
    fields, records = _inflate_batch(batch, check_crc)
    count = fields[12]
    refs = np.empty(count, RECORD_REF_DTYPE)
    return records, refs[:_index(fields, records, refs, count)]


def index_compressed_batch(batch, refs, check_crc):
    """As decode_compressed_batch, into a caller's refs array (room for the batch's record
    count, else ValueError): returns (records, n) with refs[:n] filled."""
    fields, records = _inflate_batch(batch, check_crc)
    count = fields[12]
    if count > len(refs):
        raise ValueError(f"refs holds {len(refs)} records, the batch {count}")
    return records, _index(fields, records, refs, count)
