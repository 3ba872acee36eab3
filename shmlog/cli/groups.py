"""`shmlog groups ...`: kafka-consumer-groups for a shmlog broker.

    shmlog groups list [--state]
    shmlog groups describe GROUP... | --all-groups   [--members | --state]
    shmlog groups reset-offsets GROUP (--topic T[:P,P..] | --all-topics)
                  (--to-earliest | --to-latest | --to-offset N | --to-datetime YYYY-MM-DDTHH:MM:SS[.sss])
                  [--execute]                      (without --execute: a dry run that prints the plan)
    shmlog groups delete GROUP...

Tables are what kafka-consumer-groups prints (GROUP TOPIC PARTITION CURRENT-OFFSET
LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID); HOST is the member's process, `pid:N`.
"""
import datetime

import click

from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog.cli._common import Failure, admin_client, bootstrap, data_dir_option, table
from shmlog.client.admin import ConsumerGroupState, ConsumerGroupTopicPartitions
from shmlog.errors import KafkaError, KafkaException, reason_of

STATE_NAMES = {ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
               ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
               ConsumerGroupState.STABLE: "Stable", ConsumerGroupState.DEAD: "Dead",
               ConsumerGroupState.EMPTY: "Empty", ConsumerGroupState.UNKNOWN: "Unknown"}
DRY_RUN_NOTE = "(dry run: nothing changed; add --execute to reset the offsets)"


def _dash(value):
    return "-" if value is None else value


@click.group()
def groups():
    """List, describe, reset and delete consumer groups (as kafka-consumer-groups)."""


@groups.command("list")
@click.option("--state", "with_state", is_flag=True, help="Also print each group's state.")
@data_dir_option()
def groups_list(with_state, data_dir):
    """List consumer groups, one per line."""
    with admin_client(data_dir) as admin:
        listed = sorted(admin.list_consumer_groups().result().valid, key=lambda g: g.group_id)
    if with_state:
        click.echo(table(["GROUP", "STATE"], [[g.group_id, STATE_NAMES[g.state]] for g in listed]))
        return
    for g in listed:
        click.echo(g.group_id)


@groups.command("describe")
@click.argument("group_ids", metavar="GROUP...", nargs=-1)
@click.option("--all-groups", is_flag=True, help="Describe every group.")
@click.option("--members", "view", flag_value="members", help="One line per member instead of per partition.")
@click.option("--state", "view", flag_value="state", help="One line per group: strategy, state, members.")
@data_dir_option()
def groups_describe(group_ids, all_groups, view, data_dir):
    """Per partition: committed (current) offset, log end offset, lag and owning member."""
    with admin_client(data_dir) as admin:
        if all_groups:
            group_ids = sorted(g.group_id for g in admin.list_consumer_groups().result().valid)
        if not group_ids:
            raise click.UsageError("name at least one GROUP, or give --all-groups")
        described = {g: f.result() for g, f in admin.describe_consumer_groups(list(group_ids)).items()}
        lags = {g: admin.list_consumer_group_lag(g).result() for g in group_ids} if view is None else {}
    for i, gid in enumerate(group_ids):
        desc = described[gid]
        if i:
            click.echo("")
        if desc.state == ConsumerGroupState.DEAD:
            click.echo(f"Consumer group '{gid}' does not exist.")
            continue
        if view == "state":
            click.echo(table(["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"],
                              [[gid, f"{desc.coordinator.host} (0)", desc.partition_assignor or "",
                                STATE_NAMES[desc.state], len(desc.members)]]))
            continue
        if not desc.members:
            click.echo(f"Consumer group '{gid}' has no active members.")
            click.echo("")
        elif desc.state in (ConsumerGroupState.PREPARING_REBALANCING, ConsumerGroupState.COMPLETING_REBALANCING):
            click.echo(f"Warning: Consumer group '{gid}' is rebalancing.")
            click.echo("")
        if view == "members":
            rows = [[gid, m.member_id, m.host, m.client_id, len(m.assignment.topic_partitions)]
                    for m in desc.members]
            click.echo(table(["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"], rows))
            continue
        rows = [[gid, r.topic, r.partition, _dash(r.committed), _dash(r.log_end_offset), _dash(r.lag),
                 _dash(r.member_id), _dash(r.host), _dash(r.client_id)] for r in lags[gid]]
        click.echo(table(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                           "CONSUMER-ID", "HOST", "CLIENT-ID"], rows))


def _parse_topics(ctx, param, values):
    """--topic T or T:0,2 -> [(topic, [partitions] or None)]."""
    out = []
    for value in values:
        topic, sep, parts = value.partition(":")
        if not topic:
            raise click.BadParameter(f"{value!r}: expected TOPIC or TOPIC:P,P,...", ctx=ctx, param=param)
        try:
            out.append((topic, sorted({int(p) for p in parts.split(",")}) if sep else None))
        except ValueError:
            raise click.BadParameter(f"{value!r}: partitions must be numbers, as in {topic}:0,1", ctx=ctx,
                                     param=param) from None
    return out


def _parse_datetime(ctx, param, value):
    if value is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected YYYY-MM-DDTHH:MM:SS[.sss][+HH:MM]", ctx=ctx,
                                 param=param) from None
    if when.tzinfo is None:
        when = when.astimezone()          # local time, as kafka-consumer-groups takes it
    return int(when.timestamp() * 1000)


@groups.command("reset-offsets")
@click.argument("group_id", metavar="GROUP")
@click.option("--topic", "topics", multiple=True, callback=_parse_topics, metavar="TOPIC[:P,...]",
              help="A topic, or some of its partitions. Repeatable.")
@click.option("--all-topics", is_flag=True, help="Every topic the group has committed offsets for.")
@click.option("--to-earliest", "to", flag_value="earliest", help="Reset to each partition's log start offset.")
@click.option("--to-latest", "to", flag_value="latest", help="Reset to each partition's log end offset.")
@click.option("--to-offset", type=click.IntRange(min=0), metavar="N", help="Reset to offset N (clamped to the log).")
@click.option("--to-datetime", callback=_parse_datetime, metavar="DATETIME",
              help="Reset to the first offset with a timestamp at or after DATETIME (local time unless given).")
@click.option("--execute", is_flag=True, help="Do it; without this flag the plan is only printed.")
@click.option("--dry-run", is_flag=True, help="Only print the plan (the default).")
@data_dir_option()
def groups_reset_offsets(group_id, topics, all_topics, to, to_offset, to_datetime, execute, dry_run, data_dir):
    """Set GROUP's committed offsets; the group must have no active members."""
    targets = [t for t in (to, to_offset is not None and "offset", to_datetime is not None and "datetime") if t]
    if len(targets) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime")
    if bool(topics) == bool(all_topics):
        raise click.UsageError("give --topic (repeatable) or --all-topics")
    if execute and dry_run:
        raise click.UsageError("--execute and --dry-run exclude each other")
    with admin_client(data_dir) as admin:
        desc = admin.describe_consumer_groups([group_id])[group_id].result()
        if desc.state not in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD):
            raise Failure(f"Assignments can only be reset if the group '{group_id}' is inactive, but the current "
                          f"state is {STATE_NAMES[desc.state]}.")
        md = admin.list_topics()
        keys = []
        if all_topics:
            committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)])[group_id].result()
            keys = sorted({(tp.topic, tp.partition) for tp in committed.topic_partitions})
        for topic, parts in topics:
            if topic not in md.topics or md.topics[topic].error is not None:
                raise Failure(f"unknown topic {topic!r}")
            known = sorted(md.topics[topic].partitions)
            for p in parts if parts is not None else known:
                if p not in known:
                    raise Failure(f"topic {topic!r} has no partition {p} (it has {len(known)})")
                keys.append((topic, p))
        plan = _plan(data_dir, keys, targets[0], to_offset, to_datetime)
        if execute:
            request = [ConsumerGroupTopicPartitions(group_id, [TopicPartition(t, p, o) for (t, p), o in plan])]
            admin.alter_consumer_group_offsets(request)[group_id].result()
    click.echo(table(["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
                      [[group_id, t, p, o] for (t, p), o in plan]))
    if not execute:
        click.echo(DRY_RUN_NOTE)


def _plan(data_dir, keys, how, to_offset, to_datetime):
    """[((topic, partition), new offset)] from the partitions' current bounds."""
    from shmlog.client.consumer import Consumer
    c = Consumer({"bootstrap.servers": bootstrap(data_dir)})
    try:
        plan = []
        for t, p in keys:
            low, high = c.get_watermark_offsets(TopicPartition(t, p))
            if how == "earliest":
                new = low
            elif how == "latest":
                new = high
            elif how == "offset":
                new = min(max(to_offset, low), high)
            else:
                new = _offset_for_time(c, t, p, to_datetime, high)
            plan.append(((t, p), new))
        return plan
    finally:
        c.close()


def _offset_for_time(consumer, topic, partition, ts_ms, high):
    try:
        (found,) = consumer.offsets_for_times([TopicPartition(topic, partition, ts_ms)])
        return high if found.offset < 0 else found.offset
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NOT_IMPLEMENTED:
            raise
    # No time index in this version: read the partition until a record is that new.
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    try:
        while True:
            batch = consumer.consume(10000, timeout=0)
            if not batch:
                return high
            for m in batch:
                if m.error() is None and m.timestamp()[1] >= ts_ms:
                    return m.offset()
    finally:
        consumer.unassign()


@groups.command("delete")
@click.argument("group_ids", metavar="GROUP...", nargs=-1, required=True)
@data_dir_option()
def groups_delete(group_ids, data_dir):
    """Delete groups without active members (their committed offsets go with them)."""
    with admin_client(data_dir) as admin:
        futures = admin.delete_consumer_groups(list(group_ids))
        failed = []
        for gid, f in futures.items():
            try:
                f.result()
            except KafkaException as exc:
                name = exc.args[0].name()
                failed.append(f"* Group '{gid}' could not be deleted due to: {name} ({reason_of(exc)})")
    ok = [g for g in group_ids if g not in {f.split("'")[1] for f in failed}]
    if ok:
        click.echo("Deletion of requested consumer groups (" + ", ".join(f"'{g}'" for g in ok) + ") was successful.")
    if failed:
        raise Failure("Deletion of some consumer groups failed: " + " ".join(failed))
