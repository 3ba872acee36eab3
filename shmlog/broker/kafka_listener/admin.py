"""Admin APIs over TCP: each is one request to the supervisor, which owns the metadata."""
from shmlog.broker.kafka_listener.handlers import NODE_ID, NONE, UNKNOWN_TOPIC_OR_PARTITION, exc_code, wire_code
from shmlog.errors import KafkaException, reason_of

INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39


def _request(conn, op, **fields):
    try:
        return NONE, conn.logs.request(op, **fields), None
    except KafkaException as exc:
        return exc_code(exc), {}, reason_of(exc)


def _replication_factor(info):
    states = info.get("partition_states") or [{"replicas": [0]}]
    return len(states[0]["replicas"])


def create_topics(conn, req, version):
    specs, out = [], {}
    for t in req.topics:
        if t.assignments:
            # Kafka's assignments name brokers; a shmlog broker's replicas are its log dirs.
            out[t.name] = (INVALID_REPLICA_ASSIGNMENT, "manual replica assignment is not supported over the "
                                                      "Kafka listener (use replication_factor)")
        else:
            specs.append({"topic": t.name, "num_partitions": t.num_partitions,
                          "replication_factor": t.replication_factor,
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
                       "replication_factor": _replication_factor(info) if info else -1,
                       "configs": None if info is None else []})
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


# ---------------------------------------------------------------------------- configs

TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4
DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5
INVALID_REQUEST = 42


def _text(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _entries(config, explicit, keys, explicit_source):
    return [{"name": k, "value": _text(v), "read_only": False, "is_default": k not in explicit,
             "config_source": explicit_source if k in explicit else DEFAULT_CONFIG, "is_sensitive": False,
             "synonyms": [], "config_type": 0, "documentation": None}
            for k, v in sorted(config.items()) if keys is None or k in keys]


def describe_configs(conn, req, version):
    topics = [r.resource_name for r in req.resources if r.resource_type == TOPIC_RESOURCE]
    code, reply, message = _request(conn, "describe_configs", topics=topics)
    out = []
    for r in req.resources:
        keys = None if r.configuration_keys is None else set(r.configuration_keys)
        entry = {"resource_type": r.resource_type, "resource_name": r.resource_name, "error_code": NONE,
                 "error_message": None, "configs": []}
        if code:
            entry.update(error_code=code, error_message=message)
        elif r.resource_type == TOPIC_RESOURCE:
            t = reply["topics"].get(r.resource_name)
            if t is None:
                entry.update(error_code=UNKNOWN_TOPIC_OR_PARTITION, error_message=f"unknown topic {r.resource_name!r}")
            else:
                entry["configs"] = _entries(t["config"], set(t["set"]), keys, DYNAMIC_TOPIC_CONFIG)
        elif r.resource_type == BROKER_RESOURCE and r.resource_name in ("", str(NODE_ID)):
            b = reply["broker"]
            entry["configs"] = _entries(b["config"], set(b["set"]), keys, STATIC_BROKER_CONFIG)
        else:
            entry.update(error_code=INVALID_REQUEST, error_message=f"resource type {r.resource_type} "
                                                                   f"{r.resource_name!r}: topics and broker "
                                                                   f"{NODE_ID} are described")
        out.append(entry)
    return {"results": out}


def _alter(conn, req, op, topics_value):
    topics = {r.resource_name: topics_value(r) for r in req.resources if r.resource_type == TOPIC_RESOURCE}
    code, reply, message = (_request(conn, op, topics=topics, validate_only=bool(req.validate_only)) if topics
                            else (NONE, {}, None))
    results = reply.get("results", {})
    out = []
    for r in req.resources:
        entry = {"resource_type": r.resource_type, "resource_name": r.resource_name, "error_code": NONE,
                 "error_message": None}
        if r.resource_type != TOPIC_RESOURCE:
            entry.update(error_code=INVALID_REQUEST, error_message="only topic configs can be altered (broker "
                                                                   "configs are static: restart with new ones)")
        elif code:
            entry.update(error_code=code, error_message=message)
        elif results.get(r.resource_name) is not None:
            failed = results[r.resource_name]
            entry.update(error_code=wire_code(failed[0]), error_message=failed[1])
        out.append(entry)
    return {"responses": out}


def alter_configs(conn, req, version):
    return _alter(conn, req, "alter_configs", lambda r: {c.name: c.value for c in r.configs})


def incremental_alter_configs(conn, req, version):
    return _alter(conn, req, "incremental_alter_configs",
                  lambda r: [[c.name, int(c.config_operation), c.value] for c in r.configs])
