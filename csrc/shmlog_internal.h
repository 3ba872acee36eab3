/* Inlines both C modules share: the core (csrc/core/, cffi module shmlog._native._core) and
 * the CPython fast path (csrc/fast/, shmlog._native._fast). Not part of the cdef.
 *
 *   ordering points   C11 acquire/release (and the few seq_cst Dekker pairs) on layout fields
 *   clocks            CLOCK_REALTIME (record timestamps) and CLOCK_MONOTONIC (deadlines)
 *   big-endian        the RecordBatch v2 header fields
 *   frame geometry    where a position's frame word, publish mark and batch live in a ring
 *   batch fields      attributes, record count, and which batches a reader decodes
 *   records           zigzag varints and the one Kafka record encoder
 *   murmur2           Kafka's default partitioner
 */
#ifndef SHMLOG_INTERNAL_H
#define SHMLOG_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "shmlog_layout.h"

/* ---------------------------------------------------------------- ordering points
 *
 * The shared-memory structs hold plain integers (cffi parses the same header, and Python
 * reads them), so each access that orders anything views its field as _Atomic and names its
 * C11 memory order. Plain accesses are only for fields no other process touches meanwhile. */

_Static_assert(sizeof(_Atomic uint64_t) == sizeof(uint64_t) && _Alignof(_Atomic uint64_t) == _Alignof(uint64_t),
               "an _Atomic view of a u64 layout field has its size and alignment");
_Static_assert(sizeof(_Atomic uint32_t) == sizeof(uint32_t) && _Alignof(_Atomic uint32_t) == _Alignof(uint32_t),
               "an _Atomic view of a u32 layout field has its size and alignment");

#define as_atomic(p) ((_Atomic __typeof__(*(p)) *)(p))

#define load_relaxed(p) atomic_load_explicit(as_atomic(p), memory_order_relaxed)
#define load_acquire(p) atomic_load_explicit(as_atomic(p), memory_order_acquire)
#define load_seq_cst(p) atomic_load_explicit(as_atomic(p), memory_order_seq_cst)
#define store_relaxed(p, v) atomic_store_explicit(as_atomic(p), (v), memory_order_relaxed)
#define store_release(p, v) atomic_store_explicit(as_atomic(p), (v), memory_order_release)
#define store_seq_cst(p, v) atomic_store_explicit(as_atomic(p), (v), memory_order_seq_cst)
#define fetch_add(p, v, order) atomic_fetch_add_explicit(as_atomic(p), (v), (order))
#define fetch_sub(p, v, order) atomic_fetch_sub_explicit(as_atomic(p), (v), (order))
#define fetch_or(p, v, order) atomic_fetch_or_explicit(as_atomic(p), (v), (order))
#define fetch_and(p, v, order) atomic_fetch_and_explicit(as_atomic(p), (v), (order))
/* Strong CAS; *expected is updated on failure. */
#define compare_exchange(p, expected, desired, success_order, failure_order) \
    atomic_compare_exchange_strong_explicit(as_atomic(p), (expected), (desired), (success_order), (failure_order))
#define fence_acquire() atomic_thread_fence(memory_order_acquire)
#define fence_seq_cst() atomic_thread_fence(memory_order_seq_cst)

/* ---------------------------------------------------------------- clocks */

static inline uint64_t now_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline uint64_t now_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A record's default timestamp (Kafka's CreateTime): milliseconds since the epoch. */
static inline int64_t now_unix_ms(void) { return (int64_t)(now_realtime_ns() / 1000000ULL); }

/* ---------------------------------------------------------------- big-endian fields */

static inline void put_be16(uint8_t *p, uint16_t v) { v = __builtin_bswap16(v); memcpy(p, &v, 2); }
static inline void put_be32(uint8_t *p, uint32_t v) { v = __builtin_bswap32(v); memcpy(p, &v, 4); }
static inline void put_be64(uint8_t *p, uint64_t v) { v = __builtin_bswap64(v); memcpy(p, &v, 8); }
static inline uint16_t get_be16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return __builtin_bswap16(v); }
static inline uint32_t get_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v); }
static inline uint64_t get_be64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return __builtin_bswap64(v); }

/* ---------------------------------------------------------------- frame geometry */

static inline uint64_t frame_align(uint64_t bytes) {
    return (bytes + SHMLOG_FRAME_ALIGN - 1) & ~(uint64_t)(SHMLOG_FRAME_ALIGN - 1);
}

/* The frame a batch of records_bytes of records takes: frame word, batch header, records. */
static inline uint64_t frame_bytes_for_records(uint64_t records_bytes) {
    return frame_align(SHMLOG_FRAME_PREFIX_BYTES + SHMLOG_BATCH_HEADER_BYTES + records_bytes);
}

/* Positions only grow; these map one into the ring through the geometry shmlog_ring_open
 * validated once (never re-read from shared memory). */
static inline uint64_t ring_index_of(const shmlog_ring_handle *ring, uint64_t position) {
    return position & (ring->capacity_bytes - 1);
}

static inline uint32_t ring_lap_of(const shmlog_ring_handle *ring, uint64_t position) {
    return (uint32_t)(position / ring->capacity_bytes);
}

static inline uint64_t *ring_frame_word(const shmlog_ring_handle *ring, uint64_t position) {
    return (uint64_t *)(ring->data + ring_index_of(ring, position));
}

static inline uint8_t *ring_frame_batch(const shmlog_ring_handle *ring, uint64_t position) {
    return ring->data + ring_index_of(ring, position) + SHMLOG_FRAME_PREFIX_BYTES;
}

/* The mark of a published frame's first block in the lap of `position`: 1..255 (0 is an
 * interior block's), and consecutive laps' marks differ. */
static inline shmlog_publish_mark ring_lap_mark(const shmlog_ring_handle *ring, uint64_t position) {
    return (shmlog_publish_mark)(ring_lap_of(ring, position) % 255 + 1);
}

static inline shmlog_publish_mark *ring_publish_mark(const shmlog_ring_handle *ring, uint64_t position) {
    return &ring->publish_marks[ring_index_of(ring, position) / SHMLOG_FRAME_ALIGN];
}

/* A frame is published when the mark of its first block holds its lap's mark. Marks are
 * written only by frame owners (and repairers), never by payload, and every block is
 * re-marked each lap (start: the lap's mark, interior: 0), so a stale mark is at most one lap
 * old and can never equal the current lap's. Acquire: pairs with the release in frame_publish. */
static inline int frame_is_published(const shmlog_ring_handle *ring, uint64_t position) {
    return load_acquire(ring_publish_mark(ring, position)) == ring_lap_mark(ring, position);
}

/* The frame word, then a release store of the mark: a reader that acquires the mark sees
 * the word and every byte written into the frame before. */
static inline void frame_publish(const shmlog_ring_handle *ring, uint64_t position, uint32_t frame_bytes,
                                 int padding) {
    store_relaxed(ring_frame_word(ring, position), ((uint64_t)ring_lap_of(ring, position) << 32) | frame_bytes |
                                                       (padding ? SHMLOG_FRAME_PADDING_FLAG : 0));
    store_release(ring_publish_mark(ring, position), ring_lap_mark(ring, position));
}

static inline void frame_clear_interior(const shmlog_ring_handle *ring, uint64_t position, uint64_t frame_bytes) {
    shmlog_publish_mark *mark = ring_publish_mark(ring, position);
    for (uint64_t b = 1; b < frame_bytes / SHMLOG_FRAME_ALIGN; b++) store_relaxed(&mark[b], 0);
}

/* ---------------------------------------------------------------- batch fields */

/* The whole batch's size in bytes, as its length field says (which counts from past itself). */
static inline uint64_t batch_length_of(const uint8_t *batch) {
    return SHMLOG_BATCH_OFF_LEADER_EPOCH + (uint64_t)get_be32(batch + SHMLOG_BATCH_OFF_LENGTH);
}

static inline uint16_t batch_attributes(const uint8_t *batch) {
    return get_be16(batch + SHMLOG_BATCH_OFF_ATTRIBUTES);
}

/* Kafka's records count is an int32: a count with the top bit set reads negative. */
static inline int32_t batch_record_count(const uint8_t *batch) {
    return (int32_t)get_be32(batch + SHMLOG_BATCH_OFF_RECORD_COUNT);
}

/* What a reader decodes; control batches and batches without records are skipped (the one
 * rule: shmlog_batch_carries_records exports it, shmlog/log/batch.py carries_records calls that). */
static inline int batch_carries_records(uint16_t attributes, int32_t record_count) {
    return !(attributes & SHMLOG_ATTR_CONTROL) && record_count > 0;
}

/* ---------------------------------------------------------------- records: varints and the encoder */

static inline uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline int varint_size(uint64_t v) {
    int n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

static inline uint8_t *varint_put(uint8_t *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *p++ = (uint8_t)v;
    return p;
}

/* Non-minimal (padded) varints are valid Kafka varints; padding every field to a fixed
 * width puts fixed-size values at a constant stride (see shmlog_records_encode_fixed). */
static inline uint8_t *varint_put_padded(uint8_t *p, uint64_t v, int width) {
    for (int i = 0; i < width - 1; i++) { *p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *p++ = (uint8_t)v;
    return p;
}

/* Reads a zigzag varint; returns NULL when it would run past end. */
static inline const uint8_t *varint_get(const uint8_t *p, const uint8_t *end, int64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (p >= end) return NULL;
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return p;
        }
    }
    return NULL;
}

/* The body of one record (what its length varint counts). Lengths of -1 are null key/value;
 * headers_len is the encoded headers section (count varint and headers), 0 for none. */
static inline uint64_t record_body_bytes(int64_t ts_delta, uint32_t offset_delta, int32_t key_len,
                                         int32_t value_len, int32_t headers_len) {
    return 1 + varint_size(zigzag(ts_delta)) + varint_size(zigzag(offset_delta)) +
           varint_size(zigzag(key_len)) + (key_len > 0 ? key_len : 0) +
           varint_size(zigzag(value_len)) + (value_len > 0 ? value_len : 0) +
           (headers_len > 0 ? headers_len : 1);
}

/* Bytes one record takes in a records section: its length varint and its body. */
static inline uint64_t record_encoded_bytes(uint64_t body_bytes) {
    return varint_size(zigzag((int64_t)body_bytes)) + body_bytes;
}

/* The one Kafka record encoder (shmlog_records_encode and _fast's Batch both call it): writes
 * one record of body_bytes (record_body_bytes of the same fields) at p, which has room for
 * record_encoded_bytes(body_bytes); returns where the record ends. */
static inline uint8_t *record_encode(uint8_t *p, uint64_t body_bytes, int64_t ts_delta, uint32_t offset_delta,
                                     const uint8_t *key, int32_t key_len, const uint8_t *value, int32_t value_len,
                                     const uint8_t *headers, int32_t headers_len) {
    p = varint_put(p, zigzag((int64_t)body_bytes));
    *p++ = 0; /* record attributes: unused in v2 */
    p = varint_put(p, zigzag(ts_delta));
    p = varint_put(p, zigzag(offset_delta));
    p = varint_put(p, zigzag(key_len));
    if (key_len > 0) { memcpy(p, key, (size_t)key_len); p += key_len; }
    p = varint_put(p, zigzag(value_len));
    if (value_len > 0) { memcpy(p, value, (size_t)value_len); p += value_len; }
    if (headers_len > 0) { memcpy(p, headers, (size_t)headers_len); p += headers_len; }
    else *p++ = 0; /* no headers */
    return p;
}

/* ---------------------------------------------------------------- murmur2 (Kafka's default partitioner) */

static inline int32_t murmur2_hash(const void *data, size_t length) {
    const uint8_t *p = data;
    const uint32_t m = 0x5bd1e995u;
    uint32_t h = 0x9747b28cu ^ (uint32_t)length;
    size_t blocks = length / 4;
    for (size_t i = 0; i < blocks; i++) {
        uint32_t k = (uint32_t)p[4 * i] | ((uint32_t)p[4 * i + 1] << 8) |
                     ((uint32_t)p[4 * i + 2] << 16) | ((uint32_t)p[4 * i + 3] << 24);
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    const uint8_t *tail = p + (length & ~(size_t)3);
    switch (length & 3) {
    case 3: h ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: h ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1: h ^= tail[0]; h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

/* toPositive(murmur2(key)) % partitions, as Kafka's Java client places keyed records. */
static inline uint32_t murmur2_partition(const void *key, size_t length, uint32_t partitions) {
    return ((uint32_t)murmur2_hash(key, length) & 0x7fffffffu) % partitions;
}

#endif
