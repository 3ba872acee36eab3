/* What the files of the C core share and nobody else sees: futexes, the spin hint, and the
 * few functions one concept calls in another (hidden: not exported from _core). */
#ifndef SHMLOG_CORE_PRIVATE_H
#define SHMLOG_CORE_PRIVATE_H

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shmlog_core.h"
#include "shmlog_internal.h"

#define SHMLOG_HIDDEN __attribute__((visibility("hidden")))

/* A sleeper that no waker can reach (it died) must not strand a waiter: waits are cut in
 * slices this long and the condition re-checked. */
#define SHMLOG_WAIT_SLICE_NS 100000000ULL

/* ---------------------------------------------------------------- futex */

/* Sleeps while *word == expected, up to timeout_ns (< 0: no limit); 0 when woken. */
static inline int futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        tsp = &ts;
    }
    return (int)syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, NULL, 0);
}

static inline void futex_wake_all(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline uint64_t deadline_after(int64_t timeout_ns) {
    return timeout_ns < 0 ? UINT64_MAX : now_monotonic_ns() + (uint64_t)timeout_ns;
}

/* ---------------------------------------------------------------- slot tables */

/* How far a scan of a slot table goes: the slots ever taken (slots.producers_used or
 * pins_used), never past the handle's slot_count (shared memory may hold garbage). Seq_cst:
 * the releaser's pin scan is one side of a Dekker pair (persist.c). */
static inline uint32_t slots_in_use(const shmlog_ring_handle *ring, const uint32_t *used) {
    uint32_t n = load_seq_cst(used);
    return n < ring->slot_count ? n : ring->slot_count;
}

/* Raises a table's used count to cover slot i before the slot is handed out. */
static inline void slots_note_taken(uint32_t *used, int i) {
    uint32_t current = load_relaxed(used);
    while (current < (uint32_t)i + 1 &&
           !compare_exchange(used, &current, (uint32_t)i + 1, memory_order_seq_cst, memory_order_relaxed)) {
    }
}

/* A producer slot's state word: the state, and the generation of the claim it is about. */
static inline uint32_t slot_state_of(uint32_t word) { return word & SHMLOG_SLOT_STATE_MASK; }

static inline uint32_t slot_word_with(uint32_t word, uint32_t state) {
    return (word & ~SHMLOG_SLOT_STATE_MASK) | state;
}

/* The owner's own transitions that no repairer races (it fences only OWNED, or a dead
 * owner's slot): the generation stays, only the state changes. */
static inline void slot_store_state(shmlog_producer_slot *s, uint32_t state) {
    store_release(&s->state, slot_word_with(load_relaxed(&s->state), state));
}

/* ---------------------------------------------------------------- across concepts */

/* doorbell.c: wake every consumer watching the ring (after a publish or a repair). */
SHMLOG_HIDDEN void doorbell_ring_watchers(const shmlog_ring_handle *ring, shmlog_doorbell *bell);
/* doorbell.c: wake the ring's persister now (space short, an fsync awaited). */
SHMLOG_HIDDEN void persister_wake(const shmlog_ring_handle *ring, shmlog_doorbell *bell);
/* doorbell.c: wake it once when [start, end) takes the unpersisted bytes past a quarter. */
SHMLOG_HIDDEN void persister_nudge(const shmlog_ring_handle *ring, shmlog_doorbell *bell, uint64_t start,
                                   uint64_t end);
/* batch.c: every header field but the CRC (shmlog_batch_write_header is this plus batch_seal). */
SHMLOG_HIDDEN void batch_header_fields(uint8_t *batch, uint32_t records_bytes, uint64_t base_offset,
                                       uint32_t leader_epoch, int16_t attributes, uint32_t record_count,
                                       int64_t base_timestamp, int64_t max_timestamp, int64_t producer_id,
                                       int16_t producer_epoch, int32_t base_sequence);
/* batch.c: the CRC32C over attributes..end, written into the header. */
SHMLOG_HIDDEN void batch_seal(uint8_t *batch);
/* fetch.c: nothing has claimed past position + capacity yet (bytes at position not reused). */
SHMLOG_HIDDEN int ring_still_intact(const shmlog_ring_handle *ring, uint64_t position);

#endif
