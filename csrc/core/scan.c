/* Scans over every ring of a broker, for housekeeping that must cost little while the rings are
 * idle: one pass in C reading a cache line or two of each header, so the Python above them
 * (the persister's idle rounds, the supervisor's dead-producer checks) only visits the rings
 * the scan returns, and an idle broker's periodic work does not grow with Python calls per
 * partition. */
#include "core.h"

uint32_t shmlog_rings_moved(shmlog_ring_handle *const *rings, shmlog_cursor *const *cursors, uint32_t n,
                            uint32_t *out) {
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        const shmlog_ring_header *h = rings[i]->header;
        if (load_acquire(&h->claim.tail_position) != cursors[i]->position ||
            load_relaxed(&h->persist.persist_waiters) || load_relaxed(&h->release.space_waiters) ||
            load_acquire(&h->persist.flush_requested_offset) > load_relaxed(&h->persist.flushed_offset))
            out[found++] = i;
    }
    return found;
}

uint32_t shmlog_rings_held(shmlog_ring_handle *const *rings, uint32_t n, uint32_t *out) {
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        const shmlog_ring_handle *ring = rings[i];
        const shmlog_ring_header *h = ring->header;
        int held = load_relaxed(&h->release.fenced_claims) != 0;
        uint32_t used = held ? 0 : slots_in_use(ring, &h->slots.producers_used);
        for (uint32_t s = 0; s < used && !held; s++)
            held = load_relaxed(&ring->producers[s].pid) != 0 ||
                   slot_state_of(load_relaxed(&ring->producers[s].state)) != SHMLOG_SLOT_IDLE;
        used = held ? 0 : slots_in_use(ring, &h->slots.pins_used);
        for (uint32_t s = 0; s < used && !held; s++) held = load_relaxed(&ring->pins[s].in_use) != 0;
        if (held) out[found++] = i;
    }
    return found;
}
