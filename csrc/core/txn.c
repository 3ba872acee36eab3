/* A partition's transaction line (shmlog_ring_txn): the supervisor's transaction service
 * writes it, read_committed readers read it after the ring's end (see shmlog_layout.h). */
#include "core.h"

void shmlog_ring_set_txn(shmlog_ring_handle *ring, uint64_t first_unstable_plus1, uint64_t aborted_count) {
    shmlog_ring_txn *t = &ring->header->txn;
    store_release(&t->txn_seen, 1);
    store_release(&t->aborted_count, aborted_count);
    store_release(&t->first_unstable_plus1, first_unstable_plus1);
}

void shmlog_ring_txn_state(const shmlog_ring_handle *ring, uint64_t *out) {
    const shmlog_ring_txn *t = &ring->header->txn;
    out[0] = load_acquire(&t->first_unstable_plus1);
    out[1] = load_acquire(&t->aborted_count);
    out[2] = load_acquire(&t->txn_seen);
}

int64_t shmlog_ring_committed_frames(const shmlog_ring_handle *ring, const shmlog_cursor *cursor,
                                     shmlog_frame_ref *frames, uint32_t max_frames) {
    /* The end first, the transaction line after it (shmlog_ring_txn says why). */
    uint64_t end = load_acquire(&ring->header->claim.next_offset);
    uint64_t state[3];
    shmlog_ring_txn_state(ring, state);
    if (!state[2]) return max_frames;
    if (state[1]) return -1;
    uint64_t lso = state[0] && state[0] - 1 < end ? state[0] - 1 : end;
    if (cursor->next_offset >= lso) return 0;
    shmlog_cursor probe = *cursor;
    int64_t n = shmlog_ring_fetch(ring, &probe, NULL, 0, frames, max_frames, 0);
    if (n < 0) return max_frames; /* a status the caller's own fetch reports */
    int64_t k = 0;
    while (k < n && frames[k].base_offset < lso) k++;
    return k;
}
