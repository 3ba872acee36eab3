"""The value types confluent_kafka exports at its top level besides the clients (its `_model`):
Node, TopicCollection, TopicPartitionInfo, ConsumerGroupTopicPartitions, Uuid, Messages and the
enums ConsumerGroupState, ConsumerGroupType, IsolationLevel, ElectionType and AcknowledgeType,
with the same attributes, values and printed forms.

A shared module: it imports nothing from a layer, so a broker process may use it too.
"""
from __future__ import annotations

import base64
import enum
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from shmlog.message import Message, TopicPartition

E = TypeVar("E", bound=enum.Enum)


class _Ordered(enum.Enum):
    """confluent-kafka's enums order by value."""

    def __lt__(self, other):
        if not isinstance(other, type(self)):
            return NotImplemented
        return self.value < other.value


def enum_member(value: E | str | int, cls: type[E], what: str | None = None) -> E:
    """confluent-kafka's conversion of an enum argument: a member of `cls`, its name (any case)
    or its value; `what` names the argument in the error (default: the enum's name)."""
    what = what or cls.__name__
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"Unknown value {value!r} for {what}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return cls(value)
    raise TypeError(f"{what} must be a {cls.__name__}, str or int, not {type(value).__name__}")


class ConsumerGroupState(_Ordered):
    UNKNOWN = 0
    UNKOWN = 0  # confluent-kafka's deprecated misspelling, an alias of UNKNOWN
    PREPARING_REBALANCING = 1
    COMPLETING_REBALANCING = 2
    STABLE = 3
    DEAD = 4
    EMPTY = 5

    @classmethod
    def of(cls, kafka_name: str) -> ConsumerGroupState:
        """The state for Kafka's name of it ("Stable", "PreparingRebalance", ...)."""
        return {"PreparingRebalance": cls.PREPARING_REBALANCING, "CompletingRebalance": cls.COMPLETING_REBALANCING,
                "Stable": cls.STABLE, "Dead": cls.DEAD, "Empty": cls.EMPTY}.get(kafka_name, cls.UNKNOWN)


class ConsumerGroupType(_Ordered):
    UNKNOWN = 0
    CONSUMER = 1
    CLASSIC = 2


class IsolationLevel(_Ordered):
    READ_UNCOMMITTED = 0
    READ_COMMITTED = 1


class ElectionType(_Ordered):
    PREFERRED = 0
    UNCLEAN = 1


class AcknowledgeType(enum.IntEnum):
    """Share-consumer acknowledgement types (KIP-932); shmlog has no share groups."""

    ACCEPT = 1
    RELEASE = 2
    REJECT = 3


class Node:
    """A broker: shmlog has one, id 0, whose host is its data dir (what bootstrap.servers names)."""

    def __init__(self, id: int, host: str, port: int, rack: str | None = None) -> None:
        self.id = id
        self.id_string = str(id)
        self.host = host
        self.port = port
        self.rack = rack

    def __str__(self):
        return f"({self.id}) {self.host}:{self.port} {f'(Rack - {self.rack})' if self.rack else ''}"

    def __repr__(self):
        return f"Node({self.id}, {self.host!r}, {self.port})"

    def __eq__(self, other):
        if not isinstance(other, Node):
            return NotImplemented
        return (self.id, self.host, self.port, self.rack) == (other.id, other.host, other.port, other.rack)

    def __hash__(self):
        return hash((self.id, self.host, self.port))


class ConsumerGroupTopicPartitions:
    def __init__(self, group_id: str, topic_partitions: list[TopicPartition] | None = None) -> None:
        self.group_id = group_id
        self.topic_partitions = topic_partitions

    def __repr__(self):
        return f"ConsumerGroupTopicPartitions({self.group_id!r}, {self.topic_partitions!r})"


class TopicCollection:
    def __init__(self, topic_names: list[str]) -> None:
        self.topic_names = topic_names

    def __repr__(self):
        return f"TopicCollection({self.topic_names!r})"


class TopicPartitionInfo:
    def __init__(self, id: int, leader: Node | None, replicas: list[Node], isr: list[Node]) -> None:
        self.id = id
        self.leader = leader
        self.replicas = replicas
        self.isr = isr

    def __repr__(self):
        return f"TopicPartitionInfo({self.id}, leader={self.leader!r})"


class Uuid:
    """A 128-bit id (Kafka's topic ids), printed as Kafka prints it: URL-safe base64, no padding."""

    __slots__ = ("_msb", "_lsb")

    def __init__(self, most_significant_bits: int, least_significant_bits: int) -> None:
        self._msb = most_significant_bits & 0xFFFFFFFFFFFFFFFF
        self._lsb = least_significant_bits & 0xFFFFFFFFFFFFFFFF

    @classmethod
    def from_string(cls, text: str) -> Uuid:
        """shmlog extension: the Uuid Kafka's text form (22 URL-safe base64 characters) names."""
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if len(raw) != 16:
            raise ValueError(f"{text!r} is not a Kafka Uuid (16 bytes in URL-safe base64)")
        return cls(int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big"))

    def get_most_significant_bits(self) -> int:
        return self._msb - (1 << 64) if self._msb >> 63 else self._msb

    def get_least_significant_bits(self) -> int:
        return self._lsb - (1 << 64) if self._lsb >> 63 else self._lsb

    def __str__(self):
        raw = self._msb.to_bytes(8, "big") + self._lsb.to_bytes(8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    __repr__ = __str__

    def __int__(self) -> int:
        return (self._msb << 64) | self._lsb

    def __eq__(self, other):
        if not isinstance(other, Uuid):
            return NotImplemented
        return (self._msb, self._lsb) == (other._msb, other._lsb)

    def __hash__(self):
        return hash((self._msb, self._lsb))


class Messages:
    """A read-only batch of Message (what a share consumer's poll returns in confluent-kafka)."""

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._records = list(messages)

    def records(self) -> list[Message]:
        return list(self._records)

    def count(self) -> int:
        return len(self._records)

    def is_empty(self) -> bool:
        return not self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._records)

    def __getitem__(self, index: int) -> Message:
        if isinstance(index, slice):
            return Messages(self._records[index])
        return self._records[index]

    def __repr__(self):
        return f"Messages({self._records!r})"


# ---------------------------------------------------------------------------- exceptions
# confluent-kafka raises these from its share consumer (RuntimeError subclasses, as there).

class IllegalStateException(RuntimeError):
    pass


class ConcurrentModificationException(RuntimeError):
    pass


# ---------------------------------------------------------------------------- share groups
# Kafka's share groups (KIP-932, queue semantics over a topic) are not built in shmlog.

class ShareConsumer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from shmlog.errors import KafkaError, error
        raise error(KafkaError._NOT_IMPLEMENTED, f"{type(self).__name__} is not supported by shmlog: share groups "
                    f"(KIP-932) are not built; use a Consumer in a consumer group")


class DeserializingShareConsumer(ShareConsumer):
    pass
