"""Producer ids (Kafka's InitProducerId for idempotent producers), never handed out twice in a
data dir's life.

Ids are reserved in blocks, as Kafka's ProducerIdManager does: before the first id of a block
is given out, meta/producer_ids.json is replaced (written, fsynced, renamed, directory
fsynced) with the start of the *next* block. A supervisor that dies (SIGKILL, a host crash)
and comes back reads that file and starts there, so the ids of the block it was in are simply
skipped: an id two producers share would let one's sequence numbers pass as the other's.

The file is tiny and replaced whole, so a torn write cannot happen; a file someone else
damaged makes init_producer_id fail with a clear error naming it (the broker keeps serving
everything else), never a guess that could repeat an id.
"""
import json
import os

BLOCK_SIZE = 1000                  # ids reserved per durable write (Kafka's block is 1000 too)
MAX_PRODUCER_ID = (1 << 63) - 1    # int64, as the batch header's producerId
FILE_NAME = "producer_ids.json"
VERSION = 1


class ProducerIdsUnavailable(Exception):
    """The block file cannot be read or written: no id is handed out (never one that may repeat)."""


def ids_path(data_dir):
    return os.path.join(data_dir, "meta", FILE_NAME)


def read_next_block(path):
    """The first id of the next block to reserve (0 when the file does not exist yet)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise ProducerIdsUnavailable(f"cannot read {path}: {exc}") from None
    try:
        doc = json.loads(raw)
        start = doc["next_block_start"]
        if doc.get("version") != VERSION or type(start) is not int or not 0 <= start <= MAX_PRODUCER_ID:
            raise ValueError(f"version {doc.get('version')!r}, next_block_start {start!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise ProducerIdsUnavailable(
            f"{path} is damaged ({exc}); it records where the next block of producer ids starts, and no id "
            f"is handed out without it. Restore it, or replace it with a next_block_start above every "
            f"producer id in the logs (`shmlog dump-log` shows them)") from None
    return start


def write_next_block(path, start):
    """Durably record `start` as the next block's first id (write, fsync, rename, fsync dir)."""
    directory = os.path.dirname(path)
    tmp = path + ".tmp"
    try:
        os.makedirs(directory, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"version": VERSION, "next_block_start": start}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ProducerIdsUnavailable(f"cannot write {path}: {exc}") from None


class ProducerIdAllocator:
    """Hands out producer ids from durably reserved blocks (one per supervisor run at a time)."""

    def __init__(self, data_dir, block_size=BLOCK_SIZE):
        self.path = ids_path(data_dir)
        self.block_size = block_size
        self.next_id = 0
        self.block_end = 0            # ids below this (and >= next_id) are reserved on disk

    def allocate(self):
        if self.next_id >= self.block_end:
            start = read_next_block(self.path)
            end = start + self.block_size
            if end > MAX_PRODUCER_ID:
                raise ProducerIdsUnavailable(f"producer ids are exhausted ({self.path} is at {start})")
            write_next_block(self.path, end)   # durable before any id of the block is handed out
            self.next_id, self.block_end = start, end
        pid = self.next_id
        self.next_id += 1
        return pid
