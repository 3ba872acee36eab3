"""The listener's view of the broker: metadata from the supervisor, the partition rings mapped,
one producer slot per ring, and the segment files behind them.

Rings of a deleted or recreated topic are unmapped only once no request thread uses any ring
(`using()`, or `hold()` until `release()` for an acks=all Produce waiting for its fsync), so a
fetch in flight never reads an unmapped ring.
"""
import contextlib
import threading

from shmlog import control
from shmlog._native.ring import Doorbell, Ring
from shmlog.log.segment import partition_dir


class LogsView:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.control = control.Control(data_dir, register_as="kafka-listener")
        self.owner = self.control.owner
        self.lock = threading.Lock()
        # One entry per hold() not released yet. A list's append and pop are each one step no
        # other thread interleaves with, so a request takes no lock to hold the rings: the
        # produce and fetch threads of a busy partition would otherwise meet on self.lock
        # several times per record.
        self.holders = []
        self.meta = self.control.request("metadata")
        self.doorbell = Doorbell.open(self.meta["doorbell"], owner=self.owner)
        self.rings = {}
        self.append_locks = {}
        self.slots = {}
        self.retired = []

    # ------------------------------------------------------------------ metadata

    def request(self, op, **fields):
        """A control request (KafkaException with the supervisor's error code when refused)."""
        return self.control.request(op, **fields)

    def refresh(self, auto_create=()):
        meta = self.control.request("metadata", auto_create=list(auto_create))
        with self.lock:
            self.meta = meta
            live = {(t, p): info["rings"][p] for t, info in meta["topics"].items() for p in range(info["partitions"])}
            for key in [k for k, ring in self.rings.items() if live.get(k) != ring.mapping.name]:
                ring = self.rings.pop(key)
                self.append_locks.pop(key, None)
                self.retired.append((ring, self.slots.pop(key, None)))
            self._close_retired()
        return meta

    def maybe_refresh(self):
        if self.doorbell.metadata_epoch != self.meta["epoch"]:
            self.refresh()
        return self.meta

    def topic(self, name):
        return self.maybe_refresh()["topics"].get(name)

    @property
    def broker_config(self):
        return self.meta["broker"]

    # ------------------------------------------------------------------ rings

    @contextlib.contextmanager
    def using(self):
        self.hold()
        try:
            yield
        finally:
            self.release()

    def hold(self):
        """Keep every ring mapped until release() (what `using()` does around a block); hold
        before looking a ring up."""
        self.holders.append(None)

    def release(self):
        self.holders.pop()
        if self.retired:
            with self.lock:
                self._close_retired()

    def _close_retired(self):
        """(With self.lock.) Close the retired rings once nobody holds any: a hold() after this
        check looks its rings up afresh, and the retired ones are no longer there."""
        if not self.holders and self.retired:
            for ring, slot in self.retired:
                if slot is not None:
                    ring.release_producer_slot(slot)
                ring.close()
            self.retired = []

    def ring(self, topic, partition):
        """The mapped ring of topic-partition (call inside `using()`), or None if there is none."""
        key = (topic, partition)
        ring = self.rings.get(key)
        if ring is not None:
            return ring
        info = self.topic(topic)
        if info is None or not 0 <= partition < info["partitions"]:
            return None
        with self.lock:
            ring = self.rings.get(key)
            if ring is None:
                ring = self.rings[key] = Ring.open(info["rings"][partition], topic, partition, owner=self.owner)
                self.append_locks[key] = threading.Lock()
            return ring

    def append_lock(self, topic, partition):
        return self.append_locks[(topic, partition)]

    def producer_slot(self, ring):
        """The listener's producer slot in ring (call with its append lock held)."""
        key = (ring.topic, ring.partition)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = ring.acquire_producer_slot()
        return slot

    def partition_dir(self, topic, partition):
        info = self.meta["topics"][topic]
        return partition_dir(info["log_dirs"][partition], topic, partition)

    def close(self):
        with self.lock:
            for key, ring in self.rings.items():
                self.retired.append((ring, self.slots.get(key)))
            self.rings.clear()
            self.holders.clear()
            self._close_retired()
            self.doorbell.close()
        self.control.close()
