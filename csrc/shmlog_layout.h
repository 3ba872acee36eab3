/*
 * shmlog shared-memory layout: the one place that defines the bytes every
 * process maps. Python's view (shmlog/_native/layout.py) is checked against this file
 * by tests/unit/test_layout.py through cffi's offsetof/sizeof.
 *
 * A partition ring is one POSIX shared-memory object:
 *
 *   0                                                          SHMLOG_RING_HEADER_BYTES
 *   +-----------------------------------------------------------+
 *   | descriptor        (cache line 0, written once at init)    |
 *   | claim             (tail position + next offset, 16B CAS)  |  line 1
 *   | release           (release position, busy flag, futex)    |  line 2
 *   | persist           (persisted/flushed positions, futex)    |  line 3
 *   | waiter_mask[4]    (doorbell slots waiting on this ring)   |  line 4
 *   | slots             (slot count, slots used so far)         |  line 5
 *   | txn               (last stable offset, aborted txn count) |  line 6
 *   | offset index      [SHMLOG_INDEX_ENTRIES] x 16B            |
 *   | replication       (ISR size, min ISR, followers' fsynced) |  2 lines
 *   +-----------------------------------------------------------+ 20 KiB
 *   | producer slots    [slot_count] x 64B                      |
 *   | reader pins       [slot_count] x 64B                      |
 *   | sequence records  [slot_count] x 64B (idempotence)        |
 *   | (page padding)                                            |
 *   +-----------------------------------------------------------+ header_bytes
 *   | publish marks: u8 per 64-byte block of data (page padded) |
 *   +-----------------------------------------------------------+ + capacity/64
 *   | data: capacity_bytes (power of two), frames never wrap    |
 *   +-----------------------------------------------------------+
 *
 * slot_count is fixed when the ring is created (the topic's ring.slots; by default
 * capacity / 64 KiB within 64..1024, so the slot tables are at most 3/1024 of the ring and
 * a 64 KiB ring is no larger than before), 1..SHMLOG_MAX_SLOTS. Slots are taken lowest
 * first and slots.producers_used / pins_used only grow: every scan of the tables (the
 * releaser's pin scan on each release, repairers) stops there, not at slot_count.
 *
 * A frame starts at a 64-byte aligned position (its own cache line):
 *
 *   0        4        8                                   length
 *   +--------+--------+------------------------------------+
 *   | length |  lap   | Kafka RecordBatch v2 (big-endian) ... pad to 64
 *   +--------+--------+------------------------------------+
 *   frame word (u64): bits 0-30 frame length, bit 31 padding flag, bits 32-63
 *   lap = position / capacity. The frame is published when the publish mark of
 *   its first block holds the lap's mark, lap mod 255 + 1 (release store after the
 *   frame is written). Marks live outside the data, so no payload byte can ever look
 *   published; every owner re-marks its frame's blocks (start the lap's mark,
 *   interior 0) each lap.
 *
 * Positions and offsets only grow. A producer may claim bytes up to
 * release_position + capacity; the releaser (persister) advances
 * release_position after persisting and after honouring reader pins and
 * fenced claims (a stalled producer that was passed may still write its
 * records section until it sees the fence, so its region is not reused).
 *
 * Producer slot states: IDLE -> CLAIMING (intent) -> OWNED (claim CAS won) ->
 * COMMITTING (commit CAS won: only now may the owner write the frame word,
 * batch header or publish mark) -> IDLE. A repairer moves OWNED (or a dead
 * owner's CLAIMING/COMMITTING) to FENCED and publishes an empty control batch
 * in its place; FENCED -> IDLE only by a CAS that also lowers fenced_claims.
 * The slot's state word holds the state in bits 0-2 and the claim generation in
 * bits 3-31, raised with every intent: a repairer's fence CAS expects the word
 * it read with the intent, so it can only fence that claim, never the owner's
 * next one (the intent it read is the fenced claim's, and stays so).
 *
 * Sequence record i belongs to whoever holds producer slot i: an idempotent producer's id,
 * epoch and the sequence of the last record it appended to this ring through that slot. Only
 * the slot's owner writes it (csrc/core/append.c checks each idempotent batch against it,
 * docs/exactly-once.md); producer_id -1 means "not idempotent / free".
 *
 * The broker doorbell is a second object: SHMLOG_DOORBELL_SLOTS futex words a
 * blocked consumer sleeps on; a ring's waiter_mask says whom to wake.
 *
 * A stopping broker closes each ring (descriptor.closed, csrc/core/close.c) before it drains
 * and unlinks it: a producer that finds it closed claims nothing (SHMLOG_ECLOSED).
 */
#ifndef SHMLOG_LAYOUT_H
#define SHMLOG_LAYOUT_H

#include <stdint.h>

#define SHMLOG_CACHE_LINE 64
#define SHMLOG_RING_MAGIC 0x31304c4f474d4853ULL /* "SHMLOG01" */
#define SHMLOG_DOORBELL_MAGIC 0x4c4c4542474d4853ULL /* "SHMGBELL" */
#define SHMLOG_LAYOUT_VERSION 5 /* 3: sequence records; 4: replication lines; 5: one-byte publish marks */
#define SHMLOG_RING_HEADER_BYTES 20480 /* the fixed part; the slot tables follow it */
#define SHMLOG_DEFAULT_SLOTS_MIN 64
#define SHMLOG_DEFAULT_SLOTS_MAX 1024
#define SHMLOG_DEFAULT_SLOTS_RING_BYTES 65536 /* one default slot per this many ring bytes */
#define SHMLOG_MAX_SLOTS 65536
#define SHMLOG_INDEX_ENTRIES 1024
#define SHMLOG_MAX_REPLICAS 8 /* replication.factor's upper bound: the replication lines hold one word each */
#define SHMLOG_DOORBELL_SLOTS 256
#define SHMLOG_WAITER_WORDS (SHMLOG_DOORBELL_SLOTS / 64)
#define SHMLOG_FRAME_ALIGN 64
#define SHMLOG_FRAME_PREFIX_BYTES 8
#define SHMLOG_FRAME_PADDING_FLAG 0x80000000u
#define SHMLOG_FRAME_LENGTH_MASK 0x7fffffffu
typedef uint8_t shmlog_publish_mark; /* one per SHMLOG_FRAME_ALIGN bytes of data */
#define SHMLOG_MIN_CAPACITY_BYTES 65536ULL
#define SHMLOG_MAX_CAPACITY_BYTES (1ULL << 40)
/* descriptor.flags. MEMORY_ONLY: the topic's shmlog.persist=false. No persister tails the ring;
 * a producer short of space releases what is published itself (shmlog_ring_release_published),
 * so the ring is overwritten as it wraps and a reader that falls behind it finds nothing on
 * disk (docs/durability.md, "Memory-only topics"). Was descriptor.reserved (always 0). */
#define SHMLOG_RING_FLAG_MEMORY_ONLY 1u
/* LOG_APPEND_TIME: the topic's message.timestamp.type=LogAppendTime. Every batch appended (not a
 * transaction marker) is stamped as Kafka's broker stamps it: the LogAppendTime attribute, and
 * maxTimestamp set to the clock at the append; readers give each of its records that time.
 * The supervisor sets and clears it while the ring is in use (shmlog_ring_set_log_append_time). */
#define SHMLOG_RING_FLAG_LOG_APPEND_TIME 2u

/* Kafka RecordBatch v2 header, big-endian on the wire. */
#define SHMLOG_BATCH_HEADER_BYTES 61
#define SHMLOG_BATCH_OFF_BASE_OFFSET 0
#define SHMLOG_BATCH_OFF_LENGTH 8
#define SHMLOG_BATCH_OFF_LEADER_EPOCH 12
#define SHMLOG_BATCH_OFF_MAGIC 16
#define SHMLOG_BATCH_OFF_CRC 17
#define SHMLOG_BATCH_OFF_ATTRIBUTES 21
#define SHMLOG_BATCH_OFF_LAST_OFFSET_DELTA 23
#define SHMLOG_BATCH_OFF_BASE_TIMESTAMP 27
#define SHMLOG_BATCH_OFF_MAX_TIMESTAMP 35
#define SHMLOG_BATCH_OFF_PRODUCER_ID 43
#define SHMLOG_BATCH_OFF_PRODUCER_EPOCH 51
#define SHMLOG_BATCH_OFF_BASE_SEQUENCE 53
#define SHMLOG_BATCH_OFF_RECORD_COUNT 57
#define SHMLOG_BATCH_MAGIC 2
#define SHMLOG_ATTR_COMPRESSION_MASK 0x07
#define SHMLOG_ATTR_LOG_APPEND_TIME 0x08
#define SHMLOG_ATTR_TRANSACTIONAL 0x10
#define SHMLOG_ATTR_CONTROL 0x20
#define SHMLOG_FIXED_OFFSET_DELTA_BYTES 4

#define SHMLOG_SLOT_STATE_MASK 0x7u
#define SHMLOG_SLOT_GENERATION_SHIFT 3

enum shmlog_slot_state {
    SHMLOG_SLOT_IDLE = 0,
    SHMLOG_SLOT_CLAIMING = 1, /* intent written, claim CAS not yet known to have won */
    SHMLOG_SLOT_OWNED = 2,    /* claim won, frame not yet published; a repairer may fence it */
    SHMLOG_SLOT_FENCED = 3,   /* claim repaired by another process; its owner has not yet seen it */
    SHMLOG_SLOT_COMMITTING = 4, /* owner won the commit CAS: writing header and publish mark */
};

enum shmlog_status {
    SHMLOG_OK = 0,
    SHMLOG_EAGAIN = -1,      /* nothing (more) published yet */
    SHMLOG_EFULL = -2,       /* ring has no unpersisted space before the deadline */
    SHMLOG_ETOOBIG = -3,     /* frame larger than the ring */
    SHMLOG_ECORRUPT = -4,    /* bytes in shared memory fail validation */
    SHMLOG_EOVERWRITTEN = -5,/* position fell behind the ring while reading */
    SHMLOG_EBADHEADER = -6,  /* ring header magic/version/geometry invalid */
    SHMLOG_ECRC = -7,        /* batch CRC32C mismatch */
    SHMLOG_ENOSLOT = -8,     /* every slot taken */
    SHMLOG_EFENCED = -9,     /* our claim was repaired away */
    SHMLOG_ESMALL = -10,     /* destination buffer too small */
    SHMLOG_ECLOSED = -11,    /* the broker closed the ring (it is stopping): nothing more is claimed */
    SHMLOG_EDUPLICATE = -12, /* idempotent batch already appended (sequence not above the last): nothing appended */
    SHMLOG_ESEQUENCE = -13,  /* idempotent batch leaves a gap after the last sequence: nothing appended */
    SHMLOG_EEPOCH = -14,     /* idempotent batch's producer epoch is older than one already seen: fenced */
    SHMLOG_ENOTENOUGHREPLICAS = -15, /* fewer in-sync replicas than min.insync.replicas (acks=all) */
    SHMLOG_EUNKNOWNPRODUCER = -16, /* idempotent batch's first sequence is not 0 and the record has no state of it */
    SHMLOG_ENOMEM = -17,     /* no memory for the work (a check's scratch space) */
};

/* What the supervisor says of itself in the doorbell (broker_state). A stopping broker closes
 * every ring first (shmlog_ring_close), then drains them to disk, then unlinks them. */
enum shmlog_broker_state {
    SHMLOG_BROKER_RUNNING = 0,
    SHMLOG_BROKER_STOPPING = 1, /* rings closed: nothing more is published; the persister drains */
    SHMLOG_BROKER_STOPPED = 2,  /* drained: everything ever published is in the segment files */
};

typedef struct shmlog_ring_descriptor {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_bytes;
    uint64_t capacity_bytes;
    uint64_t created_unix_ns;
    uint32_t topic_id;
    uint32_t partition;
    uint32_t leader_epoch;
    uint32_t index_shift;
    uint64_t start_offset;
    uint32_t closed;   /* set once, seq_cst, by a stopping broker (shmlog_ring_close); never cleared */
    uint32_t flags;    /* SHMLOG_RING_FLAG_*, written by the supervisor: MEMORY_ONLY before anyone else maps
                        * the ring, LOG_APPEND_TIME at any time (atomically) */
} shmlog_ring_descriptor;

typedef struct shmlog_ring_claim {
    uint64_t tail_position; /* 16-byte aligned: the pair is one cmpxchg16b */
    uint64_t next_offset;
    uint8_t pad[SHMLOG_CACHE_LINE - 16];
} shmlog_ring_claim;

typedef struct shmlog_ring_release {
    uint64_t release_position;
    uint64_t release_busy; /* non-zero while a releaser reads the pins */
    uint32_t space_futex;
    uint32_t space_waiters;
    uint32_t fenced_claims; /* producer slots in FENCED: the releaser then holds at their claims */
    uint32_t reserved;
    uint8_t pad[SHMLOG_CACHE_LINE - 32];
} shmlog_ring_release;

typedef struct shmlog_ring_persist {
    uint64_t persisted_position;
    uint64_t persisted_offset;
    uint64_t flushed_offset;
    uint64_t log_start_offset;
    uint32_t persist_futex;
    uint32_t persist_waiters;
    uint32_t persister_pid;
    uint32_t storage_error;
    uint32_t persister_slot; /* doorbell slot + 1 the persister sleeps on (0: none); see persister_wake */
    uint32_t reserved;
    uint64_t flush_requested_offset; /* acks=all producers that do not wait want fdatasync up to here */
} shmlog_ring_persist;

typedef struct shmlog_ring_waiters {
    uint64_t waiter_mask[SHMLOG_WAITER_WORDS];
    uint8_t pad[SHMLOG_CACHE_LINE - 8 * SHMLOG_WAITER_WORDS];
} shmlog_ring_waiters;

typedef struct shmlog_ring_slots {
    uint32_t slot_count;     /* producer slots, and as many reader pins (written once at init) */
    uint32_t producers_used; /* 1 + the highest producer slot ever taken: scans stop here */
    uint32_t pins_used;      /* 1 + the highest pin ever taken */
    uint32_t reserved;
    uint8_t pad[SHMLOG_CACHE_LINE - 16];
} shmlog_ring_slots;

/* Transactions on the partition, kept by the supervisor's transaction service
 * (shmlog/broker/txn_service.py, through csrc/core/txn.c) and read by read_committed readers:
 * first_unstable_plus1 is 0 while no transaction is open on the partition, else 1 + the lowest
 * offset an open one may have records at (the last stable offset, when below the log end);
 * aborted_count is how many entries were ever appended to the partition's aborted.txnindex
 * (only grows, trims included: shmlog/log/control_record.py; a reader re-reads the file when it
 * changes: it is written before the count, the count before the ABORT marker);
 * txn_seen is non-zero once a transaction has touched the partition in the ring's life
 * (read_committed readers of a ring without one read it like read_uncommitted ones). */
typedef struct shmlog_ring_txn {
    uint64_t first_unstable_plus1;
    uint64_t aborted_count;
    uint64_t txn_seen;
    uint8_t pad[SHMLOG_CACHE_LINE - 24];
} shmlog_ring_txn;

typedef struct shmlog_producer_slot {
    uint32_t pid;
    uint32_t state;
    uint64_t pid_start_time;
    uint64_t claim_position;
    uint64_t claim_offset;
    uint32_t claim_frame_bytes;
    uint32_t claim_record_count;
    uint64_t claim_unix_ns;
    uint64_t owner_token;
    uint8_t pad[SHMLOG_CACHE_LINE - 56];
} shmlog_producer_slot;

/* A sequence passed as this to an append means "the one after the last" (the producer's
 * normal path); any other base_sequence >= 0 is checked (a resend). */
#define SHMLOG_SEQUENCE_NEXT (-2)

typedef struct shmlog_sequence_record {
    int64_t producer_id;     /* -1: the slot's owner appends without idempotence */
    int16_t producer_epoch;
    uint16_t reserved;
    int32_t last_sequence;   /* of the last record appended through the slot; -1: none known */
    int64_t last_offset;     /* that record's offset */
    uint8_t pad[SHMLOG_CACHE_LINE - 24];
} shmlog_sequence_record;

typedef struct shmlog_pin_slot {
    uint32_t pid;
    uint32_t in_use;
    uint64_t pid_start_time;
    uint64_t pin_position;
    uint64_t owner_token;
    uint8_t pad[SHMLOG_CACHE_LINE - 32];
} shmlog_pin_slot;

typedef struct shmlog_index_entry {
    uint64_t position;
    uint64_t offset;
} shmlog_index_entry;

/* Replication of the partition (written by the supervisor, and by each follower's mirror for
 * its own fsynced word). A ring made before replication holds zeros: one replica, no minimum.
 * Indexes are positions in the partition's replica list (0 = the leader's place in it).
 * A fsynced word is (log dir + 1) << SHMLOG_REPLICA_WORD_TAG_SHIFT | offset: when a replica
 * moves to another log dir, a late word of the old dir's mirror names the old dir and counts
 * for nothing (shmlog_ring_replica_fsynced). */
#define SHMLOG_REPLICA_WORD_TAG_SHIFT 56
typedef struct shmlog_ring_replication {
    uint32_t replica_count;        /* replication.factor */
    uint32_t min_insync_replicas;  /* acks=all fails with NOT_ENOUGH_REPLICAS* below this ISR size */
    uint32_t isr_count;            /* replicas in the ISR, the leader included */
    uint32_t leader_epoch;
    uint32_t isr_mask;             /* bit i: replica i is in the ISR */
    uint32_t leader_index;         /* which replica leads */
    uint8_t replica_log_dirs[SHMLOG_MAX_REPLICAS];      /* replica i's log dir: whose word i is */
    uint64_t replica_fsynced_offset[SHMLOG_MAX_REPLICAS]; /* each follower's fsynced log end offset,
                                                             tagged with its log dir (below) */
    uint8_t pad[2 * SHMLOG_CACHE_LINE - 32 - 8 * SHMLOG_MAX_REPLICAS];
} shmlog_ring_replication;

typedef struct shmlog_ring_header {
    shmlog_ring_descriptor descriptor;
    shmlog_ring_claim claim;
    shmlog_ring_release release;
    shmlog_ring_persist persist;
    shmlog_ring_waiters waiters;
    shmlog_ring_slots slots;
    shmlog_ring_txn txn;
    shmlog_index_entry index[SHMLOG_INDEX_ENTRIES];
    shmlog_ring_replication replication; /* a new cache line after the index (layout unchanged before it) */
} shmlog_ring_header;

typedef struct shmlog_doorbell_slot {
    uint32_t futex_seq;
    uint32_t pid;
    uint64_t pid_start_time;
    uint64_t owner_token;
    uint8_t pad[SHMLOG_CACHE_LINE - 24];
} shmlog_doorbell_slot;

typedef struct shmlog_doorbell {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t slot_count;
    uint64_t metadata_epoch; /* bumped by the supervisor whenever topics change */
    uint32_t supervisor_pid;
    uint32_t broker_state; /* enum shmlog_broker_state */
    uint8_t pad[SHMLOG_CACHE_LINE - 32];
    shmlog_doorbell_slot slots[SHMLOG_DOORBELL_SLOTS];
} shmlog_doorbell;

/* One record located inside a decoded batch; offsets are relative to the batch start. */
typedef struct shmlog_record_ref {
    int64_t offset;
    int64_t timestamp;
    int32_t key_pos;
    int32_t key_len;      /* -1: null key */
    int32_t value_pos;
    int32_t value_len;    /* -1: null value */
    int32_t headers_pos;
    int32_t headers_count;
} shmlog_record_ref;

/* One batch found by a ring fetch. */
typedef struct shmlog_frame_ref {
    uint64_t map_pos;     /* byte offset of the batch inside the mapping */
    uint64_t dst_pos;     /* byte offset of its copy inside the destination */
    uint64_t base_offset;
    uint32_t batch_bytes;
    uint32_t record_count;/* lastOffsetDelta + 1 */
} shmlog_frame_ref;

/* Process-local view of one mapped ring, filled and validated by shmlog_ring_open: the
 * geometry is read from shared memory once, so later garbage there cannot mislead us. */
typedef struct shmlog_ring_handle {
    shmlog_ring_header *header;
    shmlog_producer_slot *producers; /* [slot_count] */
    shmlog_pin_slot *pins;           /* [slot_count] */
    shmlog_sequence_record *sequences; /* [slot_count], parallel to producers */
    shmlog_publish_mark *publish_marks;
    uint8_t *data;
    uint64_t capacity_bytes;
    uint64_t data_offset;
    uint32_t index_shift;
    uint32_t slot_count;
    /* Process-local, of the one idempotent producer that maps the ring through this handle:
     * the sequence its next batch starts at (SHMLOG_SEQUENCE_NEXT appends) and the base
     * sequence of its last successful append. Never in shared memory. */
    int32_t next_sequence;
    int32_t last_base_sequence;
    /* Process-local: the LogAppendTime (ms) the last successful append through this handle
     * was stamped with, -1 when it kept the producer's CreateTime. Read it under the lock the
     * append was made under. */
    int64_t last_log_append_time;
} shmlog_ring_handle;

typedef struct shmlog_cursor {
    uint64_t position;
    uint64_t next_offset;
} shmlog_cursor;

#endif
