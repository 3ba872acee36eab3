"""shmlog.aio against a real broker: confluent_kafka.aio's AIOProducer and AIOConsumer."""
import asyncio
import json
import threading

import pytest

from shmlog import KafkaError, KafkaException, TopicPartition
from shmlog.aio import AIOConsumer, AIOProducer, AsyncDeserializingConsumer, AsyncSerializingProducer
from shmlog.serialization import StringDeserializer, StringSerializer
from tests.conftest import collect_until_ended, create_topic

TIMEOUT_S = 60


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


async def consume_n(consumer, n):
    got = []
    while len(got) < n:
        msg = await consumer.poll(1.0)
        if msg is not None:
            assert msg.error() is None, msg.error()
            got.append(msg)
    return got


def test_produce_returns_a_future_of_the_delivered_message(conf, admin):
    create_topic(admin, "t")

    async def main():
        async with AIOProducer({**conf, "acks": "all"}) as producer:
            futures = [await producer.produce("t", f"v{i}".encode(), key=b"k") for i in range(5)]
            return [await f for f in futures]

    delivered = run(main())
    assert [m.offset() for m in delivered] == [0, 1, 2, 3, 4]
    assert [m.value() for m in delivered] == [b"v0", b"v1", b"v2", b"v3", b"v4"]


def test_an_async_on_delivery_callback_runs_on_the_event_loop(conf, admin):
    create_topic(admin, "t")

    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        async def on_delivery(err, msg):
            seen.append((err, msg.offset(), asyncio.get_running_loop() is loop))

        async with AIOProducer(conf) as producer:
            await (await producer.produce("t", b"x", on_delivery=on_delivery))
            await producer.flush()
        await asyncio.sleep(0)  # let the callback's task run (it was scheduled with the result)
        return seen

    assert run(main()) == [(None, 0, True)]


def test_a_record_the_producer_refuses_raises_from_produce(conf, admin):
    create_topic(admin, "t")

    async def main():
        async with AIOProducer(conf) as producer:
            with pytest.raises(KafkaException) as raised:
                await producer.produce("t", b"x", partition=7)
            return raised.value.args[0].code()

    assert run(main()) == KafkaError._UNKNOWN_PARTITION


def test_the_consumer_reads_what_the_producer_wrote_with_async_rebalance_callbacks(conf, admin):
    create_topic(admin, "t", partitions=2)

    async def main():
        assigned = []
        async with AIOProducer(conf) as producer:
            for i in range(10):
                await producer.produce("t", str(i).encode(), partition=i % 2)
            await producer.flush()
        consumer = AIOConsumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})

        async def on_assign(c, partitions):
            assert c is consumer
            assigned.extend(sorted((tp.topic, tp.partition) for tp in partitions))
            await c.assign(partitions)  # re-entrant: runs while the consumer's thread waits for us
            assigned.append(len(await c.assignment()))

        await consumer.subscribe(["t"], on_assign=on_assign)
        got = await consume_n(consumer, 10)
        await consumer.commit(asynchronous=False)
        await consumer.close()
        return assigned, sorted(int(m.value()) for m in got)

    assigned, values = run(main())
    assert assigned == [("t", 0), ("t", 1), 2]
    assert values == list(range(10))


def test_the_event_loop_keeps_running_while_poll_waits(conf, admin):
    create_topic(admin, "t")

    async def main():
        ticks = 0

        async def ticker(stop):
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async with AIOConsumer({**conf, "group.id": "g"}) as consumer:
            await consumer.assign([TopicPartition("t", 0, 0)])
            stop = asyncio.Event()
            task = asyncio.create_task(ticker(stop))
            msg = await consumer.poll(0.5)  # nothing to read: the thread waits the whole time
            stop.set()
            await task
        return msg, ticks

    msg, ticks = run(main())
    assert msg is None and ticks >= 5


def test_serializing_and_deserializing_kin_round_trip_strings(conf, admin):
    create_topic(admin, "t")

    async def main():
        async with AsyncSerializingProducer({**conf, "key.serializer": StringSerializer(),
                                             "value.serializer": StringSerializer()}) as producer:
            await (await producer.produce("t", key="k", value="héllo"))
        async with AsyncDeserializingConsumer({**conf, "group.id": "g", "auto.offset.reset": "earliest",
                                               "key.deserializer": StringDeserializer(),
                                               "value.deserializer": StringDeserializer()}) as consumer:
            await consumer.subscribe(["t"])
            (msg,) = await consume_n(consumer, 1)
        return msg.key(), msg.value()

    assert run(main()) == ("k", "héllo")


def test_async_stats_and_error_callbacks_in_the_config_run_on_the_event_loop(conf, admin):
    create_topic(admin, "t")

    async def main():
        loop = asyncio.get_running_loop()
        seen = asyncio.Queue()

        async def stats_cb(stats):
            await seen.put((asyncio.get_running_loop() is loop, json.loads(stats)["type"]))

        async with AIOProducer({**conf, "statistics.interval.ms": 50, "stats_cb": stats_cb}) as producer:
            await (await producer.produce("t", b"x"))
            deadline = loop.time() + TIMEOUT_S
            while seen.empty():  # statistics are emitted from poll() once the interval is up, as librdkafka does
                assert loop.time() < deadline, "no statistics"
                await producer.poll(0)
                await asyncio.sleep(0.01)
            return seen.get_nowait()

    assert run(main()) == (True, "producer")


def test_async_clients_dropped_without_close_end_their_threads_and_leave_their_group(conf, admin):
    create_topic(admin, "t")
    before = set(threading.enumerate())   # clients of earlier tests in this process are not ours to judge

    async def main():
        producer = AIOProducer(conf)
        await (await producer.produce("t", b"v"))
        consumer = AIOConsumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
        await consumer.subscribe(["t"])
        await consume_n(consumer, 1)
        del producer, consumer

    run(main())
    ours = ("shmlog-aio", "shmlog-group", "shmlog-linger")
    threads = [t for t in threading.enumerate() if t.name.startswith(ours) and t not in before]
    assert not collect_until_ended(threads, 30), "still running"
    assert admin.describe_consumer_groups(["g"])["g"].result().members == []
