"""Message and TopicPartition with confluent-kafka's accessors."""

OFFSET_BEGINNING = -2
OFFSET_END = -1
OFFSET_STORED = -1000
OFFSET_INVALID = -1001

TIMESTAMP_NOT_AVAILABLE = 0
TIMESTAMP_CREATE_TIME = 1
TIMESTAMP_LOG_APPEND_TIME = 2


class Message:
    __slots__ = ("_topic", "_partition", "_offset", "_timestamp", "_key", "_value", "_headers",
                 "_error", "_latency", "_leader_epoch")

    def __init__(self, topic=None, partition=-1, offset=OFFSET_INVALID, key=None, value=None,
                 headers=None, timestamp=(TIMESTAMP_NOT_AVAILABLE, 0), error=None, leader_epoch=None):
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers
        self._timestamp = timestamp
        self._error = error
        self._latency = None
        self._leader_epoch = leader_epoch

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return self._headers

    def timestamp(self):
        return self._timestamp

    def error(self):
        return self._error

    def latency(self):
        return self._latency

    def leader_epoch(self):
        return self._leader_epoch

    def len(self):
        return len(self._value) if self._value is not None else 0

    __len__ = len

    def set_key(self, key):
        self._key = key

    def set_value(self, value):
        self._value = value

    def set_headers(self, headers):
        self._headers = headers

    def __repr__(self):
        return (f"Message(topic={self._topic!r}, partition={self._partition}, offset={self._offset}, "
                f"key={self._key!r}, error={self._error!r})")


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
                f"error={self.error}}}")
