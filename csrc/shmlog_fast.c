/* shmlog._fast: the per-record hot paths as CPython objects.
 *
 *   Message      confluent-kafka's Message, built in C (no Python __init__ per record)
 *   RecordQueue  a reader's decoded-but-not-returned Messages; fill() decodes a batch
 *   ConsumerCore base of Consumer: poll() pops the current queue without leaving C
 *   Batch        a partition's open record batch, encoded as records are added
 *   Route        what produce() needs of a topic: partition count, limits, rings, open batches
 *   ProducerCore base of Producer: produce() encodes into the open batch; full batches are
 *                appended to their ring by one C call each, outside the GIL
 *
 * Anything off the fast path (headers, str values, custom partitioners, a new topic,
 * a full local queue, a forked child, compression) falls back to the Python method named
 * `_<method>_slow`, which holds the rules; this file only repeats the common case.
 * The C core is reached through function pointers bound from shmlog._core (bind()), so
 * one copy of it, and of its debug crash points, serves both modules.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmlog_core.h"
#include "shmlog_varint.h"

#define RECORD_OVERHEAD_BYTES 21
#define MAX_FRESH_PARTITIONS 4096

/* ---------------------------------------------------------------- core binding */

static struct {
    int32_t (*murmur2)(const void *, size_t);
    int64_t (*ring_append)(void *, int, const uint8_t *, uint32_t, uint32_t, int64_t, int64_t, int16_t, int64_t,
                           int16_t, int32_t, int64_t, void *, uint64_t *);
    int64_t (*ring_fetch)(const void *, shmlog_cursor *, uint8_t *, uint64_t, shmlog_frame_ref *, uint32_t, int);
    int64_t (*batch_index)(const uint8_t *, uint64_t, shmlog_record_ref *, uint32_t, int);
    void (*request_flush)(void *, uint64_t);
} core;

static unsigned long fork_generation;
static uint64_t random_state = 0x9E3779B97F4A7C15ULL;

static void after_fork_in_child(void) { fork_generation++; }

static uint32_t random_next(void) {
    random_state ^= random_state << 13;
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return (uint32_t)(random_state >> 16);
}

static int64_t now_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static PyObject *fast_bind(PyObject *module, PyObject *args) {
    unsigned long long murmur2, ring_append, ring_fetch, batch_index, request_flush;
    if (!PyArg_ParseTuple(args, "KKKKK", &murmur2, &ring_append, &ring_fetch, &batch_index, &request_flush))
        return NULL;
    core.request_flush = (void *)(uintptr_t)request_flush;
    core.murmur2 = (void *)(uintptr_t)murmur2;
    core.ring_append = (void *)(uintptr_t)ring_append;
    core.ring_fetch = (void *)(uintptr_t)ring_fetch;
    core.batch_index = (void *)(uintptr_t)batch_index;
    random_state ^= (uint64_t)getpid() * 0x100000001B3ULL ^ (uint64_t)now_unix_ms();
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- Message */

typedef struct {
    PyObject_HEAD
    PyObject *topic, *key, *value, *headers, *error, *latency, *leader_epoch, *timestamp;
    long long offset;
    int partition;
    int timestamp_type;
    long long timestamp_ms;
} Message;

static PyTypeObject MessageType;

static Message *message_new_fast(PyObject *topic, int partition, long long offset, PyObject *key, PyObject *value,
                                 PyObject *headers, int timestamp_type, long long timestamp_ms) {
    Message *m = PyObject_New(Message, &MessageType);
    if (!m) return NULL;
    Py_INCREF(topic);
    m->topic = topic;
    m->key = key;          /* references stolen */
    m->value = value;
    m->headers = headers;
    m->error = m->latency = m->leader_epoch = m->timestamp = NULL;
    m->offset = offset;
    m->partition = partition;
    m->timestamp_type = timestamp_type;
    m->timestamp_ms = timestamp_ms;
    return m;
}

static int message_init(Message *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"topic", "partition", "offset", "key", "value", "headers", "timestamp", "error",
                            "leader_epoch", NULL};
    PyObject *topic = Py_None, *key = Py_None, *value = Py_None, *headers = Py_None, *timestamp = NULL;
    PyObject *err = Py_None, *leader_epoch = Py_None;
    int partition = -1;
    long long offset = -1001;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OiLOOOOOO", names, &topic, &partition, &offset, &key, &value,
                                     &headers, &timestamp, &err, &leader_epoch))
        return -1;
    Py_XSETREF(self->topic, Py_NewRef(topic));
    Py_XSETREF(self->key, Py_NewRef(key));
    Py_XSETREF(self->value, Py_NewRef(value));
    Py_XSETREF(self->headers, Py_NewRef(headers));
    Py_XSETREF(self->error, Py_NewRef(err));
    Py_XSETREF(self->leader_epoch, Py_NewRef(leader_epoch));
    Py_XSETREF(self->timestamp, timestamp ? Py_NewRef(timestamp) : NULL);
    self->offset = offset;
    self->partition = partition;
    self->timestamp_type = 0;
    self->timestamp_ms = 0;
    return 0;
}

static void message_dealloc(Message *self) {
    Py_XDECREF(self->topic);
    Py_XDECREF(self->key);
    Py_XDECREF(self->value);
    Py_XDECREF(self->headers);
    Py_XDECREF(self->error);
    Py_XDECREF(self->latency);
    Py_XDECREF(self->leader_epoch);
    Py_XDECREF(self->timestamp);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *or_none(PyObject *o) { return Py_NewRef(o ? o : Py_None); }

static PyObject *message_topic(Message *self, PyObject *unused) { return or_none(self->topic); }
static PyObject *message_partition(Message *self, PyObject *unused) { return PyLong_FromLong(self->partition); }
static PyObject *message_offset(Message *self, PyObject *unused) { return PyLong_FromLongLong(self->offset); }
static PyObject *message_key(Message *self, PyObject *unused) { return or_none(self->key); }
static PyObject *message_value(Message *self, PyObject *unused) { return or_none(self->value); }
static PyObject *message_headers(Message *self, PyObject *unused) { return or_none(self->headers); }
static PyObject *message_error(Message *self, PyObject *unused) { return or_none(self->error); }
static PyObject *message_latency(Message *self, PyObject *unused) { return or_none(self->latency); }
static PyObject *message_leader_epoch(Message *self, PyObject *unused) { return or_none(self->leader_epoch); }

static PyObject *message_timestamp(Message *self, PyObject *unused) {
    if (!self->timestamp) {
        self->timestamp = Py_BuildValue("(iL)", self->timestamp_type, self->timestamp_ms);
        if (!self->timestamp) return NULL;
    }
    return Py_NewRef(self->timestamp);
}

static Py_ssize_t message_length(Message *self) {
    if (!self->value || self->value == Py_None) return 0;
    return PyObject_Length(self->value);
}

static PyObject *message_len(Message *self, PyObject *unused) {
    Py_ssize_t n = message_length(self);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyObject *message_set_key(Message *self, PyObject *key) { Py_XSETREF(self->key, Py_NewRef(key)); Py_RETURN_NONE; }
static PyObject *message_set_value(Message *self, PyObject *v) { Py_XSETREF(self->value, Py_NewRef(v)); Py_RETURN_NONE; }
static PyObject *message_set_headers(Message *self, PyObject *h) { Py_XSETREF(self->headers, Py_NewRef(h)); Py_RETURN_NONE; }

static PyObject *message_repr(Message *self) {
    return PyUnicode_FromFormat("Message(topic=%R, partition=%d, offset=%lld, key=%R, error=%R)",
                                self->topic ? self->topic : Py_None, self->partition, self->offset,
                                self->key ? self->key : Py_None, self->error ? self->error : Py_None);
}

static PyObject *message_get_timestamp(Message *self, void *closure) { return message_timestamp(self, NULL); }

static int message_set_timestamp(Message *self, PyObject *value, void *closure) {
    Py_XSETREF(self->timestamp, Py_XNewRef(value));
    return 0;
}

static PyMethodDef message_methods[] = {
    {"topic", (PyCFunction)message_topic, METH_NOARGS, NULL},
    {"partition", (PyCFunction)message_partition, METH_NOARGS, NULL},
    {"offset", (PyCFunction)message_offset, METH_NOARGS, NULL},
    {"key", (PyCFunction)message_key, METH_NOARGS, NULL},
    {"value", (PyCFunction)message_value, METH_NOARGS, NULL},
    {"headers", (PyCFunction)message_headers, METH_NOARGS, NULL},
    {"timestamp", (PyCFunction)message_timestamp, METH_NOARGS, NULL},
    {"error", (PyCFunction)message_error, METH_NOARGS, NULL},
    {"latency", (PyCFunction)message_latency, METH_NOARGS, NULL},
    {"leader_epoch", (PyCFunction)message_leader_epoch, METH_NOARGS, NULL},
    {"len", (PyCFunction)message_len, METH_NOARGS, NULL},
    {"set_key", (PyCFunction)message_set_key, METH_O, NULL},
    {"set_value", (PyCFunction)message_set_value, METH_O, NULL},
    {"set_headers", (PyCFunction)message_set_headers, METH_O, NULL},
    {NULL},
};

static PyMemberDef message_members[] = {
    {"_topic", T_OBJECT, offsetof(Message, topic), 0, NULL},
    {"_partition", T_INT, offsetof(Message, partition), 0, NULL},
    {"_offset", T_LONGLONG, offsetof(Message, offset), 0, NULL},
    {"_key", T_OBJECT, offsetof(Message, key), 0, NULL},
    {"_value", T_OBJECT, offsetof(Message, value), 0, NULL},
    {"_headers", T_OBJECT, offsetof(Message, headers), 0, NULL},
    {"_error", T_OBJECT, offsetof(Message, error), 0, NULL},
    {"_latency", T_OBJECT, offsetof(Message, latency), 0, NULL},
    {"_leader_epoch", T_OBJECT, offsetof(Message, leader_epoch), 0, NULL},
    {NULL},
};

static PyGetSetDef message_getset[] = {
    {"_timestamp", (getter)message_get_timestamp, (setter)message_set_timestamp, NULL, NULL},
    {NULL},
};

static PySequenceMethods message_as_sequence = {.sq_length = (lenfunc)message_length};

static PyTypeObject MessageType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmlog.Message",
    .tp_doc = "A record (consumer) or delivery report (producer), with confluent-kafka's accessors.",
    .tp_basicsize = sizeof(Message),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)message_init,
    .tp_dealloc = (destructor)message_dealloc,
    .tp_repr = (reprfunc)message_repr,
    .tp_methods = message_methods,
    .tp_members = message_members,
    .tp_getset = message_getset,
    .tp_as_sequence = &message_as_sequence,
};

/* ---------------------------------------------------------------- RecordQueue */

typedef struct {
    PyObject_HEAD
    PyObject **items;
    Py_ssize_t head, tail, capacity;   /* items[head:tail] are queued */
} RecordQueue;

static PyTypeObject RecordQueueType;

static Py_ssize_t queue_length(RecordQueue *self) { return self->tail - self->head; }

static void queue_clear_items(RecordQueue *self) {
    for (Py_ssize_t i = self->head; i < self->tail; i++) Py_DECREF(self->items[i]);
    self->head = self->tail = 0;
}

static int queue_reserve(RecordQueue *self, Py_ssize_t more) {
    if (self->tail + more <= self->capacity) return 0;
    Py_ssize_t n = queue_length(self);
    if (self->head > 0) {
        memmove(self->items, self->items + self->head, n * sizeof(PyObject *));
        self->head = 0;
        self->tail = n;
    }
    if (n + more <= self->capacity) return 0;
    Py_ssize_t cap = self->capacity ? self->capacity : 64;
    while (cap < n + more) cap *= 2;
    PyObject **items = PyMem_Realloc(self->items, cap * sizeof(PyObject *));
    if (!items) { PyErr_NoMemory(); return -1; }
    self->items = items;
    self->capacity = cap;
    return 0;
}

static void queue_dealloc(RecordQueue *self) {
    queue_clear_items(self);
    PyMem_Free(self->items);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *queue_popleft(RecordQueue *self, PyObject *unused) {
    if (self->head == self->tail) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty RecordQueue");
        return NULL;
    }
    PyObject *item = self->items[self->head++];
    if (self->head == self->tail) self->head = self->tail = 0;
    return item;
}

static PyObject *queue_append(RecordQueue *self, PyObject *item) {
    if (queue_reserve(self, 1) < 0) return NULL;
    self->items[self->tail++] = Py_NewRef(item);
    Py_RETURN_NONE;
}

static PyObject *queue_take(RecordQueue *self, PyObject *arg) {
    Py_ssize_t want = PyLong_AsSsize_t(arg);
    if (want == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = queue_length(self);
    if (want < n) n = want < 0 ? 0 : want;
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) PyList_SET_ITEM(out, i, self->items[self->head + i]);  /* moved */
    self->head += n;
    if (self->head == self->tail) self->head = self->tail = 0;
    return out;
}

static PyObject *queue_clear(RecordQueue *self, PyObject *unused) {
    queue_clear_items(self);
    Py_RETURN_NONE;
}

static PyObject *queue_item(RecordQueue *self, Py_ssize_t i) {
    if (i < 0 || i >= queue_length(self)) {
        PyErr_SetString(PyExc_IndexError, "RecordQueue index out of range");
        return NULL;
    }
    return Py_NewRef(self->items[self->head + i]);
}

static PyObject *bytes_at(const char *base, Py_ssize_t size, int32_t pos, int32_t len) {
    if (len < 0) return Py_NewRef(Py_None);
    if (pos < 0 || (Py_ssize_t)pos + len > size) {
        PyErr_Format(PyExc_ValueError, "record field [%d, +%d) outside its %zd-byte buffer", pos, len, size);
        return NULL;
    }
    return PyBytes_FromStringAndSize(base + pos, len);
}

/* Appends a Message per ref at or after first_offset; positions are relative to buffer + bias.
 * Returns how many, or -1 with an exception set. */
static Py_ssize_t queue_fill_refs(RecordQueue *self, PyObject *buffer_obj, const void *buffer, Py_ssize_t buffer_len,
                                  Py_ssize_t bias, const shmlog_record_ref *refs, Py_ssize_t count, PyObject *topic,
                                  int partition, int ts_type, long long first_offset, PyObject *decode_headers) {
    if (queue_reserve(self, count) < 0) return -1;
    const char *base = (const char *)buffer + bias;
    Py_ssize_t size = buffer_len - bias, added = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        const shmlog_record_ref *r = &refs[i];
        if (r->offset < first_offset) continue;
        PyObject *key = bytes_at(base, size, r->key_pos, r->key_len);
        if (!key) return -1;
        PyObject *value = bytes_at(base, size, r->value_pos, r->value_len);
        if (!value) { Py_DECREF(key); return -1; }
        PyObject *headers = Py_NewRef(Py_None);
        if (r->headers_count) {
            Py_DECREF(headers);
            headers = PyObject_CallFunction(decode_headers, "Oni", buffer_obj, (Py_ssize_t)r->headers_pos + bias,
                                            (int)r->headers_count);
            if (!headers) { Py_DECREF(key); Py_DECREF(value); return -1; }
        }
        Message *m = message_new_fast(topic, partition, r->offset, key, value, headers, ts_type, r->timestamp);
        if (!m) { Py_DECREF(key); Py_DECREF(value); Py_DECREF(headers); return -1; }
        self->items[self->tail++] = (PyObject *)m;
        added++;
    }
    return added;
}

static uint16_t load_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t load_be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int decode_frames(RecordQueue *queue, PyObject *buffer_obj, Py_buffer *bufp, const shmlog_frame_ref *frames,
                         int64_t n, int check_crc, PyObject *topic, int partition, PyObject *decode_headers,
                         long long *wanted_io, Py_ssize_t *added_out, long long *stop_out);

static shmlog_record_ref *fetch_scratch;
static uint32_t fetch_scratch_records;

/* fetch_ring(queue, ring, cursor, buffer, frames, max_frames, check_crc, topic, partition, first_offset,
 *            decode_headers) -> (status, added, next_offset, stop)
 * One ring fetch into buffer and the decoding of its plain batches into queue, in C: status is
 * the fetch's frame count or its negative status (nothing decoded); control batches are skipped;
 * decoding stops at the first compressed or invalid batch, whose index is `stop` (the frame count
 * when every batch was decoded) for the Python decoder to take over from with next_offset. */
static PyObject *fast_fetch_ring(PyObject *module, PyObject *args) {
    PyObject *queue, *buffer_obj, *topic, *decode_headers;
    unsigned long long ring, cursor, frames_address;
    unsigned int max_frames;
    int check_crc, partition;
    long long wanted;
    if (!PyArg_ParseTuple(args, "O!KKOKIiUiLO", &RecordQueueType, &queue, &ring, &cursor, &buffer_obj,
                          &frames_address, &max_frames, &check_crc, &topic, &partition, &wanted, &decode_headers))
        return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(buffer_obj, &buf, PyBUF_WRITABLE) < 0) return NULL;
    shmlog_frame_ref *frames = (shmlog_frame_ref *)(uintptr_t)frames_address;
    int64_t n = core.ring_fetch((const void *)(uintptr_t)ring, (shmlog_cursor *)(uintptr_t)cursor, buf.buf,
                                (uint64_t)buf.len, frames, max_frames, check_crc);
    Py_ssize_t added = 0;
    long long stop = 0;
    if (n > 0 && decode_frames((RecordQueue *)queue, buffer_obj, &buf, frames, n, check_crc, topic, partition,
                               decode_headers, &wanted, &added, &stop) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("(LnLL)", (long long)n, added, wanted, stop);
}

/* Decodes fetched frames[0:n] (copies in buf) into queue from *wanted on; stops at the first
 * compressed or invalid batch (*stop: its index, else n). -1 with an exception on failure. */
static int decode_frames(RecordQueue *queue, PyObject *buffer_obj, Py_buffer *bufp, const shmlog_frame_ref *frames,
                         int64_t n, int check_crc, PyObject *topic, int partition, PyObject *decode_headers,
                         long long *wanted_io, Py_ssize_t *added_out, long long *stop_out) {
    Py_buffer buf = *bufp;
    long long wanted = *wanted_io;
    Py_ssize_t added = 0;
    int64_t i = 0;
    for (; i < n; i++) {
        const shmlog_frame_ref *f = &frames[i];
        const uint8_t *batch = (const uint8_t *)buf.buf + f->dst_pos;
        if ((long long)(f->base_offset + f->record_count) <= wanted) continue;
        uint16_t attributes = load_be16(batch + SHMLOG_BATCH_OFF_ATTRIBUTES);
        if ((attributes & SHMLOG_ATTR_CONTROL) || load_be32(batch + SHMLOG_BATCH_OFF_RECORD_COUNT) == 0) {
            wanted = (long long)(f->base_offset + f->record_count);
            continue;
        }
        if (attributes & SHMLOG_ATTR_COMPRESSION_MASK) break;
        if (f->record_count > fetch_scratch_records) {
            shmlog_record_ref *grown = PyMem_Realloc(fetch_scratch, f->record_count * sizeof(shmlog_record_ref));
            if (!grown) { PyErr_NoMemory(); return -1; }
            fetch_scratch = grown;
            fetch_scratch_records = f->record_count;
        }
        int64_t k = core.batch_index(batch, f->batch_bytes, fetch_scratch, fetch_scratch_records, check_crc);
        if (k < 0) break;
        int ts_type = attributes & SHMLOG_ATTR_LOG_APPEND_TIME ? 2 : 1;
        Py_ssize_t got = queue_fill_refs(queue, buffer_obj, buf.buf, buf.len, (Py_ssize_t)f->dst_pos,
                                         fetch_scratch, k, topic, partition, ts_type, wanted, decode_headers);
        if (got < 0) return -1;
        added += got;
        wanted = (long long)(f->base_offset + f->record_count);
    }
    *wanted_io = wanted;
    *added_out = added;
    *stop_out = i;
    return 0;
}

/* fill(buffer, refs, count, position_bias, topic, partition, timestamp_type, first_offset, decode_headers)
 * appends a Message for each record ref at or after first_offset; positions in refs are
 * relative to position_bias within buffer. Returns how many were appended. */
static PyObject *queue_fill(RecordQueue *self, PyObject *args) {
    Py_buffer buf, refs_buf;
    Py_ssize_t count, bias;
    PyObject *topic, *decode_headers;
    int partition, ts_type;
    long long first_offset;
    if (!PyArg_ParseTuple(args, "y*y*nnOiiLO", &buf, &refs_buf, &count, &bias, &topic, &partition, &ts_type,
                          &first_offset, &decode_headers))
        return NULL;
    PyObject *result = NULL;
    const shmlog_record_ref *refs = refs_buf.buf;
    if ((size_t)count * sizeof(shmlog_record_ref) > (size_t)refs_buf.len || bias < 0 || bias > buf.len) {
        PyErr_SetString(PyExc_ValueError, "record refs outside their arrays");
        goto done;
    }
    Py_ssize_t added = queue_fill_refs(self, PyTuple_GET_ITEM(args, 0), buf.buf, buf.len, bias, refs, count, topic,
                                       partition, ts_type, first_offset, decode_headers);
    if (added >= 0) result = PyLong_FromSsize_t(added);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&refs_buf);
    return result;
}

static PyMethodDef queue_methods[] = {
    {"popleft", (PyCFunction)queue_popleft, METH_NOARGS, NULL},
    {"append", (PyCFunction)queue_append, METH_O, NULL},
    {"clear", (PyCFunction)queue_clear, METH_NOARGS, NULL},
    {"take", (PyCFunction)queue_take, METH_O, "take(n): up to n Messages from the front, as a list."},
    {"fill", (PyCFunction)queue_fill, METH_VARARGS, NULL},
    {NULL},
};

static PySequenceMethods queue_as_sequence = {
    .sq_length = (lenfunc)queue_length,
    .sq_item = (ssizeargfunc)queue_item,
};

static PyTypeObject RecordQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmlog._fast.RecordQueue",
    .tp_doc = "Decoded Messages of one partition, oldest first.",
    .tp_basicsize = sizeof(RecordQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)queue_dealloc,
    .tp_methods = queue_methods,
    .tp_as_sequence = &queue_as_sequence,
};

/* ---------------------------------------------------------------- ConsumerCore */

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *current;        /* RecordQueue poll() serves without leaving C, or None */
    PyObject *stored;         /* dict (topic, partition) -> next offset with auto offset store, or None */
    PyObject *current_tp;     /* (topic, partition) of current */
    char pins_held;
    char serve_needed;        /* group events or commit results wait for _poll_slow */
    double last_poll;         /* CLOCK_MONOTONIC seconds of the last poll served here */
    unsigned long fork_generation;
    /* The one active reader, when there is exactly one (see _set_solo): poll() fetches and
     * decodes its next ring run in C when its queue runs dry. */
    PyObject *solo, *solo_queue, *solo_topic, *solo_tp, *decode_headers;
    void *solo_ring;
    unsigned long long solo_cursor, frames;
    unsigned int max_frames;
    int solo_partition, check_crc;
} ConsumerCore;

static PyObject *str_poll_slow, *str_produce_slow, *str_send_python, *str_after_send;

/* self.<name>(*args, **kwargs) for a METH_FASTCALL|METH_KEYWORDS method handing its call on. */
static PyObject *call_slow(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames) {
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[16], **stack = total + 1 <= 16 ? small : PyMem_Malloc((total + 1) * sizeof(PyObject *));
    if (!stack) return PyErr_NoMemory();
    stack[0] = self;
    memcpy(stack + 1, args, total * sizeof(PyObject *));
    PyObject *r = PyObject_VectorcallMethod(name, stack, nargs + 1, kwnames);
    if (stack != small) PyMem_Free(stack);
    return r;
}

static PyObject *consumer_core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    ConsumerCore *self = (ConsumerCore *)type->tp_alloc(type, 0);
    if (self) self->fork_generation = fork_generation;
    return (PyObject *)self;
}

static int consumer_core_traverse(ConsumerCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->dict);
    Py_VISIT(self->current);
    Py_VISIT(self->stored);
    Py_VISIT(self->current_tp);
    Py_VISIT(self->solo);
    Py_VISIT(self->solo_queue);
    Py_VISIT(self->solo_topic);
    Py_VISIT(self->solo_tp);
    Py_VISIT(self->decode_headers);
    return 0;
}

static int consumer_core_clear(ConsumerCore *self) {
    Py_CLEAR(self->dict);
    Py_CLEAR(self->current);
    Py_CLEAR(self->stored);
    Py_CLEAR(self->current_tp);
    Py_CLEAR(self->solo);
    Py_CLEAR(self->solo_queue);
    Py_CLEAR(self->solo_topic);
    Py_CLEAR(self->solo_tp);
    Py_CLEAR(self->decode_headers);
    return 0;
}

static void consumer_core_dealloc(ConsumerCore *self) {
    PyObject_GC_UnTrack(self);
    consumer_core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *str_on_ring, *str_next_offset, *str_buffer;

/* The solo reader's next ring run, fetched and decoded here: 1 when records were queued, 0 when
 * there were none (or something for the Python path to handle: it fetches again), -1 on error. */
static int consumer_fetch_solo(ConsumerCore *self) {
    PyObject *reader = self->solo;
    PyObject *on_ring = PyObject_GetAttr(reader, str_on_ring);
    if (!on_ring) return -1;
    int is_on_ring = on_ring == Py_True;
    Py_DECREF(on_ring);
    if (!is_on_ring) return 0;
    PyObject *next = PyObject_GetAttr(reader, str_next_offset);
    if (!next) return -1;
    long long wanted = PyLong_AsLongLong(next);
    Py_DECREF(next);
    if (wanted == -1 && PyErr_Occurred()) return -1;
    const shmlog_ring_header *h = ((const shmlog_ring_handle *)self->solo_ring)->header;
    if ((long long)__atomic_load_n(&h->persist.log_start_offset, __ATOMIC_ACQUIRE) > wanted) return 0;
    PyObject *buffer_obj = PyObject_GetAttr((PyObject *)self, str_buffer);
    if (!buffer_obj) return -1;
    Py_buffer buf;
    if (PyObject_GetBuffer(buffer_obj, &buf, PyBUF_WRITABLE) < 0) { Py_DECREF(buffer_obj); return -1; }
    shmlog_frame_ref *frames = (shmlog_frame_ref *)(uintptr_t)self->frames;
    shmlog_cursor *cursor = (shmlog_cursor *)(uintptr_t)self->solo_cursor;
    int64_t n = core.ring_fetch(self->solo_ring, cursor, buf.buf, (uint64_t)buf.len, frames, self->max_frames,
                                self->check_crc);
    int rc = 0;
    if (n <= 0) goto done;   /* nothing, or a status the Python path handles when it fetches again */
    Py_ssize_t added = 0;
    long long stop;
    rc = -1;
    if (decode_frames((RecordQueue *)self->solo_queue, buffer_obj, &buf, frames, n, self->check_crc, self->solo_topic,
                      self->solo_partition, self->decode_headers, &wanted, &added, &stop) < 0)
        goto done;
    PyObject *w = PyLong_FromLongLong(wanted);
    if (!w || PyObject_SetAttr(reader, str_next_offset, w) < 0) { Py_XDECREF(w); goto done; }
    Py_DECREF(w);
    if (stop < n) {   /* a compressed or invalid batch: Python decodes from there */
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_decode_rest", "OLLn", reader, stop, (long long)n, added);
        if (!r) goto done;
        Py_DECREF(r);
    }
    rc = 1;
done:
    PyBuffer_Release(&buf);
    Py_DECREF(buffer_obj);
    return rc;
}

static PyObject *consumer_pop_current(ConsumerCore *self) {
    RecordQueue *q = (RecordQueue *)self->current;
    Message *m = (Message *)q->items[q->head++];
    if (q->head == q->tail) q->head = q->tail = 0;
    if (self->stored && self->stored != Py_None && self->current_tp) {
        PyObject *next = PyLong_FromLongLong(m->offset + 1);
        if (!next || PyDict_SetItem(self->stored, self->current_tp, next) < 0) {
            Py_XDECREF(next);
            Py_DECREF(m);
            return NULL;
        }
        Py_DECREF(next);
    }
    return (PyObject *)m;
}

/* _fetch_solo(): the next Message of the solo reader after a fresh fetch, or None. */
static PyObject *consumer_fetch_solo_py(ConsumerCore *self, PyObject *unused) {
    if (!self->solo || self->pins_held || self->serve_needed || self->fork_generation != fork_generation)
        Py_RETURN_NONE;
    RecordQueue *q = (RecordQueue *)self->solo_queue;
    if (q->head == q->tail) {
        int rc = consumer_fetch_solo(self);
        if (rc < 0) return NULL;
        if (q->head == q->tail) Py_RETURN_NONE;
    }
    Py_XSETREF(self->current, Py_NewRef(self->solo_queue));
    Py_XSETREF(self->current_tp, Py_NewRef(self->solo_tp));
    self->last_poll = now_monotonic_s();
    return consumer_pop_current(self);
}

/* _set_solo(reader, buffer_frames_address, max_frames, check_crc, decode_headers) or _set_solo(None) */
static PyObject *consumer_set_solo(ConsumerCore *self, PyObject *args) {
    PyObject *reader, *decode_headers = Py_None;
    unsigned long long frames = 0;
    unsigned int max_frames = 0;
    int check_crc = 0;
    if (!PyArg_ParseTuple(args, "O|KIiO", &reader, &frames, &max_frames, &check_crc, &decode_headers)) return NULL;
    Py_CLEAR(self->solo);
    Py_CLEAR(self->solo_queue);
    Py_CLEAR(self->solo_topic);
    Py_CLEAR(self->solo_tp);
    if (reader == Py_None) Py_RETURN_NONE;
    PyObject *queue = PyObject_GetAttrString(reader, "pending");
    PyObject *topic = PyObject_GetAttrString(reader, "topic");
    PyObject *partition = PyObject_GetAttrString(reader, "partition");
    PyObject *ring = PyObject_GetAttrString(reader, "ring_address");
    PyObject *cursor = PyObject_GetAttrString(reader, "cursor_address");
    PyObject *result = NULL;
    if (!queue || !topic || !partition || !ring || !cursor) goto done;
    if (!PyObject_TypeCheck(queue, &RecordQueueType) || !PyUnicode_Check(topic)) {
        PyErr_SetString(PyExc_TypeError, "_set_solo: not a reader");
        goto done;
    }
    self->solo_ring = PyLong_AsVoidPtr(ring);
    self->solo_cursor = PyLong_AsUnsignedLongLong(cursor);
    self->solo_partition = (int)PyLong_AsLong(partition);
    if (PyErr_Occurred()) goto done;
    self->solo_tp = PyTuple_Pack(2, topic, partition);
    if (!self->solo_tp) goto done;
    self->solo = Py_NewRef(reader);
    self->solo_queue = Py_NewRef(queue);
    self->solo_topic = Py_NewRef(topic);
    Py_XSETREF(self->decode_headers, Py_NewRef(decode_headers));
    self->frames = frames;
    self->max_frames = max_frames;
    self->check_crc = check_crc;
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(queue);
    Py_XDECREF(topic);
    Py_XDECREF(partition);
    Py_XDECREF(ring);
    Py_XDECREF(cursor);
    return result;
}

static PyObject *consumer_poll(ConsumerCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    RecordQueue *q = (RecordQueue *)self->current;
    int ready = !self->pins_held && !self->serve_needed && self->fork_generation == fork_generation;
    if (ready && self->solo && (!q || (PyObject *)q == Py_None || q->head == q->tail)) {
        PyObject *m = consumer_fetch_solo_py(self, NULL);
        if (m != Py_None) return m;   /* a Message, or NULL with the exception */
        Py_DECREF(m);
        q = NULL;
    }
    if (ready && q && (PyObject *)q != Py_None && q->head < q->tail) {
        self->last_poll = now_monotonic_s();
        return consumer_pop_current(self);
    }
    return call_slow((PyObject *)self, str_poll_slow, args, nargs, kwnames);
}

static PyMethodDef consumer_core_methods[] = {
    {"_set_solo", (PyCFunction)consumer_set_solo, METH_VARARGS, NULL},
    {"_fetch_solo", (PyCFunction)consumer_fetch_solo_py, METH_NOARGS, NULL},
    {"poll", (PyCFunction)(void (*)(void))consumer_poll, METH_FASTCALL | METH_KEYWORDS,
     "poll(timeout=None): the next Message, an event or error Message, or None."},
    {NULL},
};

static PyMemberDef consumer_core_members[] = {
    {"_current", T_OBJECT, offsetof(ConsumerCore, current), 0, NULL},
    {"_current_tp", T_OBJECT, offsetof(ConsumerCore, current_tp), 0, NULL},
    {"_fast_stored", T_OBJECT, offsetof(ConsumerCore, stored), 0, NULL},
    {"_pins_held", T_BOOL, offsetof(ConsumerCore, pins_held), 0, NULL},
    {"_serve_needed", T_BOOL, offsetof(ConsumerCore, serve_needed), 0, NULL},
    {"_fast_last_poll", T_DOUBLE, offsetof(ConsumerCore, last_poll), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(ConsumerCore, dict), READONLY, NULL},
    {NULL},
};

static PyTypeObject ConsumerCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmlog._fast.ConsumerCore",
    .tp_basicsize = sizeof(ConsumerCore),
    .tp_dictoffset = offsetof(ConsumerCore, dict),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = consumer_core_new,
    .tp_dealloc = (destructor)consumer_core_dealloc,
    .tp_traverse = (traverseproc)consumer_core_traverse,
    .tp_clear = (inquiry)consumer_core_clear,
    .tp_methods = consumer_core_methods,
    .tp_members = consumer_core_members,
};

/* ---------------------------------------------------------------- Batch */

typedef struct Route Route;

typedef struct {
    PyObject_HEAD
    Route *route;
    int partition;
    uint8_t *records;
    Py_ssize_t records_bytes, capacity;
    uint32_t count;
    long long base_timestamp, max_timestamp;
    Py_ssize_t size_bytes;             /* as counted against batch.size and buffer.memory */
    double created;
    PyObject *reports;                 /* list of (index, callback, key, value, timestamp, headers), or NULL */
    long long base_offset;
    long long status;                  /* the ring append's return code, 0 before it ran */
    Py_ssize_t exports;
} Batch;

static PyTypeObject BatchType;

static void batch_dealloc(Batch *self) {
    Py_XDECREF((PyObject *)self->route);
    Py_XDECREF(self->reports);
    PyMem_Free(self->records);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int batch_getbuffer(Batch *self, Py_buffer *view, int flags) {
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->records, self->records_bytes, 1, flags) < 0) return -1;
    self->exports++;
    return 0;
}

static void batch_releasebuffer(Batch *self, Py_buffer *view) { self->exports--; }

static PyBufferProcs batch_as_buffer = {(getbufferproc)batch_getbuffer, (releasebufferproc)batch_releasebuffer};

static PyObject *batch_get_topic(Batch *self, void *closure);

static Py_ssize_t batch_length(Batch *self) { return self->count; }

static PySequenceMethods batch_as_sequence = {.sq_length = (lenfunc)batch_length};

static PyMemberDef batch_members[] = {
    {"route", T_OBJECT, offsetof(Batch, route), READONLY, NULL},
    {"partition", T_INT, offsetof(Batch, partition), READONLY, NULL},
    {"count", T_UINT, offsetof(Batch, count), READONLY, NULL},
    {"base_timestamp", T_LONGLONG, offsetof(Batch, base_timestamp), READONLY, NULL},
    {"max_timestamp", T_LONGLONG, offsetof(Batch, max_timestamp), READONLY, NULL},
    {"size_bytes", T_PYSSIZET, offsetof(Batch, size_bytes), READONLY, NULL},
    {"records_bytes", T_PYSSIZET, offsetof(Batch, records_bytes), READONLY, NULL},
    {"created", T_DOUBLE, offsetof(Batch, created), READONLY, NULL},
    {"reports", T_OBJECT, offsetof(Batch, reports), READONLY, NULL},
    {"base_offset", T_LONGLONG, offsetof(Batch, base_offset), 0, NULL},
    {"status", T_LONGLONG, offsetof(Batch, status), 0, NULL},
    {NULL},
};

static PyGetSetDef batch_getset[] = {
    {"topic", (getter)batch_get_topic, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmlog._fast.Batch",
    .tp_doc = "An open record batch of one partition: its records section, encoded as records arrive.",
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_as_buffer = &batch_as_buffer,
    .tp_as_sequence = &batch_as_sequence,
    .tp_members = batch_members,
    .tp_getset = batch_getset,
};

/* ---------------------------------------------------------------- Route */

struct Route {
    PyObject_HEAD
    PyObject *topic;
    PyObject *rings;                  /* the Ring objects, kept alive with their handles */
    int partitions;
    Py_ssize_t record_limit, batch_limit;
    int sticky;                       /* partition null keys go to until its batch is sent; -1: none */
    void **ring_handles;
    int *slots;
    Batch **open;                     /* per partition: the batch records are being added to, or NULL */
};

static PyTypeObject RouteType;

static PyObject *batch_get_topic(Batch *self, void *closure) { return Py_NewRef(self->route->topic); }

/* Route(topic, partitions, record_limit, batch_limit, rings, ring_handles, slots) */
static PyObject *route_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *topic, *rings, *handles, *slots;
    int partitions;
    Py_ssize_t record_limit, batch_limit;
    if (!PyArg_ParseTuple(args, "UinnOOO", &topic, &partitions, &record_limit, &batch_limit, &rings, &handles,
                          &slots))
        return NULL;
    if (partitions < 1 || partitions > 1 << 20 || PySequence_Length(handles) != partitions ||
        PySequence_Length(slots) != partitions) {
        PyErr_SetString(PyExc_ValueError, "Route: one ring handle and one slot per partition");
        return NULL;
    }
    Route *self = (Route *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->topic = Py_NewRef(topic);
    self->rings = Py_NewRef(rings);
    self->partitions = partitions;
    self->record_limit = record_limit;
    self->batch_limit = batch_limit;
    self->sticky = -1;
    self->ring_handles = PyMem_Calloc(partitions, sizeof(void *));
    self->slots = PyMem_Calloc(partitions, sizeof(int));
    self->open = PyMem_Calloc(partitions, sizeof(Batch *));
    if (!self->ring_handles || !self->slots || !self->open) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (int p = 0; p < partitions; p++) {
        PyObject *h = PySequence_GetItem(handles, p), *s = PySequence_GetItem(slots, p);
        if (h) self->ring_handles[p] = PyLong_AsVoidPtr(h);
        if (s) self->slots[p] = (int)PyLong_AsLong(s);
        Py_XDECREF(h);
        Py_XDECREF(s);
        if (PyErr_Occurred()) { Py_DECREF(self); return NULL; }
    }
    return (PyObject *)self;
}

static void route_dealloc(Route *self) {
    if (self->open)
        for (int p = 0; p < self->partitions; p++) Py_XDECREF((PyObject *)self->open[p]);
    PyMem_Free(self->open);
    PyMem_Free(self->ring_handles);
    PyMem_Free(self->slots);
    Py_XDECREF(self->topic);
    Py_XDECREF(self->rings);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef route_members[] = {
    {"topic", T_OBJECT, offsetof(Route, topic), READONLY, NULL},
    {"rings", T_OBJECT, offsetof(Route, rings), READONLY, NULL},
    {"partitions", T_INT, offsetof(Route, partitions), READONLY, NULL},
    {"record_limit", T_PYSSIZET, offsetof(Route, record_limit), READONLY, NULL},
    {"batch_limit", T_PYSSIZET, offsetof(Route, batch_limit), READONLY, NULL},
    {"sticky", T_INT, offsetof(Route, sticky), 0, NULL},
    {NULL},
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmlog._fast.Route",
    .tp_doc = "What produce() needs of one topic.",
    .tp_basicsize = sizeof(Route),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = route_new,
    .tp_dealloc = (destructor)route_dealloc,
    .tp_members = route_members,
};

/* ---------------------------------------------------------------- ProducerCore */

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *routes;               /* topic -> Route */
    PyObject *on_delivery;          /* default delivery callback, or None */
    PyObject *wake;                 /* called when a batch opens (wakes the linger thread), or None */
    PyObject *ready;                /* list of Batches to append, in the order they closed */
    const volatile uint64_t *metadata_epoch;
    uint64_t routes_epoch;
    unsigned long fork_generation;
    int fast_partitioner;           /* murmur2 / murmur2_random: hashed here */
    int null_key_random;
    int linger_zero;
    int acks;
    int compressed;                 /* batches go through _send_python (compression) */
    long long batch_records;
    long long max_queued_records;
    long long max_queued_bytes;
    long long queued_records;
    long long queued_bytes;
    long long max_block_ns;
    void *doorbell;
    pthread_mutex_t send_lock;
} ProducerCore;

static PyObject *producer_core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    ProducerCore *self = (ProducerCore *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->fork_generation = fork_generation;
    pthread_mutex_init(&self->send_lock, NULL);
    self->routes = PyDict_New();
    self->ready = PyList_New(0);
    self->on_delivery = Py_NewRef(Py_None);
    self->wake = Py_NewRef(Py_None);
    static const uint64_t never = UINT64_MAX;
    self->metadata_epoch = &never;     /* every produce() takes the slow path until _configure */
    if (!self->routes || !self->ready) { Py_DECREF(self); return NULL; }
    return (PyObject *)self;
}

/* _configure(on_delivery, wake, epoch_address, doorbell, fast_partitioner, null_key_random, linger_zero,
 *            acks, compressed, batch_records, max_queued_records, max_queued_bytes, max_block_ms) */
static PyObject *producer_configure(ProducerCore *self, PyObject *args) {
    PyObject *on_delivery, *wake;
    unsigned long long epoch_address, doorbell;
    long long max_block_ms;
    if (!PyArg_ParseTuple(args, "OOKKpppipLLLL", &on_delivery, &wake, &epoch_address, &doorbell,
                          &self->fast_partitioner, &self->null_key_random, &self->linger_zero, &self->acks,
                          &self->compressed, &self->batch_records, &self->max_queued_records,
                          &self->max_queued_bytes, &max_block_ms))
        return NULL;
    Py_XSETREF(self->on_delivery, Py_NewRef(on_delivery));
    Py_XSETREF(self->wake, Py_NewRef(wake));
    self->metadata_epoch = (const volatile uint64_t *)(uintptr_t)epoch_address;
    self->routes_epoch = *self->metadata_epoch;
    self->doorbell = (void *)(uintptr_t)doorbell;
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

static Batch *batch_open(Route *route, int partition) {
    Batch *b = PyObject_New(Batch, &BatchType);
    if (!b) return NULL;
    Py_INCREF(route);
    b->route = route;
    b->partition = partition;
    b->records = NULL;
    b->records_bytes = b->capacity = 0;
    b->count = 0;
    b->base_timestamp = b->max_timestamp = 0;
    b->size_bytes = 0;
    b->created = now_monotonic_s();
    b->reports = NULL;
    b->base_offset = -1;
    b->status = 0;
    b->exports = 0;
    return b;
}

static int batch_add(Batch *b, const char *key, Py_ssize_t key_len, const char *value, Py_ssize_t value_len,
                     long long timestamp, const char *headers, Py_ssize_t headers_len) {
    if (b->count == 0) b->base_timestamp = b->max_timestamp = timestamp;
    if (timestamp > b->max_timestamp) b->max_timestamp = timestamp;
    int64_t ts_delta = timestamp - b->base_timestamp;
    uint64_t body = record_body_bytes(ts_delta, b->count, (int32_t)key_len, (int32_t)value_len, (int32_t)headers_len);
    Py_ssize_t need = (Py_ssize_t)(varint_size(zigzag((int64_t)body)) + body);
    if (b->records_bytes + need > b->capacity) {
        Py_ssize_t cap = b->capacity ? b->capacity * 2 : 4096;
        while (cap < b->records_bytes + need) cap *= 2;
        uint8_t *records = PyMem_Realloc(b->records, cap);
        if (!records) { PyErr_NoMemory(); return -1; }
        b->records = records;
        b->capacity = cap;
    }
    uint8_t *p = b->records + b->records_bytes;
    p = varint_put(p, zigzag((int64_t)body));
    *p++ = 0;
    p = varint_put(p, zigzag(ts_delta));
    p = varint_put(p, zigzag(b->count));
    p = varint_put(p, zigzag(key_len));
    if (key_len > 0) { memcpy(p, key, key_len); p += key_len; }
    p = varint_put(p, zigzag(value_len));
    if (value_len > 0) { memcpy(p, value, value_len); p += value_len; }
    if (headers_len > 0) { memcpy(p, headers, headers_len); p += headers_len; }
    else *p++ = 0;
    b->records_bytes += need;
    b->count++;
    return 0;
}

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

static int producer_append(ProducerCore *self, Batch *b) {
    Route *route = b->route;
    void *ring = route->ring_handles[b->partition];
    int slot = route->slots[b->partition];
    uint64_t base = 0;
    int64_t rc;
    Py_BEGIN_ALLOW_THREADS
    rc = core.ring_append(ring, slot, b->records, (uint32_t)b->records_bytes, b->count, b->base_timestamp,
                          b->max_timestamp, 0, -1, -1, -1, self->max_block_ns, self->doorbell, &base);
    Py_END_ALLOW_THREADS
    b->status = rc < 0 ? rc : 0;
    b->base_offset = rc < 0 ? -1 : (long long)base;
    if (rc >= 0 && self->acks == -1) core.request_flush(ring, base + b->count);
    if (rc >= 0 && self->acks != -1 && !b->reports) {
        self->queued_records -= b->count;
        self->queued_bytes -= b->size_bytes;
        return 0;
    }
    PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, str_after_send, (PyObject *)b);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Appends every ready batch to its ring, oldest first. One thread at a time appends (the
 * send lock), so batches of a partition reach the ring in the order they closed and a
 * producer slot is never used by two appends at once. */
static int producer_drain(ProducerCore *self) {
    if (PyList_GET_SIZE(self->ready) == 0) return 0;
    send_lock_acquire(self);
    int rc = 0;
    while (rc == 0 && PyList_GET_SIZE(self->ready) > 0) {
        Batch *b = (Batch *)Py_NewRef(PyList_GET_ITEM(self->ready, 0));
        if (PyList_SetSlice(self->ready, 0, 1, NULL) < 0) { Py_DECREF(b); rc = -1; break; }
        if (self->compressed || !core.ring_append) {
            PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, str_send_python, (PyObject *)b);
            rc = r ? 0 : -1;
            Py_XDECREF(r);
        } else {
            rc = producer_append(self, b);
        }
        Py_DECREF(b);
    }
    pthread_mutex_unlock(&self->send_lock);
    return rc;
}

/* The part of produce() after validation, shared by the fast path and _add(). */
static int producer_add(ProducerCore *self, Route *route, int partition, PyObject *key, PyObject *value,
                        long long timestamp, PyObject *headers, PyObject *raw_headers, PyObject *callback,
                        Py_ssize_t size) {
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
        PyObject *report = Py_BuildValue("(IOOOLO)", index, callback, key, value, timestamp, raw_headers);
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

static int is_bytes_or_none(PyObject *o) { return o == Py_None || PyBytes_CheckExact(o); }

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
        if (j == PRODUCE_ARGS || a[j]) goto slow;   /* let Python raise the TypeError */
        a[j] = args[nargs + i];
    }
    PyObject *topic = a[0], *value = a[1] ? a[1] : Py_None, *key = a[2] ? a[2] : Py_None;
    PyObject *headers = a[6] ? a[6] : Py_None;
    PyObject *callback = a[4] && a[4] != Py_None ? a[4] : (a[7] && a[7] != Py_None ? a[7] : self->on_delivery);
    if (!topic || !PyUnicode_CheckExact(topic) || !is_bytes_or_none(value) || !is_bytes_or_none(key) ||
        headers != Py_None || self->fork_generation != fork_generation || *self->metadata_epoch != self->routes_epoch)
        goto slow;
    Route *route = (Route *)PyDict_GetItemWithError(self->routes, topic);
    if (!route) {
        if (PyErr_Occurred()) return NULL;
        goto slow;
    }
    Py_ssize_t size = (value != Py_None ? PyBytes_GET_SIZE(value) : 0) +
                      (key != Py_None ? PyBytes_GET_SIZE(key) : 0) + RECORD_OVERHEAD_BYTES;
    if (size > route->record_limit || self->queued_records >= self->max_queued_records ||
        self->queued_bytes + size > self->max_queued_bytes)
        goto slow;
    long partition = -1;
    if (a[3]) {
        if (!PyLong_CheckExact(a[3])) goto slow;
        partition = PyLong_AsLong(a[3]);
        if (partition == -1 && PyErr_Occurred()) { PyErr_Clear(); goto slow; }
        if (partition >= route->partitions) goto slow;
    }
    if (partition < 0) {
        if (!self->fast_partitioner) goto slow;
        if (key == Py_None && self->null_key_random) {
            if (route->sticky < 0) route->sticky = (int)(random_next() % (uint32_t)route->partitions);
            partition = route->sticky;
        } else {
            const char *k = key == Py_None ? "" : PyBytes_AS_STRING(key);
            Py_ssize_t klen = key == Py_None ? 0 : PyBytes_GET_SIZE(key);
            partition = (long)((uint32_t)(core.murmur2(k, klen) & 0x7FFFFFFF) % (uint32_t)route->partitions);
        }
    }
    long long timestamp = 0;
    if (a[5]) {
        if (!PyLong_CheckExact(a[5])) goto slow;
        timestamp = PyLong_AsLongLong(a[5]);
        if (timestamp == -1 && PyErr_Occurred()) { PyErr_Clear(); goto slow; }
    }
    if (timestamp == 0) timestamp = now_unix_ms();
    if (producer_add(self, route, (int)partition, key, value, timestamp, Py_None, Py_None, callback, size) < 0)
        return NULL;
    Py_RETURN_NONE;
slow:
    return call_slow((PyObject *)self, str_produce_slow, args, nargs, kwnames);
}

/* _add(route, partition, key, value, timestamp, headers_bytes, raw_headers, callback, size): the
 * slow path's way in, after it validated and converted everything. */
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

/* _close_batches(force, linger_s): closes open batches (all with force, else those open for
 * linger_s or longer) and appends them; returns the seconds until the next one is due, or None. */
static int close_batches(ProducerCore *self, int force, double linger_s, double *next_due_out) {
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

static PyObject *producer_close_batches(ProducerCore *self, PyObject *args) {
    int force;
    double linger_s, next_due;
    if (!PyArg_ParseTuple(args, "pd", &force, &linger_s)) return NULL;
    if (close_batches(self, force, linger_s, &next_due) < 0) return NULL;
    if (next_due < 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(next_due);
}

/* _reset_routes(): appends every open batch and forgets the routes (metadata moved). */
static PyObject *producer_reset_routes(ProducerCore *self, PyObject *unused) {
    double next_due;
    if (close_batches(self, 1, 0.0, &next_due) < 0) return NULL;
    PyDict_Clear(self->routes);
    self->routes_epoch = *self->metadata_epoch;
    Py_RETURN_NONE;
}

/* _purge(): takes every open batch away unsent; returns them. */
static PyObject *producer_purge(ProducerCore *self, PyObject *unused) {
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

static PyObject *producer_routes_epoch_seen(ProducerCore *self, PyObject *unused) {
    return PyBool_FromLong(*self->metadata_epoch == self->routes_epoch);
}

static PyMethodDef producer_core_methods[] = {
    {"produce", (PyCFunction)(void (*)(void))producer_produce, METH_FASTCALL | METH_KEYWORDS,
     "produce(topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0, headers=None)"},
    {"_configure", (PyCFunction)producer_configure, METH_VARARGS, NULL},
    {"_add", (PyCFunction)producer_add_py, METH_VARARGS, NULL},
    {"_close_batches", (PyCFunction)producer_close_batches, METH_VARARGS, NULL},
    {"_reset_routes", (PyCFunction)producer_reset_routes, METH_NOARGS, NULL},
    {"_routes_current", (PyCFunction)producer_routes_epoch_seen, METH_NOARGS, NULL},
    {"_purge", (PyCFunction)producer_purge, METH_NOARGS, NULL},
    {"_release_queued", (PyCFunction)producer_release_queued, METH_VARARGS, NULL},
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

static PyTypeObject ProducerCoreType = {
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


/* ---------------------------------------------------------------- record columns */

/* index_columns(refs, count, bias, first_offset, at, offsets, timestamps, key_pos, key_len,
 *               value_pos, value_len): copies the refs at or after first_offset into the column
 * arrays from row `at`, positions moved by bias (a batch's place in the mapping); returns the
 * next free row. One pass in C instead of a NumPy operation per field per batch. */
static PyObject *fast_index_columns(PyObject *module, PyObject *args) {
    Py_buffer refs_buf, col[6];
    Py_ssize_t count, at;
    long long bias, first_offset;
    static const Py_ssize_t width[6] = {8, 8, 8, 4, 8, 4};
    if (!PyArg_ParseTuple(args, "y*nLLnw*w*w*w*w*w*", &refs_buf, &count, &bias, &first_offset, &at, &col[0],
                          &col[1], &col[2], &col[3], &col[4], &col[5]))
        return NULL;
    PyObject *result = NULL;
    const shmlog_record_ref *refs = refs_buf.buf;
    if (count < 0 || (size_t)count * sizeof(shmlog_record_ref) > (size_t)refs_buf.len || at < 0) {
        PyErr_SetString(PyExc_ValueError, "index_columns: refs shorter than count");
        goto done;
    }
    for (int c = 0; c < 6; c++)
        if (col[c].len < (at + count) * width[c]) {
            PyErr_SetString(PyExc_ValueError, "index_columns: column arrays too short");
            goto done;
        }
    int64_t *offsets = col[0].buf, *timestamps = col[1].buf, *key_pos = col[2].buf, *value_pos = col[4].buf;
    int32_t *key_len = col[3].buf, *value_len = col[5].buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        const shmlog_record_ref *r = &refs[i];
        if (r->offset < first_offset) continue;
        offsets[at] = r->offset;
        timestamps[at] = r->timestamp;
        key_pos[at] = r->key_pos + bias;
        key_len[at] = r->key_len;
        value_pos[at] = r->value_pos + bias;
        value_len[at] = r->value_len;
        at++;
    }
    result = PyLong_FromSsize_t(at);
done:
    PyBuffer_Release(&refs_buf);
    for (int c = 0; c < 6; c++) PyBuffer_Release(&col[c]);
    return result;
}


/* serve_reports(batch, error): calls each report's callback(error, Message) for a delivered (or
 * failed: offsets -1001) batch; returns how many were called. */
static PyObject *fast_serve_reports(PyObject *module, PyObject *args) {
    Batch *b;
    PyObject *err;
    if (!PyArg_ParseTuple(args, "O!O", &BatchType, &b, &err)) return NULL;
    if (!b->reports) return PyLong_FromLong(0);
    PyObject *reports = Py_NewRef(b->reports);
    Py_ssize_t n = PyList_GET_SIZE(reports);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned int index;
        PyObject *cb, *key, *value, *headers;
        long long ts;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(reports, i), "IOOOLO", &index, &cb, &key, &value, &ts, &headers))
            goto fail;
        long long offset = err == Py_None ? b->base_offset + index : -1001;
        Message *m = message_new_fast(b->route->topic, b->partition, offset, Py_NewRef(key), Py_NewRef(value),
                                      Py_NewRef(headers), 1, ts);
        if (!m) goto fail;
        m->error = Py_NewRef(err);
        PyObject *r = PyObject_CallFunctionObjArgs(cb, err, (PyObject *)m, NULL);
        Py_DECREF(m);
        if (!r) goto fail;
        Py_DECREF(r);
    }
    Py_DECREF(reports);
    return PyLong_FromSsize_t(n);
fail:
    Py_DECREF(reports);
    return NULL;
}

/* ---------------------------------------------------------------- module */

static PyMethodDef fast_methods[] = {
    {"bind", fast_bind, METH_VARARGS, "bind(murmur2_address, ring_append_address): the C core's entry points."},
    {"fetch_ring", fast_fetch_ring, METH_VARARGS, "One ring fetch decoded into a RecordQueue (see Consumer._fetch)."},
    {"serve_reports", fast_serve_reports, METH_VARARGS, "Delivery callbacks of one batch (see Producer.poll)."},
    {"index_columns", fast_index_columns, METH_VARARGS, "Record refs -> column arrays (see RecordBatchView)."},
    {NULL},
};

static struct PyModuleDef fast_module = {PyModuleDef_HEAD_INIT, "shmlog._fast", NULL, -1, fast_methods};

PyMODINIT_FUNC PyInit__fast(void) {
    PyTypeObject *types[] = {&MessageType, &RecordQueueType, &ConsumerCoreType, &BatchType, &RouteType,
                             &ProducerCoreType};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyType_Ready(types[i]) < 0) return NULL;
    str_poll_slow = PyUnicode_InternFromString("_poll_slow");
    str_produce_slow = PyUnicode_InternFromString("_produce_slow");
    str_send_python = PyUnicode_InternFromString("_send_python");
    str_after_send = PyUnicode_InternFromString("_after_send");
    str_on_ring = PyUnicode_InternFromString("on_ring");
    str_next_offset = PyUnicode_InternFromString("next_offset");
    str_buffer = PyUnicode_InternFromString("_buffer");
    if (!str_poll_slow || !str_produce_slow || !str_send_python || !str_after_send || !str_on_ring ||
        !str_next_offset || !str_buffer)
        return NULL;
    pthread_atfork(NULL, NULL, after_fork_in_child);
    PyObject *m = PyModule_Create(&fast_module);
    if (!m) return NULL;
    const char *names[] = {"Message", "RecordQueue", "ConsumerCore", "Batch", "Route", "ProducerCore"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) return NULL;
    return m;
}
