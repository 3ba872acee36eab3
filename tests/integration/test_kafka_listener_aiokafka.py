"""aiokafka (asyncio) against the Kafka listener: produce, consume with assign/seek, a consumer
group shared with a shared-memory member, and commits."""
import asyncio
import threading
import time

import pytest

import shmlog

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")
aiokafka = pytest.importorskip("aiokafka")
from aiokafka.structs import TopicPartition  # noqa: E402

from tests.conftest import create_topic  # noqa: E402
from tests.integration.test_kafka_listener import consume_n, start_with_listener  # noqa: E402


@pytest.fixture
def kbroker(start_broker):
    b = start_with_listener(start_broker)
    yield b
    b.admin.close()


def run(coro, timeout_s=60):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


async def produce(b, topic, values, partition=0):
    p = aiokafka.AIOKafkaProducer(bootstrap_servers=b.kafka_bootstrap, enable_idempotence=True)
    await p.start()
    try:
        offsets = [(await p.send_and_wait(topic, v, partition=partition)).offset for v in values]
    finally:
        await p.stop()
    return offsets


def test_aiokafka_produces_idempotently_and_a_shared_memory_consumer_reads_the_records(kbroker):
    create_topic(kbroker.admin, "t", 1)
    assert run(produce(kbroker, "t", [b"a%d" % i for i in range(10)])) == list(range(10))
    c = shmlog.Consumer({"bootstrap.servers": kbroker.bootstrap_servers, "group.id": "g"})
    c.assign([shmlog.TopicPartition("t", 0, 0)])
    assert [v for *_, v in consume_n(c, 10)] == [b"a%d" % i for i in range(10)]
    c.close()


def test_aiokafka_consumes_an_assigned_partition_from_a_seeked_offset(kbroker):
    create_topic(kbroker.admin, "t", 1)
    p = shmlog.Producer({"bootstrap.servers": kbroker.bootstrap_servers})
    for i in range(20):
        p.produce("t", value=b"s%d" % i, partition=0)
    p.flush(10)

    async def read():
        c = aiokafka.AIOKafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, enable_auto_commit=False)
        await c.start()
        try:
            tp = TopicPartition("t", 0)
            c.assign([tp])
            c.seek(tp, 12)
            got = []
            while len(got) < 8:
                batch = await c.getmany(tp, timeout_ms=1000)
                got += [(m.offset, m.value) for m in batch.get(tp, [])]
            return got
        finally:
            await c.stop()
    assert run(read()) == [(i, b"s%d" % i) for i in range(12, 20)]


def test_an_aiokafka_group_member_and_a_shared_memory_member_split_partitions_and_commit(kbroker):
    create_topic(kbroker.admin, "t", 2)
    shm = shmlog.Consumer({"bootstrap.servers": kbroker.bootstrap_servers, "group.id": "mixed",
                           "auto.offset.reset": "earliest"})
    shm.subscribe(["t"])
    stop = threading.Event()
    seen = {"theirs": set()}

    def keep_polling():     # the shared-memory member rejoins while aiokafka's JoinGroup waits for it
        while not stop.is_set():
            shm.poll(0.1)
            seen["theirs"] = {(x.topic, x.partition) for x in shm.assignment()}
    poller = threading.Thread(target=keep_polling)
    poller.start()

    async def member():
        c = aiokafka.AIOKafkaConsumer("t", bootstrap_servers=kbroker.kafka_bootstrap, group_id="mixed",
                                      enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            deadline = time.monotonic() + 30
            while (len(c.assignment()) != 1 or len(seen["theirs"]) != 1) and time.monotonic() < deadline:
                await c.getmany(timeout_ms=200)
            mine, theirs = c.assignment(), seen["theirs"]
            tp = next(iter(mine))
            await c.commit({tp: 5})
            return mine, theirs, tp
        finally:
            await c.stop()
    try:
        mine, theirs, tp = run(member())
    finally:
        stop.set()
        poller.join(10)
    committed = shm.committed([shmlog.TopicPartition(tp.topic, tp.partition)], timeout=10)
    shm.close()
    assert len(mine) == 1 and len(theirs) == 1 and (tp.topic, tp.partition) not in theirs
    assert committed[0].offset == 5, "the offset committed by aiokafka is the group's offset"
