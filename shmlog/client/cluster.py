"""What every client shares: the control connection, cached metadata and mapped rings.

Metadata is refreshed when the doorbell's metadata epoch moves, so a client notices
new partitions and deleted topics without asking the supervisor on every call.
"""
import os
import threading

import posix_ipc

from shmlog import control
from shmlog._native import _fast
from shmlog._native.ring import Doorbell, Ring
from shmlog.client.client_log import ClientLog
from shmlog.errors import KafkaError, KafkaException, error


class Cluster:
    def __init__(self, bootstrap_servers, kind, log=None):
        self.data_dir = control.data_dir_from_bootstrap(bootstrap_servers)
        self.kind = kind
        self.log = log or ClientLog(kind=kind)
        self.control = control.Control(self.data_dir, register_as=kind)
        self.pid = os.getpid()
        # The C core's fork generation (pthread_atfork), as ProducerCore/ConsumerCore check it.
        self.fork_generation = _fast.fork_generation()
        self.lock = threading.RLock()
        self.rings = {}
        # Map rings with their page tables filled (shm.MAP_POPULATE): cheaper than a page fault per
        # 4 KiB of a fresh ring, but 10-20 ms per 64 MiB up front, which a group member taking over
        # partitions in a rebalance must not spend before its first record (Consumer sets it).
        self.populate_rings = True
        self.meta = self.control.request("metadata")
        # Shared memory is mapped only if the broker's owner (checked on the control socket) owns it.
        self.doorbell = Doorbell.open(self.meta["doorbell"], owner=self.control.owner)

    def forked(self):
        """Used in a process forked from the one that created it."""
        return _fast.fork_generation() != self.fork_generation

    def check_fork(self, what):
        if self.forked():
            raise error(KafkaError._STATE, f"this {what} was created in process {self.pid} and cannot be used "
                        f"in forked process {os.getpid()}: create a new {what} in the child")

    def push_telemetry(self, metrics):
        """This client's metrics for `shmlog metrics` ([name, labels, value]; KIP-714's push)."""
        self.control.request("push_telemetry", metrics=metrics)

    # ------------------------------------------------------------------ metadata

    def refresh(self, auto_create=()):
        with self.lock:
            self.meta = self.control.request("metadata", auto_create=list(auto_create))
            self.log.debug("metadata", "METADATA", f"metadata epoch {self.meta['epoch']}: "
                           f"{len(self.meta['topics'])} topics")
            live = {(t, p): info["rings"][p] for t, info in self.meta["topics"].items()
                    for p in range(info["partitions"])}
            for key in [k for k, ring in self.rings.items() if live.get(k) != ring.mapping.name]:
                self.rings.pop(key).close()

    def maybe_refresh(self):
        if self.doorbell.metadata_epoch != self.meta["epoch"]:
            self.refresh()

    def topic(self, name, auto_create=False):
        self.maybe_refresh()
        info = self.meta["topics"].get(name)
        if info is None:
            self.refresh(auto_create=[name] if auto_create else ())
            info = self.meta["topics"].get(name)
        if info is None:
            raise error(KafkaError._UNKNOWN_TOPIC, f"unknown topic {name!r}" +
                        ("" if auto_create else " (create it with AdminClient.create_topics)"))
        return info

    def ring(self, topic, partition):
        key = (topic, partition)
        ring = self.rings.get(key)
        if ring is not None:
            return ring
        with self.lock:
            info = self.topic(topic)
            if not 0 <= partition < info["partitions"]:
                raise error(KafkaError._UNKNOWN_PARTITION, f"{topic}-{partition}: topic has "
                            f"{info['partitions']} partitions")
            ring = self.rings.get(key)
            if ring is None:
                ring = self.rings[key] = Ring.open(info["rings"][partition], topic, partition, self.populate_rings,
                                                   owner=self.control.owner)
            return ring

    def init_producer_id(self, transactional_id=None, transaction_timeout_ms=60_000):
        """InitProducerId: (producer_id, producer_epoch) from the broker's durable allocator."""
        reply = self.control.request("init_producer_id", transactional_id=transactional_id,
                                     transaction_timeout_ms=transaction_timeout_ms)
        return reply["producer_id"], reply["producer_epoch"]

    def describe_producers(self, partitions):
        """{(topic, partition): {producer_id: {producer_epoch, last_sequence, last_offset}}} (Kafka's
        DescribeProducers), from the log and the rings."""
        reply = self.control.request("describe_producers", partitions=[list(tp) for tp in partitions])
        return {(p["topic"], p["partition"]): {e["producer_id"]: e for e in p["producers"]}
                for p in reply["partitions"]}

    def close(self):
        with self.lock:
            for ring in self.rings.values():
                ring.close()
            self.rings.clear()
            self.doorbell.close()
            self.control.close()


def connect(conf, kind):
    log = ClientLog(conf, kind)
    try:
        cluster = Cluster(conf.bootstrap_servers, kind, log)
    except KafkaException:
        raise  # the exception says it all; logging it too would say it twice
    except (OSError, posix_ipc.Error) as exc:
        raise error(KafkaError._TRANSPORT, f"cannot reach the shmlog broker for {conf.bootstrap_servers}: {exc}")
    log.debug("broker", "CONNECT", f"connected to the shmlog broker for {cluster.data_dir} as a {kind}")
    return cluster
