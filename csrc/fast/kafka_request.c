/* The two requests a Kafka client reading or writing one partition sends most: a Produce or a
 * Fetch of one partition of one topic. Their fields are read here in one pass over the frame
 * for the Kafka listener's one-partition lane (shmlog/broker/kafka_listener/lanes.py); kio's
 * decoding stays the definition of the format, and tests/unit/test_kafka_request_shapes.py
 * checks the two agree on every served version. Anything else -- more partitions or topics, a
 * transactional id, a fetch session, null records, bytes that do not decode -- gives None, and
 * the listener decodes the frame with kio.
 *
 * A frame is the request without its size: the request header (v1, or v2 with tagged fields
 * for flexible versions: Produce v9+, Fetch v12+), then the body. Flexible versions use
 * unsigned-varint lengths (length + 1) and end each structure with tagged fields, skipped here
 * as Kafka's brokers skip the tags they do not know.
 */
#include "fast.h"

#define PRODUCE_FIRST_FLEXIBLE 9
#define FETCH_FIRST_FLEXIBLE 12

typedef struct {
    const uint8_t *at, *end;
    int flexible;
    int failed;
} kafka_reader;

static int kafka_reader_take(kafka_reader *r, size_t n, const uint8_t **out) {
    if (r->failed || (size_t)(r->end - r->at) < n) {
        r->failed = 1;
        return 0;
    }
    *out = r->at;
    r->at += n;
    return 1;
}

static int64_t kafka_reader_int(kafka_reader *r, size_t bytes) {
    const uint8_t *p;
    if (!kafka_reader_take(r, bytes, &p)) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; i++) v = v << 8 | p[i];
    int shift = (int)(64 - 8 * bytes);
    return (int64_t)(v << shift) >> shift;
}

/* An unsigned varint of at most 5 bytes (Kafka's 32-bit lengths and counts). */
static uint32_t kafka_reader_uvarint(kafka_reader *r) {
    uint32_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        const uint8_t *p;
        if (!kafka_reader_take(r, 1, &p)) return 0;
        v |= (uint32_t)(*p & 0x7F) << shift;
        if (!(*p & 0x80)) return v;
    }
    r->failed = 1;
    return 0;
}

/* The length of a string (int16), bytes (int32) or array (int32), or its compact form; -1 for null. */
static int64_t kafka_reader_length(kafka_reader *r, size_t fixed_bytes) {
    return r->flexible ? (int64_t)kafka_reader_uvarint(r) - 1 : kafka_reader_int(r, fixed_bytes);
}

static void kafka_reader_skip_tags(kafka_reader *r) {
    if (!r->flexible) return;
    for (uint32_t n = kafka_reader_uvarint(r); n && !r->failed; n--) {
        const uint8_t *p;
        kafka_reader_uvarint(r);
        kafka_reader_take(r, kafka_reader_uvarint(r), &p);
    }
}

/* A nullable string's bytes (*out NULL for null) and length. */
static int64_t kafka_reader_string(kafka_reader *r, const uint8_t **out) {
    int64_t n = kafka_reader_length(r, 2);
    *out = NULL;
    if (n < -1) r->failed = 1;
    if (n > 0) kafka_reader_take(r, (size_t)n, out);
    else if (n == 0) *out = r->at;
    return n;
}

/* A string kio would refuse (not UTF-8) fails the read, as it fails kio's decoding. */
static void kafka_reader_text(kafka_reader *r) {
    const uint8_t *text;
    int64_t n = kafka_reader_string(r, &text);
    if (n <= 0 || r->failed) return;
    PyObject *decoded = PyUnicode_DecodeUTF8((const char *)text, (Py_ssize_t)n, "strict");
    if (!decoded) {
        PyErr_Clear();
        r->failed = 1;
    }
    Py_XDECREF(decoded);
}

static int kafka_reader_one_entry(kafka_reader *r) {
    if (kafka_reader_length(r, 4) != 1) r->failed = 1;
    return !r->failed;
}

/* The request header up to the body; the body's reader (flexible or not). */
static int kafka_reader_open(kafka_reader *r, Py_buffer *frame, int flexible) {
    r->at = frame->buf;
    r->end = r->at + frame->len;
    r->failed = 0;
    r->flexible = 0;   /* the header's client id is a plain nullable string in v1 and v2 alike */
    kafka_reader_int(r, 2 + 2 + 4);
    kafka_reader_text(r);   /* the client id */
    r->flexible = flexible;
    kafka_reader_skip_tags(r);
    return !r->failed;
}

static PyObject *kafka_topic_name(const uint8_t *name, int64_t length) {
    if (!name || length < 1) return NULL;
    PyObject *topic = PyUnicode_DecodeUTF8((const char *)name, (Py_ssize_t)length, "strict");
    if (!topic) PyErr_Clear();
    return topic;
}

/* kafka_produce_request(frame, version): (acks, timeout_ms, topic, partition, records_start,
 * records_end) of a Produce of one partition's records with no transactional id, else None. */
PyObject *fast_kafka_produce_request(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer frame;
    int version;
    if (!PyArg_ParseTuple(args, "y*i", &frame, &version)) return NULL;
    kafka_reader r;
    const uint8_t *transactional_id, *name = NULL, *records = NULL;
    int64_t acks = 0, timeout_ms = 0, name_length = 0, partition = 0, records_length = -1;
    if (kafka_reader_open(&r, &frame, version >= PRODUCE_FIRST_FLEXIBLE) &&
        kafka_reader_string(&r, &transactional_id) == -1) {
        acks = kafka_reader_int(&r, 2);
        timeout_ms = kafka_reader_int(&r, 4);
        if (kafka_reader_one_entry(&r)) {
            name_length = kafka_reader_string(&r, &name);
            if (kafka_reader_one_entry(&r)) {
                partition = kafka_reader_int(&r, 4);
                records_length = kafka_reader_length(&r, 4);
                if (records_length >= 0) kafka_reader_take(&r, (size_t)records_length, &records);
                kafka_reader_skip_tags(&r);
                kafka_reader_skip_tags(&r);
                kafka_reader_skip_tags(&r);
            }
        }
    }
    PyObject *result = NULL, *topic = NULL;
    if (!r.failed && records && (topic = kafka_topic_name(name, name_length))) {
        Py_ssize_t start = (const char *)records - (const char *)frame.buf;
        result = Py_BuildValue("(iiNinn)", (int)acks, (int)timeout_ms, topic, (int)partition, start,
                               start + (Py_ssize_t)records_length);
    }
    PyBuffer_Release(&frame);
    if (!result && !PyErr_Occurred()) Py_RETURN_NONE;
    return result;
}

/* kafka_fetch_request(frame, version): (max_wait_ms, min_bytes, max_bytes, isolation_level,
 * topic, partition, fetch_offset, partition_max_bytes) of a Fetch of one partition outside any
 * fetch session (session id 0, epoch -1) that forgets no topics, else None. */
PyObject *fast_kafka_fetch_request(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer frame;
    int version;
    if (!PyArg_ParseTuple(args, "y*i", &frame, &version)) return NULL;
    kafka_reader r;
    const uint8_t *name = NULL;
    int64_t max_wait_ms = 0, min_bytes = 0, max_bytes = 0x7FFFFFFF, isolation_level = 0, name_length = 0;
    int64_t partition = 0, fetch_offset = 0, partition_max_bytes = 0;
    if (kafka_reader_open(&r, &frame, version >= FETCH_FIRST_FLEXIBLE)) {
        kafka_reader_int(&r, 4);   /* replica id */
        max_wait_ms = kafka_reader_int(&r, 4);
        min_bytes = kafka_reader_int(&r, 4);
        if (version >= 3) max_bytes = kafka_reader_int(&r, 4);
        if (version >= 4) isolation_level = kafka_reader_int(&r, 1);
        if (version >= 7 && (kafka_reader_int(&r, 4) != 0 || kafka_reader_int(&r, 4) != -1)) r.failed = 1;
        if (kafka_reader_one_entry(&r)) {
            name_length = kafka_reader_string(&r, &name);
            if (kafka_reader_one_entry(&r)) {
                partition = kafka_reader_int(&r, 4);
                if (version >= 9) kafka_reader_int(&r, 4);    /* current leader epoch */
                fetch_offset = kafka_reader_int(&r, 8);
                if (version >= 12) kafka_reader_int(&r, 4);   /* last fetched epoch */
                if (version >= 5) kafka_reader_int(&r, 8);    /* log start offset (of a follower) */
                partition_max_bytes = kafka_reader_int(&r, 4);
                kafka_reader_skip_tags(&r);
                kafka_reader_skip_tags(&r);
                if (version >= 7 && kafka_reader_length(&r, 4) != 0) r.failed = 1;   /* forgotten topics */
                if (version >= 11) kafka_reader_text(&r);   /* the rack id */
                kafka_reader_skip_tags(&r);
            }
        }
    }
    PyObject *result = NULL, *topic = NULL;
    if (!r.failed && (topic = kafka_topic_name(name, name_length)))
        result = Py_BuildValue("(iiiiNiLi)", (int)max_wait_ms, (int)min_bytes, (int)max_bytes, (int)isolation_level,
                               topic, (int)partition, (long long)fetch_offset, (int)partition_max_bytes);
    PyBuffer_Release(&frame);
    if (!result && !PyErr_Occurred()) Py_RETURN_NONE;
    return result;
}
