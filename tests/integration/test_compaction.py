"""Compaction on a running broker: the cleaner process, consumers of compacted topics, and
the internal topics (__consumer_offsets, _schemas) compacted and replayed after a restart."""
import os
import time

import psutil

import shmlog
from shmlog import TopicPartition
from shmlog.broker import cleaner as cleaner_process
from shmlog.broker import launcher
from shmlog.broker.coordinator import offsets_partition
from shmlog.log.partition_reader import read_partition
from shmlog.log.segment import list_segments, segment_path
from shmlog.schema_registry import Schema, SchemaRegistryClient
from tests.conftest import create_topic

DEADLINE_S = 60
FAST = {"log.cleaner.backoff.ms": 20}
# Each sealed segment due at once: at the default ratio (0.5) the last few dirty segments can stay
# below it for good, next to the many small segments the first clean left (as in Kafka).
OFFSETS_COMPACTED_AT_EVERY_SEGMENT = {"offsets.topic.segment.bytes": 1024, "log.cleaner.min.cleanable.ratio": 0.01,
                                      "group.initial.rebalance.delay.ms": 0}


def wait_until(condition, what, timeout_s=DEADLINE_S, state=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}{state()}"
        time.sleep(0.02)
    return result


def cleaned_up_to(data_dir, name):
    """The partition's first dirty offset as the cleaner process last published it (0: not yet)."""
    st = cleaner_process.read(os.path.realpath(data_dir)) or {}
    part = (st.get("partitions") or {}).get(name) or {}
    return part.get("first_dirty_offset", 0) if part.get("cleans") else 0


def partition_path(data_dir, name):
    """The partition directory of name ("topic-p") in the broker's one log dir."""
    for root in (os.path.join(data_dir, "logs"), data_dir):
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise AssertionError(f"no partition directory {name} in {data_dir}")


def wait_fully_cleaned(data_dir, name):
    """Until the cleaner has cleaned every sealed segment of name; returns the active segment's base."""
    def done():
        bases = list_segments(partition_path(data_dir, name))
        return bases[-1] if len(bases) > 1 and cleaned_up_to(data_dir, name) == bases[-1] else None

    def state():
        pdir = partition_path(data_dir, name)
        st = cleaner_process.read(os.path.realpath(data_dir)) or {}
        sizes = {base: os.path.getsize(segment_path(pdir, base)) for base in list_segments(pdir)}
        return f"; segments {sizes}, cleaner {(st.get('partitions') or {}).get(name)}"
    return wait_until(done, f"the cleaner to clean all of {name}", state=state)


def produce_keyed(conf, topic, records):
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0})
    for key, value in records:
        p.produce(topic, key=key, value=value)
        p.flush(10)   # one batch each: segments roll at batch boundaries
    p.close()


def consume_all(conf, topic):
    c = shmlog.Consumer({**conf, "group.id": "reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    high = c.get_watermark_offsets(TopicPartition(topic, 0))[1]
    got = []
    while not got or got[-1][0] < high - 1:
        m = c.poll(5)
        assert m is not None, got[-3:]
        got.append((m.offset(), m.key(), m.value()))
    c.close()
    return got


def test_a_consumer_of_a_compacted_topic_reads_each_keys_latest_value_after_the_cleaner_ran(start_broker):
    b = start_broker(**FAST)
    conf = {"bootstrap.servers": b.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, "c", 1, cleanup_policy="compact", segment_bytes=1024, min_cleanable_dirty_ratio=0.01)
    admin.close()
    records = [(b"k%d" % (i % 5), b"v%d" % i) for i in range(300)]
    produce_keyed(conf, "c", records)
    upto = wait_fully_cleaned(b.data_dir, "c-0")
    got = consume_all(conf, "c")
    latest = {}
    for offset, (key, value) in enumerate(records):
        if offset < upto:
            latest[key] = (offset, key, value)
    assert got[:len(latest)] == sorted(latest.values())
    assert [r[0] for r in got[len(latest):]] == list(range(upto, 300))


def test_a_delete_policy_topic_is_left_whole(start_broker):
    b = start_broker(**FAST, **{"log.cleaner.threads": 2})
    conf = {"bootstrap.servers": b.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, "d", 1, segment_bytes=1024)
    create_topic(admin, "c", 1, cleanup_policy="compact", segment_bytes=1024, min_cleanable_dirty_ratio=0.01)
    admin.close()
    produce_keyed(conf, "d", [(b"k", b"%d" % i) for i in range(100)])
    produce_keyed(conf, "c", [(b"k", b"%d" % i) for i in range(100)])
    wait_until(lambda: cleaned_up_to(b.data_dir, "c-0"), "the cleaner to clean c-0")  # it ran a round
    assert "d-0" not in (cleaner_process.read(os.path.realpath(b.data_dir))["partitions"])
    assert len(consume_all(conf, "d")) == 100


def test_cleanup_policy_altered_to_compact_at_run_time_is_compacted(start_broker):
    b = start_broker(**FAST)
    conf = {"bootstrap.servers": b.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, "t", 1, segment_bytes=1024, min_cleanable_dirty_ratio=0.01)
    produce_keyed(conf, "t", [(b"k", b"%d" % i) for i in range(100)])
    resource = shmlog.admin.ConfigResource("topic", "t", set_config={"cleanup.policy": "compact"})
    for future in admin.alter_configs([resource]).values():
        future.result()
    admin.close()
    wait_until(lambda: cleaned_up_to(b.data_dir, "t-0"), "the cleaner to clean t-0")
    assert len(consume_all(conf, "t")) < 100


def test_the_supervisor_restarts_a_killed_cleaner(start_broker):
    b = start_broker(**FAST)
    first = wait_until(lambda: launcher.status(b.data_dir).get("cleaner_pid"), "a cleaner")
    psutil.Process(first).kill()
    second = wait_until(lambda: (pid := launcher.status(b.data_dir).get("cleaner_pid")) != first and pid,
                        "a new cleaner")
    assert psutil.Process(second).is_running()


def test_committed_offsets_survive_a_restart_after_the_offsets_topic_was_compacted(data_dir):
    configs = {**FAST, **OFFSETS_COMPACTED_AT_EVERY_SEGMENT}
    with shmlog.Broker(data_dir, **configs) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        create_topic(admin, "t", 2)
        admin.close()
        c = shmlog.Consumer({**conf, "group.id": "g"})
        for i in range(400):
            c.commit(offsets=[TopicPartition("t", i % 2, i)], asynchronous=False)
        c.close()
        wait_fully_cleaned(b.data_dir, f"__consumer_offsets-{offsets_partition('g')}")
    with shmlog.Broker(data_dir, **configs) as b:
        c = shmlog.Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "g"})
        got = c.committed([TopicPartition("t", 0), TopicPartition("t", 1)])
        c.close()
    assert [tp.offset for tp in got] == [398, 399]


def test_the_offsets_topic_replay_reads_about_one_record_per_committed_partition_after_compaction(data_dir):
    configs = {**FAST, **OFFSETS_COMPACTED_AT_EVERY_SEGMENT}
    with shmlog.Broker(data_dir, **configs) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        create_topic(admin, "t", 1)
        admin.close()
        c = shmlog.Consumer({**conf, "group.id": "g"})
        for i in range(500):
            c.commit(offsets=[TopicPartition("t", 0, i)], asynchronous=False)
        c.close()
        name = f"__consumer_offsets-{offsets_partition('g')}"
        wait_fully_cleaned(b.data_dir, name)
    pdir = partition_path(data_dir, name)

    class NoRing:
        def locate(self, offset):
            return None

        def start(self):
            return 0, 0

    records = read_partition(NoRing(), pdir)
    active = list_segments(pdir)[-1]
    assert len(records) == 1 + len([r for r in records if r[0] >= active])   # one commit below the active segment
    assert len(records) < 60


def test_schemas_survive_a_restart_after_the_schemas_topic_was_compacted(data_dir):
    configs = {**FAST, "schemas.topic.segment.bytes": 1024}
    with shmlog.Broker(data_dir, **configs) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        sr = SchemaRegistryClient({"url": b.bootstrap_servers})
        first = sr.register_schema("s0", Schema('"string"', "AVRO"))
        admin = shmlog.AdminClient(conf)
        resource = shmlog.admin.ConfigResource("topic", "_schemas", set_config={"min.cleanable.dirty.ratio": "0.01"})
        for future in admin.alter_configs([resource]).values():
            future.result()
        admin.close()
        ids = {f"s{i}": sr.register_schema(f"s{i}", Schema(f'{{"type": "fixed", "name": "f{i}", "size": {i}}}',
                                                            "AVRO")) for i in range(1, 40)}
        sr.set_compatibility("s1", "NONE")
        sr.close()
        wait_fully_cleaned(b.data_dir, "_schemas-0")
    with shmlog.Broker(data_dir, **configs) as b:
        sr = SchemaRegistryClient({"url": b.bootstrap_servers})
        assert sr.get_schema(first).schema_str == '"string"'
        assert {s: sr.get_latest_version(s).schema_id for s in ids} == ids
        assert sr.get_compatibility("s1") == "NONE"
        sr.close()


def test_the_schemas_topic_is_created_with_schemas_topic_segment_bytes_unless_its_creator_gives_one(start_broker):
    b = start_broker(**{"schemas.topic.segment.bytes": 4096})
    sr = SchemaRegistryClient({"url": b.bootstrap_servers})
    sr.register_schema("s", Schema('"string"', "AVRO"))
    sr.close()
    admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
    resource = shmlog.admin.ConfigResource("topic", "_schemas")
    configs = admin.describe_configs([resource])[resource].result()
    admin.close()
    assert configs["segment.bytes"].value == "4096"


# ---------------------------------------------------------------------------- what the CLI shows

def test_the_cli_shows_cleaned_segments_and_the_cleaners_status(start_broker):
    from tests.integration.test_cli import shmlog_cli
    b = start_broker(**FAST)
    conf = {"bootstrap.servers": b.bootstrap_servers}
    admin = shmlog.AdminClient(conf)
    create_topic(admin, "c", 1, cleanup_policy="compact", segment_bytes=1024, min_cleanable_dirty_ratio=0.01)
    admin.close()
    produce_keyed(conf, "c", [(b"k%d" % (i % 3), b"v%d" % i) for i in range(60)])
    wait_fully_cleaned(b.data_dir, "c-0")
    pdir = partition_path(b.data_dir, "c-0")
    first = os.path.join(pdir, f"{list_segments(pdir)[0]:020d}.log")
    newest = os.path.join(pdir, f"{list_segments(pdir)[-1]:020d}.log")
    dumped = shmlog_cli("dump-log", first, newest)
    assert dumped.returncode == 0, dumped.stdout + dumped.stderr
    assert dumped.stdout.count("Cleaned: yes") == 1 and dumped.stdout.count("Cleaned: no") == 1
    verified = shmlog_cli("verify-log", "--data-dir", b.data_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    status = shmlog_cli("log", "cleaner-status", "--data-dir", b.data_dir)
    assert status.returncode == 0 and "c-0" in status.stdout and "RECLAIMED" in status.stdout, status.stderr
    described = shmlog_cli("topics", "describe", "c", "--data-dir", b.data_dir)
    assert "Cleaner 0: dirty ratio" in described.stdout, described.stdout + described.stderr
    scraped = shmlog_cli("metrics", "--once", "--data-dir", b.data_dir)
    assert 'shmlog_log_cleaner_dirty_ratio{partition="0",topic="c"}' in scraped.stdout, scraped.stderr
    assert "shmlog_log_cleaner_up 1.0" in scraped.stdout
