"""`shmlog streams ...`: look at and run a shmlog.streams application.

    shmlog streams describe MODULE:APP      the topology: sources, steps, stores, internal topics
    shmlog streams run MODULE:APP -w 2      run it with 2 worker processes until Ctrl-C

MODULE:APP names the App object as `uvicorn` or `faust` do: a module importable from the
current directory (or --path DIR) and the attribute holding the App.
"""
import importlib
import sys

import click

from shmlog.cli._common import Failure


def _load(target, path):
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{target!r}: expected MODULE:APP, e.g. vwap:app", param_hint="MODULE:APP")
    sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Failure(f"cannot import {module_name!r} (from {path}): {exc}") from None
    finally:
        sys.path.remove(path)
    from shmlog.streams import App
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise Failure(f"{module_name}.{attribute} is not a shmlog.streams.App ({type(app).__name__})")
    return app


_path_option = click.option("--path", default=".", show_default=True, metavar="DIR",
                            help="Where to import MODULE from.")


@click.group()
def streams():
    """Describe and run shmlog.streams applications (docs/streams.md)."""


@streams.command("describe")
@click.argument("target", metavar="MODULE:APP")
@_path_option
def streams_describe(target, path):
    """Print the topology of the App at MODULE:APP."""
    click.echo(_load(target, path).describe())


@streams.command("run")
@click.argument("target", metavar="MODULE:APP")
@_path_option
@click.option("-w", "--workers", default=1, show_default=True, type=click.IntRange(1), help="Worker processes.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1),
              help="Most records per batch (and per commit or transaction).")
def streams_run(target, path, workers, batch_size):
    """Run the App at MODULE:APP until Ctrl-C or SIGTERM; prints what it processed."""
    stats = _load(target, path).run(workers=workers, batch_size=batch_size)
    click.echo(f"processed {stats['processed']} records, {stats['restarts']} worker restarts")
