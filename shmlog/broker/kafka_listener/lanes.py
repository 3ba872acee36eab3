"""The one-partition lane: a Produce or a Fetch of one partition of one topic -- what a client
writing or reading one partition sends, one request per record at linger.ms 0 -- is read in C
(csrc/fast/kafka_request.c, checked against kio by tests/unit/test_kafka_request_shapes.py)
instead of decoded into kio's classes, and handed to the handlers' own rules (produce_one and
fetch_one, else produce_topics and fetch_topics). What the lane does not take -- another shape, a
fetch session, any request on a listener with an authorizer -- the connection decodes with kio as
every other request.
"""
import collections

from shmlog._native import _fast
from shmlog.broker.kafka_listener import handlers

NOT_TAKEN = object()
PRODUCE, FETCH = 0, 1

ProducePartition = collections.namedtuple("ProducePartition", "index records")
FetchTopic = collections.namedtuple("FetchTopic", "topic partitions")
FetchPartition = collections.namedtuple("FetchPartition", "partition fetch_offset partition_max_bytes")


def serve(conn, api_key, version, correlation_id, frame):
    """The response to a one-partition Produce or Fetch frame -- a body as the handlers return it,
    or the frame's parts already encoded (handlers.produce_one, fetch_one) --, or NOT_TAKEN."""
    if api_key == PRODUCE:
        shape = _fast.kafka_produce_request(frame, version)
        if shape is None:
            return NOT_TAKEN
        acks, timeout_ms, topic, partition, start, end = shape
        records = memoryview(frame)[start:end]
        out = handlers.produce_one(conn, version, correlation_id, topic, partition, records, acks, timeout_ms)
        if out is not handlers.NOT_TAKEN:
            return out
        return handlers.produce_topics(conn, ((topic, (ProducePartition(partition, records),)),), acks, timeout_ms)
    shape = _fast.kafka_fetch_request(frame, version)
    if shape is None:
        return NOT_TAKEN
    max_wait_ms, min_bytes, max_bytes, isolation, topic, partition, fetch_offset, partition_max_bytes = shape
    out = handlers.fetch_one(conn, version, correlation_id, topic, partition, fetch_offset, partition_max_bytes,
                             max_wait_ms, max(min_bytes, 1), max_bytes, isolation)
    if out is not handlers.NOT_TAKEN:
        return out
    topics = (FetchTopic(topic, (FetchPartition(partition, fetch_offset, partition_max_bytes),)),)
    total, out = handlers.fetch_topics(conn, topics, max_wait_ms / 1000, max(min_bytes, 1), max_bytes, isolation)
    return {"error_code": handlers.NONE, "session_id": 0, "responses": out, "record_bytes": total}
