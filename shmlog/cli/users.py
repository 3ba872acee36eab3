"""`shmlog users ...`: the SASL users of a broker's Kafka listener (kafka-configs --entity-type
users for SCRAM credentials). Credentials are stored salted in the data dir
(shmlog/broker/kafka_listener/sasl.py); the listener reads them on each authentication.

    shmlog users set NAME [--mechanism SCRAM-SHA-256 ...] [--iterations N]   (password on stdin)
    shmlog users delete NAME
    shmlog users list
"""
import os
import sys

import click

from shmlog.broker.kafka_listener import sasl
from shmlog.cli._common import Failure, data_dir_option


def _data_dir(data_dir):
    path = os.path.realpath(data_dir)
    if not os.path.isdir(path):
        raise Failure(f"{data_dir} is not a directory")
    return path


@click.group()
def users():
    """SASL users of the Kafka listener (SCRAM credentials, also used for PLAIN)."""


@users.command("set")
@click.argument("name")
@data_dir_option()
@click.option("--mechanism", "mechanisms", multiple=True, type=click.Choice(sorted(sasl.MECHANISMS)),
              help="SCRAM mechanism to store a credential for; repeatable (default: both).")
@click.option("--iterations", type=click.IntRange(min=sasl.MIN_ITERATIONS), default=sasl.DEFAULT_ITERATIONS,
              show_default=True)
def users_set(name, data_dir, mechanisms, iterations):
    """Set NAME's password, read from stdin (one line), as salted SCRAM credentials."""
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise Failure("no password on stdin")
    try:
        sasl.set_user(_data_dir(data_dir), name, password, mechanisms or tuple(sasl.MECHANISMS), iterations)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    click.echo(f"set {', '.join(mechanisms or sasl.MECHANISMS)} credentials for user {name}")


@users.command("delete")
@click.argument("name")
@data_dir_option()
def users_delete(name, data_dir):
    """Remove NAME's credentials."""
    if not sasl.delete_user(_data_dir(data_dir), name):
        raise Failure(f"no user {name}")
    click.echo(f"deleted user {name}")


@users.command("list")
@data_dir_option()
def users_list(data_dir):
    """Users and the mechanisms they have credentials for."""
    for name, creds in sorted(sasl.load(_data_dir(data_dir)).items()):
        click.echo(f"{name}\t{','.join(sorted(creds))}")
