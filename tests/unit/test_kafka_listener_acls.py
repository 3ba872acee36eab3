"""Kafka's ACL decision (AclAuthorizer's rules) and the ACL file."""
import pytest

from shmlog.broker.kafka_listener import acl_store as store
from shmlog.broker.kafka_listener.acl_store import Binding, Filter, authorized


def allow(op, rtype="TOPIC", name="orders", principal="User:alice", pattern="LITERAL", host="*"):
    return Binding(rtype, name, pattern, principal, host, op, "ALLOW")


def deny(op, **kw):
    return Binding(**{**allow(op, **kw).__dict__, "permission": "DENY"})


def test_an_allow_binding_allows_its_operation_only_to_its_principal():
    acls = [allow("WRITE")]
    assert authorized(acls, "User:alice", "10.0.0.1", "WRITE", "TOPIC", "orders")
    assert not authorized(acls, "User:bob", "10.0.0.1", "WRITE", "TOPIC", "orders")
    assert not authorized(acls, "User:alice", "10.0.0.1", "READ", "TOPIC", "orders")


def test_a_deny_binding_wins_over_an_allow():
    acls = [allow("ALL", principal="User:*"), deny("WRITE")]
    assert not authorized(acls, "User:alice", "h", "WRITE", "TOPIC", "orders")
    assert authorized(acls, "User:bob", "h", "WRITE", "TOPIC", "orders")


def test_read_write_delete_and_alter_imply_describe():
    for op in ("READ", "WRITE", "DELETE", "ALTER"):
        assert authorized([allow(op)], "User:alice", "h", "DESCRIBE", "TOPIC", "orders")
    assert authorized([allow("ALTER_CONFIGS")], "User:alice", "h", "DESCRIBE_CONFIGS", "TOPIC", "orders")


def test_prefixed_and_wildcard_bindings_match_names():
    assert authorized([allow("READ", name="ord", pattern="PREFIXED")], "User:alice", "h", "READ", "TOPIC", "orders")
    assert not authorized([allow("READ", name="x", pattern="PREFIXED")], "User:alice", "h", "READ", "TOPIC", "orders")
    assert authorized([allow("READ", name="*")], "User:alice", "h", "READ", "TOPIC", "anything")


def test_a_resource_without_bindings_is_closed_unless_allow_everyone_is_set():
    assert not authorized([], "User:alice", "h", "READ", "TOPIC", "orders")
    assert authorized([], "User:alice", "h", "READ", "TOPIC", "orders", allow_if_no_acl=True)
    assert not authorized([allow("READ", principal="User:bob")], "User:alice", "h", "READ", "TOPIC", "orders",
                          allow_if_no_acl=True), "bindings exist for the resource: only they decide"


def test_super_users_may_do_anything():
    assert authorized([deny("ALL")], "User:root", "h", "WRITE", "TOPIC", "orders", super_users=("User:root",))


def test_a_host_binding_matches_only_that_host():
    acls = [allow("READ", host="10.0.0.1")]
    assert authorized(acls, "User:alice", "10.0.0.1", "READ", "TOPIC", "orders")
    assert not authorized(acls, "User:alice", "10.0.0.2", "READ", "TOPIC", "orders")


def test_bindings_are_stored_once_and_removed_by_filter(tmp_path):
    store.add(str(tmp_path), [allow("READ"), allow("READ"), allow("WRITE", rtype="GROUP", name="g")])
    assert store.load(str(tmp_path)) == [allow("READ"), allow("WRITE", rtype="GROUP", name="g")]
    removed = store.remove(str(tmp_path), [Filter(resource_type="GROUP")])
    assert removed == [[allow("WRITE", rtype="GROUP", name="g")]]
    assert store.load(str(tmp_path)) == [allow("READ")]


def test_a_bad_binding_is_refused_naming_what_is_wrong(tmp_path):
    with pytest.raises(store.BadAcl, match="operation 'FLY'"):
        store.add(str(tmp_path), [allow("FLY")])
    with pytest.raises(store.BadAcl, match="principal"):
        store.add(str(tmp_path), [allow("READ", principal="alice")])


def test_a_damaged_acl_file_is_reported_not_guessed(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "acls.json").write_text("{not json")
    with pytest.raises(store.BadAcl, match="cannot be read"):
        store.load(str(tmp_path))


def test_every_api_the_listener_serves_says_what_it_needs_or_is_filtered_or_open():
    pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
    from shmlog.broker.kafka_listener.authorizer import REQUIRES
    from shmlog.broker.kafka_listener.server import APIS
    filtered = {3, 16}          # Metadata and ListGroups list only what may be described
    open_to_all = {17, 18, 36}  # SaslHandshake, ApiVersions, SaslAuthenticate
    assert set(APIS) - set(REQUIRES) == filtered | open_to_all
