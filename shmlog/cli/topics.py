"""`shmlog topics ...`: kafka-topics (and kafka-configs for topics) for a shmlog broker.

    shmlog topics create NAME --partitions N [--replication-factor R | --replica-assignment 0:1,1:2]
                         [--config K=V ...]
    shmlog topics list
    shmlog topics describe [NAME] [--under-replicated-partitions]
    shmlog topics alter NAME [--partitions N] [--config K=V ...] [--delete-config K ...]
    shmlog topics delete NAME
    shmlog topics move-replica NAME --partition P --from DIR --to DIR

NAME may also be given as `--topic NAME`, as kafka-topics takes it.
"""
import os

import click

from shmlog.cli._common import Failure, admin_client, config_option, data_dir_option, table
from shmlog.client.admin import ConfigResource, NewPartitions, NewTopic
from shmlog.config import TOPIC_DEFAULTS
from shmlog.control import Control


@click.group()
def topics():
    """Create, list, describe, alter and delete topics."""


def name_argument(command):
    """The topic NAME argument, which may also come as `--topic NAME` (kafka-topics' form);
    the command gets both and calls one_name()."""
    command = click.option("--topic", "topic_option", metavar="NAME",
                           help="The topic, as kafka-topics takes it (instead of NAME).")(command)
    return click.argument("name", required=False)(command)


def one_name(name, topic_option, required=True):
    if name is not None and topic_option is not None and name != topic_option:
        raise click.UsageError(f"two topic names: {name!r} and --topic {topic_option!r}")
    name = name if name is not None else topic_option
    if name is None and required:
        raise click.UsageError("give the topic: NAME or --topic NAME")
    return name


def _replica_assignment(ctx, param, value):
    """kafka-topics' --replica-assignment: partitions separated by commas, each a colon-separated
    list of replica ids (log dir indexes), the preferred leader first: 0:1,1:2."""
    if value is None:
        return None
    try:
        return [[int(r) for r in part.split(":")] for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected replica ids like 0:1,1:2 (partitions separated by "
                                 f"commas, replicas by colons)", ctx=ctx, param=param) from None


@topics.command("create")
@name_argument
@click.option("--partitions", "-p", type=click.IntRange(min=1), metavar="N",
              help="Number of partitions (required unless --replica-assignment gives them).")
@click.option("--replication-factor", "-r", type=click.IntRange(min=1), metavar="R",
              help="Replicas of each partition, each on its own log dir (default: default.replication.factor).")
@click.option("--replica-assignment", callback=_replica_assignment, metavar="0:1,1:2",
              help="Replica ids (log dir indexes) per partition, the preferred leader first.")
@config_option("A topic config (retention.ms=60000, cleanup.policy=compact, ring.bytes=1048576). Repeatable.")
@data_dir_option()
def topics_create(name, topic_option, partitions, replication_factor, replica_assignment, configs, data_dir):
    """Create topic NAME."""
    name = one_name(name, topic_option)
    if replica_assignment is not None:
        if replication_factor is not None:
            raise click.UsageError("give --replication-factor or --replica-assignment, not both")
        if partitions is not None and partitions != len(replica_assignment):
            raise click.UsageError(f"--replica-assignment names {len(replica_assignment)} partitions, "
                                   f"--partitions {partitions}")
        partitions = len(replica_assignment)
    if partitions is None:
        raise click.UsageError("give --partitions N (or --replica-assignment)")
    with admin_client(data_dir) as admin:
        futures = admin.create_topics([NewTopic(
            name, num_partitions=partitions, config=dict(configs),
            replication_factor=-1 if replication_factor is None else replication_factor,
            replica_assignment=replica_assignment)])
        futures[name].result()  # KafkaException: printed by main, exit 1
    click.echo(f"created topic {name} with {partitions} partition{'s' if partitions != 1 else ''}")


@topics.command("list")
@data_dir_option()
def topics_list(data_dir):
    """List topic names, one per line."""
    with admin_client(data_dir) as admin:
        md = admin.list_topics()
    for name in sorted(md.topics):
        click.echo(name)


@topics.command("describe")
@name_argument
@click.option("--under-replicated-partitions", "under_replicated", is_flag=True,
              help="Only partitions whose ISR is smaller than their replica list (as kafka-topics).")
@data_dir_option()
def topics_describe(name, topic_option, under_replicated, data_dir):
    """Show partitions and configs of topic NAME (default: every topic)."""
    name = one_name(name, topic_option, required=False)
    with admin_client(data_dir) as admin:
        md = admin.list_topics(name)
        if name is not None and md.topics[name].error is not None:
            raise Failure(str(md.topics[name].error))
        names = sorted(md.topics)
        futures = admin.describe_configs([ConfigResource("topic", n) for n in names]) if names else {}
        configs = {res.name: f.result() for res, f in futures.items()}
    if not names:
        click.echo("no topics")
        return
    if under_replicated:
        parts = [(t, md.topics[t].partitions[i]) for t in names for i in sorted(md.topics[t].partitions)]
        rows = [[topic, p.id, p.leader, ",".join(map(str, p.replicas)), ",".join(map(str, p.isrs))]
                for topic, p in parts if len(p.isrs) < len(p.replicas)]
        click.echo(table(["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"], rows) if rows
                   else "no under-replicated partitions")
        return
    for i, topic in enumerate(names):
        t = md.topics[topic]
        parts = [t.partitions[p] for p in sorted(t.partitions)]
        rf = len(parts[0].replicas) if parts else 0
        if i:
            click.echo("")
        click.echo(f"Topic {topic}: {len(parts)} partition{'s' if len(parts) != 1 else ''}, "
                   f"replication factor {rf}")
        rows = [[p.id, p.leader, ",".join(map(str, p.replicas)), ",".join(map(str, p.isrs)),
                 ",".join(map(str, p.offline)) or "-"] for p in parts]
        click.echo(_indent(table(["PARTITION", "LEADER", "REPLICAS", "ISR", "OFFLINE"], rows), "  "))
        entries = configs.get(topic) or {}
        for line in _cleaner_lines(data_dir, topic, len(parts)):
            click.echo(line)
        click.echo("  Configs:")
        width = max((len(k) for k in entries), default=0)
        for key in sorted(entries):
            click.echo(f"    {key.ljust(width)} = {config_value(entries[key].value)}")


def _cleaner_lines(data_dir, topic, partitions):
    """`  Cleaner p: dirty ratio ..., last clean ..., N bytes reclaimed` for a compacted topic's partitions."""
    import os
    import time

    from shmlog.broker import cleaner
    st = (cleaner.read(os.path.realpath(data_dir)) or {}).get("partitions") or {}
    out = []
    for p in range(partitions):
        s = st.get(f"{topic}-{p}")
        if s is None:
            continue
        last = f"{time.time() - s['last_clean_ms'] / 1000:.0f} s ago" if s.get("last_clean_ms") else "never"
        out.append(f"  Cleaner {p}: dirty ratio {s.get('dirty_ratio', 0):.3f}, last clean {last}, "
                   f"{s.get('bytes_reclaimed', 0)} bytes reclaimed, first dirty offset {s.get('first_dirty_offset', 0)}"
                   + (f", error: {s['error']}" if s.get("error") else ""))
    return out


def _indent(text, prefix):
    return "\n".join(prefix + line for line in text.splitlines())


def config_value(value):
    """A config value as typed on the command line (true, 1,2, 60000)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _topic_config_keys(ctx, param, keys):
    """--delete-config keys: each must be a topic config."""
    for key in keys:
        if key not in TOPIC_DEFAULTS:
            raise click.BadParameter(f"{key!r} is not a topic config", ctx=ctx, param=param)
    return list(keys)


@topics.command("alter")
@name_argument
@click.option("--partitions", "-p", type=click.IntRange(min=1), metavar="N",
              help="Grow the topic to N partitions (more than it has; partitions are never removed).")
@config_option("Set a topic config (retention.ms=60000, cleanup.policy=compact). Repeatable.")
@click.option("--delete-config", "delete_configs", multiple=True, metavar="KEY", callback=_topic_config_keys,
              help="Return a topic config to its default. Repeatable.")
@data_dir_option()
def topics_alter(name, topic_option, partitions, configs, delete_configs, data_dir):
    """Add partitions to topic NAME and change its configs (kafka-topics --alter, kafka-configs --alter)."""
    name = one_name(name, topic_option)
    if partitions is None and not configs and not delete_configs:
        raise click.UsageError("nothing to change: give --partitions N, --config KEY=VALUE or --delete-config KEY")
    both = {k for k, _ in configs} & set(delete_configs)
    if both:
        raise click.UsageError(f"{', '.join(sorted(both))} is both set and deleted")
    changes = []
    with admin_client(data_dir) as admin:
        md = admin.list_topics(name)
        if md.topics[name].error is not None:
            raise Failure(str(md.topics[name].error))
        before = len(md.topics[name].partitions)
        if partitions is not None and partitions < before:
            raise Failure(f"topic {name!r} has {before} partitions; partitions cannot be removed "
                          f"(--partitions must be at least {before})")
        if configs or delete_configs:
            # The broker merges what it is sent into the topic's configs, so a deleted config is
            # sent as its default value.
            wanted = dict(configs)
            wanted.update({k: config_value(TOPIC_DEFAULTS[k]) for k in delete_configs})
            res = ConfigResource("topic", name, set_config=wanted)
            admin.alter_configs([res])[res].result()
            changes += [f"set {k}={v}" for k, v in configs]
            changes += [f"reset {k} to its default ({config_value(TOPIC_DEFAULTS[k])})" for k in delete_configs]
        if partitions is not None:
            if partitions > before:
                admin.create_partitions([NewPartitions(name, partitions)])[name].result()
                changes.insert(0, f"partitions {before} -> {partitions}")
            else:
                changes.insert(0, f"partitions unchanged ({before})")
    click.echo(f"altered topic {name}: " + "; ".join(changes))


@topics.command("delete")
@name_argument
@data_dir_option()
def topics_delete(name, topic_option, data_dir):
    """Delete topic NAME and all its records."""
    name = one_name(name, topic_option)
    with admin_client(data_dir) as admin:
        admin.delete_topics([name])[name].result()
    click.echo(f"deleted topic {name}")


@topics.command("move-replica")
@name_argument
@click.option("--partition", "-p", "partition", type=click.IntRange(min=0), required=True, metavar="P")
@click.option("--from", "source", type=click.IntRange(min=0), required=True, metavar="DIR",
              help="The log dir index (replica id) the replica is on.")
@click.option("--to", "target", type=click.IntRange(min=0), required=True, metavar="DIR",
              help="The log dir index it moves to.")
@data_dir_option()
def topics_move_replica(name, topic_option, partition, source, target, data_dir):
    """Move a replica of NAME's partition P to another log dir (Kafka's AlterReplicaLogDirs)."""
    name = one_name(name, topic_option)
    control = Control(os.path.realpath(data_dir))
    try:
        result = control.request("alter_replica_log_dirs", moves=[[name, partition, source, target]])["results"][0]
    finally:
        control.close()
    if result is not None:
        raise Failure(result[1])
    click.echo(f"moving {name}-{partition}'s replica from log dir {source} to {target}: the new replica joins the "
               f"ISR once it caught up (shmlog topics describe {name})")
