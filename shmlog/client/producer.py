"""Producer: confluent-kafka's API over partition rings.

Records are batched per partition (batch.size, batch.num.messages, linger.ms) and a
batch is appended to the ring in one C call: claim, copy, CRC32C, publish. Delivery
reports are served by poll()/flush() as in confluent-kafka: with acks=0/1 once the batch
is in the ring, with acks=all once the persister has fsynced it.
"""
from __future__ import annotations

import collections
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from shmlog._native import _fast, ffi, layout, lib
from shmlog._native import address as _address
from shmlog.client.cluster import connect
from shmlog.client.partitioner import EMPTY_KEY_IS_RANDOM, NULL_KEY_IS_RANDOM, keyed
from shmlog.client.statistics import Statistics
from shmlog.client.transactions import Transactions
from shmlog.config import parse_producer_config
from shmlog.errors import KafkaError, KafkaException, error
from shmlog.log.batch import ATTR_TRANSACTIONAL, FIXED_RECORD_OVERHEAD_BYTES, RecordsBuilder, record_size
from shmlog.log.batch import encode_headers as encode_record_headers
from shmlog.log.codec import NONE, codec_id, compress_records

if TYPE_CHECKING:
    from typing_extensions import Self

    from shmlog._types import Config, DeliveryCallback
    from shmlog.client.admin import ClusterMetadata

RECONNECT_INTERVAL_S = 0.1   # how often a producer whose broker stopped looks for it again


def _to_bytes(value, what):
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)   # a bytes subclass too: the C core takes exact bytes
    raise TypeError(f"{what} must be bytes, str or None, not {type(value).__name__}")


# produce()'s argument rules. ProducerCore.produce (csrc/fast/producer_core.c) serves only what
# they plainly accept (a str topic, an int partition in -1..partitions-1, an int timestamp, a
# callable or None callback) and hands everything else to _produce_slow, which applies them.

def _check_topic(topic):
    if not isinstance(topic, str):
        raise TypeError(f"produce() argument 'topic' must be str, not {type(topic).__name__}")
    return topic


def _check_partition(topic, partition, partitions):
    """partition: an int, -1 (PARTITION_UA: the partitioner picks) or 0..partitions-1."""
    if not isinstance(partition, int) or isinstance(partition, bool):
        raise TypeError(f"argument 'partition' must be int, not {type(partition).__name__}")
    if partition < -1:
        raise ValueError(f"argument 'partition' must be -1 (PARTITION_UA: the partitioner picks) or a "
                         f"partition number, not {partition}")
    if partition >= partitions:
        raise error(KafkaError._UNKNOWN_PARTITION, f"{topic}-{partition}: topic has {partitions} partitions")
    return partition


def _check_timestamp(timestamp):
    if timestamp is None:
        return 0
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise TypeError(f"argument 'timestamp' must be int (ms since the epoch), not {type(timestamp).__name__}")
    return timestamp


def _check_callback(name, callback):
    if callback is not None and not callable(callback):
        raise TypeError(f"argument '{name}' must be callable, not {type(callback).__name__}")
    return callback


def encode_headers(headers):
    items = headers.items() if isinstance(headers, dict) else headers
    return encode_record_headers([(_to_bytes(k, "header key"), _to_bytes(v, "header value")) for k, v in items])


class _Batch(RecordsBuilder):
    """A partition's open batch: its records plus what delivery reports need."""
    __slots__ = ("callbacks", "raw_headers", "created")

    def __init__(self):
        super().__init__()
        self.callbacks, self.raw_headers = [], []
        self.created = time.monotonic()

    def add(self, key, value, timestamp, headers, callback, size):
        n = len(self.callbacks)
        self.callbacks.append(callback)
        if headers is not None:
            if self.headers is None:
                self.raw_headers = [None] * n
            self.raw_headers.append(list(headers.items()) if isinstance(headers, dict) else list(headers))
        elif self.headers is not None:
            self.raw_headers.append(None)
        super().add(key, value, timestamp, None if headers is None else encode_headers(headers), size)


_FAST_PARTITIONERS = {"murmur2", "murmur2_random"}


def _nothing():
    pass


def _linger_loop(producer_ref, wake, linger_s):
    """The linger thread: closes batches as they come due. It holds its producer weakly, so one
    an application drops without close() is collected as confluent-kafka's is (its __del__
    releases its ring slots and wakes this thread to end)."""
    while True:
        wake.wait()
        wake.clear()
        while True:
            producer = producer_ref()
            if producer is None or producer._closed:
                return
            due_s = producer._close_batches(False, linger_s)
            del producer
            if due_s is None:
                break
            time.sleep(min(due_s, linger_s))


class Producer(_fast.ProducerCore):
    """confluent_kafka.Producer over a shmlog broker: `Producer(conf)` or `Producer(**conf)`.

    produce() is ProducerCore.produce (csrc/fast/producer_core.c): bytes keys and values
    without headers are partitioned, encoded into the partition's open batch and, when the
    batch closes, appended to the ring without leaving C. Everything else comes here, to
    _produce_slow, which applies the same rules by calling them (record_size, Route.admits,
    _queue_full, _partition_for; _add gives the default timestamp).
    """

    def __init__(self, conf: Config | None = None, **kwargs: Any) -> None:
        conf = dict(conf or {})
        conf.update(kwargs)
        self._cfg = cfg = parse_producer_config(conf)
        self._acks = cfg.acks
        self._linger_s = cfg.linger_ms / 1000.0
        self._batch_bytes = cfg.batch_size
        self._max_block_ms = cfg.max_block_ms
        self._max_queued = cfg.queue_buffering_max_messages
        # 0 means no limit (librdkafka's documented meaning); the C core counts against the bound.
        self._max_queued_records = self._max_queued or (1 << 62)
        self._max_queued_bytes = min(cfg.queue_buffering_max_kbytes * 1024, cfg.buffer_memory)
        self._record_limit = min(cfg.max_request_size, cfg.message_max_bytes)
        self._on_delivery = cfg.on_delivery
        self._partitioner = keyed(cfg.partitioner)
        self._codec = codec_id(cfg.compression_type)      # batches are compressed per batch, Kafka's framing
        self._codec_level = cfg.compression_level
        self._null_key_random = cfg.partitioner in NULL_KEY_IS_RANDOM
        self._empty_key_random = cfg.partitioner in EMPTY_KEY_IS_RANDOM
        self._cluster = connect(cfg, "producer")
        # enable.idempotence (docs/exactly-once.md): one producer id for the producer's life, kept
        # across a broker restart (the log's sequences for it continue); -1 when off.
        self._producer_id, self._producer_epoch = -1, -1
        if cfg.enable_idempotence and cfg.transactional_id is None:   # a transactional one: init_transactions()
            try:
                self._producer_id, self._producer_epoch = self._cluster.init_producer_id(
                    None, cfg.transaction_timeout_ms)
            except BaseException:
                self._cluster.close()
                raise
        # (topic, partition) -> the sequence the next idempotent batch starts at, carried from a
        # stopped broker's rings to the next broker's (_reconnect); a ring handle keeps it meanwhile.
        self._next_sequences = {}
        self._route_info = {}
        self._slots = {}
        self._reports = collections.deque()   # (batch, error) awaiting poll()
        self._durable = collections.deque()   # (ring, last_offset, batch) awaiting fsync (acks=all)
        self._stats = Statistics.of(self, "producer", cfg)
        # Batches a stopping broker refused (its ring was closed: SHMLOG_ECLOSED), oldest first: they
        # wait for a broker of the same data dir to come back, up to message.timeout.ms.
        self._stalled = collections.deque()
        self._broker_down = False             # error_cb has heard that the broker went away
        self._next_reconnect = 0.0
        self._retired = []                    # clusters of stopped brokers whose rings acks=all batches still use
        self._closed = False
        self._txn = None
        if cfg.transactional_id is not None:
            self._txn = Transactions(self, cfg.transactional_id, cfg.transaction_timeout_ms)
            self.produce = self._produce_in_txn    # every record is checked against the transaction first
        self._wake = threading.Event()
        self._linger_thread = None
        if self._linger_s > 0:
            self._linger_thread = threading.Thread(target=_linger_loop, name="shmlog-linger", daemon=True,
                                                   args=(weakref.ref(self), self._wake, self._linger_s))
        self._bind_cluster()
        if self._linger_thread is not None:
            self._linger_thread.start()

    def _bind_cluster(self):
        """Point the C core at the cluster's doorbell (its metadata epoch and wake-ups)."""
        cfg, doorbell = self._cfg, self._cluster.doorbell
        self._configure(self._on_delivery, self._wake.set if self._linger_thread else None,
                        _address(ffi.addressof(doorbell.header, "metadata_epoch")), _address(doorbell.ptr),
                        cfg.partitioner in _FAST_PARTITIONERS, self._null_key_random, self._linger_s <= 0,
                        self._acks, self._codec != NONE, cfg.batch_num_messages, self._max_queued_records,
                        self._max_queued_bytes, self._max_block_ms, self._producer_id, self._producer_epoch)

    # ------------------------------------------------------------------ produce

    def _produce_slow(self, topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0,
                      headers=None, callback=None):
        """produce() off the C fast path: conversions, headers, other partitioners, new
        topics, a full local queue; the fast path's rules (called, not copied), then the same
        batches (_add, which also stamps timestamp 0 with the time now)."""
        self._cluster.check_fork("Producer")
        _check_topic(topic)
        if value is not None and type(value) is not bytes:
            value = _to_bytes(value, "value")
        if key is not None and type(key) is not bytes:
            key = _to_bytes(key, "key")
        timestamp = _check_timestamp(timestamp)
        # Any callable given wins, falsy or not (as in C): on_delivery, then callback, then the config's.
        callback = _check_callback("on_delivery", on_delivery) if on_delivery is not None else \
            _check_callback("callback", callback) if callback is not None else self._on_delivery
        encoded_headers = raw_headers = None
        header_bytes = 0
        if headers:
            raw_headers = list(headers.items()) if isinstance(headers, dict) else list(headers)
            header_bytes = sum(len(_to_bytes(k, "header key")) + len(_to_bytes(v, "header value") or b"")
                               for k, v in raw_headers)
            encoded_headers = encode_headers(raw_headers)
        size = record_size(key, value, header_bytes)
        route = self._route(topic)
        if not route.admits(size):
            self._check_size(topic, self._route_info[topic], size)
        if _check_partition(topic, partition, route.partitions) == -1:
            partition = self._choose_partition(route, key)
        if self._queue_full(size):
            self._make_room(size)
        self._add(route, partition, key, value, timestamp, encoded_headers, raw_headers, callback, size)

    def _route(self, topic):
        """What produce() needs of a topic (a _fast.Route), cached until the broker's metadata
        epoch moves; then open batches are appended first, while their rings are surely mapped."""
        if not self._routes_current():
            self._reset_routes()
            self._route_info.clear()
        route = self._routes.get(topic)
        if route is None:
            info = self._cluster.topic(topic, auto_create=True)
            config = info["config"]
            if self._acks == -1 and not config.get("shmlog.persist", True):
                raise KafkaException(KafkaError(KafkaError.INVALID_CONFIG, (
                    f"topic {topic!r} is memory-only (topic config shmlog.persist=false): nothing of it is "
                    f"written to disk, so acks=all (also implied by enable.idempotence and transactions) can "
                    f"never be satisfied; produce to it with acks=0 or acks=1")))
            rings = [self._cluster.ring(topic, p) for p in range(info["partitions"])]
            route = _fast.Route(
                topic, info["partitions"], min(limit for _, limit in self._size_limits(info)),
                # A batch never outgrows a quarter of the ring, so a small ring still takes whole batches.
                min(self._batch_bytes, config["ring.bytes"] // 4),
                rings, [_address(ring.map) for ring in rings], [self._slot(ring) for ring in rings])
            self._routes[topic] = route
            self._route_info[topic] = info
        return route

    def _make_room(self, size):
        self._close_batches(True, 0.0)
        self._collect_durable(0)
        if self._queue_full(size):
            raise BufferError(f"local queue full: {self._queued_records} records / {self._queued_bytes} "
                              f"bytes await delivery (queue.buffering.max.messages={self._max_queued}, "
                              f"buffer.memory/queue.buffering.max.kbytes); call poll() to serve reports")

    def _size_limits(self, info):
        """(setting, limit) for each limit on a record's size (record_size()); a Route admits
        what is within their minimum."""
        return (("max.request.size/message.max.bytes (producer)", self._record_limit),
                ("max.message.bytes (topic; defaults to the broker's message.max.bytes)",
                 info["config"]["max.message.bytes"] - layout.BATCH_HEADER_BYTES),
                ("ring.bytes", info["config"]["ring.bytes"] - layout.BATCH_HEADER_BYTES - layout.FRAME_PREFIX_BYTES
                 - layout.FRAME_ALIGN))   # the largest records section a frame of the ring can carry

    def _check_size(self, topic, info, size):
        """Raise MSG_SIZE_TOO_LARGE naming the limit a record of `size` exceeds, if any."""
        ring_bytes = info["config"]["ring.bytes"]
        for name, limit in self._size_limits(info):
            if size <= limit:
                continue
            if name == "ring.bytes":
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE,
                                     f"record of {size} bytes can never fit topic {topic!r}'s partition ring of "
                                     f"{ring_bytes} bytes: create the topic with a larger ring.bytes"))
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE,
                                 f"record of {size} bytes for topic {topic!r} exceeds {name}={limit}"))

    def _choose_partition(self, route, key):
        """The partition for `key` with partition=-1: the fast path's rule (sticky null keys,
        murmur2) when it covers the configured partitioner, else Python's (partitioner.py)."""
        if self._empty_key_random and key == b"":
            key = None          # consistent_random: the empty key is sticky-random, as a null one
        partition = self._partition_for(route, key)
        return partition if partition >= 0 else self._partitioner(key if key is not None else b"", route.partitions)

    # ------------------------------------------------------------------ sending (called from csrc/fast/)

    def _slot(self, ring):
        slot = self._slots.get(ring)
        if slot is None:
            slot = self._slots[ring] = ring.acquire_producer_slot()
            if self._producer_id >= 0:
                ring.map.next_sequence = self._next_sequences.get((ring.topic, ring.partition), 0)
        return slot

    def _compress(self, batch):
        """(records section, attributes) of a closed batch with compression.type applied; the C
        core appends it like any batch (it holds the send lock)."""
        return compress_records(memoryview(batch), self._codec, self._codec_level)

    def _after_send(self, batch):
        """A batch the C core appended (or failed to) that needs reports, an fsync or an error."""
        if batch.status == lib.SHMLOG_ECLOSED and self._cfg.retries > 0:
            self._stalled.append(batch)   # the broker is stopping: nothing was appended; kept for its return
            return
        err = None
        if batch.status < 0:
            ring = batch.route.rings[batch.partition]
            try:
                ring._append_failed(batch.status, batch.records_bytes, self._max_block_ms)
            except KafkaException as exc:
                err = exc.args[0]
        self._sent(batch, err)

    def _sent(self, batch, err):
        if err is not None and self._txn is not None:
            self._txn.abortable(err)
        if err is None and self._acks == -1:
            self._durable.append((batch.route.rings[batch.partition], batch.base_offset + len(batch) - 1, batch))
        else:
            self._deliver(batch, err)

    def _deliver(self, batch, err):
        """Queue a batch's delivery reports for poll(); a batch nobody asked reports for (or a
        delivered one, with delivery.report.only.error) is done at once (as librdkafka frees
        messages without a dr_cb), so len() drops without poll()."""
        if err is None and (not batch.reports or self._cfg.delivery_report_only_error):
            self._release_queued(len(batch), batch.size_bytes)
        else:
            self._reports.append((batch, err))

    # ------------------------------------------------------------------ a broker that stopped

    def _serve_outage(self):
        """While batches wait for a stopped broker (self._stalled): tell error_cb once, look for a
        broker of the same data dir every RECONNECT_INTERVAL_S and hand them to it, and report
        those older than message.timeout.ms as failed. A report never says delivered for a record
        that is not in the log: a stopped broker's rings take nothing after its final drain."""
        if self._retired:
            self._drop_retired()
        if not self._waiting_for_broker():
            return
        if not self._broker_down:
            self._broker_down = True
            self._error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, f"the shmlog broker for "
                                      f"{self._cluster.data_dir} stopped; {len(self)} records wait for it to come "
                                      f"back (up to message.timeout.ms={self._cfg.message_timeout_ms})"))
        now = time.monotonic()
        if now >= self._next_reconnect:
            self._next_reconnect = now + RECONNECT_INTERVAL_S
            self._reconnect()
        if self._stalled:
            self._locked(self._expire_stalled)

    def _waiting_for_broker(self):
        """Records wait for a broker of our data dir to come back: batches a stopping broker
        refused, or (idempotent) acks=all batches in a stopped broker's ring whose fsync it did
        not confirm, which _resend_after_restart sends to the next one."""
        if self._stalled:
            return True
        if self._producer_id < 0 or not self._durable:
            return False
        ring = self._durable[0][0]
        return not ring.closed and ring.stopped

    def _error_cb(self, err):
        if self._cfg.error_cb is not None:
            self._cfg.error_cb(err)

    def _reconnect(self):
        """A running broker for our data dir: map its rings and append the stalled batches to them."""
        try:
            cluster = connect(self._cfg, "producer")
        except KafkaException:
            return
        if not cluster.doorbell.running:   # still the stopping one, draining
            cluster.close()
            return
        # Open batches go to the old rings first: refused as well, they queue behind the others.
        self._reset_routes()
        old, self._cluster = self._cluster, cluster
        self._route_info.clear()
        self._bind_cluster()
        self._broker_down = False   # back: a later stop is a new outage (not records expiring meanwhile)
        self._locked(self._resend_after_restart, old)
        self._retired.append(old)
        self._drop_retired()

    def _resend_after_restart(self, old):
        """(Send lock held.) An idempotent producer carries its sequences over to the new
        broker's rings and sends again, with the sequences they had, the acks=all batches the
        stopped broker did not confirm as fsynced: the new rings' sequence records start where
        the log says (describe_producers), so a batch the log holds is refused as a duplicate and
        reported at the offsets it got, and one the log lost is appended again. Then the batches
        the stopped broker refused (never appended) go, as before."""
        if self._producer_id >= 0:
            for key, ring in old.rings.items():
                if ring in self._slots and not ring.closed:
                    self._next_sequences[key] = ring.map.next_sequence
            old_rings = {id(ring) for ring in old.rings.values()}
            unconfirmed, keep = [], collections.deque()
            for entry in self._durable:
                ring, last, batch = entry
                if id(ring) in old_rings and not ring.closed and ring.flushed_offset <= last \
                        and batch.base_sequence >= 0:
                    unconfirmed.append(batch)
                else:
                    keep.append(entry)
            self._durable = keep
            self._stalled.extendleft(reversed(unconfirmed))   # appended before the refused ones
            carried = {key for key, n in self._next_sequences.items() if n}
            self._seed_sequences(carried | {(b.topic, b.partition) for b in unconfirmed}, unconfirmed)
        self._resend_stalled()

    def _seed_sequences(self, partitions, unconfirmed):
        """Start our sequence records in the new rings of `partitions` where the log says: a ring
        refuses a first sequence other than 0 from a producer it has no state of (Kafka's
        UNKNOWN_PRODUCER_ID). Where the log has no state of ours (it lost our batches, or cannot
        be asked), the partition's sequences start again at 0, as Kafka's client does when its
        producer state was lost, and the unconfirmed batches are stamped anew: none of them is in
        the log, else its state would be."""
        if not partitions:
            return
        try:
            known = self._cluster.describe_producers(sorted(partitions))
        except KafkaException:
            known = {}   # unseeded: re-sent batches are appended again, a possible duplicate as without idempotence
        for key in partitions:
            mine = known.get(key, {}).get(self._producer_id)
            try:
                ring = self._cluster.ring(*key)
            except KafkaException:
                continue
            if mine is None:
                self._next_sequences[key] = 0
                if ring in self._slots:
                    ring.map.next_sequence = 0
                for batch in unconfirmed:
                    if (batch.topic, batch.partition) == key:
                        batch.base_sequence = -1
                continue
            ring.seed_sequence(self._slot(ring), self._producer_id, mine["producer_epoch"], mine["last_sequence"],
                               mine["last_offset"])

    def _resend_stalled(self):
        """(Send lock held.) Append the stalled batches, oldest first, to the running broker's rings."""
        doorbell = self._cluster.doorbell.ptr
        out = ffi.new("uint64_t *")
        while self._stalled:
            batch = self._stalled[0]
            try:
                ring = self._cluster.ring(batch.topic, batch.partition)
            except KafkaException as exc:   # the topic went away meanwhile
                self._stalled.popleft()
                self._reports.append((batch, exc.args[0]))
                continue
            if self._codec == NONE:
                records, attributes = batch, 0
            else:
                records, attributes = self._compress(batch)
            records = ffi.from_buffer(records)
            slot = self._slot(ring)
            sequence = -1 if self._producer_id < 0 else \
                batch.base_sequence if batch.base_sequence >= 0 else lib.SHMLOG_SEQUENCE_NEXT
            if self._acks == -1 and not lib.shmlog_ring_insync_enough(ring.map):
                rc = lib.SHMLOG_ENOTENOUGHREPLICAS   # refused before the append (NOT_ENOUGH_REPLICAS)
            else:
                rc = lib.shmlog_ring_append(ring.map, slot, records, len(records), batch.count,
                                            batch.base_timestamp, batch.max_timestamp, attributes,
                                            self._producer_id, self._producer_epoch, sequence,
                                            int(self._max_block_ms * 1_000_000), doorbell, out)
            if rc == lib.SHMLOG_ECLOSED:
                return   # stopping again: they keep waiting
            self._stalled.popleft()
            if rc == lib.SHMLOG_EDUPLICATE:
                # The log holds it already, at the offsets its first append got.
                self._confirm(ring, batch)
                continue
            if rc == lib.SHMLOG_ESEQUENCE:
                # The log lost batches before it (a drain that could not finish): they cannot be
                # sent again, so the record moves past this batch's sequences and what follows is
                # taken (the record keeps a last sequence: a producer it knows nothing of must
                # start at 0).
                ring.map.sequences[slot].last_sequence = (batch.base_sequence + batch.count - 1) & 0x7FFFFFFF
            if rc < 0:
                try:
                    ring._append_failed(rc, len(records), self._max_block_ms)
                except KafkaException as exc:
                    self._reports.append((batch, exc.args[0]))
                continue
            batch.base_offset, batch.status = out[0], 0
            batch.log_append_time = ring.map.last_log_append_time
            if self._producer_id >= 0:
                batch.base_sequence = ring.map.last_base_sequence
            self._confirm(ring, batch)

    def _confirm(self, ring, batch):
        """A batch in `ring` at batch.base_offset: reported now, or once fsynced (acks=all)."""
        if self._acks == -1:
            lib.shmlog_ring_request_flush(ring.map, batch.base_offset + batch.count)
            self._durable.append((ring, batch.base_offset + batch.count - 1, batch))
        else:
            self._deliver(batch, None)

    def _expire_stalled(self):
        """(Send lock held.) Stalled batches older than message.timeout.ms fail."""
        limit_s = self._cfg.message_timeout_ms / 1000.0
        now = time.monotonic()
        keep = collections.deque()
        for batch in self._stalled:
            if now - batch.created < limit_s:
                keep.append(batch)
                continue
            self._reports.append((batch, KafkaError(
                KafkaError._MSG_TIMED_OUT, f"{batch.topic}-{batch.partition}: {len(batch)} records not delivered: "
                f"the shmlog broker for {self._cluster.data_dir} stopped and did not come back within "
                f"message.timeout.ms={self._cfg.message_timeout_ms}")))
        self._stalled = keep

    def _drop_retired(self):
        """Unmap a stopped broker's rings once no acks=all batch waits on them (send lock held, so
        no append is inside one)."""
        used = {id(ring) for ring, _, _ in self._durable}
        for cluster in list(self._retired):
            rings = list(cluster.rings.values())
            if any(id(ring) in used for ring in rings):
                continue
            self._retired.remove(cluster)
            self._locked(self._close_retired, cluster, rings)

    def _close_retired(self, cluster, rings):
        for ring in rings:
            slot = self._slots.pop(ring, None)
            if slot is not None:   # the same object again when a restarted supervisor adopted it
                ring.release_producer_slot(slot)
        cluster.close()

    # ------------------------------------------------------------------ reports

    def _collect_durable(self, timeout_s):
        """Move acks=all batches whose offsets are fsynced to the report queue; a batch not
        durable within message.timeout.ms of its creation is reported as timed out."""
        deadline = time.monotonic() + max(timeout_s, 0)
        message_timeout_s = self._cfg.message_timeout_ms / 1000.0
        while self._durable:
            ring, last, batch = self._durable[0]
            if ring.closed:
                self._fail_durable(batch, KafkaError(
                    KafkaError.UNKNOWN_TOPIC_OR_PART, f"{batch.topic}-{batch.partition}: the topic was deleted before "
                    f"offsets {batch.base_offset}..{last} were fsynced"))
                continue
            if ring.flushed_offset <= last:
                expires = batch.created + message_timeout_s
                remaining = min(deadline, expires) - time.monotonic()
                rc = lib.SHMLOG_EAGAIN
                if remaining > 0:
                    rc = lib.shmlog_ring_wait_flushed(ring.map, last, int(remaining * 1e9), self._cluster.doorbell.ptr)
                where = f"{batch.topic}-{batch.partition}"
                if rc in (lib.SHMLOG_ENOTENOUGHREPLICAS, lib.SHMLOG_ECORRUPT):   # else: timed out (below)
                    self._fail_durable(batch, ring.flush_wait_error(rc, last))
                    continue
                if rc != 0:
                    if time.monotonic() < expires:
                        return
                    self._fail_durable(batch, KafkaError(
                        KafkaError._MSG_TIMED_OUT, f"{where}: offsets {batch.base_offset}..{last} were not fsynced "
                        f"within message.timeout.ms={self._cfg.message_timeout_ms} (persister stalled?)"))
                    continue
            self._durable.popleft()
            self._deliver(batch, None)

    def _fail_durable(self, batch, err):
        if self._txn is not None:
            self._txn.abortable(err)
        self._durable.popleft()
        self._cluster.log.debug("msg", "DELIVERY", f"{batch.topic}-{batch.partition}: {len(batch)} records failed: "
                                f"{err.str()}")
        self._reports.append((batch, err))

    def _serve_reports(self):
        served = 0
        while self._reports:
            batch, err = self._reports.popleft()
            self._release_queued(len(batch), batch.size_bytes)
            served += _fast.serve_reports(batch, err)   # callback(err, Message) per record that asked
        return served

    def poll(self, timeout: float | None = None) -> int:
        self._cluster.check_fork("Producer")
        timeout_s = -1 if timeout is None else timeout
        if timeout_s is not None and timeout_s < 0:
            timeout_s = 3600.0 * 24
        self._close_batches(False, self._linger_s)
        if self._stalled or self._retired or self._waiting_for_broker():
            self._serve_outage()
            if self._waiting_for_broker():
                timeout_s = min(timeout_s, RECONNECT_INTERVAL_S)
        self._collect_durable(0 if self._reports else timeout_s)
        served = self._serve_reports()
        if self._stats is not None:
            self._stats.maybe_emit()
        return served

    def flush(self, timeout: float | None = None) -> int:
        self._cluster.check_fork("Producer")
        deadline = time.monotonic() + (3600.0 * 24 if timeout is None or timeout < 0 else timeout)
        while True:
            self._close_batches(True, 0.0)
            # The linger thread may have taken the last closed batch and be appending it (no
            # send lock is needed to see that nothing is left to close): its report, or its
            # place among the batches awaiting fsync, exists once it lets go of the lock.
            self._locked(_nothing)
            self._serve_outage()
            wait_s = deadline - time.monotonic()
            if self._waiting_for_broker():
                wait_s = min(wait_s, RECONNECT_INTERVAL_S)
            self._collect_durable(wait_s)
            self._serve_reports()
            if self._stats is not None:
                self._stats.maybe_emit()
            if not self._durable and not self._stalled or time.monotonic() >= deadline:
                return len(self)
            if self._stalled and not self._durable:
                time.sleep(max(0.0, min(self._next_reconnect, deadline) - time.monotonic()))

    def __len__(self) -> int:
        return self._queued_records

    def __bool__(self) -> bool:
        return True

    # ------------------------------------------------------------------ batch API

    def produce_batch(self, topic: str, messages: list[dict[str, Any]], partition: int = -1,
                      callback: DeliveryCallback | None = None, on_delivery: DeliveryCallback | None = None) -> int:
        """confluent-kafka's produce_batch(): queue each message of `messages` (a list of dicts
        with optional 'value', 'key', 'partition', 'timestamp', 'headers', 'callback') as
        produce() would, and return how many were queued. A message that could not be queued
        gets an '_error' key (a KafkaError) in its dict. `callback` (or `on_delivery`) is the
        delivery callback of messages without their own; reports are served by poll()/flush().

        Every message is checked before any is queued: TypeError for a `messages` that is not a
        list, an item that is not a dict, or a field of the wrong type. (confluent-kafka 2.x
        raises NotImplementedError for 'timestamp' and drops 'headers'; shmlog honours both.)
        For shmlog's zero-copy batch append of bytes or NumPy rows, see produce_values().

        A transactional producer's messages join its transaction, as with produce(); outside a
        transaction none is queued and each gets '_error' _STATE (librdkafka's
        rd_kafka_produce_batch answers so).
        """
        self._cluster.check_fork("Producer")
        _check_topic(topic)
        if not isinstance(partition, int) or isinstance(partition, bool):
            raise TypeError(f"produce_batch() argument 'partition' must be int, not {type(partition).__name__}")
        if not isinstance(messages, list):
            raise TypeError("messages must be a list")
        default_cb = callback if callback is not None else on_delivery
        _check_callback("callback" if callback is not None else "on_delivery", default_cb)
        parsed = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise TypeError(f"Message at index {i} must be a dict")
            value, key = msg.get("value"), msg.get("key")
            if value is not None and not isinstance(value, (bytes, str)):
                raise TypeError(f"Message value at index {i} must be bytes or str")
            if key is not None and not isinstance(key, (bytes, str)):
                raise TypeError(f"Message key at index {i} must be bytes or str")
            p = msg.get("partition")
            p = partition if p is None else p
            if not isinstance(p, int) or isinstance(p, bool):
                raise TypeError(f"Message partition at index {i} must be int")
            timestamp = _check_timestamp(msg.get("timestamp"))
            cb = msg.get("callback")
            cb = default_cb if cb is None else cb
            if cb is not None and not callable(cb):
                raise TypeError(f"Message callback at index {i} must be callable")
            parsed.append((msg, value, key, p, timestamp, msg.get("headers"), cb))
        if self._txn is not None and not self._txn.producing():
            refused = self._txn.producing_refused("produce_batch")
            for msg in messages:
                msg["_error"] = refused
            return 0
        produce, queued = self.produce, 0
        for msg, value, key, p, timestamp, headers, cb in parsed:
            try:
                if p < -1:
                    raise error(KafkaError._UNKNOWN_PARTITION, f"{topic}-{p}: no such partition")
                produce(topic, value, key, p, cb, timestamp, headers)
            except KafkaException as exc:
                err = exc.args[0]
                msg["_error"] = KafkaError(err.code(), f"Message failed: {err.str()}")
                continue
            except BufferError as exc:
                msg["_error"] = KafkaError(KafkaError._QUEUE_FULL, f"Message failed: {exc}")
                continue
            queued += 1
        return queued

    def produce_values(self, topic: str, values: Any, keys: Any = None, partition: int = -1,
                       timestamp: int = 0) -> list[tuple[int, int, int]]:
        """shmlog's batch append: many records at once, bypassing linger and delivery reports;
        returns [(partition, base_offset, count)] (confluent-kafka has no such call).

        `values` is a list of bytes, or a NumPy array whose first axis indexes records
        (each record is the raw bytes of one row: fixed size, copied once into the ring).
        With acks=all it returns once the records are fsynced. Raises KafkaException on failure.

        A transactional producer appends them inside its transaction (each partition joins it
        first; they commit or abort with it; a failed append makes the transaction abortable);
        outside a transaction it raises KafkaException(_STATE), as produce() does.
        """
        self._cluster.check_fork("Producer")
        if self._txn is not None and not self._txn.producing():
            raise KafkaException(self._txn.producing_refused("produce_values"))
        route = self._route(_check_topic(topic))
        info = self._route_info[topic]
        _check_partition(topic, partition, route.partitions)
        timestamp = _fast.timestamp_or_now(_check_timestamp(timestamp))
        if isinstance(values, np.ndarray):
            if keys is not None:
                raise TypeError("keys are not supported with a NumPy values array; pass lists instead")
            rows = np.ascontiguousarray(values).reshape(len(values), -1).view(np.uint8)
            row_bytes = rows.shape[1] if rows.ndim == 2 else 0
            self._check_size(topic, info, record_size(None, bytes(row_bytes)))
            p = partition if partition != -1 else self._choose_partition(route, None)
            self._join_transaction(topic, p)
            return self._in_transaction(self._append_fixed, route.rings[p], p, rows, row_bytes, timestamp)
        by_partition = {}
        for i, value in enumerate(values):
            key = _to_bytes(keys[i], "key") if keys is not None else None
            p = partition if partition != -1 else self._choose_partition(route, key)
            by_partition.setdefault(p, []).append((key, _to_bytes(value, "value")))
        for items in by_partition.values():
            for key, value in items:
                self._check_size(topic, info, record_size(key, value))
        for p in by_partition:
            self._join_transaction(topic, p)
        return self._in_transaction(self._append_values, route, by_partition, timestamp)

    def _append_values(self, route, by_partition, timestamp):
        results = []
        for p, items in by_partition.items():
            batch = None
            for key, value in items:
                size = record_size(key, value)
                if batch is not None and (batch.bytes + size > self._record_limit or len(batch) >= 1 << 20):
                    results.append(self._append_now(route.rings[p], p, batch))
                    batch = None
                if batch is None:
                    batch = _Batch()
                batch.add(key, value, timestamp, None, None, size)
            if batch is not None:
                results.append(self._append_now(route.rings[p], p, batch))
        return results

    def _join_transaction(self, topic, partition):
        """produce_values() of a transactional producer: the partition joins the transaction
        before anything is appended to it (as produce() does for each record)."""
        if self._txn is not None:
            self._txn.before_produce(topic, partition)

    def _in_transaction(self, append, *args):
        """Run a produce_values() append; inside a transaction a failure makes it abortable
        (as a failed delivery does)."""
        try:
            return append(*args)
        except KafkaException as exc:
            if self._txn is not None and not exc.args[0].fatal():
                self._txn.abortable(exc.args[0])
            raise

    def _append_now(self, ring, partition, batch):
        if self._acks == -1:
            ring.check_insync()   # NOT_ENOUGH_REPLICAS before the append, as the C path (producer_append)
        base = self._locked(self._append_batch, ring, batch)
        self._wait_durable(ring, base + len(batch) - 1)
        return partition, base, len(batch)

    def _append_batch(self, ring, batch):
        """Append a produce_values() _Batch; returns its base offset. Uncompressed batches are
        encoded straight into the claimed frame, compressed (and transactional) ones staged first:
        the append that takes attributes is the one that takes an encoded records section."""
        if self._codec == NONE and self._txn is None:
            args, base_ts, max_ts = batch.encoder_args()
            return ring.append_records(self._slot(ring), args, base_ts, max_ts, self._max_block_ms,
                                       self._cluster.doorbell.ptr, self._producer_id, self._producer_epoch)
        records, base_ts, max_ts = batch.encode()
        records, attributes = self._staged_attributes(records)
        return ring.append(self._slot(ring), ffi.from_buffer(records), len(records), len(batch), base_ts, max_ts,
                           self._max_block_ms, self._cluster.doorbell.ptr, attributes, *self._identity())

    def _staged_attributes(self, records):
        """A staged records section compressed if the producer compresses, and its batch attributes
        (codec, and the transactional bit for a transactional producer)."""
        attributes = 0
        if self._codec != NONE:
            records, attributes = compress_records(records, self._codec, self._codec_level)
        if self._txn is not None:
            attributes |= ATTR_TRANSACTIONAL
        return records, attributes

    def _identity(self):
        """producer_id, producer_epoch, base_sequence for a ring append (-1s: not idempotent)."""
        if self._producer_id < 0:
            return -1, -1, -1
        return self._producer_id, self._producer_epoch, lib.SHMLOG_SEQUENCE_NEXT

    def _append_fixed(self, ring, partition, rows, row_bytes, timestamp):
        stride = row_bytes + FIXED_RECORD_OVERHEAD_BYTES
        per_batch = max(1, min(self._record_limit // stride, (ring.capacity_bytes // 2) // stride, 1 << 20))
        results = []
        src = ffi.from_buffer(rows) if rows.size else ffi.NULL
        for start in range(0, len(rows), per_batch):
            if self._acks == -1:
                ring.check_insync()
            count = min(per_batch, len(rows) - start)
            values = src + start * row_bytes if rows.size else ffi.NULL
            if self._codec == NONE and self._txn is None:
                base = self._locked(ring.append_fixed, self._slot(ring), count, values, row_bytes, timestamp,
                                    self._max_block_ms, self._cluster.doorbell.ptr, self._producer_id,
                                    self._producer_epoch)
            else:
                records = bytearray(stride * count)
                lib.shmlog_records_encode_fixed(ffi.from_buffer(records), len(records), count, values, row_bytes)
                records, attributes = self._staged_attributes(records)
                base = self._locked(ring.append, self._slot(ring), ffi.from_buffer(records), len(records), count,
                                    timestamp, timestamp, self._max_block_ms, self._cluster.doorbell.ptr, attributes,
                                    *self._identity())
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
            raise KafkaException(ring.flush_wait_error(rc, last_offset))

    # ------------------------------------------------------------------ lifecycle

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        for batch in self._purge():
            self._reports.append((batch, KafkaError(KafkaError._PURGE_QUEUE, "purged")))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        from shmlog.client.admin import cluster_metadata
        self._reset_routes()   # a refresh may unmap rings of changed topics: append their open batches first
        self._route_info.clear()
        self._cluster.refresh()
        cluster_id = self._cluster.control.request("describe_cluster")["cluster_id"]   # as AdminClient.cluster_id()
        return cluster_metadata(self._cluster.meta, topic, cluster_id)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # delivers what is queued first (flush), as leaving confluent-kafka's does

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._locked(self._release_slots)
        self._routes.clear()
        for cluster in self._retired:
            cluster.close()
        self._retired.clear()
        self._cluster.close()

    def _release_slots(self):
        for ring, slot in self._slots.items():
            ring.release_producer_slot(slot)
        self._slots.clear()

    def __del__(self):
        try:
            if not self._closed and not self._cluster.forked():
                self._closed = True
                self._wake.set()
                for ring, slot in self._slots.items():
                    ring.release_producer_slot(slot)
        except Exception:
            pass

    # ------------------------------------------------------------------ transactions (client/transactions.py)

    def _transactions(self, call):
        if self._txn is None:
            raise error(KafkaError._NOT_CONFIGURED, f"{call}(): the transactional API requires transactional.id to "
                        f"be configured")
        self._cluster.check_fork("Producer")
        return self._txn

    def _produce_in_txn(self, topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0,
                        headers=None, callback=None):
        """produce() of a transactional producer: the record's partition joins the transaction
        before the record is queued (the C core then writes it as a transactional batch)."""
        txn = self._txn
        if txn.state != "InTransaction":
            txn.before_produce(topic, partition)   # raises the state error
        route = self._route(_check_topic(topic))
        if _check_partition(topic, partition, route.partitions) == -1:
            if key is not None and type(key) is not bytes:
                key = _to_bytes(key, "key")
            partition = self._choose_partition(route, key)
        txn.before_produce(topic, partition)
        return _fast.ProducerCore.produce(self, topic, value, key, partition, on_delivery, timestamp, headers,
                                          callback)

    def init_transactions(self, timeout=None):
        """Get this transactional.id's producer id with a bumped epoch: older instances are fenced
        and a transaction they left open is aborted first."""
        self._transactions("init_transactions").init(timeout)

    def begin_transaction(self):
        self._transactions("begin_transaction").begin()

    def send_offsets_to_transaction(self, positions, group_metadata, timeout=None):
        """The consumer positions (next offsets to read) to commit for the group with this transaction."""
        self._transactions("send_offsets_to_transaction").send_offsets(positions, group_metadata, timeout)

    def commit_transaction(self, timeout=None):
        """Flush, then commit: the records and offsets of the transaction become visible together."""
        self._transactions("commit_transaction").commit(timeout)

    def abort_transaction(self, timeout=None):
        """Drop what is still queued, then abort: read_committed consumers never see the transaction."""
        self._transactions("abort_transaction").abort(timeout)
