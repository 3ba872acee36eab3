/* Message: a record (consumer) or delivery report (producer), with confluent-kafka's accessors. */
#include "fast.h"

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

static PyObject *message_topic(Message *self, PyObject *Py_UNUSED(ignored)) { return or_none(self->topic); }
static PyObject *message_partition(Message *self, PyObject *Py_UNUSED(ignored)) { return PyLong_FromLong(self->partition); }
static PyObject *message_offset(Message *self, PyObject *Py_UNUSED(ignored)) { return PyLong_FromLongLong(self->offset); }
static PyObject *message_key(Message *self, PyObject *Py_UNUSED(ignored)) { return or_none(self->key); }
static PyObject *message_value(Message *self, PyObject *Py_UNUSED(ignored)) { return or_none(self->value); }
static PyObject *message_headers(Message *self, PyObject *Py_UNUSED(ignored)) { return or_none(self->headers); }
static PyObject *message_error(Message *self, PyObject *Py_UNUSED(ignored)) { return or_none(self->error); }
static PyObject *message_latency(Message *self, PyObject *Py_UNUSED(ignored)) { return or_none(self->latency); }
static PyObject *message_leader_epoch(Message *self, PyObject *Py_UNUSED(ignored)) { return or_none(self->leader_epoch); }

static PyObject *message_timestamp(Message *self, PyObject *Py_UNUSED(ignored)) {
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

static PyObject *message_len(Message *self, PyObject *Py_UNUSED(ignored)) {
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

static PyObject *message_get_timestamp(Message *self, void *Py_UNUSED(closure)) { return message_timestamp(self, NULL); }

static int message_set_timestamp(Message *self, PyObject *value, void *Py_UNUSED(closure)) {
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

PyTypeObject MessageType = {
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
