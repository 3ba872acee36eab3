"""FileStreamSource and FileStreamSink: lines of a file to a topic and back (Kafka's connectors).

Source (`file`, `topic`, `batch.size`): each complete line (ended by a newline) is a record
whose value is the line without its newline (a string); a line still being written waits for
its newline. The source partition is {"filename": file} and the offset {"position": N}, the
byte position after the line, so a restarted task seeks there and goes on. One task, as Kafka's.

Sink (`file`, `topics`): each record's value is appended as a line; flush() fsyncs the file
before the runtime commits the offsets.
"""
from __future__ import annotations

import os

from shmlog.connect.api import ConfigException, SinkConnector, SinkTask, SourceConnector, SourceTask
from shmlog.connect.config import REQUIRED, Key
from shmlog.connect.data import SourceRecord

POLL_WAIT_S = 0.1     # how long poll() waits for more lines before it returns nothing


class FileStreamSourceTask(SourceTask):
    def start(self, props):
        self.path = props["file"]
        self.topic = props["topic"]
        self.batch_size = int(props["batch.size"])
        self.partition = {"filename": self.path}
        offset = self.context.offset_storage_reader.offset(self.partition)
        self.position = int(offset["position"]) if offset else 0
        self.file = None

    def _open(self):
        try:
            self.file = open(self.path, "rb")   # noqa: SIM115 - kept open between polls
        except FileNotFoundError:
            return False
        size = os.fstat(self.file.fileno()).st_size
        if self.position > size:
            raise ConfigException(f"{self.path} is shorter ({size} bytes) than the stored position {self.position}: "
                                  f"it was truncated or replaced")
        self.file.seek(self.position)
        return True

    def poll(self):
        if self.file is None and not self._open():
            self.context.stopping.wait(POLL_WAIT_S)
            return None
        records = []
        while len(records) < self.batch_size:
            line = self.file.readline()
            if not line.endswith(b"\n"):
                self.file.seek(self.position)     # a partial line: wait for its end
                break
            self.position += len(line)
            records.append(SourceRecord(self.topic, None, None, None, {"type": "string", "optional": False},
                                        line[:-1].decode("utf-8", errors="replace"),
                                        source_partition=self.partition,
                                        source_offset={"position": self.position}))
        if not records:
            self.context.stopping.wait(POLL_WAIT_S)
        return records

    def stop(self):
        if self.file is not None:
            self.file.close()


class FileStreamSourceConnector(SourceConnector):
    task_class = FileStreamSourceTask
    config_def = {k.name: k for k in [Key("file", default=REQUIRED), Key("topic", default=REQUIRED),
                                      Key("batch.size", "int", 2000, minimum=1)]}

    def task_configs(self, max_tasks):
        return [{"file": self.props["file"], "topic": self.props["topic"], "batch.size": self.props["batch.size"]}]


class FileStreamSinkTask(SinkTask):
    def start(self, props):
        self.file = open(props["file"], "ab")   # noqa: SIM115 - kept open for the task's life

    def put(self, records):
        lines = []
        for r in records:
            value = r.value
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("utf-8", errors="replace")
            lines.append(("null" if value is None else str(value)) + "\n")
        self.file.write("".join(lines).encode())

    def flush(self, offsets):
        self.file.flush()
        os.fsync(self.file.fileno())

    def stop(self):
        self.file.close()


class FileStreamSinkConnector(SinkConnector):
    task_class = FileStreamSinkTask
    config_def = {"file": Key("file", default=REQUIRED)}

    def task_configs(self, max_tasks):
        return [{"file": self.props["file"]} for _ in range(max_tasks)]
