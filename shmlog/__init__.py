"""shmlog: a Kafka-semantics message broker for one host over POSIX shared memory.

The client API mirrors confluent-kafka-python; see README.md.
"""
from .admin import AdminClient, ConfigResource, NewPartitions, NewTopic
from .broker import Broker
from .consumer import Consumer, RecordBatchView
from .errors import KafkaError, KafkaException
from .message import (OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, OFFSET_STORED, TIMESTAMP_CREATE_TIME,
                      TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_NOT_AVAILABLE, Message, TopicPartition)
from .producer import Producer
from .serializing import DeserializingConsumer, SerializingProducer

__version__ = "0.1.0"

__all__ = [
    "AdminClient", "Broker", "ConfigResource", "Consumer", "DeserializingConsumer", "SerializingProducer", "KafkaError", "KafkaException", "Message",
    "NewPartitions", "NewTopic", "OFFSET_BEGINNING", "OFFSET_END", "OFFSET_INVALID", "OFFSET_STORED",
    "Producer", "RecordBatchView", "TIMESTAMP_CREATE_TIME", "TIMESTAMP_LOG_APPEND_TIME",
    "TIMESTAMP_NOT_AVAILABLE", "TopicPartition",
]
