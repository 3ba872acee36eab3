"""A program with type errors against shmlog's API: mypy must report each line marked `# E`."""
import shmlog.schema_registry
from shmlog import Consumer, KafkaError, Producer, TopicPartition
from shmlog.admin import AdminClient, NewTopic

p = Producer({"bootstrap.servers": "shm:///tmp/data"})
p.flush("soon")  # E: a timeout is a number of seconds
count: str = p.poll(0)  # E: poll() returns how many reports it served (int)
c = Consumer({"bootstrap.servers": "shm:///tmp/data", "group.id": "g"})
c.subscribe("trades")  # E: a list of topics, not one str
msg = c.poll(1.0)
msg.value()  # E: poll() may return None
c.assign([("trades", 0)])  # E: TopicPartitions, not tuples
a = AdminClient({"bootstrap.servers": "shm:///tmp/data"})
a.create_topics([NewTopic("t", num_partitions="3")])  # E: num_partitions is an int
err = KafkaError(KafkaError._TIMED_OUT)
code: str = err.code()  # E: code() is an int
tp = TopicPartition("t", 0)
tp.offset = "5"  # E: offset is an int
producer_class = shmlog.Prodcer  # E: no such name (the lazy exports are no catch-all)
serializer_class = shmlog.schema_registry.AvroSerialiser  # E: likewise
