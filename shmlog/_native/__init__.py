"""The native layer every process shares: the C core and its CPython types.

`_core` is the cffi module built from csrc/core/ (shmlog/_native/_ffi_build.py): rings,
claims, CRC32C, record encode/index. `_fast` (csrc/fast/, see _fast.pyi) holds the per-record
hot paths as CPython types (Message, ProducerCore, ConsumerCore); it calls the one copy of the
C core in `_core` through the core's entry-point table, bound here on first import. The table's
members have the types of the core's functions (csrc/shmlog_core_entry.h), so the compiler
checks every call _fast makes.
"""
from shmlog._native import _fast
from shmlog._native._core import ffi, lib


def address(cdata):
    return int(ffi.cast("uintptr_t", cdata))


_fast.bind(address(lib.shmlog_core_entry_points_table()))

__all__ = ["_fast", "address", "ffi", "lib"]
