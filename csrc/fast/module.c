/* The module: its types and functions, bind() to the C core, the fork generation, the table
 * of Python names, and record columns for RecordBatchView. */
#include "fast.h"

const shmlog_core_entry_points *core;
unsigned long fork_generation;

static void fork_generation_bump_in_child(void) { fork_generation++; }

/* ---------------------------------------------------------------- Python names C looks up */

#define FAST_NAME_STRING(id, name, owner) name,
static const char *const fast_name_strings[FAST_NAME_COUNT] = {FAST_PYTHON_NAMES(FAST_NAME_STRING)};
#undef FAST_NAME_STRING
#define FAST_NAME_OWNER(id, name, owner) owner,
static const char *const fast_name_owners[FAST_NAME_COUNT] = {FAST_PYTHON_NAMES(FAST_NAME_OWNER)};
#undef FAST_NAME_OWNER

PyObject *fast_names[FAST_NAME_COUNT];

/* PYTHON_NAMES: ((name, owner), ...) for tests/unit/test_native_boundary.py. */
static PyObject *fast_names_table(void) {
    PyObject *table = PyTuple_New(FAST_NAME_COUNT);
    if (!table) return NULL;
    for (int i = 0; i < FAST_NAME_COUNT; i++) {
        PyObject *row = Py_BuildValue("(ss)", fast_name_strings[i], fast_name_owners[i]);
        if (!row) { Py_DECREF(table); return NULL; }
        PyTuple_SET_ITEM(table, i, row);
    }
    return table;
}

PyObject *call_slow(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[16], **stack = total + 1 <= 16 ? small : PyMem_Malloc((total + 1) * sizeof(PyObject *));
    if (!stack) return PyErr_NoMemory();
    stack[0] = self;
    memcpy(stack + 1, args, total * sizeof(PyObject *));
    PyObject *r = PyObject_VectorcallMethod(name, stack, nargs + 1, kwnames);
    if (stack != small) PyMem_Free(stack);
    return r;
}

/* ---------------------------------------------------------------- module functions */

/* bind(entry_points_address): the C core's table (shmlog_core_entry_points_table() of _core). */
static PyObject *fast_bind(PyObject *Py_UNUSED(module), PyObject *arg) {
    const shmlog_core_entry_points *table = PyLong_AsVoidPtr(arg);
    if (!table && PyErr_Occurred()) return NULL;
    if (!table || table->table_bytes != sizeof(shmlog_core_entry_points) ||
        table->layout_version != SHMLOG_LAYOUT_VERSION) {
        PyErr_SetString(PyExc_ImportError, "shmlog._native._fast and _core were built from different C headers: "
                                           "rebuild both (pip install -e .)");
        return NULL;
    }
    core = table;
    Py_RETURN_NONE;
}

static PyObject *fast_fork_generation(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromUnsignedLong(fork_generation);
}

/* index_columns(refs, count, bias, first_offset, at, offsets, timestamps, key_pos, key_len,
 *               value_pos, value_len): copies the refs at or after first_offset into the column
 * arrays from row `at`, positions moved by bias (a batch's place in the mapping); returns the
 * next free row. One pass in C instead of a NumPy operation per field per batch. */
PyObject *fast_index_columns(PyObject *Py_UNUSED(module), PyObject *args) {
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

/* ---------------------------------------------------------------- the module */

static PyMethodDef fast_methods[] = {
    {"bind", fast_bind, METH_O, "bind(address): the C core's entry-point table (shmlog_core_entry_points_table)."},
    {"fork_generation", fast_fork_generation, METH_NOARGS,
     "fork_generation(): how many fork()s led to this process (0 in the process that imported shmlog)."},
    {"fetch_ring", fast_fetch_ring, METH_VARARGS, "One ring fetch decoded into a RecordQueue (see Consumer._fetch)."},
    {"serve_reports", fast_serve_reports, METH_VARARGS, "Delivery callbacks of one batch (see Producer.poll)."},
    {"index_columns", fast_index_columns, METH_VARARGS, "Record refs -> column arrays (see RecordBatchView)."},
    {"record_size", (PyCFunction)(void (*)(void))fast_record_size, METH_FASTCALL,
     "record_size(key, value, header_bytes=0): what a record counts against the producer's limits."},
    {"kafka_produce_request", fast_kafka_produce_request, METH_VARARGS,
     "kafka_produce_request(frame, version): the fields of a one-partition Produce, or None (see kafka_request.c)."},
    {"kafka_fetch_request", fast_kafka_fetch_request, METH_VARARGS,
     "kafka_fetch_request(frame, version): the fields of a one-partition sessionless Fetch, or None."},
    {"timestamp_or_now", fast_timestamp_or_now, METH_O,
     "timestamp_or_now(timestamp): a record's timestamp in ms, now when 0."},
    {NULL},
};

static struct PyModuleDef fast_module = {PyModuleDef_HEAD_INIT, "shmlog._native._fast", NULL, -1, fast_methods,
                                         NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fast(void) {
    PyTypeObject *types[] = {&MessageType, &RecordQueueType, &ConsumerCoreType, &BatchType, &RouteType,
                             &ProducerCoreType};
    const char *type_names[] = {"Message", "RecordQueue", "ConsumerCore", "Batch", "Route", "ProducerCore"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyType_Ready(types[i]) < 0) return NULL;
    for (int i = 0; i < FAST_NAME_COUNT; i++)
        if (!fast_names[i] && !(fast_names[i] = PyUnicode_InternFromString(fast_name_strings[i]))) return NULL;
    pthread_atfork(NULL, NULL, fork_generation_bump_in_child);
    route_random_seed();
    PyObject *m = PyModule_Create(&fast_module);
    if (!m) return NULL;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyModule_AddObjectRef(m, type_names[i], (PyObject *)types[i]) < 0) goto fail;
    PyObject *names = fast_names_table();
    if (!names || PyModule_AddObject(m, "PYTHON_NAMES", names) < 0) { Py_XDECREF(names); goto fail; }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
