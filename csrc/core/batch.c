/* Kafka RecordBatch v2: the header, its verification, and the records section (encode, index). */
#include <stdlib.h>

#include "core.h"

/* ---------------------------------------------------------------- header */

void batch_header_fields(uint8_t *batch, uint32_t records_bytes, uint64_t base_offset, uint32_t leader_epoch,
                         int16_t attributes, uint32_t record_count, int64_t base_timestamp, int64_t max_timestamp,
                         int64_t producer_id, int16_t producer_epoch, int32_t base_sequence) {
    /* record_count doubles as lastOffsetDelta + 1; a control batch that only accounts for
     * offsets carries zero records (see shmlog_ring_repair). */
    uint32_t batch_length = SHMLOG_BATCH_HEADER_BYTES - SHMLOG_BATCH_OFF_LEADER_EPOCH + records_bytes;
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
}

int shmlog_batch_write_header(uint8_t *batch, uint32_t records_bytes, uint64_t base_offset,
                              uint32_t leader_epoch, int16_t attributes, uint32_t record_count,
                              int64_t base_timestamp, int64_t max_timestamp, int64_t producer_id,
                              int16_t producer_epoch, int32_t base_sequence) {
    batch_header_fields(batch, records_bytes, base_offset, leader_epoch, attributes, record_count, base_timestamp,
                        max_timestamp, producer_id, producer_epoch, base_sequence);
    batch_seal(batch);
    return 0;
}

/* The CRC32C over attributes..end, written into the header (after any field changed). */
void batch_seal(uint8_t *batch) {
    uint64_t length = batch_length_of(batch);
    put_be32(batch + SHMLOG_BATCH_OFF_CRC, shmlog_crc32c(0, batch + SHMLOG_BATCH_OFF_ATTRIBUTES,
                                                         length - SHMLOG_BATCH_OFF_ATTRIBUTES));
}

int shmlog_batch_verify(const uint8_t *batch, uint64_t batch_bytes, int check_crc) {
    if (batch_bytes < SHMLOG_BATCH_HEADER_BYTES) return SHMLOG_ECORRUPT;
    uint64_t length = batch_length_of(batch);
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

int shmlog_batch_carries_records(uint16_t attributes, int32_t record_count) {
    return batch_carries_records(attributes, record_count);
}

/* ---------------------------------------------------------------- records section: encode */

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
        uint64_t rec = record_encoded_bytes(body);
        total += rec;
        if (!dst) continue;
        if ((uint64_t)(end - p) < rec) return SHMLOG_ESMALL;
        p = record_encode(p, body, tsd, i, keys, klen, values, vlen, headers, hlen);
        if (klen > 0) keys += klen;
        if (vlen > 0) values += vlen;
        if (hlen > 0) headers += hlen;
    }
    return (int64_t)total;
}

int64_t shmlog_records_encode_fixed(uint8_t *dst, uint64_t dst_bytes, uint32_t count,
                                    const uint8_t *values, uint32_t value_bytes) {
    const uint64_t stride = SHMLOG_FIXED_RECORD_OVERHEAD_BYTES + (uint64_t)value_bytes;
    const uint64_t body = stride - 5; /* all but the padded length varint */
    if (count >= (1u << (7 * SHMLOG_FIXED_OFFSET_DELTA_BYTES - 1)) || value_bytes > 0x3fffffffu) return SHMLOG_ETOOBIG;
    if (!dst) return (int64_t)(stride * count);
    if (stride * count > dst_bytes) return SHMLOG_ESMALL;
    uint8_t *p = dst;
    for (uint32_t i = 0; i < count; i++) {
        p = varint_put_padded(p, zigzag((int64_t)body), 5);
        *p++ = 0; /* attributes */
        *p++ = 0; /* timestamp delta */
        p = varint_put_padded(p, zigzag(i), SHMLOG_FIXED_OFFSET_DELTA_BYTES);
        *p++ = 1; /* zigzag(-1): null key */
        p = varint_put_padded(p, zigzag(value_bytes), 5);
        memcpy(p, values + (uint64_t)i * value_bytes, value_bytes);
        p += value_bytes;
        *p++ = 0; /* no headers */
    }
    return (int64_t)(stride * count);
}

/* ---------------------------------------------------------------- records section: index */

/* shmlog_records_encode_fixed's layout, byte offsets within a record: the padded length, the
 * attributes and timestamp delta bytes, the padded offset delta, the null key, the padded
 * value length; then the value and the headers count (0). */
enum {
    FIXED_AT_OFFSET_DELTA = 7,
    FIXED_AT_KEY = FIXED_AT_OFFSET_DELTA + SHMLOG_FIXED_OFFSET_DELTA_BYTES,
    FIXED_AT_VALUE = FIXED_AT_KEY + 1 + 5
};

/* How many bytes the varint at p takes (0: more than max). */
static int varint_width(const uint8_t *p, int max) {
    for (int i = 0; i < max; i++)
        if (!(p[i] & 0x80)) return i + 1;
    return 0;
}

/* Whether the record just indexed (at rec, ending at rend, decoded into r) has exactly
 * shmlog_records_encode_fixed's field boundaries: then a record with the same bytes outside
 * its offset delta and value decodes the same but for those two. */
static int record_is_fixed(const uint8_t *rec, const uint8_t *rend, const shmlog_record_ref *r) {
    return varint_width(rec, 5) == 5 && varint_width(rec + 6, 1) == 1 &&
           varint_width(rec + FIXED_AT_OFFSET_DELTA, SHMLOG_FIXED_OFFSET_DELTA_BYTES) ==
               SHMLOG_FIXED_OFFSET_DELTA_BYTES &&
           rec[FIXED_AT_KEY] == 1 && varint_width(rec + FIXED_AT_KEY + 1, 5) == 5 && r->value_len >= 0 &&
           r->headers_count == 0 && rend == rec + FIXED_AT_VALUE + r->value_len + 1;
}

/* The records after `first` (a fixed-layout record, see record_is_fixed) that repeat its bytes
 * but for the offset delta and the value: each is what the general loop would decode from it,
 * so their refs are filled without decoding the rest again. Returns how many were indexed;
 * the general loop takes over at the first record that differs. */
static uint32_t records_index_fixed_run(const uint8_t *origin, const uint8_t *first, const uint8_t *end,
                                        uint32_t left, const shmlog_record_ref *template, int64_t base_offset,
                                        shmlog_record_ref *records) {
    const uint64_t stride = (uint64_t)FIXED_AT_VALUE + (uint64_t)template->value_len + 1;
    const uint8_t *p = first + stride;
    uint32_t n = 0;
    while (n < left && (uint64_t)(end - p) >= stride) {
        int64_t offset_delta;
        if (memcmp(p, first, FIXED_AT_OFFSET_DELTA) != 0 ||
            memcmp(p + FIXED_AT_KEY, first + FIXED_AT_KEY, FIXED_AT_VALUE - FIXED_AT_KEY) != 0 ||
            p[stride - 1] != 0 ||
            varint_get(p + FIXED_AT_OFFSET_DELTA, p + FIXED_AT_KEY, &offset_delta) != p + FIXED_AT_KEY)
            break;
        shmlog_record_ref *r = &records[n];
        *r = *template;
        r->key_pos = (int32_t)(p + FIXED_AT_VALUE - 5 - origin);
        r->value_pos = (int32_t)(p + FIXED_AT_VALUE - origin);
        r->headers_pos = (int32_t)(p + stride - origin);
        r->offset = base_offset + offset_delta;
        p += stride;
        n++;
    }
    return n;
}

/* Indexes `count` records laid out from p to end; positions are relative to origin.
 * Returns where the last record ended, or NULL when the framing does not validate. */
static const uint8_t *records_index_from(const uint8_t *origin, const uint8_t *p, const uint8_t *end,
                                         uint32_t count, int64_t base_offset, int64_t base_ts, int64_t max_ts,
                                         uint16_t attributes, shmlog_record_ref *records) {
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *rec = p;
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
        if (i + 1 < count && record_is_fixed(rec, rend, &records[i])) {
            uint32_t n = records_index_fixed_run(origin, rec, end, count - i - 1, &records[i], base_offset,
                                                 &records[i + 1]);
            i += n;
            p += (uint64_t)n * (uint64_t)(rend - rec);
        }
    }
    return p;
}

int64_t shmlog_batch_index(const uint8_t *batch, uint64_t batch_bytes, shmlog_record_ref *records,
                           uint32_t max_records, int check_crc) {
    int rc = shmlog_batch_verify(batch, batch_bytes, check_crc);
    if (rc) return rc;
    uint64_t length = batch_length_of(batch);
    uint32_t count = get_be32(batch + SHMLOG_BATCH_OFF_RECORD_COUNT);
    if (count > max_records) return SHMLOG_ESMALL;
    uint16_t attributes = batch_attributes(batch);
    if (attributes & SHMLOG_ATTR_COMPRESSION_MASK) return SHMLOG_ECORRUPT;
    int64_t base_offset = (int64_t)get_be64(batch + SHMLOG_BATCH_OFF_BASE_OFFSET);
    int64_t base_ts = (int64_t)get_be64(batch + SHMLOG_BATCH_OFF_BASE_TIMESTAMP);
    int64_t max_ts = (int64_t)get_be64(batch + SHMLOG_BATCH_OFF_MAX_TIMESTAMP);
    if (!records_index_from(batch, batch + SHMLOG_BATCH_HEADER_BYTES, batch + length, count, base_offset, base_ts,
                            max_ts, attributes, records))
        return SHMLOG_ECORRUPT;
    return count;
}

int shmlog_batch_check(const uint8_t *batch, uint64_t batch_bytes, uint64_t max_batch_bytes) {
    if (batch_bytes < SHMLOG_BATCH_HEADER_BYTES) return SHMLOG_BATCH_CORRUPT;
    if (batch[SHMLOG_BATCH_OFF_MAGIC] != SHMLOG_BATCH_MAGIC) return SHMLOG_BATCH_BAD_MAGIC;
    if (batch_bytes > max_batch_bytes) return SHMLOG_BATCH_TOO_LARGE;
    uint16_t attributes = batch_attributes(batch);
    if (attributes & SHMLOG_ATTR_CONTROL) return SHMLOG_BATCH_CONTROL;
    int64_t producer_id = (int64_t)get_be64(batch + SHMLOG_BATCH_OFF_PRODUCER_ID);
    int16_t producer_epoch = (int16_t)get_be16(batch + SHMLOG_BATCH_OFF_PRODUCER_EPOCH);
    int32_t base_sequence = (int32_t)get_be32(batch + SHMLOG_BATCH_OFF_BASE_SEQUENCE);
    if (producer_id >= 0 && (producer_epoch < 0 || base_sequence < 0)) return SHMLOG_BATCH_NO_EPOCH_OR_SEQUENCE;
    if ((attributes & SHMLOG_ATTR_TRANSACTIONAL) && producer_id < 0) return SHMLOG_BATCH_TRANSACTIONAL_WITHOUT_PRODUCER;
    int32_t count = batch_record_count(batch);
    int32_t last_delta = (int32_t)get_be32(batch + SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA);
    if (count < 1 || last_delta != count - 1) return SHMLOG_BATCH_COUNT_DISAGREES;
    if (attributes & SHMLOG_ATTR_COMPRESSION_MASK) return SHMLOG_BATCH_COMPRESSED;
    if ((uint64_t)count > batch_bytes) return SHMLOG_BATCH_COUNT_CANNOT_FIT;
    shmlog_record_ref *refs = malloc((size_t)count * sizeof *refs);
    if (!refs) return SHMLOG_ENOMEM;
    int64_t indexed = shmlog_batch_index(batch, batch_bytes, refs, (uint32_t)count, 1);
    free(refs);
    return indexed == count ? SHMLOG_BATCH_ACCEPTED : SHMLOG_BATCH_CORRUPT;
}

int64_t shmlog_records_index(const uint8_t *records_section, uint64_t records_bytes, uint32_t count,
                             int64_t base_offset, int64_t base_timestamp, int64_t max_timestamp,
                             uint16_t attributes, shmlog_record_ref *records, uint32_t max_records) {
    if (count > max_records) return SHMLOG_ESMALL;
    if (records_bytes > INT32_MAX) return SHMLOG_ETOOBIG; /* record refs hold int32 positions */
    const uint8_t *end = records_section + records_bytes;
    const uint8_t *last = records_index_from(records_section, records_section, end, count, base_offset,
                                             base_timestamp, max_timestamp, attributes, records);
    /* A decompressed records section holds exactly `count` records, as Kafka requires. */
    if (!last || last != end) return SHMLOG_ECORRUPT;
    return count;
}
