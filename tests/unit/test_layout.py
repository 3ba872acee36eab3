"""Python's view of the shared-memory layout matches the C header."""
import pytest

from shmlog._native import ffi, layout, lib


@pytest.mark.parametrize("struct,dtype", list(layout.NUMPY_VIEWS.items()))
def test_numpy_views_match_the_c_structs_field_by_field(struct, dtype):
    c_fields = dict(ffi.typeof(struct).fields)
    assert dtype.itemsize == ffi.sizeof(struct)
    assert list(dtype.names) == list(c_fields)
    for name in dtype.names:
        assert dtype.fields[name][1] == c_fields[name].offset, name
        assert dtype.fields[name][0].itemsize == ffi.sizeof(c_fields[name].type), name


def test_hot_fields_sit_on_their_own_cache_lines():
    line = lib.SHMLOG_CACHE_LINE
    offsets = [ffi.offsetof("shmlog_ring_header", f) for f in ("descriptor", "claim", "release", "persist", "waiters",
                                                                      "slots", "txn")]
    assert [o % line for o in offsets] == [0] * len(offsets)
    assert len({o // line for o in offsets}) == len(offsets)


def test_the_replication_lines_follow_the_index_on_their_own_cache_lines():
    line = lib.SHMLOG_CACHE_LINE
    at = ffi.offsetof("shmlog_ring_header", "replication")
    assert at % line == 0
    assert at == ffi.offsetof("shmlog_ring_header", "index") + 16 * lib.SHMLOG_INDEX_ENTRIES
    assert ffi.sizeof("shmlog_ring_replication") == 2 * line


def test_the_claim_pair_is_sixteen_byte_aligned_for_a_single_cas():
    assert ffi.offsetof("shmlog_ring_header", "claim") % 16 == 0
    assert ffi.offsetof("shmlog_ring_claim", "next_offset") == 8


def test_the_header_fits_its_reserved_bytes_and_data_starts_page_aligned():
    assert ffi.sizeof("shmlog_ring_header") <= layout.RING_HEADER_BYTES
    assert layout.RING_HEADER_BYTES % 4096 == 0


def test_every_slot_type_is_one_cache_line():
    for struct in ("shmlog_producer_slot", "shmlog_pin_slot", "shmlog_doorbell_slot"):
        assert ffi.sizeof(struct) == lib.SHMLOG_CACHE_LINE, struct


def test_the_batch_header_offsets_follow_kafkas_record_batch_v2():
    assert (lib.SHMLOG_BATCH_OFF_LENGTH, lib.SHMLOG_BATCH_OFF_MAGIC, lib.SHMLOG_BATCH_OFF_CRC,
            lib.SHMLOG_BATCH_OFF_ATTRIBUTES, lib.SHMLOG_BATCH_OFF_RECORD_COUNT,
            layout.BATCH_HEADER_BYTES) == (8, 16, 17, 21, 57, 61)


def test_the_descriptor_flags_word_is_where_the_reserved_word_was_and_the_descriptor_stays_one_line():
    # Rings made before the flags word held 0 there: no flag, a topic that persists.
    assert ffi.offsetof("shmlog_ring_descriptor", "flags") == ffi.offsetof("shmlog_ring_descriptor", "closed") + 4
    assert ffi.offsetof("shmlog_ring_descriptor", "flags") + 4 == ffi.sizeof("shmlog_ring_descriptor")
    assert ffi.sizeof("shmlog_ring_descriptor") <= lib.SHMLOG_CACHE_LINE
    assert lib.SHMLOG_RING_FLAG_MEMORY_ONLY == 1
