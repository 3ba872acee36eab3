/* shmlog C core: the functions Python calls through cffi (see shmlog/_ffi_build.py). */
#ifndef SHMLOG_CORE_H
#define SHMLOG_CORE_H

#include <stddef.h>
#include <stdint.h>
#include "shmlog_layout.h"

uint32_t shmlog_crc32c(uint32_t crc, const void *data, size_t length);
uint32_t shmlog_crc32c_sw(uint32_t crc, const void *data, size_t length);
int shmlog_crc32c_hw_available(void);
int32_t shmlog_murmur2(const void *data, size_t length);
uint32_t shmlog_fnv1a(const void *data, size_t length);
uint64_t shmlog_now_unix_ns(void);

int shmlog_ring_init(void *map, uint64_t map_bytes, uint64_t capacity_bytes, uint32_t topic_id,
                     uint32_t partition, uint32_t leader_epoch, uint64_t start_offset);
int shmlog_ring_validate(const void *map, uint64_t map_bytes);
uint64_t shmlog_ring_map_bytes(uint64_t capacity_bytes);
int shmlog_ring_open(shmlog_ring_handle *ring, void *map, uint64_t map_bytes);

/* Every function below takes a shmlog_ring_handle * (as void *ring) filled by shmlog_ring_open. */

int shmlog_producer_slot_acquire(void *map, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token);
int shmlog_producer_slot_release(void *map, int slot, uint64_t owner_token);

int64_t shmlog_ring_append(void *map, int slot, const uint8_t *records, uint32_t records_bytes,
                           uint32_t record_count, int64_t base_timestamp, int64_t max_timestamp,
                           int16_t attributes, int64_t producer_id, int16_t producer_epoch,
                           int32_t base_sequence, int64_t timeout_ns, void *doorbell,
                           uint64_t *out_base_offset);

/* Appends `count` fixed-size values (NumPy rows) encoded straight into the claimed frame at a
 * constant stride (see shmlog_records_encode_fixed). */
int64_t shmlog_ring_append_fixed(void *map, int slot, uint32_t count, const uint8_t *values, uint32_t value_bytes,
                                 int64_t timestamp, int64_t timeout_ns, void *doorbell, uint64_t *out_base_offset);
int64_t shmlog_ring_append_records(void *map, int slot, uint32_t count, const uint8_t *keys,
                                   const int32_t *key_lens, const uint8_t *values, const int32_t *value_lens,
                                   const int64_t *timestamps, int64_t base_timestamp, int64_t max_timestamp,
                                   const uint8_t *headers, const int32_t *headers_lens, int64_t timeout_ns,
                                   void *doorbell, uint64_t *out_base_offset);

int64_t shmlog_ring_fetch(const void *map, shmlog_cursor *cursor, uint8_t *dst, uint64_t dst_bytes,
                          shmlog_frame_ref *frames, uint32_t max_frames, int check_crc);
int shmlog_ring_locate(const void *map, uint64_t offset, shmlog_cursor *out);
void shmlog_ring_end(const void *map, shmlog_cursor *out);
void shmlog_ring_start(const void *map, shmlog_cursor *out);
int shmlog_ring_has_data(const void *map, uint64_t position);
int shmlog_ring_still_intact(const void *map, uint64_t position);

int shmlog_ring_stuck_claims(const void *map, uint64_t position, int *slots, int max_slots);
int shmlog_ring_repair(void *map, int slot, void *doorbell);

int shmlog_pin_acquire(void *map, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token);
int shmlog_pin_set(void *map, int pin, uint64_t position);
void shmlog_pin_release(void *map, int pin);
uint64_t shmlog_ring_release_to(void *map, uint64_t persisted_position, const uint32_t *dead_pins);
void shmlog_ring_publish_persisted(void *map, uint64_t position, uint64_t offset, uint64_t flushed_offset);
int shmlog_ring_wait_flushed(void *map, uint64_t offset, int64_t timeout_ns, void *doorbell);
/* An acks=all producer that keeps producing instead of waiting asks for fdatasync up to offset
 * (exclusive); the persister groups every such request into its next fdatasync. */
void shmlog_ring_request_flush(void *map, uint64_t offset);
uint64_t shmlog_ring_advance_log_start(void *map, uint64_t offset);

int shmlog_doorbell_init(void *bell);
int shmlog_doorbell_validate(const void *bell, uint64_t map_bytes);
int shmlog_doorbell_acquire(void *bell, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token);
void shmlog_doorbell_release(void *bell, int slot);
uint32_t shmlog_doorbell_sequence(void *bell, int slot);
void shmlog_doorbell_watch(void *map, int slot, int on);
int shmlog_doorbell_wait(void *bell, int slot, uint32_t seen_sequence, int64_t timeout_ns);

/* A consumer with nothing to read: spin up to spin_ns re-checking the rings at their cursors,
 * then (with a doorbell slot, slot >= 0) watch them and sleep on the slot until timeout_ns from
 * the call. Returns SHMLOG_WAIT_SPUN (data seen without sleeping), SHMLOG_WAIT_WOKEN (data
 * after sleeping) or SHMLOG_WAIT_TIMEOUT (no data: timed out, or the slot was woken directly);
 * *waited_ns gets the time spent. */
#define SHMLOG_WAIT_TIMEOUT 0
#define SHMLOG_WAIT_SPUN 1
#define SHMLOG_WAIT_WOKEN 2
int shmlog_wait_any(void *bell, int slot, void *const *rings, shmlog_cursor *const *cursors, int n,
                    int64_t spin_ns, int64_t timeout_ns, int64_t *waited_ns);

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

void shmlog_debug_set_crash_point(int point);

#endif
