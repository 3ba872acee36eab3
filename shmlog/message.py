"""Message and TopicPartition with confluent-kafka's accessors."""
from shmlog._native import _fast

OFFSET_BEGINNING = -2
OFFSET_END = -1
OFFSET_STORED = -1000
OFFSET_INVALID = -1001

TIMESTAMP_NOT_AVAILABLE = 0
TIMESTAMP_CREATE_TIME = 1
TIMESTAMP_LOG_APPEND_TIME = 2


# Message is a C type (csrc/fast/message.c: no Python __init__ per record) with confluent-kafka's
# accessors: topic() partition() offset() key() value() headers() timestamp() error() latency()
# leader_epoch() len() set_key() set_value() set_headers().
Message = _fast.Message


class TopicPartition:
    __slots__ = ("topic", "partition", "offset", "metadata", "leader_epoch", "error")

    def __init__(self, topic, partition=-1, offset=OFFSET_INVALID, metadata=None, leader_epoch=None):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.metadata = metadata
        self.leader_epoch = leader_epoch
        self.error = None

    def __eq__(self, other):
        return isinstance(other, TopicPartition) and (self.topic, self.partition) == (other.topic, other.partition)

    def __lt__(self, other):
        return (self.topic, self.partition) < (other.topic, other.partition)

    def __hash__(self):
        return hash((self.topic, self.partition))

    def __repr__(self):
        return (f"TopicPartition{{topic={self.topic},partition={self.partition},offset={self.offset},"
                f"leader_epoch={self.leader_epoch},error={self.error}}}")

    __str__ = __repr__
