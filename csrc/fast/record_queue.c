/* RecordQueue: a reader's decoded-but-not-returned Messages, oldest first, and the decoding
 * of fetched batches into it (fill() for refs Python indexed, fetch_ring() for a ring run). */
#include "fast.h"

static Py_ssize_t record_queue_length(RecordQueue *self) { return self->tail - self->head; }

static void record_queue_clear_items(RecordQueue *self) {
    for (Py_ssize_t i = self->head; i < self->tail; i++) Py_DECREF(self->items[i]);
    self->head = self->tail = 0;
}

static int record_queue_reserve(RecordQueue *self, Py_ssize_t more) {
    if (self->tail + more <= self->capacity) return 0;
    Py_ssize_t n = record_queue_length(self);
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

static void record_queue_dealloc(RecordQueue *self) {
    record_queue_clear_items(self);
    PyMem_Free(self->items);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *record_queue_popleft(RecordQueue *self, PyObject *Py_UNUSED(ignored)) {
    if (record_queue_is_empty(self)) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty RecordQueue");
        return NULL;
    }
    return record_queue_pop(self);
}

static PyObject *record_queue_take(RecordQueue *self, PyObject *arg) {
    Py_ssize_t want = PyLong_AsSsize_t(arg);
    if (want == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = record_queue_length(self);
    if (want < n) n = want < 0 ? 0 : want;
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) PyList_SET_ITEM(out, i, self->items[self->head + i]); /* moved */
    self->head += n;
    if (self->head == self->tail) self->head = self->tail = 0;
    return out;
}

static PyObject *record_queue_clear(RecordQueue *self, PyObject *Py_UNUSED(ignored)) {
    record_queue_clear_items(self);
    Py_RETURN_NONE;
}

static PyObject *record_queue_item(RecordQueue *self, Py_ssize_t i) {
    if (i < 0 || i >= record_queue_length(self)) {
        PyErr_SetString(PyExc_IndexError, "RecordQueue index out of range");
        return NULL;
    }
    return Py_NewRef(self->items[self->head + i]);
}

/* ---------------------------------------------------------------- decoding into the queue */

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
static Py_ssize_t record_queue_fill_refs(RecordQueue *self, PyObject *buffer_obj, const void *buffer,
                                         Py_ssize_t buffer_len, Py_ssize_t bias, const shmlog_record_ref *refs,
                                         Py_ssize_t count, PyObject *topic, int partition, int ts_type,
                                         long long first_offset, PyObject *decode_headers) {
    if (record_queue_reserve(self, count) < 0) return -1;
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
        self->bytes_in += (r->key_len > 0 ? r->key_len : 0) + (r->value_len > 0 ? r->value_len : 0);
        added++;
    }
    self->records_in += added;
    return added;
}

static shmlog_record_ref *decode_scratch;
static uint32_t decode_scratch_records;

int record_queue_decode_frames(RecordQueue *queue, PyObject *buffer_obj, const Py_buffer *buf,
                               const shmlog_frame_ref *frames, int64_t n, int check_crc, PyObject *topic,
                               int partition, PyObject *decode_headers, long long *wanted_io,
                               Py_ssize_t *added_out, long long *stop_out) {
    long long wanted = *wanted_io;
    Py_ssize_t added = 0;
    int64_t i = 0;
    for (; i < n; i++) {
        const shmlog_frame_ref *f = &frames[i];
        const uint8_t *batch = (const uint8_t *)buf->buf + f->dst_pos;
        long long batch_end = (long long)(f->base_offset + f->record_count);
        if (batch_end <= wanted) continue;
        uint16_t attributes = batch_attributes(batch);
        int32_t count = batch_record_count(batch);
        if (!batch_carries_records(attributes, count)) {
            wanted = batch_end;
            continue;
        }
        if (attributes & SHMLOG_ATTR_COMPRESSION_MASK) break;
        /* Every record takes several bytes: a count beyond the batch's bytes is corrupt, and the
         * Python decoder (which stops here too) reports it instead of us allocating for it. */
        if ((uint64_t)count > f->batch_bytes) break;
        if ((uint32_t)count > decode_scratch_records) {
            shmlog_record_ref *grown = PyMem_Realloc(decode_scratch, (size_t)count * sizeof(shmlog_record_ref));
            if (!grown) { PyErr_NoMemory(); return -1; }
            decode_scratch = grown;
            decode_scratch_records = (uint32_t)count;
        }
        int64_t k = core->batch_index(batch, f->batch_bytes, decode_scratch, decode_scratch_records, check_crc);
        if (k < 0) break;
        int ts_type = attributes & SHMLOG_ATTR_LOG_APPEND_TIME ? 2 : 1;
        Py_ssize_t got = record_queue_fill_refs(queue, buffer_obj, buf->buf, buf->len, (Py_ssize_t)f->dst_pos,
                                                decode_scratch, k, topic, partition, ts_type, wanted, decode_headers);
        if (got < 0) return -1;
        added += got;
        wanted = batch_end;
    }
    *wanted_io = wanted;
    *added_out = added;
    *stop_out = i;
    return 0;
}

/* fetch_ring(queue, ring, cursor, buffer, frames, max_frames, check_crc, topic, partition, first_offset,
 *            decode_headers) -> (status, added, next_offset, stop)
 * One ring fetch into buffer and the decoding of its plain batches into queue, in C: status is
 * the fetch's frame count or its negative status (nothing decoded); batches that carry no
 * records are skipped; decoding stops at the first compressed or invalid batch, whose index is
 * `stop` (the frame count when every batch was decoded) for the Python decoder to take over
 * from with next_offset. */
PyObject *fast_fetch_ring(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *queue, *buffer_obj, *topic, *decode_headers;
    unsigned long long ring, cursor, frames_address;
    unsigned int max_frames;
    int check_crc, partition;
    long long wanted;
    if (!PyArg_ParseTuple(args, "O!KKOKIiUiLO", &RecordQueueType, &queue, &ring, &cursor, &buffer_obj,
                          &frames_address, &max_frames, &check_crc, &topic, &partition, &wanted, &decode_headers))
        return NULL;
    if (!core) return PyErr_Format(PyExc_RuntimeError, "shmlog._native._fast is not bound to the C core");
    Py_buffer buf;
    if (PyObject_GetBuffer(buffer_obj, &buf, PyBUF_WRITABLE) < 0) return NULL;
    shmlog_frame_ref *frames = (shmlog_frame_ref *)(uintptr_t)frames_address;
    int64_t n = core->ring_fetch((const shmlog_ring_handle *)(uintptr_t)ring, (shmlog_cursor *)(uintptr_t)cursor,
                                 buf.buf, (uint64_t)buf.len, frames, max_frames, check_crc);
    Py_ssize_t added = 0;
    long long stop = 0;
    if (n > 0 && record_queue_decode_frames((RecordQueue *)queue, buffer_obj, &buf, frames, n, check_crc, topic,
                                            partition, decode_headers, &wanted, &added, &stop) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("(LnLL)", (long long)n, added, wanted, stop);
}

/* fill(buffer, refs, count, position_bias, topic, partition, timestamp_type, first_offset, decode_headers)
 * appends a Message for each record ref at or after first_offset; positions in refs are
 * relative to position_bias within buffer. Returns how many were appended. */
static PyObject *record_queue_fill(RecordQueue *self, PyObject *args) {
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
    if (count < 0 || (size_t)count * sizeof(shmlog_record_ref) > (size_t)refs_buf.len || bias < 0 || bias > buf.len) {
        PyErr_SetString(PyExc_ValueError, "record refs outside their arrays");
        goto done;
    }
    Py_ssize_t added = record_queue_fill_refs(self, PyTuple_GET_ITEM(args, 0), buf.buf, buf.len, bias, refs, count,
                                              topic, partition, ts_type, first_offset, decode_headers);
    if (added >= 0) result = PyLong_FromSsize_t(added);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&refs_buf);
    return result;
}

static PyMemberDef record_queue_members[] = {
    {"records_in", T_LONGLONG, offsetof(RecordQueue, records_in), READONLY, "records decoded into the queue so far"},
    {"bytes_in", T_LONGLONG, offsetof(RecordQueue, bytes_in), READONLY, "their key and value bytes"},
    {NULL},
};

static PyMethodDef record_queue_methods[] = {
    {"popleft", (PyCFunction)record_queue_popleft, METH_NOARGS, "popleft(): the oldest Message."},
    {"clear", (PyCFunction)record_queue_clear, METH_NOARGS, NULL},
    {"take", (PyCFunction)record_queue_take, METH_O, "take(n): up to n Messages from the front, as a list."},
    {"fill", (PyCFunction)record_queue_fill, METH_VARARGS, NULL},
    {NULL},
};

static PySequenceMethods record_queue_as_sequence = {
    .sq_length = (lenfunc)record_queue_length,
    .sq_item = (ssizeargfunc)record_queue_item,
};

PyTypeObject RecordQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmlog._fast.RecordQueue",
    .tp_doc = "Decoded Messages of one partition, oldest first.",
    .tp_basicsize = sizeof(RecordQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)record_queue_dealloc,
    .tp_methods = record_queue_methods,
    .tp_members = record_queue_members,
    .tp_as_sequence = &record_queue_as_sequence,
};
