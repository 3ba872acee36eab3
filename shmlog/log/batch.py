"""Kafka's RecordBatch v2, the one format of rings, segment files and (later) the wire.

The C core defines the header's byte offsets (csrc/shmlog_layout.h) and the producer's record
rules (csrc/shmlog_core.h, shmlog._native._fast); this module is Python's one view of them (the
HEADER struct, the ATTR_* bits, field accessors, the record rules), plus the parts of the format
Python handles itself: zigzag varints, record headers, a builder for a batch's records section,
and the one Python loop that decides, batch by batch, what a reader does with fetched batches
(BatchWalker).

    0         8       12            16     17     21           23                27
    +---------+-------+-------------+------+------+------------+-----------------+
    | base    | batch | partition   |magic | crc  | attributes | last offset     |
    | offset  | length| leader epoch| (2)  |32c   |            | delta           |
    +---------+-------+-------------+------+------+------------+-----------------+
    27               35              43            51         53          57      61
    +----------------+---------------+-------------+----------+-----------+-------+
    | base timestamp | max timestamp | producer id | producer | base      |records|
    |                |               |             | epoch    | sequence  | count |
    +----------------+---------------+-------------+----------+-----------+-------+
    then `records count` records (varint-framed), possibly compressed as one block.
"""
import struct
from array import array

import numpy as np

from shmlog._native import _fast, ffi, lib
from shmlog._native.layout import RECORD_REF_DTYPE

HEADER_BYTES = lib.SHMLOG_BATCH_HEADER_BYTES
MAGIC = lib.SHMLOG_BATCH_MAGIC
OFF_BASE_OFFSET = lib.SHMLOG_BATCH_OFF_BASE_OFFSET
OFF_LENGTH = lib.SHMLOG_BATCH_OFF_LENGTH
OFF_LEADER_EPOCH = lib.SHMLOG_BATCH_OFF_LEADER_EPOCH
OFF_MAGIC = lib.SHMLOG_BATCH_OFF_MAGIC
OFF_CRC = lib.SHMLOG_BATCH_OFF_CRC
OFF_ATTRIBUTES = lib.SHMLOG_BATCH_OFF_ATTRIBUTES
OFF_LAST_OFFSET_DELTA = lib.SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA
OFF_BASE_TIMESTAMP = lib.SHMLOG_BATCH_OFF_BASE_TIMESTAMP
OFF_MAX_TIMESTAMP = lib.SHMLOG_BATCH_OFF_MAX_TIMESTAMP
OFF_PRODUCER_ID = lib.SHMLOG_BATCH_OFF_PRODUCER_ID
OFF_PRODUCER_EPOCH = lib.SHMLOG_BATCH_OFF_PRODUCER_EPOCH
OFF_BASE_SEQUENCE = lib.SHMLOG_BATCH_OFF_BASE_SEQUENCE
OFF_RECORD_COUNT = lib.SHMLOG_BATCH_OFF_RECORD_COUNT
LENGTH_FIELD_END = OFF_LEADER_EPOCH   # base offset and batch length are not counted in the length

ATTR_COMPRESSION_MASK = lib.SHMLOG_ATTR_COMPRESSION_MASK
ATTR_LOG_APPEND_TIME = lib.SHMLOG_ATTR_LOG_APPEND_TIME
ATTR_TRANSACTIONAL = lib.SHMLOG_ATTR_TRANSACTIONAL
ATTR_CONTROL = lib.SHMLOG_ATTR_CONTROL

# base offset, length, leader epoch, magic, crc, attributes, last offset delta, base timestamp,
# max timestamp, producer id, producer epoch, base sequence, record count
HEADER = struct.Struct(">qiibIhiqqqhii")
assert HEADER.size == HEADER_BYTES
# The header up to lastOffsetDelta: what stepping from one batch to the next needs.
HEADER_PREFIX = struct.Struct(HEADER.format[:8])
assert HEADER_PREFIX.size == OFF_BASE_TIMESTAMP
_I64 = struct.Struct(">q")
_I32 = struct.Struct(">i")

RECORD_OVERHEAD_BYTES = lib.SHMLOG_RECORD_OVERHEAD_BYTES  # Kafka's maximum per-record framing
FIXED_RECORD_OVERHEAD_BYTES = lib.SHMLOG_FIXED_RECORD_OVERHEAD_BYTES  # shmlog_records_encode_fixed's

# record_size(key, value, header_bytes=0): what a record counts against batch.size, buffer.memory
# and the size limits (bytes-or-None key and value): the producer's fast path's own rule.
record_size = _fast.record_size


def attributes_of(buf, pos=0):
    return buf[pos + OFF_ATTRIBUTES] << 8 | buf[pos + OFF_ATTRIBUTES + 1]


def record_count_of(buf, pos=0):
    """The batch's records count, a signed int32 as Kafka defines it."""
    return _I32.unpack_from(buf, pos + OFF_RECORD_COUNT)[0]


def base_offset_of(buf, pos=0):
    return _I64.unpack_from(buf, pos + OFF_BASE_OFFSET)[0]


def max_timestamp_of(buf, pos=0):
    return _I64.unpack_from(buf, pos + OFF_MAX_TIMESTAMP)[0]


def carries_records(attributes, record_count):
    """False for what a reader skips without decoding: control batches (transaction markers)
    and batches left empty (a repaired claim, a batch emptied by compaction), or whose int32
    count is not positive. The C decoder's rule (shmlog_batch_carries_records), not a copy."""
    return bool(lib.shmlog_batch_carries_records(attributes & 0xFFFF, record_count))


# What BatchWalker.walk decides for a batch.
SKIP = 0        # nothing to hand out: a control batch or an empty one (carries_records() is false)
RECORDS = 1     # indexed: refs are its records
COMPRESSED = 2  # the caller decompresses it (codec.decode_compressed_batch) or stops in front of it
CORRUPT = 3     # shmlog_batch_index refused it: refs is its error code (< 0)


class BatchWalker:
    """The one Python decode loop over batches fetched from a ring or read from segments.

    The consumer's slow path (segment reads, what the C fast path hands back, zero-copy
    views) and the partition reader run their batches through walk(). It keeps a scratch
    array of record refs, grown to the largest batch seen, so decoding costs one C call
    per batch and no Python per record.
    """

    __slots__ = ("refs", "check_crc", "wanted")

    def __init__(self, check_crc=1, scratch_records=4096):
        self.refs = np.empty(scratch_records, RECORD_REF_DTYPE)
        self.check_crc = 1 if check_crc else 0
        self.wanted = 0

    def walk(self, buf, frames, wanted, ptr=None):
        """Decide each batch of `frames`, oldest first: yields (decision, i, attributes, refs).

        frames: (position in buf, base offset, offset count, batch bytes) per batch, the
        offset count being lastOffsetDelta + 1 (as in the ring's frame refs and
        SegmentReader.read). buf: the bytes they are in (bytes-like; the header fields are
        read from it); ptr: a cffi pointer to buf's first byte (default ffi.from_buffer(buf)).

        Batches whose offsets all lie below `wanted` are passed over without a word. For
        the others, i is the batch's index in frames and the decision one of SKIP,
        RECORDS (refs: shmlog_batch_index's refs, positions relative to the batch start,
        a view of the scratch array valid until the next step), COMPRESSED (refs None) or
        CORRUPT (refs: the error code). self.wanted is the offset to go on from: while a
        batch is yielded, where that batch's wanted records start (records below it are
        not the caller's); once the loop is resumed, past that batch. A caller that stops
        at a batch (breaks out) therefore finds in self.wanted the offset to fetch it again.
        """
        self.wanted = wanted
        if ptr is None:
            ptr = ffi.from_buffer(buf)
        for i, (pos, base, count, nbytes) in enumerate(frames):
            end = base + count
            if end <= self.wanted:
                continue
            attributes = attributes_of(buf, pos)
            record_count = record_count_of(buf, pos)
            if not carries_records(attributes, record_count):
                yield SKIP, i, attributes, None
            elif attributes & ATTR_COMPRESSION_MASK:
                yield COMPRESSED, i, attributes, None
            else:
                refs = self.refs
                if len(refs) < record_count <= nbytes:   # a larger count is garbage: the C index says so
                    refs = self.refs = np.empty(record_count, RECORD_REF_DTYPE)
                n = lib.shmlog_batch_index(ptr + pos, nbytes, ffi.from_buffer("shmlog_record_ref[]", refs), len(refs),
                                           self.check_crc)
                if n < 0:
                    yield CORRUPT, i, attributes, n
                else:
                    yield RECORDS, i, attributes, refs[:n]
            self.wanted = end


def zigzag_varint(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_zigzag_varint(buf, pos):
    """(value, position after it); ValueError when the varint is truncated or too long."""
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def encode_headers(items):
    """A record's headers section from (str key, bytes-or-None value) pairs."""
    parts = [zigzag_varint(len(items))]
    for key, value in items:
        parts += (zigzag_varint(len(key)), key)
        parts += (zigzag_varint(-1),) if value is None else (zigzag_varint(len(value)), value)
    return b"".join(parts)


def decode_headers(buf, pos, count):
    """`count` headers starting at buf[pos] as a list of (str key, bytes-or-None value)."""
    out = []
    for _ in range(count):
        klen, pos = read_zigzag_varint(buf, pos)
        key = bytes(buf[pos:pos + klen]).decode(errors="replace")
        pos += klen
        vlen, pos = read_zigzag_varint(buf, pos)
        out.append((key, None if vlen < 0 else bytes(buf[pos:pos + vlen])))
        pos += max(vlen, 0)
    return out


class RecordsBuilder:
    """The records section of one batch, built record by record and encoded in one C call."""
    __slots__ = ("keys", "key_lens", "values", "value_lens", "timestamps", "headers", "header_lens", "bytes")

    def __init__(self):
        self.keys, self.key_lens, self.values, self.value_lens = [], [], [], []
        self.timestamps = []
        self.headers, self.header_lens = None, None
        self.bytes = 0

    def __len__(self):
        return len(self.values)

    def add(self, key, value, timestamp, encoded_headers, size):
        n = len(self.values)
        self.keys.append(key or b"")
        self.key_lens.append(-1 if key is None else len(key))
        self.values.append(value or b"")
        self.value_lens.append(-1 if value is None else len(value))
        self.timestamps.append(timestamp)
        if encoded_headers is not None:
            if self.headers is None:
                self.headers, self.header_lens = [b""] * n, [0] * n
            self.headers.append(encoded_headers)
            self.header_lens.append(len(encoded_headers))
        elif self.headers is not None:
            self.headers.append(b"")
            self.header_lens.append(0)
        self.bytes += size

    def encoder_args(self):
        """Arguments of the C record encoders for this batch (buffers kept alive by the tuple),
        and the batch's min/max timestamps."""
        key_lens = array("i", self.key_lens)
        value_lens = array("i", self.value_lens)
        timestamps = array("q", self.timestamps)
        base_ts = min(self.timestamps)
        has_headers = self.headers is not None
        header_lens = array("i", self.header_lens) if has_headers else None
        args = (len(self.values), b"".join(self.keys), ffi.from_buffer("int32_t[]", key_lens),
                b"".join(self.values), ffi.from_buffer("int32_t[]", value_lens),
                ffi.from_buffer("int64_t[]", timestamps), base_ts,
                b"".join(self.headers) if has_headers else ffi.NULL,
                ffi.from_buffer("int32_t[]", header_lens) if has_headers else ffi.NULL)
        return args, base_ts, max(self.timestamps)

    def encode(self):
        """The records section of a RecordBatch, and the batch's min/max timestamps."""
        args, base_ts, max_ts = self.encoder_args()
        size = lib.shmlog_records_encode(ffi.NULL, 0, *args)
        out = bytearray(size)
        lib.shmlog_records_encode(ffi.from_buffer(out), size, *args)
        return out, base_ts, max_ts
