"""The C <-> Python boundary: what the C fast path (csrc/fast/) expects of Python exists, the
rules both sides apply come from one place, and a batch C decodes is one Python would too."""
import importlib
import os

import pytest

import shmlog
from shmlog._native import _fast, address, ffi, lib, procs
from shmlog._native.ring import Ring
from shmlog._native.shm import unlink
from shmlog.client.partitioner import murmur2_partition
from shmlog.log.batch import (
    RECORD_OVERHEAD_BYTES,
    RecordsBuilder,
    attributes_of,
    carries_records,
    decode_headers,
    record_count_of,
    record_size,
)
from shmlog.log.partition_reader import read_partition

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


def test_the_stub_lists_exactly_what_the_extension_exports():
    import ast
    stub = ast.parse(open(os.path.join(os.path.dirname(_fast.__file__), "_fast.pyi")).read())

    def names(body):
        return {n.name if hasattr(n, "name") else n.target.id
                for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AnnAssign))}

    assert names(stub.body) == {n for n in dir(_fast) if not n.startswith("__")}
    for cls in (n for n in stub.body if isinstance(n, ast.ClassDef)):
        exported = {n for n in vars(getattr(_fast, cls.name)) if not n.startswith("__")}
        assert {n for n in names(cls.body) if not n.startswith("__")} == exported, cls.name


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


# ---------------------------------------------------------------------- which batches a reader decodes


@pytest.fixture
def ring(request):
    name = f"/shmlog.test{os.getpid()}.{abs(hash(request.node.name)) % 10**8}"
    unlink(name)
    r = Ring.create(name, 1 << 20, "t", 1, 0, start_offset=0)
    yield r
    r.close()
    unlink(name)


def append_records(ring, slot, items):
    builder = RecordsBuilder()
    for key, value in items:
        builder.add(key, value, 1000, None, record_size(key, value))
    data, base_ts, max_ts = builder.encode()
    return ring.append(slot, ffi.from_buffer(data), len(data), len(builder), base_ts, max_ts, 1000, ffi.NULL)


@pytest.mark.parametrize("attributes,count,decoded", [
    (0, 1, True), (0, 0, False), (lib.SHMLOG_ATTR_CONTROL, 1, False),
    (0, -1, False), (0, -(1 << 31), False), (0x8000, 5, True),
])
def test_c_and_python_share_the_batch_skip_rule(attributes, count, decoded):
    assert carries_records(attributes, count) is decoded
    assert bool(lib.shmlog_batch_carries_records(attributes & 0xFFFF, count)) is decoded


def test_a_batch_whose_int32_record_count_is_negative_is_skipped_by_c_and_python_alike(ring):
    """A CRC-valid batch claiming 2**31 offsets has a records count that reads negative as Kafka's
    int32. Python's rule (carries_records) skips it; the C decoder used to test `count == 0` only,
    took it for records and tried to size its scratch for 2**31 of them (MemoryError)."""
    slot = ring.acquire_producer_slot()
    append_records(ring, slot, [(b"k0", b"first")])
    odd = ring.append(slot, ffi.new("uint8_t[1]"), 0, 1 << 31, 1000, 1000, 1000, ffi.NULL)
    last = append_records(ring, slot, [(b"k1", b"after")])
    assert (odd, last) == (1, 1 + (1 << 31))

    frames = ffi.new("shmlog_frame_ref[]", 16)
    cursor = ffi.new("shmlog_cursor *")
    buffer = bytearray(1 << 16)
    probe = ffi.new("shmlog_cursor *")
    assert ring.fetch(probe, ffi.NULL, 0, frames, 16, 1) == 3
    batch = ring.mapping.view()[frames[1].map_pos:frames[1].map_pos + frames[1].batch_bytes]
    assert record_count_of(batch) == -(1 << 31) and not carries_records(attributes_of(batch), record_count_of(batch))

    queue = _fast.RecordQueue()   # the C decoder (Consumer.poll's and _fetch's)
    n, added, wanted, stop = _fast.fetch_ring(queue, address(ring.map), address(cursor), buffer, address(frames),
                                              16, 1, "t", 0, 0, decode_headers)
    assert (n, added, wanted, stop) == (3, 2, (1 << 31) + 2, 3)
    assert [(m.offset(), m.value()) for m in queue.take(10)] == [(0, b"first"), ((1 << 31) + 1, b"after")]

    # the Python decoder (__consumer_offsets reads, segment files) agrees
    assert read_partition(ring, "/nonexistent") == [(0, b"k0", b"first"), ((1 << 31) + 1, b"k1", b"after")]
