"""ACLs on the Kafka listener with SASL users: `shmlog acls` and the ACL APIs grant and take
away, and every request is checked (authorizer.class.name set)."""
import pytest

import shmlog

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import (  # noqa: E402
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from tests.conftest import create_topic  # noqa: E402
from tests.integration.test_kafka_listener import consume_n, wait_for_listener  # noqa: E402


def cli(*args, input=None):
    from click.testing import CliRunner

    from shmlog.cli.app import cli as app
    result = CliRunner().invoke(app, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def acl_broker(start_broker, data_dir):
    b = start_broker(**{"listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "SCRAM-SHA-256",
                        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
                        "super.users": "User:admin", "group.initial.rebalance.delay.ms": 0})
    for user in ("alice", "bob", "admin"):
        cli("users", "set", user, "--data-dir", data_dir, input=f"{user}-secret\n")
    b.admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
    b.kafka_bootstrap = f"127.0.0.1:{wait_for_listener(b.admin)['port']}"
    b.data_dir = data_dir
    create_topic(b.admin, "t", 1)
    create_topic(b.admin, "secret", 1)
    yield b
    b.admin.close()


def as_user(b, user, **extra):
    return {"bootstrap.servers": b.kafka_bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": f"{user}-secret", **extra}


def produce_as(b, user, value):
    reports = []
    p = ck.Producer(as_user(b, user, **{"message.timeout.ms": 10000}))
    p.produce("t", value=value, partition=0, on_delivery=lambda e, m: reports.append(e))
    p.flush(30)
    return reports


def test_a_user_granted_write_and_read_produces_and_consumes_and_another_is_refused(acl_broker):
    b = acl_broker
    cli("acls", "--data-dir", b.data_dir, "--add", "--allow-principal", "User:alice", "--operation", "Write",
        "--operation", "Read", "--topic", "t")
    cli("acls", "--data-dir", b.data_dir, "--add", "--allow-principal", "User:alice", "--operation", "Read",
        "--group", "app")
    assert produce_as(b, "alice", b"from-alice") == [None]
    refused = produce_as(b, "bob", b"from-bob")
    assert len(refused) == 1 and refused[0].code() == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED
    c = ck.Consumer(as_user(b, "alice", **{"group.id": "app", "auto.offset.reset": "earliest"}))
    c.subscribe(["t"])
    assert [v for *_, v in consume_n(c, 1)] == [b"from-alice"]
    c.commit(asynchronous=False)
    c.close()
    shm = shmlog.Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "x"})
    shm.assign([shmlog.TopicPartition("t", 0, 0)])
    assert [v for *_, v in consume_n(shm, 2, timeout_s=3)] == [b"from-alice"], "bob's record was appended"
    shm.close()


def test_a_deny_acl_takes_away_what_an_allow_gave_from_the_next_request(acl_broker):
    b = acl_broker
    cli("acls", "--data-dir", b.data_dir, "--add", "--allow-principal", "User:*", "--operation", "Write",
        "--topic", "t")
    assert produce_as(b, "bob", b"one") == [None]
    cli("acls", "--data-dir", b.data_dir, "--add", "--deny-principal", "User:bob", "--operation", "Write",
        "--topic", "t")
    assert produce_as(b, "bob", b"two")[0].code() == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_as(b, "alice", b"three") == [None]


def test_a_consumer_without_group_read_is_refused_with_group_authorization_failed(acl_broker):
    b = acl_broker
    cli("acls", "--data-dir", b.data_dir, "--add", "--allow-principal", "User:bob", "--operation", "Read",
        "--topic", "t")
    c = ck.Consumer(as_user(b, "bob", **{"group.id": "not-bobs"}))
    c.subscribe(["t"])
    errors = []
    for _ in range(40):
        m = c.poll(0.25)
        if m is not None and m.error():
            errors.append(m.error().code())
            break
    c.close()
    assert errors == [ck.KafkaError.GROUP_AUTHORIZATION_FAILED]


def test_metadata_lists_only_the_topics_a_user_may_describe(acl_broker):
    b = acl_broker
    cli("acls", "--data-dir", b.data_dir, "--add", "--allow-principal", "User:bob", "--operation", "Describe",
        "--topic", "t")
    admin = ck.admin.AdminClient(as_user(b, "bob"))
    topics = set(admin.list_topics(timeout=10).topics)
    assert "t" in topics and "secret" not in topics


def test_acls_created_described_and_deleted_over_the_acl_apis_by_a_super_user(acl_broker):
    b = acl_broker
    admin = ck.admin.AdminClient(as_user(b, "admin"))
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:bob", "*",
                         AclOperation.WRITE, AclPermissionType.ALLOW)
    admin.create_acls([binding])[binding].result(10)
    assert produce_as(b, "bob", b"granted") == [None]
    found = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                                 AclOperation.ANY, AclPermissionType.ANY)).result(10)
    assert found == [binding]
    assert "User:bob" in cli("acls", "--data-dir", b.data_dir, "--list", "--topic", "t")
    flt = AclBindingFilter(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:bob", None,
                           AclOperation.ANY, AclPermissionType.ANY)
    assert admin.delete_acls([flt])[flt].result(10) == [binding]
    assert produce_as(b, "bob", b"taken")[0].code() == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_user_who_is_not_a_super_user_cannot_create_acls(acl_broker):
    admin = ck.admin.AdminClient(as_user(acl_broker, "bob"))
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:bob", "*",
                         AclOperation.ALL, AclPermissionType.ALLOW)
    with pytest.raises(ck.KafkaException) as raised:
        admin.create_acls([binding])[binding].result(10)
    assert raised.value.args[0].code() == ck.KafkaError.CLUSTER_AUTHORIZATION_FAILED
