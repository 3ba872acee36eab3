#define _GNU_SOURCE
#include "shmlog_core.h"
#include "shmlog_varint.h"

#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(shmlog_ring_descriptor) == SHMLOG_CACHE_LINE, "descriptor is one line");
_Static_assert(sizeof(shmlog_ring_claim) == SHMLOG_CACHE_LINE, "claim is one line");
_Static_assert(sizeof(shmlog_ring_release) == SHMLOG_CACHE_LINE, "release is one line");
_Static_assert(sizeof(shmlog_ring_persist) == SHMLOG_CACHE_LINE, "persist is one line");
_Static_assert(sizeof(shmlog_producer_slot) == SHMLOG_CACHE_LINE, "slot is one line");
_Static_assert(sizeof(shmlog_pin_slot) == SHMLOG_CACHE_LINE, "pin is one line");
_Static_assert(sizeof(shmlog_ring_header) <= SHMLOG_RING_HEADER_BYTES, "header fits");
_Static_assert(offsetof(shmlog_ring_header, claim) % 16 == 0, "claim pair is 16-byte aligned");
_Static_assert(sizeof(shmlog_doorbell_slot) == SHMLOG_CACHE_LINE, "doorbell slot is one line");
_Static_assert(offsetof(shmlog_doorbell, slots) == SHMLOG_CACHE_LINE, "doorbell header is one line");

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STORE_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define STORE_SEQ(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define FENCE_SEQ() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define FENCE_ACQ() __atomic_thread_fence(__ATOMIC_ACQUIRE)

static int crash_point;

void shmlog_debug_set_crash_point(int point) { crash_point = point; }

static inline void crash_at(int point) {
    if (crash_point == point) raise(SIGKILL);
}

/* ---------------------------------------------------------------- time, futex */

uint64_t shmlog_now_unix_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        tsp = &ts;
    }
    return (int)syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, NULL, 0);
}

static void futex_wake_all(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ---------------------------------------------------------------- hashes */

static uint32_t crc32c_table[8][256];
static int crc32c_table_ready;

static void crc32c_table_build(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc32c_table[t][n] = (crc32c_table[t - 1][n] >> 8) ^ crc32c_table[0][crc32c_table[t - 1][n] & 0xff];
    __atomic_store_n(&crc32c_table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t shmlog_crc32c_sw(uint32_t crc, const void *data, size_t length) {
    if (!__atomic_load_n(&crc32c_table_ready, __ATOMIC_ACQUIRE)) crc32c_table_build();
    const uint8_t *p = data;
    crc = ~crc;
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc32c_table[7][w & 0xff] ^ crc32c_table[6][(w >> 8) & 0xff] ^
              crc32c_table[5][(w >> 16) & 0xff] ^ crc32c_table[4][(w >> 24) & 0xff] ^
              crc32c_table[3][(w >> 32) & 0xff] ^ crc32c_table[2][(w >> 40) & 0xff] ^
              crc32c_table[1][(w >> 48) & 0xff] ^ crc32c_table[0][w >> 56];
        p += 8;
        length -= 8;
    }
    while (length--) crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#if defined(__x86_64__)
/* One crc32 instruction takes 3 cycles but a new one can start every cycle: three lanes of
 * CRC32C_LANE_BYTES each run interleaved, then are joined by shifting a lane's CRC over the
 * next lane's length (a linear map on the 32-bit state, tabulated once per byte of state). */
#define CRC32C_LANE_BYTES 4096

static uint32_t crc32c_lane_shift[4][256];
static pthread_once_t crc32c_lane_shift_once = PTHREAD_ONCE_INIT;

__attribute__((target("sse4.2"))) static uint64_t crc32c_hw_words(uint64_t c, const uint8_t *p, size_t words) {
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, p + 8 * i, 8);
        c = __builtin_ia32_crc32di(c, w);
    }
    return c;
}

static void crc32c_lane_shift_build(void) {
    static const uint8_t zeros[CRC32C_LANE_BYTES];
    uint32_t basis[32];
    for (int b = 0; b < 32; b++) basis[b] = (uint32_t)crc32c_hw_words(1u << b, zeros, CRC32C_LANE_BYTES / 8);
    for (int k = 0; k < 4; k++)
        for (int v = 0; v < 256; v++) {
            uint32_t x = 0;
            for (int bit = 0; bit < 8; bit++)
                if (v >> bit & 1) x ^= basis[8 * k + bit];
            crc32c_lane_shift[k][v] = x;
        }
}

static inline uint32_t crc32c_shift_over_lane(uint32_t c) {
    return crc32c_lane_shift[0][c & 0xff] ^ crc32c_lane_shift[1][(c >> 8) & 0xff] ^
           crc32c_lane_shift[2][(c >> 16) & 0xff] ^ crc32c_lane_shift[3][c >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = data;
    uint64_t c = ~crc & 0xffffffffu;
    if (length >= 3 * CRC32C_LANE_BYTES) {
        pthread_once(&crc32c_lane_shift_once, crc32c_lane_shift_build);
        while (length >= 3 * CRC32C_LANE_BYTES) {
            uint64_t c0 = c, c1 = 0, c2 = 0;
            for (size_t i = 0; i < CRC32C_LANE_BYTES; i += 8) {
                uint64_t w0, w1, w2;
                memcpy(&w0, p + i, 8);
                memcpy(&w1, p + CRC32C_LANE_BYTES + i, 8);
                memcpy(&w2, p + 2 * CRC32C_LANE_BYTES + i, 8);
                c0 = __builtin_ia32_crc32di(c0, w0);
                c1 = __builtin_ia32_crc32di(c1, w1);
                c2 = __builtin_ia32_crc32di(c2, w2);
            }
            c = crc32c_shift_over_lane(crc32c_shift_over_lane((uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
            p += 3 * CRC32C_LANE_BYTES;
            length -= 3 * CRC32C_LANE_BYTES;
        }
    }
    c = crc32c_hw_words(c, p, length / 8);
    p += length & ~(size_t)7;
    length &= 7;
    uint32_t c32 = (uint32_t)c;
    while (length--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}

int shmlog_crc32c_hw_available(void) { return __builtin_cpu_supports("sse4.2") != 0; }
#else
static uint32_t crc32c_hw(uint32_t crc, const void *data, size_t length) {
    return shmlog_crc32c_sw(crc, data, length);
}

int shmlog_crc32c_hw_available(void) { return 0; }
#endif

uint32_t shmlog_crc32c(uint32_t crc, const void *data, size_t length) {
    static int use_hw = -1;
    if (use_hw < 0) use_hw = shmlog_crc32c_hw_available();
    return use_hw ? crc32c_hw(crc, data, length) : shmlog_crc32c_sw(crc, data, length);
}

int32_t shmlog_murmur2(const void *data, size_t length) {
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

uint32_t shmlog_fnv1a(const void *data, size_t length) {
    const uint8_t *p = data;
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < length; i++) {
        h ^= p[i];
        h *= 0x01000193u;
    }
    return h;
}

/* ---------------------------------------------------------------- big-endian fields */

static inline void put_be16(uint8_t *p, uint16_t v) { v = __builtin_bswap16(v); memcpy(p, &v, 2); }
static inline void put_be32(uint8_t *p, uint32_t v) { v = __builtin_bswap32(v); memcpy(p, &v, 4); }
static inline void put_be64(uint8_t *p, uint64_t v) { v = __builtin_bswap64(v); memcpy(p, &v, 8); }
static inline uint16_t get_be16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return __builtin_bswap16(v); }
static inline uint32_t get_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v); }
static inline uint64_t get_be64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return __builtin_bswap64(v); }

/* ---------------------------------------------------------------- record batch */

int shmlog_batch_write_header(uint8_t *batch, uint32_t records_bytes, uint64_t base_offset,
                              uint32_t leader_epoch, int16_t attributes, uint32_t record_count,
                              int64_t base_timestamp, int64_t max_timestamp, int64_t producer_id,
                              int16_t producer_epoch, int32_t base_sequence) {
    /* record_count doubles as lastOffsetDelta + 1; a control batch that only
     * accounts for offsets carries zero records (see shmlog_ring_repair). */
    uint32_t batch_length = SHMLOG_BATCH_HEADER_BYTES - 12 + records_bytes;
    put_be64(batch + SHMLOG_BATCH_OFF_BASE_OFFSET, base_offset);
    put_be32(batch + SHMLOG_BATCH_OFF_LENGTH, batch_length);
    put_be32(batch + SHMLOG_BATCH_OFF_LEADER_EPOCH, leader_epoch);
    batch[SHMLOG_BATCH_OFF_MAGIC] = SHMLOG_BATCH_MAGIC;
    put_be16(batch + SHMLOG_BATCH_OFF_ATTRIBUTES, (uint16_t)attributes);
    put_be32(batch + SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA, record_count ? record_count - 1 : 0);
    put_be64(batch + SHMLOG_BATCH_OFF_BASE_TIMESTAMP, (uint64_t)base_timestamp);
    put_be64(batch + SHMLOG_BATCH_OFF_MAX_TIMESTAMP, (uint64_t)max_timestamp);
    put_be64(batch + SHMLOG_BATCH_OFF_PRODUCER_ID, (uint64_t)producer_id);
    put_be16(batch + SHMLOG_BATCH_OFF_PRODUCER_EPOCH, (uint16_t)producer_epoch);
    put_be32(batch + SHMLOG_BATCH_OFF_BASE_SEQUENCE, (uint32_t)base_sequence);
    put_be32(batch + SHMLOG_BATCH_OFF_RECORD_COUNT, record_count);
    uint32_t crc = shmlog_crc32c(0, batch + SHMLOG_BATCH_OFF_ATTRIBUTES,
                                 12 + batch_length - SHMLOG_BATCH_OFF_ATTRIBUTES);
    put_be32(batch + SHMLOG_BATCH_OFF_CRC, crc);
    return 0;
}

int shmlog_batch_verify(const uint8_t *batch, uint64_t batch_bytes, int check_crc) {
    if (batch_bytes < SHMLOG_BATCH_HEADER_BYTES) return SHMLOG_ECORRUPT;
    uint64_t length = 12ULL + get_be32(batch + SHMLOG_BATCH_OFF_LENGTH);
    if (length < SHMLOG_BATCH_HEADER_BYTES || length > batch_bytes) return SHMLOG_ECORRUPT;
    if (batch[SHMLOG_BATCH_OFF_MAGIC] != SHMLOG_BATCH_MAGIC) return SHMLOG_ECORRUPT;
    if (get_be32(batch + SHMLOG_BATCH_OFF_RECORD_COUNT) > get_be32(batch + SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA) + 1ULL)
        return SHMLOG_ECORRUPT;
    if (check_crc) {
        uint32_t crc = shmlog_crc32c(0, batch + SHMLOG_BATCH_OFF_ATTRIBUTES, length - SHMLOG_BATCH_OFF_ATTRIBUTES);
        if (crc != get_be32(batch + SHMLOG_BATCH_OFF_CRC)) return SHMLOG_ECRC;
    }
    return SHMLOG_OK;
}

int64_t shmlog_records_encode(uint8_t *dst, uint64_t dst_bytes, uint32_t count,
                              const uint8_t *keys, const int32_t *key_lens,
                              const uint8_t *values, const int32_t *value_lens,
                              const int64_t *timestamps, int64_t base_timestamp,
                              const uint8_t *headers, const int32_t *headers_lens) {
    uint8_t *p = dst;
    const uint8_t *end = dst ? dst + dst_bytes : NULL;
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++) {
        int32_t klen = key_lens ? key_lens[i] : -1;
        int32_t vlen = value_lens[i];
        int32_t hlen = headers_lens ? headers_lens[i] : 0;
        int64_t tsd = timestamps ? timestamps[i] - base_timestamp : 0;
        uint64_t body = record_body_bytes(tsd, i, klen, vlen, hlen);
        uint64_t rec = varint_size(zigzag((int64_t)body)) + body;
        total += rec;
        if (!dst) continue;
        if ((uint64_t)(end - p) < rec) return SHMLOG_ESMALL;
        p = varint_put(p, zigzag((int64_t)body));
        *p++ = 0;
        p = varint_put(p, zigzag(tsd));
        p = varint_put(p, zigzag(i));
        p = varint_put(p, zigzag(klen));
        if (klen > 0) { memcpy(p, keys, klen); p += klen; keys += klen; }
        p = varint_put(p, zigzag(vlen));
        if (vlen > 0) { memcpy(p, values, vlen); p += vlen; values += vlen; }
        if (hlen > 0) { memcpy(p, headers, hlen); p += hlen; headers += hlen; }
        else *p++ = 0;
    }
    return (int64_t)total;
}

/* Non-minimal (padded) varints are valid Kafka varints; padding every field to a
 * fixed width puts fixed-size values at a constant stride, so a consumer can view
 * them as one strided NumPy array without copying. */
static inline uint8_t *varint_put_padded(uint8_t *p, uint64_t v, int width) {
    for (int i = 0; i < width - 1; i++) { *p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *p++ = (uint8_t)v;
    return p;
}

int64_t shmlog_records_encode_fixed(uint8_t *dst, uint64_t dst_bytes, uint32_t count,
                                    const uint8_t *values, uint32_t value_bytes) {
    const uint64_t body = 1 + 1 + SHMLOG_FIXED_OFFSET_DELTA_BYTES + 1 + 5 + (uint64_t)value_bytes + 1;
    const uint64_t stride = 5 + body;
    if (count >= (1u << (7 * SHMLOG_FIXED_OFFSET_DELTA_BYTES - 1)) || value_bytes > 0x3fffffffu) return SHMLOG_ETOOBIG;
    if (!dst) return (int64_t)(stride * count);
    if (stride * count > dst_bytes) return SHMLOG_ESMALL;
    uint8_t *p = dst;
    for (uint32_t i = 0; i < count; i++) {
        p = varint_put_padded(p, zigzag((int64_t)body), 5);
        *p++ = 0;
        *p++ = 0;
        p = varint_put_padded(p, zigzag(i), SHMLOG_FIXED_OFFSET_DELTA_BYTES);
        *p++ = 1; /* zigzag(-1): null key */
        p = varint_put_padded(p, zigzag(value_bytes), 5);
        memcpy(p, values + (uint64_t)i * value_bytes, value_bytes);
        p += value_bytes;
        *p++ = 0;
    }
    return (int64_t)(stride * count);
}

/* Indexes `count` records laid out from p to end; positions are relative to origin.
 * Returns where the last record ended, or NULL when the framing does not validate. */
static const uint8_t *index_records(const uint8_t *origin, const uint8_t *p, const uint8_t *end, uint32_t count,
                                    int64_t base_offset, int64_t base_ts, int64_t max_ts, uint16_t attributes,
                                    shmlog_record_ref *records);

int64_t shmlog_batch_index(const uint8_t *batch, uint64_t batch_bytes, shmlog_record_ref *records,
                           uint32_t max_records, int check_crc) {
    int rc = shmlog_batch_verify(batch, batch_bytes, check_crc);
    if (rc) return rc;
    uint64_t length = 12ULL + get_be32(batch + SHMLOG_BATCH_OFF_LENGTH);
    uint32_t count = get_be32(batch + SHMLOG_BATCH_OFF_RECORD_COUNT);
    if (count > max_records) return SHMLOG_ESMALL;
    uint16_t attributes = get_be16(batch + SHMLOG_BATCH_OFF_ATTRIBUTES);
    if (attributes & SHMLOG_ATTR_COMPRESSION_MASK) return SHMLOG_ECORRUPT;
    int64_t base_offset = (int64_t)get_be64(batch + SHMLOG_BATCH_OFF_BASE_OFFSET);
    int64_t base_ts = (int64_t)get_be64(batch + SHMLOG_BATCH_OFF_BASE_TIMESTAMP);
    int64_t max_ts = (int64_t)get_be64(batch + SHMLOG_BATCH_OFF_MAX_TIMESTAMP);
    if (!index_records(batch, batch + SHMLOG_BATCH_HEADER_BYTES, batch + length, count, base_offset, base_ts,
                       max_ts, attributes, records))
        return SHMLOG_ECORRUPT;
    return count;
}

int64_t shmlog_records_index(const uint8_t *records_section, uint64_t records_bytes, uint32_t count,
                             int64_t base_offset, int64_t base_timestamp, int64_t max_timestamp,
                             uint16_t attributes, shmlog_record_ref *records, uint32_t max_records) {
    if (count > max_records) return SHMLOG_ESMALL;
    if (records_bytes > INT32_MAX) return SHMLOG_ETOOBIG; /* record refs hold int32 positions */
    const uint8_t *end = records_section + records_bytes;
    const uint8_t *last = index_records(records_section, records_section, end, count, base_offset,
                                        base_timestamp, max_timestamp, attributes, records);
    /* A decompressed records section holds exactly `count` records, as Kafka requires. */
    if (!last || last != end) return SHMLOG_ECORRUPT;
    return count;
}

static const uint8_t *index_records(const uint8_t *origin, const uint8_t *p, const uint8_t *end, uint32_t count,
                                    int64_t base_offset, int64_t base_ts, int64_t max_ts, uint16_t attributes,
                                    shmlog_record_ref *records) {
    for (uint32_t i = 0; i < count; i++) {
        int64_t body, ts_delta, offset_delta, klen, vlen, hcount, hk, hv;
        if (!(p = varint_get(p, end, &body)) || body < 1 || body > end - p) return NULL;
        const uint8_t *rend = p + body;
        p++; /* attributes */
        if (!(p = varint_get(p, rend, &ts_delta))) return NULL;
        if (!(p = varint_get(p, rend, &offset_delta))) return NULL;
        if (!(p = varint_get(p, rend, &klen)) || klen < -1 || klen > rend - p) return NULL;
        records[i].key_pos = (int32_t)(p - origin);
        records[i].key_len = (int32_t)klen;
        if (klen > 0) p += klen;
        if (!(p = varint_get(p, rend, &vlen)) || vlen < -1 || vlen > rend - p) return NULL;
        records[i].value_pos = (int32_t)(p - origin);
        records[i].value_len = (int32_t)vlen;
        if (vlen > 0) p += vlen;
        if (!(p = varint_get(p, rend, &hcount)) || hcount < 0 || hcount > rend - p) return NULL;
        records[i].headers_pos = (int32_t)(p - origin);
        records[i].headers_count = (int32_t)hcount;
        for (int64_t h = 0; h < hcount; h++) {
            if (!(p = varint_get(p, rend, &hk)) || hk < 0 || hk > rend - p) return NULL;
            p += hk;
            if (!(p = varint_get(p, rend, &hv)) || hv < -1 || hv > rend - p) return NULL;
            if (hv > 0) p += hv;
        }
        if (p != rend) return NULL;
        records[i].offset = base_offset + offset_delta;
        records[i].timestamp = (attributes & SHMLOG_ATTR_LOG_APPEND_TIME) ? max_ts : base_ts + ts_delta;
    }
    return p;
}

/* ---------------------------------------------------------------- ring geometry */

/* Every function below takes a process-local handle whose geometry was validated once at
 * open: a writer scribbling on the shared descriptor cannot make us divide by zero or
 * index outside the mapping. */
static inline shmlog_ring_header *ring_header(void *ring) { return ((shmlog_ring_handle *)ring)->header; }
static inline uint8_t *ring_data(void *ring) { return ((shmlog_ring_handle *)ring)->data; }
static inline uint64_t ring_capacity(const void *ring) { return ((const shmlog_ring_handle *)ring)->capacity_bytes; }

static inline uint64_t frame_index(const void *ring, uint64_t position) {
    return position & (ring_capacity(ring) - 1);
}

static inline uint64_t *frame_word(void *ring, uint64_t position) {
    return (uint64_t *)(ring_data(ring) + frame_index(ring, position));
}

static inline uint32_t *publish_mark(void *ring, uint64_t position) {
    return &((shmlog_ring_handle *)ring)->publish_marks[frame_index(ring, position) / SHMLOG_FRAME_ALIGN];
}

static inline uint32_t lap_of(const void *ring, uint64_t position) {
    return (uint32_t)(position / ring_capacity(ring));
}

/* A frame is published when the mark of its first block holds lap + 1. Marks are written
 * only by frame owners (and repairers), never by payload, and every block is re-marked
 * each lap (start: lap + 1, interior: 0), so a stale mark is at most one lap old and can
 * never equal the current lap + 1. */
static inline int frame_published(void *ring, uint64_t position) {
    return LOAD_ACQ(publish_mark(ring, position)) == lap_of(ring, position) + 1;
}

static inline void frame_clear_interior(void *ring, uint64_t position, uint64_t frame_bytes) {
    uint32_t *mark = publish_mark(ring, position);
    for (uint64_t b = 1; b < frame_bytes / SHMLOG_FRAME_ALIGN; b++) STORE_RLX(&mark[b], 0);
}

static inline void frame_publish(void *ring, uint64_t position, uint32_t frame_bytes, int padding) {
    STORE_RLX(frame_word(ring, position),
              ((uint64_t)lap_of(ring, position) << 32) | frame_bytes | (padding ? SHMLOG_FRAME_PADDING_FLAG : 0));
    STORE_REL(publish_mark(ring, position), lap_of(ring, position) + 1);
}

static inline uint64_t align_frame(uint64_t bytes) {
    return (bytes + SHMLOG_FRAME_ALIGN - 1) & ~(uint64_t)(SHMLOG_FRAME_ALIGN - 1);
}

static int is_power_of_two(uint64_t v) { return v && !(v & (v - 1)); }

static int capacity_valid(uint64_t capacity_bytes) {
    return is_power_of_two(capacity_bytes) && capacity_bytes >= SHMLOG_MIN_CAPACITY_BYTES &&
           capacity_bytes <= SHMLOG_MAX_CAPACITY_BYTES;
}

uint64_t shmlog_ring_map_bytes(uint64_t capacity_bytes) {
    return SHMLOG_RING_HEADER_BYTES + capacity_bytes / SHMLOG_FRAME_ALIGN * sizeof(uint32_t) + capacity_bytes;
}

int shmlog_ring_init(void *map, uint64_t map_bytes, uint64_t capacity_bytes, uint32_t topic_id,
                     uint32_t partition, uint32_t leader_epoch, uint64_t start_offset) {
    if (!capacity_valid(capacity_bytes) || map_bytes < shmlog_ring_map_bytes(capacity_bytes))
        return SHMLOG_EBADHEADER;
    shmlog_ring_header *h = map;
    memset(h, 0, SHMLOG_RING_HEADER_BYTES);
    h->descriptor.layout_version = SHMLOG_LAYOUT_VERSION;
    h->descriptor.header_bytes = SHMLOG_RING_HEADER_BYTES;
    h->descriptor.capacity_bytes = capacity_bytes;
    h->descriptor.created_unix_ns = shmlog_now_unix_ns();
    h->descriptor.topic_id = topic_id;
    h->descriptor.partition = partition;
    h->descriptor.leader_epoch = leader_epoch;
    h->descriptor.index_shift = (uint32_t)__builtin_ctzll(capacity_bytes / SHMLOG_INDEX_ENTRIES);
    h->descriptor.start_offset = start_offset;
    h->claim.next_offset = start_offset;
    h->persist.persisted_offset = start_offset;
    h->persist.flushed_offset = start_offset;
    h->persist.log_start_offset = start_offset;
    for (int i = 0; i < SHMLOG_PIN_SLOTS; i++) h->pins[i].pin_position = UINT64_MAX;
    STORE_REL(&h->descriptor.magic, SHMLOG_RING_MAGIC);
    return SHMLOG_OK;
}

int shmlog_ring_validate(const void *map, uint64_t map_bytes) {
    const shmlog_ring_header *h = map;
    if (map_bytes < SHMLOG_RING_HEADER_BYTES) return SHMLOG_EBADHEADER;
    if (LOAD_ACQ(&h->descriptor.magic) != SHMLOG_RING_MAGIC) return SHMLOG_EBADHEADER;
    if (h->descriptor.layout_version != SHMLOG_LAYOUT_VERSION) return SHMLOG_EBADHEADER;
    if (h->descriptor.header_bytes != SHMLOG_RING_HEADER_BYTES) return SHMLOG_EBADHEADER;
    uint64_t cap = h->descriptor.capacity_bytes;
    if (!capacity_valid(cap) || map_bytes < shmlog_ring_map_bytes(cap)) return SHMLOG_EBADHEADER;
    if (h->descriptor.index_shift != (uint32_t)__builtin_ctzll(cap / SHMLOG_INDEX_ENTRIES)) return SHMLOG_EBADHEADER;
    return SHMLOG_OK;
}

int shmlog_ring_open(shmlog_ring_handle *ring, void *map, uint64_t map_bytes) {
    int rc = shmlog_ring_validate(map, map_bytes);
    if (rc) return rc;
    shmlog_ring_header *h = map;
    ring->header = h;
    ring->capacity_bytes = h->descriptor.capacity_bytes;
    ring->index_shift = h->descriptor.index_shift;
    ring->publish_marks = (uint32_t *)((uint8_t *)map + SHMLOG_RING_HEADER_BYTES);
    ring->data = (uint8_t *)map + shmlog_ring_map_bytes(ring->capacity_bytes) - ring->capacity_bytes;
    ring->data_offset = (uint64_t)(ring->data - (uint8_t *)map);
    return SHMLOG_OK;
}

/* ---------------------------------------------------------------- doorbell */

int shmlog_doorbell_init(void *bell) {
    shmlog_doorbell *d = bell;
    memset(d, 0, sizeof(*d));
    d->layout_version = SHMLOG_LAYOUT_VERSION;
    d->slot_count = SHMLOG_DOORBELL_SLOTS;
    STORE_REL(&d->magic, SHMLOG_DOORBELL_MAGIC);
    return SHMLOG_OK;
}

int shmlog_doorbell_validate(const void *bell, uint64_t map_bytes) {
    const shmlog_doorbell *d = bell;
    if (map_bytes < sizeof(shmlog_doorbell)) return SHMLOG_EBADHEADER;
    if (LOAD_ACQ(&d->magic) != SHMLOG_DOORBELL_MAGIC || d->layout_version != SHMLOG_LAYOUT_VERSION ||
        d->slot_count != SHMLOG_DOORBELL_SLOTS)
        return SHMLOG_EBADHEADER;
    return SHMLOG_OK;
}

int shmlog_doorbell_acquire(void *bell, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token) {
    shmlog_doorbell *d = bell;
    for (int i = 0; i < SHMLOG_DOORBELL_SLOTS; i++) {
        uint32_t expected = 0;
        if (__atomic_compare_exchange_n(&d->slots[i].pid, &expected, pid, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            d->slots[i].pid_start_time = pid_start_time;
            STORE_REL(&d->slots[i].owner_token, owner_token);
            return i;
        }
    }
    return SHMLOG_ENOSLOT;
}

void shmlog_doorbell_release(void *bell, int slot) {
    shmlog_doorbell *d = bell;
    STORE_REL(&d->slots[slot].owner_token, 0);
    STORE_REL(&d->slots[slot].pid, 0);
}

uint32_t shmlog_doorbell_sequence(void *bell, int slot) {
    return LOAD_ACQ(&((shmlog_doorbell *)bell)->slots[slot].futex_seq);
}

void shmlog_doorbell_watch(void *map, int slot, int on) {
    uint64_t *word = &ring_header(map)->waiters.waiter_mask[slot / 64];
    uint64_t bit = 1ULL << (slot % 64);
    if (on) __atomic_fetch_or(word, bit, __ATOMIC_SEQ_CST);
    else __atomic_fetch_and(word, ~bit, __ATOMIC_SEQ_CST);
}

int shmlog_doorbell_wait(void *bell, int slot, uint32_t seen_sequence, int64_t timeout_ns) {
    shmlog_doorbell *d = bell;
    int rc = futex_wait(&d->slots[slot].futex_seq, seen_sequence, timeout_ns);
    return rc == 0 ? SHMLOG_OK : SHMLOG_EAGAIN;
}

/* Pairs with the FENCE_SEQ in a waiter's watch: either we see its bit or it sees our frame. */
static void doorbell_ring(void *map, void *bell) {
    if (!bell) return;
    shmlog_ring_header *h = ring_header(map);
    shmlog_doorbell *d = bell;
    FENCE_SEQ();
    for (int w = 0; w < SHMLOG_WAITER_WORDS; w++) {
        uint64_t mask = LOAD_RLX(&h->waiters.waiter_mask[w]);
        while (mask) {
            int slot = w * 64 + __builtin_ctzll(mask);
            mask &= mask - 1;
            __atomic_fetch_add(&d->slots[slot].futex_seq, 1, __ATOMIC_RELEASE);
            futex_wake_all(&d->slots[slot].futex_seq);
        }
    }
}

/* The persister does not watch a ring while records flow (one wake per batch would cost a
 * context switch per record on a small machine); it sleeps on its own doorbell slot, named in
 * persist.persister_slot, on a timer. What needs it promptly wakes that slot directly: a
 * producer short of space, an acks=all producer waiting for fsync, a ring filling past a
 * quarter unpersisted. Pairs with the persister reading its sequence before re-checking. */
static void persister_wake(void *map, void *bell) {
    if (!bell) return;
    uint32_t s = LOAD_ACQ(&ring_header(map)->persist.persister_slot);
    if (s == 0 || s > SHMLOG_DOORBELL_SLOTS) { /* none named (or garbage): whoever watches */
        doorbell_ring(map, bell);
        return;
    }
    shmlog_doorbell *d = bell;
    __atomic_fetch_add(&d->slots[s - 1].futex_seq, 1, __ATOMIC_SEQ_CST);
    futex_wake_all(&d->slots[s - 1].futex_seq);
}

/* After publishing [start, end): wake the persister once when this frame takes the ring's
 * unpersisted bytes past a quarter of the capacity (the frame holding that point does it). */
static void persister_nudge(void *map, void *bell, uint64_t start, uint64_t end) {
    if (!bell) return;
    shmlog_ring_header *h = ring_header(map);
    uint64_t mark = LOAD_ACQ(&h->persist.persisted_position) + ring_capacity(map) / 4;
    if (start < mark && end >= mark && LOAD_RLX(&h->persist.persister_slot)) persister_wake(map, bell);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int any_has_data(void *const *rings, shmlog_cursor *const *cursors, int n) {
    for (int i = 0; i < n; i++)
        if (shmlog_ring_has_data(rings[i], LOAD_RLX(&cursors[i]->position))) return 1;
    return 0;
}

int shmlog_wait_any(void *bell, int slot, void *const *rings, shmlog_cursor *const *cursors, int n,
                    int64_t spin_ns, int64_t timeout_ns, int64_t *waited_ns) {
    const uint64_t start = monotonic_ns();
    uint64_t now = start;
    int rc = SHMLOG_WAIT_TIMEOUT;
    shmlog_doorbell *d = bell;
    int sleeper = d && slot >= 0 && slot < SHMLOG_DOORBELL_SLOTS;
    /* Read before the spin: a direct wake of our slot while we spin (a group event for this
     * consumer) ends the spin, or makes the futex wait return at once. */
    uint32_t seq = sleeper ? LOAD_ACQ(&d->slots[slot].futex_seq) : 0;
    if (spin_ns > timeout_ns) spin_ns = timeout_ns;
    for (uint32_t i = 0;; i++) {
        if (any_has_data(rings, cursors, n)) { rc = SHMLOG_WAIT_SPUN; goto out; }
        if (spin_ns <= 0) break;
        if ((i & 15) == 15) {
            if (sleeper && LOAD_ACQ(&d->slots[slot].futex_seq) != seq) goto out;
            now = monotonic_ns();
            if (now - start >= (uint64_t)spin_ns) break;
        }
        cpu_relax();
    }
    now = monotonic_ns();
    if (!sleeper || timeout_ns <= 0 || now - start >= (uint64_t)timeout_ns) goto out;
    /* Watch, then re-check: a publish after the re-check bumps the sequence we sleep on
     * (Dekker with doorbell_ring), so it cannot slip in between. */
    for (int i = 0; i < n; i++) shmlog_doorbell_watch(rings[i], slot, 1);
    if (any_has_data(rings, cursors, n)) rc = SHMLOG_WAIT_SPUN;
    else {
        futex_wait(&d->slots[slot].futex_seq, seq, (int64_t)(timeout_ns - (int64_t)(now - start)));
        if (any_has_data(rings, cursors, n)) rc = SHMLOG_WAIT_WOKEN;
    }
    for (int i = 0; i < n; i++) shmlog_doorbell_watch(rings[i], slot, 0);
out:
    if (waited_ns) *waited_ns = (int64_t)(monotonic_ns() - start);
    return rc;
}

/* ---------------------------------------------------------------- producer slots and claims */

int shmlog_producer_slot_acquire(void *map, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token) {
    shmlog_ring_header *h = ring_header(map);
    for (int i = 0; i < SHMLOG_PRODUCER_SLOTS; i++) {
        shmlog_producer_slot *s = &h->producers[i];
        uint32_t expected = 0;
        if (LOAD_RLX(&s->state) != SHMLOG_SLOT_IDLE) continue;
        if (__atomic_compare_exchange_n(&s->pid, &expected, pid, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            s->pid_start_time = pid_start_time;
            STORE_REL(&s->owner_token, owner_token);
            return i;
        }
    }
    return SHMLOG_ENOSLOT;
}

/* Frees the slot only if it still belongs to owner_token: two reclaimers racing over a dead
 * owner must not free a slot a new producer has just taken. */
int shmlog_producer_slot_release(void *map, int slot, uint64_t owner_token) {
    shmlog_producer_slot *s = &ring_header(map)->producers[slot];
    uint64_t expected = owner_token;
    if (!__atomic_compare_exchange_n(&s->owner_token, &expected, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return SHMLOG_EAGAIN;
    STORE_REL(&s->state, SHMLOG_SLOT_IDLE);
    STORE_REL(&s->pid, 0);
    return SHMLOG_OK;
}

typedef unsigned __int128 u128;

static inline int claim_cas(shmlog_ring_claim *c, uint64_t pos, uint64_t off, uint64_t new_pos, uint64_t new_off) {
    u128 expected = ((u128)off << 64) | pos;
    u128 desired = ((u128)new_off << 64) | new_pos;
    return __sync_bool_compare_and_swap((u128 *)&c->tail_position, expected, desired);
}

static void index_note(void *ring, uint64_t position, uint64_t frame_bytes, uint64_t offset) {
    shmlog_ring_handle *r = ring;
    uint32_t shift = r->index_shift;
    uint64_t first = position >> shift, last = (position + frame_bytes - 1) >> shift;
    if (first == last && (position & ((1ULL << shift) - 1)) != 0) return;
    shmlog_index_entry *e = &r->header->index[last & (SHMLOG_INDEX_ENTRIES - 1)];
    STORE_RLX(&e->position, position);
    STORE_RLX(&e->offset, offset);
}

uint64_t shmlog_ring_release_to(void *map, uint64_t persisted_position, const uint32_t *dead_pins);

static int wait_for_space(void *ring, uint64_t claim_end, uint64_t deadline_ns, void *bell) {
    shmlog_ring_header *h = ring_header(ring);
    uint32_t seq = LOAD_ACQ(&h->release.space_futex);
    __atomic_fetch_add(&h->release.space_waiters, 1, __ATOMIC_SEQ_CST);
    /* What is persisted but held back for readers is ours to take now. */
    shmlog_ring_release_to(ring, LOAD_ACQ(&h->persist.persisted_position), NULL);
    int rc = SHMLOG_OK;
    if (claim_end > __atomic_load_n(&h->release.release_position, __ATOMIC_SEQ_CST) + ring_capacity(ring)) {
        uint64_t now = monotonic_ns();
        if (now >= deadline_ns) rc = SHMLOG_EFULL;
        else {
            uint64_t slice = deadline_ns - now;
            if (slice > 100000000ULL) slice = 100000000ULL; /* a releaser that died cannot wake us */
            persister_wake(ring, bell); /* it sleeps on a timer while records flow */
            futex_wait(&h->release.space_futex, seq, (int64_t)slice);
        }
    }
    __atomic_fetch_sub(&h->release.space_waiters, 1, __ATOMIC_SEQ_CST);
    return rc;
}

static void slot_intent(shmlog_producer_slot *s, uint64_t pos, uint64_t off, uint32_t frame_bytes, uint32_t count) {
    STORE_RLX(&s->claim_position, pos);
    STORE_RLX(&s->claim_offset, off);
    STORE_RLX(&s->claim_frame_bytes, frame_bytes);
    STORE_RLX(&s->claim_record_count, count);
    STORE_RLX(&s->claim_unix_ns, shmlog_now_unix_ns());
    STORE_SEQ(&s->state, SHMLOG_SLOT_CLAIMING);
}

/* Claims frame_bytes for record_count offsets (publishing end-of-ring padding on the way);
 * returns the claimed position with the slot OWNED, or SHMLOG_EFULL at the deadline. */
static int64_t ring_claim(void *map, shmlog_producer_slot *s, uint64_t frame_bytes, uint32_t record_count,
                          uint64_t deadline, uint64_t *out_offset, void *doorbell) {
    shmlog_ring_header *h = ring_header(map);
    const uint64_t cap = ring_capacity(map);
    for (;;) {
        uint64_t pos = LOAD_ACQ(&h->claim.tail_position);
        uint64_t off = LOAD_ACQ(&h->claim.next_offset);
        uint64_t idx = frame_index(map, pos);
        int pad = idx + frame_bytes > cap;
        uint64_t claim_bytes = pad ? cap - idx : frame_bytes;
        uint32_t claim_count = pad ? 0 : record_count;
        if (pos + claim_bytes > LOAD_ACQ(&h->release.release_position) + cap) {
            if (wait_for_space(map, pos + claim_bytes, deadline, doorbell) == SHMLOG_EFULL) return SHMLOG_EFULL;
            continue;
        }
        slot_intent(s, pos, off, (uint32_t)claim_bytes, claim_count);
        crash_at(1);
        if (!claim_cas(&h->claim, pos, off, pos + claim_bytes, off + claim_count)) {
            STORE_REL(&s->state, SHMLOG_SLOT_IDLE); /* a stale intent must not look like a live claim */
            continue;
        }
        STORE_REL(&s->state, SHMLOG_SLOT_OWNED);
        crash_at(2);
        frame_clear_interior(map, pos, claim_bytes);
        if (pad) {
            frame_publish(map, pos, (uint32_t)claim_bytes, 1);
            STORE_REL(&s->state, SHMLOG_SLOT_IDLE);
            continue;
        }
        *out_offset = off;
        return (int64_t)pos;
    }
}

/* Writes the batch header over records already in place, then publishes the frame. */
static int64_t ring_commit(void *map, shmlog_producer_slot *s, uint64_t pos, uint64_t frame_bytes, uint64_t off,
                           uint32_t records_bytes, uint32_t record_count, int64_t base_timestamp,
                           int64_t max_timestamp, int16_t attributes, int64_t producer_id,
                           int16_t producer_epoch, int32_t base_sequence, void *doorbell) {
    uint8_t *batch = (uint8_t *)frame_word(map, pos) + SHMLOG_FRAME_PREFIX_BYTES;
    shmlog_batch_write_header(batch, records_bytes, off, ring_header(map)->descriptor.leader_epoch, attributes,
                              record_count, base_timestamp, max_timestamp, producer_id, producer_epoch,
                              base_sequence);
    crash_at(4);
    index_note(map, pos, frame_bytes, off);
    uint32_t owned = SHMLOG_SLOT_OWNED;
    if (!__atomic_compare_exchange_n(&s->state, &owned, SHMLOG_SLOT_IDLE, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return SHMLOG_EFENCED;
    frame_publish(map, pos, (uint32_t)frame_bytes, 0);
    doorbell_ring(map, doorbell);
    persister_nudge(map, doorbell, pos, pos + frame_bytes);
    return (int64_t)pos;
}

static int64_t frame_bytes_for(void *map, uint64_t records_bytes, uint32_t record_count) {
    uint64_t frame_bytes = align_frame(SHMLOG_FRAME_PREFIX_BYTES + SHMLOG_BATCH_HEADER_BYTES + records_bytes);
    if (frame_bytes > ring_capacity(map) || frame_bytes > SHMLOG_FRAME_LENGTH_MASK || record_count == 0)
        return SHMLOG_ETOOBIG;
    return (int64_t)frame_bytes;
}

static uint64_t deadline_after(int64_t timeout_ns) {
    return timeout_ns < 0 ? UINT64_MAX : monotonic_ns() + (uint64_t)timeout_ns;
}

typedef struct claimed_frame {
    int64_t position, frame_bytes;
    uint8_t *records;   /* where the batch's records section goes */
} claimed_frame;

/* Claims a frame for a batch of `count` records taking records_bytes: 0, or a negative status. */
static int64_t frame_claim(void *map, int slot, uint64_t records_bytes, uint32_t count, int64_t timeout_ns,
                           void *doorbell, uint64_t *out_base_offset, claimed_frame *out) {
    if (records_bytes > UINT32_MAX) return SHMLOG_ETOOBIG;
    out->frame_bytes = frame_bytes_for(map, records_bytes, count);
    if (out->frame_bytes < 0) return out->frame_bytes;
    out->position = ring_claim(map, &ring_header(map)->producers[slot], out->frame_bytes, count,
                               deadline_after(timeout_ns), out_base_offset, doorbell);
    if (out->position < 0) return out->position;
    out->records = (uint8_t *)frame_word(map, out->position) + SHMLOG_FRAME_PREFIX_BYTES + SHMLOG_BATCH_HEADER_BYTES;
    return 0;
}

int64_t shmlog_ring_append(void *map, int slot, const uint8_t *records, uint32_t records_bytes,
                           uint32_t record_count, int64_t base_timestamp, int64_t max_timestamp,
                           int16_t attributes, int64_t producer_id, int16_t producer_epoch,
                           int32_t base_sequence, int64_t timeout_ns, void *doorbell,
                           uint64_t *out_base_offset) {
    claimed_frame f;
    int64_t rc = frame_claim(map, slot, records_bytes, record_count, timeout_ns, doorbell, out_base_offset, &f);
    if (rc < 0) return rc;
    uint32_t half = records_bytes / 2;
    memcpy(f.records, records, half);
    crash_at(3);
    memcpy(f.records + half, records + half, records_bytes - half);
    return ring_commit(map, &ring_header(map)->producers[slot], f.position, f.frame_bytes, *out_base_offset,
                       records_bytes, record_count, base_timestamp, max_timestamp, attributes, producer_id,
                       producer_epoch, base_sequence, doorbell);
}

/* Encodes the records straight into the claimed frame: no staging buffer, one pass. */
int64_t shmlog_ring_append_fixed(void *map, int slot, uint32_t count, const uint8_t *values, uint32_t value_bytes,
                                 int64_t timestamp, int64_t timeout_ns, void *doorbell, uint64_t *out_base_offset) {
    int64_t records_bytes = shmlog_records_encode_fixed(NULL, 0, count, values, value_bytes);
    if (records_bytes < 0) return SHMLOG_ETOOBIG;
    claimed_frame f;
    int64_t rc = frame_claim(map, slot, (uint64_t)records_bytes, count, timeout_ns, doorbell, out_base_offset, &f);
    if (rc < 0) return rc;
    shmlog_records_encode_fixed(f.records, (uint64_t)records_bytes, count, values, value_bytes);
    crash_at(3);
    return ring_commit(map, &ring_header(map)->producers[slot], f.position, f.frame_bytes, *out_base_offset,
                       (uint32_t)records_bytes, count, timestamp, timestamp, 0, -1, -1, -1, doorbell);
}

int64_t shmlog_ring_append_records(void *map, int slot, uint32_t count, const uint8_t *keys,
                                   const int32_t *key_lens, const uint8_t *values, const int32_t *value_lens,
                                   const int64_t *timestamps, int64_t base_timestamp, int64_t max_timestamp,
                                   const uint8_t *headers, const int32_t *headers_lens, int64_t timeout_ns,
                                   void *doorbell, uint64_t *out_base_offset) {
    int64_t records_bytes = shmlog_records_encode(NULL, 0, count, keys, key_lens, values, value_lens, timestamps,
                                                  base_timestamp, headers, headers_lens);
    if (records_bytes < 0) return SHMLOG_ETOOBIG;
    claimed_frame f;
    int64_t rc = frame_claim(map, slot, (uint64_t)records_bytes, count, timeout_ns, doorbell, out_base_offset, &f);
    if (rc < 0) return rc;
    shmlog_records_encode(f.records, (uint64_t)records_bytes, count, keys, key_lens, values, value_lens, timestamps,
                          base_timestamp, headers, headers_lens);
    crash_at(3);
    return ring_commit(map, &ring_header(map)->producers[slot], f.position, f.frame_bytes, *out_base_offset,
                       (uint32_t)records_bytes, count, base_timestamp, max_timestamp, 0, -1, -1, -1, doorbell);
}

/* ---------------------------------------------------------------- reading */

void shmlog_ring_end(const void *map, shmlog_cursor *out) {
    const shmlog_ring_header *h = ring_header((void *)map);
    for (;;) {
        uint64_t pos = LOAD_ACQ(&h->claim.tail_position);
        uint64_t off = LOAD_ACQ(&h->claim.next_offset);
        if (LOAD_ACQ(&h->claim.tail_position) == pos) {
            out->position = pos;
            out->next_offset = off;
            return;
        }
    }
}

int shmlog_ring_still_intact(const void *map, uint64_t position) {
    const shmlog_ring_header *h = ring_header((void *)map);
    FENCE_ACQ();
    return LOAD_RLX(&h->claim.tail_position) <= position + ring_capacity(map);
}

int shmlog_ring_has_data(const void *map, uint64_t position) {
    if (frame_published((void *)map, position)) return 1;
    return !shmlog_ring_still_intact(map, position);
}

/* The frame at position, validated: its length (> 0) and padding flag, or a negative status. */
static int64_t frame_length_at(void *ring, uint64_t position, int *padding) {
    uint64_t word = LOAD_RLX(frame_word(ring, position));
    uint32_t length = (uint32_t)(word & SHMLOG_FRAME_LENGTH_MASK);
    if ((uint32_t)(word >> 32) != lap_of(ring, position) || length < SHMLOG_FRAME_ALIGN ||
        length % SHMLOG_FRAME_ALIGN || length > ring_capacity(ring) - frame_index(ring, position))
        return SHMLOG_ECORRUPT;
    *padding = (word & SHMLOG_FRAME_PADDING_FLAG) != 0;
    return length;
}

int64_t shmlog_ring_fetch(const void *map, shmlog_cursor *cursor, uint8_t *dst, uint64_t dst_bytes,
                          shmlog_frame_ref *frames, uint32_t max_frames, int check_crc) {
    void *ring = (void *)map;
    const shmlog_ring_handle *r = map;
    uint64_t start = cursor->position, pos = start, next_offset = cursor->next_offset, used = 0;
    uint32_t n = 0;
    if (!shmlog_ring_still_intact(map, start)) return SHMLOG_EOVERWRITTEN;
    while (n < max_frames) {
        if (!frame_published(ring, pos)) break;
        int padding;
        int64_t length = frame_length_at(ring, pos, &padding);
        if (length < 0) {
            if (!shmlog_ring_still_intact(map, start)) return SHMLOG_EOVERWRITTEN;
            cursor->position = pos;
            return SHMLOG_ECORRUPT;
        }
        if (padding) {
            pos += length;
            continue;
        }
        const uint8_t *batch = (const uint8_t *)frame_word(ring, pos) + SHMLOG_FRAME_PREFIX_BYTES;
        uint64_t room = length - SHMLOG_FRAME_PREFIX_BYTES;
        int rc = shmlog_batch_verify(batch, room, 0);
        uint64_t batch_bytes = 12ULL + get_be32(batch + SHMLOG_BATCH_OFF_LENGTH);
        uint64_t base = get_be64(batch + SHMLOG_BATCH_OFF_BASE_OFFSET);
        if (rc == SHMLOG_OK && base != next_offset) rc = SHMLOG_ECORRUPT;
        if (rc) {
            if (!shmlog_ring_still_intact(map, start)) return SHMLOG_EOVERWRITTEN;
            cursor->position = pos;
            return rc;
        }
        uint64_t count = (uint64_t)get_be32(batch + SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA) + 1;
        const uint8_t *checked = batch;
        if (dst) {
            if (used + batch_bytes > dst_bytes) {
                if (n == 0) {
                    frames[0].batch_bytes = (uint32_t)batch_bytes;
                    return SHMLOG_ESMALL;
                }
                break;
            }
            memcpy(dst + used, batch, batch_bytes);
            checked = dst + used;
        }
        if (check_crc && shmlog_batch_verify(checked, batch_bytes, 1) != SHMLOG_OK) {
            if (!shmlog_ring_still_intact(map, start)) return SHMLOG_EOVERWRITTEN;
            cursor->position = pos;
            return SHMLOG_ECRC;
        }
        frames[n].map_pos = r->data_offset + frame_index(ring, pos) + SHMLOG_FRAME_PREFIX_BYTES;
        frames[n].dst_pos = used;
        frames[n].base_offset = base;
        frames[n].batch_bytes = (uint32_t)batch_bytes;
        frames[n].record_count = (uint32_t)count;
        n++;
        used += dst ? batch_bytes : 0;
        pos += length;
        next_offset = base + count;
    }
    if (!shmlog_ring_still_intact(map, start)) return SHMLOG_EOVERWRITTEN;
    cursor->position = pos;
    cursor->next_offset = next_offset;
    return n;
}

/* A valid (position, offset) pair from the index that is still in the ring. */
static int index_entry_valid(void *ring, const shmlog_index_entry *e, shmlog_cursor *out) {
    uint64_t pos = LOAD_RLX(&e->position), off = LOAD_RLX(&e->offset);
    int padding;
    if (pos % SHMLOG_FRAME_ALIGN || !shmlog_ring_still_intact(ring, pos) || !frame_published(ring, pos)) return 0;
    int64_t length = frame_length_at(ring, pos, &padding);
    if (length < SHMLOG_FRAME_PREFIX_BYTES + SHMLOG_BATCH_HEADER_BYTES || padding) return 0;
    if (get_be64((const uint8_t *)frame_word(ring, pos) + SHMLOG_FRAME_PREFIX_BYTES) != off) return 0;
    if (!shmlog_ring_still_intact(ring, pos)) return 0;
    out->position = pos;
    out->next_offset = off;
    return 1;
}

void shmlog_ring_start(const void *map, shmlog_cursor *out) {
    const shmlog_ring_header *h = ring_header((void *)map);
    shmlog_ring_end(map, out);
    shmlog_cursor c;
    for (int i = 0; i < SHMLOG_INDEX_ENTRIES; i++)
        if (index_entry_valid((void *)map, &h->index[i], &c) && c.next_offset < out->next_offset) *out = c;
}

int shmlog_ring_locate(const void *map, uint64_t offset, shmlog_cursor *out) {
    const shmlog_ring_header *h = ring_header((void *)map);
    shmlog_cursor end, best = {0, 0}, c;
    int found = 0;
    shmlog_ring_end(map, &end);
    if (offset >= end.next_offset) {
        *out = end;
        return offset == end.next_offset ? SHMLOG_OK : SHMLOG_EAGAIN;
    }
    for (int i = 0; i < SHMLOG_INDEX_ENTRIES; i++) {
        if (index_entry_valid((void *)map, &h->index[i], &c) && c.next_offset <= offset &&
            (!found || c.next_offset > best.next_offset)) {
            best = c;
            found = 1;
        }
    }
    if (!found) return SHMLOG_EOVERWRITTEN;
    *out = best; /* the caller walks forward from here, skipping records below offset */
    return SHMLOG_OK;
}

/* ---------------------------------------------------------------- dead claims */

/* Slots whose claim starts at an unpublished position below the tail; -1 if that position
 * is claimed by nobody at all (garbage in shared memory, or a claim already repaired). */
int shmlog_ring_stuck_claims(const void *map, uint64_t position, int *slots, int max_slots) {
    void *ring = (void *)map;
    const shmlog_ring_header *h = ring_header(ring);
    if (LOAD_ACQ(&h->claim.tail_position) <= position || frame_published(ring, position)) return 0;
    int n = 0;
    for (int i = 0; i < SHMLOG_PRODUCER_SLOTS && n < max_slots; i++) {
        const shmlog_producer_slot *s = &h->producers[i];
        uint32_t state = LOAD_ACQ(&s->state);
        if ((state == SHMLOG_SLOT_CLAIMING || state == SHMLOG_SLOT_OWNED) && LOAD_RLX(&s->claim_position) == position)
            slots[n++] = i;
    }
    return n;
}

int shmlog_ring_repair(void *map, int slot, void *doorbell) {
    shmlog_ring_header *h = ring_header(map);
    shmlog_producer_slot *s = &h->producers[slot];
    uint32_t state = LOAD_ACQ(&s->state);
    if (state != SHMLOG_SLOT_CLAIMING && state != SHMLOG_SLOT_OWNED) return SHMLOG_EAGAIN;
    uint64_t token = LOAD_ACQ(&s->owner_token);
    if (!__atomic_compare_exchange_n(&s->state, &state, SHMLOG_SLOT_FENCED, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return SHMLOG_EAGAIN;
    uint64_t pos = s->claim_position, off = s->claim_offset;
    uint32_t frame_bytes = s->claim_frame_bytes, count = s->claim_record_count;
    uint64_t idx = frame_index(map, pos);
    int ok = frame_bytes >= SHMLOG_FRAME_ALIGN && frame_bytes % SHMLOG_FRAME_ALIGN == 0 &&
             frame_bytes <= ring_capacity(map) - idx &&
             (count == 0 || frame_bytes >= SHMLOG_FRAME_PREFIX_BYTES + SHMLOG_BATCH_HEADER_BYTES);
    if (ok && LOAD_ACQ(&h->claim.tail_position) > pos && !frame_published(map, pos)) {
        frame_clear_interior(map, pos, frame_bytes);
        if (count > 0) {
            /* An empty control batch keeps offsets dense: readers skip it like an aborted run. */
            uint8_t *batch = (uint8_t *)frame_word(map, pos) + SHMLOG_FRAME_PREFIX_BYTES;
            shmlog_batch_write_header(batch, 0, off, h->descriptor.leader_epoch, SHMLOG_ATTR_CONTROL, 0, 0, 0, -1, -1, -1);
            put_be32(batch + SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA, count - 1);
            uint32_t crc = shmlog_crc32c(0, batch + SHMLOG_BATCH_OFF_ATTRIBUTES,
                                         SHMLOG_BATCH_HEADER_BYTES - SHMLOG_BATCH_OFF_ATTRIBUTES);
            put_be32(batch + SHMLOG_BATCH_OFF_CRC, crc);
        }
        frame_publish(map, pos, frame_bytes, count == 0);
    }
    shmlog_producer_slot_release(map, slot, token);
    doorbell_ring(map, doorbell);
    return ok ? SHMLOG_OK : SHMLOG_ECORRUPT;
}

/* ---------------------------------------------------------------- pins and release */

int shmlog_pin_acquire(void *map, uint32_t pid, uint64_t pid_start_time, uint64_t owner_token) {
    shmlog_ring_header *h = ring_header(map);
    for (int i = 0; i < SHMLOG_PIN_SLOTS; i++) {
        uint32_t expected = 0;
        if (__atomic_compare_exchange_n(&h->pins[i].in_use, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            STORE_SEQ(&h->pins[i].pin_position, UINT64_MAX);
            h->pins[i].pid = pid;
            h->pins[i].pid_start_time = pid_start_time;
            STORE_REL(&h->pins[i].owner_token, owner_token);
            return i;
        }
    }
    return SHMLOG_ENOSLOT;
}

/* Dekker pair with shmlog_ring_release_to: we store the pin then read the busy count, a
 * releaser raises the count then reads the pins. Seeing no releaser busy means either every
 * later release round sees our pin, or the last one's release is what we read next. */
int shmlog_pin_set(void *map, int pin, uint64_t position) {
    shmlog_ring_header *h = ring_header(map);
    STORE_SEQ(&h->pins[pin].pin_position, position);
    if (position == UINT64_MAX) return SHMLOG_OK;
    for (int spin = 0; spin < 100000; spin++) {
        if (!__atomic_load_n(&h->release.release_busy, __ATOMIC_SEQ_CST)) {
            if (__atomic_load_n(&h->release.release_position, __ATOMIC_SEQ_CST) <= position) return SHMLOG_OK;
            break;
        }
        __builtin_ia32_pause();
    }
    STORE_SEQ(&h->pins[pin].pin_position, UINT64_MAX);
    return SHMLOG_EOVERWRITTEN;
}

void shmlog_pin_release(void *map, int pin) {
    shmlog_ring_header *h = ring_header(map);
    STORE_SEQ(&h->pins[pin].pin_position, UINT64_MAX);
    STORE_REL(&h->pins[pin].owner_token, 0);
    STORE_REL(&h->pins[pin].in_use, 0);
}

/* Space is released lazily: a quarter of the ring stays readable behind the persister (so
 * readers near the head keep zero-copy access) until a producer actually waits for room.
 * Several processes release (the persister, producers short of space): the busy count and
 * the CAS keep the release monotonic and every pin honoured. */
uint64_t shmlog_ring_release_to(void *map, uint64_t persisted_position, const uint32_t *dead_pins) {
    shmlog_ring_header *h = ring_header(map);
    (void)dead_pins;
    uint64_t cap = ring_capacity(map);
    uint64_t hold_back = __atomic_load_n(&h->release.space_waiters, __ATOMIC_SEQ_CST) ? 0 : cap / 4;
    uint64_t current = LOAD_ACQ(&h->release.release_position);
    if (persisted_position < hold_back || persisted_position - hold_back <= current) return current;
    __atomic_fetch_add(&h->release.release_busy, 1, __ATOMIC_SEQ_CST);
    uint64_t target = persisted_position - hold_back;
    for (int i = 0; i < SHMLOG_PIN_SLOTS; i++) {
        uint64_t p = __atomic_load_n(&h->pins[i].pin_position, __ATOMIC_SEQ_CST);
        if (p < target) target = p;
    }
    current = LOAD_ACQ(&h->release.release_position);
    while (target > current &&
           !__atomic_compare_exchange_n(&h->release.release_position, &current, target, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_ACQUIRE)) {
    }
    __atomic_fetch_sub(&h->release.release_busy, 1, __ATOMIC_SEQ_CST);
    if (target <= current) return current;
    FENCE_SEQ();
    if (LOAD_RLX(&h->release.space_waiters)) {
        __atomic_fetch_add(&h->release.space_futex, 1, __ATOMIC_RELEASE);
        futex_wake_all(&h->release.space_futex);
    }
    return target;
}

void shmlog_ring_publish_persisted(void *map, uint64_t position, uint64_t offset, uint64_t flushed_offset) {
    shmlog_ring_header *h = ring_header(map);
    STORE_REL(&h->persist.persisted_position, position);
    STORE_REL(&h->persist.persisted_offset, offset);
    STORE_REL(&h->persist.flushed_offset, flushed_offset);
    FENCE_SEQ();
    if (LOAD_RLX(&h->persist.persist_waiters)) {
        __atomic_fetch_add(&h->persist.persist_futex, 1, __ATOMIC_RELEASE);
        futex_wake_all(&h->persist.persist_futex);
    }
}

int shmlog_ring_wait_flushed(void *map, uint64_t offset, int64_t timeout_ns, void *doorbell) {
    shmlog_ring_header *h = ring_header(map);
    const uint64_t deadline = timeout_ns < 0 ? UINT64_MAX : monotonic_ns() + (uint64_t)timeout_ns;
    for (int round = 0;; round++) {
        uint32_t seq = LOAD_ACQ(&h->persist.persist_futex);
        __atomic_fetch_add(&h->persist.persist_waiters, 1, __ATOMIC_SEQ_CST);
        if (round == 0) persister_wake(map, doorbell); /* the persister fsyncs when it sees a waiter */
        int done = __atomic_load_n(&h->persist.flushed_offset, __ATOMIC_SEQ_CST) > offset;
        uint64_t now = monotonic_ns();
        if (!done && now < deadline) {
            uint64_t slice = deadline - now;
            if (slice > 100000000ULL) slice = 100000000ULL;
            futex_wait(&h->persist.persist_futex, seq, (int64_t)slice);
        }
        __atomic_fetch_sub(&h->persist.persist_waiters, 1, __ATOMIC_SEQ_CST);
        if (done) return SHMLOG_OK;
        if (LOAD_ACQ(&h->persist.storage_error)) return SHMLOG_ECORRUPT;
        if (monotonic_ns() >= deadline) return SHMLOG_EAGAIN;
    }
}

void shmlog_ring_request_flush(void *map, uint64_t offset) {
    shmlog_ring_header *h = ring_header(map);
    uint64_t current = LOAD_RLX(&h->persist.flush_requested_offset);
    while (current < offset &&
           !__atomic_compare_exchange_n(&h->persist.flush_requested_offset, &current, offset, 0, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED)) {
    }
}

/* The log start offset only moves forward, and two processes move it (the supervisor for
 * delete_records, the persister for retention): a CAS loop keeps the larger of the two. */
uint64_t shmlog_ring_advance_log_start(void *map, uint64_t offset) {
    shmlog_ring_header *h = ring_header(map);
    uint64_t current = LOAD_ACQ(&h->persist.log_start_offset);
    while (current < offset &&
           !__atomic_compare_exchange_n(&h->persist.log_start_offset, &current, offset, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_ACQUIRE)) {
    }
    return current < offset ? offset : current;
}
