"""A Kafka Fetch at a corrupt frame the persister is stuck on (the first batch of the ring, its
header written over; tests/crash/test_corrupt_frame_at_the_persister.py has the shared-memory
consumer's side): the listener's read of the partition raises _BAD_MSG naming it, which the
Fetch answers as an error, instead of an empty answer to every fetch for ever."""
import time

import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")

from shmlog import KafkaError, KafkaException  # noqa: E402
from shmlog.broker.kafka_listener import handlers  # noqa: E402
from tests.conftest import create_topic  # noqa: E402
from tests.crash.test_corrupt_frame_at_the_persister import DEADLINE_S, first_batch_written_over  # noqa: E402
from tests.integration.test_kafka_listener_one_partition import listener  # noqa: E402,F401


def test_a_kafka_fetch_at_a_corrupt_frame_the_persister_is_stuck_on_gets_bad_msg_naming_the_partition(
        listener, data_dir):  # noqa: F811
    b, conn = listener
    topic = create_topic(b.admin, "stuck", 1, ring_bytes=1 << 16)
    first_batch_written_over(b.bootstrap_servers, data_dir, topic)
    ring = conn.logs.ring(topic, 0)
    deadline = time.monotonic() + DEADLINE_S
    with pytest.raises(KafkaException) as raised:
        while time.monotonic() < deadline:
            _, data, _ = handlers.read_partition(conn, ring, topic, 0, 0, False, 1 << 20)
            assert not data, "batches out of a corrupt ring"
    err = raised.value.args[0]
    assert err.code() == KafkaError._BAD_MSG
    assert f"{topic}-0" in err.str() and "corrupt" in err.str(), err.str()
