/* Kafka record framing: zigzag varints and the size of one record body. Shared by the
 * C core and the CPython fast path (shmlog/_fast.c) so both encode records identically. */
#ifndef SHMLOG_VARINT_H
#define SHMLOG_VARINT_H

#include <stdint.h>

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

static inline uint64_t record_body_bytes(int64_t ts_delta, uint32_t offset_delta, int32_t key_len,
                                         int32_t value_len, int32_t headers_len) {
    return 1 + varint_size(zigzag(ts_delta)) + varint_size(zigzag(offset_delta)) +
           varint_size(zigzag(key_len)) + (key_len > 0 ? key_len : 0) +
           varint_size(zigzag(value_len)) + (value_len > 0 ? value_len : 0) +
           (headers_len > 0 ? headers_len : 1);
}

#endif
