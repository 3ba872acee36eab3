"""Producer: confluent-kafka's API over partition rings.

Records are batched per partition (batch.size, batch.num.messages, linger.ms) and a
batch is appended to the ring in one C call: claim, copy, CRC32C, publish. Delivery
reports are served by poll()/flush() as in confluent-kafka: with acks=0/1 once the batch
is in the ring, with acks=all once the persister has fsynced it.
"""
import collections
import threading
import time
from array import array

import numpy as np

from . import layout, record
from ._core import ffi, lib
from .client import connect
from .codec import NONE, codec_id, compress_records
from .config import parse_producer_config
from .errors import KafkaError, KafkaException, error
from .message import TIMESTAMP_CREATE_TIME, Message
from .partitioner import NULL_KEY_IS_RANDOM, keyed, random_partition

RECORD_OVERHEAD_BYTES = 21  # Kafka's maximum per-record framing (varints, attributes)


def _to_bytes(value, what):
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, str or None, not {type(value).__name__}")


def encode_headers(headers):
    items = headers.items() if isinstance(headers, dict) else headers
    return record.encode_headers([(_to_bytes(k, "header key"), _to_bytes(v, "header value")) for k, v in items])


class _Batch:
    __slots__ = ("keys", "key_lens", "values", "value_lens", "timestamps", "headers", "header_lens",
                 "callbacks", "raw_headers", "bytes", "created")

    def __init__(self):
        self.keys, self.key_lens, self.values, self.value_lens = [], [], [], []
        self.timestamps, self.callbacks, self.raw_headers = [], [], []
        self.headers, self.header_lens = None, None
        self.bytes = 0
        self.created = time.monotonic()

    def __len__(self):
        return len(self.values)

    def add(self, key, value, timestamp, headers, callback, size):
        n = len(self.values)
        self.keys.append(key or b"")
        self.key_lens.append(-1 if key is None else len(key))
        self.values.append(value or b"")
        self.value_lens.append(-1 if value is None else len(value))
        self.timestamps.append(timestamp)
        self.callbacks.append(callback)
        if headers is not None:
            if self.headers is None:
                self.headers, self.header_lens = [b""] * n, [0] * n
                self.raw_headers = [None] * n
            encoded = encode_headers(headers)
            self.headers.append(encoded)
            self.header_lens.append(len(encoded))
            self.raw_headers.append(list(headers.items()) if isinstance(headers, dict) else list(headers))
        elif self.headers is not None:
            self.headers.append(b"")
            self.header_lens.append(0)
            self.raw_headers.append(None)
        self.bytes += size

    def encoder_args(self):
        """Arguments of the C record encoders for this batch (buffers kept alive by the tuple),
        and the batch's min/max timestamps."""
        key_lens = array("i", self.key_lens)
        value_lens = array("i", self.value_lens)
        timestamps = array("q", self.timestamps)
        base_ts = min(self.timestamps)
        has_headers = self.headers is not None
        header_lens = array("i", self.header_lens) if has_headers else None
        args = (len(self.values), b"".join(self.keys), ffi.from_buffer("int32_t[]", key_lens),
                b"".join(self.values), ffi.from_buffer("int32_t[]", value_lens),
                ffi.from_buffer("int64_t[]", timestamps), base_ts,
                b"".join(self.headers) if has_headers else ffi.NULL,
                ffi.from_buffer("int32_t[]", header_lens) if has_headers else ffi.NULL)
        return args, base_ts, max(self.timestamps)

    def encode(self):
        """The records section of a RecordBatch, and the batch's min/max timestamps."""
        args, base_ts, max_ts = self.encoder_args()
        size = lib.shmlog_records_encode(ffi.NULL, 0, *args)
        out = bytearray(size)
        lib.shmlog_records_encode(ffi.from_buffer(out), size, *args)
        return out, base_ts, max_ts


class _Route:
    __slots__ = ("info", "partitions", "record_limit", "batch_limit")

    def __init__(self, info, partitions, record_limit, batch_limit):
        self.info, self.partitions, self.record_limit, self.batch_limit = info, partitions, record_limit, batch_limit


class Producer:
    """confluent_kafka.Producer over a shmlog broker: `Producer(conf)` or `Producer(**conf)`."""

    def __init__(self, conf=None, **kwargs):
        conf = dict(conf or {})
        conf.update(kwargs)
        self._cfg = cfg = parse_producer_config(conf)
        self._acks = cfg.acks
        self._linger_s = cfg.linger_ms / 1000.0
        self._batch_bytes = cfg.batch_size
        self._batch_records = cfg.batch_num_messages
        self._max_block_ms = cfg.max_block_ms
        self._max_queued = cfg.queue_buffering_max_messages
        self._max_queued_bytes = min(cfg.queue_buffering_max_kbytes * 1024, cfg.buffer_memory)
        self._record_limit = min(cfg.max_request_size, cfg.message_max_bytes)
        self._on_delivery = cfg.on_delivery
        self._error_cb = cfg.error_cb
        self._partitioner = keyed(cfg.partitioner)
        self._codec = codec_id(cfg.compression_type)      # batches are compressed per batch, Kafka's framing
        self._codec_level = cfg.compression_level
        self._null_key_random = cfg.partitioner in NULL_KEY_IS_RANDOM
        self._cluster = connect(cfg, "producer")
        self._lock = threading.RLock()
        self._batches = {}
        self._sticky = {}
        self._routes = {}
        self._routes_epoch = None
        self._slots = {}
        self._reports = collections.deque()
        self._durable = collections.deque()   # (ring, last_offset, reports) awaiting fsync (acks=all)
        self._queued_records = 0
        self._queued_bytes = 0
        self._closed = False
        self._wake = threading.Event()
        self._linger_thread = None
        if self._linger_s > 0:
            self._linger_thread = threading.Thread(target=self._linger_loop, name="shmlog-linger", daemon=True)
            self._linger_thread.start()

    # ------------------------------------------------------------------ produce

    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0,
                headers=None, callback=None):
        self._cluster.check_fork("Producer")
        if value is not None and type(value) is not bytes:
            value = _to_bytes(value, "value")
        if key is not None and type(key) is not bytes:
            key = _to_bytes(key, "key")
        callback = on_delivery or callback or self._on_delivery
        size = (len(value) if value else 0) + (len(key) if key else 0) + RECORD_OVERHEAD_BYTES
        if headers:
            size += sum(len(_to_bytes(k, "header key")) + len(_to_bytes(v, "header value") or b"")
                        for k, v in (headers.items() if isinstance(headers, dict) else headers))
        route = self._route(topic)
        if size > route.record_limit:
            self._check_size(topic, route.info, size)
        if partition < 0:
            partition = self._choose_partition(topic, key, route.partitions)
        elif partition >= route.partitions:
            raise error(KafkaError._UNKNOWN_PARTITION, f"{topic}-{partition}: topic has {route.partitions} partitions")
        timestamp = timestamp or time.time_ns() // 1_000_000
        with self._lock:
            if self._queued_records >= self._max_queued or self._queued_bytes + size > self._max_queued_bytes:
                self._make_room(size)
            tp = (topic, partition)
            batch = self._batches.get(tp)
            if batch is not None and (batch.bytes + size > route.batch_limit or len(batch.values) >= self._batch_records):
                self._send(tp, self._batches.pop(tp))
                batch = None
            if batch is None:
                batch = self._batches[tp] = _Batch()
                if self._linger_thread is not None:
                    self._wake.set()
            batch.add(key, value, timestamp, headers, callback, size)
            self._queued_records += 1
            self._queued_bytes += size
            if self._linger_s <= 0:
                self._send(tp, self._batches.pop(tp))

    def _route(self, topic):
        """What produce() needs of a topic, cached until the broker's metadata epoch moves."""
        epoch = self._cluster.doorbell.header.metadata_epoch
        if epoch != self._routes_epoch:
            self._routes.clear()
            self._routes_epoch = epoch
        route = self._routes.get(topic)
        if route is None:
            info = self._cluster.topic(topic, auto_create=True)
            config = info["config"]
            route = self._routes[topic] = _Route(
                info, info["partitions"],
                min(self._record_limit, config["max.message.bytes"] - layout.BATCH_HEADER_BYTES,
                    config["ring.bytes"] - layout.BATCH_HEADER_BYTES - layout.FRAME_PREFIX_BYTES - layout.FRAME_ALIGN),
                # A batch never outgrows a quarter of the ring, so a small ring still takes whole batches.
                min(self._batch_bytes, config["ring.bytes"] // 4))
        return route

    def _make_room(self, size):
        self._send_due(force=True)
        self._collect_durable(0)
        if self._queued_records >= self._max_queued or self._queued_bytes + size > self._max_queued_bytes:
            raise BufferError(f"local queue full: {self._queued_records} records / {self._queued_bytes} "
                              f"bytes await delivery (queue.buffering.max.messages={self._max_queued}, "
                              f"buffer.memory/queue.buffering.max.kbytes); call poll() to serve reports")

    def _check_size(self, topic, info, size):
        limits = (("max.request.size/message.max.bytes (producer)", self._record_limit),
                  ("max.message.bytes (topic; defaults to the broker's message.max.bytes)",
                   info["config"]["max.message.bytes"] - layout.BATCH_HEADER_BYTES))
        for name, limit in limits:
            if size > limit:
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE,
                                     f"record of {size} bytes for topic {topic!r} exceeds {name}={limit}"))
        ring_bytes = info["config"]["ring.bytes"]
        if size + layout.BATCH_HEADER_BYTES + layout.FRAME_PREFIX_BYTES + layout.FRAME_ALIGN > ring_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE,
                                 f"record of {size} bytes can never fit topic {topic!r}'s partition ring of "
                                 f"{ring_bytes} bytes: create the topic with a larger ring.bytes"))

    def _choose_partition(self, topic, key, partitions):
        if key is None and self._null_key_random:
            p = self._sticky.get(topic)
            if p is None or p >= partitions:
                p = self._sticky[topic] = random_partition(None, partitions)
            return p
        return self._partitioner(key if key is not None else b"", partitions)

    # ------------------------------------------------------------------ sending

    def _slot(self, ring):
        slot = self._slots.get(ring)
        if slot is None:
            slot = self._slots[ring] = ring.acquire_producer_slot()
        return slot

    def _send(self, tp, batch):
        topic, partition = tp
        if self._sticky.get(topic) == partition:
            self._sticky.pop(topic)
        n = len(batch)
        err = None
        base = -1
        try:
            ring = self._cluster.ring(topic, partition)
            base = self._append(ring, batch)
        except KafkaException as exc:
            err = exc.args[0]
        reports = (tp, base, batch, err)
        if err is None and self._acks == -1:
            self._durable.append((ring, base + n - 1, reports))
        else:
            self._deliver(reports)

    def _append(self, ring, batch):
        """Append one batch to the ring; returns its base offset. Uncompressed batches are
        encoded straight into the claimed frame, compressed ones staged and compressed first."""
        if self._codec == NONE:
            args, base_ts, max_ts = batch.encoder_args()
            return ring.append_records(self._slot(ring), args, base_ts, max_ts, self._max_block_ms,
                                       self._cluster.doorbell.ptr)
        records, base_ts, max_ts = batch.encode()
        records, attributes = compress_records(records, self._codec, self._codec_level)
        return ring.append(self._slot(ring), ffi.from_buffer(records), len(records), len(batch), base_ts, max_ts,
                           self._max_block_ms, self._cluster.doorbell.ptr, attributes)

    def _deliver(self, reports):
        """Queue a batch's delivery reports for poll(); a batch nobody asked reports for is
        delivered at once (as librdkafka frees messages without a dr_cb), so len() drops
        without poll()."""
        batch, err = reports[2], reports[3]
        if err is None and not any(batch.callbacks):
            with self._lock:
                self._queued_records -= len(batch)
                self._queued_bytes -= batch.bytes
        else:
            self._reports.append(reports)

    def _send_due(self, force=False):
        now = time.monotonic()
        for tp in [tp for tp, b in self._batches.items() if force or now - b.created >= self._linger_s]:
            self._send(tp, self._batches.pop(tp))

    def _linger_loop(self):
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            while not self._closed:
                with self._lock:
                    if not self._batches:
                        break
                    oldest = min(b.created for b in self._batches.values())
                    wait_s = oldest + self._linger_s - time.monotonic()
                    if wait_s <= 0:
                        self._send_due()
                        continue
                time.sleep(min(wait_s, self._linger_s))

    # ------------------------------------------------------------------ reports

    def _collect_durable(self, timeout_s):
        """Move acks=all batches whose offsets are fsynced to the report queue; a batch not
        durable within message.timeout.ms of its creation is reported as timed out."""
        deadline = time.monotonic() + max(timeout_s, 0)
        message_timeout_s = self._cfg.message_timeout_ms / 1000.0
        while self._durable:
            ring, last, reports = self._durable[0]
            tp, base, batch, _ = reports
            if ring.flushed_offset <= last:
                expires = batch.created + message_timeout_s
                remaining = min(deadline, expires) - time.monotonic()
                rc = lib.SHMLOG_EAGAIN
                if remaining > 0:
                    rc = lib.shmlog_ring_wait_flushed(ring.map, last, int(remaining * 1e9), self._cluster.doorbell.ptr)
                if rc == lib.SHMLOG_ECORRUPT:
                    self._fail_durable(reports, KafkaError(
                        KafkaError.KAFKA_STORAGE_ERROR, f"{tp[0]}-{tp[1]}: the persister cannot write to disk "
                        f"(errno {ring.header.persist.storage_error}); records are safe in the ring but not durable",
                        retriable=True))
                    continue
                if rc != 0:
                    if time.monotonic() < expires:
                        return
                    self._fail_durable(reports, KafkaError(
                        KafkaError._MSG_TIMED_OUT, f"{tp[0]}-{tp[1]}: offsets {base}..{last} were not fsynced within "
                        f"message.timeout.ms={self._cfg.message_timeout_ms} (persister stalled?)"))
                    continue
            self._durable.popleft()
            self._deliver(reports)

    def _fail_durable(self, reports, err):
        tp, base, batch, _ = reports
        self._durable.popleft()
        self._reports.append((tp, base, batch, err))

    def _serve_reports(self):
        served = 0
        while self._reports:
            (topic, partition), base, batch, err = self._reports.popleft()
            n = len(batch)
            with self._lock:
                self._queued_records -= n
                self._queued_bytes -= batch.bytes
            for i, cb in enumerate(batch.callbacks):
                if cb is None:
                    continue
                klen, vlen = batch.key_lens[i], batch.value_lens[i]
                msg = Message(topic, partition, base + i if err is None else -1001,
                              None if klen < 0 else batch.keys[i], None if vlen < 0 else batch.values[i],
                              batch.raw_headers[i] if batch.headers is not None else None,
                              (TIMESTAMP_CREATE_TIME, batch.timestamps[i]), error=err)
                cb(err, msg)
                served += 1
        return served

    def poll(self, timeout=None):
        self._cluster.check_fork("Producer")
        timeout_s = -1 if timeout is None else timeout
        if timeout_s is not None and timeout_s < 0:
            timeout_s = 3600.0 * 24
        with self._lock:
            self._send_due()
        self._collect_durable(0 if self._reports else timeout_s)
        return self._serve_reports()

    def flush(self, timeout=None):
        self._cluster.check_fork("Producer")
        deadline = time.monotonic() + (3600.0 * 24 if timeout is None or timeout < 0 else timeout)
        with self._lock:
            self._send_due(force=True)
        while True:
            self._collect_durable(deadline - time.monotonic())
            self._serve_reports()
            if not self._durable or time.monotonic() >= deadline:
                return len(self)

    def __len__(self):
        return self._queued_records

    def __bool__(self):
        return True

    # ------------------------------------------------------------------ batch API

    def produce_batch(self, topic, values, keys=None, partition=-1, timestamp=0):
        """Append many records at once, bypassing linger; returns [(partition, base_offset, count)].

        `values` is a list of bytes, or a NumPy array whose first axis indexes records
        (each record is the raw bytes of one row: fixed size, copied once into the ring).
        With acks=all it returns once the records are fsynced. Raises KafkaException on failure.
        """
        self._cluster.check_fork("Producer")
        info = self._cluster.topic(topic, auto_create=True)
        n_parts = info["partitions"]
        timestamp = timestamp or time.time_ns() // 1_000_000
        if isinstance(values, np.ndarray):
            if keys is not None:
                raise TypeError("keys are not supported with a NumPy values array; pass lists instead")
            rows = np.ascontiguousarray(values).reshape(len(values), -1).view(np.uint8)
            row_bytes = rows.shape[1] if rows.ndim == 2 else 0
            self._check_size(topic, info, row_bytes + RECORD_OVERHEAD_BYTES)
            p = partition if partition >= 0 else self._choose_partition(topic, None, n_parts)
            return self._append_fixed(topic, p, rows, row_bytes, timestamp)
        by_partition = {}
        for i, value in enumerate(values):
            key = _to_bytes(keys[i], "key") if keys is not None else None
            p = partition if partition >= 0 else self._choose_partition(topic, key, n_parts)
            by_partition.setdefault(p, []).append((key, _to_bytes(value, "value")))
        results = []
        for p, items in by_partition.items():
            batch = None
            for key, value in items:
                size = (len(value) if value else 0) + (len(key) if key else 0) + RECORD_OVERHEAD_BYTES
                self._check_size(topic, info, size)
                if batch is not None and (batch.bytes + size > self._record_limit or len(batch) >= 1 << 20):
                    results.append(self._append_now(topic, p, batch))
                    batch = None
                if batch is None:
                    batch = _Batch()
                batch.add(key, value, timestamp, None, None, size)
            if batch is not None:
                results.append(self._append_now(topic, p, batch))
        return results

    def _append_now(self, topic, partition, batch):
        ring = self._cluster.ring(topic, partition)
        with self._lock:
            base = self._append(ring, batch)
        self._wait_durable(ring, base + len(batch) - 1)
        return partition, base, len(batch)

    def _append_fixed(self, topic, partition, rows, row_bytes, timestamp):
        ring = self._cluster.ring(topic, partition)
        stride = row_bytes + layout.FIXED_RECORD_OVERHEAD_BYTES
        per_batch = max(1, min(self._record_limit // stride, (ring.capacity_bytes // 2) // stride, 1 << 20))
        results = []
        src = ffi.from_buffer(rows) if rows.size else ffi.NULL
        for start in range(0, len(rows), per_batch):
            count = min(per_batch, len(rows) - start)
            records = bytearray(stride * count)
            lib.shmlog_records_encode_fixed(ffi.from_buffer(records), len(records), count,
                                            src + start * row_bytes if rows.size else ffi.NULL, row_bytes)
            records, attributes = compress_records(records, self._codec, self._codec_level)
            with self._lock:
                base = ring.append(self._slot(ring), ffi.from_buffer(records), len(records), count, timestamp,
                                   timestamp, self._max_block_ms, self._cluster.doorbell.ptr, attributes)
            results.append((partition, base, count))
        if results:
            self._wait_durable(ring, results[-1][1] + results[-1][2] - 1)
        return results

    def _wait_durable(self, ring, last_offset):
        if self._acks != -1:
            return
        rc = lib.shmlog_ring_wait_flushed(ring.map, last_offset, int(self._cfg.message_timeout_ms * 1e6),
                                          self._cluster.doorbell.ptr)
        if rc != 0:
            raise error(KafkaError.KAFKA_STORAGE_ERROR if rc == lib.SHMLOG_ECORRUPT else KafkaError._MSG_TIMED_OUT,
                        f"{ring.where()}: offset {last_offset} was not fsynced within message.timeout.ms")

    # ------------------------------------------------------------------ lifecycle

    def purge(self, in_queue=True, in_flight=True, blocking=True):
        with self._lock:
            for tp, batch in list(self._batches.items()):
                self._reports.append((tp, -1, batch, KafkaError(KafkaError._PURGE_QUEUE, "purged")))
            self._batches.clear()

    def list_topics(self, topic=None, timeout=-1):
        from .admin import cluster_metadata
        self._cluster.refresh()
        return cluster_metadata(self._cluster.meta, topic)

    def close(self, timeout=None):
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        with self._lock:
            for ring, slot in self._slots.items():
                ring.release_producer_slot(slot)
            self._slots.clear()
        self._cluster.close()

    def __del__(self):
        try:
            if not self._closed and self._cluster.pid == __import__("os").getpid():
                self._closed = True
                self._wake.set()
                for ring, slot in self._slots.items():
                    ring.release_producer_slot(slot)
        except Exception:
            pass

    # transactions arrive with the exactly-once work; say so rather than pretend
    def _no_transactions(self, *args, **kwargs):
        raise error(KafkaError._NOT_IMPLEMENTED, "transactions are not supported by this shmlog version")

    init_transactions = begin_transaction = commit_transaction = abort_transaction = _no_transactions
    send_offsets_to_transaction = _no_transactions
