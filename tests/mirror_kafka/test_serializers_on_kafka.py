"""shmlog's serializers with bootstrap.servers on a Kafka cluster: shmlog.clients hands out
confluent-kafka's SerializingProducer/DeserializingConsumer, which call shmlog's Avro and string
serializers unchanged (here with the schema registry kept in a shmlog broker's `_schemas`)."""
from shmlog import clients
from shmlog.schema_registry import SchemaRegistryClient
from shmlog.schema_registry.avro import AvroDeserializer, AvroSerializer
from shmlog.serialization import StringDeserializer, StringSerializer

SCHEMA = """{"type": "record", "name": "Trade", "fields": [
    {"name": "id", "type": "string"}, {"name": "price", "type": "double"}]}"""


def test_avro_values_written_to_a_kafka_cluster_read_back_equal(kafka, broker):
    topic = kafka.name("trades")
    lib = clients.library(kafka.conf)
    admin = clients.AdminClient(kafka.conf)
    admin.create_topics([lib.NewTopic(topic, 1)])[topic].result()
    registry = SchemaRegistryClient({"url": broker.bootstrap_servers})
    producer = clients.SerializingProducer({**kafka.conf, "key.serializer": StringSerializer(),
                                            "value.serializer": AvroSerializer(registry, SCHEMA)})
    trades = [{"id": f"t-{i}", "price": 100.0 + i / 4} for i in range(20)]
    for t in trades:
        producer.produce(topic, key=t["id"], value=t)
    assert producer.flush(30) == 0

    consumer = clients.DeserializingConsumer({**kafka.conf, "group.id": kafka.name("g"),
                                              "auto.offset.reset": "earliest",
                                              "key.deserializer": StringDeserializer(),
                                              "value.deserializer": AvroDeserializer(registry)})
    consumer.assign([lib.TopicPartition(topic, 0, lib.OFFSET_BEGINNING)])
    got = []
    while len(got) < len(trades):
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None
        got.append((msg.key(), msg.value()))
    consumer.close()
    registry.close()
    assert got == [(t["id"], t) for t in trades]
