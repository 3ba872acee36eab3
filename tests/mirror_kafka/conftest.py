"""Fixtures of the mirror and Kafka-cluster tests: a Kafka-protocol cluster (kafka_cluster.py) and a
second shmlog broker in a data dir of its own, checked for leftovers like the first."""
import pytest

import shmlog
from shmlog._native import shm
from tests.conftest import stop_leftover_broker
from tests.mirror_kafka.kafka_cluster import kafka  # noqa: F401  (the fixture)


@pytest.fixture
def second_broker(tmp_path):
    d = tmp_path / "second"
    d.mkdir()
    with shmlog.Broker(str(d)) as b:
        yield b
    stop_leftover_broker(str(d))
    leftovers = shm.names_in_namespace(shm.namespace(str(d)))
    for name in leftovers:
        shm.unlink(name)
    assert not leftovers, f"shared memory left behind: {leftovers}"
