"""`shmlog connect run WORKER_CONFIG CONNECTOR_CONFIG...`: Kafka Connect in standalone mode.

As connect-standalone: the first file is the worker config (bootstrap.servers, converters,
offset.storage.topic, ...), each further file one connector's config; .properties or .json
(docs/connect.md). Runs until Ctrl-C or SIGTERM, then every task commits and stops.
"""
import logging
import signal
import threading

import click

from shmlog.cli._common import Failure


@click.group()
def connect():
    """Kafka Connect: move data between topics and files or SQL databases (docs/connect.md)."""


@connect.command("run")
@click.argument("worker_config", type=click.Path(dir_okay=False))
@click.argument("connector_configs", nargs=-1, required=True, type=click.Path(dir_okay=False))
def connect_run(worker_config, connector_configs):
    """Run connectors in standalone mode: WORKER_CONFIG then one file per connector."""
    from shmlog.connect.api import ConnectException
    from shmlog.connect.config import load_config_file
    from shmlog.connect.worker import Worker
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        worker = Worker(load_config_file(worker_config), [load_config_file(p) for p in connector_configs])
    except ConnectException as exc:
        raise Failure(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        worker.start()
    except ConnectException as exc:
        worker.stop()
        worker.join()
        raise Failure(str(exc)) from None
    for cfg in worker.configs:
        n = sum(1 for (name, _) in worker.tasks if name == cfg.name)
        click.echo(f"connector {cfg.name}: {n} task{'s' if n != 1 else ''} started", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        worker.stop()
        worker.join()
    click.echo("stopped: every task committed", err=True)
