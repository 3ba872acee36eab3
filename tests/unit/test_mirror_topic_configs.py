"""Which topic configs the mirror copies (shmlog/bridge/topic_configs.py)."""
from shmlog.admin import ConfigEntry, ConfigSource
from shmlog.bridge.topic_configs import changed, copied


def entries(**given):
    """ConfigEntry objects as describe_configs gives them: (value, source) per key (dots as '_')."""
    return {k.replace("_", "."): ConfigEntry(k.replace("_", "."), value, source=source)
            for k, (value, source) in given.items()}


SET, DEFAULT = ConfigSource.DYNAMIC_TOPIC_CONFIG, ConfigSource.DEFAULT_CONFIG


def test_only_keys_set_on_the_source_topic_are_copied():
    source = entries(cleanup_policy=("compact", SET), retention_ms=("604800000", DEFAULT))
    assert copied(source, target_is_kafka=True) == ({"cleanup.policy": "compact"}, [])


def test_mirrormaker_2s_excluded_keys_are_never_copied_nor_reported_as_dropped():
    source = entries(min_insync_replicas=("2", SET), message_timestamp_type=("LogAppendTime", SET),
                     unclean_leader_election_enable=("true", SET), segment_bytes=("1048576", SET))
    assert copied(source, target_is_kafka=False) == ({"segment.bytes": "1048576"}, [])


def test_shmlogs_own_keys_are_dropped_for_a_kafka_cluster_and_kept_for_a_shmlog_broker():
    source = entries(ring_bytes=("1048576", SET), retention_ms=("1000", SET))
    assert copied(source, target_is_kafka=True) == ({"retention.ms": "1000"}, ["ring.bytes"])
    assert copied(source, target_is_kafka=False) == ({"retention.ms": "1000", "ring.bytes": "1048576"}, [])


def test_keys_a_shmlog_broker_does_not_know_are_dropped_for_it():
    source = entries(remote_storage_enable=("true", SET), retention_ms=("1000", SET))
    assert copied(source, target_is_kafka=False) == ({"retention.ms": "1000"}, ["remote.storage.enable"])


def test_only_values_that_differ_on_the_target_or_are_missing_there_are_set():
    target = entries(retention_ms=("1000", SET), cleanup_policy=("delete", DEFAULT))
    wanted = {"retention.ms": "1000", "cleanup.policy": "compact", "segment.ms": "60000"}
    assert changed(wanted, target) == {"cleanup.policy": "compact", "segment.ms": "60000"}
