"""InitProducerId and the transaction APIs over TCP, served by the supervisor's producer-id
service and transaction coordinator (shmlog/broker/txn_service.py): a transactional id used
over TCP is the same transactional id a shared-memory producer would use.

Each request goes on the connection's own control channel (as group requests do), so an
EndTxn the coordinator answers only once its markers are written holds up no other client.
Every epoch InitProducerId hands out is noted in the listener's producer table
(idempotence.py): batches of the same producer id at an older epoch, a fenced zombie's, are
refused with INVALID_PRODUCER_EPOCH from then on.
"""
from shmlog.broker.kafka_listener.groups import _call
from shmlog.broker.kafka_listener.handlers import NONE, UNKNOWN_TOPIC_OR_PARTITION

OPERATION_NOT_ATTEMPTED = 55


def _ids(req, prefix=""):
    return {name: getattr(req, prefix + name) for name in ("transactional_id", "producer_id", "producer_epoch")}


def init_producer_id(conn, req, version):
    fields = {}
    if req.transactional_id is not None:   # an idempotent producer's timeout (librdkafka: -1) means nothing
        fields = {"transactional_id": req.transactional_id,
                  "transaction_timeout_ms": int(req.transaction_timeout.total_seconds() * 1000)}
    code, reply = _call(conn, "init_producer_id", **fields)
    if code:
        return {"error_code": code, "producer_id": -1, "producer_epoch": -1}
    conn.server.producers.note_epoch(reply["producer_id"], reply["producer_epoch"])
    return {"error_code": NONE, "producer_id": reply["producer_id"], "producer_epoch": reply["producer_epoch"]}


def add_partitions_to_txn(conn, req, version):
    topics = req.v3_and_below_topics
    unknown = set()
    for t in topics:
        info = conn.logs.topic(t.name)
        unknown.update((t.name, p) for p in t.partitions if info is None or not 0 <= p < info["partitions"])
    if unknown:   # Kafka's rule: nothing is added, the known partitions are OPERATION_NOT_ATTEMPTED
        code_of = {(t.name, p): UNKNOWN_TOPIC_OR_PARTITION if (t.name, p) in unknown else OPERATION_NOT_ATTEMPTED
                   for t in topics for p in t.partitions}
    else:
        code, _ = _call(conn, "add_partitions_to_txn", partitions=[[t.name, p] for t in topics for p in t.partitions],
                        **_ids(req, "v3_and_below_"))
        code_of = {(t.name, p): code for t in topics for p in t.partitions}
    return {"results_by_topic_v3_and_below": [
        {"name": t.name, "results_by_partition": [{"partition_index": p, "partition_error_code": code_of[(t.name, p)]}
                                                  for p in t.partitions]} for t in topics]}


def add_offsets_to_txn(conn, req, version):
    code, _ = _call(conn, "add_offsets_to_txn", group=req.group_id, **_ids(req))
    return {"error_code": code}


def end_txn(conn, req, version):
    code, _ = _call(conn, "end_txn", commit=bool(req.committed), **_ids(req))
    return {"error_code": code}


def txn_offset_commit(conn, req, version):
    offsets = [[t.name, p.partition_index, p.committed_offset, p.committed_metadata]
               for t in req.topics for p in t.partitions]
    code, _ = _call(conn, "txn_offset_commit", group=req.group_id, offsets=offsets,
                    generation=getattr(req, "generation_id", -1), member_id=getattr(req, "member_id", "") or "",
                    instance_id=getattr(req, "group_instance_id", None), **_ids(req))
    return {"topics": [{"name": t.name, "partitions": [{"partition_index": p.partition_index, "error_code": code}
                                                        for p in t.partitions]} for t in req.topics]}
