/* The C core's entry points the CPython fast path (csrc/fast/) calls, as one table.
 *
 * _core (cffi) and _fast (a plain extension) are two shared objects; _fast reaches the one
 * copy of the core (its CRC tables, its crash points) through this table, fetched from
 * _core at import (shmlog/_native/__init__.py passes the address of
 * shmlog_core_entry_points_table() to _fast.bind()). Every member is declared with the type
 * of the function it points at, so a signature changed in shmlog_core.h changes the member
 * and every call in csrc/fast/ is checked against it: a mismatch breaks the build instead of
 * calling through a stale hand-typed pointer. Not part of the cdef (cffi has no __typeof__).
 */
#ifndef SHMLOG_CORE_ENTRY_H
#define SHMLOG_CORE_ENTRY_H

#include "shmlog_core.h"

struct shmlog_core_entry_points {
    /* sizeof(shmlog_core_entry_points) as _core was built: bind() refuses a _fast built
     * against a different table. */
    uint32_t table_bytes;
    uint32_t layout_version;
    __typeof__(shmlog_ring_append) *ring_append;
    __typeof__(shmlog_ring_fetch) *ring_fetch;
    __typeof__(shmlog_batch_index) *batch_index;
    __typeof__(shmlog_ring_request_flush) *ring_request_flush;
    __typeof__(shmlog_ring_insync_enough) *ring_insync_enough;
    __typeof__(shmlog_ring_committed_frames) *ring_committed_frames;
};

#endif
