"""The C <-> Python boundary: what the C fast path (csrc/fast/) expects of Python exists, and
the rules both sides apply (and the fork detector) come from one place."""
import importlib
import os

import pytest

import shmlog
from shmlog._native import _fast, address, ffi, lib, procs
from shmlog.client.partitioner import murmur2_partition
from shmlog.log.batch import RECORD_OVERHEAD_BYTES, record_size

# ---------------------------------------------------------------------- names C looks up


def test_the_names_table_is_exported_from_the_extension_itself():
    names = _fast.PYTHON_NAMES
    assert names and all(isinstance(name, str) and isinstance(owner, str) for name, owner in names)
    assert len(set(names)) == len(names)
    for _, owner in names:   # every owner is a class Python defines where the table says
        module, _, cls = owner.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), cls), type), owner


def test_every_name_c_looks_up_exists_on_the_python_object_it_looks_it_up_on(conf, topic):
    producer = shmlog.Producer(conf)
    consumer = shmlog.Consumer(conf)
    try:
        consumer.assign([shmlog.TopicPartition(topic, 0, shmlog.OFFSET_BEGINNING)])
        (reader,) = consumer._readers.values()
        instances = {"shmlog.client.producer.Producer": producer, "shmlog.client.consumer.Consumer": consumer,
                     "shmlog.client.consumer._Reader": reader}
        for name, owner in _fast.PYTHON_NAMES:
            assert type(instances[owner]).__module__ + "." + type(instances[owner]).__qualname__ == owner
            assert hasattr(instances[owner], name), f"C looks up {owner}.{name}, which does not exist"
    finally:
        consumer.close()
        producer.close()


def test_the_fast_path_refuses_a_core_table_it_was_not_built_against():
    with pytest.raises(ImportError, match="different C headers"):
        _fast.bind(address(ffi.new("uint64_t[8]")))   # zeros: not a shmlog_core_entry_points


# ---------------------------------------------------------------------- rules with one author


def test_record_size_is_the_c_rule_with_the_c_overhead():
    assert RECORD_OVERHEAD_BYTES == lib.SHMLOG_RECORD_OVERHEAD_BYTES == 21
    assert record_size(None, None) == 21
    assert record_size(b"k", b"value") == 1 + 5 + 21
    assert record_size(b"k", b"value", 10) == 1 + 5 + 10 + 21
    with pytest.raises(TypeError):
        record_size("str", b"")


def test_the_default_timestamp_is_now_and_a_given_one_is_kept():
    import time
    before = time.time_ns() // 1_000_000
    assert before <= _fast.timestamp_or_now(0) <= time.time_ns() // 1_000_000
    assert _fast.timestamp_or_now(1234) == 1234


def test_the_slow_path_partitions_keys_as_the_fast_path_does(conf, admin):
    from tests.conftest import create_topic
    topic = create_topic(admin, "keyed", 7)
    producer = shmlog.Producer(conf)                                       # murmur2_random
    hashing = shmlog.Producer(dict(conf, partitioner="murmur2"))
    fnv = shmlog.Producer(dict(conf, partitioner="fnv1a_random"))
    try:
        route = producer._route(topic)
        for key in (b"", b"a", b"some key", bytes(range(200))):
            assert producer._partition_for(route, key) == murmur2_partition(key, 7)
            assert producer._choose_partition(route, key) == murmur2_partition(key, 7)
        sticky = producer._partition_for(route, None)    # null keys stick to one partition per batch
        assert 0 <= sticky < 7 and route.sticky == sticky and producer._choose_partition(route, None) == sticky
        assert hashing._partition_for(hashing._route(topic), None) == murmur2_partition(b"", 7)
        assert fnv._partition_for(fnv._route(topic), b"a") == -1    # a partitioner Python implements
    finally:
        for p in (producer, hashing, fnv):
            p.close()


def test_the_queue_full_rule_is_the_one_produce_applies(conf, topic):
    producer = shmlog.Producer(dict(conf, **{"queue.buffering.max.messages": 2, "linger.ms": 10_000}))
    try:
        assert not producer._queue_full(100)
        producer.produce(topic, b"x")
        producer.produce(topic, b"y", headers=[("h", b"v")])   # the slow path, same count
        assert producer._queue_full(1)
        with pytest.raises(BufferError):
            producer.produce(topic, b"z")
    finally:
        producer.purge()
        producer.close()


# ---------------------------------------------------------------------- one fork detector


def test_a_forked_child_sees_the_c_fork_generation_move_and_its_own_identity():
    generation, me = _fast.fork_generation(), procs.me()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: report and leave without running pytest's teardown
        try:
            os.close(read_end)
            child = (os.getpid(), procs.start_time(os.getpid()))
            ok = _fast.fork_generation() == generation + 1 and procs.me() == child
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        assert os.read(read_end, 1) == b"1"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert _fast.fork_generation() == generation and procs.me() == me
