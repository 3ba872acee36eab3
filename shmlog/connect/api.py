"""What a connector implements, with Kafka Connect's shape (org.apache.kafka.connect.*).

A Connector is configured in the worker process and splits its job into task configs; each
task runs in its own process. A SourceTask's poll() returns SourceRecords (each with the
source partition and offset it reached); a SinkTask's put() receives SinkRecords and flush()
makes what it was given durable before the runtime commits the consumer offsets.
"""
from __future__ import annotations

import threading
from typing import Any

from shmlog.stop_event import StopEvent


class ConnectException(Exception):
    """A connector or the runtime failed (org.apache.kafka.connect.errors.ConnectException)."""


class DataException(ConnectException):
    """A record could not be converted or transformed (org.apache.kafka.connect.errors.DataException)."""


class RetriableException(ConnectException):
    """A failure worth trying again with the same records (the runtime calls again after a backoff)."""


class ConfigException(ConnectException):
    """A config value is missing or wrong; the message names the key."""


class Connector:
    """config_def: {key: Key} of the connector's own keys (shmlog.connect.config.Key)."""
    config_def: dict = {}

    def start(self, props: dict[str, Any]) -> None:
        self.props = props

    def task_configs(self, max_tasks: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class SourceConnector(Connector):
    kind = "source"


class SinkConnector(Connector):
    kind = "sink"


class OffsetStorageReader:
    """The last committed offset of a source partition (a dict), or None."""

    def __init__(self, offsets: dict):
        self._offsets = offsets

    def offset(self, partition: dict) -> dict | None:
        from shmlog.connect.offsets import partition_key
        return self._offsets.get(partition_key(partition))


class TaskContext:
    """What the runtime gives a task: its config, a stop event to wait on between polls (`is_set()`,
    `wait(timeout)`; the task process sets it on SIGTERM), and for source tasks the offset
    storage reader."""

    def __init__(self, connector_name: str, task_id: int, stopping: StopEvent | threading.Event,
                 offset_storage_reader: OffsetStorageReader | None = None):
        self.connector_name = connector_name
        self.task_id = task_id
        self.stopping = stopping
        self.offset_storage_reader = offset_storage_reader


class Task:
    def initialize(self, context: TaskContext) -> None:
        self.context = context

    def start(self, props: dict[str, Any]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class SourceTask(Task):
    def poll(self) -> list | None:
        """Records read since the last call (None or [] when there are none yet). May wait,
        but should return when context.stopping is set."""
        raise NotImplementedError

    def commit(self) -> None:
        """The offsets of everything poll() returned so far are committed."""


class SinkTask(Task):
    def open(self, partitions: list) -> None:
        pass

    def put(self, records: list) -> None:
        raise NotImplementedError

    def flush(self, offsets: dict) -> None:
        """Make everything put() so far durable: the runtime commits `offsets` next."""

    def close(self, partitions: list) -> None:
        pass
