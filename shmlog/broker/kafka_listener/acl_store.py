"""Kafka's simple ACLs (AclAuthorizer's model): the bindings, the rule that decides a request,
and the file in the data dir that holds them.

A binding allows or denies a principal (`User:alice`, `User:*` for everyone) from a host (`*`
for any) one operation on a resource: a type (TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID), a name
and a pattern type (LITERAL: that name, `*` for every name; PREFIXED: names starting with it).

Deciding (Kafka's rule): a super user may do anything; a matching DENY wins; else a matching
ALLOW for the operation (or ALL; READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS
implies DESCRIBE_CONFIGS) allows; a resource no binding matches at all is allowed only with
allow.everyone.if.no.acl.found.

The bindings are `DATA_DIR/meta/acls.json` (mode 0600), replaced whole (written, fsynced,
renamed) under an exclusive lock on `acls.json.lock`, so the listener's CreateAcls/DeleteAcls
and `shmlog acls` never lose each other's changes. Readers reload it when it changes.
"""
import fcntl
import json
import os
import threading
from dataclasses import asdict, dataclass

FILE_NAME = "acls.json"
VERSION = 1

# Kafka's enum values (the wire codes), by name
RESOURCE_TYPES = {"ANY": 1, "TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5, "DELEGATION_TOKEN": 6,
                  "USER": 7}
PATTERN_TYPES = {"ANY": 1, "MATCH": 2, "LITERAL": 3, "PREFIXED": 4}
OPERATIONS = {"ANY": 1, "ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7, "DESCRIBE": 8,
              "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11, "IDEMPOTENT_WRITE": 12,
              "CREATE_TOKENS": 13, "DESCRIBE_TOKENS": 14}
PERMISSIONS = {"ANY": 1, "DENY": 2, "ALLOW": 3}
# A binding names one concrete value of each (ANY and MATCH are for filters only).
BINDING_RESOURCE_TYPES = ("TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID", "DELEGATION_TOKEN", "USER")
BINDING_PATTERN_TYPES = ("LITERAL", "PREFIXED")
BINDING_OPERATIONS = tuple(o for o in OPERATIONS if o != "ANY")
BINDING_PERMISSIONS = ("DENY", "ALLOW")
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
IMPLIED = {"DESCRIBE": ("READ", "WRITE", "DELETE", "ALTER"), "DESCRIBE_CONFIGS": ("ALTER_CONFIGS",)}


def name_of(table, code):
    for name, value in table.items():
        if value == code:
            return name
    return None


class BadAcl(ValueError):
    pass


@dataclass(frozen=True)
class Binding:
    resource_type: str
    resource_name: str
    pattern_type: str
    principal: str
    host: str
    operation: str
    permission: str

    def check(self):
        """The binding itself, or BadAcl naming what is wrong."""
        for value, allowed, what in ((self.resource_type, BINDING_RESOURCE_TYPES, "resource type"),
                                     (self.pattern_type, BINDING_PATTERN_TYPES, "pattern type"),
                                     (self.operation, BINDING_OPERATIONS, "operation"),
                                     (self.permission, BINDING_PERMISSIONS, "permission type")):
            if value not in allowed:
                raise BadAcl(f"{what} {value!r}: use one of {', '.join(allowed)}")
        if not self.resource_name:
            raise BadAcl("an empty resource name")
        if not isinstance(self.principal, str) or ":" not in self.principal or not self.principal.split(":", 1)[1]:
            raise BadAcl(f"principal {self.principal!r}: use TYPE:NAME, e.g. User:alice or User:*")
        if not self.host:
            raise BadAcl("an empty host (use * for any)")
        if self.resource_type == "CLUSTER" and self.resource_name != CLUSTER_NAME:
            raise BadAcl(f"the cluster resource is named {CLUSTER_NAME!r}, not {self.resource_name!r}")
        return self

    def matches_resource(self, rtype, name):
        if self.resource_type != rtype:
            return False
        if self.pattern_type == "PREFIXED":
            return name.startswith(self.resource_name)
        return self.resource_name in (name, WILDCARD)


@dataclass(frozen=True)
class Filter:
    """DescribeAcls/DeleteAcls filter: None matches anything; pattern MATCH is Kafka's (a name
    matches the literal binding of that name, the `*` literal and every prefix of it)."""
    resource_type: str = "ANY"
    resource_name: str = None
    pattern_type: str = "ANY"
    principal: str = None
    host: str = None
    operation: str = "ANY"
    permission: str = "ANY"

    def matches(self, b):
        if self.resource_type != "ANY" and b.resource_type != self.resource_type:
            return False
        if self.pattern_type == "MATCH":
            if self.resource_name is not None and not b.matches_resource(b.resource_type, self.resource_name):
                return False
        else:
            if self.pattern_type != "ANY" and b.pattern_type != self.pattern_type:
                return False
            if self.resource_name is not None and b.resource_name != self.resource_name:
                return False
        return ((self.principal is None or b.principal == self.principal)
                and (self.host is None or b.host == self.host)
                and (self.operation == "ANY" or b.operation == self.operation)
                and (self.permission == "ANY" or b.permission == self.permission))


def authorized(bindings, principal, host, operation, rtype, name, super_users=(), allow_if_no_acl=False):
    """Kafka's AclAuthorizer decision for one operation on one resource."""
    if principal in super_users:
        return True
    on_resource = [b for b in bindings if b.matches_resource(rtype, name)]
    if not on_resource:
        return allow_if_no_acl
    mine = [b for b in on_resource if b.principal in (principal, "User:*") and b.host in (host, WILDCARD)]
    if any(b.permission == "DENY" and b.operation in (operation, "ALL") for b in mine):
        return False
    allowing = (operation, "ALL", *IMPLIED.get(operation, ()))
    return any(b.permission == "ALLOW" and b.operation in allowing for b in mine)


# ---------------------------------------------------------------------------- the file

def path_of(data_dir):
    return os.path.join(data_dir, "meta", FILE_NAME)


def _read(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise BadAcl(f"{path} cannot be read ({exc}); restore it or remove it (every ACL is then gone)") from None
    try:
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}")
        return [Binding(**b).check() for b in doc["acls"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadAcl(f"{path} is damaged ({exc}); restore it or remove it (every ACL is then gone)") from None


def load(data_dir):
    return _read(path_of(data_dir))


def update(data_dir, change):
    """Apply change(bindings) -> (new bindings, result) under the file lock; returns result."""
    path = path_of(data_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.open(path + ".lock", os.O_WRONLY | os.O_CREAT, 0o600)) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        bindings, result = change(_read(path))
        tmp = path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump({"version": VERSION, "acls": [asdict(b) for b in bindings]}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return result


def add(data_dir, new):
    """Add bindings (each checked; ones already there are kept once)."""
    new = [b.check() for b in new]
    return update(data_dir, lambda old: (old + [b for b in dict.fromkeys(new) if b not in old], None))


def remove(data_dir, filters):
    """Remove the bindings matching any filter; returns [[removed by filter i]]."""
    def change(old):
        removed = [[b for b in old if f.matches(b)] for f in filters]
        gone = {b for group in removed for b in group}
        return [b for b in old if b not in gone], removed
    return update(data_dir, change)


class Cache:
    """The bindings as last read, read again when the file changes (one stat per call)."""

    def __init__(self, data_dir):
        self.path = path_of(data_dir)
        self.stamp = None
        self.bindings = []
        self.lock = threading.Lock()

    def get(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self.lock:
            if stamp != self.stamp:
                self.bindings = _read(self.path) if stamp is not None else []
                self.stamp = stamp
            return self.bindings
