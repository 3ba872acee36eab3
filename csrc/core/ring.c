/* Ring geometry: the size of a ring's mapping, its initialisation, and opening it into the
 * process-local handle every other ring function takes. */
#include "core.h"

_Static_assert(sizeof(shmlog_ring_descriptor) == SHMLOG_CACHE_LINE, "descriptor is one line");
_Static_assert(sizeof(shmlog_ring_claim) == SHMLOG_CACHE_LINE, "claim is one line");
_Static_assert(sizeof(shmlog_ring_release) == SHMLOG_CACHE_LINE, "release is one line");
_Static_assert(sizeof(shmlog_ring_persist) == SHMLOG_CACHE_LINE, "persist is one line");
_Static_assert(sizeof(shmlog_producer_slot) == SHMLOG_CACHE_LINE, "slot is one line");
_Static_assert(sizeof(shmlog_pin_slot) == SHMLOG_CACHE_LINE, "pin is one line");
_Static_assert(sizeof(shmlog_ring_header) <= SHMLOG_RING_HEADER_BYTES, "header fits");
_Static_assert(offsetof(shmlog_ring_header, claim) % 16 == 0, "claim pair is 16-byte aligned");

static int capacity_is_valid(uint64_t capacity_bytes) {
    int power_of_two = capacity_bytes && !(capacity_bytes & (capacity_bytes - 1));
    return power_of_two && capacity_bytes >= SHMLOG_MIN_CAPACITY_BYTES && capacity_bytes <= SHMLOG_MAX_CAPACITY_BYTES;
}

static uint32_t index_shift_for(uint64_t capacity_bytes) {
    return (uint32_t)__builtin_ctzll(capacity_bytes / SHMLOG_INDEX_ENTRIES);
}

uint64_t shmlog_ring_map_bytes(uint64_t capacity_bytes) {
    return SHMLOG_RING_HEADER_BYTES + capacity_bytes / SHMLOG_FRAME_ALIGN * sizeof(uint32_t) + capacity_bytes;
}

int shmlog_ring_init(void *map, uint64_t map_bytes, uint64_t capacity_bytes, uint32_t topic_id,
                     uint32_t partition, uint32_t leader_epoch, uint64_t start_offset) {
    if (!capacity_is_valid(capacity_bytes) || map_bytes < shmlog_ring_map_bytes(capacity_bytes))
        return SHMLOG_EBADHEADER;
    shmlog_ring_header *h = map;
    memset(h, 0, SHMLOG_RING_HEADER_BYTES);
    h->descriptor.layout_version = SHMLOG_LAYOUT_VERSION;
    h->descriptor.header_bytes = SHMLOG_RING_HEADER_BYTES;
    h->descriptor.capacity_bytes = capacity_bytes;
    h->descriptor.created_unix_ns = now_realtime_ns();
    h->descriptor.topic_id = topic_id;
    h->descriptor.partition = partition;
    h->descriptor.leader_epoch = leader_epoch;
    h->descriptor.index_shift = index_shift_for(capacity_bytes);
    h->descriptor.start_offset = start_offset;
    h->claim.next_offset = start_offset;
    h->persist.persisted_offset = start_offset;
    h->persist.flushed_offset = start_offset;
    h->persist.log_start_offset = start_offset;
    for (int i = 0; i < SHMLOG_PIN_SLOTS; i++) h->pins[i].pin_position = UINT64_MAX;
    /* Release: whoever acquires the magic (ring_validate) sees the header written above. */
    store_release(&h->descriptor.magic, SHMLOG_RING_MAGIC);
    return SHMLOG_OK;
}

/* Fills the geometry in from one read of each field: a descriptor changing under us cannot
 * pass validation with one value and be used with another. */
static int ring_validate(const shmlog_ring_header *h, uint64_t map_bytes, uint64_t *capacity_bytes,
                         uint32_t *index_shift) {
    if (map_bytes < SHMLOG_RING_HEADER_BYTES) return SHMLOG_EBADHEADER;
    if (load_acquire(&h->descriptor.magic) != SHMLOG_RING_MAGIC) return SHMLOG_EBADHEADER;
    if (h->descriptor.layout_version != SHMLOG_LAYOUT_VERSION) return SHMLOG_EBADHEADER;
    if (h->descriptor.header_bytes != SHMLOG_RING_HEADER_BYTES) return SHMLOG_EBADHEADER;
    uint64_t cap = h->descriptor.capacity_bytes;
    uint32_t shift = h->descriptor.index_shift;
    if (!capacity_is_valid(cap) || map_bytes < shmlog_ring_map_bytes(cap)) return SHMLOG_EBADHEADER;
    if (shift != index_shift_for(cap)) return SHMLOG_EBADHEADER;
    *capacity_bytes = cap;
    *index_shift = shift;
    return SHMLOG_OK;
}

/* The geometry is read from shared memory once, here, and validated: a writer scribbling on
 * the shared descriptor later cannot make us divide by zero or index outside the mapping. */
int shmlog_ring_open(shmlog_ring_handle *ring, void *map, uint64_t map_bytes) {
    shmlog_ring_header *h = map;
    uint64_t capacity_bytes;
    uint32_t index_shift;
    int rc = ring_validate(h, map_bytes, &capacity_bytes, &index_shift);
    if (rc) return rc;
    ring->header = h;
    ring->capacity_bytes = capacity_bytes;
    ring->index_shift = index_shift;
    ring->publish_marks = (uint32_t *)((uint8_t *)map + SHMLOG_RING_HEADER_BYTES);
    ring->data = (uint8_t *)map + shmlog_ring_map_bytes(ring->capacity_bytes) - ring->capacity_bytes;
    ring->data_offset = (uint64_t)(ring->data - (uint8_t *)map);
    return SHMLOG_OK;
}
