"""The C record index (shmlog_records_index) against Kafka's record framing decoded here, record
by record: its shortcut for runs of records laid out as produce_values() writes them
(shmlog_records_encode_fixed) must index exactly what the record-by-record decoding does, on
well-formed sections and on sections with bytes changed anywhere."""
import random

import numpy as np
import pytest

from shmlog._native import ffi, layout, lib

BASE_OFFSET, BASE_TS, MAX_TS = 1000, 1_700_000_000_000, 1_700_000_000_999


def varint(buf, pos, end):
    """(zigzag-decoded value, position after it) or None: at most 10 bytes, as the C core reads."""
    value = 0
    for shift in range(0, 64, 7):
        if pos >= end:
            return None
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            value &= (1 << 64) - 1
            return (value >> 1) ^ -(value & 1), pos
    return None


def decode_records(buf, count, log_append_time=False):
    """Kafka's records section decoded record by record: [(offset, timestamp, key_pos, key_len,
    value_pos, value_len, headers_pos, headers_count)], or None when its framing is invalid."""
    out, pos, end = [], 0, len(buf)
    for _ in range(count):
        got = varint(buf, pos, end)
        if got is None or not 1 <= got[0] <= end - got[1]:
            return None
        body, pos = got
        rend = pos + body
        pos += 1                                   # attributes
        fields = []
        for _ in range(2):                         # timestamp delta, offset delta
            got = varint(buf, pos, rend)
            if got is None:
                return None
            fields.append(got[0])
            pos = got[1]
        ts_delta, offset_delta = fields
        lens = []
        for _ in range(2):                         # key, value
            got = varint(buf, pos, rend)
            if got is None or got[0] < -1 or got[0] > rend - got[1]:
                return None
            length, pos = got
            lens.append((pos, length))
            pos += max(length, 0)
        got = varint(buf, pos, rend)
        if got is None or got[0] < 0 or got[0] > rend - got[1]:
            return None
        headers_count, pos = got
        headers_pos = pos
        for _ in range(headers_count):
            got = varint(buf, pos, rend)
            if got is None or got[0] < 0 or got[0] > rend - got[1]:
                return None
            pos = got[1] + got[0]
            got = varint(buf, pos, rend)
            if got is None or got[0] < -1 or got[0] > rend - got[1]:
                return None
            pos = got[1] + max(got[0], 0)
        if pos != rend:
            return None
        (key_pos, key_len), (value_pos, value_len) = lens
        out.append((BASE_OFFSET + offset_delta, MAX_TS if log_append_time else BASE_TS + ts_delta, key_pos, key_len,
                    value_pos, value_len, headers_pos, headers_count))
    return out if pos == end else None


def c_index(buf, count, log_append_time=False):
    refs = np.zeros(count, layout.RECORD_REF_DTYPE)
    n = lib.shmlog_records_index(ffi.from_buffer(bytes(buf)), len(buf), count, BASE_OFFSET, BASE_TS, MAX_TS,
                                 lib.SHMLOG_ATTR_LOG_APPEND_TIME if log_append_time else 0,
                                 ffi.from_buffer("shmlog_record_ref[]", refs), count)
    if n == lib.SHMLOG_ECORRUPT:
        return None
    assert n == count
    return [tuple(int(x) for x in r) for r in refs.tolist()]


def fixed_section(values):
    """The records section produce_values() writes for equal-length values."""
    rows = np.frombuffer(b"".join(values), np.uint8)
    size = lib.shmlog_records_encode_fixed(ffi.NULL, 0, len(values), ffi.NULL, len(values[0]))
    out = bytearray(size)
    assert lib.shmlog_records_encode_fixed(ffi.from_buffer(out), size, len(values), ffi.from_buffer(rows),
                                           len(values[0])) == size
    return out


def general_section(values, keys):
    """The records section produce() batches write (minimal varints, keys)."""
    key_lens = ffi.new("int32_t[]", [len(k) if k is not None else -1 for k in keys])
    value_lens = ffi.new("int32_t[]", [len(v) for v in values])
    blob_k, blob_v = b"".join(k or b"" for k in keys), b"".join(values)
    args = (len(values), blob_k, key_lens, blob_v, value_lens, ffi.NULL, 0, ffi.NULL, ffi.NULL)
    size = lib.shmlog_records_encode(ffi.NULL, 0, *args)
    out = bytearray(size)
    assert lib.shmlog_records_encode(ffi.from_buffer(out), size, *args) == size
    return out


@pytest.mark.parametrize("value_bytes", [0, 1, 24, 100, 300])
def test_a_fixed_layout_section_is_indexed_as_record_by_record_decoding_indexes_it(value_bytes):
    values = [bytes([i % 251]) * value_bytes for i in range(50)]
    section = fixed_section(values)
    assert c_index(section, 50) == decode_records(section, 50)
    assert c_index(section, 50, log_append_time=True) == decode_records(section, 50, log_append_time=True)
    assert [r[0] for r in c_index(section, 50)] == list(range(BASE_OFFSET, BASE_OFFSET + 50))


def test_fixed_layout_records_after_records_of_another_shape_are_indexed_the_same_both_ways():
    head = general_section([b"v0", b"v11"], [b"k", None])
    tail = fixed_section([b"%08d" % i for i in range(20)])
    section = head + tail
    # The fixed records' offset deltas restart at 0: the index reports what the bytes say.
    assert c_index(section, 22) == decode_records(section, 22) is not None


def test_bytes_changed_anywhere_in_a_fixed_layout_section_index_as_record_by_record_decoding_does():
    rng = random.Random(18)
    mismatches = []
    for trial in range(3000):
        value_bytes = rng.choice([0, 3, 17, 40])
        count = rng.randint(2, 12)
        section = fixed_section([bytes(rng.getrandbits(8) for _ in range(value_bytes)) for _ in range(count)])
        for _ in range(rng.randint(1, 3)):
            section[rng.randrange(len(section))] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0x81, rng.getrandbits(8)])
        if c_index(section, count) != decode_records(section, count):
            mismatches.append((trial, bytes(section).hex(), count))
    assert not mismatches, mismatches[:3]
