/* The doorbell: one futex word per slot that a blocked consumer (or the persister) sleeps on,
 * and a waiter mask per ring saying whom a publish must wake.
 *
 * Lost wake-ups are impossible by a Dekker pair: a waiter sets its bit in the ring's mask
 * (seq_cst RMW) and then re-checks the ring; a publisher publishes, issues a seq_cst fence,
 * then reads the mask. One of them sees the other. The futex wait compares against the
 * sequence read before watching, so a wake between re-check and sleep is not lost either. */
#include "core.h"

_Static_assert(sizeof(shmlog_doorbell_slot) == SHMLOG_CACHE_LINE, "doorbell slot is one line");
_Static_assert(offsetof(shmlog_doorbell, slots) == SHMLOG_CACHE_LINE, "doorbell header is one line");

/* ---------------------------------------------------------------- the object and its slots */

int shmlog_doorbell_init(shmlog_doorbell *bell) {
    memset(bell, 0, sizeof(*bell));
    bell->layout_version = SHMLOG_LAYOUT_VERSION;
    bell->slot_count = SHMLOG_DOORBELL_SLOTS;
    store_release(&bell->magic, SHMLOG_DOORBELL_MAGIC); /* pairs with the acquire in validate */
    return SHMLOG_OK;
}

int shmlog_doorbell_validate(const shmlog_doorbell *bell, uint64_t map_bytes) {
    if (map_bytes < sizeof(shmlog_doorbell)) return SHMLOG_EBADHEADER;
    if (load_acquire(&bell->magic) != SHMLOG_DOORBELL_MAGIC || bell->layout_version != SHMLOG_LAYOUT_VERSION ||
        bell->slot_count != SHMLOG_DOORBELL_SLOTS)
        return SHMLOG_EBADHEADER;
    return SHMLOG_OK;
}

int shmlog_doorbell_acquire(shmlog_doorbell *bell, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token) {
    for (int i = 0; i < SHMLOG_DOORBELL_SLOTS; i++) {
        uint32_t expected = 0;
        if (compare_exchange(&bell->slots[i].pid, &expected, pid, memory_order_acq_rel, memory_order_relaxed)) {
            bell->slots[i].pid_start_time = pid_start_time;
            store_release(&bell->slots[i].owner_token, owner_token);
            return i;
        }
    }
    return SHMLOG_ENOSLOT;
}

void shmlog_doorbell_release(shmlog_doorbell *bell, int slot) {
    store_release(&bell->slots[slot].owner_token, 0);
    store_release(&bell->slots[slot].pid, 0);
}

uint32_t shmlog_doorbell_sequence(const shmlog_doorbell *bell, int slot) {
    return load_acquire(&bell->slots[slot].futex_seq);
}

/* Seq_cst: the waiter's half of the Dekker pair with doorbell_ring_watchers. */
void shmlog_doorbell_watch(shmlog_ring_handle *ring, int slot, int on) {
    uint64_t *word = &ring->header->waiters.waiter_mask[slot / 64];
    uint64_t bit = 1ULL << (slot % 64);
    if (on) fetch_or(word, bit, memory_order_seq_cst);
    else fetch_and(word, ~bit, memory_order_seq_cst);
}

/* Every sleeper on the doorbell wakes (they re-check what they wait for): the supervisor's
 * metadata changes, so an idle persister sleeping long sees a new topic at once. */
void shmlog_doorbell_wake_all(shmlog_doorbell *bell) {
    for (int i = 0; i < SHMLOG_DOORBELL_SLOTS; i++) {
        if (!load_relaxed(&bell->slots[i].pid)) continue;
        fetch_add(&bell->slots[i].futex_seq, 1, memory_order_seq_cst);
        futex_wake_all(&bell->slots[i].futex_seq);
    }
}

int shmlog_doorbell_wait(shmlog_doorbell *bell, int slot, uint32_t seen_sequence, int64_t timeout_ns) {
    int rc = futex_wait(&bell->slots[slot].futex_seq, seen_sequence, timeout_ns);
    return rc == 0 ? SHMLOG_OK : SHMLOG_EAGAIN;
}

/* ---------------------------------------------------------------- who a ring wakes */

/* The publisher's half of the Dekker pair: the fence orders our frame before reading the mask. */
void doorbell_ring_watchers(const shmlog_ring_handle *ring, shmlog_doorbell *bell) {
    if (!bell) return;
    const shmlog_ring_header *h = ring->header;
    fence_seq_cst();
    for (int w = 0; w < SHMLOG_WAITER_WORDS; w++) {
        uint64_t mask = load_relaxed(&h->waiters.waiter_mask[w]);
        while (mask) {
            int slot = w * 64 + __builtin_ctzll(mask);
            mask &= mask - 1;
            fetch_add(&bell->slots[slot].futex_seq, 1, memory_order_release);
            futex_wake_all(&bell->slots[slot].futex_seq);
        }
    }
}

/* The persister does not watch a ring while records flow (one wake per batch would cost a
 * context switch per record on a small machine); it sleeps on its own doorbell slot, named in
 * persist.persister_slot, on a timer. What needs it promptly wakes that slot directly: a
 * producer short of space, an acks=all producer waiting for fsync, a ring filling past a
 * quarter unpersisted. Pairs with the persister reading its sequence before re-checking. */
void persister_wake(const shmlog_ring_handle *ring, shmlog_doorbell *bell) {
    if (!bell) return;
    uint32_t s = load_acquire(&ring->header->persist.persister_slot);
    if (s == 0 || s > SHMLOG_DOORBELL_SLOTS) { /* none named (or garbage): whoever watches */
        doorbell_ring_watchers(ring, bell);
        return;
    }
    fetch_add(&bell->slots[s - 1].futex_seq, 1, memory_order_seq_cst);
    futex_wake_all(&bell->slots[s - 1].futex_seq);
}

void persister_nudge(const shmlog_ring_handle *ring, shmlog_doorbell *bell, uint64_t start, uint64_t end) {
    if (!bell) return;
    const shmlog_ring_header *h = ring->header;
    uint64_t quarter_unpersisted = load_acquire(&h->persist.persisted_position) + ring->capacity_bytes / 4;
    if (start < quarter_unpersisted && end >= quarter_unpersisted && load_relaxed(&h->persist.persister_slot))
        persister_wake(ring, bell);
}

/* ---------------------------------------------------------------- a consumer waiting on rings */

static int rings_have_data(shmlog_ring_handle *const *rings, shmlog_cursor *const *cursors, int n) {
    for (int i = 0; i < n; i++) {
        shmlog_cursor c = {load_relaxed(&cursors[i]->position), load_relaxed(&cursors[i]->next_offset)};
        if (shmlog_ring_readable(rings[i], &c)) return 1;
    }
    return 0;
}

int shmlog_wait_any(shmlog_doorbell *bell, int slot, shmlog_ring_handle *const *rings,
                    shmlog_cursor *const *cursors, int n, int64_t spin_ns, int64_t timeout_ns, int64_t *waited_ns) {
    const uint64_t start = now_monotonic_ns();
    uint64_t now = start;
    int rc = SHMLOG_WAIT_TIMEOUT;
    int sleeper = bell && slot >= 0 && slot < SHMLOG_DOORBELL_SLOTS;
    /* Read before the spin: a direct wake of our slot while we spin (a group event for this
     * consumer) ends the spin, or makes the futex wait return at once. */
    uint32_t seq = sleeper ? load_acquire(&bell->slots[slot].futex_seq) : 0;
    if (spin_ns > timeout_ns) spin_ns = timeout_ns;
    for (uint32_t i = 0;; i++) {
        if (rings_have_data(rings, cursors, n)) { rc = SHMLOG_WAIT_SPUN; goto out; }
        if (spin_ns <= 0) break;
        if ((i & 15) == 15) {
            if (sleeper && load_acquire(&bell->slots[slot].futex_seq) != seq) goto out;
            now = now_monotonic_ns();
            if (now - start >= (uint64_t)spin_ns) break;
        }
        cpu_relax();
    }
    now = now_monotonic_ns();
    if (!sleeper || timeout_ns <= 0 || now - start >= (uint64_t)timeout_ns) goto out;
    /* Watch, then re-check: a publish after the re-check bumps the sequence we sleep on
     * (Dekker with doorbell_ring_watchers), so it cannot slip in between. */
    for (int i = 0; i < n; i++) shmlog_doorbell_watch(rings[i], slot, 1);
    if (rings_have_data(rings, cursors, n)) rc = SHMLOG_WAIT_SPUN;
    else {
        futex_wait(&bell->slots[slot].futex_seq, seq, (int64_t)(timeout_ns - (int64_t)(now - start)));
        if (rings_have_data(rings, cursors, n)) rc = SHMLOG_WAIT_WOKEN;
    }
    for (int i = 0; i < n; i++) shmlog_doorbell_watch(rings[i], slot, 0);
out:
    if (waited_ns) *waited_ns = (int64_t)(now_monotonic_ns() - start);
    return rc;
}
