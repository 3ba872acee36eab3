"""The native layer every process shares: the C core and its CPython types.

`_core` is the cffi module built from csrc/ (shmlog/_native/_ffi_build.py): rings,
claims, CRC32C, record encode/index. `_fast` holds the per-record hot paths as CPython
types (Message, ProducerCore, ConsumerCore); it calls the one copy of the C core in
`_core` through the entry points bound here on first import.
"""
from shmlog._native import _fast
from shmlog._native._core import ffi, lib


def address(cdata):
    return int(ffi.cast("uintptr_t", cdata))


_fast.bind(*(address(ffi.addressof(lib, name)) for name in
             ("shmlog_murmur2", "shmlog_ring_append", "shmlog_ring_fetch", "shmlog_batch_index",
              "shmlog_ring_request_flush")))

__all__ = ["_fast", "address", "ffi", "lib"]
