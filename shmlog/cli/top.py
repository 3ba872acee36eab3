"""`shmlog top`: a live view of a broker (rich), refreshed every --interval seconds.

Rates are the difference between two snapshots (observe.py) over the time between them, so
the first frame has none.
"""
import time

import click

from shmlog.cli._common import Failure, data_dir_option
from shmlog.cli.observe import Observer

try:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.table import Table
except ImportError:  # an optional dependency: the command says how to get it
    Console = None


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _ms(seconds):
    return f"{seconds * 1000:.2f} ms"


def _rate(now, before, key, seconds):
    if before is None or seconds <= 0 or key not in before:
        return ""
    return f"{max(0, now - before[key]) / seconds:,.0f}/s"


def render(snap, previous=None):
    """The frame for one snapshot; `previous` (an earlier snapshot) gives the rates."""
    if not snap.up:
        return Group(f"[bold red]broker down[/]: {snap.error}")
    seconds = snap.taken_at - previous.taken_at if previous is not None and previous.up else 0
    before_end = {(p.topic, p.partition): p.log_end_offset for p in previous.partitions} if seconds else None
    before_committed = ({(g.group_id, r.topic, r.partition): r.committed_offset for g in previous.groups
                         for r in g.partitions if r.committed_offset >= 0} if seconds else None)
    clients = ", ".join(f"{n} {kind}" for kind, n in sorted(snap.clients.items())) or "none"
    head = (f"supervisor pid {snap.supervisor_pid}   persister "
            f"{'pid ' + str(snap.persister_pid) if snap.persister_pid else '[red]not running[/]'}   clients {clients}")
    for h in snap.fsync:
        p50, p99 = h.quantile(0.5), h.quantile(0.99)
        head += (f"\nfsync {h.log_dir}: {h.count:,} syncs" +
                 (f", p50 {_ms(p50)}, p99 {_ms(p99)}, mean {_ms(h.sum_seconds / h.count)}" if h.count else ""))

    parts = Table(title="partitions", title_justify="left", expand=False)
    for name in ("topic", "p", "log start", "log end", "in", "persist backlog", "unflushed", "ring fill"):
        parts.add_column(name, justify="left" if name == "topic" else "right")
    for p in snap.partitions:
        fill = 100.0 * p.ring_used_bytes / p.ring_size_bytes if p.ring_size_bytes else 0.0
        parts.add_row(p.topic, str(p.partition), f"{p.log_start_offset:,}", f"{p.log_end_offset:,}",
                      _rate(p.log_end_offset, before_end, (p.topic, p.partition), seconds),
                      f"{max(0, p.log_end_offset - p.persisted_offset):,}",
                      f"{max(0, p.log_end_offset - p.flushed_offset):,}",
                      f"{fill:.1f}% of {_human(p.ring_size_bytes)}")

    groups = Table(title="consumer groups", title_justify="left", expand=False)
    for name in ("group", "state", "gen", "members", "topic", "p", "committed", "lag", "consumed"):
        groups.add_column(name, justify="left" if name in ("group", "state", "topic") else "right")
    for g in snap.groups:
        first = True
        for r in g.partitions or [None]:
            cells = [g.group_id, g.state, str(g.generation), str(g.members)] if first else ["", "", "", ""]
            first = False
            if r is None:
                groups.add_row(*cells, "", "", "", "", "")
                continue
            groups.add_row(*cells, r.topic, str(r.partition),
                           f"{r.committed_offset:,}" if r.committed_offset >= 0 else "-",
                           f"{r.lag:,}" if r.lag is not None else "-",
                           _rate(r.committed_offset, before_committed, (g.group_id, r.topic, r.partition), seconds)
                           if r.committed_offset >= 0 else "")
    return Group(head, parts, groups)


@click.command("top")
@data_dir_option()
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, metavar="S",
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame (no rates) and exit.")
def top(data_dir, interval, once):
    """A live view of the broker: partitions (offsets, rates, persister backlog, ring fill) and groups (lag)."""
    if Console is None:
        raise Failure("shmlog top needs rich: pip install 'shmlog[observe]'")
    observer = Observer(data_dir)
    console = Console()
    try:
        if once:
            snap = observer.snapshot()
            console.print(render(snap))
            if not snap.up:
                raise Failure(f"broker down: {snap.error}")
            return
        previous = None
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                snap = observer.snapshot()
                live.update(render(snap, previous), refresh=True)
                previous = snap
                time.sleep(interval)  # the refresh period a person asked for, not synchronisation
    except KeyboardInterrupt:
        pass
    finally:
        observer.close()
