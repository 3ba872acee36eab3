"""Message and TopicPartition with confluent-kafka's accessors."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from shmlog._native import _fast

if TYPE_CHECKING:
    from shmlog.errors import KafkaError

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


def _type_name(value):
    return "None" if value is None else type(value).__name__


def _index(name, value, bits):
    """value as an int, as PyArg's "i" (bits=32) and "L" (bits=64) take it; bools refused."""
    if isinstance(value, bool):
        raise TypeError(f"TopicPartition() argument '{name}' must be int, not bool")
    value = operator.index(value)   # TypeError: "'str' object cannot be interpreted as an integer"
    if bits == 32 and not -2**31 <= value < 2**31:
        raise OverflowError(f"signed integer is {'greater than maximum' if value > 0 else 'less than minimum'}")
    if bits == 64 and not -2**63 <= value < 2**63:
        raise OverflowError("int too big to convert")
    return value


class TopicPartition:
    __slots__ = ("topic", "partition", "offset", "metadata", "leader_epoch", "error")
    topic: str
    partition: int
    offset: int
    metadata: str | None
    leader_epoch: int | None
    error: KafkaError | None

    def __init__(self, topic: str, partition: int = -1, offset: int = OFFSET_INVALID, metadata: str | None = None,
                 leader_epoch: int | None = None) -> None:
        # confluent-kafka's argument checks (PyArg "s|iLsi"), its TypeError and OverflowError
        # messages: topic a str; partition, offset and leader_epoch anything with __index__
        # (numpy ints too), within int32/int64/int32; a negative leader_epoch means None. Two
        # differences: a bool is refused (confluent-kafka takes True as 1; here it is a slip, as
        # for NewTopic), and metadata=None is the default it stands for, not a TypeError.
        if not isinstance(topic, str):
            raise TypeError(f"argument 1 must be str, not {_type_name(topic)}")
        if metadata is not None and not isinstance(metadata, str):
            raise TypeError(f"argument 4 must be str, not {_type_name(metadata)}")
        self.topic = topic
        self.partition = _index("partition", partition, 32)
        self.offset = _index("offset", offset, 64)
        self.metadata = metadata
        self.leader_epoch = None if leader_epoch is None or _index("leader_epoch", leader_epoch, 32) < 0 \
            else int(leader_epoch)
        self.error = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicPartition) and (self.topic, self.partition) == (other.topic, other.partition)

    def __lt__(self, other: TopicPartition) -> bool:
        return (self.topic, self.partition) < (other.topic, other.partition)

    def __hash__(self) -> int:
        return hash((self.topic, self.partition))

    def __repr__(self) -> str:
        return (f"TopicPartition{{topic={self.topic},partition={self.partition},offset={self.offset},"
                f"leader_epoch={self.leader_epoch},error={self.error}}}")

    __str__ = __repr__
