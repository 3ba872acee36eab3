"""`shmlog metrics`: the broker's state as Prometheus metrics (prometheus-client).

Every scrape takes a fresh snapshot (observe.py) and turns it into metric families, so the
exporter holds no state of its own and can be restarted at will. `--once` prints one scrape
in the text format instead of serving (for a node_exporter textfile collector, or a look).
"""
import wsgiref.simple_server

import click

from shmlog.cli._common import Failure, data_dir_option
from shmlog.cli.observe import Observer

try:
    from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
except ImportError:  # an optional dependency: the command says how to get it
    CollectorRegistry = None

PARTITION = ["topic", "partition"]
GROUP_PARTITION = ["group", "topic", "partition"]


class BrokerCollector:
    """A prometheus-client collector that looks at the broker on every collect()."""

    def __init__(self, observer):
        self.observer = observer

    def collect(self):
        snap = self.observer.snapshot()
        yield GaugeMetricFamily("shmlog_up", "1 if the broker answered this scrape, else 0", value=int(snap.up))
        if not snap.up:
            return
        yield GaugeMetricFamily("shmlog_persister_up", "1 if the broker's persister process is running",
                                value=int(bool(snap.persister_pid)))
        clients = GaugeMetricFamily("shmlog_clients", "Client processes registered with the broker", labels=["kind"])
        for kind, count in sorted(snap.clients.items()):
            clients.add_metric([kind], count)
        yield clients
        yield from _telemetry(snap.telemetry)

        fsync = HistogramMetricFamily("shmlog_persister_fsync_seconds", "How long the persister's fdatasync of a "
                                      "partition's segment took (acks=all waits for it), per log dir",
                                      labels=["log_dir"])
        for h in snap.fsync:
            buckets = [(_bound(bound), cumulative) for bound, cumulative in h.buckets] + [("+Inf", h.count)]
            fsync.add_metric([h.log_dir], buckets, h.sum_seconds)
        yield fsync

        families = {
            "records_in": CounterMetricFamily("shmlog_partition_records_in", "Records appended to the partition "
                                              "since it was created (its log end offset)", labels=PARTITION),
            "log_start": GaugeMetricFamily("shmlog_partition_log_start_offset", "First offset still in the log",
                                           labels=PARTITION),
            "log_end": GaugeMetricFamily("shmlog_partition_log_end_offset", "Offset the next record will get",
                                         labels=PARTITION),
            "persisted": GaugeMetricFamily("shmlog_partition_persisted_offset", "Offsets below this are written to "
                                           "segment files", labels=PARTITION),
            "flushed": GaugeMetricFamily("shmlog_partition_flushed_offset", "Offsets below this are fsynced "
                                         "(what acks=all waits for)", labels=PARTITION),
            "backlog": GaugeMetricFamily("shmlog_partition_persister_backlog_records", "Records in the ring not yet "
                                         "written to segment files", labels=PARTITION),
            "unflushed": GaugeMetricFamily("shmlog_partition_unflushed_records", "Records not yet fsynced",
                                           labels=PARTITION),
            "ring_used": GaugeMetricFamily("shmlog_partition_ring_used_bytes", "Ring bytes written and not yet "
                                           "released by the persister", labels=PARTITION),
            "ring_size": GaugeMetricFamily("shmlog_partition_ring_size_bytes", "Ring capacity", labels=PARTITION),
        }
        for p in snap.partitions:
            labels = [p.topic, str(p.partition)]
            families["records_in"].add_metric(labels, p.log_end_offset)
            families["log_start"].add_metric(labels, p.log_start_offset)
            families["log_end"].add_metric(labels, p.log_end_offset)
            families["persisted"].add_metric(labels, p.persisted_offset)
            families["flushed"].add_metric(labels, p.flushed_offset)
            families["backlog"].add_metric(labels, max(0, p.log_end_offset - p.persisted_offset))
            families["unflushed"].add_metric(labels, max(0, p.log_end_offset - p.flushed_offset))
            families["ring_used"].add_metric(labels, p.ring_used_bytes)
            families["ring_size"].add_metric(labels, p.ring_size_bytes)
        yield from families.values()

        yield from _cleaner_families(snap)

        members = GaugeMetricFamily("shmlog_group_members", "Members of the consumer group", labels=["group"])
        generation = GaugeMetricFamily("shmlog_group_generation", "The group's generation: it grows by one with "
                                       "every completed rebalance", labels=["group"])
        state = GaugeMetricFamily("shmlog_group_state", "1 for the group's current state", labels=["group", "state"])
        committed = GaugeMetricFamily("shmlog_group_committed_offset", "The group's committed offset",
                                      labels=GROUP_PARTITION)
        lag = GaugeMetricFamily("shmlog_group_lag", "Log end offset minus the committed offset",
                                labels=GROUP_PARTITION)
        for g in snap.groups:
            members.add_metric([g.group_id], g.members)
            generation.add_metric([g.group_id], max(g.generation, 0))
            state.add_metric([g.group_id, g.state], 1)
            for row in g.partitions:
                labels = [g.group_id, row.topic, str(row.partition)]
                if row.committed_offset >= 0:
                    committed.add_metric(labels, row.committed_offset)
                if row.lag is not None:
                    lag.add_metric(labels, row.lag)
        yield from (members, generation, state, committed, lag)


def _cleaner_families(snap):
    """The log cleaner's status (docs/compaction.md) as metric families."""
    yield GaugeMetricFamily("shmlog_log_cleaner_up", "1 if the broker's log cleaner process is running",
                            value=int(bool(snap.cleaner_pid)))
    ratio = GaugeMetricFamily("shmlog_log_cleaner_dirty_ratio", "Uncleaned / total bytes of the cleanable "
                              "segments of a compacted partition", labels=PARTITION)
    reclaimed = CounterMetricFamily("shmlog_log_cleaner_reclaimed_bytes", "Bytes the log cleaner removed from "
                                    "the partition since the cleaner process started", labels=PARTITION)
    last = GaugeMetricFamily("shmlog_log_cleaner_last_clean_timestamp_seconds", "When the log cleaner last "
                             "cleaned the partition (Unix time)", labels=PARTITION)
    for name, p in sorted((snap.cleaner.get("partitions") or {}).items()):
        topic, _, partition = name.rpartition("-")
        labels = [topic, partition]
        ratio.add_metric(labels, float(p.get("dirty_ratio") or 0.0))
        reclaimed.add_metric(labels, int(p.get("bytes_reclaimed") or 0))
        if p.get("last_clean_ms"):
            last.add_metric(labels, p["last_clean_ms"] / 1000)
    yield from (ratio, reclaimed, last)


def _bound(seconds):
    """A bucket bound as Prometheus prints it: 0.0001, 0.5, 1.0."""
    return repr(float(seconds))


def registry_for(data_dir):
    if CollectorRegistry is None:
        raise Failure("shmlog metrics needs prometheus-client: pip install 'shmlog[observe]'")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(Observer(data_dir)))
    return registry


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass  # one line per scrape would drown the terminal


@click.command("metrics")
@data_dir_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9464, show_default=True,
              help="Port for Prometheus to scrape (/metrics); 0 picks a free one and prints it.")
@click.option("--once", is_flag=True, help="Print one scrape in Prometheus' text format and exit.")
def metrics(data_dir, host, port, once):
    """Serve the broker's partitions, groups and clients as Prometheus metrics."""
    registry = registry_for(data_dir)
    if once:
        click.echo(generate_latest(registry).decode(), nl=False)
        return
    try:
        server = wsgiref.simple_server.make_server(host, port, make_wsgi_app(registry), handler_class=_QuietHandler)
    except OSError as exc:
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    click.echo(f"serving metrics of {data_dir} on http://{host}:{server.server_port}/metrics", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _telemetry(entries):
    """What clients pushed (push_telemetry), as shmlog_client_<name> families: counters for names
    ending in _total, gauges otherwise; a family's labels are the union of its entries' labels."""
    by_name = {}
    for name, labels, value in entries:
        by_name.setdefault(name, []).append((labels, value))
    for name, rows in sorted(by_name.items()):
        keys = sorted({k for labels, _ in rows for k in labels})
        if name.endswith("_total"):
            family = CounterMetricFamily(f"shmlog_client_{name[:-len('_total')]}", f"pushed by clients: {name}",
                                         labels=keys)
        else:
            family = GaugeMetricFamily(f"shmlog_client_{name}", f"pushed by clients: {name}", labels=keys)
        for labels, value in rows:
            family.add_metric([labels.get(k, "") for k in keys], value)
        yield family

