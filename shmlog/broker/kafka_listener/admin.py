"""Admin APIs over TCP: each is one request to the supervisor, which owns the metadata."""
from shmlog.broker.kafka_listener.handlers import NODE_ID, NONE, UNKNOWN_TOPIC_OR_PARTITION, exc_code, wire_code
from shmlog.errors import KafkaException

INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39


def _request(conn, op, **fields):
    try:
        return NONE, conn.logs.request(op, **fields), None
    except KafkaException as exc:
        return exc_code(exc), {}, str(exc)


def create_topics(conn, req, version):
    specs, out = [], {}
    for t in req.topics:
        if t.replication_factor not in (-1, 1):
            out[t.name] = (INVALID_REPLICATION_FACTOR, f"replication factor {t.replication_factor}: this broker "
                                                      f"has one replica per partition (use 1 or -1)")
        elif t.assignments:
            out[t.name] = (INVALID_REPLICA_ASSIGNMENT, "manual replica assignment is not supported")
        else:
            specs.append({"topic": t.name, "num_partitions": t.num_partitions,
                          "config": {c.name: c.value for c in t.configs}})
    if specs:
        code, reply, message = _request(conn, "create_topics", topics=specs, validate_only=bool(req.validate_only))
        for spec in specs:
            result = reply.get("results", {}).get(spec["topic"]) if not code else [code, message]
            out[spec["topic"]] = (NONE, None) if result is None else (wire_code(result[0]), result[1])
    conn.logs.maybe_refresh()
    topics = []
    for t in req.topics:
        code, message = out[t.name]
        info = conn.logs.meta["topics"].get(t.name) if code == NONE else None
        topics.append({"name": t.name, "error_code": code, "error_message": message,
                       "num_partitions": info["partitions"] if info else -1,
                       "replication_factor": 1 if info else -1, "configs": None if info is None else []})
    return {"topics": topics}


def delete_topics(conn, req, version):
    names = list(req.topic_names) if getattr(req, "topic_names", None) is not None else \
        [t.name for t in req.topics]
    code, reply, message = _request(conn, "delete_topics", topics=names)
    results = reply.get("results", {}) if not code else {}
    out = []
    for name in names:
        r = results.get(name) if not code else [code, message]
        out.append({"name": name, "error_code": NONE if r is None else wire_code(r[0]),
                    "error_message": None if r is None else r[1]})
    return {"responses": out}


def create_partitions(conn, req, version):
    specs = [{"topic": t.name, "new_total_count": t.count} for t in req.topics]
    code, reply, message = _request(conn, "create_partitions", topics=specs, validate_only=bool(req.validate_only))
    results = reply.get("results", {}) if not code else {}
    out = []
    for t in req.topics:
        r = results.get(t.name) if not code else [code, message]
        out.append({"name": t.name, "error_code": NONE if r is None else wire_code(r[0]),
                    "error_message": None if r is None else r[1]})
    return {"results": out}


def delete_records(conn, req, version):
    items = [{"topic": t.name, "partition": p.partition_index, "offset": p.offset}
             for t in req.topics for p in t.partitions]
    code, reply, message = _request(conn, "delete_records", partitions=items)
    results = iter(reply.get("results", []))
    out = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            r = next(results, None) if not code else {"error": [code, message]}
            if r is None:
                parts.append({"partition_index": p.partition_index, "low_watermark": -1,
                              "error_code": UNKNOWN_TOPIC_OR_PARTITION})
            elif "error" in r:
                parts.append({"partition_index": p.partition_index, "low_watermark": -1,
                              "error_code": wire_code(r["error"][0])})
            else:
                parts.append({"partition_index": p.partition_index, "low_watermark": r["low_watermark"],
                              "error_code": NONE})
        out.append({"name": t.name, "partitions": parts})
    return {"topics": out}


def describe_cluster(conn, req, version):
    host, port = conn.server.advertised
    return {"error_code": NONE, "cluster_id": conn.server.cluster_id or "", "controller_id": NODE_ID,
            "brokers": [{"broker_id": NODE_ID, "host": host, "port": port, "rack": None}],
            "cluster_authorized_operations": -2147483648}
