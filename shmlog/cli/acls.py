"""`shmlog acls`: the Kafka listener's ACLs, as kafka-acls manages them.

    shmlog acls --data-dir D --add --allow-principal User:alice --operation Read --topic orders
    shmlog acls --data-dir D --add --deny-principal User:bob --operation Write --topic orders
    shmlog acls --data-dir D --add --allow-principal User:alice --operation Read --group app- \
        --resource-pattern-type prefixed
    shmlog acls --data-dir D --list [--topic orders]
    shmlog acls --data-dir D --remove --allow-principal User:alice --operation Read --topic orders

They are written to the data dir (shmlog/broker/kafka_listener/acl_store.py) and enforced by a
running listener from its next request, when `authorizer.class.name` is set.
"""
import os

import click

from shmlog.broker.kafka_listener import acl_store as store
from shmlog.cli._common import Failure, data_dir_option


def _operation(name):
    key = name.strip().upper().replace("-", "_")
    aliases = {"DESCRIBECONFIGS": "DESCRIBE_CONFIGS", "ALTERCONFIGS": "ALTER_CONFIGS",
               "IDEMPOTENTWRITE": "IDEMPOTENT_WRITE", "CLUSTERACTION": "CLUSTER_ACTION"}
    key = aliases.get(key, key)
    if key not in store.BINDING_OPERATIONS:
        raise Failure(f"--operation {name}: use one of {', '.join(store.BINDING_OPERATIONS)}")
    return key


def _resources(topics, groups, txn_ids, cluster):
    out = [("TOPIC", t) for t in topics] + [("GROUP", g) for g in groups]
    out += [("TRANSACTIONAL_ID", t) for t in txn_ids] + ([("CLUSTER", store.CLUSTER_NAME)] if cluster else [])
    return out


def _show(bindings):
    if not bindings:
        click.echo("no ACLs")
        return
    by_resource = {}
    for b in bindings:
        by_resource.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(b)
    for (rtype, name, pattern), bs in sorted(by_resource.items()):
        click.echo(f"Current ACLs for resource `ResourcePattern(resourceType={rtype}, name={name}, "
                   f"patternType={pattern})`:")
        for b in bs:
            click.echo(f"  (principal={b.principal}, host={b.host}, operation={b.operation}, "
                       f"permissionType={b.permission})")


@click.command("acls")
@data_dir_option()
@click.option("--add", "action", flag_value="add", help="Add the ACLs described.")
@click.option("--remove", "action", flag_value="remove", help="Remove the ACLs described.")
@click.option("--list", "action", flag_value="list", help="List ACLs (of the resources given, or all).")
@click.option("--allow-principal", multiple=True, help="Principal allowed, e.g. User:alice or User:*.")
@click.option("--deny-principal", multiple=True, help="Principal denied.")
@click.option("--allow-host", multiple=True, help="Host the allowed principals may connect from (default *).")
@click.option("--deny-host", multiple=True, help="Host the denied principals are denied from (default *).")
@click.option("--operation", "operations", multiple=True, help="Operation: Read, Write, Create, Delete, Alter, "
              "Describe, DescribeConfigs, AlterConfigs, IdempotentWrite, ClusterAction, All.")
@click.option("--topic", "topics", multiple=True)
@click.option("--group", "groups", multiple=True)
@click.option("--transactional-id", "txn_ids", multiple=True)
@click.option("--cluster", is_flag=True, help="The cluster resource.")
@click.option("--resource-pattern-type", type=click.Choice(["literal", "prefixed", "any", "match"],
                                                           case_sensitive=False), default=None,
              help="literal (default for --add) or prefixed; --list/--remove also take any and match.")
def acls(data_dir, action, allow_principal, deny_principal, allow_host, deny_host, operations, topics, groups,
         txn_ids, cluster, resource_pattern_type):
    """Add, remove or list the Kafka listener's ACLs (kafka-acls)."""
    data_dir = os.path.realpath(data_dir)
    if not os.path.isdir(data_dir):
        raise Failure(f"{data_dir} is not a directory")
    if action is None:
        raise Failure("give one of --add, --remove, --list")
    resources = _resources(topics, groups, txn_ids, cluster)
    pattern = (resource_pattern_type or ("literal" if action == "add" else "any")).upper()
    ops = [_operation(o) for o in operations]
    try:
        if action == "list":
            filters = [store.Filter(resource_type=t, resource_name=n, pattern_type=pattern) for t, n in resources]
            found = [b for b in store.load(data_dir) if not filters or any(f.matches(b) for f in filters)]
            _show(found)
            return
        grants = [(p, h, "ALLOW") for p in allow_principal for h in (allow_host or ("*",))]
        grants += [(p, h, "DENY") for p in deny_principal for h in (deny_host or ("*",))]
        if action == "add":
            if not resources or not grants or not ops:
                raise Failure("--add needs a resource (--topic, --group, --transactional-id, --cluster), "
                              "--allow-principal or --deny-principal, and --operation")
            new = [store.Binding(t, n, pattern, p, h, op, perm) for t, n in resources for p, h, perm in grants
                   for op in ops]
            store.add(data_dir, new)
            click.echo(f"added {len(new)} ACL(s)")
            _show(new)
            return
        if not resources:
            raise Failure("--remove needs a resource (--topic, --group, --transactional-id, --cluster)")
        filters = [store.Filter(resource_type=t, resource_name=n, pattern_type=pattern, principal=p,
                                host=None if h == "*" and not (allow_host or deny_host) else h,
                                operation=op, permission=perm)
                   for t, n in resources for p, h, perm in (grants or [(None, "*", "ANY")])
                   for op in (ops or ["ANY"])]
        removed = {b for group in store.remove(data_dir, filters) for b in group}
        click.echo(f"removed {len(removed)} ACL(s)")
        _show(sorted(removed, key=str))
    except store.BadAcl as exc:
        raise Failure(str(exc)) from None
