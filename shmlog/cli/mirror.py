"""`shmlog mirror ...`: copy topics between a shmlog broker and a Kafka cluster (either way).

    shmlog mirror run --source S --target T --topic NAME|^REGEX ... [--name N] [--group G|^REGEX ...]
                      [--at-least-once] [--target-prefix P] [--source-config K=V] [--target-config K=V]
                      [--tasks N] [--no-sync-topic-configs] [--sync-topic-configs-interval S]
    shmlog mirror status --source S --target T --topic ... [--name N] [--json]
    shmlog mirror translate-offsets --source S --target T --topic ... --group G ... [--name N]

S and T are bootstrap.servers: `shm:///data/dir` (or a bare absolute data dir) for a shmlog
broker, `host:port[,host:port]` for a Kafka cluster. See docs/migration.md.
"""
import json
import os
import signal
import sys
import threading

import click

from shmlog import clients
from shmlog.cli._common import Failure, parse_pairs, table
from shmlog.errors import KafkaException, reason_of

PROGRESS_INTERVAL_S = 5.0


def _servers(ctx, param, value):
    value = (value or "").strip()
    if value.startswith("/"):
        value = "shm://" + os.path.realpath(value)
    try:
        clients.is_kafka(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def _common(fn):
    for option in reversed([
        click.option("--source", required=True, callback=_servers, metavar="SERVERS",
                     help="Where to copy from: shm:///DIR (or DIR) for shmlog, host:port,... for Kafka."),
        click.option("--target", required=True, callback=_servers, metavar="SERVERS",
                     help="Where to copy to, in the same forms."),
        click.option("--topic", "topics", multiple=True, required=True, metavar="NAME|^REGEX",
                     help="A source topic, or a ^regex of source topics. Repeatable."),
        click.option("--name", default="mirror", show_default=True,
                     help="The mirror's name: its transactional.id and offset-sync topic are mirror.NAME..."),
        click.option("--target-prefix", default="", metavar="P",
                     help="Prepended to each target topic's name (MirrorMaker 2's 'source.' naming; default none)."),
        click.option("--source-config", "source_configs", multiple=True, metavar="KEY=VALUE", callback=parse_pairs,
                     help="A client config for the source side (security.protocol=SSL, ...). Repeatable."),
        click.option("--target-config", "target_configs", multiple=True, metavar="KEY=VALUE", callback=parse_pairs,
                     help="A client config for the target side. Repeatable."),
    ]):
        fn = option(fn)
    return fn


def _confs(source, target, source_configs, target_configs):
    return ({"bootstrap.servers": source, **dict(source_configs)},
            {"bootstrap.servers": target, **dict(target_configs)})


def _mirror(source, target, topics, name, target_prefix, source_configs, target_configs, **kwargs):
    from shmlog.bridge.mirror import Mirror
    src, tgt = _confs(source, target, source_configs, target_configs)
    try:
        return Mirror(src, tgt, list(topics), name=name, target_prefix=target_prefix, **kwargs)
    except ValueError as exc:
        raise Failure(str(exc)) from None


@click.group()
def mirror():
    """Copy topics between shmlog and Kafka clusters (as MirrorMaker 2); docs/migration.md."""


@mirror.command("run")
@_common
@click.option("--group", "groups", multiple=True, metavar="GROUP|^REGEX",
              help="Translate this source group's committed offsets to the target (repeatable).")
@click.option("--at-least-once", is_flag=True,
              help="No target transactions: a kill between a batch and its checkpoint copies that batch twice.")
@click.option("--group-sync-interval", "group_sync_interval_s", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, metavar="S", help="Seconds between group offset translations.")
@click.option("--no-sync-topic-configs", is_flag=True,
              help="Create target topics with the target's defaults instead of the source topics' configs.")
@click.option("--sync-topic-configs-interval", "sync_topic_configs_interval_s", type=click.FloatRange(min=0.1),
              default=600.0, show_default=True, metavar="S",
              help="Seconds between copies of the source topics' configs to the target topics.")
@click.option("--tasks", type=click.IntRange(1, 256), default=1, show_default=True, metavar="N",
              help="Processes sharing the partitions (MirrorMaker 2's tasks.max); a dead one is started again.")
def mirror_run(source, target, topics, name, target_prefix, source_configs, target_configs, groups, at_least_once,
               group_sync_interval_s, no_sync_topic_configs, sync_topic_configs_interval_s, tasks):
    """Copy until Ctrl-C or SIGTERM, resuming where the last run of this --name checkpointed."""
    src, tgt = _confs(source, target, source_configs, target_configs)
    kwargs = dict(source=src, target=tgt, topics=list(topics), name=name, target_prefix=target_prefix,
                  exactly_once=not at_least_once, groups=list(groups), group_sync_interval_s=group_sync_interval_s,
                  sync_topic_configs=not no_sync_topic_configs,
                  sync_topic_configs_interval_s=sync_topic_configs_interval_s)
    from shmlog.bridge.mirror import Mirror
    try:
        Mirror(**kwargs)   # the arguments checked before any task starts
    except ValueError as exc:
        raise Failure(str(exc)) from None
    if tasks == 1:
        error = run_task(kwargs, 0, 1)
        if error:
            raise Failure(error)
        return
    from shmlog.bridge.tasks import TaskProcesses
    processes = TaskProcesses(task_main, (kwargs,), tasks, f"mirror {name}")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: processes.stop())
    click.echo(f"mirror {name}: {tasks} tasks", err=True)
    processes.run()
    click.echo(f"mirror {name}: stopped", err=True)


def task_main(kwargs, task, tasks):
    """One task of `mirror run --tasks N`, in a process of its own (TaskProcesses)."""
    error = run_task(kwargs, task, tasks)
    if error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)


def run_task(kwargs, task, tasks):
    """Copy as task `task` of `tasks` until SIGINT or SIGTERM; the error's text, or None."""
    from shmlog.bridge.mirror import Mirror
    name = kwargs["name"]
    who = f"mirror {name}" + (f" task {task}" if tasks > 1 else "")
    m = Mirror(**kwargs, tasks=tasks, task=task)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: (stop.set(), m.stop()))
    try:
        m.start()
        found = ", ".join(f"{t} ({n} partitions)" for t, n in sorted(m.partitions.items()))
        click.echo(f"{who}: {found or 'no matching source topic yet'} -> {kwargs['target']['bootstrap.servers']}"
                   + (f", {len(m.owned)} partitions of them here" if tasks > 1 else ""), err=True)
        next_report = [0.0]

        def until():
            import time
            now = time.monotonic()
            if now >= next_report[0]:
                next_report[0] = now + PROGRESS_INTERVAL_S
                lag = sum(row[4] for row in m.lag())
                click.echo(f"{who}: copied {m.copied} records, lag {lag}", err=True)
            return stop.is_set()
        m.run(until=until)
    except (KafkaException, ValueError, TimeoutError, RuntimeError) as exc:
        return reason_of(exc) if isinstance(exc, KafkaException) else str(exc)
    finally:
        m.close()
    click.echo(f"{who}: stopped after {m.copied} records", err=True)
    return None


@mirror.command("status")
@_common
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def mirror_status(source, target, topics, name, target_prefix, source_configs, target_configs, as_json):
    """Per source partition: high watermark, the position the mirror checkpointed, lag."""
    from shmlog.bridge.lag import status
    src, tgt = _confs(source, target, source_configs, target_configs)
    try:
        rows = status(src, tgt, list(topics), name=name, target_prefix=target_prefix)
    except (KafkaException, ValueError, TimeoutError) as exc:
        raise Failure(str(exc)) from None
    if as_json:
        json.dump([{"topic": t, "partition": p, "high_watermark": h, "mirrored_offset": a, "lag": lag}
                   for t, p, h, a, lag in rows], sys.stdout)
        click.echo()
        return
    click.echo(table(["TOPIC", "PARTITION", "HIGH-WATERMARK", "MIRRORED-OFFSET", "LAG"],
                     [[t, p, h, a if a >= 0 else "-", lag] for t, p, h, a, lag in rows]))


@mirror.command("translate-offsets")
@_common
@click.option("--group", "groups", multiple=True, required=True, metavar="GROUP|^REGEX",
              help="A source consumer group whose committed offsets to translate (repeatable).")
def mirror_translate(source, target, topics, name, target_prefix, source_configs, target_configs, groups):
    """Commit each group's translated offsets on the target now (only forward)."""
    m = _mirror(source, target, topics, name, target_prefix, source_configs, target_configs, exactly_once=False,
                groups=list(groups))
    try:
        m.partitions = m._topics()
        m._load_syncs()
        moved = m.sync_groups()
    except (KafkaException, ValueError, TimeoutError) as exc:
        raise Failure(str(exc)) from None
    click.echo(table(["GROUP", "TOPIC", "PARTITION", "OFFSET"], [list(r) for r in moved]))
