"""shmlog._native._fast: the per-record hot paths as CPython types (csrc/fast/, one file per type).

Users meet `Message` (as shmlog.Message) and the public methods of Producer and Consumer, which
inherit ProducerCore and ConsumerCore; the underscored members are the contract between
csrc/fast/ and shmlog/client/ (the Python side's slow paths call them, and C calls back the
Python names listed in PYTHON_NAMES).
"""
from collections.abc import Callable, Sequence
from typing import Any

from shmlog.errors import KafkaError

Headers = Sequence[tuple[str, bytes | None]] | None
DecodeHeaders = Callable[[Any, int, int], list]

# (attribute name, "module.Class" whose instances must have it): every Python attribute the C
# code looks up by name (checked by tests/unit/test_native_boundary.py).
PYTHON_NAMES: tuple[tuple[str, str], ...]

def bind(entry_points_address: int) -> None:
    """Bind to the C core: the address of _core's shmlog_core_entry_points_table(). Raises
    ImportError when _core was built from different headers. Called once by shmlog._native."""

def fork_generation() -> int:
    """How many fork()s separate this process from the one that imported shmlog (pthread_atfork);
    the one fork detector (shmlog.client.cluster, shmlog._native.procs, the C fast paths)."""

def record_size(key: bytes | None, value: bytes | None, header_bytes: int = 0) -> int:
    """What a record counts against batch.size, buffer.memory and the size limits: key and value
    bytes, header key/value bytes and SHMLOG_RECORD_OVERHEAD_BYTES."""

def timestamp_or_now(timestamp: int) -> int:
    """A record's timestamp in ms since the epoch: `timestamp`, or now when it is 0."""

def kafka_produce_request(frame: Any, version: int) -> tuple[int, int, str, int, int, int] | None:
    """The Kafka listener's one-partition lane (csrc/fast/kafka_request.c): (acks, timeout_ms, topic,
    partition, records_start, records_end) of a Produce frame (the request without its size) of
    one partition's records and no transactional id, else None (kio decodes it)."""

def kafka_fetch_request(frame: Any, version: int) -> tuple[int, int, int, int, str, int, int, int] | None:
    """(max_wait_ms, min_bytes, max_bytes, isolation_level, topic, partition, fetch_offset,
    partition_max_bytes) of a Fetch frame of one partition outside any fetch session, else None."""

def fetch_ring(queue: RecordQueue, ring: int, cursor: int, buffer: Any, frames: int, max_frames: int,
               check_crc: int, topic: str, partition: int, first_offset: int,
               decode_headers: DecodeHeaders) -> tuple[int, int, int, int]:
    """One ring fetch (ring, cursor, frames: addresses of a shmlog_ring_handle, a shmlog_cursor and
    a shmlog_frame_ref array) into `buffer`, its plain batches decoded into `queue` from
    first_offset on. Returns (fetch status or frame count, records added, next offset, index of
    the first batch left for Python: compressed or invalid, else the frame count)."""

def serve_reports(batch: Batch, error: KafkaError | None) -> int:
    """Call each delivery callback of a sent (or failed) batch as callback(error, Message), the
    Message's latency() the seconds since its produce(); returns how many were called."""

def index_columns(refs: Any, count: int, bias: int, first_offset: int, at: int, offsets: Any, timestamps: Any,
                  key_positions: Any, key_lengths: Any, value_positions: Any, value_lengths: Any) -> int:
    """Copy record refs at or after first_offset into the six column arrays from row `at`,
    positions moved by `bias`; returns the next free row (RecordBatchView)."""


class Message:
    """A record (consumer) or delivery report (producer), with confluent-kafka's accessors."""

    _topic: str | None
    _partition: int
    _offset: int
    _key: bytes | None
    _value: Any
    _headers: Headers
    _error: KafkaError | None
    _latency: float | None
    _leader_epoch: int | None
    _timestamp: tuple[int, int]

    def __init__(self, topic: str | None = None, partition: int = -1, offset: int = -1001,
                 key: bytes | None = None, value: Any = None, headers: Headers = None,
                 timestamp: tuple[int, int] | None = None, error: KafkaError | None = None,
                 leader_epoch: int | None = None) -> None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> Any: ...
    def headers(self) -> Headers: ...
    def timestamp(self) -> tuple[int, int]:
        """(TIMESTAMP_CREATE_TIME or TIMESTAMP_LOG_APPEND_TIME, ms), or (0, 0) when unknown."""
    def error(self) -> KafkaError | None: ...
    def latency(self) -> float | None: ...
    def leader_epoch(self) -> int | None: ...
    def len(self) -> int: ...
    def set_key(self, key: Any) -> None: ...
    def set_value(self, value: Any) -> None: ...
    def set_headers(self, headers: Headers) -> None: ...
    def __len__(self) -> int: ...


class RecordQueue:
    """Decoded Messages of one partition, oldest first."""

    records_in: int   # records decoded into the queue so far (statistics: rxmsgs)
    bytes_in: int     # their key and value bytes

    def popleft(self) -> Message: ...
    def clear(self) -> None: ...
    def take(self, n: int) -> list:
        """Up to n Messages from the front, as a list."""
    def fill(self, buffer: Any, refs: Any, count: int, position_bias: int, topic: str, partition: int,
             timestamp_type: int, first_offset: int, decode_headers: DecodeHeaders) -> int:
        """Append a Message per record ref at or after first_offset (positions relative to
        position_bias in buffer); returns how many."""
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Message: ...


class ConsumerCore:
    """Base of shmlog.Consumer: poll() without leaving C while decoded records are queued."""

    _current: RecordQueue | None
    _current_tp: tuple[str, int] | None
    _fast_stored: dict | None
    _pins_held: bool
    _serve_needed: bool
    _fast_last_poll: float   # CLOCK_MONOTONIC seconds of the last poll served in C (read-only)

    def poll(self, timeout: float | None = None) -> Message | None:
        """The next Message, an event or error Message, or None; falls back to _poll_slow."""
    def _set_solo(self, reader: Any, frames_address: int = 0, max_frames: int = 0, check_crc: int = 0,
                  decode_headers: DecodeHeaders | None = None, read_committed: bool = False) -> None:
        """The one active reader poll() fetches for in C, or None."""
    def _fetch_solo(self) -> Message | None:
        """The solo reader's next Message after a fresh fetch, or None."""


class Batch:
    """An open record batch of one partition: its records section (the buffer protocol),
    encoded as records arrive."""

    route: Route
    partition: int
    count: int
    base_timestamp: int
    max_timestamp: int
    size_bytes: int
    records_bytes: int
    created: float
    reports: list | None
    base_offset: int
    status: int   # the ring append's status (< 0: failed), 0 before it ran
    base_sequence: int   # an idempotent batch's first sequence once appended; -1 before
    log_append_time: int   # the LogAppendTime its append stamped (a LogAppendTime topic), else -1
    topic: str
    def __len__(self) -> int: ...


class Route:
    """What produce() needs of one topic."""

    topic: str
    rings: Sequence[Any]
    partitions: int
    record_limit: int
    batch_limit: int
    sticky: int   # the partition null keys go to until its batch closes; -1: none yet

    def __init__(self, topic: str, partitions: int, record_limit: int, batch_limit: int, rings: Sequence[Any],
                 ring_handles: Sequence[int], slots: Sequence[int]) -> None: ...
    def admits(self, size: int) -> bool:
        """Whether a record of `size` (record_size()) is within the topic's limits."""
    def tx_counts(self) -> list[tuple[int, int, int, int]]:
        """Per partition: (records, bytes) appended to its ring so far, (records, bytes) in its open batch."""


class ProducerCore:
    """Base of shmlog.Producer: produce() encodes into the open batch and appends closed batches
    to their rings in C; everything else goes to _produce_slow."""

    _routes: dict
    _queued_records: int
    _queued_bytes: int

    def produce(self, topic: str, value: bytes | str | None = None, key: bytes | str | None = None,
                partition: int = -1, on_delivery: Callable | None = None, timestamp: int = 0,
                headers: Any = None, callback: Callable | None = None) -> None: ...
    def _configure(self, on_delivery: Callable | None, wake: Callable | None, epoch_address: int,
                   doorbell_address: int, fast_partitioner: bool, null_key_random: bool, linger_zero: bool,
                   acks: int, compressed: bool, batch_records: int, max_queued_records: int,
                   max_queued_bytes: int, max_block_ms: int, producer_id: int, producer_epoch: int) -> None: ...
    def _add(self, route: Route, partition: int, key: bytes | None, value: bytes | None, timestamp: int,
             headers: bytes | None, raw_headers: Any, callback: Callable | None, size: int) -> None:
        """Add a validated record to the partition's open batch (timestamp 0: now)."""
    def _queue_full(self, size: int) -> bool:
        """The local queue has no room for a record of `size` (produce() raises BufferError)."""
    def _partition_for(self, route: Route, key: bytes | None) -> int:
        """The partition for `key` with partition=-1 (sticky null keys, murmur2), or -1 when the
        configured partitioner is one Python implements."""
    def _close_batches(self, force: bool, linger_s: float) -> float | None:
        """Close and append due (or, with force, all) batches; seconds until the next is due."""
    def _reset_routes(self) -> None: ...
    def _routes_current(self) -> bool: ...
    def _purge(self) -> list: ...
    def _set_transactional(self, producer_id: int, producer_epoch: int, /) -> None: ...
    def _release_queued(self, records: int, size_bytes: int) -> None: ...
    def _take_queue_wait(self) -> tuple[int, float, float, float]:
        """(count, min_s, max_s, sum_s) of batch waits from close to append since the last call."""
    def _locked(self, fn: Callable, *args: Any) -> Any:
        """fn(*args) holding the send lock (appends outside produce())."""
