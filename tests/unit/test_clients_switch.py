"""shmlog.clients: which client library a bootstrap.servers string is for (the one place that decides)."""
import pytest

from shmlog import clients


@pytest.mark.parametrize("servers", ["shm:///var/tmp/data", "/var/tmp/data", "shm:///a,shm:///b"])
def test_a_shmlog_bootstrap_picks_shmlogs_own_clients(servers):
    assert not clients.is_kafka(servers)
    assert clients.library({"bootstrap.servers": servers}).__name__ == "shmlog"


@pytest.mark.parametrize("servers", ["localhost:9092", "10.0.0.1:9092,10.0.0.2:9092", "kafka-1.example:9093",
                                     "PLAINTEXT://broker:9092", "[::1]:9092"])
def test_a_host_port_list_picks_the_kafka_clients(servers):
    assert clients.is_kafka(servers)
    assert clients.library({"bootstrap.servers": servers}).__name__ == "shmlog.client.kafka"


@pytest.mark.parametrize("servers", ["localhost", "data/dir", "host:0", "host:99999", "http://x", "a:1,/dir",
                                     "tcp://localhost:9092"])
def test_anything_else_is_refused_naming_both_forms(servers):
    with pytest.raises(ValueError, match="names neither a shmlog broker .* nor a Kafka cluster"):
        clients.is_kafka(servers)


def test_a_missing_bootstrap_is_refused():
    with pytest.raises(ValueError, match="bootstrap.servers is missing"):
        clients.library({})
