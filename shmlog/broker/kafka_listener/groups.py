"""Consumer-group APIs over TCP, served by the supervisor's group coordinator: a TCP member is
a member of the same group as shared-memory members.

Each TCP connection that joins a group gets its own control connection, so when the client's
connection closes the coordinator hears at once that its members are gone (as it does for a
shared-memory client). The coordinator assigns partitions itself (server-side, with the
assignor the members agree on), so every TCP member is told it is a follower: its SyncGroup
carries no assignments and gets back the coordinator's, encoded as Kafka's
ConsumerProtocolAssignment.
"""
import io
import json
import struct

from kio.schema.consumer_protocol_assignment.v0.data import ConsumerProtocolAssignment, TopicPartition
from kio.schema.consumer_protocol_subscription.v0.data import ConsumerProtocolSubscription as Subscription0
from kio.schema.consumer_protocol_subscription.v1.data import ConsumerProtocolSubscription as Subscription1
from kio.serial import entity_reader, entity_writer

from shmlog import control
from shmlog.broker.kafka_listener.handlers import NODE_ID, NONE, wire_code
from shmlog.errors import KafkaError, error, reason_of

COORDINATOR_LEADER = "shmlog-coordinator"   # the leader id TCP members see when they lead (see above)
CONSUMER = "consumer"
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
_I16 = struct.Struct(">h")


class Channel:
    """A control connection of one TCP client's group requests: one request at a time, replies
    matched by id, the coordinator's pushes (rebalance notices) passed over: a Kafka member learns
    of a rebalance from its next Heartbeat's REBALANCE_IN_PROGRESS."""

    def __init__(self, data_dir):
        self.sock, _ = control.connect(data_dir)
        self.reader = self.sock.makefile("rb")
        self.next_id = 0

    def request(self, op, **fields):
        self.next_id += 1
        rid = self.next_id
        self.sock.sendall(control.encode({"op": op, "id": rid, **fields}))
        while True:
            line = self.reader.readline()
            if not line:
                raise error(KafkaError._TRANSPORT, "the supervisor closed the control channel")
            reply = json.loads(line)
            if reply.get("push") or reply.get("id") != rid:
                continue
            return reply

    def close(self):
        try:
            self.reader.close()
            self.sock.close()
        except OSError:
            pass


def _call(conn, op, **fields):
    """(error code, reply) of a group op on the connection's own channel."""
    try:
        reply = conn.group().request(op, **fields)
    except Exception as exc:  # noqa: BLE001 - a lost supervisor is the coordinator being unavailable
        conn.log_refusal(f"{op}: {reason_of(exc)}")
        conn.drop_group_channel()   # the next request connects again (to a restarted supervisor)
        return 15, {"error": reason_of(exc)}   # COORDINATOR_NOT_AVAILABLE: the client retries
    if not reply.get("ok"):
        return wire_code(reply.get("code", -1)), reply
    return NONE, reply


def find_coordinator(conn, req, version):
    host, port = conn.server.advertised
    entry = {"error_code": NONE, "node_id": NODE_ID, "host": host, "port": port}
    keys = getattr(req, "coordinator_keys", None)
    if keys is not None and version >= 4:
        return {"coordinators": [{"key": k, **entry} for k in keys]}
    return entry


def _subscription(metadata):
    """(topics, owned [[topic, partition]]) from ConsumerProtocolSubscription bytes."""
    if metadata is None or len(metadata) < 2:
        raise ValueError("empty subscription")
    version = _I16.unpack_from(metadata, 0)[0]
    schema = Subscription0 if version == 0 else Subscription1
    sub, _ = entity_reader(schema)(metadata, 2)
    owned = [[o.topic, p] for o in getattr(sub, "owned_partitions", ()) for p in o.partitions]
    return list(sub.topics), owned


def join_group(conn, req, version):
    fail = {"generation_id": -1, "protocol_name": None, "leader": "", "member_id": req.member_id or "",
            "members": []}
    if req.protocol_type != CONSUMER:
        return {**fail, "error_code": INCONSISTENT_GROUP_PROTOCOL}
    try:
        topics, owned = _subscription(req.protocols[0].metadata if req.protocols else None)
    except Exception as exc:  # noqa: BLE001 - any undecodable metadata is the client's error
        conn.log_refusal(f"JoinGroup {req.group_id!r}: subscription does not decode: {exc}")
        return {**fail, "error_code": INCONSISTENT_GROUP_PROTOCOL}
    session_ms = int(req.session_timeout.total_seconds() * 1000)
    rebalance = getattr(req, "rebalance_timeout", None)
    rebalance_ms = int(rebalance.total_seconds() * 1000) if rebalance is not None else session_ms
    code, reply = _call(conn, "join_group", group=req.group_id, client_id=conn.client_id or "",
                        protocols=[p.name for p in req.protocols], subscription=topics,
                        session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms, owned=owned,
                        member_id=req.member_id or "", instance_id=getattr(req, "group_instance_id", None))
    if code:
        return {**fail, "error_code": code}
    me = reply["member_id"]
    leader = reply.get("leader") or COORDINATOR_LEADER
    return {"error_code": NONE, "generation_id": reply["generation"], "protocol_type": CONSUMER,
            "protocol_name": reply["protocol"], "leader": COORDINATOR_LEADER if leader == me else leader,
            "member_id": me, "members": []}


def _assignment_bytes(assignment):
    by_topic = {}
    for t, p in assignment:
        by_topic.setdefault(t, []).append(p)
    value = ConsumerProtocolAssignment(
        assigned_partitions=tuple(TopicPartition(topic=t, partitions=tuple(sorted(ps)))
                                  for t, ps in sorted(by_topic.items())), user_data=None)
    out = io.BytesIO()
    out.write(_I16.pack(0))
    entity_writer(ConsumerProtocolAssignment)(out, value)
    return out.getvalue()


def sync_group(conn, req, version):
    code, reply = _call(conn, "sync_group", group=req.group_id, generation=req.generation_id,
                        member_id=req.member_id, instance_id=getattr(req, "group_instance_id", None))
    if code:
        return {"error_code": code, "assignment": b""}
    return {"error_code": NONE, "protocol_type": CONSUMER, "protocol_name": reply.get("protocol"),
            "assignment": _assignment_bytes(reply.get("assignment") or [])}


def heartbeat(conn, req, version):
    code, _ = _call(conn, "heartbeat", group=req.group_id, generation=req.generation_id, member_id=req.member_id,
                    instance_id=getattr(req, "group_instance_id", None))
    return {"error_code": code}


def leave_group(conn, req, version):
    members = getattr(req, "members", None)
    if version < 3 or members is None:
        code, _ = _call(conn, "leave_group", group=req.group_id, member_id=req.member_id)
        return {"error_code": code}
    out = []
    for m in members:
        code, _ = _call(conn, "leave_group", group=req.group_id, member_id=m.member_id,
                        instance_id=m.group_instance_id)
        out.append({"member_id": m.member_id, "group_instance_id": m.group_instance_id, "error_code": code})
    return {"error_code": NONE, "members": out}


def offset_commit(conn, req, version):
    offsets = [[t.name, p.partition_index, p.committed_offset, p.committed_metadata]
               for t in req.topics for p in t.partitions]
    generation = getattr(req, "generation_id", None)
    if generation is None:
        generation = getattr(req, "generation_id_or_member_epoch", -1)
    code, reply = _call(conn, "offset_commit", group=req.group_id, offsets=offsets, generation=generation,
                        member_id=req.member_id or "", instance_id=getattr(req, "group_instance_id", None))
    results = {(t, p): c for t, p, c in reply.get("results", [])} if not code else {}
    return {"topics": [{"name": t.name, "partitions": [
        {"partition_index": p.partition_index,
         "error_code": code or wire_code(results.get((t.name, p.partition_index), NONE))}
        for p in t.partitions]} for t in req.topics]}


def offset_fetch(conn, req, version):
    wanted = None if req.topics is None else [[t.name, p] for t in req.topics for p in t.partition_indexes]
    code, reply = _call(conn, "offset_fetch", group=req.group_id, partitions=wanted)
    if code:
        return {"error_code": code, "topics": []}
    by_topic = {}
    for t, p, offset, metadata in reply["offsets"]:
        by_topic.setdefault(t, []).append({"partition_index": p, "committed_offset": offset if offset >= 0 else -1,
                                           "committed_leader_epoch": -1, "metadata": metadata or "",
                                           "error_code": NONE})
    return {"error_code": NONE, "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]}


def describe_groups(conn, req, version):
    code, reply = _call(conn, "describe_groups", groups=list(req.groups))
    if code:
        return {"groups": [{"error_code": code, "group_id": g, "group_state": "", "protocol_type": "",
                            "protocol_data": "", "members": []} for g in req.groups]}
    out = []
    for g in reply["groups"]:
        members = [{"member_id": m["member_id"], "group_instance_id": m.get("instance_id"),
                    "client_id": m.get("client_id") or "", "client_host": m.get("host") or "",
                    "member_metadata": b"", "member_assignment": _assignment_bytes(m.get("assignment") or [])}
                   for m in g["members"]]
        out.append({"error_code": NONE, "group_id": g["group_id"], "group_state": g["state"],
                    "protocol_type": g["protocol_type"] or "", "protocol_data": g["protocol"] or "",
                    "members": members})
    return {"groups": out}


def list_groups(conn, req, version):
    code, reply = _call(conn, "list_groups")
    if code:
        return {"error_code": code, "groups": []}
    return {"error_code": NONE, "groups": [{"group_id": g["group_id"], "protocol_type": g["protocol_type"] or "",
                                            "group_state": g["state"]} for g in reply["groups"]]}

