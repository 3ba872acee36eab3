/* ConsumerCore: the base of Consumer. poll() returns the next decoded record of the partition
 * being served without running Python; with exactly one active reader (the "solo" reader) it
 * also fetches and decodes that reader's next ring run in C when its queue runs dry. */
#include "fast.h"

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
    shmlog_ring_handle *solo_ring;
    shmlog_cursor *solo_cursor;
    shmlog_frame_ref *frames;
    unsigned int max_frames;
    int solo_partition, check_crc;
    int read_committed;       /* isolation.level=read_committed: rings a transaction touched go to Python */
} ConsumerCore;

static PyObject *consumer_core_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds)) {
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

/* The fast path serves only a consumer of this process with nothing for Python to do first. */
static int consumer_fast_ready(const ConsumerCore *self) {
    return !self->pins_held && !self->serve_needed && self->fork_generation == fork_generation;
}

/* The solo reader's next ring run, fetched and decoded here: 1 when records were queued, 0 when
 * there were none (or something for the Python path to handle: it fetches again), -1 on error. */
static int consumer_fetch_solo(ConsumerCore *self) {
    PyObject *reader = self->solo;
    PyObject *on_ring = PyObject_GetAttr(reader, PY_NAME(on_ring));
    if (!on_ring) return -1;
    int is_on_ring = on_ring == Py_True;
    Py_DECREF(on_ring);
    if (!is_on_ring) return 0;
    PyObject *next = PyObject_GetAttr(reader, PY_NAME(next_offset));
    if (!next) return -1;
    long long wanted = PyLong_AsLongLong(next);
    Py_DECREF(next);
    if (wanted == -1 && PyErr_Occurred()) return -1;
    /* Retention moved the log start past us: the Python path seeks (auto.offset.reset). */
    if ((long long)load_acquire(&self->solo_ring->header->persist.log_start_offset) > wanted) return 0;
    /* read_committed: up to the last stable offset; a ring with an aborted transaction goes to the
     * Python path, which knows aborted.txnindex (Consumer._committed_frames). */
    uint32_t max_frames = self->max_frames;
    if (self->read_committed) {
        int64_t k = core->ring_committed_frames(self->solo_ring, self->solo_cursor, self->frames, max_frames);
        if (k <= 0) return 0;
        max_frames = (uint32_t)k;
    }
    PyObject *buffer_obj = PyObject_GetAttr((PyObject *)self, PY_NAME(buffer));
    if (!buffer_obj) return -1;
    Py_buffer buf;
    if (PyObject_GetBuffer(buffer_obj, &buf, PyBUF_WRITABLE) < 0) { Py_DECREF(buffer_obj); return -1; }
    int64_t n = core->ring_fetch(self->solo_ring, self->solo_cursor, buf.buf, (uint64_t)buf.len, self->frames,
                                 max_frames, self->check_crc);
    int rc = 0;
    if (n <= 0) goto done; /* nothing, or a status the Python path handles when it fetches again */
    Py_ssize_t added = 0;
    long long stop;
    rc = -1;
    if (record_queue_decode_frames((RecordQueue *)self->solo_queue, buffer_obj, &buf, self->frames, n,
                                   self->check_crc, self->solo_topic, self->solo_partition, self->decode_headers,
                                   &wanted, &added, &stop) < 0)
        goto done;
    PyObject *w = PyLong_FromLongLong(wanted);
    if (!w || PyObject_SetAttr(reader, PY_NAME(next_offset), w) < 0) { Py_XDECREF(w); goto done; }
    Py_DECREF(w);
    if (stop < n) { /* a compressed or invalid batch: Python decodes from there */
        PyObject *decode_rest = PyObject_GetAttr((PyObject *)self, PY_NAME(decode_rest));
        if (!decode_rest) goto done;
        PyObject *r = PyObject_CallFunction(decode_rest, "OLLn", reader, stop, (long long)n, added);
        Py_DECREF(decode_rest);
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
    Message *m = (Message *)record_queue_pop((RecordQueue *)self->current);
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
static PyObject *consumer_fetch_solo_py(ConsumerCore *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->solo || !consumer_fast_ready(self)) Py_RETURN_NONE;
    RecordQueue *q = (RecordQueue *)self->solo_queue;
    if (record_queue_is_empty(q)) {
        if (consumer_fetch_solo(self) < 0) return NULL;
        if (record_queue_is_empty(q)) Py_RETURN_NONE;
    }
    Py_XSETREF(self->current, Py_NewRef(self->solo_queue));
    Py_XSETREF(self->current_tp, Py_NewRef(self->solo_tp));
    self->last_poll = now_monotonic_s();
    return consumer_pop_current(self);
}

/* _set_solo(reader, frames_address, max_frames, check_crc, decode_headers, read_committed) or _set_solo(None) */
static PyObject *consumer_set_solo(ConsumerCore *self, PyObject *args) {
    PyObject *reader, *decode_headers = Py_None;
    unsigned long long frames = 0;
    unsigned int max_frames = 0;
    int check_crc = 0, read_committed = 0;
    if (!PyArg_ParseTuple(args, "O|KIiOp", &reader, &frames, &max_frames, &check_crc, &decode_headers,
                          &read_committed))
        return NULL;
    Py_CLEAR(self->solo);
    Py_CLEAR(self->solo_queue);
    Py_CLEAR(self->solo_topic);
    Py_CLEAR(self->solo_tp);
    if (reader == Py_None) Py_RETURN_NONE;
    PyObject *queue = PyObject_GetAttr(reader, PY_NAME(pending));
    PyObject *topic = PyObject_GetAttr(reader, PY_NAME(topic));
    PyObject *partition = PyObject_GetAttr(reader, PY_NAME(partition));
    PyObject *ring = PyObject_GetAttr(reader, PY_NAME(ring_address));
    PyObject *cursor = PyObject_GetAttr(reader, PY_NAME(cursor_address));
    PyObject *result = NULL;
    if (!queue || !topic || !partition || !ring || !cursor) goto done;
    if (!PyObject_TypeCheck(queue, &RecordQueueType) || !PyUnicode_Check(topic)) {
        PyErr_SetString(PyExc_TypeError, "_set_solo: not a reader");
        goto done;
    }
    self->solo_ring = PyLong_AsVoidPtr(ring);
    self->solo_cursor = PyLong_AsVoidPtr(cursor);
    self->solo_partition = (int)PyLong_AsLong(partition);
    if (PyErr_Occurred()) goto done;
    self->solo_tp = PyTuple_Pack(2, topic, partition);
    if (!self->solo_tp) goto done;
    self->solo = Py_NewRef(reader);
    self->solo_queue = Py_NewRef(queue);
    self->solo_topic = Py_NewRef(topic);
    Py_XSETREF(self->decode_headers, Py_NewRef(decode_headers));
    self->frames = (shmlog_frame_ref *)(uintptr_t)frames;
    self->max_frames = max_frames;
    self->check_crc = check_crc;
    self->read_committed = read_committed;
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
    int ready = consumer_fast_ready(self);
    if (ready && self->solo && (!q || (PyObject *)q == Py_None || record_queue_is_empty(q))) {
        PyObject *m = consumer_fetch_solo_py(self, NULL);
        if (m != Py_None) return m; /* a Message, or NULL with the exception */
        Py_DECREF(m);
        q = NULL;
    }
    if (ready && q && (PyObject *)q != Py_None && !record_queue_is_empty(q)) {
        self->last_poll = now_monotonic_s();
        return consumer_pop_current(self);
    }
    return call_slow((PyObject *)self, PY_NAME(poll_slow), args, nargs, kwnames);
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

PyTypeObject ConsumerCoreType = {
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
