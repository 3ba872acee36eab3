"""Producer, Consumer and AdminClient against a real broker, as a confluent-kafka user uses them."""
import multiprocessing
import os
import time

import numpy as np
import pytest

import shmlog
import shmlog.client.cluster
from shmlog import KafkaError, KafkaException, TopicPartition
from shmlog.client.partitioner import murmur2_partition
from tests.conftest import create_topic


def read_all(conf, topic, partitions=1, expected=None, timeout=5.0, extra=None):
    c = shmlog.Consumer({**conf, **(extra or {})})
    c.assign([TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    while expected is None or len(out) < expected:
        batch = c.consume(1000, timeout=timeout if expected is not None else 0.2)
        if not batch:
            break
        out += batch
    c.close()
    return out


def test_create_topics_returns_futures_and_an_existing_topic_fails_its_future(admin):
    first = admin.create_topics([shmlog.NewTopic("orders", 3)])
    assert first["orders"].result() is None
    again = admin.create_topics([shmlog.NewTopic("orders", 3)])
    with pytest.raises(KafkaException) as exc:
        again["orders"].result()
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_list_topics_shows_partitions(admin):
    create_topic(admin, "orders", 4)
    md = admin.list_topics()
    assert sorted(md.topics["orders"].partitions) == [0, 1, 2, 3]


def test_deleting_an_unknown_topic_fails_with_unknown_topic(admin):
    with pytest.raises(KafkaException) as exc:
        admin.delete_topics(["nope"])["nope"].result()
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_partitions_grows_a_topic(admin):
    create_topic(admin, "orders", 2)
    admin.create_partitions([shmlog.NewPartitions("orders", 5)])["orders"].result()
    assert len(admin.list_topics().topics["orders"].partitions) == 5


def test_describe_configs_reports_topic_settings(admin):
    create_topic(admin, "orders", 1, retention_ms=1234)
    res = shmlog.ConfigResource("topic", "orders")
    entries = admin.describe_configs([res])[res].result()
    assert entries["retention.ms"].value == "1234"  # a string, as Kafka describes every config value


def test_a_deleted_topic_leaves_no_shared_memory(admin, data_dir):
    from shmlog._native import shm
    before = set(shm.names_in_namespace(shm.namespace(data_dir)))
    create_topic(admin, "gone", 3)
    admin.delete_topics(["gone"])["gone"].result()
    assert set(shm.names_in_namespace(shm.namespace(data_dir))) == before


def test_delivery_reports_carry_offsets_and_fire_from_flush(conf, topic):
    p = shmlog.Producer({**conf, "acks": 1})
    reports = []
    for i in range(5):
        p.produce(topic, value=f"v{i}", on_delivery=lambda err, msg: reports.append((err, msg.offset(), msg.value())))
    assert len(p) == 5
    assert p.flush(5) == 0
    assert reports == [(None, i, b"v%d" % i) for i in range(5)]
    p.close()


@pytest.mark.parametrize("acks", [1, "all"])
def test_with_delivery_report_only_error_only_failed_records_are_reported(conf, topic, acks):
    p = shmlog.Producer({**conf, "acks": acks, "delivery.report.only.error": True, "linger.ms": 60_000})
    reports = []
    for i in range(3):
        p.produce(topic, value=f"v{i}", partition=0, on_delivery=lambda err, msg: reports.append((err, msg.value())))
    assert p.flush(10) == 0 and reports == []
    for i in range(3, 5):
        p.produce(topic, value=f"v{i}", partition=0, on_delivery=lambda err, msg: reports.append((err, msg.value())))
    p.purge()
    assert p.flush(10) == 0
    assert [(err.code(), value) for err, value in reports] == [(KafkaError._PURGE_QUEUE, b"v3"),
                                                                (KafkaError._PURGE_QUEUE, b"v4")]
    p.close()
    c = shmlog.Consumer({**conf, "group.id": "g"})
    assert c.get_watermark_offsets(TopicPartition(topic, 0)) == (0, 3)
    c.close()


@pytest.mark.parametrize("acks", [1, "all"])
def test_flush_waits_for_a_batch_the_linger_thread_is_appending(conf, admin, acks):
    create_topic(admin, "lingered", 4, ring_bytes=65536)   # appends wait for ring space, so often in flight
    p = shmlog.Producer({**conf, "acks": acks, "linger.ms": 1})
    delivered = [0]

    def report(err, msg):
        assert err is None, err
        delivered[0] += 1
    produced = 0
    for n in range(100):
        for i in range(40):
            p.produce("lingered", b"x" * 2048, key=b"%d" % i, on_delivery=report)
        # Work before the flush holds the GIL, which the linger thread needs back after an append.
        sum(range(5000 * (n % 20)))
        produced += 40
        assert (p.flush(30), delivered[0]) == (0, produced)
    p.close()


def test_producer_accepts_kwargs_and_callback_alias(conf, topic):
    p = shmlog.Producer(**conf)
    seen = []
    p.produce(topic, b"x", callback=lambda err, msg: seen.append(msg.offset()))
    p.flush(5)
    assert seen == [0]
    p.close()


def test_keyed_records_land_where_kafkas_default_partitioner_puts_them(conf, admin):
    create_topic(admin, "keyed", 6)
    p = shmlog.Producer(conf)
    placed = []
    for i in range(200):
        key = f"user-{i}".encode()
        p.produce("keyed", key=key, value=b"v", on_delivery=lambda e, m: placed.append((m.key(), m.partition())))
    p.flush(5)
    assert all(part == murmur2_partition(key, 6) for key, part in placed)
    p.close()


def test_null_keys_stick_to_one_partition_per_batch(conf, admin):
    create_topic(admin, "sticky", 4)
    p = shmlog.Producer({**conf, "linger.ms": 1000})
    parts = []
    for _ in range(50):
        p.produce("sticky", b"v", on_delivery=lambda e, m: parts.append(m.partition()))
    p.flush(5)
    assert len(set(parts)) == 1
    p.close()


def test_headers_timestamps_and_keys_round_trip(conf, topic):
    # A recent timestamp: one older than retention.ms would roll a segment of its own when the
    # next record arrives, and the persister's first retention check may then delete it.
    timestamp_ms = int(time.time() * 1000) - 60_000
    p = shmlog.Producer(conf)
    p.produce(topic, value=b"v", key="k", headers=[("h1", b"a"), ("h2", None)], timestamp=timestamp_ms)
    p.produce(topic, value=None, key=None, headers={"x": "y"})
    p.flush(5)
    m1, m2 = read_all(conf, topic, expected=2)
    assert (m1.key(), m1.value(), m1.headers(), m1.timestamp()) == \
        (b"k", b"v", [("h1", b"a"), ("h2", None)], (shmlog.TIMESTAMP_CREATE_TIME, timestamp_ms))
    assert (m2.key(), m2.value(), m2.headers()) == (None, None, [("x", b"y")])
    p.close()


def test_an_oversize_record_fails_with_msg_size_too_large_and_loses_nothing_else(conf, topic):
    p = shmlog.Producer({**conf, "message.max.bytes": 2000})
    p.produce(topic, b"small-1")
    with pytest.raises(KafkaException) as exc:
        p.produce(topic, b"x" * 5000)
    assert exc.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert "message.max.bytes" in str(exc.value)
    p.produce(topic, b"small-2")
    p.flush(5)
    assert [m.value() for m in read_all(conf, topic, expected=2)] == [b"small-1", b"small-2"]
    p.close()


def test_a_topic_max_message_bytes_limit_is_named_in_the_error(conf, admin):
    create_topic(admin, "tight", 1, max_message_bytes=1000)
    p = shmlog.Producer(conf)
    with pytest.raises(KafkaException) as exc:
        p.produce("tight", b"x" * 2000)
    assert "max.message.bytes (topic" in str(exc.value)
    p.close()


def test_a_record_that_can_never_fit_the_ring_names_ring_bytes(conf, admin):
    create_topic(admin, "small-ring", 1, ring_bytes=65536, max_message_bytes=10**7)
    p = shmlog.Producer({**conf, "message.max.bytes": 10**7, "max.request.size": 10**7})
    with pytest.raises(KafkaException) as exc:
        p.produce("small-ring", b"x" * 100_000)
    assert "ring.bytes" in str(exc.value)
    p.close()


def test_a_64_mib_record_works_once_the_limits_are_raised(conf, admin):
    big = 64 * 1024 * 1024
    create_topic(admin, "huge", 1, ring_bytes=256 * 1024 * 1024, max_message_bytes=big + 1024)
    p = shmlog.Producer({**conf, "message.max.bytes": big + 1024, "max.request.size": big + 1024,
                         "batch.size": big + 1024, "buffer.memory": 4 * big})
    value = os.urandom(1024) * (big // 1024)
    p.produce("huge", value)
    p.flush(30)
    got = read_all(conf, "huge", expected=1, extra={"max.partition.fetch.bytes": 1024 * 1024,
                                                     "fetch.max.bytes": 1024 * 1024})
    assert len(got) == 1 and got[0].value() == value
    p.close()


def test_an_unknown_config_key_is_rejected_naming_the_key(conf):
    with pytest.raises(KafkaException) as exc:
        shmlog.Producer({**conf, "linger.mss": 5})
    assert "linger.mss" in str(exc.value)


def test_a_missing_broker_is_a_clear_error(tmp_path):
    with pytest.raises(KafkaException) as exc:
        shmlog.Producer({"bootstrap.servers": f"shm://{tmp_path}"})
    assert "no shmlog broker is running" in str(exc.value)


def test_consumer_seeks_positions_and_reports_watermarks(conf, topic):
    p = shmlog.Producer(conf)
    for i in range(10):
        p.produce(topic, b"%d" % i)
    p.flush(5)
    c = shmlog.Consumer(conf)
    tp = TopicPartition(topic, 0, 3)
    c.assign([tp])
    assert c.poll(5).offset() == 3
    assert c.position([tp])[0].offset == 4
    c.seek(TopicPartition(topic, 0, 8))
    assert c.poll(5).value() == b"8"
    assert c.get_watermark_offsets(tp) == (0, 10)
    c.close()
    p.close()


def test_offset_end_reads_only_new_records(conf, topic):
    p = shmlog.Producer(conf)
    p.produce(topic, b"old")
    p.flush(5)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_END)])
    assert c.poll(0.05) is None
    p.produce(topic, b"new")
    p.flush(5)
    assert c.poll(5).value() == b"new"
    c.close()
    p.close()


def test_paused_partitions_are_not_returned_until_resumed(conf, admin):
    create_topic(admin, "two", 2)
    p = shmlog.Producer(conf)
    p.produce("two", b"a", partition=0)
    p.produce("two", b"b", partition=1)
    p.flush(5)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition("two", i, shmlog.OFFSET_BEGINNING) for i in range(2)])
    c.pause([TopicPartition("two", 0)])
    got = c.consume(10, timeout=0.2)
    assert [m.partition() for m in got] == [1]
    c.resume([TopicPartition("two", 0)])
    assert [m.partition() for m in c.consume(10, timeout=2)] == [0]
    c.close()
    p.close()


def test_auto_offset_reset_error_raises_offset_out_of_range(conf, topic):
    c = shmlog.Consumer({**conf, "auto.offset.reset": "error"})
    with pytest.raises(KafkaException) as exc:
        c.assign([TopicPartition(topic, 0, 100)])
    assert exc.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    c.close()


def test_acks_all_reports_only_after_the_persister_fsynced(conf, topic):
    p = shmlog.Producer({**conf, "acks": "all"})
    reports = []
    for i in range(100):
        p.produce(topic, b"%d" % i, on_delivery=lambda e, m: reports.append((e, m.offset())))
    p.flush(10)
    assert reports == [(None, i) for i in range(100)]
    c = shmlog.client.cluster.Cluster(conf["bootstrap.servers"], "test")
    assert c.ring(topic, 0).flushed_offset >= 100
    c.close()
    p.close()


def test_batch_api_moves_numpy_rows_and_reads_them_back_zero_copy(conf, topic):
    p = shmlog.Producer(conf)
    rows = np.arange(1000 * 8, dtype=np.int64).reshape(1000, 8)
    placed = p.produce_values(topic, rows, partition=0)
    assert sum(n for _, _, n in placed) == 1000
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
    seen = []
    while sum(len(v) for v in seen) < 1000:
        view = c.consume_batch(10000, timeout=5)
        assert view is not None
        arr = view.values_as(np.dtype((np.int64, 8)))
        assert view.zero_copy
        seen.append(arr.copy())
    assert (np.concatenate(seen) == rows).all()
    c.close()
    p.close()


def test_a_zero_copy_view_pins_at_most_a_sixteenth_of_the_ring_and_the_next_view_goes_on(conf, admin):
    create_topic(admin, "small", 1, ring_bytes=4 << 20)       # views of at most 256 KiB
    p = shmlog.Producer(conf)
    rows = np.arange(6000 * 8, dtype=np.int64).reshape(6000, 8)
    for start in range(0, 6000, 500):                          # batches of 500 rows, 41,061 bytes each
        p.produce_values("small", rows[start:start + 500], partition=0)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition("small", 0, shmlog.OFFSET_BEGINNING)])
    seen, sizes = [], []
    while sum(sizes) < 6000:
        view = c.consume_batch(65536, timeout=5)
        assert view is not None and view.zero_copy
        sizes.append(len(view))
        seen.append(view.values_as(np.dtype((np.int64, 8))).copy())
    assert sizes == [3000, 3000]           # six batches fit in 256 KiB, seven would not
    assert (np.concatenate(seen) == rows).all()
    c.close()
    p.close()


def test_a_view_stopping_at_max_records_inside_a_batch_larger_than_the_last_it_read_is_whole(conf, topic):
    p = shmlog.Producer(conf)
    p.produce_values(topic, np.arange(100, dtype=np.int64).reshape(100, 1), partition=0)   # one batch of 100
    p.produce_values(topic, np.arange(100, 102, dtype=np.int64).reshape(2, 1), partition=0)  # then one of 2
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
    got = []
    while sum(map(len, got)) < 102:
        view = c.consume_batch(5, timeout=5)
        assert view is not None and len(view) <= 5
        got.append(view.values_as(np.int64).copy())
    assert (np.concatenate(got) == np.arange(102)).all()
    c.close()
    p.close()


def test_value_arrays_are_views_into_shared_memory_one_per_produced_batch(conf, topic):
    p = shmlog.Producer(conf)
    for start in (0, 500):   # two produce_values calls: two frames, two constant-stride runs
        p.produce_values(topic, np.arange(start, start + 500, dtype=np.int64).reshape(500, 1), partition=0)
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
    got = []
    while sum(map(len, got)) < 1000:
        view = c.consume_batch(10000, timeout=5)
        assert view is not None
        runs = view.value_arrays(np.int64)
        assert all(not r.flags.owndata and r.base is not None for r in runs)
        assert (np.concatenate(runs) == view.values_as(np.int64)).all()
        got.extend(r.copy() for r in runs)
    assert (np.concatenate(got) == np.arange(1000)).all()
    c.close()
    p.close()


def test_batch_api_with_lists_of_bytes_keeps_keys_and_order(conf, admin):
    create_topic(admin, "lists", 3)
    p = shmlog.Producer(conf)
    values = [b"v%d" % i for i in range(300)]
    keys = [b"k%d" % (i % 7) for i in range(300)]
    p.produce_values("lists", values, keys=keys)
    got = read_all(conf, "lists", partitions=3, expected=300)
    per_key = {}
    for m in got:
        assert m.partition() == murmur2_partition(m.key(), 3)
        per_key.setdefault(m.key(), []).append(int(m.value()[1:]))
    assert all(v == sorted(v) for v in per_key.values())
    p.close()


def _child_produce(bootstrap, topic, n):
    p = shmlog.Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(topic, b"child-%d" % i)
    p.flush(10)
    p.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_clients_work_from_spawned_and_forked_processes(conf, topic, method):
    ctx = multiprocessing.get_context(method)
    proc = ctx.Process(target=_child_produce, args=(conf["bootstrap.servers"], topic, 50))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert len(read_all(conf, topic, expected=50)) == 50


def _use_inherited(producer, topic, queue):
    try:
        producer.produce(topic, b"x")
        queue.put("no error")
    except KafkaException as exc:
        queue.put(str(exc))


def test_a_producer_used_across_fork_gets_a_clear_error(conf, topic):
    p = shmlog.Producer(conf)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_use_inherited, args=(p, topic, q))
    proc.start()
    message = q.get(timeout=30)
    proc.join(30)
    assert "forked process" in message
    p.close()


def test_an_idle_blocking_poll_uses_almost_no_cpu(conf, topic):
    import resource
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_END)])
    before = resource.getrusage(resource.RUSAGE_SELF)
    assert c.poll(1.0) is None
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.05
    c.close()


def test_a_blocked_poll_wakes_when_another_process_produces(conf, topic):
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_END)])
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child_produce, args=(conf["bootstrap.servers"], topic, 1))
    proc.start()
    msg = c.poll(20)
    proc.join(30)
    assert msg is not None and msg.value() == b"child-0"
    c.close()


def test_check_crcs_reads_verify_every_batch(conf, topic):
    p = shmlog.Producer(conf)
    p.produce(topic, b"checked")
    p.flush(5)
    assert [m.value() for m in read_all(conf, topic, expected=1, extra={"check.crcs": True})] == [b"checked"]
    p.close()


def test_acks_zero_reports_delivery_once_the_batch_is_accepted(conf, topic):
    p = shmlog.Producer({**conf, "acks": 0})
    reports = []
    for i in range(3):
        p.produce(topic, b"%d" % i, on_delivery=lambda e, m: reports.append(e))
    assert p.flush(5) == 0
    assert reports == [None, None, None]
    assert len(read_all(conf, topic, expected=3)) == 3
    p.close()


def test_a_busy_polling_consumer_receives_what_another_process_produces(conf, topic):
    c = shmlog.Consumer({**conf, "shmlog.busy.poll": True})
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_END)])
    proc = multiprocessing.get_context("spawn").Process(target=_child_produce,
                                                        args=(conf["bootstrap.servers"], topic, 3))
    proc.start()
    got = []
    while len(got) < 3:
        msg = c.poll(20)
        assert msg is not None
        got.append(msg.value())
    proc.join(30)
    assert got == [b"child-0", b"child-1", b"child-2"]
    c.close()


def _child_round_trip(bootstrap, topic):
    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1})
    p.produce(topic, b"from-child")
    p.flush(10)
    c = shmlog.Consumer({"bootstrap.servers": bootstrap})
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
    assert c.poll(10) is not None
    c.close()
    p.close()


def test_pythons_resource_tracker_never_warns_about_or_unlinks_our_segments(conf, topic, data_dir):
    import subprocess
    import sys
    code = ("import sys; from tests.integration.test_clients import _child_round_trip; "
            "_child_round_trip(sys.argv[1], sys.argv[2])")
    run = subprocess.run([sys.executable, "-c", code, conf["bootstrap.servers"], topic], capture_output=True,
                         text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert run.returncode == 0, run.stderr
    assert "resource_tracker" not in run.stderr and "leaked" not in run.stderr
    from shmlog._native import shm
    assert any(".t" in n for n in shm.names_in_namespace(shm.namespace(data_dir)))
    assert len(read_all(conf, topic, expected=1)) == 1


def test_a_consumer_that_never_spins_still_wakes_for_each_record(conf, topic):
    import threading
    p = shmlog.Producer({**conf, "linger.ms": 0})
    c = shmlog.Consumer({**conf, "shmlog.wait.spin.max.us": 0})
    c.assign([TopicPartition(topic, 0, shmlog.OFFSET_END)])
    assert c.poll(0.05) is None
    turn = threading.Semaphore(0)

    def produce_on_each_turn():
        for i in range(20):
            turn.acquire()
            p.produce(topic, b"%d" % i, partition=0)   # while the consumer sits in poll() (GIL released)

    t = threading.Thread(target=produce_on_each_turn)
    t.start()
    for i in range(20):
        turn.release()
        m = c.poll(5)
        assert m is not None and m.value() == b"%d" % i
    t.join()
    c.close()
    p.close()


def test_a_consumer_of_a_deleted_topic_gets_an_error_naming_it_and_is_unassigned(conf, admin):
    create_topic(admin, "doomed", 1)
    p = shmlog.Producer(conf)
    p.produce("doomed", b"x")
    p.flush()
    c = shmlog.Consumer(conf)
    c.assign([TopicPartition("doomed", 0, shmlog.OFFSET_BEGINNING)])
    assert c.poll(5).value() == b"x"
    admin.delete_topics(["doomed"])["doomed"].result()
    m = c.poll(5)
    assert m is not None and m.error().code() == KafkaError.UNKNOWN_TOPIC_OR_PART and "doomed-0" in m.error().str()
    assert c.assignment() == []
    c.close()
    p.produce("elsewhere", b"y")   # a refresh that drops the deleted topic's ring from the producer's client
    p.flush()
    p.close()                     # releases its slot in the dropped ring without touching it
