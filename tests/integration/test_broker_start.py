"""Metadata changes are atomic and the broker always starts (real broker processes, real files,
real /dev/shm): shared memory is checked before it is allocated and a failed allocation is
rolled back; damaged metadata, stray files and a damaged __consumer_offsets segment do not
keep a broker from starting; deleted topics never come back; topic names follow Kafka."""
import glob
import json
import os
import shutil
import time

import pytest

import shmlog
from shmlog import TopicPartition
from shmlog._native import lib, shm
from shmlog.client.admin import NewPartitions
from shmlog.errors import KafkaError, KafkaException
from tests.conftest import stop_leftover_broker

pytestmark = pytest.mark.timeout(180)


def meta_path(data_dir):
    return os.path.join(data_dir, "meta", "topics.json")


def read_meta(data_dir):
    with open(meta_path(data_dir)) as f:
        return json.load(f)


def meta_bytes(data_dir):
    try:
        with open(meta_path(data_dir), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def names(data_dir):
    return shm.names_in_namespace(shm.namespace(data_dir))


def ring_names_of(data_dir, topic_id):
    return [n for n in names(data_dir) if f".t{topic_id}.p" in n]


def next_topic_id(data_dir):
    try:
        return read_meta(data_dir)["next_topic_id"]
    except FileNotFoundError:
        return 1


def refused(future):
    with pytest.raises(KafkaException) as exc:
        future.result(timeout=30)
    return exc.value.args[0]


def alive(broker):
    """The supervisor still runs and answers."""
    assert broker.process.poll() is None
    a = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    try:
        return set(a.list_topics().topics)
    finally:
        a.close()


def produce(conf, topic, values, acks="all"):
    p = shmlog.Producer({**conf, "acks": acks})
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0
    p.close()


def consume_all(conf, topic, partition=0, timeout=10.0):
    """Every record of the partition (values) and its watermarks."""
    c = shmlog.Consumer(conf)
    low, high = c.get_watermark_offsets(TopicPartition(topic, partition))
    c.assign([TopicPartition(topic, partition, shmlog.OFFSET_BEGINNING)])
    got, deadline = [], time.monotonic() + timeout
    while len(got) < high - low and time.monotonic() < deadline:
        got += [m.value() for m in c.consume(100, timeout=0.2)]
    c.close()
    return got, (low, high)


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def captured_until(capfd, text, timeout=10.0):
    """What the broker wrote to stderr (forwarded by shmlog.Broker), once it contains `text`."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        seen += capfd.readouterr().err
        time.sleep(0.05)
    return seen


# ------------------------------------------------------------------ shared memory is checked first

def test_a_topic_larger_than_dev_shm_is_refused_with_the_numbers_and_nothing_allocated(admin, broker, data_dir):
    st = os.statvfs("/dev/shm")
    ring_bytes = 1 << (st.f_blocks * st.f_frsize).bit_length()   # more than /dev/shm holds, let alone has free
    before, first_id = meta_bytes(data_dir), next_topic_id(data_dir)
    err = refused(admin.create_topics([shmlog.NewTopic("huge", 1, config={"ring.bytes": str(ring_bytes)})])["huge"])
    assert err.code() == KafkaError._CRIT_SYS_RESOURCE
    text = str(err)
    assert str(lib.shmlog_ring_map_bytes(ring_bytes, 0)) in text and "/dev/shm" in text and "free" in text, text
    assert meta_bytes(data_dir) == before
    assert ring_names_of(data_dir, first_id) == []
    assert "huge" not in alive(broker)
    admin.create_topics([shmlog.NewTopic("small", 1, config={"ring.bytes": "65536"})])["small"].result()
    assert read_meta(data_dir)["topics"]["small"]["id"] == first_id


def test_shmlog_shm_max_bytes_caps_the_rings_a_broker_allocates(data_dir):
    ring = lib.shmlog_ring_map_bytes(65536, 0)
    with shmlog.Broker(data_dir, shmlog_shm_max_bytes=3 * ring, ring_bytes=65536) as b:
        a = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        a.create_topics([shmlog.NewTopic("two", 2)])["two"].result()
        before, next_id = meta_bytes(data_dir), next_topic_id(data_dir)
        err = refused(a.create_topics([shmlog.NewTopic("more", 2)])["more"])
        assert err.code() == KafkaError.POLICY_VIOLATION
        assert "shmlog.shm.max.bytes" in str(err) and str(2 * ring) in str(err), str(err)
        err = refused(a.create_partitions([NewPartitions("two", 4)])["two"])
        assert err.code() == KafkaError.POLICY_VIOLATION
        assert meta_bytes(data_dir) == before and ring_names_of(data_dir, next_id) == []
        a.create_partitions([NewPartitions("two", 3)])["two"].result()   # exactly the cap
        assert len(a.list_topics().topics["two"].partitions) == 3
        a.close()
    stop_leftover_broker(data_dir)


def squat(data_dir, topic_id, partition):
    """Another process holds a shared-memory name the broker is about to create."""
    name = shm.ring_name(shm.namespace(data_dir), topic_id, partition)
    shm.Mapping.create(name, 4096).close()
    return name


def test_a_create_topics_that_fails_midway_is_rolled_back(admin, broker, data_dir):
    first_id = next_topic_id(data_dir)
    before = meta_bytes(data_dir)
    squatted = squat(data_dir, first_id, 1)
    err = refused(admin.create_topics([shmlog.NewTopic("half", 3)])["half"])
    assert "nothing was created" in str(err), str(err)
    assert ring_names_of(data_dir, first_id) == [squatted]      # p0 unlinked, p2 never made
    assert meta_bytes(data_dir) == before
    assert not glob.glob(os.path.join(data_dir, "logs", "half-*"))
    assert "half" not in alive(broker)
    shm.unlink(squatted)
    admin.create_topics([shmlog.NewTopic("half", 3)])["half"].result()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    produce(conf, "half", [b"x"])


def test_a_create_partitions_that_fails_midway_is_rolled_back(admin, broker, data_dir):
    admin.create_topics([shmlog.NewTopic("grow", 1)])["grow"].result()
    topic_id = read_meta(data_dir)["topics"]["grow"]["id"]
    before = meta_bytes(data_dir)
    squatted = squat(data_dir, topic_id, 2)
    refused(admin.create_partitions([NewPartitions("grow", 3)])["grow"])
    assert sorted(ring_names_of(data_dir, topic_id)) == sorted([squatted, shm.ring_name(
        shm.namespace(data_dir), topic_id, 0)])
    assert meta_bytes(data_dir) == before
    assert len(admin.list_topics().topics["grow"].partitions) == 1
    assert "grow" in alive(broker)
    shm.unlink(squatted)
    admin.create_partitions([NewPartitions("grow", 3)])["grow"].result()
    assert len(admin.list_topics().topics["grow"].partitions) == 3


# ------------------------------------------------------------------ metadata and log dirs at start

def make_topics(data_dir, *topics):
    with shmlog.Broker(data_dir) as b:
        a = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        for t in topics:
            a.create_topics([shmlog.NewTopic(t, 1)])[t].result()
        a.close()
    stop_leftover_broker(data_dir)


@pytest.mark.parametrize("damage", [b"{\"topics\": {", b"", b"[1, 2]", b'{"topics": [], "next_topic_id": 1}',
                                    b'{"next_topic_id": 3, "topics": {"a": {"id": "x"}}}'])
def test_damaged_metadata_is_recovered_from_the_previous_copy(data_dir, damage, capfd):
    make_topics(data_dir, "first", "second")
    with open(meta_path(data_dir), "wb") as f:
        f.write(damage)
    with shmlog.Broker(data_dir) as b:
        # The .bak is the copy written before the last change (creating "second").
        assert alive(b) == {"first"}
        a = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        a.create_topics([shmlog.NewTopic("second", 1)])["second"].result()
        a.close()
    stop_leftover_broker(data_dir)
    err = captured_until(capfd, "recovered the topic metadata")
    assert f"{meta_path(data_dir)} cannot be used" in err and "topics.json.bak" in err, err
    damaged = glob.glob(meta_path(data_dir) + ".damaged-*")
    assert len(damaged) == 1 and open(damaged[0], "rb").read() == damage
    assert set(read_meta(data_dir)["topics"]) == {"first", "second"}


def test_damaged_metadata_without_a_good_copy_is_a_clear_error_that_leaves_nothing_behind(data_dir):
    make_topics(data_dir, "only")
    assert not os.path.exists(meta_path(data_dir) + ".bak")   # creating "only" was the first change
    with open(meta_path(data_dir), "w") as f:
        f.write("not json")
    with pytest.raises(KafkaException) as exc:
        shmlog.Broker(data_dir).start()
    text = str(exc.value)
    assert meta_path(data_dir) in text and "not JSON" in text and "Restore" in text, text
    assert names(data_dir) == []
    stop_leftover_broker(data_dir)


def test_a_start_that_fails_leaves_nothing_in_dev_shm(data_dir):
    make_topics(data_dir, "kept", "big")
    meta = read_meta(data_dir)
    meta["topics"]["big"]["config"]["ring.bytes"] = 2 ** 40      # valid, but far beyond /dev/shm
    with open(meta_path(data_dir), "w") as f:
        json.dump(meta, f)
    with pytest.raises(KafkaException) as exc:
        shmlog.Broker(data_dir).start()
    assert "/dev/shm" in str(exc.value) and "cannot start" in str(exc.value), str(exc.value)
    assert names(data_dir) == []
    stop_leftover_broker(data_dir)


def test_stray_entries_in_a_log_dir_are_ignored_with_a_warning(data_dir, capfd):
    logs = os.path.join(data_dir, "logs")
    os.makedirs(os.path.join(logs, "x-y-z"))
    os.makedirs(os.path.join(logs, "gone-0"))          # a topic the metadata does not know
    for name in ("junk.deleted", "foo", "a-1.2.deleted"):
        with open(os.path.join(logs, name), "w") as f:
            f.write("stray")
    with shmlog.Broker(data_dir) as b:
        a = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        a.create_topics([shmlog.NewTopic("t", 1)])["t"].result()
        time.sleep(0.5)                                # several housekeeping rounds
        assert "t" in alive(b)
        a.close()
    stop_leftover_broker(data_dir)
    err = captured_until(capfd, "junk.deleted")
    for name in ("junk.deleted", "foo", "x-y-z", "gone-0"):
        assert os.path.exists(os.path.join(logs, name)), name
        assert "ignoring" in err and os.path.join(logs, name) in err, err


# ------------------------------------------------------------------ __consumer_offsets damage

def commit_many(data_dir, n, **broker_conf):
    with shmlog.Broker(data_dir, **broker_conf) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        a = shmlog.AdminClient(conf)
        a.create_topics([shmlog.NewTopic("t", 1)])["t"].result()
        a.close()
        c = shmlog.Consumer({**conf, "group.id": "g"})
        for i in range(n):
            c.commit(offsets=[TopicPartition("t", 0, i + 1)], asynchronous=False)
        c.close()
    stop_leftover_broker(data_dir)


def offsets_segments(data_dir):
    for d in glob.glob(os.path.join(data_dir, "logs", "__consumer_offsets-*")):
        segs = sorted(glob.glob(os.path.join(d, "*.log")))
        if any(os.path.getsize(s) for s in segs):
            return segs
    raise AssertionError("no __consumer_offsets segment holds records")


def flip_middle_byte(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)


def committed(broker):
    c = shmlog.Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "g"})
    try:
        return c.committed([TopicPartition("t", 0)], timeout=10)[0].offset
    finally:
        c.close()


@pytest.mark.parametrize("which", ["older segment", "newest segment"])
def test_a_flipped_byte_in_consumer_offsets_is_cut_or_skipped_and_reported(data_dir, which):
    # Small __consumer_offsets segments, and no log cleaner: this is about damage, not compaction.
    configs = {"offsets_topic_segment_bytes": 1024, "log_cleaner_enable": False}
    commit_many(data_dir, 30, **configs)
    segments = offsets_segments(data_dir)
    assert len(segments) >= 3
    flip_middle_byte(segments[0] if which == "older segment" else segments[-1])
    with shmlog.Broker(data_dir, **configs) as b:
        # The last commit lives in the newest segment: damage in an older one costs nothing it
        # still needs; damage in the newest cuts its tail, the last commit with it.
        assert committed(b) == (30 if which == "older segment" else 29)
        assert "t" in alive(b)
    stop_leftover_broker(data_dir)
    with open(os.path.join(data_dir, "supervisor.log")) as f:   # the broker's log, complete once it stopped
        log = f.read()
    assert ("skipped the corrupt batch" if which == "older segment" else "recovery:") in log, log


# ------------------------------------------------------------------ deleted topics stay deleted

def test_a_topic_with_a_249_character_name_is_deleted_and_created_again_empty(admin, conf, broker, data_dir):
    name = "n" * 249
    admin.create_topics([shmlog.NewTopic(name, 1)])[name].result()
    produce(conf, name, [b"old%d" % i for i in range(5)])
    admin.delete_topics([name])[name].result()
    assert name not in alive(broker)
    retired = [e for e in os.listdir(os.path.join(data_dir, "logs")) if e.endswith("-delete")]
    assert all(len(e) <= 255 for e in retired)
    admin.create_topics([shmlog.NewTopic(name, 1)])[name].result()
    got, (low, high) = consume_all(conf, name)
    assert got == [] and (low, high) == (0, 0)
    wait_for(lambda: not [e for e in os.listdir(os.path.join(data_dir, "logs")) if e.endswith("-delete")],
             what="the deleted topic's directory to go")


def test_a_directory_left_by_an_earlier_topic_of_the_same_name_is_never_read(data_dir):
    """A crash between writing the metadata and renaming the directory aside (or an older
    version whose rename failed) leaves the old directory under the topic's name."""
    logs = os.path.join(data_dir, "logs")
    with shmlog.Broker(data_dir) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        a = shmlog.AdminClient(conf)
        a.create_topics([shmlog.NewTopic("again", 1)])["again"].result()
        produce(conf, "again", [b"old%d" % i for i in range(5)])
        a.close()
    stop_leftover_broker(data_dir)
    shutil.copytree(os.path.join(logs, "again-0"), os.path.join(data_dir, "saved"))
    with shmlog.Broker(data_dir) as b:
        a = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        a.delete_topics(["again"])["again"].result()
        a.close()
    stop_leftover_broker(data_dir)
    shutil.copytree(os.path.join(data_dir, "saved"), os.path.join(logs, "again-0"))
    with shmlog.Broker(data_dir) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        a = shmlog.AdminClient(conf)
        a.create_topics([shmlog.NewTopic("again", 1)])["again"].result()
        got, (low, high) = consume_all(conf, "again")
        assert got == [] and (low, high) == (0, 0)
        produce(conf, "again", [b"new"])
        a.close()
    stop_leftover_broker(data_dir)
    with shmlog.Broker(data_dir) as b:
        got, _ = consume_all({"bootstrap.servers": b.bootstrap_servers}, "again")
        assert got == [b"new"]
    stop_leftover_broker(data_dir)


def test_records_produced_into_a_new_topic_right_before_a_clean_stop_are_kept(data_dir):
    for round_ in range(6):
        topic = f"late{round_}"
        with shmlog.Broker(data_dir) as b:
            conf = {"bootstrap.servers": b.bootstrap_servers}
            a = shmlog.AdminClient(conf)
            a.create_topics([shmlog.NewTopic(topic, 1)])[topic].result()
            a.close()
            produce(conf, topic, [b"%d" % i for i in range(10)], acks=1)
        stop_leftover_broker(data_dir)
        with shmlog.Broker(data_dir) as b:
            got, _ = consume_all({"bootstrap.servers": b.bootstrap_servers}, topic)
            assert got == [b"%d" % i for i in range(10)], f"round {round_}"
        stop_leftover_broker(data_dir)


# ------------------------------------------------------------------ names and arguments

@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "é" * 150, "٣", "a b", "a/b", "tab\t", "x\n"])
def test_a_topic_name_kafka_refuses_fails_its_future_with_invalid_topic(admin, broker, data_dir, name):
    err = refused(admin.create_topics([shmlog.NewTopic(name, 1)])[name])
    assert err.code() == KafkaError.TOPIC_EXCEPTION == 17
    # The broker decides the same when asked without the client's check.
    reply = admin._cluster.control.request("create_topics", topics=[{"topic": name, "num_partitions": 1}])
    assert reply["results"][name][0] == KafkaError.TOPIC_EXCEPTION
    assert name not in alive(broker)


def test_topic_names_kafka_accepts_and_its_collision_and_reserved_names(admin):
    for name in ("a" * 249, "A.b_c-9", "_schemas", "x..y"):
        admin.create_topics([shmlog.NewTopic(name, 1)])[name].result()
    assert refused(admin.create_topics([shmlog.NewTopic("A_b.c-9", 1)])["A_b.c-9"]).code() == \
        KafkaError.TOPIC_EXCEPTION
    assert refused(admin.create_topics([shmlog.NewTopic("x..y", 1)])["x..y"]).code() == \
        KafkaError.TOPIC_ALREADY_EXISTS
    for internal in ("__consumer_offsets", "__transaction_state"):
        assert refused(admin.create_topics([shmlog.NewTopic(internal, 1)])[internal]).code() == \
            KafkaError.INVALID_REQUEST


def test_new_topic_and_new_partitions_check_their_arguments_as_confluent_kafka_does():
    for bad in (None, 123, b"bytes"):
        with pytest.raises(TypeError, match="topic"):
            shmlog.NewTopic(bad)
    with pytest.raises(TypeError, match="num_partitions"):
        shmlog.NewTopic("t", num_partitions=True)
    with pytest.raises(TypeError, match="num_partitions"):
        shmlog.NewTopic("t", num_partitions=1.5)
    with pytest.raises(TypeError, match="replication_factor"):
        shmlog.NewTopic("t", 1, replication_factor="3")
    with pytest.raises(TypeError, match="config"):
        shmlog.NewTopic("t", 1, config=[("retention.ms", "1")])
    with pytest.raises(TypeError, match="new_total_count"):
        NewPartitions("t", None)


def test_a_partition_count_out_of_range_is_a_value_error_at_create_topics(admin):
    with pytest.raises(ValueError, match="num_partitions"):
        admin.create_topics([shmlog.NewTopic("t", -5)])


def test_delete_topic_enable_false_refuses_delete_topics(data_dir):
    with shmlog.Broker(data_dir, delete_topic_enable=False) as b:
        a = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        a.create_topics([shmlog.NewTopic("stays", 1)])["stays"].result()
        err = refused(a.delete_topics(["stays"])["stays"])
        assert err.code() == KafkaError.TOPIC_DELETION_DISABLED == 73
        assert "delete.topic.enable" in str(err)
        assert "stays" in alive(b)
        a.close()
    stop_leftover_broker(data_dir)


def test_an_embedded_broker_logs_every_line_to_its_log_file_and_only_warnings_to_stderr(data_dir, capfd):
    import signal

    from shmlog.broker import launcher
    with shmlog.Broker(data_dir) as b:
        admin = shmlog.AdminClient({"bootstrap.servers": b.bootstrap_servers})
        admin.create_topics([shmlog.NewTopic("logged", 1)])["logged"].result(10)
        admin.close()
        os.kill(launcher.status(data_dir)["persister_pid"], signal.SIGKILL)
        err = captured_until(capfd, "restarting", timeout=30)
    with open(os.path.join(data_dir, "supervisor.log")) as f:
        log = f.read()
    assert "WARNING shmlog supervisor[" in err and "killed by SIGKILL); restarting" in err, err
    assert "created topic 'logged'" in log and "killed by SIGKILL); restarting" in log
    assert "created topic 'logged'" not in err and " INFO shmlog " not in err
