/* Hashes: CRC32C (hardware instruction with a table-driven fallback), murmur2 and FNV-1a. */
#include <pthread.h>

#include "core.h"

/* ---------------------------------------------------------------- CRC32C, software */

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_table_once = PTHREAD_ONCE_INIT;

static void crc32c_table_build(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc32c_table[t][n] = (crc32c_table[t - 1][n] >> 8) ^ crc32c_table[0][crc32c_table[t - 1][n] & 0xff];
}

uint32_t shmlog_crc32c_sw(uint32_t crc, const void *data, size_t length) {
    pthread_once(&crc32c_table_once, crc32c_table_build);
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

/* ---------------------------------------------------------------- CRC32C, hardware */

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

static inline uint32_t crc32c_lane_shift_apply(uint32_t c) {
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
            c = crc32c_lane_shift_apply(crc32c_lane_shift_apply((uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
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
    static int use_hw = -1; /* racing first callers all store the same answer */
    int hw = load_relaxed(&use_hw);
    if (hw < 0) store_relaxed(&use_hw, hw = shmlog_crc32c_hw_available());
    return hw ? crc32c_hw(crc, data, length) : shmlog_crc32c_sw(crc, data, length);
}

/* ---------------------------------------------------------------- partitioner hashes */

int32_t shmlog_murmur2(const void *data, size_t length) { return murmur2_hash(data, length); }

uint32_t shmlog_murmur2_partition(const void *key, size_t length, uint32_t partitions) {
    return partitions ? murmur2_partition(key, length, partitions) : 0;
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
