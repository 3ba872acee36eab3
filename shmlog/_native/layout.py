"""Python's view of csrc/shmlog_layout.h.

Constants and struct sizes come straight from the compiled C core (cffi parsed the
header); the NumPy dtypes below mirror two C structs so batches of them can be read
without a Python object per element, and tests/unit/test_layout.py checks each field
offset against the C compiler's.
"""
import numpy as np

from shmlog._native import ffi, lib

RING_HEADER_BYTES = lib.SHMLOG_RING_HEADER_BYTES
FRAME_PREFIX_BYTES = lib.SHMLOG_FRAME_PREFIX_BYTES
FRAME_ALIGN = lib.SHMLOG_FRAME_ALIGN
BATCH_HEADER_BYTES = lib.SHMLOG_BATCH_HEADER_BYTES
MIN_CAPACITY_BYTES = lib.SHMLOG_MIN_CAPACITY_BYTES
MAX_CAPACITY_BYTES = lib.SHMLOG_MAX_CAPACITY_BYTES
DOORBELL_BYTES = ffi.sizeof("shmlog_doorbell")

RECORD_REF_DTYPE = np.dtype([
    ("offset", "<i8"), ("timestamp", "<i8"),
    ("key_pos", "<i4"), ("key_len", "<i4"),
    ("value_pos", "<i4"), ("value_len", "<i4"),
    ("headers_pos", "<i4"), ("headers_count", "<i4"),
])

FRAME_REF_DTYPE = np.dtype([
    ("map_pos", "<u8"), ("dst_pos", "<u8"), ("base_offset", "<u8"),
    ("batch_bytes", "<u4"), ("record_count", "<u4"),
])

NUMPY_VIEWS = {"shmlog_record_ref": RECORD_REF_DTYPE, "shmlog_frame_ref": FRAME_REF_DTYPE}
