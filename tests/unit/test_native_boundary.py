"""The C <-> Python boundary: what the C fast path (csrc/fast/) expects of Python exists."""
import importlib

import pytest

import shmlog
from shmlog._native import _fast, address, ffi

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
