/* The table _fast calls the core through (see shmlog_core_entry.h). */
#include "core.h"
#include "shmlog_core_entry.h"

static const shmlog_core_entry_points entry_points = {
    .table_bytes = sizeof(shmlog_core_entry_points),
    .layout_version = SHMLOG_LAYOUT_VERSION,
    .ring_append = shmlog_ring_append,
    .ring_fetch = shmlog_ring_fetch,
    .ring_committed_frames = shmlog_ring_committed_frames,
    .batch_index = shmlog_batch_index,
    .ring_request_flush = shmlog_ring_request_flush,
    .ring_insync_enough = shmlog_ring_insync_enough,
};

const shmlog_core_entry_points *shmlog_core_entry_points_table(void) { return &entry_points; }
