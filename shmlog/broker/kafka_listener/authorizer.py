"""ACLs enforced on every request, when `authorizer.class.name` is set, and the ACL APIs
(CreateAcls, DescribeAcls, DeleteAcls); the model and the file are acl_store.py's.

Each API names what it needs as Kafka's authorizer asks it (REQUIRES: per resource the
operation, or alternatives any one of which will do). A request that needs anything the
principal may not do is refused whole, before it is served: every topic, partition, group or
resource in its response carries the authorization error of the first thing refused
(TOPIC_/GROUP_/CLUSTER_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED). Kafka serves the allowed
part of a mixed request; here nothing of it is done. Metadata and ListGroups without names
list only what the principal may describe, as Kafka's do.
"""
import dataclasses
import logging

from shmlog.broker import logs as broker_logs
from shmlog.broker.kafka_listener import acl_store as store
from shmlog.broker.kafka_listener.handlers import NONE

TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
INVALID_REQUEST = 42
CODE_OF = {"TOPIC": TOPIC_AUTHORIZATION_FAILED, "GROUP": GROUP_AUTHORIZATION_FAILED,
           "CLUSTER": CLUSTER_AUTHORIZATION_FAILED, "TRANSACTIONAL_ID": TRANSACTIONAL_ID_AUTHORIZATION_FAILED}
CLUSTER = store.CLUSTER_NAME
CONFIG_RESOURCE = {2: "TOPIC", 4: "CLUSTER"}     # DescribeConfigs/AlterConfigs resource types: topic, broker


class Authorizer:
    def __init__(self, data_dir, broker_config):
        self.cache = store.Cache(data_dir)
        self.super_users = tuple(u.strip() for u in (broker_config.get("super.users") or "").split(";") if u.strip())
        self.allow_if_no_acl = bool(broker_config.get("allow.everyone.if.no.acl.found"))
        self.refusals = broker_logs.RateLimited()

    def allowed(self, conn, operation, rtype, name):
        principal = f"User:{conn.principal}"
        try:
            bindings = self.cache.get()
        except store.BadAcl as exc:   # fail closed: nothing is allowed but to super users
            self.refusals(logging.ERROR, f"kafka listener: ACLs unreadable, refusing requests: {exc}")
            bindings = [store.Binding(rtype, store.WILDCARD, "LITERAL", "User:*", "*", "ALL", "DENY")]
        return store.authorized(bindings, principal, conn.addr[0], operation, rtype, name, self.super_users,
                                self.allow_if_no_acl)

    def denial(self, conn, api_key, req):
        """None, or (code, message) for the first thing the request needs that is refused."""
        need = REQUIRES.get(api_key)
        for alternatives in (need(req) if need else ()):
            if not any(self.allowed(conn, op, rtype, name) for rtype, name, op in alternatives):
                rtype, name, op = alternatives[0]
                return CODE_OF.get(rtype, CLUSTER_AUTHORIZATION_FAILED), (
                    f"User:{conn.principal} may not {op} {rtype} {name!r}")
        return None


# ---------------------------------------------------------------------------- what each API needs

def _one(rtype, name, op):
    return ((rtype, name, op),)


def _topics(names, op):
    return [_one("TOPIC", n, op) for n in dict.fromkeys(names)]


def _produce(req):
    out = _topics([t.name for t in req.topic_data], "WRITE")
    if req.transactional_id is not None:
        out.insert(0, _one("TRANSACTIONAL_ID", req.transactional_id, "WRITE"))
    return out


def _find_coordinator(req):
    keys = getattr(req, "coordinator_keys", None) or [req.key]
    rtype = "TRANSACTIONAL_ID" if getattr(req, "key_type", 0) == 1 else "GROUP"
    return [_one(rtype, k, "DESCRIBE") for k in keys]


def _init_producer_id(req):
    if req.transactional_id is not None:
        return [_one("TRANSACTIONAL_ID", req.transactional_id, "WRITE")]
    return [_one("CLUSTER", CLUSTER, "IDEMPOTENT_WRITE")]


def _configs(op):
    return lambda req: [_one(CONFIG_RESOURCE.get(r.resource_type, "CLUSTER"),
                             r.resource_name if r.resource_type == 2 else CLUSTER, op) for r in req.resources]


def _txn(req, prefix=""):
    return _one("TRANSACTIONAL_ID", getattr(req, prefix + "transactional_id"), "WRITE")


REQUIRES = {
    0: _produce,
    1: lambda req: _topics([t.topic for t in req.topics], "READ"),
    2: lambda req: _topics([t.name for t in req.topics], "DESCRIBE"),
    8: lambda req: [_one("GROUP", req.group_id, "READ"), *_topics([t.name for t in req.topics], "READ")],
    9: lambda req: [_one("GROUP", req.group_id, "DESCRIBE"),
                    *_topics([t.name for t in req.topics or ()], "DESCRIBE")],
    10: _find_coordinator,
    11: lambda req: [_one("GROUP", req.group_id, "READ")],
    12: lambda req: [_one("GROUP", req.group_id, "READ")],
    13: lambda req: [_one("GROUP", req.group_id, "READ")],
    14: lambda req: [_one("GROUP", req.group_id, "READ")],
    15: lambda req: [_one("GROUP", g, "DESCRIBE") for g in req.groups],
    19: lambda req: [(("CLUSTER", CLUSTER, "CREATE"), ("TOPIC", t.name, "CREATE")) for t in req.topics],
    20: lambda req: _topics(list(req.topic_names or ()) + [t.name for t in getattr(req, "topics", ()) or ()
                                                          if t.name], "DELETE"),
    21: lambda req: _topics([t.name for t in req.topics], "DELETE"),
    22: _init_producer_id,
    23: lambda req: _topics([t.topic for t in req.topics], "DESCRIBE"),
    24: lambda req: [_txn(req, "v3_and_below_"), *_topics([t.name for t in req.v3_and_below_topics], "WRITE")],
    25: lambda req: [_txn(req), _one("GROUP", req.group_id, "READ")],
    26: lambda req: [_txn(req)],
    28: lambda req: [_txn(req), _one("GROUP", req.group_id, "READ"),
                     *_topics([t.name for t in req.topics], "READ")],
    29: lambda req: [_one("CLUSTER", CLUSTER, "DESCRIBE")],
    30: lambda req: [_one("CLUSTER", CLUSTER, "ALTER")],
    31: lambda req: [_one("CLUSTER", CLUSTER, "ALTER")],
    32: _configs("DESCRIBE_CONFIGS"),
    33: _configs("ALTER_CONFIGS"),
    37: lambda req: _topics([t.name for t in req.topics], "ALTER"),
    44: _configs("ALTER_CONFIGS"),
    60: lambda req: [_one("CLUSTER", CLUSTER, "DESCRIBE")],
}


# ---------------------------------------------------------------------------- refused responses

def _parts(topics, name_key, parts_key, index_key, code, name_attr="name", parts_attr="partitions",
           index_attr=None, **extra):
    out = []
    for t in topics:
        parts = getattr(t, parts_attr)
        out.append({name_key: getattr(t, name_attr), parts_key: [
            {index_key: (getattr(p, index_attr) if index_attr else p), "error_code": code, **extra} for p in parts]})
    return out


def refused(api_key, req, code, message):
    """The response body of a request refused whole with `code`."""
    msg = {"error_message": message}
    if api_key == 0:
        return {"responses": _parts(req.topic_data, "name", "partition_responses", "index", code,
                                    parts_attr="partition_data", index_attr="index", base_offset=-1, **msg)}
    if api_key == 1:
        return {"error_code": NONE, "session_id": 0, "responses": _parts(
            req.topics, "topic", "partitions", "partition_index", code, name_attr="topic", index_attr="partition",
            high_watermark=-1, last_stable_offset=-1, log_start_offset=-1, records=b"")}
    if api_key == 2:
        return {"topics": _parts(req.topics, "name", "partitions", "partition_index", code,
                                 index_attr="partition_index", offset=-1, timestamp=-1)}
    if api_key in (8, 28):
        return {"topics": _parts(req.topics, "name", "partitions", "partition_index", code,
                                 index_attr="partition_index")}
    if api_key == 15:
        return {"groups": [{"error_code": code, "group_id": g, "group_state": "", "protocol_type": "",
                            "protocol_data": "", "members": []} for g in req.groups]}
    if api_key == 19:
        return {"topics": [{"name": t.name, "error_code": code, **msg} for t in req.topics]}
    if api_key == 20:
        names = list(req.topic_names or ()) + [t.name for t in getattr(req, "topics", ()) or () if t.name]
        return {"responses": [{"name": n, "error_code": code, **msg} for n in names]}
    if api_key == 21:
        return {"topics": _parts(req.topics, "name", "partitions", "partition_index", code,
                                 index_attr="partition_index", low_watermark=-1)}
    if api_key == 23:
        return {"topics": _parts(req.topics, "topic", "partitions", "partition", code, name_attr="topic",
                                 index_attr="partition", leader_epoch=-1, end_offset=-1)}
    if api_key == 24:
        return {"results_by_topic_v3_and_below": [
            {"name": t.name, "results_by_partition": [{"partition_index": p, "partition_error_code": code}
                                                      for p in t.partitions]} for t in req.v3_and_below_topics]}
    if api_key == 30:
        return {"results": [{"error_code": code, **msg} for _ in req.creations]}
    if api_key == 31:
        return {"filter_results": [{"error_code": code, **msg, "matching_acls": []} for _ in req.filters]}
    if api_key == 32:
        return {"results": [{"error_code": code, **msg, "resource_type": r.resource_type,
                             "resource_name": r.resource_name, "configs": []} for r in req.resources]}
    if api_key in (33, 44):
        return {"responses": [{"error_code": code, **msg, "resource_type": r.resource_type,
                               "resource_name": r.resource_name} for r in req.resources]}
    if api_key == 37:
        return {"results": [{"name": t.name, "error_code": code, **msg} for t in req.topics]}
    if api_key == 10 and getattr(req, "coordinator_keys", None):
        return {"coordinators": [{"key": k, "error_code": code, "node_id": -1, "host": "", "port": -1, **msg}
                                 for k in req.coordinator_keys]}
    # one error code for the whole response (groups, transactions, InitProducerId, DescribeCluster, ...)
    return {"error_code": code, **msg, "producer_id": -1, "producer_epoch": -1, "generation_id": -1,
            "node_id": -1, "port": -1, "member_id": getattr(req, "member_id", "") or "", "assignment": b"",
            "topics": [], "resources": []}


# ---------------------------------------------------------------------------- listing only what may be seen

def metadata_request(auth, conn, req):
    """Metadata naming topics: those the principal may not describe are answered without being
    looked up (so never auto-created); auto-creation needs CREATE. Returns (request, refused names)."""
    if req.topics is None:
        return req, []
    hidden = [t.name for t in req.topics if t.name is not None and not auth.allowed(conn, "DESCRIBE", "TOPIC", t.name)]
    kept = tuple(t for t in req.topics if t.name not in hidden)
    changes = {"topics": kept}
    if getattr(req, "allow_auto_topic_creation", False):
        creatable = auth.allowed(conn, "CREATE", "CLUSTER", CLUSTER) or all(
            auth.allowed(conn, "CREATE", "TOPIC", t.name) for t in kept if t.name is not None)
        changes["allow_auto_topic_creation"] = creatable
    return dataclasses.replace(req, **changes), hidden


def metadata_response(auth, conn, req, body, hidden):
    if req.topics is None:
        body["topics"] = [t for t in body["topics"] if auth.allowed(conn, "DESCRIBE", "TOPIC", t["name"])]
    body["topics"] = body["topics"] + [{"error_code": TOPIC_AUTHORIZATION_FAILED, "name": n, "partitions": []}
                                       for n in hidden]
    return body


def list_groups_response(auth, conn, body):
    if not auth.allowed(conn, "DESCRIBE", "CLUSTER", CLUSTER):
        body["groups"] = [g for g in body.get("groups", []) if auth.allowed(conn, "DESCRIBE", "GROUP", g["group_id"])]
    return body


# ---------------------------------------------------------------------------- the ACL APIs

def _binding_of(c):
    return store.Binding(
        resource_type=store.name_of(store.RESOURCE_TYPES, c.resource_type) or str(c.resource_type),
        resource_name=c.resource_name,
        pattern_type=store.name_of(store.PATTERN_TYPES, getattr(c, "resource_pattern_type", 3)) or "?",
        principal=c.principal, host=c.host,
        operation=store.name_of(store.OPERATIONS, c.operation) or str(c.operation),
        permission=store.name_of(store.PERMISSIONS, c.permission_type) or str(c.permission_type))


def _filter_of(f):
    names = [store.name_of(table, code) for table, code in (
        (store.RESOURCE_TYPES, f.resource_type_filter), (store.PATTERN_TYPES, getattr(f, "pattern_type_filter", 3)),
        (store.OPERATIONS, f.operation), (store.PERMISSIONS, f.permission_type))]
    if None in names:
        raise store.BadAcl("the filter holds an unknown resource type, pattern type, operation or permission code")
    rtype, pattern, op, perm = names
    return store.Filter(resource_type=rtype, resource_name=f.resource_name_filter, pattern_type=pattern,
                        principal=f.principal_filter, host=f.host_filter, operation=op, permission=perm)


def _wire_binding(b):
    return {"resource_type": store.RESOURCE_TYPES[b.resource_type], "resource_name": b.resource_name,
            "pattern_type": store.PATTERN_TYPES[b.pattern_type], "principal": b.principal, "host": b.host,
            "operation": store.OPERATIONS[b.operation], "permission_type": store.PERMISSIONS[b.permission]}


def create_acls(conn, req, version):
    results, good = [], []
    for c in req.creations:
        try:
            good.append(_binding_of(c).check())
            results.append({"error_code": NONE, "error_message": None})
        except store.BadAcl as exc:
            results.append({"error_code": INVALID_REQUEST, "error_message": str(exc)})
    if good:
        store.add(conn.server.data_dir, good)
    return {"results": results}


def describe_acls(conn, req, version):
    try:
        f = _filter_of(req)
        bindings = [b for b in store.load(conn.server.data_dir) if f.matches(b)]
    except store.BadAcl as exc:
        return {"error_code": INVALID_REQUEST, "error_message": str(exc), "resources": []}
    by_resource = {}
    for b in bindings:
        by_resource.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(b)
    return {"error_code": NONE, "error_message": None, "resources": [
        {"resource_type": store.RESOURCE_TYPES[t], "resource_name": n, "pattern_type": store.PATTERN_TYPES[p],
         "acls": [{k: v for k, v in _wire_binding(b).items() if k in ("principal", "host", "operation",
                                                                       "permission_type")} for b in bs]}
        for (t, n, p), bs in by_resource.items()]}


def delete_acls(conn, req, version):
    filters, out = [], []
    for f in req.filters:
        try:
            filters.append(_filter_of(f))
        except store.BadAcl as exc:
            filters.append(None)
            out.append({"error_code": INVALID_REQUEST, "error_message": str(exc), "matching_acls": []})
            continue
        out.append(None)
    removed = iter(store.remove(conn.server.data_dir, [f for f in filters if f is not None]))
    for i, f in enumerate(filters):
        if f is not None:
            out[i] = {"error_code": NONE, "error_message": None, "matching_acls": [
                {"error_code": NONE, "error_message": None, **_wire_binding(b)} for b in next(removed)]}
    return {"filter_results": out}
