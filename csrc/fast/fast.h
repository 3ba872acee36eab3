/* shmlog._native._fast: the per-record hot paths as CPython objects, one file per type.
 *
 *   message.c        Message       confluent-kafka's Message, built in C (no Python __init__ per record)
 *   record_queue.c   RecordQueue   a reader's decoded-but-not-returned Messages; fill() and
 *                                  fetch_ring() decode batches into it
 *   consumer_core.c  ConsumerCore  base of Consumer: poll() pops the current queue without leaving C
 *   batch.c          Batch         a partition's open record batch, encoded as records are added
 *   route.c          Route         what produce() needs of a topic: partitions, limits, rings, open batches
 *   producer_core.c  ProducerCore  base of Producer: produce() encodes into the open batch; closed
 *                                  batches are appended to their ring by one C call each, outside the GIL
 *   kafka_request.c  the Kafka listener's one-partition Produce and Fetch requests, read without kio
 *   module.c         the module: bind() to the C core, the fork generation, record columns
 *
 * Anything off the fast path (headers, str values, custom partitioners, a new topic, a full
 * local queue, a forked child) falls back to the Python method named `_<method>_slow`, which
 * calls back into the rules defined here (record_size, _queue_full, _partition_for, _add) so
 * each rule has one author. The C core is reached through the entry-point table bound from
 * shmlog._native._core (see shmlog_core_entry.h), so one copy of it, and of its debug crash
 * points, serves both modules. shmlog/_native/_fast.pyi describes what Python sees.
 */
#ifndef SHMLOG_FAST_H
#define SHMLOG_FAST_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>

#include "shmlog_core.h"
#include "shmlog_core_entry.h"
#include "shmlog_internal.h"

/* ---------------------------------------------------------------- module.c */

/* The C core's entry points, bound by _fast.bind() at import; NULL before. */
extern const shmlog_core_entry_points *core;

/* Bumped in the child after every fork() of the process (pthread_atfork): an object created
 * under another generation belongs to the parent. The one fork detector: Python reads it
 * through _fast.fork_generation() (shmlog/client/cluster.py, shmlog/_native/procs.py). */
extern unsigned long fork_generation;

/* Every Python attribute the C code looks up by name, in one table: C id, Python name, and
 * the Python class that must have it (on its instances). Exported as _fast.PYTHON_NAMES;
 * tests/unit/test_native_boundary.py checks each against the real class. */
#define FAST_PYTHON_NAMES(X)                                                   \
    X(poll_slow, "_poll_slow", "shmlog.client.consumer.Consumer")              \
    X(decode_rest, "_decode_rest", "shmlog.client.consumer.Consumer")          \
    X(buffer, "_buffer", "shmlog.client.consumer.Consumer")                    \
    X(produce_slow, "_produce_slow", "shmlog.client.producer.Producer")        \
    X(compress, "_compress", "shmlog.client.producer.Producer")                \
    X(after_send, "_after_send", "shmlog.client.producer.Producer")            \
    X(on_ring, "on_ring", "shmlog.client.consumer._Reader")                    \
    X(next_offset, "next_offset", "shmlog.client.consumer._Reader")            \
    X(pending, "pending", "shmlog.client.consumer._Reader")                    \
    X(topic, "topic", "shmlog.client.consumer._Reader")                        \
    X(partition, "partition", "shmlog.client.consumer._Reader")                \
    X(ring_address, "ring_address", "shmlog.client.consumer._Reader")          \
    X(cursor_address, "cursor_address", "shmlog.client.consumer._Reader")

#define FAST_NAME_ENUM(id, name, owner) FAST_NAME_##id,
enum fast_name { FAST_PYTHON_NAMES(FAST_NAME_ENUM) FAST_NAME_COUNT };
#undef FAST_NAME_ENUM

/* Interned at import (module.c). */
extern PyObject *fast_names[FAST_NAME_COUNT];
#define PY_NAME(id) (fast_names[FAST_NAME_##id])

/* self.<name>(*args, **kwargs) for a METH_FASTCALL|METH_KEYWORDS method handing its call on. */
PyObject *call_slow(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);

PyObject *fast_index_columns(PyObject *module, PyObject *args);

/* kafka_request.c: the one-partition Produce and Fetch read without kio (the listener's lane). */
PyObject *fast_kafka_produce_request(PyObject *module, PyObject *args);
PyObject *fast_kafka_fetch_request(PyObject *module, PyObject *args);

static inline double now_monotonic_s(void) { return (double)now_monotonic_ns() / 1e9; }

/* ---------------------------------------------------------------- message.c */

typedef struct {
    PyObject_HEAD
    PyObject *topic, *key, *value, *headers, *error, *latency, *leader_epoch, *timestamp;
    long long offset;
    int partition;
    int timestamp_type;
    long long timestamp_ms;
} Message;

extern PyTypeObject MessageType;

/* A Message with key, value and headers stolen (topic is not). Inline: the decoder makes one
 * per record. */
static inline Message *message_new_fast(PyObject *topic, int partition, long long offset, PyObject *key,
                                        PyObject *value, PyObject *headers, int timestamp_type,
                                        long long timestamp_ms) {
    Message *m = PyObject_New(Message, &MessageType);
    if (!m) return NULL;
    Py_INCREF(topic);
    m->topic = topic;
    m->key = key; /* references stolen */
    m->value = value;
    m->headers = headers;
    m->error = m->latency = m->leader_epoch = m->timestamp = NULL;
    m->offset = offset;
    m->partition = partition;
    m->timestamp_type = timestamp_type;
    m->timestamp_ms = timestamp_ms;
    return m;
}

/* ---------------------------------------------------------------- record_queue.c */

typedef struct {
    PyObject_HEAD
    PyObject **items;
    Py_ssize_t head, tail, capacity; /* items[head:tail] are queued */
    long long records_in, bytes_in;  /* decoded into the queue so far, keys and values (statistics) */
} RecordQueue;

extern PyTypeObject RecordQueueType;

static inline int record_queue_is_empty(const RecordQueue *q) { return q->head == q->tail; }

/* The oldest Message (a new reference moved out of the queue); the queue must not be empty. */
static inline PyObject *record_queue_pop(RecordQueue *q) {
    PyObject *item = q->items[q->head++];
    if (q->head == q->tail) q->head = q->tail = 0;
    return item;
}

/* Decodes fetched frames[0:n] (copies in buf) into queue from *wanted_io on; stops at the first
 * compressed or invalid batch (*stop_out: its index, else n). -1 with an exception on failure. */
int record_queue_decode_frames(RecordQueue *queue, PyObject *buffer_obj, const Py_buffer *buf,
                               const shmlog_frame_ref *frames, int64_t n, int check_crc, PyObject *topic,
                               int partition, PyObject *decode_headers, long long *wanted_io,
                               Py_ssize_t *added_out, long long *stop_out);

PyObject *fast_fetch_ring(PyObject *module, PyObject *args);

/* ---------------------------------------------------------------- consumer_core.c */

extern PyTypeObject ConsumerCoreType;

/* ---------------------------------------------------------------- batch.c and route.c */

typedef struct Route Route;

typedef struct {
    PyObject_HEAD
    Route *route;
    int partition;
    uint8_t *records;
    Py_ssize_t records_bytes, capacity;
    uint32_t count;
    long long base_timestamp, max_timestamp;
    Py_ssize_t size_bytes; /* as counted against batch.size and buffer.memory */
    double created;
    PyObject *reports;     /* list of (index, callback, key, value, timestamp, headers, produce time in
                            * monotonic ns), or NULL */
    long long base_offset;
    long long status;      /* the ring append's return code, 0 before it ran */
    int base_sequence;     /* an idempotent batch's, once appended (resent with it); -1 before */
    long long log_append_time; /* what the append stamped (a LogAppendTime topic), else -1 */
    Py_ssize_t exports;
} Batch;

extern PyTypeObject BatchType;

Batch *batch_open(Route *route, int partition);
/* Room for `more` bytes beyond records_bytes: 0, or -1 with MemoryError. */
int batch_grow(Batch *b, Py_ssize_t more);

/* Encodes one record into the batch's records section (lengths -1: null) with the core's record
 * encoder. Inline: produce() adds every record through it. */
static inline int batch_add(Batch *b, const char *key, Py_ssize_t key_len, const char *value, Py_ssize_t value_len,
                            long long timestamp, const char *headers, Py_ssize_t headers_len) {
    if (b->count == 0) b->base_timestamp = b->max_timestamp = timestamp;
    if (timestamp > b->max_timestamp) b->max_timestamp = timestamp;
    int64_t ts_delta = timestamp - b->base_timestamp;
    uint64_t body = record_body_bytes(ts_delta, b->count, (int32_t)key_len, (int32_t)value_len, (int32_t)headers_len);
    Py_ssize_t need = (Py_ssize_t)record_encoded_bytes(body);
    if (b->records_bytes + need > b->capacity && batch_grow(b, need) < 0) return -1;
    record_encode(b->records + b->records_bytes, body, ts_delta, b->count, (const uint8_t *)key, (int32_t)key_len,
                  (const uint8_t *)value, (int32_t)value_len, (const uint8_t *)headers, (int32_t)headers_len);
    b->records_bytes += need;
    b->count++;
    return 0;
}

PyObject *fast_serve_reports(PyObject *module, PyObject *args);

struct Route {
    PyObject_HEAD
    PyObject *topic;
    PyObject *rings;            /* the Ring objects, kept alive with their handles */
    int partitions;
    Py_ssize_t record_limit, batch_limit;
    int sticky;                 /* partition null keys go to until its batch is sent; -1: none */
    shmlog_ring_handle **ring_handles;
    int *slots;
    Batch **open;               /* per partition: the batch records are being added to, or NULL */
    long long *tx_records;      /* per partition: records and bytes appended to the ring (statistics) */
    long long *tx_bytes;
};

extern PyTypeObject RouteType;

/* The record size rule: a record of `size` accounted bytes may go to this topic. */
static inline int route_admits(const Route *route, Py_ssize_t size) { return size <= route->record_limit; }

/* Draws the sticky partition for null keys (none open): route.c. */
int route_sticky_choose(Route *route);

/* The sticky partition for null keys. Inline: produce() asks for it per null-key record. */
static inline int route_sticky_partition(Route *route) {
    return route->sticky >= 0 ? route->sticky : route_sticky_choose(route);
}

void route_random_seed(void);

/* ---------------------------------------------------------------- producer_core.c */

extern PyTypeObject ProducerCoreType;

PyObject *fast_record_size(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *fast_timestamp_or_now(PyObject *module, PyObject *arg);

#endif
