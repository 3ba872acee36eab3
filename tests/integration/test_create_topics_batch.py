"""One create_topics request creating many topics: every topic is checked against the broker's
topics and those before it in the same request, a refused one leaves nothing behind, and the
topics made are written to the metadata together before any future succeeds; when that write
fails, every topic of the request is refused and undone. (How long 10,000 partitions take is a
bench, not a test: `shmlog bench-partitions`.)"""
import os

import pytest

import shmlog
from shmlog import KafkaError, KafkaException
from shmlog._native import shm

SMALL = {"ring.bytes": "65536"}


def results(futures):
    """{topic: None, or the KafkaError code its future failed with}."""
    out = {}
    for name, future in futures.items():
        try:
            future.result()
            out[name] = None
        except KafkaException as exc:
            out[name] = exc.args[0].code()
    return out


def test_each_topic_of_a_request_is_checked_against_those_before_it_and_the_made_ones_survive_a_restart(
        start_broker, data_dir):
    broker = start_broker()
    admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    futures = admin.create_topics([
        shmlog.NewTopic("a.b", 3, config=SMALL),
        shmlog.NewTopic("a_b", 1, config=SMALL),     # collides with "a.b", made just before in this request
        shmlog.NewTopic("zero", 0, config=SMALL),    # no partitions: refused by the broker
        shmlog.NewTopic("c", 2, config=SMALL),
        shmlog.NewTopic("odd", 1, config={"ring.bytes": "3"}),   # not a power of two
    ])
    assert results(futures) == {"a.b": None, "a_b": KafkaError.TOPIC_EXCEPTION,
                                "zero": KafkaError.INVALID_PARTITIONS, "c": None, "odd": KafkaError._INVALID_ARG}
    with pytest.raises(KafkaException, match="collides with existing topic 'a.b'"):
        futures["a_b"].result()
    topics = admin.list_topics().topics
    assert {name: len(topics[name].partitions) for name in ("a.b", "c")} == {"a.b": 3, "c": 2}
    assert not {"a_b", "zero", "odd"} & set(topics)
    logs = os.path.join(data_dir, "logs")
    assert sorted(d for d in os.listdir(logs) if not d.startswith("__")) == ["a.b-0", "a.b-1", "a.b-2", "c-0", "c-1"]
    ids = {name: admin.describe_topics(shmlog.TopicCollection([name]))[name].result().topic_id
           for name in ("a.b", "c")}
    assert ids["a.b"] != ids["c"]
    p = shmlog.Producer({"bootstrap.servers": broker.bootstrap_servers, "acks": "1"})
    for name, n in (("a.b", 3), ("c", 2)):
        for partition in range(n):
            p.produce(name, b"v", partition=partition)
    assert p.flush(30) == 0
    admin.close()
    broker.stop()

    broker = start_broker()   # written to the metadata before the futures succeeded
    admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    topics = admin.list_topics().topics
    assert {name: len(topics[name].partitions) for name in ("a.b", "c")} == {"a.b": 3, "c": 2}
    assert {name: admin.describe_topics(shmlog.TopicCollection([name]))[name].result().topic_id
            for name in ("a.b", "c")} == ids
    admin.close()


def test_leaders_are_balanced_over_the_log_dirs_across_the_topics_of_one_request(start_broker, data_dir):
    dirs = [os.path.join(data_dir, f"d{i}") for i in range(3)]
    broker = start_broker(log_dirs=",".join(dirs))
    admin = shmlog.AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    futures = admin.create_topics([shmlog.NewTopic(name, 1, replication_factor=1, config=SMALL)
                                   for name in ("a", "b", "c")])
    assert results(futures) == {"a": None, "b": None, "c": None}
    topics = admin.list_topics().topics
    assert sorted(topics[name].partitions[0].leader for name in ("a", "b", "c")) == [0, 1, 2]
    admin.close()


def test_when_the_metadata_cannot_be_written_every_topic_of_the_request_is_refused_and_undone(broker, admin,
                                                                                          data_dir):
    admin.create_topics([shmlog.NewTopic("before", 1, config=SMALL)])["before"].result()
    objects = set(shm.names_in_namespace(shm.namespace(data_dir)))
    logs = os.path.join(data_dir, "logs")
    dirs = set(os.listdir(logs))
    # A directory where the new copy of topics.json is written: the write fails (even as root).
    blocker = os.path.join(data_dir, "meta", "topics.json.tmp")
    os.mkdir(blocker)
    futures = admin.create_topics([shmlog.NewTopic("x", 4, config=SMALL), shmlog.NewTopic("y", 2, config=SMALL)])
    assert results(futures) == {"x": KafkaError.KAFKA_STORAGE_ERROR, "y": KafkaError.KAFKA_STORAGE_ERROR}
    assert set(shm.names_in_namespace(shm.namespace(data_dir))) == objects   # their rings unlinked
    assert set(os.listdir(logs)) == dirs                                      # their directories removed
    assert not {"x", "y"} & set(admin.list_topics().topics)

    os.rmdir(blocker)
    futures = admin.create_topics([shmlog.NewTopic("x", 4, config=SMALL), shmlog.NewTopic("y", 2, config=SMALL)])
    assert results(futures) == {"x": None, "y": None}
    topics = admin.list_topics().topics
    assert {name: len(topics[name].partitions) for name in ("before", "x", "y")} == {"before": 1, "x": 4, "y": 2}
