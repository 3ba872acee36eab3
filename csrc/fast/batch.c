/* Batch: a partition's open record batch. Records are encoded into its records section as
 * they are produced (the core's record encoder, shmlog_internal.h); a closed batch is appended
 * to the ring by the ProducerCore, and its delivery reports are served from here. */
#include "fast.h"

Batch *batch_open(Route *route, int partition) {
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
    b->base_sequence = -1;
    b->log_append_time = -1;
    b->exports = 0;
    return b;
}

int batch_grow(Batch *b, Py_ssize_t more) {
    Py_ssize_t cap = b->capacity ? b->capacity * 2 : 4096;
    while (cap < b->records_bytes + more) cap *= 2;
    uint8_t *records = PyMem_Realloc(b->records, cap);
    if (!records) { PyErr_NoMemory(); return -1; }
    b->records = records;
    b->capacity = cap;
    return 0;
}

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

static void batch_releasebuffer(Batch *self, Py_buffer *Py_UNUSED(view)) { self->exports--; }

static PyBufferProcs batch_as_buffer = {(getbufferproc)batch_getbuffer, (releasebufferproc)batch_releasebuffer};

static PyObject *batch_get_topic(Batch *self, void *Py_UNUSED(closure)) { return Py_NewRef(self->route->topic); }

static Py_ssize_t batch_length(Batch *self) { return self->count; }

static PySequenceMethods batch_as_sequence = {.sq_length = (lenfunc)batch_length};

/* serve_reports(batch, error): calls each report's callback(error, Message) for a delivered (or
 * failed: offsets -1001) batch; returns how many were called. Each Message's latency() is the
 * seconds from its produce() to now (one clock read per call), as librdkafka's
 * rd_kafka_message_latency() measures from enqueue to the report. */
PyObject *fast_serve_reports(PyObject *Py_UNUSED(module), PyObject *args) {
    Batch *b;
    PyObject *err;
    if (!PyArg_ParseTuple(args, "O!O", &BatchType, &b, &err)) return NULL;
    if (!b->reports) return PyLong_FromLong(0);
    PyObject *reports = Py_NewRef(b->reports);
    Py_ssize_t n = PyList_GET_SIZE(reports);
    uint64_t now_ns = now_monotonic_ns();
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned int index;
        PyObject *cb, *key, *value, *headers;
        long long ts;
        unsigned long long produced_ns;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(reports, i), "IOOOLOK", &index, &cb, &key, &value, &ts, &headers,
                              &produced_ns))
            goto fail;
        long long offset = err == Py_None ? b->base_offset + index : -1001;
        int appended = err == Py_None && b->log_append_time >= 0; /* Kafka reports the broker's stamp */
        Message *m = message_new_fast(b->route->topic, b->partition, offset, Py_NewRef(key), Py_NewRef(value),
                                      Py_NewRef(headers), appended ? 2 : 1, appended ? b->log_append_time : ts);
        if (!m) goto fail;
        m->error = Py_NewRef(err);
        m->latency = PyFloat_FromDouble(now_ns > produced_ns ? (double)(now_ns - produced_ns) / 1e9 : 0.0);
        if (!m->latency) { Py_DECREF(m); goto fail; }
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
    {"log_append_time", T_LONGLONG, offsetof(Batch, log_append_time), 0, NULL},
    {"status", T_LONGLONG, offsetof(Batch, status), 0, NULL},
    {"base_sequence", T_INT, offsetof(Batch, base_sequence), 0, NULL},
    {NULL},
};

static PyGetSetDef batch_getset[] = {
    {"topic", (getter)batch_get_topic, NULL, NULL, NULL},
    {NULL},
};

PyTypeObject BatchType = {
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
