"""Points shmlog._fast at the C core's entry points in shmlog._core (one copy of the core)."""
from . import _fast
from ._core import ffi, lib


def address(cdata):
    return int(ffi.cast("uintptr_t", cdata))


_fast.bind(*(address(ffi.addressof(lib, name)) for name in
             ("shmlog_murmur2", "shmlog_ring_append", "shmlog_ring_fetch", "shmlog_batch_index",
              "shmlog_ring_request_flush")))
