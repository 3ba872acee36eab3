/* Stuck claims: a producer that died between claim and publish, or one stopped (SIGSTOP, a
 * debugger) for longer than shmlog.claim.timeout.ms, must not wedge the partition. Its claim
 * is fenced (slot -> FENCED, so the owner cannot commit over it later) and turned into an
 * empty control batch covering its offsets (readers skip it like an aborted transaction's),
 * or into padding when it claimed no offsets.
 *
 * A dead owner's slot is freed at once. A live owner's slot stays FENCED until the owner
 * resumes and sees it (shmlog_producer_slot_unfence): until then it may still be copying its
 * records into the region, so the releaser (persist.c) holds release_position at the claim. */
#include "core.h"

/* Slots whose claim starts at an unpublished position below the tail (COMMITTING ones too:
 * they are claimed, only not repairable while their owner lives); 0 if that position is
 * claimed by nobody at all (garbage in shared memory, or a claim already repaired). */
int shmlog_ring_stuck_claims(const shmlog_ring_handle *ring, uint64_t position, int *slots, int max_slots) {
    const shmlog_ring_header *h = ring->header;
    if (load_acquire(&h->claim.tail_position) <= position || frame_is_published(ring, position)) return 0;
    int n = 0;
    uint32_t used = slots_in_use(ring, &h->slots.producers_used);
    for (uint32_t i = 0; i < used && n < max_slots; i++) {
        const shmlog_producer_slot *s = &ring->producers[i];
        uint32_t state = slot_state_of(load_acquire(&s->state));
        if ((state == SHMLOG_SLOT_CLAIMING || state == SHMLOG_SLOT_OWNED || state == SHMLOG_SLOT_COMMITTING) &&
            load_relaxed(&s->claim_position) == position)
            slots[n++] = (int)i;
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

/* A claim as a repairer read it from the slot, together with the state word it read first. */
typedef struct claim_intent {
    uint32_t word;
    uint64_t position, offset, unix_ns;
    uint32_t frame_bytes, record_count;
} claim_intent;

static claim_intent intent_read(const shmlog_producer_slot *s) {
    claim_intent c;
    c.word = load_acquire(&s->state);
    c.position = load_relaxed(&s->claim_position);
    c.offset = load_relaxed(&s->claim_offset);
    c.frame_bytes = load_relaxed(&s->claim_frame_bytes);
    c.record_count = load_relaxed(&s->claim_record_count);
    c.unix_ns = load_relaxed(&s->claim_unix_ns);
    return c;
}

/* The word read -> FENCED, counted in fenced_claims first so no releaser can miss the hold.
 * The CAS expects the whole word, generation included: it succeeds only if the owner is still
 * in the claim whose intent was read (a new intent raises the generation), so that intent is
 * the fenced claim's. Seq_cst, so the intent's loads cannot drift past it. */
static int slot_fence(shmlog_ring_header *h, shmlog_producer_slot *s, uint32_t word) {
    fetch_add(&h->release.fenced_claims, 1, memory_order_seq_cst);
    if (compare_exchange(&s->state, &word, slot_word_with(word, SHMLOG_SLOT_FENCED), memory_order_seq_cst,
                         memory_order_acquire))
        return 1;
    fetch_sub(&h->release.fenced_claims, 1, memory_order_seq_cst);
    return 0;
}

/* Publishes the fenced claim as an empty control batch (or padding): only the frame word,
 * the batch header and the marks, never the records section its owner may still be filling.
 * 0 if the intent is out of bounds (corrupt). */
static int claim_publish_skippable(shmlog_ring_handle *ring, const claim_intent *c) {
    shmlog_ring_header *h = ring->header;
    uint64_t pos = c->position, off = c->offset;
    uint32_t frame_bytes = c->frame_bytes, count = c->record_count;
    if (!claim_is_repairable(ring, pos, frame_bytes, count)) return 0;
    if (load_acquire(&h->claim.tail_position) > pos && !frame_is_published(ring, pos)) {
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
    return 1;
}

/* A dead owner's claim, whatever its state: fence, publish, free the slot. */
int shmlog_ring_repair(shmlog_ring_handle *ring, int slot, shmlog_doorbell *doorbell) {
    shmlog_ring_header *h = ring->header;
    if (slot < 0 || (uint32_t)slot >= ring->slot_count) return SHMLOG_EAGAIN;
    shmlog_producer_slot *s = &ring->producers[slot];
    uint64_t token = load_acquire(&s->owner_token);
    claim_intent c = intent_read(s);
    uint32_t state = slot_state_of(c.word);
    if (state != SHMLOG_SLOT_CLAIMING && state != SHMLOG_SLOT_OWNED && state != SHMLOG_SLOT_COMMITTING)
        return SHMLOG_EAGAIN;
    if (!slot_fence(h, s, c.word)) return SHMLOG_EAGAIN;
    int ok = claim_publish_skippable(ring, &c);
    shmlog_producer_slot_release(ring, slot, token);
    doorbell_ring_watchers(ring, doorbell);
    return ok ? SHMLOG_OK : SHMLOG_ECORRUPT;
}

/* How long ago the claim was made; 0 if its time is in the future (the clock jumped back). */
static uint64_t claim_age_ns(const claim_intent *c) {
    uint64_t now = now_realtime_ns();
    return now > c->unix_ns ? now - c->unix_ns : 0;
}

/* A live owner's claim at position, OWNED for at least min_age_ns: fenced and published as
 * skippable, the slot left FENCED for its owner to see. Only OWNED is fenced: the owner won
 * its claim CAS for certain (CLAIMING may have lost it) and has not begun to commit. */
int shmlog_ring_fence_stalled(shmlog_ring_handle *ring, int slot, uint64_t position, uint64_t min_age_ns,
                              shmlog_doorbell *doorbell) {
    shmlog_ring_header *h = ring->header;
    if (slot < 0 || (uint32_t)slot >= ring->slot_count) return SHMLOG_EAGAIN;
    shmlog_producer_slot *s = &ring->producers[slot];
    claim_intent c = intent_read(s);
    if (slot_state_of(c.word) != SHMLOG_SLOT_OWNED || c.position != position || claim_age_ns(&c) < min_age_ns)
        return SHMLOG_EAGAIN;
    if (!slot_fence(h, s, c.word)) return SHMLOG_EAGAIN; /* committed, or already in its next claim */
    int ok = claim_publish_skippable(ring, &c);
    doorbell_ring_watchers(ring, doorbell);
    return ok ? SHMLOG_OK : SHMLOG_ECORRUPT;
}
