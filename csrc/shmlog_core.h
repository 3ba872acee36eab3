/* shmlog C core: the functions Python calls through cffi (see shmlog/_native/_ffi_build.py,
 * which preprocesses this header into the cdef, and reads every SHMLOG_* #define from it).
 *
 * A ring function takes the process-local handle filled by shmlog_ring_open (never the raw
 * mapping); a doorbell function takes the mapped doorbell. Implementations live in csrc/core/,
 * one concept per file (see the comment beside each group). */
#ifndef SHMLOG_CORE_H
#define SHMLOG_CORE_H

#include <stddef.h>
#include <stdint.h>
#include "shmlog_layout.h"

/* ---------------------------------------------------------------- producer rules
 * The one definition of each; Python reads them from lib (shmlog/log/batch.py). */

/* Kafka's maximum per-record framing beyond key and value (varints, attributes): what a
 * record counts against batch.size, buffer.memory and the size limits. */
#define SHMLOG_RECORD_OVERHEAD_BYTES 21
/* Bytes of framing around each value of shmlog_records_encode_fixed: padded varints for the
 * length (5), attributes (1), timestamp delta (1), offset delta, key length (1), value
 * length (5) and header count (1). */
#define SHMLOG_FIXED_RECORD_OVERHEAD_BYTES (5 + 1 + 1 + SHMLOG_FIXED_OFFSET_DELTA_BYTES + 1 + 5 + 1)

/* ---------------------------------------------------------------- hashes (core/hash.c) */

uint32_t shmlog_crc32c(uint32_t crc, const void *data, size_t length);
uint32_t shmlog_crc32c_sw(uint32_t crc, const void *data, size_t length);
int shmlog_crc32c_hw_available(void);
int32_t shmlog_murmur2(const void *data, size_t length);
/* Kafka's Java default partitioner: toPositive(murmur2(key)) % partitions. */
uint32_t shmlog_murmur2_partition(const void *key, size_t length, uint32_t partitions);
uint32_t shmlog_fnv1a(const void *data, size_t length);

/* ---------------------------------------------------------------- record batches (core/batch.c) */

int64_t shmlog_records_encode(uint8_t *dst, uint64_t dst_bytes, uint32_t count,
                              const uint8_t *keys, const int32_t *key_lens,
                              const uint8_t *values, const int32_t *value_lens,
                              const int64_t *timestamps, int64_t base_timestamp,
                              const uint8_t *headers, const int32_t *headers_lens);
int64_t shmlog_records_encode_fixed(uint8_t *dst, uint64_t dst_bytes, uint32_t count,
                                    const uint8_t *values, uint32_t value_bytes);
int64_t shmlog_batch_index(const uint8_t *batch, uint64_t batch_bytes, shmlog_record_ref *records,
                           uint32_t max_records, int check_crc);
/* Indexes a records section held apart from its batch (a compressed batch's, decompressed):
 * `count` records, positions relative to records_section; SHMLOG_ECORRUPT unless the
 * records fill records_bytes exactly. */
int64_t shmlog_records_index(const uint8_t *records_section, uint64_t records_bytes, uint32_t count,
                             int64_t base_offset, int64_t base_timestamp, int64_t max_timestamp,
                             uint16_t attributes, shmlog_record_ref *records, uint32_t max_records);
int shmlog_batch_verify(const uint8_t *batch, uint64_t batch_bytes, int check_crc);
int shmlog_batch_write_header(uint8_t *batch, uint32_t records_bytes, uint64_t base_offset,
                              uint32_t leader_epoch, int16_t attributes, uint32_t record_count,
                              int64_t base_timestamp, int64_t max_timestamp, int64_t producer_id,
                              int16_t producer_epoch, int32_t base_sequence);
/* A batch a client built (the Kafka listener's Produce), checked rule by rule in this order:
 * what shmlog_batch_check returns. COMPRESSED: the header's rules hold, the records are the
 * caller's to decompress and index; SHMLOG_ENOMEM when no scratch space for the index was to be
 * had. shmlog/broker/kafka_listener/batches.py words each fault. */
#define SHMLOG_BATCH_ACCEPTED 0
#define SHMLOG_BATCH_COMPRESSED 1
#define SHMLOG_BATCH_BAD_MAGIC 2
#define SHMLOG_BATCH_TOO_LARGE 3
#define SHMLOG_BATCH_CONTROL 4
#define SHMLOG_BATCH_NO_EPOCH_OR_SEQUENCE 5
#define SHMLOG_BATCH_TRANSACTIONAL_WITHOUT_PRODUCER 6
#define SHMLOG_BATCH_COUNT_DISAGREES 7
#define SHMLOG_BATCH_COUNT_CANNOT_FIT 8
#define SHMLOG_BATCH_CORRUPT 9
int shmlog_batch_check(const uint8_t *batch, uint64_t batch_bytes, uint64_t max_batch_bytes);
/* What a reader decodes: not a control batch (transaction marker, repaired claim) and a
 * positive record count (Kafka's int32). Everything else is skipped without decoding. */
int shmlog_batch_carries_records(uint16_t attributes, int32_t record_count);

/* ---------------------------------------------------------------- ring geometry (core/ring.c) */

/* slot_count: producer slots and reader pins of the ring; 0 takes shmlog_ring_default_slots. */
uint32_t shmlog_ring_default_slots(uint64_t capacity_bytes);
uint64_t shmlog_ring_map_bytes(uint64_t capacity_bytes, uint32_t slot_count);
int shmlog_ring_init(void *map, uint64_t map_bytes, uint64_t capacity_bytes, uint32_t topic_id,
                     uint32_t partition, uint32_t leader_epoch, uint64_t start_offset, uint32_t slot_count);
int shmlog_ring_open(shmlog_ring_handle *ring, void *map, uint64_t map_bytes);

/* ---------------------------------------------------------------- claims and appends (core/append.c) */

int shmlog_producer_slot_acquire(shmlog_ring_handle *ring, uint32_t pid, uint64_t pid_start_time,
                                 uint64_t owner_token);
int shmlog_producer_slot_release(shmlog_ring_handle *ring, int slot, uint64_t owner_token);

int64_t shmlog_ring_append(shmlog_ring_handle *ring, int slot, const uint8_t *records, uint32_t records_bytes,
                           uint32_t record_count, int64_t base_timestamp, int64_t max_timestamp,
                           int16_t attributes, int64_t producer_id, int16_t producer_epoch,
                           int32_t base_sequence, int64_t timeout_ns, shmlog_doorbell *doorbell,
                           uint64_t *out_base_offset);
/* producer_id >= 0 (an idempotent producer): the batch is stamped with producer_id,
 * producer_epoch and base_sequence (SHMLOG_SEQUENCE_NEXT: the ring handle's next_sequence)
 * after the check against the slot's sequence record, which may refuse it with
 * SHMLOG_EDUPLICATE, SHMLOG_ESEQUENCE, SHMLOG_EUNKNOWNPRODUCER or SHMLOG_EEPOCH before anything is claimed. The two
 * appends below take the next sequence always. */
/* Appends `count` fixed-size values (NumPy rows) encoded straight into the claimed frame at a
 * constant stride (see shmlog_records_encode_fixed). */
int64_t shmlog_ring_append_fixed(shmlog_ring_handle *ring, int slot, uint32_t count, const uint8_t *values,
                                 uint32_t value_bytes, int64_t timestamp, int64_t producer_id,
                                 int16_t producer_epoch, int64_t timeout_ns, shmlog_doorbell *doorbell,
                                 uint64_t *out_base_offset);
int64_t shmlog_ring_append_records(shmlog_ring_handle *ring, int slot, uint32_t count, const uint8_t *keys,
                                   const int32_t *key_lens, const uint8_t *values, const int32_t *value_lens,
                                   const int64_t *timestamps, int64_t base_timestamp, int64_t max_timestamp,
                                   const uint8_t *headers, const int32_t *headers_lens, int64_t producer_id,
                                   int16_t producer_epoch, int64_t timeout_ns, shmlog_doorbell *doorbell,
                                   uint64_t *out_base_offset);

/* Test hooks: the next append of this process SIGKILLs itself at crash point 1-5, or stops
 * itself (SIGSTOP, once) at pause point 1-5, holding its claim until SIGCONT. */
void shmlog_debug_set_crash_point(int point);
void shmlog_debug_set_pause_point(int point);
/* The slot's owner returns it from FENCED to IDLE (it will write nothing more into the
 * fenced claim): 1 if it was FENCED, 0 if not. */
int shmlog_producer_slot_unfence(shmlog_ring_handle *ring, int slot);

/* ---------------------------------------------------------------- reading (core/fetch.c) */

/* flags: SHMLOG_FETCH_CHECK_CRC verifies each batch's CRC32C. A ring with more than one
 * replica hands readers only batches wholly below its high watermark (flushed_offset: the
 * ISR's fsynced minimum), unless SHMLOG_FETCH_PAST_HIGH_WATERMARK (the persister's own reads). */
#define SHMLOG_FETCH_CHECK_CRC 1
#define SHMLOG_FETCH_PAST_HIGH_WATERMARK 2
int64_t shmlog_ring_fetch(const shmlog_ring_handle *ring, shmlog_cursor *cursor, uint8_t *dst,
                          uint64_t dst_bytes, shmlog_frame_ref *frames, uint32_t max_frames, int check_crc);
/* One partition of a Kafka Fetch read from its ring: the watermarks as the reply states them and
 * the whole batches from the one holding fetch_offset, copied to dst. The first batch is kept
 * whatever its size, then as many as fit in max_bytes; none at or above the readable end (the
 * last stable offset for read_committed, else the high watermark). The search for fetch_offset
 * starts at hint when it names that offset (where this reader's last fetch ended).
 * Returns the bytes copied (0: nothing readable yet, max_bytes 0, or out_of_range), SHMLOG_EOVERWRITTEN when
 * the offset is no longer in the ring (the segment files hold it), SHMLOG_ESMALL (needed_bytes:
 * the first batch's size) or a corruption status of shmlog_ring_fetch (at next). whole: every
 * batch the ring held on from fetch_offset was kept; next is then where the reader reads on. */
typedef struct shmlog_partition_fetch {
    int64_t fetch_offset;
    shmlog_cursor hint;
    uint32_t hint_valid;
    uint32_t read_committed;
    uint64_t max_bytes;
    shmlog_cursor end;
    uint64_t log_start_offset;
    uint64_t high_watermark;
    uint64_t last_stable_offset;
    uint64_t records_bytes;
    uint64_t needed_bytes;
    shmlog_cursor next;
    uint32_t whole;
    uint32_t transactional;
    uint32_t out_of_range;
} shmlog_partition_fetch;
int64_t shmlog_ring_fetch_partition(const shmlog_ring_handle *ring, shmlog_partition_fetch *io, uint8_t *dst,
                                    uint64_t dst_bytes, shmlog_frame_ref *frames, uint32_t max_frames);
/* What a reader at cursor may fetch now: a published frame it may see (below the high
 * watermark of a replicated ring), or bytes reused under it (it must move to the segments). */
int shmlog_ring_readable(const shmlog_ring_handle *ring, const shmlog_cursor *cursor);
/* Wake the readers sleeping on the ring (its high watermark moved). */
void shmlog_ring_wake_readers(const shmlog_ring_handle *ring, shmlog_doorbell *doorbell);
/* A cursor at the batch holding offset (before it when a frame on the way cannot be passed yet),
 * SHMLOG_EAGAIN past the end, SHMLOG_EOVERWRITTEN when the offset is no longer in the ring. */
int shmlog_ring_locate(const shmlog_ring_handle *ring, uint64_t offset, shmlog_cursor *out);
void shmlog_ring_end(const shmlog_ring_handle *ring, shmlog_cursor *out);
void shmlog_ring_start(const shmlog_ring_handle *ring, shmlog_cursor *out);
int shmlog_ring_has_data(const shmlog_ring_handle *ring, uint64_t position);

/* ---------------------------------------------------------------- dead claims (core/repair.c) */

int shmlog_ring_stuck_claims(const shmlog_ring_handle *ring, uint64_t position, int *slots, int max_slots);
int shmlog_ring_repair(shmlog_ring_handle *ring, int slot, shmlog_doorbell *doorbell);
/* Fences a live producer's OWNED claim at position once it is at least min_age_ns old
 * (claim_unix_ns): readers pass it, the slot stays FENCED (its region held back from release)
 * until its owner sees the fence. SHMLOG_OK, or SHMLOG_EAGAIN if not (yet) fenceable. */
int shmlog_ring_fence_stalled(shmlog_ring_handle *ring, int slot, uint64_t position, uint64_t min_age_ns,
                              shmlog_doorbell *doorbell);

/* ---------------------------------------------------------------- a stopping broker (core/close.c) */

/* Marks the ring closed (no producer claims anything in it from now on: SHMLOG_ECLOSED) and
 * wakes producers waiting for space and consumers watching it. */
void shmlog_ring_close(shmlog_ring_handle *ring, shmlog_doorbell *doorbell);
/* A supervisor adopting a ring whose broker stopped half-way opens it again. */
void shmlog_ring_reopen(shmlog_ring_handle *ring);
int shmlog_ring_is_closed(const shmlog_ring_handle *ring);
/* How many producer slots still hold a claim (CLAIMING or OWNED); the first max_slots go to slots.
 * After shmlog_ring_close, none left means nothing more will ever be published in the ring. */
int shmlog_ring_open_claims(const shmlog_ring_handle *ring, int *slots, int max_slots);

/* ---------------------------------------------------------------- pins, release, persistence (core/persist.c) */

int shmlog_pin_acquire(shmlog_ring_handle *ring, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token);
int shmlog_pin_set(shmlog_ring_handle *ring, int pin, uint64_t position);
void shmlog_pin_release(shmlog_ring_handle *ring, int pin);
uint64_t shmlog_ring_release_to(shmlog_ring_handle *ring, uint64_t persisted_position);
/* A memory-only ring (SHMLOG_RING_FLAG_MEMORY_ONLY): move persisted_position/offset over every
 * frame published contiguously past it (nothing is written anywhere) and return the new
 * persisted position; any ring: its persisted position. Producers short of space call it. */
uint64_t shmlog_ring_release_published(shmlog_ring_handle *ring);
void shmlog_ring_publish_persisted(shmlog_ring_handle *ring, uint64_t position, uint64_t offset,
                                   uint64_t flushed_offset);
int shmlog_ring_wait_flushed(shmlog_ring_handle *ring, uint64_t offset, int64_t timeout_ns,
                             shmlog_doorbell *doorbell);
/* An acks=all producer that keeps producing instead of waiting asks for fdatasync up to offset
 * (exclusive); the persister groups every such request into its next fdatasync. */
void shmlog_ring_request_flush(shmlog_ring_handle *ring, uint64_t offset);
uint64_t shmlog_ring_advance_log_start(shmlog_ring_handle *ring, uint64_t offset);
/* 1 when an acks=all append may go ahead: the ISR holds at least min.insync.replicas (always
 * for a ring of one replica). Producers check it before claiming, so a partition short of
 * in-sync replicas refuses the batch (NOT_ENOUGH_REPLICAS) instead of appending it. */
int shmlog_ring_insync_enough(shmlog_ring_handle *ring);
/* The supervisor states the partition's replication (release stores; isr_count last);
 * replica_log_dirs holds replica_count log dir indexes, in replica list order. */
void shmlog_ring_set_replication(shmlog_ring_handle *ring, uint32_t replica_count, uint32_t min_insync_replicas,
                                 uint32_t isr_mask, uint32_t leader_index, uint32_t leader_epoch,
                                 const uint8_t *replica_log_dirs);
/* message.timestamp.type: on (LogAppendTime) or off (CreateTime) for the appends from now on. */
void shmlog_ring_set_log_append_time(shmlog_ring_handle *ring, int on);
/* Wake the ring's persister now (the supervisor, after it moved the partition's leader: the
 * persister then rereads the metadata instead of at its next timer). */
void shmlog_ring_wake_persister(shmlog_ring_handle *ring, shmlog_doorbell *doorbell);
/* A follower's mirror (of log dir log_dir) says it fsynced up to offset (exclusive) and wakes
 * the persister, which moves flushed_offset (the high watermark for acks=all) to the ISR's
 * minimum. */
void shmlog_ring_publish_replica_fsynced(shmlog_ring_handle *ring, uint32_t replica, uint32_t log_dir,
                                         uint64_t offset, shmlog_doorbell *doorbell);
/* What replica `replica` has fsynced: its word's offset when the word was published by the
 * mirror of the log dir the replica is on now, else 0. */
uint64_t shmlog_ring_replica_fsynced(shmlog_ring_handle *ring, uint32_t replica);

/* ---------------------------------------------------------------- scans over many rings (core/scan.c) */

/* The indexes i (ascending; out holds n) of rings[i] whose tail is not cursors[i]->position
 * (claimed or published past the caller's cursor), with an acks=all or space waiter, or asked to
 * fdatasync past its flushed offset. Returns the count. */
uint32_t shmlog_rings_moved(shmlog_ring_handle *const *rings, shmlog_cursor *const *cursors, uint32_t n,
                            uint32_t *out);
/* The indexes of rings with a producer slot taken (a pid, or a claim not IDLE), a fenced claim,
 * or a reader pin in use: the only rings a dead producer or a stalled claim can be in. */
uint32_t shmlog_rings_held(shmlog_ring_handle *const *rings, uint32_t n, uint32_t *out);

/* ---------------------------------------------------------------- transactions (core/txn.c) */

/* The transaction service publishes a partition's state (layout: shmlog_ring_txn): aborted_count
 * first, then first_unstable_plus1, both release stores, and marks the ring as seen. */
void shmlog_ring_set_txn(shmlog_ring_handle *ring, uint64_t first_unstable_plus1, uint64_t aborted_count);
/* A read_committed reader's view, after its read of the ring's end: out[0] first_unstable_plus1,
 * out[1] aborted_count, out[2] txn_seen (acquire loads, in that order). */
void shmlog_ring_txn_state(const shmlog_ring_handle *ring, uint64_t *out);
/* How many published batches from *cursor a read_committed reader may take: max_frames on a ring
 * no transaction touched; those below the last stable offset (0 when none) on a ring where none
 * was ever aborted; -1 where one was (aborted.txnindex decides: the Python path). frames is
 * scratch, max_frames long. */
int64_t shmlog_ring_committed_frames(const shmlog_ring_handle *ring, const shmlog_cursor *cursor,
                                     shmlog_frame_ref *frames, uint32_t max_frames);

/* ---------------------------------------------------------------- doorbell (core/doorbell.c) */

int shmlog_doorbell_init(shmlog_doorbell *bell);
int shmlog_doorbell_validate(const shmlog_doorbell *bell, uint64_t map_bytes);
int shmlog_doorbell_acquire(shmlog_doorbell *bell, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token);
void shmlog_doorbell_release(shmlog_doorbell *bell, int slot);
uint32_t shmlog_doorbell_sequence(const shmlog_doorbell *bell, int slot);
void shmlog_doorbell_watch(shmlog_ring_handle *ring, int slot, int on);
int shmlog_doorbell_wait(shmlog_doorbell *bell, int slot, uint32_t seen_sequence, int64_t timeout_ns);
void shmlog_doorbell_wake_all(shmlog_doorbell *bell);

/* A consumer with nothing to read: spin up to spin_ns re-checking the rings at their cursors,
 * then (with a doorbell slot, slot >= 0) watch them and sleep on the slot until timeout_ns from
 * the call. Returns SHMLOG_WAIT_SPUN (data seen without sleeping), SHMLOG_WAIT_WOKEN (data
 * after sleeping) or SHMLOG_WAIT_TIMEOUT (no data: timed out, or the slot was woken directly);
 * *waited_ns gets the time spent. */
#define SHMLOG_WAIT_TIMEOUT 0
#define SHMLOG_WAIT_SPUN 1
#define SHMLOG_WAIT_WOKEN 2
int shmlog_wait_any(shmlog_doorbell *bell, int slot, shmlog_ring_handle *const *rings,
                    shmlog_cursor *const *cursors, int n, int64_t spin_ns, int64_t timeout_ns, int64_t *waited_ns);

/* ---------------------------------------------------------------- the CPython fast path's way in
 * (core/entry_points.c). The table's members are declared in shmlog_core_entry.h with the
 * types of the functions above, so _fast is compiled against these very signatures. */

typedef struct shmlog_core_entry_points shmlog_core_entry_points;
const shmlog_core_entry_points *shmlog_core_entry_points_table(void);

#endif
