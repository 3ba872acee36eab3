/* Route: what produce() needs of one topic: partition count, the record and batch limits, the
 * ring handle and producer slot of each partition, and the batch open on each. */
#include "fast.h"

/* ---------------------------------------------------------------- sticky partition for null keys */

static uint64_t random_state = 0x9E3779B97F4A7C15ULL;

void route_random_seed(void) { random_state ^= (uint64_t)getpid() * 0x100000001B3ULL ^ (uint64_t)now_unix_ms(); }

static uint32_t random_next(void) { /* xorshift64: spreads null keys, nothing secret */
    random_state ^= random_state << 13;
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return (uint32_t)(random_state >> 16);
}

int route_sticky_choose(Route *route) {
    route->sticky = (int)(random_next() % (uint32_t)route->partitions);
    return route->sticky;
}

/* ---------------------------------------------------------------- the type */

/* Route(topic, partitions, record_limit, batch_limit, rings, ring_handles, slots) */
static PyObject *route_new(PyTypeObject *type, PyObject *args, PyObject *Py_UNUSED(kwds)) {
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
    self->ring_handles = PyMem_Calloc(partitions, sizeof(shmlog_ring_handle *));
    self->slots = PyMem_Calloc(partitions, sizeof(int));
    self->open = PyMem_Calloc(partitions, sizeof(Batch *));
    self->tx_records = PyMem_Calloc(partitions, sizeof(long long));
    self->tx_bytes = PyMem_Calloc(partitions, sizeof(long long));
    if (!self->ring_handles || !self->slots || !self->open || !self->tx_records || !self->tx_bytes) {
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
    PyMem_Free(self->tx_records);
    PyMem_Free(self->tx_bytes);
    Py_XDECREF(self->topic);
    Py_XDECREF(self->rings);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* admits(size): the record size rule of produce() (size as record_size() counts it). */
static PyObject *route_admits_py(Route *self, PyObject *arg) {
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(route_admits(self, size));
}

/* tx_counts(): per partition, (records, bytes) appended to its ring so far and (records, bytes)
 * in its open batch. */
static PyObject *route_tx_counts(Route *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(self->partitions);
    if (!out) return NULL;
    for (int p = 0; p < self->partitions; p++) {
        const Batch *b = self->open[p];
        PyObject *pair = Py_BuildValue("(LLIn)", self->tx_records[p], self->tx_bytes[p], b ? b->count : 0u,
                                       b ? b->size_bytes : (Py_ssize_t)0);
        if (!pair) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, p, pair);
    }
    return out;
}

static PyMethodDef route_methods[] = {
    {"tx_counts", (PyCFunction)route_tx_counts, METH_NOARGS,
     "tx_counts(): per partition, (records, bytes) appended to its ring so far and (records, bytes) in its "
     "open batch."},
    {"admits", (PyCFunction)route_admits_py, METH_O,
     "admits(size): whether a record of `size` accounted bytes (record_size()) fits the topic's limits."},
    {NULL},
};

static PyMemberDef route_members[] = {
    {"topic", T_OBJECT, offsetof(Route, topic), READONLY, NULL},
    {"rings", T_OBJECT, offsetof(Route, rings), READONLY, NULL},
    {"partitions", T_INT, offsetof(Route, partitions), READONLY, NULL},
    {"record_limit", T_PYSSIZET, offsetof(Route, record_limit), READONLY, NULL},
    {"batch_limit", T_PYSSIZET, offsetof(Route, batch_limit), READONLY, NULL},
    {"sticky", T_INT, offsetof(Route, sticky), 0, NULL},
    {NULL},
};

PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmlog._fast.Route",
    .tp_doc = "What produce() needs of one topic.",
    .tp_basicsize = sizeof(Route),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = route_new,
    .tp_dealloc = (destructor)route_dealloc,
    .tp_methods = route_methods,
    .tp_members = route_members,
};
