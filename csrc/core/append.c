/* Appending: producer slots, the claim of space and offsets, and publishing a frame.
 *
 *   1. claim     read the (tail, next offset) pair; wait for space if the frame would pass
 *                release_position + capacity; write the intent into our slot (seq_cst, so a
 *                repairer that sees the claimed tail also sees it); one 16-byte CAS moves the
 *                pair; a frame that would not fit before the ring's end becomes padding.
 *   2. fill      the records are copied (or encoded) into the claimed frame's records section,
 *                and the batch header and its CRC32C are built on the stack.
 *   3. commit    slot OWNED -> COMMITTING (fails only if a repairer fenced us: then we return
 *                the slot to IDLE and report SHMLOG_EFENCED), then the header, the offset
 *                index hint, the release store of the publish mark, and slot -> IDLE.
 *
 * Until the commit CAS a producer writes only inside its records section, which a fenced
 * claim's control batch never covers, and the releaser keeps a fenced region from reuse until
 * its owner has seen the fence: a stalled producer that was passed cannot write over anyone.
 */
#include <signal.h>

#include "core.h"

/* ---------------------------------------------------------------- crash and pause points (tests) */

static int crash_point, pause_point;

void shmlog_debug_set_crash_point(int point) { crash_point = point; }

void shmlog_debug_set_pause_point(int point) { pause_point = point; }

static inline void crash_at(int point) {
    if (crash_point == point) raise(SIGKILL);
    if (pause_point == point) {
        pause_point = 0;
        raise(SIGSTOP);
    }
}

enum {
    CRASH_BEFORE_CLAIM_CAS = 1,
    CRASH_AFTER_CLAIM = 2,
    CRASH_MID_COPY = 3,
    CRASH_BEFORE_PUBLISH = 4,
    CRASH_BEFORE_COMMIT = 5,
};

/* ---------------------------------------------------------------- producer slots */

int shmlog_producer_slot_acquire(shmlog_ring_handle *ring, uint32_t pid, uint64_t pid_start_time,
                                 uint64_t owner_token) {
    for (int i = 0; i < (int)ring->slot_count; i++) {
        shmlog_producer_slot *s = &ring->producers[i];
        uint32_t expected = 0;
        if (slot_state_of(load_relaxed(&s->state)) != SHMLOG_SLOT_IDLE) continue;
        if (compare_exchange(&s->pid, &expected, pid, memory_order_acq_rel, memory_order_relaxed)) {
            s->pid_start_time = pid_start_time;
            store_release(&s->owner_token, owner_token);
            slots_note_taken(&ring->header->slots.producers_used, i);
            return i;
        }
    }
    return SHMLOG_ENOSLOT;
}

/* Frees the slot only if it still belongs to owner_token: two reclaimers racing over a dead
 * owner must not free a slot a new producer has just taken. */
int shmlog_producer_slot_release(shmlog_ring_handle *ring, int slot, uint64_t owner_token) {
    if (slot < 0 || (uint32_t)slot >= ring->slot_count) return SHMLOG_EAGAIN;
    shmlog_producer_slot *s = &ring->producers[slot];
    uint64_t expected = owner_token;
    if (!compare_exchange(&s->owner_token, &expected, 0, memory_order_acq_rel, memory_order_relaxed))
        return SHMLOG_EAGAIN;
    shmlog_producer_slot_unfence(ring, slot);
    store_release(&ring->sequences[slot].producer_id, -1); /* the next owner starts its own record */
    slot_store_state(s, SHMLOG_SLOT_IDLE);
    store_release(&s->pid, 0);
    return SHMLOG_OK;
}

/* FENCED -> IDLE by one CAS, so the owner seeing its fence and a reclaimer freeing a dead
 * owner's slot lower fenced_claims once between them. Seq_cst: the owner's writes into the
 * fenced region come before, and a releaser that then sees IDLE may reuse the region. */
int shmlog_producer_slot_unfence(shmlog_ring_handle *ring, int slot) {
    shmlog_producer_slot *s = &ring->producers[slot];
    uint32_t fenced = load_relaxed(&s->state);
    if (slot_state_of(fenced) != SHMLOG_SLOT_FENCED ||
        !compare_exchange(&s->state, &fenced, slot_word_with(fenced, SHMLOG_SLOT_IDLE), memory_order_seq_cst,
                          memory_order_relaxed))
        return 0;
    fetch_sub(&ring->header->release.fenced_claims, 1, memory_order_seq_cst);
    return 1;
}

/* The commit CAS, OWNED -> COMMITTING: from here on no repairer can fence the claim, and only
 * from here may the owner write what readers interpret (frame word, batch header, mark).
 * On losing it (fenced) the owner acknowledges the fence: 0 won, SHMLOG_EFENCED lost. */
static int slot_begin_commit(shmlog_ring_handle *ring, shmlog_producer_slot *s) {
    uint32_t owned = slot_word_with(load_relaxed(&s->state), SHMLOG_SLOT_OWNED);
    if (compare_exchange(&s->state, &owned, slot_word_with(owned, SHMLOG_SLOT_COMMITTING), memory_order_acq_rel,
                         memory_order_acquire))
        return 0;
    shmlog_producer_slot_unfence(ring, (int)(s - ring->producers));
    return SHMLOG_EFENCED;
}

static void slot_write_intent(shmlog_producer_slot *s, uint64_t position, uint64_t offset, uint32_t frame_bytes,
                              uint32_t record_count) {
    store_relaxed(&s->claim_position, position);
    store_relaxed(&s->claim_offset, offset);
    store_relaxed(&s->claim_frame_bytes, frame_bytes);
    store_relaxed(&s->claim_record_count, record_count);
    store_relaxed(&s->claim_unix_ns, now_realtime_ns());
    uint32_t generation = (load_relaxed(&s->state) >> SHMLOG_SLOT_GENERATION_SHIFT) + 1;
    /* before the claim CAS, for repairers */
    store_seq_cst(&s->state, generation << SHMLOG_SLOT_GENERATION_SHIFT | SHMLOG_SLOT_CLAIMING);
}

/* ---------------------------------------------------------------- claim */

typedef unsigned __int128 u128;

/* The (tail position, next offset) pair moves in one cmpxchg16b, a full barrier: offsets and
 * bytes are claimed together. C11 has no lock-free 16-byte atomic in GCC (it calls
 * libatomic), hence the legacy builtin. */
static inline int claim_pair_cas(shmlog_ring_claim *c, uint64_t pos, uint64_t off, uint64_t new_pos,
                                 uint64_t new_off) {
    u128 expected = ((u128)off << 64) | pos;
    u128 desired = ((u128)new_off << 64) | new_pos;
    return __sync_bool_compare_and_swap((u128 *)&c->tail_position, expected, desired);
}

/* Waits (in slices) for the releaser to free room up to claim_end; SHMLOG_EFULL at the deadline. */
static int space_wait(shmlog_ring_handle *ring, uint64_t claim_end, uint64_t deadline_ns, shmlog_doorbell *bell) {
    shmlog_ring_header *h = ring->header;
    uint32_t seq = load_acquire(&h->release.space_futex);
    fetch_add(&h->release.space_waiters, 1, memory_order_seq_cst);
    /* What is persisted but held back for readers is ours to take now; in a memory-only ring,
     * whatever is published (shmlog_ring_release_published). */
    shmlog_ring_release_to(ring, shmlog_ring_release_published(ring));
    int rc = SHMLOG_OK;
    if (claim_end > load_seq_cst(&h->release.release_position) + ring->capacity_bytes) {
        uint64_t now = now_monotonic_ns();
        if (now >= deadline_ns) rc = SHMLOG_EFULL;
        else {
            uint64_t slice = deadline_ns - now;
            if (slice > SHMLOG_WAIT_SLICE_NS) slice = SHMLOG_WAIT_SLICE_NS;
            /* Memory-only: what holds us is another producer's claim, published within
             * microseconds, and nobody wakes us when it is: look again soon. */
            if ((load_relaxed(&h->descriptor.flags) & SHMLOG_RING_FLAG_MEMORY_ONLY) && slice > 50000)
                slice = 50000;
            persister_wake(ring, bell); /* it sleeps on a timer while records flow */
            futex_wait(&h->release.space_futex, seq, (int64_t)slice);
        }
    }
    fetch_sub(&h->release.space_waiters, 1, memory_order_seq_cst);
    return rc;
}

/* Claims frame_bytes for record_count offsets (publishing end-of-ring padding on the way);
 * returns the claimed position with the slot OWNED, SHMLOG_EFULL at the deadline, or
 * SHMLOG_ECLOSED once the broker closed the ring. */
static int64_t frame_claim_space(shmlog_ring_handle *ring, shmlog_producer_slot *s, uint64_t frame_bytes,
                                 uint32_t record_count, uint64_t deadline, uint64_t *out_offset,
                                 shmlog_doorbell *bell) {
    shmlog_ring_header *h = ring->header;
    const uint64_t cap = ring->capacity_bytes;
    for (;;) {
        uint64_t pos = load_acquire(&h->claim.tail_position);
        uint64_t off = load_acquire(&h->claim.next_offset);
        uint64_t idx = ring_index_of(ring, pos);
        int pad = idx + frame_bytes > cap;
        uint64_t claim_bytes = pad ? cap - idx : frame_bytes;
        uint32_t claim_count = pad ? 0 : record_count;
        if (pos + claim_bytes > load_acquire(&h->release.release_position) + cap) {
            if (load_seq_cst(&h->descriptor.closed)) return SHMLOG_ECLOSED; /* no waiting on a stopping broker */
            if (space_wait(ring, pos + claim_bytes, deadline, bell) == SHMLOG_EFULL) return SHMLOG_EFULL;
            continue;
        }
        slot_write_intent(s, pos, off, (uint32_t)claim_bytes, claim_count);
        /* Dekker with shmlog_ring_close (close.c): our CLAIMING store (seq_cst) comes before this
         * load, the closer's store of `closed` before its loads of the slots, so either we see
         * closed here or the closer sees our intent and waits for our frame to be published. */
        if (load_seq_cst(&h->descriptor.closed)) {
            slot_store_state(s, SHMLOG_SLOT_IDLE);
            return SHMLOG_ECLOSED;
        }
        crash_at(CRASH_BEFORE_CLAIM_CAS);
        if (!claim_pair_cas(&h->claim, pos, off, pos + claim_bytes, off + claim_count)) {
            slot_store_state(s, SHMLOG_SLOT_IDLE); /* a stale intent must not look like a live claim */
            continue;
        }
        slot_store_state(s, SHMLOG_SLOT_OWNED);
        crash_at(CRASH_AFTER_CLAIM);
        frame_clear_interior(ring, pos, claim_bytes);
        if (pad) {
            /* Fenced meanwhile: the repairer published this padding already. */
            if (slot_begin_commit(ring, s) == 0) {
                frame_publish(ring, pos, (uint32_t)claim_bytes, 1);
                slot_store_state(s, SHMLOG_SLOT_IDLE);
            }
            continue;
        }
        *out_offset = off;
        return (int64_t)pos;
    }
}

typedef struct claimed_frame {
    shmlog_producer_slot *slot;
    int64_t position, frame_bytes;
    uint64_t base_offset;
    uint8_t *records; /* where the batch's records section goes */
} claimed_frame;

/* Claims a frame for a batch of `count` records taking records_bytes: 0, or a negative status. */
static int64_t frame_claim(shmlog_ring_handle *ring, int slot, uint64_t records_bytes, uint32_t count,
                           int64_t timeout_ns, shmlog_doorbell *bell, claimed_frame *out) {
    if (records_bytes > UINT32_MAX) return SHMLOG_ETOOBIG;
    uint64_t frame_bytes = frame_bytes_for_records(records_bytes);
    if (frame_bytes > ring->capacity_bytes || frame_bytes > SHMLOG_FRAME_LENGTH_MASK || count == 0)
        return SHMLOG_ETOOBIG;
    out->slot = &ring->producers[slot];
    out->frame_bytes = (int64_t)frame_bytes;
    out->position = frame_claim_space(ring, out->slot, frame_bytes, count, deadline_after(timeout_ns),
                                      &out->base_offset, bell);
    if (out->position < 0) return out->position;
    out->records = ring_frame_batch(ring, (uint64_t)out->position) + SHMLOG_BATCH_HEADER_BYTES;
    return 0;
}

/* ---------------------------------------------------------------- commit */

/* Each frame that crosses a 1/SHMLOG_INDEX_ENTRIES-of-capacity boundary records where it
 * starts; entries are hints, validated against the frame before use (fetch.c). */
static void offset_index_note(shmlog_ring_handle *ring, uint64_t position, uint64_t frame_bytes, uint64_t offset) {
    uint32_t shift = ring->index_shift;
    uint64_t first = position >> shift, last = (position + frame_bytes - 1) >> shift;
    if (first == last && (position & ((1ULL << shift) - 1)) != 0) return;
    shmlog_index_entry *e = &ring->header->index[last & (SHMLOG_INDEX_ENTRIES - 1)];
    store_relaxed(&e->position, position);
    store_relaxed(&e->offset, offset);
}

/* The batch header, built on the stack with its CRC32C (over the header's attributes.. and the
 * records already in the frame), so the commit window holds no CRC pass over the records. */
static void frame_build_header(const shmlog_ring_handle *ring, const claimed_frame *f, uint8_t *header,
                               uint32_t records_bytes, uint32_t record_count, int64_t base_timestamp,
                               int64_t max_timestamp, int16_t attributes, int64_t producer_id,
                               int16_t producer_epoch, int32_t base_sequence) {
    batch_header_fields(header, records_bytes, f->base_offset, ring->header->descriptor.leader_epoch, attributes,
                        record_count, base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence);
    uint32_t crc = shmlog_crc32c(0, header + SHMLOG_BATCH_OFF_ATTRIBUTES,
                                 SHMLOG_BATCH_HEADER_BYTES - SHMLOG_BATCH_OFF_ATTRIBUTES);
    put_be32(header + SHMLOG_BATCH_OFF_CRC, shmlog_crc32c(crc, f->records, records_bytes));
}

/* The LogAppendTime to stamp on a batch with these attributes, or -1 to keep its CreateTime. */
static int64_t log_append_time(const shmlog_ring_handle *ring, int16_t attributes) {
    if (!(load_relaxed(&ring->header->descriptor.flags) & SHMLOG_RING_FLAG_LOG_APPEND_TIME)) return -1;
    if (attributes & SHMLOG_ATTR_CONTROL) return -1;
    return now_unix_ms();
}

/* Wins the commit CAS, then writes the header over the records already in place and
 * publishes the frame; SHMLOG_EFENCED (nothing written) if a repairer passed the claim. */
static int64_t frame_commit(shmlog_ring_handle *ring, const claimed_frame *f, uint32_t records_bytes,
                            uint32_t record_count, int64_t base_timestamp, int64_t max_timestamp, int16_t attributes,
                            int64_t producer_id, int16_t producer_epoch, int32_t base_sequence,
                            shmlog_doorbell *bell) {
    uint64_t pos = (uint64_t)f->position, frame_bytes = (uint64_t)f->frame_bytes;
    uint8_t header[SHMLOG_BATCH_HEADER_BYTES];
    int64_t append_time = log_append_time(ring, attributes);
    if (append_time >= 0) {
        attributes |= SHMLOG_ATTR_LOG_APPEND_TIME;
        max_timestamp = append_time;
    }
    frame_build_header(ring, f, header, records_bytes, record_count, base_timestamp, max_timestamp, attributes,
                       producer_id, producer_epoch, base_sequence);
    crash_at(CRASH_BEFORE_COMMIT);
    if (slot_begin_commit(ring, f->slot) != 0) return SHMLOG_EFENCED;
    memcpy(ring_frame_batch(ring, pos), header, SHMLOG_BATCH_HEADER_BYTES);
    crash_at(CRASH_BEFORE_PUBLISH);
    offset_index_note(ring, pos, frame_bytes, f->base_offset);
    frame_publish(ring, pos, (uint32_t)frame_bytes, 0);
    slot_store_state(f->slot, SHMLOG_SLOT_IDLE);
    doorbell_ring_watchers(ring, bell);
    persister_nudge(ring, bell, pos, pos + frame_bytes);
    ring->last_log_append_time = append_time;
    return (int64_t)pos;
}

/* ---------------------------------------------------------------- idempotence (docs/exactly-once.md) */

#define SEQUENCE_MASK 0x7fffffffu /* Kafka's sequences are int32 and wrap to 0 after INT32_MAX */

static inline int32_t sequence_after(int32_t sequence, uint32_t n) {
    return (int32_t)(((uint32_t)sequence + n) & SEQUENCE_MASK);
}

/* Another slot of the ring holds the same producer id at a newer epoch: ours is a zombie. */
static int epoch_is_fenced(const shmlog_ring_handle *ring, int slot, int64_t producer_id, int16_t producer_epoch) {
    uint32_t used = load_acquire(&ring->header->slots.producers_used);
    if (used > ring->slot_count) used = ring->slot_count; /* shared memory: never trusted as a bound */
    for (uint32_t i = 0; i < used; i++) {
        const shmlog_sequence_record *r = &ring->sequences[i];
        if ((int)i != slot && load_relaxed(&r->producer_id) == producer_id &&
            load_relaxed(&r->producer_epoch) > producer_epoch)
            return 1;
    }
    return 0;
}

/* Kafka's producer-state check of an idempotent batch against the slot's sequence record,
 * before anything is claimed: the base sequence to stamp (>= 0), SHMLOG_EDUPLICATE (at or
 * below the last sequence appended: the batch is in the log already), SHMLOG_ESEQUENCE (a
 * gap), SHMLOG_EUNKNOWNPRODUCER (a first sequence other than 0 of a producer the record knows
 * nothing of) or SHMLOG_EEPOCH (an older epoch than one seen). Only the slot's owner writes the
 * record, so the check and the update after the publish need no atomics between them. */
static int64_t sequence_check(shmlog_ring_handle *ring, int slot, uint32_t count, int64_t producer_id,
                              int16_t producer_epoch, int32_t base_sequence) {
    if (producer_epoch < 0 || count > SEQUENCE_MASK) return SHMLOG_ESEQUENCE;
    if (base_sequence == SHMLOG_SEQUENCE_NEXT) base_sequence = ring->next_sequence;
    if (base_sequence < 0) return SHMLOG_ESEQUENCE;
    shmlog_sequence_record *r = &ring->sequences[slot];
    if (r->producer_id == producer_id && producer_epoch < r->producer_epoch) return SHMLOG_EEPOCH;
    if (epoch_is_fenced(ring, slot, producer_id, producer_epoch)) return SHMLOG_EEPOCH;
    if (r->producer_id != producer_id || r->producer_epoch != producer_epoch) {
        /* A producer (or epoch) new to this slot: its sequences start at 0. Kafka's rule for
         * another first sequence: a new epoch of a producer the partition knows is out of order,
         * a producer it knows nothing of is UNKNOWN_PRODUCER_ID (a producer whose state the log
         * lost seeds the record or starts again at 0: docs/exactly-once.md). */
        if (base_sequence != 0) return r->producer_id == producer_id ? SHMLOG_ESEQUENCE : SHMLOG_EUNKNOWNPRODUCER;
        store_relaxed(&r->last_sequence, -1);
        store_relaxed(&r->last_offset, -1);
        store_relaxed(&r->producer_epoch, producer_epoch);
        store_release(&r->producer_id, producer_id);
    }
    int32_t last = r->last_sequence;
    if (last < 0) return base_sequence == 0 ? base_sequence : SHMLOG_EUNKNOWNPRODUCER;
    if (base_sequence == sequence_after(last, 1)) return base_sequence;
    /* Within half the sequence space at or below the last one: sent before. */
    uint32_t behind = ((uint32_t)last - (uint32_t)base_sequence) & SEQUENCE_MASK;
    return behind < (SEQUENCE_MASK >> 1) ? SHMLOG_EDUPLICATE : SHMLOG_ESEQUENCE;
}

static void sequence_note(shmlog_ring_handle *ring, int slot, int32_t base_sequence, uint32_t count,
                          uint64_t base_offset) {
    shmlog_sequence_record *r = &ring->sequences[slot];
    store_relaxed(&r->last_offset, (int64_t)(base_offset + count - 1));
    store_release(&r->last_sequence, sequence_after(base_sequence, count - 1));
    ring->last_base_sequence = base_sequence;
    ring->next_sequence = sequence_after(base_sequence, count);
}

/* ---------------------------------------------------------------- the three appends */

int64_t shmlog_ring_append(shmlog_ring_handle *ring, int slot, const uint8_t *records, uint32_t records_bytes,
                           uint32_t record_count, int64_t base_timestamp, int64_t max_timestamp,
                           int16_t attributes, int64_t producer_id, int16_t producer_epoch,
                           int32_t base_sequence, int64_t timeout_ns, shmlog_doorbell *doorbell,
                           uint64_t *out_base_offset) {
    if (slot < 0 || (uint32_t)slot >= ring->slot_count) return SHMLOG_ENOSLOT;
    /* A transaction marker (a control batch: the coordinator's, with the producer's id and epoch)
     * has no sequence, as in Kafka: it is not checked, nor noted in the sequence record. */
    int sequenced = producer_id >= 0 && !(attributes & SHMLOG_ATTR_CONTROL);
    if (sequenced) {
        int64_t checked = sequence_check(ring, slot, record_count, producer_id, producer_epoch, base_sequence);
        if (checked < 0) return checked;
        base_sequence = (int32_t)checked;
    }
    claimed_frame f;
    int64_t rc = frame_claim(ring, slot, records_bytes, record_count, timeout_ns, doorbell, &f);
    if (rc < 0) return rc;
    *out_base_offset = f.base_offset;
    uint32_t half = records_bytes / 2;
    memcpy(f.records, records, half);
    crash_at(CRASH_MID_COPY);
    memcpy(f.records + half, records + half, records_bytes - half);
    rc = frame_commit(ring, &f, records_bytes, record_count, base_timestamp, max_timestamp, attributes, producer_id,
                      producer_epoch, base_sequence, doorbell);
    if (rc >= 0 && sequenced) sequence_note(ring, slot, base_sequence, record_count, f.base_offset);
    return rc;
}

/* Encodes the records straight into the claimed frame: no staging buffer, one pass. */
int64_t shmlog_ring_append_fixed(shmlog_ring_handle *ring, int slot, uint32_t count, const uint8_t *values,
                                 uint32_t value_bytes, int64_t timestamp, int64_t producer_id,
                                 int16_t producer_epoch, int64_t timeout_ns, shmlog_doorbell *doorbell,
                                 uint64_t *out_base_offset) {
    if (slot < 0 || (uint32_t)slot >= ring->slot_count) return SHMLOG_ENOSLOT;
    int64_t records_bytes = shmlog_records_encode_fixed(NULL, 0, count, values, value_bytes);
    if (records_bytes < 0) return SHMLOG_ETOOBIG;
    int32_t sequence = -1;
    if (producer_id >= 0) {
        int64_t checked = sequence_check(ring, slot, count, producer_id, producer_epoch, SHMLOG_SEQUENCE_NEXT);
        if (checked < 0) return checked;
        sequence = (int32_t)checked;
    }
    claimed_frame f;
    int64_t rc = frame_claim(ring, slot, (uint64_t)records_bytes, count, timeout_ns, doorbell, &f);
    if (rc < 0) return rc;
    *out_base_offset = f.base_offset;
    shmlog_records_encode_fixed(f.records, (uint64_t)records_bytes, count, values, value_bytes);
    crash_at(CRASH_MID_COPY);
    rc = frame_commit(ring, &f, (uint32_t)records_bytes, count, timestamp, timestamp, 0, producer_id,
                      producer_id >= 0 ? producer_epoch : -1, sequence, doorbell);
    if (rc >= 0 && producer_id >= 0) sequence_note(ring, slot, sequence, count, f.base_offset);
    return rc;
}

int64_t shmlog_ring_append_records(shmlog_ring_handle *ring, int slot, uint32_t count, const uint8_t *keys,
                                   const int32_t *key_lens, const uint8_t *values, const int32_t *value_lens,
                                   const int64_t *timestamps, int64_t base_timestamp, int64_t max_timestamp,
                                   const uint8_t *headers, const int32_t *headers_lens, int64_t producer_id,
                                   int16_t producer_epoch, int64_t timeout_ns, shmlog_doorbell *doorbell,
                                   uint64_t *out_base_offset) {
    if (slot < 0 || (uint32_t)slot >= ring->slot_count) return SHMLOG_ENOSLOT;
    int64_t records_bytes = shmlog_records_encode(NULL, 0, count, keys, key_lens, values, value_lens, timestamps,
                                                  base_timestamp, headers, headers_lens);
    if (records_bytes < 0) return SHMLOG_ETOOBIG;
    int32_t sequence = -1;
    if (producer_id >= 0) {
        int64_t checked = sequence_check(ring, slot, count, producer_id, producer_epoch, SHMLOG_SEQUENCE_NEXT);
        if (checked < 0) return checked;
        sequence = (int32_t)checked;
    }
    claimed_frame f;
    int64_t rc = frame_claim(ring, slot, (uint64_t)records_bytes, count, timeout_ns, doorbell, &f);
    if (rc < 0) return rc;
    *out_base_offset = f.base_offset;
    shmlog_records_encode(f.records, (uint64_t)records_bytes, count, keys, key_lens, values, value_lens, timestamps,
                          base_timestamp, headers, headers_lens);
    crash_at(CRASH_MID_COPY);
    rc = frame_commit(ring, &f, (uint32_t)records_bytes, count, base_timestamp, max_timestamp, 0, producer_id,
                      producer_id >= 0 ? producer_epoch : -1, sequence, doorbell);
    if (rc >= 0 && producer_id >= 0) sequence_note(ring, slot, sequence, count, f.base_offset);
    return rc;
}
