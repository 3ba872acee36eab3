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
