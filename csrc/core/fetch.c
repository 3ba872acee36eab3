/* Reading: where a ring ends and starts, locating an offset, and fetching published batches.
 *
 * A reader acquire-loads a frame's publish mark, checks the frame word (lap, bounds) and that
 * the batch's base offset is the one it expects (dense offsets), copies the batch, then after
 * an acquire fence re-reads the tail: if the tail has passed start + capacity the bytes may
 * have been reused mid-copy and the fetch returns SHMLOG_EOVERWRITTEN. A copy is checked
 * (base offset, count, CRC) as copied, not as it was in shared memory before: any process
 * mapping the ring can write into it, and what a caller reads must be what was checked. */
#include "core.h"

void shmlog_ring_end(const shmlog_ring_handle *ring, shmlog_cursor *out) {
    const shmlog_ring_header *h = ring->header;
    for (;;) { /* the pair is written by one 16-byte CAS: re-read until both halves agree */
        uint64_t pos = load_acquire(&h->claim.tail_position);
        uint64_t off = load_acquire(&h->claim.next_offset);
        if (load_acquire(&h->claim.tail_position) == pos) {
            out->position = pos;
            out->next_offset = off;
            return;
        }
    }
}

/* The fence orders the caller's reads of ring bytes before the tail load. */
int ring_still_intact(const shmlog_ring_handle *ring, uint64_t position) {
    fence_acquire();
    return load_relaxed(&ring->header->claim.tail_position) <= position + ring->capacity_bytes;
}

/* The offset below which readers may see batches: everything in a ring of one replica. */
static uint64_t visible_end(const shmlog_ring_handle *ring, int flags) {
    if ((flags & SHMLOG_FETCH_PAST_HIGH_WATERMARK) || load_acquire(&ring->header->replication.replica_count) <= 1)
        return UINT64_MAX;
    return load_acquire(&ring->header->persist.flushed_offset);
}

int shmlog_ring_readable(const shmlog_ring_handle *ring, const shmlog_cursor *cursor) {
    if (frame_is_published(ring, cursor->position)) return cursor->next_offset < visible_end(ring, 0);
    return !ring_still_intact(ring, cursor->position);
}

void shmlog_ring_wake_readers(const shmlog_ring_handle *ring, shmlog_doorbell *doorbell) {
    if (doorbell) doorbell_ring_watchers(ring, doorbell);
}

int shmlog_ring_has_data(const shmlog_ring_handle *ring, uint64_t position) {
    if (frame_is_published(ring, position)) return 1;
    return !ring_still_intact(ring, position);
}

/* The frame at position, validated: its length (> 0) and padding flag, or a negative status. */
static int64_t frame_read_length(const shmlog_ring_handle *ring, uint64_t position, int *padding) {
    uint64_t word = load_relaxed(ring_frame_word(ring, position));
    uint32_t length = (uint32_t)(word & SHMLOG_FRAME_LENGTH_MASK);
    if ((uint32_t)(word >> 32) != ring_lap_of(ring, position) || length < SHMLOG_FRAME_ALIGN ||
        length % SHMLOG_FRAME_ALIGN || length > ring->capacity_bytes - ring_index_of(ring, position))
        return SHMLOG_ECORRUPT;
    *padding = (word & SHMLOG_FRAME_PADDING_FLAG) != 0;
    return length;
}

/* A status about the bytes at cursor->position stands only if they were not reused meanwhile. */
static int64_t fetch_fail(const shmlog_ring_handle *ring, shmlog_cursor *cursor, uint64_t start, uint64_t pos,
                          int64_t status) {
    if (!ring_still_intact(ring, start)) return SHMLOG_EOVERWRITTEN;
    cursor->position = pos;
    return status;
}

int64_t shmlog_ring_fetch(const shmlog_ring_handle *ring, shmlog_cursor *cursor, uint8_t *dst,
                          uint64_t dst_bytes, shmlog_frame_ref *frames, uint32_t max_frames, int check_crc) {
    uint64_t start = cursor->position, pos = start, next_offset = cursor->next_offset, used = 0;
    const uint64_t limit = visible_end(ring, check_crc);
    uint32_t n = 0;
    if (!ring_still_intact(ring, start)) return SHMLOG_EOVERWRITTEN;
    while (n < max_frames) {
        if (!frame_is_published(ring, pos)) break;
        int padding;
        int64_t length = frame_read_length(ring, pos, &padding);
        if (length < 0) return fetch_fail(ring, cursor, start, pos, SHMLOG_ECORRUPT);
        if (padding) {
            pos += (uint64_t)length;
            continue;
        }
        const uint8_t *batch = ring_frame_batch(ring, pos);
        uint64_t room = (uint64_t)length - SHMLOG_FRAME_PREFIX_BYTES;
        int rc = shmlog_batch_verify(batch, room, 0);
        if (rc) return fetch_fail(ring, cursor, start, pos, rc);
        uint64_t batch_bytes = batch_length_of(batch);
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
            if (shmlog_batch_verify(checked, batch_bytes, 0) || batch_length_of(checked) != batch_bytes)
                return fetch_fail(ring, cursor, start, pos, SHMLOG_ECORRUPT);
        }
        uint64_t base = get_be64(checked + SHMLOG_BATCH_OFF_BASE_OFFSET);
        if (base != next_offset) return fetch_fail(ring, cursor, start, pos, SHMLOG_ECORRUPT);
        uint64_t count = (uint64_t)get_be32(checked + SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA) + 1;
        if (base + count > limit) break; /* above the high watermark: a failover could take it back */
        if ((check_crc & SHMLOG_FETCH_CHECK_CRC) && shmlog_batch_verify(checked, batch_bytes, 1) != SHMLOG_OK)
            return fetch_fail(ring, cursor, start, pos, SHMLOG_ECRC);
        frames[n].map_pos = ring->data_offset + ring_index_of(ring, pos) + SHMLOG_FRAME_PREFIX_BYTES;
        frames[n].dst_pos = used;
        frames[n].base_offset = base;
        frames[n].batch_bytes = (uint32_t)batch_bytes;
        frames[n].record_count = (uint32_t)count;
        n++;
        used += dst ? batch_bytes : 0;
        pos += (uint64_t)length;
        next_offset = base + count;
    }
    if (!ring_still_intact(ring, start)) return SHMLOG_EOVERWRITTEN;
    cursor->position = pos;
    cursor->next_offset = next_offset;
    return n;
}

/* ---------------------------------------------------------------- the offset index */

/* A valid (position, offset) pair from the index that is still in the ring. */
static int offset_index_entry_read(const shmlog_ring_handle *ring, const shmlog_index_entry *e, shmlog_cursor *out) {
    uint64_t pos = load_relaxed(&e->position), off = load_relaxed(&e->offset);
    int padding;
    if (pos % SHMLOG_FRAME_ALIGN || !ring_still_intact(ring, pos) || !frame_is_published(ring, pos)) return 0;
    int64_t length = frame_read_length(ring, pos, &padding);
    if (length < SHMLOG_FRAME_PREFIX_BYTES + SHMLOG_BATCH_HEADER_BYTES || padding) return 0;
    if (get_be64(ring_frame_batch(ring, pos) + SHMLOG_BATCH_OFF_BASE_OFFSET) != off) return 0;
    if (!ring_still_intact(ring, pos)) return 0;
    out->position = pos;
    out->next_offset = off;
    return 1;
}

void shmlog_ring_start(const shmlog_ring_handle *ring, shmlog_cursor *out) {
    const shmlog_ring_header *h = ring->header;
    shmlog_ring_end(ring, out);
    shmlog_cursor c;
    for (int i = 0; i < SHMLOG_INDEX_ENTRIES; i++)
        if (offset_index_entry_read(ring, &h->index[i], &c) && c.next_offset < out->next_offset) *out = c;
}

/* From an index entry on to the batch holding offset: the batches wholly below it are passed
 * over, none copied. A frame the walk cannot pass (not published yet, above the high watermark,
 * corrupt, overwritten) stops it there, still at or before offset: the reader's fetch from the
 * cursor meets the same frame and reports it. */
static void cursor_pass_batches_below(const shmlog_ring_handle *ring, shmlog_cursor *c, uint64_t offset) {
    shmlog_frame_ref frame;
    for (;;) {
        shmlog_cursor next = *c;
        if (shmlog_ring_fetch(ring, &next, NULL, 0, &frame, 1, 0) != 1) return;
        if (frame.base_offset + frame.record_count > offset) return;
        *c = next;
    }
}

int shmlog_ring_locate(const shmlog_ring_handle *ring, uint64_t offset, shmlog_cursor *out) {
    const shmlog_ring_header *h = ring->header;
    shmlog_cursor end, best = {0, 0}, c;
    int found = 0;
    shmlog_ring_end(ring, &end);
    if (offset >= end.next_offset) {
        *out = end;
        return offset == end.next_offset ? SHMLOG_OK : SHMLOG_EAGAIN;
    }
    for (int i = 0; i < SHMLOG_INDEX_ENTRIES; i++) {
        if (offset_index_entry_read(ring, &h->index[i], &c) && c.next_offset <= offset &&
            (!found || c.next_offset > best.next_offset)) {
            best = c;
            found = 1;
        }
    }
    if (!found) return SHMLOG_EOVERWRITTEN;
    cursor_pass_batches_below(ring, &best, offset);
    *out = best;
    return SHMLOG_OK;
}

/* ---------------------------------------------------------------- one partition of a Kafka Fetch */

static uint64_t partition_high_watermark(const shmlog_ring_handle *ring, const shmlog_cursor *end) {
    if (load_acquire(&ring->header->replication.replica_count) > 1)
        return load_acquire(&ring->header->persist.flushed_offset);
    return end->next_offset;
}

/* Keeps the fetched frames [from, n) that start below below_offset and end within max_bytes of
 * dst (the first batch of a response whatever its size); *kept_bytes grows, returns how many. */
static int64_t partition_fetch_keep(const shmlog_frame_ref *frames, int64_t n, const uint8_t *dst,
                                    uint64_t below_offset, uint64_t max_bytes, shmlog_partition_fetch *io) {
    int64_t k = 0;
    for (; k < n; k++) {
        uint64_t stop = frames[k].dst_pos + frames[k].batch_bytes;
        if (frames[k].base_offset >= below_offset || (io->records_bytes && stop > max_bytes)) break;
        io->transactional |= (batch_attributes(dst + frames[k].dst_pos) & SHMLOG_ATTR_TRANSACTIONAL) != 0;
        io->records_bytes = stop;
    }
    return k;
}

int64_t shmlog_ring_fetch_partition(const shmlog_ring_handle *ring, shmlog_partition_fetch *io, uint8_t *dst,
                                    uint64_t dst_bytes, shmlog_frame_ref *frames, uint32_t max_frames) {
    shmlog_ring_end(ring, &io->end); /* before the watermarks: a batch appended after it wakes a wait on it */
    io->log_start_offset = load_acquire(&ring->header->persist.log_start_offset);
    io->high_watermark = partition_high_watermark(ring, &io->end);
    uint64_t txn[3];
    shmlog_ring_txn_state(ring, txn);
    io->last_stable_offset = txn[0] && txn[0] - 1 < io->high_watermark ? txn[0] - 1 : io->high_watermark;
    io->records_bytes = 0;
    io->whole = io->transactional = io->out_of_range = 0;
    int64_t offset = io->fetch_offset;
    if (offset < (int64_t)io->log_start_offset || offset > (int64_t)io->high_watermark) {
        io->out_of_range = 1;
        return 0;
    }
    uint64_t readable = io->read_committed ? io->last_stable_offset : io->high_watermark;
    if ((uint64_t)offset >= readable || !io->max_bytes) return 0;
    io->next = io->hint;
    if (io->hint.next_offset != (uint64_t)offset || !io->hint_valid) {
        int rc = shmlog_ring_locate(ring, (uint64_t)offset, &io->next);
        if (rc) return SHMLOG_EOVERWRITTEN; /* below the ring: the segment files hold it */
    }
    int64_t n = shmlog_ring_fetch(ring, &io->next, dst, dst_bytes, frames, max_frames, 0);
    if (n == SHMLOG_ESMALL) io->needed_bytes = frames[0].batch_bytes;
    while (n > 0) {
        if (partition_fetch_keep(frames, n, dst, readable, io->max_bytes, io) < n) return (int64_t)io->records_bytes;
        if (n < (int64_t)max_frames || io->records_bytes >= io->max_bytes || io->records_bytes >= dst_bytes) break;
        n = shmlog_ring_fetch(ring, &io->next, dst + io->records_bytes, dst_bytes - io->records_bytes, frames,
                              max_frames, 0);
        for (int64_t i = 0; i < n; i++) frames[i].dst_pos += io->records_bytes;
    }
    if (n < 0 && n != SHMLOG_EAGAIN) return io->records_bytes ? (int64_t)io->records_bytes : n;
    io->whole = 1; /* nothing more published after the batches kept: the reader reads on at next */
    return (int64_t)io->records_bytes;
}
