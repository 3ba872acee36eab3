"""`shmlog transactions ...`: kafka-transactions for a shmlog broker.

    shmlog transactions list
    shmlog transactions describe --transactional-id ID
    shmlog transactions abort --transactional-id ID

`list` and `describe` print kafka-transactions.sh's columns (the coordinator is always broker
0). `abort` aborts an open transaction by its transactional id (Kafka's tool names the hanging
partition and producer instead: here the coordinator knows every open transaction by id); the
epoch is bumped, so the producer that left it open is fenced, as when it times out.
"""
import click

from shmlog.cli._common import Failure, admin_client, data_dir_option, table
from shmlog.errors import KafkaException


def _request(data_dir, op, **fields):
    with admin_client(data_dir) as admin:
        try:
            return admin._cluster.control.request(op, **fields)
        except KafkaException as exc:
            raise Failure(str(exc)) from None


@click.group()
def transactions():
    """List, describe and abort transactions (as kafka-transactions)."""


@transactions.command("list")
@data_dir_option()
def transactions_list(data_dir):
    """Every transactional id the coordinator knows, with its producer id and state."""
    rows = [[t["transactional_id"], 0, t["producer_id"], t["state"]]
            for t in _request(data_dir, "list_transactions")["transactions"]]
    click.echo(table(["TransactionalId", "Coordinator", "ProducerId", "TransactionState"], rows))


@transactions.command("describe")
@click.option("--transactional-id", "transactional_id", required=True, help="The transactional id.")
@data_dir_option()
def transactions_describe(transactional_id, data_dir):
    """One transactional id: producer id and epoch, state, timeout, the open transaction's partitions."""
    (t,) = _request(data_dir, "describe_transactions", transactional_ids=[transactional_id])["transactions"]
    if "error" in t:
        raise Failure(t["message"])
    start = t["transaction_start_ms"]
    click.echo(table(
        ["CoordinatorId", "TransactionalId", "ProducerId", "ProducerEpoch", "TransactionState",
         "TransactionTimeoutMs", "CurrentTransactionStartTimeMs", "TransactionDurationMs", "TopicPartitions"],
        [[0, t["transactional_id"], t["producer_id"], t["producer_epoch"], t["state"], t["transaction_timeout_ms"],
          start if start >= 0 else "None", t["transaction_duration_ms"] if start >= 0 else "None",
          ",".join(f"{topic}-{p}" for topic, p in t["partitions"])]]))


@transactions.command("abort")
@click.option("--transactional-id", "transactional_id", required=True, help="The transactional id.")
@data_dir_option()
def transactions_abort(transactional_id, data_dir):
    """Abort the open transaction of a transactional id (its producer is fenced)."""
    _request(data_dir, "abort_transaction", transactional_id=transactional_id)
    click.echo(f"Aborted the open transaction of transactional id {transactional_id!r}")
