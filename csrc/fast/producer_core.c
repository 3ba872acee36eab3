/* ProducerCore: the base of Producer. produce() partitions, checks and encodes a record into
 * its partition's open Batch without running Python; a batch that closes (batch.size,
 * batch.num.messages, linger.ms=0, the linger thread, flush) is appended to its ring by one
 * call of the core with the GIL released.
 *
 * The producer's rules live here once and Python's slow path (Producer._produce_slow) calls
 * them: record_size() (what a record counts), Route.admits() (the size limit), _queue_full()
 * (BufferError), _partition_for() (sticky null keys, murmur2), the default timestamp (in _add)
 * and the acks=all flush request (in producer_append, for compressed batches too). */
#include "fast.h"

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *routes;               /* topic -> Route */
    PyObject *on_delivery;          /* default delivery callback, or None */
    PyObject *wake;                 /* called when a batch opens (wakes the linger thread), or None */
    PyObject *ready;                /* list of Batches to append, in the order they closed */
    const uint64_t *metadata_epoch; /* the doorbell's, bumped by the supervisor when topics change */
    uint64_t routes_epoch;
    unsigned long fork_generation;
    int fast_partitioner;           /* murmur2 / murmur2_random: hashed here */
    int null_key_random;
    int linger_zero;
    int acks;
    int compressed;                 /* batches are compressed by Python (_compress) before the append */
    long long batch_records;
    long long max_queued_records;
    long long max_queued_bytes;
    long long queued_records;
    long long queued_bytes;
    long long max_block_ns;
    long long producer_id;          /* enable.idempotence: from init_producer_id; -1 otherwise */
    int producer_epoch;
    int transactional;              /* transactional.id: batches carry the transactional bit */
    shmlog_doorbell *doorbell;
    pthread_mutex_t send_lock;
    double queue_wait_min_s, queue_wait_max_s, queue_wait_sum_s; /* batches' wait before their append */
    long long queue_wait_count;                                  /* (statistics: int_latency) */
} ProducerCore;

/* ---------------------------------------------------------------- the rules */

/* What a record counts against batch.size, buffer.memory and the size limits: key and value
 * (bytes or None), the bytes of its header keys and values, and Kafka's record framing. */
static inline Py_ssize_t record_size_of(PyObject *key, PyObject *value, Py_ssize_t header_bytes) {
    return (value != Py_None ? PyBytes_GET_SIZE(value) : 0) + (key != Py_None ? PyBytes_GET_SIZE(key) : 0) +
           header_bytes + SHMLOG_RECORD_OVERHEAD_BYTES;
}

/* The local queue (queue.buffering.max.messages, buffer.memory) has no room for `size` more. */
static inline int producer_queue_full(const ProducerCore *self, Py_ssize_t size) {
    return self->queued_records >= self->max_queued_records || self->queued_bytes + size > self->max_queued_bytes;
}

/* A record's timestamp: the one given, or now (0 means "not given", as in confluent-kafka). */
static inline long long record_timestamp(long long timestamp) { return timestamp ? timestamp : now_unix_ms(); }

/* The partition of a record produced with partition=-1: null keys stick to one random partition
 * per batch with a *_random partitioner; murmur2 hashes the key (the empty key for null) as
 * Kafka's Java client does. -1: the partitioner is one Python implements (partitioner.py). */
static long producer_choose_partition(ProducerCore *self, Route *route, PyObject *key) {
    if (key == Py_None && self->null_key_random) return route_sticky_partition(route);
    if (!self->fast_partitioner) return -1;
    const char *k = key == Py_None ? "" : PyBytes_AS_STRING(key);
    Py_ssize_t klen = key == Py_None ? 0 : PyBytes_GET_SIZE(key);
    return (long)murmur2_partition(k, (size_t)klen, (uint32_t)route->partitions);
}

static int is_bytes_or_none(PyObject *o) { return o == Py_None || PyBytes_CheckExact(o); }

/* record_size(key, value, header_bytes=0): the record size rule, for Python's slow path. */
PyObject *fast_record_size(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "record_size(key, value, header_bytes=0)");
        return NULL;
    }
    if (!is_bytes_or_none(args[0]) || !is_bytes_or_none(args[1])) {
        PyErr_SetString(PyExc_TypeError, "record_size: key and value must be bytes or None");
        return NULL;
    }
    Py_ssize_t header_bytes = 0;
    if (nargs == 3 && (header_bytes = PyLong_AsSsize_t(args[2])) == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(record_size_of(args[0], args[1], header_bytes));
}

/* timestamp_or_now(timestamp): the record timestamp rule, for Python's batch paths. */
PyObject *fast_timestamp_or_now(PyObject *Py_UNUSED(module), PyObject *arg) {
    long long timestamp = PyLong_AsLongLong(arg);
    if (timestamp == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLongLong(record_timestamp(timestamp));
}

/* ---------------------------------------------------------------- the type */

static PyObject *producer_core_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds)) {
    ProducerCore *self = (ProducerCore *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->fork_generation = fork_generation;
    pthread_mutex_init(&self->send_lock, NULL);
    self->routes = PyDict_New();
    self->ready = PyList_New(0);
    self->on_delivery = Py_NewRef(Py_None);
    self->wake = Py_NewRef(Py_None);
    static const uint64_t never = UINT64_MAX;
    self->metadata_epoch = &never; /* every produce() takes the slow path until _configure */
    self->producer_id = -1;
    if (!self->routes || !self->ready) { Py_DECREF(self); return NULL; }
    return (PyObject *)self;
}

/* _configure(on_delivery, wake, epoch_address, doorbell, fast_partitioner, null_key_random, linger_zero,
 *            acks, compressed, batch_records, max_queued_records, max_queued_bytes, max_block_ms,
 *            producer_id, producer_epoch) */
static PyObject *producer_configure(ProducerCore *self, PyObject *args) {
    PyObject *on_delivery, *wake;
    unsigned long long epoch_address, doorbell;
    long long max_block_ms;
    if (!PyArg_ParseTuple(args, "OOKKpppipLLLLLi", &on_delivery, &wake, &epoch_address, &doorbell,
                          &self->fast_partitioner, &self->null_key_random, &self->linger_zero, &self->acks,
                          &self->compressed, &self->batch_records, &self->max_queued_records,
                          &self->max_queued_bytes, &max_block_ms, &self->producer_id, &self->producer_epoch))
        return NULL;
    Py_XSETREF(self->on_delivery, Py_NewRef(on_delivery));
    Py_XSETREF(self->wake, Py_NewRef(wake));
    self->metadata_epoch = (const uint64_t *)(uintptr_t)epoch_address;
    self->routes_epoch = load_acquire(self->metadata_epoch);
    self->doorbell = (shmlog_doorbell *)(uintptr_t)doorbell;
    self->max_block_ns = max_block_ms * 1000000LL;
    Py_RETURN_NONE;
}

static int producer_core_traverse(ProducerCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->dict);
    Py_VISIT(self->routes);
    Py_VISIT(self->on_delivery);
    Py_VISIT(self->wake);
    Py_VISIT(self->ready);
    return 0;
}

static int producer_core_clear(ProducerCore *self) {
    Py_CLEAR(self->dict);
    Py_CLEAR(self->routes);
    Py_CLEAR(self->on_delivery);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->ready);
    return 0;
}

static void producer_core_dealloc(ProducerCore *self) {
    PyObject_GC_UnTrack(self);
    producer_core_clear(self);
    pthread_mutex_destroy(&self->send_lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---------------------------------------------------------------- closing and appending batches */

/* Moves route's open batch of partition to the ready list. */
static int producer_close_batch(ProducerCore *self, Route *route, int partition) {
    Batch *b = route->open[partition];
    if (!b || b->count == 0) return 0;
    route->open[partition] = NULL;
    if (route->sticky == partition) route->sticky = -1;
    int rc = PyList_Append(self->ready, (PyObject *)b);
    Py_DECREF(b);
    return rc;
}

static void send_lock_acquire(ProducerCore *self) {
    if (pthread_mutex_trylock(&self->send_lock) == 0) return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->send_lock);
    Py_END_ALLOW_THREADS
}

/* Appends one closed batch to its ring (compressed first by Python's _compress when the
 * producer compresses); what needs Python afterwards (reports, an fsync to await, an error)
 * goes to _after_send. 0, or -1 with an exception. */
static void producer_count_sent(ProducerCore *self, const Batch *b) {
    b->route->tx_records[b->partition] += b->count;
    b->route->tx_bytes[b->partition] += b->size_bytes;
    double waited_s = now_monotonic_s() - b->created;
    if (self->queue_wait_count == 0 || waited_s < self->queue_wait_min_s) self->queue_wait_min_s = waited_s;
    if (waited_s > self->queue_wait_max_s) self->queue_wait_max_s = waited_s;
    self->queue_wait_sum_s += waited_s;
    self->queue_wait_count++;
}

static int producer_append(ProducerCore *self, Batch *b) {
    Route *route = b->route;
    shmlog_ring_handle *ring = route->ring_handles[b->partition];
    int slot = route->slots[b->partition];
    const uint8_t *records = b->records;
    Py_ssize_t records_bytes = b->records_bytes;
    int16_t attributes = 0;
    PyObject *compressed = NULL;
    Py_buffer view = {0};
    if (self->compressed) {
        /* -> (records section compressed as Kafka frames it, batch attributes) */
        PyObject *data;
        compressed = PyObject_CallMethodOneArg((PyObject *)self, PY_NAME(compress), (PyObject *)b);
        if (!compressed) return -1;
        if (!PyArg_ParseTuple(compressed, "Oh", &data, &attributes) ||
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(compressed);
            return -1;
        }
        records = view.buf;
        records_bytes = view.len;
    }
    uint64_t base = 0;
    int64_t rc = SHMLOG_ETOOBIG;
    if (self->acks == -1 && !core->ring_insync_enough(ring)) {
        rc = SHMLOG_ENOTENOUGHREPLICAS; /* Kafka's NOT_ENOUGH_REPLICAS: refused before the append */
    } else if (records_bytes <= (Py_ssize_t)UINT32_MAX) {
        Py_BEGIN_ALLOW_THREADS
        /* Idempotent: the ring's next sequence for us, checked against its sequence record. A
         * transactional producer's batches carry the transactional bit too: read_committed readers
         * drop them when the transaction aborts (shmlog/log/control_record.py). */
        rc = core->ring_append(ring, slot, records, (uint32_t)records_bytes, b->count, b->base_timestamp,
                               b->max_timestamp,
                               (int16_t)(attributes | (self->transactional ? SHMLOG_ATTR_TRANSACTIONAL : 0)),
                               self->producer_id, (int16_t)self->producer_epoch,
                               self->producer_id >= 0 ? SHMLOG_SEQUENCE_NEXT : -1, self->max_block_ns,
                               self->doorbell, &base);
        Py_END_ALLOW_THREADS
    }
    if (rc >= 0 && self->producer_id >= 0) b->base_sequence = ring->last_base_sequence;
    if (rc >= 0) b->log_append_time = ring->last_log_append_time;
    if (compressed) {
        PyBuffer_Release(&view);
        Py_DECREF(compressed);
    }
    b->status = rc < 0 ? rc : 0;
    b->base_offset = rc < 0 ? -1 : (long long)base;
    if (rc >= 0) producer_count_sent(self, b);
    if (rc >= 0 && self->acks == -1) core->ring_request_flush(ring, base + b->count);
    if (rc >= 0 && self->acks != -1 && !b->reports) {
        self->queued_records -= b->count;
        self->queued_bytes -= b->size_bytes;
        return 0;
    }
    PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, PY_NAME(after_send), (PyObject *)b);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Appends every ready batch to its ring, oldest first. One thread at a time appends (the
 * send lock), so batches of a partition reach the ring in the order they closed and a
 * producer slot is never used by two appends at once. */
static int producer_drain(ProducerCore *self) {
    if (PyList_GET_SIZE(self->ready) == 0) return 0;
    if (!core) {
        PyErr_SetString(PyExc_RuntimeError, "shmlog._native._fast is not bound to the C core");
        return -1;
    }
    send_lock_acquire(self);
    int rc = 0;
    while (rc == 0 && PyList_GET_SIZE(self->ready) > 0) {
        Batch *b = (Batch *)Py_NewRef(PyList_GET_ITEM(self->ready, 0));
        if (PyList_SetSlice(self->ready, 0, 1, NULL) < 0) { Py_DECREF(b); rc = -1; break; }
        rc = producer_append(self, b);
        Py_DECREF(b);
    }
    pthread_mutex_unlock(&self->send_lock);
    return rc;
}

/* ---------------------------------------------------------------- adding a record */

/* The part of produce() after validation, shared by the fast path and _add(). */
static int producer_add(ProducerCore *self, Route *route, int partition, PyObject *key, PyObject *value,
                        long long timestamp, PyObject *headers, PyObject *raw_headers, PyObject *callback,
                        Py_ssize_t size) {
    timestamp = record_timestamp(timestamp);
    Batch *b = route->open[partition];
    if (b && (b->size_bytes + size > route->batch_limit || b->count >= self->batch_records)) {
        if (producer_close_batch(self, route, partition) < 0) return -1;
        b = NULL;
    }
    int opened = 0;
    if (!b) {
        b = route->open[partition] = batch_open(route, partition);
        if (!b) return -1;
        opened = 1;
    }
    const char *k = NULL, *v = NULL, *h = NULL;
    Py_ssize_t klen = -1, vlen = -1, hlen = 0;
    if (key != Py_None) { k = PyBytes_AS_STRING(key); klen = PyBytes_GET_SIZE(key); }
    if (value != Py_None) { v = PyBytes_AS_STRING(value); vlen = PyBytes_GET_SIZE(value); }
    if (headers != Py_None) { h = PyBytes_AS_STRING(headers); hlen = PyBytes_GET_SIZE(headers); }
    uint32_t index = b->count;
    if (batch_add(b, k, klen, v, vlen, timestamp, h, hlen) < 0) return -1;
    b->size_bytes += size;
    self->queued_records++;
    self->queued_bytes += size;
    if (callback != Py_None) {
        if (!b->reports && !(b->reports = PyList_New(0))) return -1;
        /* The produce time (monotonic ns), read only for records that asked for a report: the
         * report's Message.latency() is the time from here to serve_reports(). */
        PyObject *report = Py_BuildValue("(IOOOLOK)", index, callback, key, value, timestamp, raw_headers,
                                         (unsigned long long)now_monotonic_ns());
        if (!report || PyList_Append(b->reports, report) < 0) { Py_XDECREF(report); return -1; }
        Py_DECREF(report);
    }
    /* Only now, with the record in it: waking runs Python, which may switch to the linger
     * thread, and that thread must never find an empty batch due. */
    if (opened && !self->linger_zero && self->wake != Py_None) {
        PyObject *r = PyObject_CallNoArgs(self->wake);
        if (!r) return -1;
        Py_DECREF(r);
    }
    if (self->linger_zero && producer_close_batch(self, route, partition) < 0) return -1;
    return producer_drain(self);
}

static const char *produce_keywords[] = {"topic", "value", "key", "partition", "on_delivery", "timestamp",
                                         "headers", "callback"};
#define PRODUCE_ARGS 8

static PyObject *producer_produce(ProducerCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *a[PRODUCE_ARGS] = {NULL};
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > PRODUCE_ARGS) goto slow;
    for (Py_ssize_t i = 0; i < nargs; i++) a[i] = args[i];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, i));
        int j = 0;
        if (!name) return NULL;
        while (j < PRODUCE_ARGS && strcmp(name, produce_keywords[j]) != 0) j++;
        if (j == PRODUCE_ARGS || a[j]) goto slow; /* let Python raise the TypeError */
        a[j] = args[nargs + i];
    }
    PyObject *topic = a[0], *value = a[1] ? a[1] : Py_None, *key = a[2] ? a[2] : Py_None;
    PyObject *headers = a[6] ? a[6] : Py_None;
    PyObject *callback = a[4] && a[4] != Py_None ? a[4] : (a[7] && a[7] != Py_None ? a[7] : self->on_delivery);
    /* Served here: only what produce()'s rules (Python's _check_* in shmlog/client/producer.py)
     * plainly accept; anything else goes to _produce_slow, which applies them. */
    if (!topic || !PyUnicode_CheckExact(topic) || !is_bytes_or_none(value) || !is_bytes_or_none(key) ||
        headers != Py_None || (callback != Py_None && !PyCallable_Check(callback)) ||
        self->fork_generation != fork_generation ||
        load_relaxed(self->metadata_epoch) != self->routes_epoch)
        goto slow;
    Route *route = (Route *)PyDict_GetItemWithError(self->routes, topic);
    if (!route) {
        if (PyErr_Occurred()) return NULL;
        goto slow;
    }
    Py_ssize_t size = record_size_of(key, value, 0);
    if (!route_admits(route, size) || producer_queue_full(self, size)) goto slow;
    long partition = -1;
    if (a[3]) {
        if (!PyLong_CheckExact(a[3])) goto slow;
        partition = PyLong_AsLong(a[3]);
        if (partition == -1 && PyErr_Occurred()) { PyErr_Clear(); goto slow; }
        if (partition < -1 || partition >= route->partitions) goto slow;
    }
    if (partition < 0 && (partition = producer_choose_partition(self, route, key)) < 0) goto slow;
    long long timestamp = 0;
    if (a[5]) {
        if (!PyLong_CheckExact(a[5])) goto slow;
        timestamp = PyLong_AsLongLong(a[5]);
        if (timestamp == -1 && PyErr_Occurred()) { PyErr_Clear(); goto slow; }
    }
    if (producer_add(self, route, (int)partition, key, value, timestamp, Py_None, Py_None, callback, size) < 0)
        return NULL;
    Py_RETURN_NONE;
slow:
    return call_slow((PyObject *)self, PY_NAME(produce_slow), args, nargs, kwnames);
}

/* _add(route, partition, key, value, timestamp, headers_bytes, raw_headers, callback, size): the
 * slow path's way in, after it validated and converted everything (timestamp 0: now). */
static PyObject *producer_add_py(ProducerCore *self, PyObject *args) {
    Route *route;
    int partition;
    PyObject *key, *value, *headers, *raw_headers, *callback;
    long long timestamp;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "O!iOOLOOOn", &RouteType, &route, &partition, &key, &value, &timestamp, &headers,
                          &raw_headers, &callback, &size))
        return NULL;
    if (partition < 0 || partition >= route->partitions || !is_bytes_or_none(key) || !is_bytes_or_none(value) ||
        !is_bytes_or_none(headers)) {
        PyErr_SetString(PyExc_ValueError, "_add: partition out of range or fields not bytes");
        return NULL;
    }
    if (producer_add(self, route, partition, key, value, timestamp, headers, raw_headers, callback, size) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* _queue_full(size): the local queue has no room for a record of `size` (BufferError). */
static PyObject *producer_queue_full_py(ProducerCore *self, PyObject *arg) {
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(producer_queue_full(self, size));
}

/* _partition_for(route, key): the partition of a key (bytes or None) with partition=-1, or -1
 * when the configured partitioner is a Python one. */
static PyObject *producer_partition_for_py(ProducerCore *self, PyObject *args) {
    Route *route;
    PyObject *key;
    if (!PyArg_ParseTuple(args, "O!O", &RouteType, &route, &key)) return NULL;
    if (!is_bytes_or_none(key)) {
        PyErr_SetString(PyExc_TypeError, "_partition_for: key must be bytes or None");
        return NULL;
    }
    return PyLong_FromLong(producer_choose_partition(self, route, key));
}

/* ---------------------------------------------------------------- linger, flush, metadata moves */

/* Closes open batches (all with force, else those open for linger_s or longer) and appends
 * them; *next_due_out gets the seconds until the next one is due (-1: none). */
static int producer_close_due_batches(ProducerCore *self, int force, double linger_s, double *next_due_out) {
    double now = now_monotonic_s(), next_due = -1;
    PyObject *topic, *obj;
    Py_ssize_t pos = 0;
    while (PyDict_Next(self->routes, &pos, &topic, &obj)) {
        Route *route = (Route *)obj;
        for (int p = 0; p < route->partitions; p++) {
            Batch *b = route->open[p];
            if (!b) continue;
            double due = b->created + linger_s - now;
            if (force || due <= 0) {
                if (producer_close_batch(self, route, p) < 0) return -1;
            } else if (next_due < 0 || due < next_due) {
                next_due = due;
            }
        }
    }
    *next_due_out = next_due;
    return producer_drain(self);
}

/* _close_batches(force, linger_s): returns the seconds until the next batch is due, or None. */
static PyObject *producer_close_batches_py(ProducerCore *self, PyObject *args) {
    int force;
    double linger_s, next_due;
    if (!PyArg_ParseTuple(args, "pd", &force, &linger_s)) return NULL;
    if (producer_close_due_batches(self, force, linger_s, &next_due) < 0) return NULL;
    if (next_due < 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(next_due);
}

/* _reset_routes(): appends every open batch and forgets the routes (metadata moved). */
static PyObject *producer_reset_routes(ProducerCore *self, PyObject *Py_UNUSED(ignored)) {
    double next_due;
    if (producer_close_due_batches(self, 1, 0.0, &next_due) < 0) return NULL;
    PyDict_Clear(self->routes);
    self->routes_epoch = load_acquire(self->metadata_epoch);
    Py_RETURN_NONE;
}

/* _set_transactional(producer_id, producer_epoch): what init_transactions got; every batch appended
 * from now on carries them and the transactional bit (producer_id -1: none does). Taken under the
 * send lock by the caller. */
static PyObject *producer_set_transactional(ProducerCore *self, PyObject *args) {
    if (!PyArg_ParseTuple(args, "Li", &self->producer_id, &self->producer_epoch)) return NULL;
    self->transactional = self->producer_id >= 0;
    Py_RETURN_NONE;
}

/* _purge(): takes every open batch away unsent; returns them. */
static PyObject *producer_purge(ProducerCore *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(0), *topic, *obj;
    Py_ssize_t pos = 0;
    if (!out) return NULL;
    while (PyDict_Next(self->routes, &pos, &topic, &obj)) {
        Route *route = (Route *)obj;
        for (int p = 0; p < route->partitions; p++) {
            Batch *b = route->open[p];
            if (!b) continue;
            route->open[p] = NULL;
            if (PyList_Append(out, (PyObject *)b) < 0) { Py_DECREF(b); Py_DECREF(out); return NULL; }
            Py_DECREF(b);
        }
    }
    return out;
}

/* _release_queued(records, size_bytes): delivered (or failed) records leave the local queue. */
/* _take_queue_wait(): (count, min_s, max_s, sum_s) of the waits of batches appended since the
 * last call (from close to append: librdkafka's int_latency), and starts a new window. */
static PyObject *producer_take_queue_wait(ProducerCore *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = Py_BuildValue("(Lddd)", self->queue_wait_count, self->queue_wait_min_s, self->queue_wait_max_s,
                                  self->queue_wait_sum_s);
    self->queue_wait_count = 0;
    self->queue_wait_min_s = self->queue_wait_max_s = self->queue_wait_sum_s = 0.0;
    return out;
}

static PyObject *producer_release_queued(ProducerCore *self, PyObject *args) {
    long long records, bytes;
    if (!PyArg_ParseTuple(args, "LL", &records, &bytes)) return NULL;
    self->queued_records -= records;
    self->queued_bytes -= bytes;
    Py_RETURN_NONE;
}

/* _locked(fn, *args): fn(*args) while holding the send lock (appends outside produce()). */
static PyObject *producer_locked(ProducerCore *self, PyObject *args) {
    if (PyTuple_GET_SIZE(args) < 1) {
        PyErr_SetString(PyExc_TypeError, "_locked(fn, *args)");
        return NULL;
    }
    PyObject *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    if (!rest) return NULL;
    send_lock_acquire(self);
    PyObject *r = PyObject_Call(PyTuple_GET_ITEM(args, 0), rest, NULL);
    pthread_mutex_unlock(&self->send_lock);
    Py_DECREF(rest);
    return r;
}

static PyObject *producer_routes_current(ProducerCore *self, PyObject *Py_UNUSED(ignored)) {
    return PyBool_FromLong(load_acquire(self->metadata_epoch) == self->routes_epoch);
}

static PyMethodDef producer_core_methods[] = {
    {"produce", (PyCFunction)(void (*)(void))producer_produce, METH_FASTCALL | METH_KEYWORDS,
     "produce(topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0, headers=None)"},
    {"_configure", (PyCFunction)producer_configure, METH_VARARGS, NULL},
    {"_add", (PyCFunction)producer_add_py, METH_VARARGS, NULL},
    {"_queue_full", (PyCFunction)producer_queue_full_py, METH_O, NULL},
    {"_partition_for", (PyCFunction)producer_partition_for_py, METH_VARARGS, NULL},
    {"_close_batches", (PyCFunction)producer_close_batches_py, METH_VARARGS, NULL},
    {"_reset_routes", (PyCFunction)producer_reset_routes, METH_NOARGS, NULL},
    {"_routes_current", (PyCFunction)producer_routes_current, METH_NOARGS, NULL},
    {"_purge", (PyCFunction)producer_purge, METH_NOARGS, NULL},
    {"_set_transactional", (PyCFunction)producer_set_transactional, METH_VARARGS, NULL},
    {"_release_queued", (PyCFunction)producer_release_queued, METH_VARARGS, NULL},
    {"_take_queue_wait", (PyCFunction)producer_take_queue_wait, METH_NOARGS, NULL},
    {"_locked", (PyCFunction)producer_locked, METH_VARARGS, NULL},
    {NULL},
};

static PyMemberDef producer_core_members[] = {
    {"_routes", T_OBJECT, offsetof(ProducerCore, routes), READONLY, NULL},
    {"_queued_records", T_LONGLONG, offsetof(ProducerCore, queued_records), READONLY, NULL},
    {"_queued_bytes", T_LONGLONG, offsetof(ProducerCore, queued_bytes), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(ProducerCore, dict), READONLY, NULL},
    {NULL},
};

PyTypeObject ProducerCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmlog._fast.ProducerCore",
    .tp_basicsize = sizeof(ProducerCore),
    .tp_dictoffset = offsetof(ProducerCore, dict),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = producer_core_new,
    .tp_dealloc = (destructor)producer_core_dealloc,
    .tp_traverse = (traverseproc)producer_core_traverse,
    .tp_clear = (inquiry)producer_core_clear,
    .tp_methods = producer_core_methods,
    .tp_members = producer_core_members,
};
