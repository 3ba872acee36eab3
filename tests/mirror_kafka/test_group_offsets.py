"""Consumer-group offsets follow the data: a group's committed source offsets, translated through
the mirror's offset syncs, make the same group on the target resume at the very record after the
last one it consumed on the source, though the two logs number their records differently
(aborted transactions in the source, one transaction per mirrored batch in the target)."""
import shmlog
from shmlog import clients
from shmlog.bridge.mirror import Mirror
from tests.mirror_kafka.mirror_helpers import start_mirror, stop, wait_until

PARTITIONS = 3
GROUP_PREFIX = "billing"


def fill_with_gaps(conf, topic, txn_id):
    """Committed and aborted transactions mixed: the committed records' offsets have holes."""
    lib = clients.library(conf)
    p = lib.Producer({**conf, "transactional.id": txn_id})
    p.init_transactions(30)
    n = 0
    for round_ in range(6):
        p.begin_transaction()
        for i in range(40):
            p.produce(topic, key=f"k{(n + i) % 11}", value=f"r{round_}-{i}".encode(), partition=(n + i) % PARTITIONS)
        if round_ % 3 == 1:
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
            n += 40


def committed_records(conf, topic):
    """{partition: [(offset, value)]} of the committed records."""
    lib = clients.library(conf)
    c = lib.Consumer({**conf, "group.id": "inspect", "enable.auto.commit": False, "isolation.level": "read_committed"})
    out = {p: [] for p in range(PARTITIONS)}
    c.assign([lib.TopicPartition(topic, p, lib.OFFSET_BEGINNING) for p in range(PARTITIONS)])
    empty = 0
    while empty < 4:
        msgs = [m for m in c.consume(1000, 0.5) if m.error() is None]
        empty = 0 if msgs else empty + 1
        for m in msgs:
            out[m.partition()].append((m.offset(), m.value()))
    c.close()
    return out


def commit_progress(conf, topic, group, records):
    """The group consumed a different number of records of each partition (all of partition 2)."""
    lib = clients.library(conf)
    c = lib.Consumer({**conf, "group.id": group, "enable.auto.commit": False})
    positions = {0: records[0][7][0] + 1, 1: records[1][25][0] + 1, 2: records[2][-1][0] + 1}
    c.commit(offsets=[lib.TopicPartition(topic, p, o) for p, o in positions.items()], asynchronous=False)
    c.close()
    return positions


def next_value(records, offset):
    return next((v for o, v in records if o >= offset), None)


def resumes_at(conf, topic, group):
    """What the group reads first on each partition from its committed offsets (None: nothing)."""
    lib = clients.library(conf)
    c = lib.Consumer({**conf, "group.id": group, "enable.auto.commit": False, "isolation.level": "read_committed"})
    committed = {tp.partition: tp.offset for tp in c.committed(
        [lib.TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)}
    assert all(o >= 0 for o in committed.values()), committed
    c.assign([lib.TopicPartition(topic, p, o) for p, o in committed.items()])
    first = {}
    empty = 0
    while len(first) < PARTITIONS and empty < 6:
        msgs = [m for m in c.consume(100, 0.5) if m.error() is None]
        empty = 0 if msgs else empty + 1
        for m in msgs:
            first.setdefault(m.partition(), m.value())
    c.close()
    return {p: first.get(p) for p in range(PARTITIONS)}


def group_committed(conf, topic, group):
    lib = clients.library(conf)
    admin = lib.AdminClient(conf)
    res = admin.list_consumer_group_offsets([lib.ConsumerGroupTopicPartitions(
        group, [lib.TopicPartition(topic, p) for p in range(PARTITIONS)])])[group].result()
    return {tp.partition: tp.offset for tp in res.topic_partitions if tp.offset >= 0}


def test_a_running_mirror_commits_translated_group_offsets_on_the_kafka_cluster(broker, kafka, tmp_path):
    topic, group = kafka.name("ledger"), kafka.name(GROUP_PREFIX)
    source = {"bootstrap.servers": broker.bootstrap_servers}
    shmlog.AdminClient(source).create_topics([shmlog.NewTopic(topic, PARTITIONS)])[topic].result()
    fill_with_gaps(source, topic, kafka.name("writer"))
    records = committed_records(source, topic)
    positions = commit_progress(source, topic, group, records)

    mirror = start_mirror(tmp_path, broker.bootstrap_servers, kafka.bootstrap, [topic], kafka.name("m"),
                          "--group", group, "--group-sync-interval", "0.2")
    try:
        wait_until(lambda: len(group_committed(kafka.conf, topic, group)) == PARTITIONS,
                   "the group's offsets on the Kafka cluster", procs=[mirror])
    finally:
        assert stop(mirror) == 0
    assert group_committed(kafka.conf, topic, group) != positions   # numbered differently there ...
    expected = {p: next_value(records[p], positions[p]) for p in range(PARTITIONS)}
    assert expected[2] is None
    assert resumes_at(kafka.conf, topic, group) == expected          # ... yet the same next record


def test_translate_offsets_moves_a_group_from_kafka_to_shmlog_at_its_next_record(broker, kafka, tmp_path):
    topic, group = kafka.name("ledger"), kafka.name(GROUP_PREFIX)
    target = {"bootstrap.servers": broker.bootstrap_servers}
    admin = clients.AdminClient(kafka.conf)
    admin.create_topics([clients.library(kafka.conf).NewTopic(topic, PARTITIONS)])[topic].result()
    fill_with_gaps(kafka.conf, topic, kafka.name("writer"))
    records = committed_records(kafka.conf, topic)
    positions = commit_progress(kafka.conf, topic, group, records)

    m = Mirror(kafka.conf, target, [topic], name=kafka.name("m"), exactly_once=False)
    m.start()
    try:
        total = sum(map(len, records.values()))
        wait_until(lambda: m.step(0.2) >= 0 and m.copied >= total, "the mirror to copy everything")
    finally:
        m.close()
    from shmlog.cli import main
    assert main(["mirror", "translate-offsets", "--source", kafka.bootstrap, "--target", broker.bootstrap_servers,
                 "--topic", topic, "--name", kafka.name("m"), "--group", group]) == 0
    expected = {p: next_value(records[p], positions[p]) for p in range(PARTITIONS)}
    assert resumes_at(target, topic, group) == expected
