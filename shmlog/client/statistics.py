"""librdkafka's statistics JSON for `stats_cb`, every `statistics.interval.ms`.

The document has librdkafka's shape and names (STATISTICS.md) with the fields that exist on one
host: the client's queue, per partition the records and bytes appended (producer) or decoded
(consumer), its open batch, high/low watermarks and, for a consumer, the application, stored
and committed offsets and the lag; the group's state and rebalance count; and one "broker",
the supervisor, whose `int_latency` is how long closed batches waited for their append.
It is built and handed to `stats_cb` inside poll() (as librdkafka does), so the callback runs
on the application's thread; a consumer's timer thread only asks poll() to take its slow path.
"""
import json
import threading
import time
import weakref


def _us(seconds):
    return int(seconds * 1_000_000)


def _window(count, low, high, total):
    """librdkafka's latency window (µs) from a (count, min_s, max_s, sum_s) sample."""
    avg = total / count if count else 0.0
    return {"min": _us(low), "max": _us(high), "avg": _us(avg), "sum": _us(total), "cnt": count}


def _nudge(stats_ref, stop, emitted):
    """Ask the consumer's poll() to take its slow path whenever statistics are due."""
    while True:
        stats = stats_ref()
        if stats is None:
            return
        due = stats.next_due
        del stats
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        stats = stats_ref()
        if stats is None:
            return
        stats.client._serve_needed = True
        del stats
        emitted.wait()  # until poll() has emitted (and moved next_due on), close(), or collection
        emitted.clear()


def _stop(stop, emitted):
    stop.set()
    emitted.set()


class Statistics:
    def __init__(self, client, kind, interval_ms, callback):
        self.client = client
        self.kind = kind
        self.interval_s = interval_ms / 1000.0
        self.callback = callback
        self.created = time.monotonic()
        self.next_due = self.created + self.interval_s
        self.stop = threading.Event()
        self.emitted = threading.Event()
        if kind == "consumer":  # consumer.poll() runs in C until asked to take its slow path
            # The thread holds this weakly, so a consumer dropped without close() is collected; the
            # collection then stops the thread as close() does.
            weakref.finalize(self, _stop, self.stop, self.emitted)
            threading.Thread(target=_nudge, args=(weakref.ref(self), self.stop, self.emitted), name="shmlog-stats",
                             daemon=True).start()

    @classmethod
    def of(cls, client, kind, cfg):
        if cfg.statistics_interval_ms <= 0 or cfg.stats_cb is None:
            return None
        return cls(client, kind, cfg.statistics_interval_ms, cfg.stats_cb)

    def maybe_emit(self):
        now = time.monotonic()
        if now < self.next_due:
            return
        self.next_due = now + self.interval_s
        try:
            self.callback(json.dumps(self.document(now)))
        finally:
            self.emitted.set()

    def close(self):
        _stop(self.stop, self.emitted)

    # ------------------------------------------------------------------ the document

    def document(self, now):
        c = self.client
        cluster = c._cluster
        doc = {
            "name": cluster.log.name, "client_id": c._cfg.get("client.id") or "rdkafka", "type": self.kind,
            "ts": _us(now), "time": int(time.time()), "age": _us(now - self.created), "replyq": 0,
            "msg_cnt": 0, "msg_size": 0, "msg_max": 0, "msg_size_max": 0, "simple_cnt": 0,
            "metadata_cache_cnt": len(cluster.meta["topics"]),
        }
        broker = {"name": f"{cluster.data_dir}/0", "nodeid": 0, "nodename": cluster.data_dir, "source": "configured",
                  "state": "UP"}
        topics = self._producer_topics(doc, broker) if self.kind == "producer" else self._consumer_topics(doc)
        doc["brokers"] = {broker["name"]: broker}
        doc["topics"] = topics
        doc["txmsgs"] = sum(p.get("txmsgs", 0) for t in topics.values() for p in t["partitions"].values())
        doc["txmsg_bytes"] = sum(p.get("txbytes", 0) for t in topics.values() for p in t["partitions"].values())
        doc["rxmsgs"] = sum(p.get("rxmsgs", 0) for t in topics.values() for p in t["partitions"].values())
        doc["rxmsg_bytes"] = sum(p.get("rxbytes", 0) for t in topics.values() for p in t["partitions"].values())
        if self.kind == "consumer" and c._group is not None and c._group.member is not None:
            doc["cgrp"] = c._group.member.statistics(now)
        return doc

    @staticmethod
    def _watermarks(ring):
        return {"hi_offset": ring.end()[1], "lo_offset": ring.log_start_offset, "ls_offset": ring.end()[1]}

    def _producer_topics(self, doc, broker):
        p = self.client
        doc.update(msg_cnt=p._queued_records, msg_size=p._queued_bytes, msg_max=p._max_queued,
                   msg_size_max=p._max_queued_bytes)
        broker["int_latency"] = _window(*p._take_queue_wait())
        topics = {}
        for name, route in list(p._routes.items()):
            parts = {}
            for partition, (tx, tx_bytes, queued, queued_bytes) in enumerate(route.tx_counts()):
                parts[str(partition)] = {"partition": partition, "broker": 0, "leader": 0, "msgq_cnt": queued,
                                         "msgq_bytes": queued_bytes, "txmsgs": tx, "txbytes": tx_bytes,
                                         **self._watermarks(route.rings[partition])}
            topics[name] = {"topic": name, "partitions": parts}
        return topics

    def _consumer_topics(self, doc):
        c = self.client
        member = c._group.member if c._group is not None else None
        committed = dict(member.last_committed) if member is not None else {}
        topics = {}
        for (topic, partition), reader in list(c._readers.items()):
            marks = self._watermarks(reader.ring)
            app = reader.pending[0].offset() if len(reader.pending) else reader.next_offset
            stored = c._stored.get((topic, partition), -1001)
            entry = {"partition": partition, "broker": 0, "leader": 0, "fetchq_cnt": len(reader.pending),
                     "fetch_state": "stopped" if reader.paused else "active",
                     "rxmsgs": reader.pending.records_in, "rxbytes": reader.pending.bytes_in,
                     "app_offset": app, "stored_offset": stored,
                     "committed_offset": committed.get((topic, partition), -1001),
                     "consumer_lag": max(0, marks["hi_offset"] - app),
                     "consumer_lag_stored": max(0, marks["hi_offset"] - stored) if stored >= 0 else -1, **marks}
            topics.setdefault(topic, {"topic": topic, "partitions": {}})["partitions"][str(partition)] = entry
        doc["msg_cnt"] = sum(len(r.pending) for r in c._readers.values())
        return topics
