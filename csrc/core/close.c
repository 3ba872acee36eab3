/* Closing a ring: how a stopping broker makes sure nothing is published after its final drain.
 *
 *   1. shmlog_ring_close stores `closed` (seq_cst) and wakes whoever sleeps on the ring (space
 *      waiters, consumers watching it), so that they look again and see it.
 *   2. shmlog_ring_open_claims lists the producer slots still CLAIMING, OWNED or COMMITTING (seq_cst loads).
 *      The supervisor waits until there are none (repairing dead producers' claims); only then
 *      does the persister drain the ring.
 *
 * A producer stores its intent (CLAIMING, seq_cst) before it loads `closed` and moves the claim
 * pair (append.c); the closer stores `closed` before it loads the slots. A Dekker pair: either
 * the producer sees closed and backs out with SHMLOG_ECLOSED, or the closer sees its intent
 * and waits until the frame is published (or the claim lost its CAS and the slot went back to
 * IDLE; its retry then sees closed). So once step 2 finds no claim, every frame the ring will
 * ever hold is published, and the drain that follows persists all of it. */
#include "core.h"

void shmlog_ring_close(shmlog_ring_handle *ring, shmlog_doorbell *doorbell) {
    shmlog_ring_header *h = ring->header;
    store_seq_cst(&h->descriptor.closed, 1);
    /* A producer waiting for space looks again (and backs out); so does a consumer asleep on it. */
    fetch_add(&h->release.space_futex, 1, memory_order_seq_cst);
    futex_wake_all(&h->release.space_futex);
    doorbell_ring_watchers(ring, doorbell);
}

void shmlog_ring_reopen(shmlog_ring_handle *ring) { store_seq_cst(&ring->header->descriptor.closed, 0); }

int shmlog_ring_is_closed(const shmlog_ring_handle *ring) {
    return load_seq_cst(&ring->header->descriptor.closed) != 0;
}

int shmlog_ring_open_claims(const shmlog_ring_handle *ring, int *slots, int max_slots) {
    int n = 0;
    uint32_t used = slots_in_use(ring, &ring->header->slots.producers_used);
    for (uint32_t i = 0; i < used; i++) {
        uint32_t state = slot_state_of(load_seq_cst(&ring->producers[i].state));
        if (state != SHMLOG_SLOT_CLAIMING && state != SHMLOG_SLOT_OWNED && state != SHMLOG_SLOT_COMMITTING) continue;
        if (n < max_slots) slots[n] = (int)i;
        n++;
    }
    return n;
}
