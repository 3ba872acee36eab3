"""What every `shmlog` command group shares: how a command names its broker (--data-dir,
$SHMLOG_DATA_DIR, --bootstrap), the one-line failure and its exit statuses, tables, and how
an error is printed.

The command groups (app.py, topics.py, produce.py, consume.py, metadata.py, groups.py,
schemas.py, bench.py, log.py) import from here, and app.py registers them; none of them
imports app.py.
"""
import contextlib
import os
import re
import sys

import click

from shmlog.client.admin import AdminClient
from shmlog.control import SCHEME

ENV_DATA_DIR = "SHMLOG_DATA_DIR"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Failure(click.ClickException):
    """A runtime failure: printed as one line by shmlog.cli.app.main, exit status 1."""
    exit_code = EXIT_FAILURE


def print_error(message, prog="shmlog"):
    """`PROG: error: MESSAGE` on stderr, on one line whatever the message held."""
    message = " ".join(str(message).split())
    try:
        click.echo(f"{prog}: error: {message}", err=True)
    except OSError:
        pass


# ---------------------------------------------------------------------------- naming the broker

def bootstrap(data_dir):
    """The bootstrap.servers of the broker of data_dir."""
    return SCHEME + os.path.realpath(data_dir)


def data_dir_option(required=True):
    """--data-dir DIR (default: $SHMLOG_DATA_DIR); an empty value is a usage error, and so is
    none at all when required."""
    def check(ctx, param, value):
        if value is not None and not value.strip():
            raise click.BadParameter("must not be empty", ctx=ctx, param=param)
        if required and not value:
            raise click.UsageError(f"Missing option '--data-dir' (or set {ENV_DATA_DIR})")
        return value
    return click.option("--data-dir", "data_dir", envvar=ENV_DATA_DIR, metavar="DIR", callback=check,
                        help=f"The broker's data directory (default: ${ENV_DATA_DIR}).")


def bootstrap_option(help_text, kafka_too=False):
    """--bootstrap shm:///DIR: a broker's bootstrap.servers, or a bare data dir (None when not given).
    kafka_too: a Kafka cluster's host:port[,host:port] is taken as it is (shmlog.clients decides)."""
    def check(ctx, param, value):
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise click.BadParameter("must not be empty", ctx=ctx, param=param)
        if kafka_too and not value.startswith(("/", SCHEME)):
            from shmlog import clients
            try:
                if clients.is_kafka(value):
                    return value
            except ValueError:
                pass
        if not value.startswith(SCHEME):
            if "://" in value:
                raise click.BadParameter(f"{value!r}: a shmlog broker's bootstrap.servers starts with {SCHEME}",
                                         ctx=ctx, param=param)
            value = SCHEME + value     # a bare data dir, as `--data-dir` elsewhere
        return value
    return click.option("--bootstrap", callback=check, metavar="shm:///DIR|HOST:PORT" if kafka_too else "shm:///DIR",
                        help=help_text)


@contextlib.contextmanager
def admin_client(data_dir):
    """An AdminClient of the broker of data_dir, closed on exit."""
    client = AdminClient({"bootstrap.servers": bootstrap(data_dir)})
    try:
        yield client
    finally:
        client.close()


# ---------------------------------------------------------------------------- output

# A cell that reads as a number (or as none of one): 12, 3.5, -4, 87.5%, <0.1%, and "-".
_NUMERIC = re.compile(r"-|[<-]?[\d.]+%?")


def table(headers, rows, align_numbers=True):
    """Text columns two spaces apart, left-aligned; with align_numbers, a column whose every
    non-empty cell reads as a number is right-aligned (header included)."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [align_numbers and bool(rows) and all(_NUMERIC.fullmatch(r[i] or "0") for r in rows)
               for i in range(len(headers))]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()
    return "\n".join([line(headers)] + [line(r) for r in rows])


# ---------------------------------------------------------------------------- options and output shared by commands

def parse_pairs(ctx, param, values):
    """`--config key=value` / `--header k=v`, repeatable, in the order given."""
    pairs = []
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", ctx=ctx, param=param)
        pairs.append((key, value))
    return pairs


def config_option(help_text):
    """--config/-X KEY=VALUE, repeatable: a list of (key, value)."""
    return click.option("--config", "-X", "configs", multiple=True, metavar="KEY=VALUE", callback=parse_pairs,
                        help=help_text)


def quiet_stdout():
    """After EPIPE, point stdout at /dev/null so the interpreter's exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
