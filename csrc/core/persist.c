/* Pins, release and persistence: what lets a producer reuse ring bytes, and what tells it
 * (and acks=all) how far the persister got.
 *
 * A producer may claim up to release_position + capacity. The persister (and a producer short
 * of space) releases up to what is persisted, but never past a zero-copy reader's pin: a
 * pinning reader stores its pin then reads release_busy; a releaser raises release_busy then
 * reads the pins (all seq_cst). Either the reader sees a releaser busy (and backs off to
 * copying) or the releaser sees the pin. The releaser scans the pins up to slots.pins_used,
 * which a reader raises (seq_cst) when it takes a pin, before it ever sets it.
 *
 * Fenced claims hold the release the same way: a producer passed while stalled may still copy
 * records into its claimed region until it resumes and sees the fence, so while any slot is
 * FENCED (fenced_claims > 0: one load on the release path) the release stops at its claim. */
#include "core.h"

/* ---------------------------------------------------------------- reader pins */

int shmlog_pin_acquire(shmlog_ring_handle *ring, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token) {
    for (int i = 0; i < (int)ring->slot_count; i++) {
        shmlog_pin_slot *p = &ring->pins[i];
        uint32_t expected = 0;
        if (compare_exchange(&p->in_use, &expected, 1, memory_order_acq_rel, memory_order_relaxed)) {
            store_seq_cst(&p->pin_position, UINT64_MAX);
            p->pid = pid;
            p->pid_start_time = pid_start_time;
            store_release(&p->owner_token, owner_token); /* publishes pid and start time */
            slots_note_taken(&ring->header->slots.pins_used, i);
            return i;
        }
    }
    return SHMLOG_ENOSLOT;
}

/* Dekker pair with shmlog_ring_release_to: we store the pin then read the busy count, a
 * releaser raises the count then reads the pins. Seeing no releaser busy means either every
 * later release round sees our pin, or the last one's release is what we read next. */
int shmlog_pin_set(shmlog_ring_handle *ring, int pin, uint64_t position) {
    shmlog_ring_header *h = ring->header;
    shmlog_pin_slot *p = &ring->pins[pin];
    store_seq_cst(&p->pin_position, position);
    if (position == UINT64_MAX) return SHMLOG_OK;
    for (int spin = 0; spin < 100000; spin++) {
        if (!load_seq_cst(&h->release.release_busy)) {
            if (load_seq_cst(&h->release.release_position) <= position) return SHMLOG_OK;
            break;
        }
        cpu_relax();
    }
    store_seq_cst(&p->pin_position, UINT64_MAX);
    return SHMLOG_EOVERWRITTEN;
}

void shmlog_pin_release(shmlog_ring_handle *ring, int pin) {
    shmlog_pin_slot *p = &ring->pins[pin];
    store_seq_cst(&p->pin_position, UINT64_MAX);
    store_release(&p->owner_token, 0);
    store_release(&p->in_use, 0);
}

/* ---------------------------------------------------------------- release */

/* The lowest claim of a FENCED slot, or target. The count is raised before the fence and the
 * fence precedes publishing the control batch, which precedes persisting past it: a releaser
 * given a persisted position past a fenced claim sees the count and the FENCED slot. */
static uint64_t fenced_claims_floor(const shmlog_ring_handle *ring, uint64_t target) {
    const shmlog_ring_header *h = ring->header;
    if (!load_seq_cst(&h->release.fenced_claims)) return target;
    uint32_t used = slots_in_use(ring, &h->slots.producers_used);
    for (uint32_t i = 0; i < used; i++) {
        const shmlog_producer_slot *s = &ring->producers[i];
        if (slot_state_of(load_seq_cst(&s->state)) == SHMLOG_SLOT_FENCED) {
            uint64_t p = load_relaxed(&s->claim_position);
            if (p < target) target = p;
        }
    }
    return target;
}

/* Space is released lazily: a quarter of the ring stays readable behind the persister (so
 * readers near the head keep zero-copy access) until a producer actually waits for room.
 * Several processes release (the persister, producers short of space): the busy count and
 * the CAS keep the release monotonic and every pin honoured. */
uint64_t shmlog_ring_release_to(shmlog_ring_handle *ring, uint64_t persisted_position) {
    shmlog_ring_header *h = ring->header;
    uint64_t hold_back = load_seq_cst(&h->release.space_waiters) ? 0 : ring->capacity_bytes / 4;
    uint64_t current = load_acquire(&h->release.release_position);
    if (persisted_position < hold_back || persisted_position - hold_back <= current) return current;
    fetch_add(&h->release.release_busy, 1, memory_order_seq_cst);
    uint64_t target = persisted_position - hold_back;
    uint32_t pins = slots_in_use(ring, &h->slots.pins_used);
    for (uint32_t i = 0; i < pins; i++) {
        uint64_t p = load_seq_cst(&ring->pins[i].pin_position);
        if (p < target) target = p;
    }
    target = fenced_claims_floor(ring, target);
    current = load_acquire(&h->release.release_position);
    while (target > current && !compare_exchange(&h->release.release_position, &current, target,
                                                 memory_order_seq_cst, memory_order_acquire)) {
    }
    fetch_sub(&h->release.release_busy, 1, memory_order_seq_cst);
    if (target <= current) return current;
    fence_seq_cst(); /* the new release before reading space_waiters (Dekker with space_wait) */
    if (load_relaxed(&h->release.space_waiters)) {
        fetch_add(&h->release.space_futex, 1, memory_order_release);
        futex_wake_all(&h->release.space_futex);
    }
    return target;
}

/* ---------------------------------------------------------------- memory-only rings */

static void advance_max(uint64_t *word, uint64_t value) {
    uint64_t current = load_acquire(word);
    while (current < value &&
           !compare_exchange(word, &current, value, memory_order_seq_cst, memory_order_acquire)) {
    }
}

/* Frames between the persisted and the tail positions are at or past release_position, so no
 * producer reuses their bytes while we read them: their words and marks are this lap's. Several
 * producers may walk at once; both words only move forward (the offset may lag its position for
 * a moment, which only makes a reader take the ring's start as a little older). */
uint64_t shmlog_ring_release_published(shmlog_ring_handle *ring) {
    shmlog_ring_header *h = ring->header;
    uint64_t pos = load_acquire(&h->persist.persisted_position);
    if (!(load_relaxed(&h->descriptor.flags) & SHMLOG_RING_FLAG_MEMORY_ONLY)) return pos;
    const uint64_t tail = load_acquire(&h->claim.tail_position);
    uint64_t next_offset = 0;
    while (pos < tail && frame_is_published(ring, pos)) {
        uint64_t word = load_relaxed(ring_frame_word(ring, pos));
        uint32_t length = (uint32_t)(word & SHMLOG_FRAME_LENGTH_MASK);
        if ((uint32_t)(word >> 32) != ring_lap_of(ring, pos) || length < SHMLOG_FRAME_ALIGN ||
            length % SHMLOG_FRAME_ALIGN || length > ring->capacity_bytes - ring_index_of(ring, pos))
            break; /* garbage: leave it to the readers and repairers that report it */
        if (!(word & SHMLOG_FRAME_PADDING_FLAG) && length >= SHMLOG_FRAME_PREFIX_BYTES + SHMLOG_BATCH_HEADER_BYTES) {
            const uint8_t *batch = ring_frame_batch(ring, pos);
            next_offset = get_be64(batch + SHMLOG_BATCH_OFF_BASE_OFFSET) +
                          (uint64_t)get_be32(batch + SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA) + 1;
        }
        pos += length;
    }
    if (next_offset) {
        advance_max(&h->persist.persisted_offset, next_offset);
        advance_max(&h->persist.flushed_offset, next_offset); /* what readers of the ring may see */
    }
    advance_max(&h->persist.persisted_position, pos);
    return load_acquire(&h->persist.persisted_position);
}

/* ---------------------------------------------------------------- persisted and flushed */

void shmlog_ring_publish_persisted(shmlog_ring_handle *ring, uint64_t position, uint64_t offset,
                                   uint64_t flushed_offset) {
    shmlog_ring_header *h = ring->header;
    store_release(&h->persist.persisted_position, position);
    store_release(&h->persist.persisted_offset, offset);
    store_release(&h->persist.flushed_offset, flushed_offset);
    fence_seq_cst(); /* the new offsets before reading persist_waiters (Dekker with wait_flushed) */
    if (load_relaxed(&h->persist.persist_waiters)) {
        fetch_add(&h->persist.persist_futex, 1, memory_order_release);
        futex_wake_all(&h->persist.persist_futex);
    }
}

static int too_few_insync(const shmlog_ring_header *h) {
    return load_acquire(&h->replication.isr_count) < load_acquire(&h->replication.min_insync_replicas);
}

int shmlog_ring_insync_enough(shmlog_ring_handle *ring) { return !too_few_insync(ring->header); }

int shmlog_ring_wait_flushed(shmlog_ring_handle *ring, uint64_t offset, int64_t timeout_ns,
                             shmlog_doorbell *doorbell) {
    shmlog_ring_header *h = ring->header;
    const uint64_t deadline = deadline_after(timeout_ns);
    for (int round = 0;; round++) {
        uint32_t seq = load_acquire(&h->persist.persist_futex);
        fetch_add(&h->persist.persist_waiters, 1, memory_order_seq_cst);
        if (round == 0) persister_wake(ring, doorbell); /* the persister fsyncs when it sees a waiter */
        int done = load_seq_cst(&h->persist.flushed_offset) > offset;
        if (too_few_insync(h)) { /* Kafka checks it when the ack is due: NOT_ENOUGH_REPLICAS_AFTER_APPEND */
            fetch_sub(&h->persist.persist_waiters, 1, memory_order_seq_cst);
            return SHMLOG_ENOTENOUGHREPLICAS;
        }
        uint64_t now = now_monotonic_ns();
        if (!done && now < deadline) {
            uint64_t slice = deadline - now;
            if (slice > SHMLOG_WAIT_SLICE_NS) slice = SHMLOG_WAIT_SLICE_NS;
            futex_wait(&h->persist.persist_futex, seq, (int64_t)slice);
        }
        fetch_sub(&h->persist.persist_waiters, 1, memory_order_seq_cst);
        if (done) return SHMLOG_OK;
        /* A replicated partition's leader moves off a failing log dir (the supervisor elects an
         * in-sync replica): its acks=all waiters wait for the new leader instead of failing. */
        if (load_acquire(&h->persist.storage_error) && load_acquire(&h->replication.replica_count) <= 1)
            return SHMLOG_ECORRUPT;
        if (now_monotonic_ns() >= deadline) return SHMLOG_EAGAIN;
    }
}

/* Only moves forward; release: the persister acquires it before grouping fsyncs. */
void shmlog_ring_request_flush(shmlog_ring_handle *ring, uint64_t offset) {
    shmlog_ring_header *h = ring->header;
    uint64_t current = load_relaxed(&h->persist.flush_requested_offset);
    while (current < offset && !compare_exchange(&h->persist.flush_requested_offset, &current, offset,
                                                 memory_order_release, memory_order_relaxed)) {
    }
}

/* The log start offset only moves forward, and two processes move it (the supervisor for
 * delete_records, the persister for retention): a CAS loop keeps the larger of the two. */
uint64_t shmlog_ring_advance_log_start(shmlog_ring_handle *ring, uint64_t offset) {
    shmlog_ring_header *h = ring->header;
    uint64_t current = load_acquire(&h->persist.log_start_offset);
    while (current < offset && !compare_exchange(&h->persist.log_start_offset, &current, offset,
                                                 memory_order_seq_cst, memory_order_acquire)) {
    }
    return current < offset ? offset : current;
}

/* ---------------------------------------------------------------- topic config */

void shmlog_ring_set_log_append_time(shmlog_ring_handle *ring, int on) {
    uint32_t *flags = &ring->header->descriptor.flags;
    if (on)
        fetch_or(flags, SHMLOG_RING_FLAG_LOG_APPEND_TIME, memory_order_release);
    else
        fetch_and(flags, ~SHMLOG_RING_FLAG_LOG_APPEND_TIME, memory_order_release);
}

/* ---------------------------------------------------------------- replication */

/* One writer (the supervisor). isr_count is stored last: a producer that reads it sees the
 * mask and minimum it goes with. A shrunken ISR wakes acks=all waiters, which then either see
 * a new high watermark (the persister republishes it) or fail NOT_ENOUGH_REPLICAS. */
void shmlog_ring_set_replication(shmlog_ring_handle *ring, uint32_t replica_count, uint32_t min_insync_replicas,
                                 uint32_t isr_mask, uint32_t leader_index, uint32_t leader_epoch,
                                 const uint8_t *replica_log_dirs) {
    shmlog_ring_header *h = ring->header;
    uint32_t isr = 0;
    for (uint32_t m = isr_mask; m; m &= m - 1) isr++;
    for (uint32_t i = 0; i < replica_count && i < SHMLOG_MAX_REPLICAS; i++)
        store_release(&h->replication.replica_log_dirs[i], replica_log_dirs[i]);
    store_release(&h->replication.replica_count, replica_count);
    store_release(&h->replication.leader_index, leader_index);
    store_release(&h->replication.leader_epoch, leader_epoch);
    /* What producers stamp in each batch's partitionLeaderEpoch (append.c reads the descriptor's). */
    store_release(&h->descriptor.leader_epoch, leader_epoch);
    store_release(&h->replication.isr_mask, isr_mask);
    store_release(&h->replication.min_insync_replicas, min_insync_replicas);
    store_seq_cst(&h->replication.isr_count, isr);
    if (load_relaxed(&h->persist.persist_waiters)) {
        fetch_add(&h->persist.persist_futex, 1, memory_order_release);
        futex_wake_all(&h->persist.persist_futex);
    }
}

/* Each follower's word has one writer, its mirror (one per log dir, by its lock file); it moves
 * back only when the mirror cut a log the leader does not share, before it rejoins the ISR. */
void shmlog_ring_wake_persister(shmlog_ring_handle *ring, shmlog_doorbell *doorbell) { persister_wake(ring, doorbell); }

static uint64_t replica_word_tag(uint32_t log_dir) {
    return (uint64_t)(log_dir + 1) << SHMLOG_REPLICA_WORD_TAG_SHIFT;
}

void shmlog_ring_publish_replica_fsynced(shmlog_ring_handle *ring, uint32_t replica, uint32_t log_dir,
                                         uint64_t offset, shmlog_doorbell *doorbell) {
    if (replica >= SHMLOG_MAX_REPLICAS) return;
    shmlog_ring_header *h = ring->header;
    store_seq_cst(&h->replication.replica_fsynced_offset[replica], replica_word_tag(log_dir) | offset);
    if (doorbell) persister_wake(ring, doorbell);
}

uint64_t shmlog_ring_replica_fsynced(shmlog_ring_handle *ring, uint32_t replica) {
    if (replica >= SHMLOG_MAX_REPLICAS) return 0;
    shmlog_ring_header *h = ring->header;
    uint64_t word = load_acquire(&h->replication.replica_fsynced_offset[replica]);
    uint64_t tag = replica_word_tag(load_acquire(&h->replication.replica_log_dirs[replica]));
    uint64_t tag_mask = ~(uint64_t)0 << SHMLOG_REPLICA_WORD_TAG_SHIFT;
    return (word & tag_mask) == tag ? word & ~tag_mask : 0;
}
