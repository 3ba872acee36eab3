"""`shmlog transactions list | describe | abort` against a real broker (as kafka-transactions.sh)."""
import pytest

from shmlog import KafkaException, Producer
from tests.conftest import create_topic
from tests.integration.test_cli import ok, shmlog_cli
from tests.integration.test_transactions import read_all

pytestmark = pytest.mark.timeout(120)


def test_an_open_transaction_is_listed_described_and_can_be_aborted(conf, admin, data_dir):
    create_topic(admin, "t")
    p = Producer({**conf, "transactional.id": "hanging"})
    p.init_transactions()
    p.begin_transaction()
    p.produce("t", b"never-committed")
    p.flush()
    listed = ok(shmlog_cli("transactions", "list", "--data-dir", data_dir)).stdout.splitlines()
    assert listed[0].split() == ["TransactionalId", "Coordinator", "ProducerId", "TransactionState"]
    assert listed[1].split()[0] == "hanging" and listed[1].split()[3] == "Ongoing"
    described = ok(shmlog_cli("transactions", "describe", "--transactional-id", "hanging", "--data-dir", data_dir))
    row = described.stdout.splitlines()[1].split()
    assert row[1] == "hanging" and row[4] == "Ongoing" and row[-1] == "t-0"
    ok(shmlog_cli("transactions", "abort", "--transactional-id", "hanging", "--data-dir", data_dir))
    assert read_all(conf, "t") == []
    with pytest.raises(KafkaException) as caught:
        p.commit_transaction()
    assert caught.value.args[0].fatal()          # the producer that left it open is fenced
    p.close()
    listed = ok(shmlog_cli("transactions", "list", "--data-dir", data_dir)).stdout.splitlines()
    assert listed[1].split()[3] == "CompleteAbort"


def test_aborting_or_describing_an_unknown_transactional_id_fails_with_a_clear_message(broker, data_dir):
    for args in (("abort",), ("describe",)):
        result = shmlog_cli("transactions", *args, "--transactional-id", "nobody", "--data-dir", data_dir)
        assert result.returncode == 1 and "no transactional id 'nobody'" in result.stderr
