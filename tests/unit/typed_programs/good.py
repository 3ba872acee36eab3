# ruff: noqa: UP031, UP032, UP045  (written as confluent-kafka's examples are: %-formats, Optional)
"""A program written against confluent-kafka's API (after its examples: producer.py,
consumer.py, adminapi.py, context_manager_example.py, avro/json producers, asyncio_example.py)
with only the imports changed to shmlog. mypy must find no error in it."""
import asyncio
import sys
from concurrent.futures import Future
from typing import Optional

from shmlog import (
    OFFSET_BEGINNING,
    Broker,
    Consumer,
    DeserializingConsumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    SerializingProducer,
    TopicCollection,
    TopicPartition,
)
from shmlog.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)
from shmlog.aio import AIOConsumer, AIOProducer
from shmlog.schema_registry import Schema, SchemaRegistryClient
from shmlog.schema_registry.avro import AvroDeserializer, AvroSerializer
from shmlog.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from shmlog.serialization import MessageField, SerializationContext, StringDeserializer, StringSerializer


def delivery_callback(err: Optional[KafkaError], msg: Message) -> None:
    if err:
        sys.stderr.write("%% Message failed delivery: %s\n" % err)
    else:
        sys.stderr.write("%% Message delivered to %s [%d] @ %d\n" % (msg.topic(), msg.partition(), msg.offset()))


def produce(conf: dict, topic: str) -> int:
    p = Producer(conf)
    for line in ["a", "b"]:
        try:
            p.produce(topic, line.rstrip(), callback=delivery_callback)
        except BufferError:
            sys.stderr.write("%% Local producer queue is full (%d messages awaiting delivery)\n" % len(p))
        p.poll(0)
    queued: int = p.produce_batch(topic, [{"value": b"x", "key": b"k"}], on_delivery=delivery_callback)
    remaining: int = p.flush(10.0)
    return queued + remaining


def print_assignment(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    print("Assignment:", partitions)


def consume(conf: dict, topics: list[str]) -> None:
    c = Consumer(conf)
    c.subscribe(topics, on_assign=print_assignment)
    try:
        while True:
            msg = c.poll(timeout=1.0)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            value = msg.value()
            print(msg.topic(), msg.partition(), msg.offset(), msg.key(), value)
            committed = c.commit(message=msg, asynchronous=False)
            if committed is not None:
                for tp in committed:
                    print(tp.topic, tp.partition, tp.offset, tp.error)
            low, high = c.get_watermark_offsets(TopicPartition(msg.topic() or "", msg.partition()))
            print(high - low)
            break
    finally:
        c.close()


def context_managers(conf: dict, topic: str) -> None:
    with Producer(conf) as producer:
        producer.produce(topic, value=b"v", key="k")
    with Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"}) as consumer:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        for m in consumer.consume(num_messages=10, timeout=1.0):
            print(m.value())
    with AdminClient(conf) as admin:
        md: ClusterMetadata = admin.list_topics(timeout=10)
        for t in md.topics.values():
            print(t.topic, len(t.partitions), [p.leader for p in t.partitions.values()])


def administer(a: AdminClient, topic: str) -> None:
    fs = a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    for name, f in fs.items():
        try:
            f.result()
            print("Topic {} created".format(name))
        except KafkaException as e:
            err: KafkaError = e.args[0]
            print("Failed to create topic {}: {} {}".format(name, err.code(), err.str()))
    a.create_partitions([NewPartitions(topic, 6)])
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "60000"})
    for res, cf in a.describe_configs([resource]).items():
        configs: dict[str, ConfigEntry] = cf.result()
        for entry in configs.values():
            print(res, entry.name, entry.value, ConfigSource(entry.source), entry.is_default)
    resource.add_incremental_config(ConfigEntry("cleanup.policy", "compact",
                                                incremental_operation=AlterConfigOpType.SET))
    a.incremental_alter_configs([resource])[resource].result()
    desc = a.describe_topics(TopicCollection([topic]))[topic].result()
    print(desc.name, desc.topic_id, [p.leader for p in desc.partitions])
    cluster = a.describe_cluster().result()
    print(cluster.cluster_id, cluster.controller, len(cluster.nodes))
    offsets = a.list_offsets({TopicPartition(topic, 0): OffsetSpec.latest()})
    for tp, of in offsets.items():
        print(tp, of.result().offset)
    groups = a.list_consumer_groups().result()
    for g in groups.valid:
        print(g.group_id, g.state)
    future: Future[None] = a.delete_topics([topic])[topic]
    future.result()


def serialized(conf: dict, topic: str) -> None:
    sr = SchemaRegistryClient({"url": conf["bootstrap.servers"]})
    avro = AvroSerializer(sr, '{"type": "string"}')
    json_ser = JSONSerializer('{"type": "object"}', sr)
    ctx = SerializationContext(topic, MessageField.VALUE)
    data: Optional[bytes] = avro("hello", ctx)
    print(data, json_ser({"a": 1}, ctx))
    schema_id: int = sr.register_schema(topic + "-value", Schema('{"type": "string"}', "AVRO"))
    print(schema_id, sr.get_latest_version(topic + "-value").version)
    producer = SerializingProducer({**conf, "key.serializer": StringSerializer("utf_8"),
                                    "value.serializer": avro})
    producer.produce(topic, key="k", value="v", on_delivery=delivery_callback)
    producer.flush()
    consumer = DeserializingConsumer({**conf, "group.id": "g", "key.deserializer": StringDeserializer(),
                                      "value.deserializer": AvroDeserializer(sr)})
    consumer.subscribe([topic])
    msg = consumer.poll(1.0)
    if msg is not None:
        print(msg.value())
    print(JSONDeserializer('{"type": "object"}'))
    consumer.close()


async def asynchronous(conf: dict, topic: str) -> None:
    producer = AIOProducer(conf)
    delivered = await producer.produce(topic, value=b"v")
    await producer.flush()
    await producer.close()
    print(await delivered)
    consumer = AIOConsumer({**conf, "group.id": "g"})
    await consumer.subscribe([topic])
    msg = await consumer.poll(1.0)
    if msg is not None:
        print(msg.value())
    await consumer.close()


def main(data_dir: str) -> None:
    with Broker(data_dir) as broker:
        conf = {"bootstrap.servers": broker.bootstrap_servers}
        produce(conf, "t")
        consume({**conf, "group.id": "g"}, ["t"])
        context_managers(conf, "t")
        administer(AdminClient(conf), "t")
        serialized(conf, "t")
        asyncio.run(asynchronous(conf, "t"))


if __name__ == "__main__":
    main(sys.argv[1])
