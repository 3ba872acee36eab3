/* Dead claims: a producer that died between claim and publish must not wedge the partition.
 * Its claim is fenced (slot -> FENCED, so a producer that was only stalled cannot publish
 * over it later) and turned into an empty control batch covering its offsets (readers skip
 * it like an aborted transaction's), or into padding when it claimed no offsets. */
#include "core.h"

/* Slots whose claim starts at an unpublished position below the tail; 0 if that position is
 * claimed by nobody at all (garbage in shared memory, or a claim already repaired). */
int shmlog_ring_stuck_claims(const shmlog_ring_handle *ring, uint64_t position, int *slots, int max_slots) {
    const shmlog_ring_header *h = ring->header;
    if (load_acquire(&h->claim.tail_position) <= position || frame_is_published(ring, position)) return 0;
    int n = 0;
    for (int i = 0; i < SHMLOG_PRODUCER_SLOTS && n < max_slots; i++) {
        const shmlog_producer_slot *s = &h->producers[i];
        uint32_t state = load_acquire(&s->state);
        if ((state == SHMLOG_SLOT_CLAIMING || state == SHMLOG_SLOT_OWNED) && load_relaxed(&s->claim_position) == position)
            slots[n++] = i;
    }
    return n;
}

/* The claimed region must lie inside the ring and hold a batch header if it claimed offsets:
 * the slot's intent is shared memory, so it is checked before anything is written there. */
static int claim_is_repairable(const shmlog_ring_handle *ring, uint64_t position, uint32_t frame_bytes,
                               uint32_t record_count) {
    return frame_bytes >= SHMLOG_FRAME_ALIGN && frame_bytes % SHMLOG_FRAME_ALIGN == 0 &&
           frame_bytes <= ring->capacity_bytes - ring_index_of(ring, position) &&
           (record_count == 0 || frame_bytes >= SHMLOG_FRAME_PREFIX_BYTES + SHMLOG_BATCH_HEADER_BYTES);
}

int shmlog_ring_repair(shmlog_ring_handle *ring, int slot, shmlog_doorbell *doorbell) {
    shmlog_ring_header *h = ring->header;
    shmlog_producer_slot *s = &h->producers[slot];
    uint32_t state = load_acquire(&s->state);
    if (state != SHMLOG_SLOT_CLAIMING && state != SHMLOG_SLOT_OWNED) return SHMLOG_EAGAIN;
    uint64_t token = load_acquire(&s->owner_token);
    if (!compare_exchange(&s->state, &state, SHMLOG_SLOT_FENCED, memory_order_acq_rel, memory_order_acquire))
        return SHMLOG_EAGAIN;
    /* Fenced: the owner can no longer commit, so its intent holds still. */
    uint64_t pos = s->claim_position, off = s->claim_offset;
    uint32_t frame_bytes = s->claim_frame_bytes, count = s->claim_record_count;
    int ok = claim_is_repairable(ring, pos, frame_bytes, count);
    if (ok && load_acquire(&h->claim.tail_position) > pos && !frame_is_published(ring, pos)) {
        frame_clear_interior(ring, pos, frame_bytes);
        if (count > 0) {
            /* An empty control batch keeps offsets dense: readers skip it like an aborted run. */
            uint8_t *batch = ring_frame_batch(ring, pos);
            shmlog_batch_write_header(batch, 0, off, h->descriptor.leader_epoch, SHMLOG_ATTR_CONTROL, 0, 0, 0, -1, -1, -1);
            put_be32(batch + SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA, count - 1);
            batch_seal(batch);
        }
        frame_publish(ring, pos, frame_bytes, count == 0);
    }
    shmlog_producer_slot_release(ring, slot, token);
    doorbell_ring_watchers(ring, doorbell);
    return ok ? SHMLOG_OK : SHMLOG_ECORRUPT;
}
