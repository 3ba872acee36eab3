"""`shmlog metadata -L`: the broker, its topics and their partitions, as kcat -L (and -J).

    shmlog metadata [-L] [-J] [-t TOPIC]
"""
import json

import click

from shmlog.cli._common import Failure, bootstrap, data_dir_option
from shmlog.client.consumer import Consumer
from shmlog.message import TopicPartition


@click.command()
@click.option("--list", "-L", "listing", is_flag=True, help="List metadata (the default; as kcat -L).")
@click.option("--json", "-J", "as_json", is_flag=True, help="Print it as one JSON document, as kcat -L -J.")
@click.option("--topic", "-t", metavar="TOPIC", help="Only this topic (default: every topic).")
@data_dir_option()
def metadata(listing, as_json, topic, data_dir):
    """Show the broker, topics, partitions with leader, replicas, in-sync replicas and offsets."""
    servers = bootstrap(data_dir)
    consumer = Consumer({"bootstrap.servers": servers})
    try:
        md = consumer.list_topics(topic)
        if topic is not None and md.topics[topic].error is not None:
            raise Failure(str(md.topics[topic].error))
        topics = []
        for name in sorted(md.topics):
            t = md.topics[name]
            parts = []
            for p in sorted(t.partitions):
                pm = t.partitions[p]
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p))
                parts.append({"partition": p, "leader": pm.leader, "replicas": [{"id": r} for r in pm.replicas],
                              "isrs": [{"id": r} for r in pm.isrs], "low": low, "high": high})
            topics.append({"topic": name, "partitions": parts})
    finally:
        consumer.close()
    doc = {"originating_broker": {"id": 0, "name": servers}, "query": {"topic": topic or "*"},
           "controllerid": 0, "brokers": [{"id": 0, "name": servers}], "topics": topics}
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(f"Metadata for {'all topics' if topic is None else topic} (from broker 0: {servers}):")
    click.echo(" 1 brokers:")
    click.echo(f"  broker 0 at {servers} (controller)")
    click.echo(f" {len(topics)} topics:")
    for t in topics:
        n = len(t["partitions"])
        click.echo(f'  topic "{t["topic"]}" with {n} partition{"s" if n != 1 else ""}:')
        for p in t["partitions"]:
            click.echo(f'    partition {p["partition"]}, leader {p["leader"]}, replicas: '
                       + ",".join(str(r["id"]) for r in p["replicas"]) + ", isrs: "
                       + ",".join(str(r["id"]) for r in p["isrs"]) + f', offsets: {p["low"]}..{p["high"]}')
