"""Type aliases of the public API, for annotations (confluent_kafka has them in its _types and
cimpl.pyi): the config dict, headers and the callbacks the clients take."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from shmlog.errors import KafkaError
    from shmlog.message import Message, TopicPartition

Config = dict[str, Any]
HeadersType = Sequence[tuple[str, str | bytes | None]] | dict[str, str | bytes | None]
DeliveryCallback = Callable[[Optional["KafkaError"], "Message"], None]  # noqa: UP045  (a string cannot take |)
RebalanceCallback = Callable[[Any, list["TopicPartition"]], None]
