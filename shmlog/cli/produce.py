"""`shmlog produce TOPIC`: lines on stdin -> records, as kcat -P and kafka-console-producer.

    shmlog produce TOPIC [-K SEP | -k KEY] [-H name=value ...] [-p PARTITION] [-Z] [--acks A] [-X K=V ...]
"""
import collections
import sys

import click

from shmlog.cli._common import Failure, bootstrap, config_option, data_dir_option, parse_pairs
from shmlog.client.producer import Producer
from shmlog.config import parse_producer_config
from shmlog.errors import KafkaError, KafkaException, reason_of

# Errors after which every further record would fail the same way: stop reading stdin.
FATAL_PRODUCE_CODES = frozenset({
    KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT, KafkaError._STATE, KafkaError._FATAL, KafkaError._INVALID_ARG})


@click.command()
@click.argument("topic")
@data_dir_option()
@click.option("--key-separator", "-K", metavar="SEP",
              help="Split each line at the first SEP into key and value (a line without SEP has no key).")
@click.option("--key", "-k", "fixed_key", metavar="KEY", help="The key of every record (kcat -k).")
@click.option("--header", "-H", "headers", multiple=True, metavar="NAME=VALUE", callback=parse_pairs,
              help="A header added to every record. Repeatable.")
@click.option("--partition", "-p", type=click.IntRange(min=0), metavar="P",
              help="Produce to partition P (default: the partitioner picks, by key).")
@click.option("--null-empty", "-Z", is_flag=True,
              help="An empty value (or an empty key before -K's SEP) is sent as null, not as empty (kcat -Z).")
@click.option("--acks", type=click.Choice(["0", "1", "all", "-1"]),
              help="When a record counts as delivered (default: the producer's, all).")
@config_option("A producer config (linger.ms=0, max.block.ms=1000, compression.type=lz4, ...). Repeatable.")
def produce(topic, data_dir, key_separator, fixed_key, headers, partition, null_empty, acks, configs):
    """Read lines from stdin and produce one record per line to TOPIC."""
    conf = dict(configs)
    conf["bootstrap.servers"] = bootstrap(data_dir)
    if acks is not None:
        conf["acks"] = acks
    timeout_s = parse_producer_config(conf).message_timeout_ms / 1000.0
    if key_separator == "":
        raise click.BadParameter("must not be empty", param_hint="'--key-separator'")
    if key_separator is not None and fixed_key is not None:
        raise click.UsageError("--key-separator and --key are mutually exclusive")
    sep = key_separator.encode() if key_separator is not None else None
    key_bytes = fixed_key.encode() if fixed_key is not None else None
    if null_empty and key_bytes == b"":
        key_bytes = None
    header_list = [(k, v.encode()) for k, v in headers] or None

    producer = Producer(conf)
    delivered = [0]
    failed = collections.Counter()

    def on_delivery(err, msg):
        if err is None:
            delivered[0] += 1
        else:
            failed[reason_of(err)] += 1

    produced = 0
    fatal = None
    kwargs = {"partition": partition} if partition is not None else {}
    try:
        for raw in iter(sys.stdin.buffer.readline, b""):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if line.endswith(b"\r"):
                line = line[:-1]
            key, value = key_bytes, line
            if sep is not None:
                k, found, v = line.partition(sep)
                if found:
                    key, value = k, v
                    if null_empty and not key:
                        key = None
            if null_empty and not value:
                value = None
            while True:
                try:
                    producer.produce(topic, value, key, headers=header_list, on_delivery=on_delivery, **kwargs)
                    produced += 1
                    break
                except BufferError:
                    producer.poll(0.1)  # local queue full: serve delivery reports, then retry
                except KafkaException as exc:
                    produced += 1
                    if exc.args[0].code() in FATAL_PRODUCE_CODES:
                        fatal = exc
                    else:
                        failed[reason_of(exc)] += 1
                    break
            if fatal is not None:
                break
            producer.poll(0)
    except KeyboardInterrupt:
        pass  # like end of input: deliver what was read, then report
    remaining = producer.flush(timeout_s)
    if remaining:
        failed[f"not acknowledged within message.timeout.ms ({timeout_s:g} s)"] += remaining
    try:
        producer.close(0)
    except KafkaException:
        pass
    if fatal is not None:
        raise Failure(f"{fatal}" + (f" (after {delivered[0]} records delivered)" if delivered[0] else ""))
    if failed:
        reasons = "; ".join(f"{reason}" + (f" (x{n})" if n > 1 else "") for reason, n in failed.most_common(3))
        more = len(failed) - 3
        raise Failure(f"delivered {delivered[0]} of {produced} records to {topic}; {sum(failed.values())} failed: "
                      f"{reasons}" + (f"; and {more} other errors" if more > 0 else ""))
    click.echo(f"delivered {delivered[0]} record{'s' if delivered[0] != 1 else ''} to {topic}", err=True)
