/* Ring geometry: the size of a ring's mapping, its initialisation, and opening it into the
 * process-local handle every other ring function takes. */
#include "core.h"

_Static_assert(sizeof(shmlog_ring_descriptor) == SHMLOG_CACHE_LINE, "descriptor is one line");
_Static_assert(sizeof(shmlog_ring_claim) == SHMLOG_CACHE_LINE, "claim is one line");
_Static_assert(sizeof(shmlog_ring_release) == SHMLOG_CACHE_LINE, "release is one line");
_Static_assert(sizeof(shmlog_ring_persist) == SHMLOG_CACHE_LINE, "persist is one line");
_Static_assert(sizeof(shmlog_ring_slots) == SHMLOG_CACHE_LINE, "slots is one line");
_Static_assert(sizeof(shmlog_producer_slot) == SHMLOG_CACHE_LINE, "slot is one line");
_Static_assert(sizeof(shmlog_pin_slot) == SHMLOG_CACHE_LINE, "pin is one line");
_Static_assert(sizeof(shmlog_sequence_record) == SHMLOG_CACHE_LINE, "sequence record is one line");
_Static_assert(sizeof(shmlog_ring_header) <= SHMLOG_RING_HEADER_BYTES, "header fits");
_Static_assert(offsetof(shmlog_ring_header, claim) % 16 == 0, "claim pair is 16-byte aligned");

static int capacity_is_valid(uint64_t capacity_bytes) {
    int power_of_two = capacity_bytes && !(capacity_bytes & (capacity_bytes - 1));
    return power_of_two && capacity_bytes >= SHMLOG_MIN_CAPACITY_BYTES && capacity_bytes <= SHMLOG_MAX_CAPACITY_BYTES;
}

static uint32_t index_shift_for(uint64_t capacity_bytes) {
    return (uint32_t)__builtin_ctzll(capacity_bytes / SHMLOG_INDEX_ENTRIES);
}

uint32_t shmlog_ring_default_slots(uint64_t capacity_bytes) {
    uint64_t n = capacity_bytes / SHMLOG_DEFAULT_SLOTS_RING_BYTES;
    return (uint32_t)(n < SHMLOG_DEFAULT_SLOTS_MIN ? SHMLOG_DEFAULT_SLOTS_MIN
                      : n > SHMLOG_DEFAULT_SLOTS_MAX ? SHMLOG_DEFAULT_SLOTS_MAX : n);
}

/* The fixed header, then the producer slots, the pins and the sequence records, padded to a page. */
static uint64_t header_bytes_for(uint32_t slot_count) {
    uint64_t tables = (uint64_t)slot_count *
                      (sizeof(shmlog_producer_slot) + sizeof(shmlog_pin_slot) + sizeof(shmlog_sequence_record));
    return SHMLOG_RING_HEADER_BYTES + ((tables + 4095) & ~(uint64_t)4095);
}

/* The publish marks padded to a page, so the data starts on one. */
static uint64_t marks_bytes_for(uint64_t capacity_bytes) {
    return (capacity_bytes / SHMLOG_FRAME_ALIGN * sizeof(shmlog_publish_mark) + 4095) & ~(uint64_t)4095;
}

static uint64_t map_bytes_for(uint64_t capacity_bytes, uint32_t slot_count) {
    return header_bytes_for(slot_count) + marks_bytes_for(capacity_bytes) + capacity_bytes;
}

uint64_t shmlog_ring_map_bytes(uint64_t capacity_bytes, uint32_t slot_count) {
    return map_bytes_for(capacity_bytes, slot_count ? slot_count : shmlog_ring_default_slots(capacity_bytes));
}

int shmlog_ring_init(void *map, uint64_t map_bytes, uint64_t capacity_bytes, uint32_t topic_id,
                     uint32_t partition, uint32_t leader_epoch, uint64_t start_offset, uint32_t slot_count) {
    if (!slot_count) slot_count = shmlog_ring_default_slots(capacity_bytes);
    if (!capacity_is_valid(capacity_bytes) || slot_count > SHMLOG_MAX_SLOTS ||
        map_bytes < map_bytes_for(capacity_bytes, slot_count))
        return SHMLOG_EBADHEADER;
    shmlog_ring_header *h = map;
    uint64_t header_bytes = header_bytes_for(slot_count);
    memset(h, 0, header_bytes);
    h->descriptor.layout_version = SHMLOG_LAYOUT_VERSION;
    h->descriptor.header_bytes = (uint32_t)header_bytes;
    h->descriptor.capacity_bytes = capacity_bytes;
    h->descriptor.created_unix_ns = now_realtime_ns();
    h->descriptor.topic_id = topic_id;
    h->descriptor.partition = partition;
    h->descriptor.leader_epoch = leader_epoch;
    h->descriptor.index_shift = index_shift_for(capacity_bytes);
    h->descriptor.start_offset = start_offset;
    h->slots.slot_count = slot_count;
    h->claim.next_offset = start_offset;
    h->persist.persisted_offset = start_offset;
    h->persist.flushed_offset = start_offset;
    h->persist.log_start_offset = start_offset;
    shmlog_pin_slot *pins = (shmlog_pin_slot *)((uint8_t *)map + SHMLOG_RING_HEADER_BYTES +
                                                (uint64_t)slot_count * sizeof(shmlog_producer_slot));
    for (uint32_t i = 0; i < slot_count; i++) pins[i].pin_position = UINT64_MAX;
    shmlog_sequence_record *sequences = (shmlog_sequence_record *)(pins + slot_count);
    for (uint32_t i = 0; i < slot_count; i++) sequences[i].producer_id = -1;
    /* Release: whoever acquires the magic (ring_validate) sees the header written above. */
    store_release(&h->descriptor.magic, SHMLOG_RING_MAGIC);
    return SHMLOG_OK;
}

/* Fills the geometry in from one read of each field: a descriptor changing under us cannot
 * pass validation with one value and be used with another. */
static int ring_validate(const shmlog_ring_header *h, uint64_t map_bytes, uint64_t *capacity_bytes,
                         uint32_t *index_shift, uint32_t *slot_count) {
    if (map_bytes < SHMLOG_RING_HEADER_BYTES) return SHMLOG_EBADHEADER;
    if (load_acquire(&h->descriptor.magic) != SHMLOG_RING_MAGIC) return SHMLOG_EBADHEADER;
    if (h->descriptor.layout_version != SHMLOG_LAYOUT_VERSION) return SHMLOG_EBADHEADER;
    uint64_t cap = h->descriptor.capacity_bytes;
    uint32_t shift = h->descriptor.index_shift;
    uint32_t slots = h->slots.slot_count;
    if (slots == 0 || slots > SHMLOG_MAX_SLOTS) return SHMLOG_EBADHEADER;
    if (h->descriptor.header_bytes != header_bytes_for(slots)) return SHMLOG_EBADHEADER;
    if (!capacity_is_valid(cap) || map_bytes < map_bytes_for(cap, slots)) return SHMLOG_EBADHEADER;
    if (shift != index_shift_for(cap)) return SHMLOG_EBADHEADER;
    *capacity_bytes = cap;
    *index_shift = shift;
    *slot_count = slots;
    return SHMLOG_OK;
}

/* The geometry is read from shared memory once, here, and validated: a writer scribbling on
 * the shared descriptor later cannot make us divide by zero or index outside the mapping. */
int shmlog_ring_open(shmlog_ring_handle *ring, void *map, uint64_t map_bytes) {
    shmlog_ring_header *h = map;
    uint64_t capacity_bytes;
    uint32_t index_shift, slot_count;
    int rc = ring_validate(h, map_bytes, &capacity_bytes, &index_shift, &slot_count);
    if (rc) return rc;
    uint8_t *base = map;
    ring->header = h;
    ring->capacity_bytes = capacity_bytes;
    ring->index_shift = index_shift;
    ring->slot_count = slot_count;
    ring->producers = (shmlog_producer_slot *)(base + SHMLOG_RING_HEADER_BYTES);
    ring->pins = (shmlog_pin_slot *)(base + SHMLOG_RING_HEADER_BYTES + (uint64_t)slot_count * sizeof(shmlog_producer_slot));
    ring->sequences = (shmlog_sequence_record *)(ring->pins + slot_count);
    ring->publish_marks = (shmlog_publish_mark *)(base + header_bytes_for(slot_count));
    ring->data = base + map_bytes_for(capacity_bytes, slot_count) - capacity_bytes;
    ring->data_offset = (uint64_t)(ring->data - base);
    ring->next_sequence = 0;
    ring->last_base_sequence = -1;
    ring->last_log_append_time = -1;
    return SHMLOG_OK;
}
