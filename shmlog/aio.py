"""shmlog.aio: the names of confluent_kafka.aio (asyncio clients). shmlog has no asyncio
clients yet: constructing one raises KafkaException(_NOT_IMPLEMENTED) saying what to use instead
(the ordinary clients, called from a thread: `await loop.run_in_executor(None, consumer.poll, 1.0)`).
"""
from shmlog.errors import KafkaError, error

__all__ = ["AIOConsumer", "AIOProducer", "AsyncDeserializingConsumer", "AsyncSerializingProducer"]


class _NotBuilt:
    _instead = "Producer"

    def __init__(self, *args, **kwargs):
        raise error(KafkaError._NOT_IMPLEMENTED, f"{type(self).__name__} is not supported by shmlog yet: it has no "
                    f"asyncio clients; use shmlog.{self._instead} from a thread (loop.run_in_executor)")


class AIOProducer(_NotBuilt):
    pass


class AIOConsumer(_NotBuilt):
    _instead = "Consumer"


class AsyncSerializingProducer(_NotBuilt):
    _instead = "SerializingProducer"


class AsyncDeserializingConsumer(_NotBuilt):
    _instead = "DeserializingConsumer"
