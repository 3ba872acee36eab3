"""shmlog.config: key resolution, defaults, value checks and error messages."""

import logging
import pathlib

import pytest

from shmlog.config import (
    BROKER_KEYS,
    CLIENT_KEYS,
    TOPIC_DEFAULTS,
    TOPIC_KEYS,
    effective_topic_config,
    parse_admin_config,
    parse_broker_config,
    parse_consumer_config,
    parse_producer_config,
    parse_topic_config,
)
from shmlog.errors import KafkaError, KafkaException

BOOT = {"bootstrap.servers": "shm:///tmp/shmlog-test"}


def producer(extra=None):
    return parse_producer_config({**BOOT, **(extra or {})})


def consumer(extra=None):
    return parse_consumer_config({**BOOT, "group.id": "g", **(extra or {})})


def rejection(parse, conf):
    with pytest.raises(KafkaException) as caught:
        parse(conf)
    return caught.value


def message(parse, conf):
    return rejection(parse, conf).args[0].str()


# --- aliases and precedence ----------------------------------------------------------

@pytest.mark.parametrize("parse, alias, canonical_attr, given, expected", [
    (producer, "request.required.acks", "acks", "1", 1),
    (producer, "queue.buffering.max.ms", "linger_ms", 20, 20.0),
    (producer, "compression.codec", "compression_type", "gzip", "gzip"),
    (producer, "delivery.timeout.ms", "message_timeout_ms", 1000, 1000),
    (producer, "message.send.max.retries", "retries", 3, 3),
    (consumer, "fetch.message.max.bytes", "max_partition_fetch_bytes", 2048, 2048),
    (consumer, "fetch.max.wait.ms", "fetch_wait_max_ms", 50, 50),
    (consumer, "auto.commit.enable", "enable_auto_commit", False, False),
])
def test_an_alias_sets_its_canonical_key(parse, alias, canonical_attr, given, expected):
    assert getattr(parse({alias: given}), canonical_attr) == expected


def test_metadata_broker_list_is_an_alias_of_bootstrap_servers():
    cfg = parse_producer_config({"metadata.broker.list": "shm:///x"})
    assert cfg.bootstrap_servers == "shm:///x"


def test_when_alias_comes_last_in_dict_order_the_alias_wins():
    assert producer({"linger.ms": 1, "queue.buffering.max.ms": 2}).linger_ms == 2


def test_when_canonical_comes_last_in_dict_order_the_canonical_wins():
    assert producer({"queue.buffering.max.ms": 2, "linger.ms": 1}).linger_ms == 1


def test_get_finds_a_value_by_alias_too():
    cfg = producer({"acks": 0})
    assert cfg.get("request.required.acks") == cfg.get("acks") == 0


def test_attribute_names_are_canonical_keys_with_dots_replaced_by_underscores():
    cfg = producer({"batch.size": 4096})
    assert cfg.batch_size == cfg.get("batch.size") == cfg.as_dict()["batch.size"] == 4096


def test_explicit_holds_canonical_names_of_the_keys_given():
    cfg = producer({"queue.buffering.max.ms": 1})
    assert cfg.explicit == {"bootstrap.servers", "linger.ms"}


# --- defaults --------------------------------------------------------------------------

@pytest.mark.parametrize("attr, default", [
    ("acks", -1), ("linger_ms", 5), ("batch_size", 1_000_000), ("batch_num_messages", 10_000),
    ("queue_buffering_max_messages", 100_000), ("queue_buffering_max_kbytes", 1_048_576),
    ("message_max_bytes", 1_000_000), ("max_request_size", 1_048_576),
    ("buffer_memory", 33_554_432), ("max_block_ms", 60_000), ("message_timeout_ms", 300_000),
    ("enable_idempotence", True), ("compression_type", "none"), ("transactional_id", None),
    ("partitioner", "murmur2_random"), ("on_delivery", None), ("shmlog_busy_poll", False),
    ("shmlog_claim_timeout_ms", 2000),
])
def test_producer_defaults_follow_librdkafka_and_the_brief(attr, default):
    assert getattr(producer(), attr) == default


@pytest.mark.parametrize("attr, default", [
    ("fetch_max_bytes", 52_428_800), ("max_partition_fetch_bytes", 1_048_576),
    ("auto_offset_reset", "latest"), ("enable_auto_commit", True),
    ("auto_commit_interval_ms", 5000), ("session_timeout_ms", 45_000),
    ("heartbeat_interval_ms", 3000), ("max_poll_interval_ms", 300_000), ("check_crcs", False),
    ("isolation_level", "read_committed"), ("partition_assignment_strategy", ("range", "roundrobin")),
    ("max_poll_records", 500), ("enable_partition_eof", False), ("enable_auto_offset_store", True),
    ("on_commit", None),
])
def test_consumer_defaults_follow_librdkafka_and_the_brief(attr, default):
    assert getattr(consumer(), attr) == default


def test_a_producer_config_has_no_consumer_only_attributes():
    assert not hasattr(producer(), "group_id")


# --- integer values ----------------------------------------------------------------------

def test_integers_given_as_strings_are_accepted():
    assert producer({"batch.num.messages": " 500 "}).batch_num_messages == 500


@pytest.mark.parametrize("given", ["all", "ALL", -1, "-1"])
def test_acks_all_and_minus_one_both_mean_minus_one(given):
    assert producer({"acks": given}).acks == -1


@pytest.mark.parametrize("given", [2, "2", -2, "most"])
def test_acks_other_than_0_1_and_all_is_rejected(given):
    text = message(parse_producer_config, {**BOOT, "acks": given})
    assert '"acks"' in text and "-1..1 or all" in text


def test_integer_out_of_range_is_rejected_naming_key_value_and_range():
    text = message(parse_producer_config, {**BOOT, "batch.num.messages": 0})
    assert text == ('Invalid value 0 for configuration property "batch.num.messages": '
                    "expected an integer in 1..1000000")


def test_text_that_is_not_a_number_is_rejected_for_an_integer_key():
    text = message(parse_consumer_config, {**BOOT, "session.timeout.ms": "soon"})
    assert '"soon"' in text and '"session.timeout.ms"' in text


def test_a_bool_is_rejected_for_an_integer_key():
    assert '"batch.size"' in message(parse_producer_config, {**BOOT, "batch.size": True})


def test_a_fractional_number_is_rejected_for_an_integer_key():
    assert "1.5" in message(parse_producer_config, {**BOOT, "batch.size": 1.5})


def test_a_whole_float_is_accepted_for_an_integer_key():
    assert producer({"batch.size": 2048.0}).batch_size == 2048


def test_linger_ms_accepts_fractions_as_librdkafka_does():
    assert producer({"linger.ms": "0.5"}).linger_ms == 0.5


def test_linger_ms_out_of_range_is_rejected_naming_the_range():
    assert "0..900000" in message(parse_producer_config, {**BOOT, "linger.ms": -1})


def test_a_bad_value_given_by_alias_names_the_alias_and_its_canonical_key():
    text = message(parse_producer_config, {**BOOT, "queue.buffering.max.ms": "x"})
    assert '"queue.buffering.max.ms" (alias of "linger.ms")' in text


# --- booleans, strings, enums, lists -----------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    (True, True), (False, False), ("true", True), ("FALSE", False), ("t", True), ("f", False),
    ("1", True), ("0", False), (1, True), (0, False),
])
def test_bool_keys_accept_the_spellings_librdkafka_accepts(given, expected):
    assert producer({"enable.idempotence": given}).enable_idempotence is expected


@pytest.mark.parametrize("given", ["yes", 2, 0.5, []])
def test_a_bad_bool_is_rejected_naming_the_accepted_values(given):
    text = message(parse_consumer_config, {**BOOT, "check.crcs": given})
    assert '"check.crcs"' in text and "true or false" in text


def test_a_string_key_rejects_a_dict():
    assert '"group.id"' in message(parse_consumer_config, {**BOOT, "group.id": {"a": 1}})


def test_a_string_key_accepts_a_number_as_confluent_kafka_passes_it_on():
    assert consumer({"group.id": 7}).group_id == "7"


def test_enum_values_are_case_insensitive_and_normalized():
    assert producer({"compression.type": "ZSTD"}).compression_type == "zstd"


def test_a_bad_enum_value_lists_the_accepted_values():
    text = message(parse_producer_config, {**BOOT, "partitioner": "crc"})
    assert '"crc"' in text and "murmur2_random" in text and "fnv1a" in text


@pytest.mark.parametrize("given, expected", [
    ("smallest", "earliest"), ("beginning", "earliest"), ("earliest", "earliest"),
    ("largest", "latest"), ("end", "latest"), ("latest", "latest"), ("error", "error"),
])
def test_auto_offset_reset_synonyms_are_normalized(given, expected):
    assert consumer({"auto.offset.reset": given}).auto_offset_reset == expected


@pytest.mark.parametrize("given", ["roundrobin, range", ["roundrobin", "range"]])
def test_assignment_strategy_takes_a_comma_list_or_a_list_and_keeps_the_order(given):
    cfg = consumer({"partition.assignment.strategy": given})
    assert cfg.partition_assignment_strategy == ("roundrobin", "range")


def test_mixing_cooperative_and_eager_assignors_is_rejected():
    text = message(parse_consumer_config,
                   {**BOOT, "partition.assignment.strategy": "range,cooperative-sticky"})
    assert "must not be mixed" in text


def test_an_unknown_assignor_is_rejected_listing_the_known_ones():
    text = message(parse_consumer_config, {**BOOT, "partition.assignment.strategy": "sticky"})
    assert "cooperative-sticky" in text


def test_none_as_a_value_means_the_default():
    cfg = producer({"linger.ms": None})
    assert cfg.linger_ms == 5 and "linger.ms" not in cfg.explicit


# --- unknown keys and malformed input ------------------------------------------------------

def test_unknown_key_is_rejected_naming_the_key():
    assert '"frobnicate.ms"' in message(parse_producer_config, {**BOOT, "frobnicate.ms": 1})


def test_unknown_key_close_to_a_known_one_gets_a_suggestion():
    text = message(parse_producer_config, {**BOOT, "linger.mss": 1})
    assert text == 'No such configuration property: "linger.mss" (did you mean "linger.ms"?)'


def test_unknown_key_far_from_every_known_one_gets_no_suggestion():
    assert "did you mean" not in message(parse_producer_config, {**BOOT, "zzz": 1})


def test_config_errors_carry_the_invalid_arg_code():
    err = rejection(parse_producer_config, {**BOOT, "nope": 1}).args[0]
    assert err.code() == KafkaError._INVALID_ARG


def test_a_config_that_is_not_a_dict_is_rejected():
    assert "dict" in message(parse_producer_config, [("bootstrap.servers", "x")])


# --- bootstrap.servers --------------------------------------------------------------------

@pytest.mark.parametrize("parse", [parse_producer_config, parse_consumer_config, parse_admin_config])
def test_missing_bootstrap_servers_is_a_clear_error(parse):
    assert '"bootstrap.servers"' in message(parse, {"group.id": "g"})


def test_empty_bootstrap_servers_counts_as_missing():
    assert "Missing" in message(parse_admin_config, {"bootstrap.servers": ""})


def test_bootstrap_servers_may_be_a_path():
    cfg = parse_admin_config({"bootstrap.servers": pathlib.Path("/tmp/data")})
    assert cfg.bootstrap_servers == "/tmp/data"


# --- keys of another client kind -----------------------------------------------------------

def test_a_consumer_key_given_to_a_producer_is_accepted_and_ignored():
    cfg = producer({"group.id": "g", "auto.offset.reset": "earliest"})
    assert cfg.ignored == {"group.id", "auto.offset.reset"} and "group.id" not in cfg.as_dict()


def test_a_producer_key_given_to_a_consumer_is_accepted_and_ignored():
    cfg = consumer({"linger.ms": 100, "on_delivery": print})
    assert cfg.ignored == {"linger.ms", "on_delivery"} and not hasattr(cfg, "linger_ms")


def test_a_key_of_another_kind_is_still_validated():
    assert '"linger.ms"' in message(parse_consumer_config, {**BOOT, "linger.ms": "slow"})


def test_the_admin_client_ignores_producer_and_consumer_keys():
    cfg = parse_admin_config({**BOOT, "acks": "all", "group.id": "g"})
    assert cfg.ignored == {"acks", "group.id"}


# --- keys with no effect on one host ----------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("client.id", "svc"), ("client.rack", "r1"), ("security.protocol", "SASL_SSL"),
    ("ssl.ca.location", "/etc/ca.pem"), ("sasl.mechanisms", "PLAIN"), ("sasl.username", "u"),
    ("sasl.password", "p"), ("socket.timeout.ms", 1000), ("socket.keepalive.enable", "true"),
    ("api.version.request", True), ("broker.version.fallback", "0.9.0"),
    ("metadata.max.age.ms", 1000), ("topic.metadata.refresh.interval.ms", -1),
    ("reconnect.backoff.ms", 10), ("reconnect.backoff.max.ms", 100),
    ("connections.max.idle.ms", 0),
    ("log.connection.close", False), ("allow.auto.create.topics", True),
    ("max.in.flight", 5), ("enable.ssl.certificate.verification", False),
    ("fetch.min.bytes", 65536), ("fetch.wait.max.ms", 100), ("fetch.max.wait.ms", 100),
    ("fetch.max.bytes", 60_000_000),
])
def test_a_key_without_effect_on_one_host_is_accepted_and_reported(key, value):
    canonical = next(k.name for k in CLIENT_KEYS if key in (k.name, *k.aliases))
    assert consumer({key: value}).no_effect == {canonical}


@pytest.mark.parametrize("key, value", [
    ("retry.backoff.ms", 250), ("retry.backoff.max.ms", 5000), ("sticky.partitioning.linger.ms", 0),
])
def test_a_producer_key_without_effect_on_one_host_is_accepted_and_reported(key, value):
    assert producer({key: value}).no_effect == {key}


def test_a_key_without_effect_still_rejects_a_bad_value():
    assert '"socket.timeout.ms"' in message(parse_producer_config, {**BOOT, "socket.timeout.ms": 1})


def test_statistics_interval_ms_is_a_real_setting():
    cfg = producer({"statistics.interval.ms": 1000, "stats_cb": print})
    assert cfg.statistics_interval_ms == 1000 and not cfg.no_effect


def test_a_confluent_cloud_style_config_works_unchanged():
    conf = {
        **BOOT, "security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN",
        "sasl.username": "key", "sasl.password": "secret", "session.timeout.ms": 45000,
        "client.id": "app", "group.id": "g", "auto.offset.reset": "smallest",
        "enable.auto.commit": "false",
    }
    cfg = parse_consumer_config(conf)
    assert (cfg.auto_offset_reset, cfg.enable_auto_commit) == ("earliest", False)


# --- callbacks ---------------------------------------------------------------------------

@pytest.mark.parametrize("parse, key", [
    (producer, "error_cb"), (producer, "stats_cb"), (producer, "throttle_cb"),
    (producer, "on_delivery"), (consumer, "on_commit"),
])
def test_a_callback_is_kept_as_given(parse, key):
    def callback(*args):
        return args
    assert getattr(parse({key: callback}), key) is callback


@pytest.mark.parametrize("parse, key", [
    (parse_producer_config, "error_cb"), (parse_producer_config, "on_delivery"),
    (parse_consumer_config, "on_commit"), (parse_consumer_config, "stats_cb"),
])
def test_a_callback_that_is_not_callable_is_rejected(parse, key):
    text = message(parse, {**BOOT, key: "print"})
    assert f'"{key}"' in text and "callable" in text


def test_logger_accepts_a_logging_logger():
    log = logging.getLogger("shmlog.test")
    assert producer({"logger": log}).logger is log


def test_logger_rejects_an_object_without_a_log_method():
    assert '"logger"' in message(parse_producer_config, {**BOOT, "logger": object()})


def test_delivery_report_only_error_is_a_producer_bool():
    assert producer({"delivery.report.only.error": "true"}).delivery_report_only_error is True


# --- rules across keys -----------------------------------------------------------------

def test_transactional_id_turns_idempotence_on():
    assert producer({"transactional.id": "tx"}).enable_idempotence is True


def test_transactional_id_with_idempotence_explicitly_off_is_rejected():
    text = message(parse_producer_config,
                   {**BOOT, "transactional.id": "tx", "enable.idempotence": False})
    assert '"transactional.id"' in text and '"enable.idempotence"' in text


def test_a_transactional_producers_message_timeout_defaults_to_the_transaction_timeout():
    cfg = producer({"transactional.id": "tx", "transaction.timeout.ms": 10_000})
    assert cfg.message_timeout_ms == 10_000


def test_a_message_timeout_longer_than_the_transaction_timeout_is_rejected():
    text = message(parse_producer_config, {**BOOT, "transactional.id": "tx",
                                           "transaction.timeout.ms": 10_000,
                                           "message.timeout.ms": 20_000})
    assert '"message.timeout.ms"' in text and "10000" in text


def test_idempotence_with_acks_1_is_rejected():
    text = message(parse_producer_config, {**BOOT, "enable.idempotence": True, "acks": 1})
    assert '"acks"' in text


def test_fetch_max_bytes_grows_to_message_max_bytes_when_not_given():
    cfg = consumer({"message.max.bytes": 100_000_000})
    assert cfg.fetch_max_bytes == 100_000_000


def test_fetch_max_bytes_below_message_max_bytes_is_rejected_when_given():
    text = message(parse_consumer_config, {**BOOT, "fetch.max.bytes": 2000,
                                           "message.max.bytes": 4000})
    assert '"fetch.max.bytes"' in text


# --- default.topic.config and topic. prefix ---------------------------------------------------

def test_client_keys_nested_in_default_topic_config_apply_to_the_client():
    cfg = consumer({"default.topic.config": {"auto.offset.reset": "smallest"}})
    assert cfg.auto_offset_reset == "earliest"


def test_a_nested_value_wins_over_the_same_key_at_top_level_as_in_confluent_kafka():
    cfg = consumer({"default.topic.config": {"auto.offset.reset": "earliest"},
                    "auto.offset.reset": "latest"})
    assert cfg.auto_offset_reset == "earliest"


def test_topic_configs_nested_in_default_topic_config_are_collected_normalized():
    cfg = producer({"default.topic.config": {"retention.ms": "1000", "cleanup.policy": "compact"}})
    assert dict(cfg.default_topic_config) == {"retention.ms": 1000, "cleanup.policy": "compact"}


def test_topic_prefixed_client_and_topic_keys_are_accepted():
    cfg = producer({"topic.acks": "1", "topic.segment.bytes": "4096"})
    assert (cfg.acks, dict(cfg.default_topic_config)) == (1, {"segment.bytes": 4096})


def test_a_kafka_topic_key_at_the_top_level_of_a_client_config_is_rejected():
    assert '"retention.ms"' in message(parse_producer_config, {**BOOT, "retention.ms": 1})


def test_a_bad_nested_topic_value_names_the_key():
    text = message(parse_producer_config, {**BOOT, "topic.retention.ms": "week"})
    assert '"topic.retention.ms"' in text and "-1.." in text


def test_a_nested_topic_config_given_as_none_is_left_out():
    assert dict(producer({"topic.retention.ms": None}).default_topic_config) == {}


def test_default_topic_config_must_be_a_dict():
    assert "dict" in message(parse_producer_config, {**BOOT, "default.topic.config": "x"})


# --- topic configs ----------------------------------------------------------------------------

@pytest.mark.parametrize("key, given, expected", [
    ("retention.ms", "-1", -1), ("retention.bytes", "1048576", 1_048_576),
    ("segment.bytes", "1024", 1024), ("max.message.bytes", "2000000", 2_000_000),
    ("min.insync.replicas", "2", 2), ("unclean.leader.election.enable", "true", True),
    ("message.timestamp.type", "logappendtime", "LogAppendTime"),
    ("compression.type", "LZ4", "lz4"), ("min.cleanable.dirty.ratio", "0.25", 0.25),
    ("cleanup.policy", "compact", "compact"), ("ring.bytes", "65536", 65536),
    ("flush.messages", "1", 1), ("delete.retention.ms", "0", 0),
])
def test_topic_config_values_given_as_strings_are_normalized(key, given, expected):
    assert parse_topic_config({key: given}) == {key: expected}


@pytest.mark.parametrize("given", ["delete,compact", "compact, delete", ["delete", "compact"]])
def test_cleanup_policy_with_both_normalizes_to_compact_delete(given):
    assert parse_topic_config({"cleanup.policy": given})["cleanup.policy"] == "compact,delete"


def test_topic_config_returns_only_the_keys_given():
    assert parse_topic_config({"retention.ms": 5}) == {"retention.ms": 5}


@pytest.mark.parametrize("key, default", [
    ("cleanup.policy", "delete"), ("retention.ms", 604_800_000), ("retention.bytes", -1),
    ("max.message.bytes", 1_048_588), ("min.insync.replicas", 1),
    ("message.timestamp.type", "CreateTime"), ("compression.type", "producer"),
    ("ring.bytes", 67_108_864),
])
def test_topic_defaults_follow_kafka(key, default):
    assert TOPIC_DEFAULTS[key] == default


@pytest.mark.parametrize("given", [65536 + 1, 3 * 65536, 32768, 2**41, "lots"])
def test_ring_bytes_must_be_a_power_of_two_between_64_kib_and_1_tib(given):
    text = message(parse_topic_config, {"ring.bytes": given})
    assert '"ring.bytes"' in text and "power of two" in text


def test_segment_bytes_below_1024_is_rejected():
    assert '"segment.bytes"' in message(parse_topic_config, {"segment.bytes": 1023})


def test_an_unknown_topic_key_is_rejected_with_a_suggestion():
    text = message(parse_topic_config, {"retention.msec": 1})
    assert '"retention.msec"' in text and '"retention.ms"' in text


def test_a_bad_cleanup_policy_lists_the_accepted_values():
    text = message(parse_topic_config, {"cleanup.policy": "shred"})
    assert '"shred"' in text and "compact" in text and "delete" in text


def test_effective_topic_config_layers_topic_over_broker_over_kafka_defaults():
    broker = parse_broker_config({"log_retention_hours": 1, "ring_bytes": 1 << 20})
    effective = effective_topic_config({"ring.bytes": "131072"}, broker)
    assert (effective["retention.ms"], effective["ring.bytes"], effective["retention.bytes"]) == \
        (3_600_000, 131072, -1)


# --- broker config ----------------------------------------------------------------------------

def test_broker_accepts_underscored_keys_as_kwargs_give_them():
    cfg = parse_broker_config({"log_dirs": "/a,/b", "message_max_bytes": "2000000"})
    assert (cfg.log_dirs, cfg.message_max_bytes) == (("/a", "/b"), 2_000_000)


def test_broker_accepts_dotted_keys():
    assert parse_broker_config({"num.partitions": 3}).num_partitions == 3


@pytest.mark.parametrize("given", ["/a, /b", ["/a", "/b"], (pathlib.Path("/a"), pathlib.Path("/b"))])
def test_log_dirs_takes_a_comma_list_or_a_list_of_paths(given):
    assert parse_broker_config({"log_dirs": given}).log_dirs == ("/a", "/b")


@pytest.mark.parametrize("attr, default", [
    ("log_dirs", None), ("message_max_bytes", 1_048_588), ("num_partitions", 1),
    ("default_replication_factor", 1), ("auto_create_topics_enable", True),
    ("min_insync_replicas", 1), ("shm_mode", 0o600), ("ring_bytes", 67_108_864),
    ("log_retention_ms", 168 * 3_600_000), ("offsets_retention_minutes", 10_080),
    ("group_initial_rebalance_delay_ms", 3000),
])
def test_broker_defaults_follow_kafka_and_the_brief(attr, default):
    assert getattr(parse_broker_config({}), attr) == default


@pytest.mark.parametrize("given", ["0640", "0o640", "640", 0o640])
def test_shm_mode_takes_an_int_or_an_octal_string(given):
    assert parse_broker_config({"shm_mode": given}).shm_mode == 0o640


def test_log_retention_minutes_wins_over_hours_whatever_the_order():
    cfg = parse_broker_config({"log.retention.minutes": 2, "log.retention.hours": 5})
    assert cfg.log_retention_ms == 120_000


def test_log_retention_ms_wins_over_minutes_and_hours():
    cfg = parse_broker_config({"log.retention.ms": 7, "log.retention.hours": 5})
    assert cfg.log_retention_ms == 7


def test_log_retention_hours_minus_one_means_forever():
    assert parse_broker_config({"log_retention_hours": -1}).log_retention_ms == -1


def test_an_unknown_underscored_broker_key_gets_an_underscored_suggestion():
    text = message(parse_broker_config, {"log_dir_s": "/a"})
    assert text == 'No such broker configuration property: "log_dir_s" (did you mean "log_dirs"?)'


def test_a_bad_broker_value_names_the_key_as_given():
    assert '"num_partitions"' in message(parse_broker_config, {"num_partitions": 0})


def test_broker_keys_without_effect_on_one_host_are_accepted_and_reported():
    cfg = parse_broker_config({"num.network.threads": 3, "broker.id": 0})
    assert cfg.no_effect == {"num.network.threads", "broker.id"}


def test_a_listener_url_is_parsed_and_an_unknown_protocol_is_refused():
    assert parse_broker_config({"listeners": "PLAINTEXT://127.0.0.1:0"}).listeners == "PLAINTEXT://127.0.0.1:0"
    assert "GSSAPI is not a listener protocol" in message(parse_broker_config, {"listeners": "GSSAPI://127.0.0.1:1"})
    assert '"listeners"' in message(parse_broker_config, {"listeners": "127.0.0.1:9092"})


# --- the Config object --------------------------------------------------------------------

def test_a_config_is_read_only():
    cfg = producer()
    with pytest.raises(AttributeError):
        cfg.linger_ms = 1


def test_as_dict_maps_canonical_keys_to_values_and_is_a_copy():
    cfg = producer({"linger.ms": 7})
    copy = cfg.as_dict()
    copy["linger.ms"] = 0
    assert cfg.as_dict()["linger.ms"] == 7


def test_repr_shows_given_keys_but_hides_secrets():
    text = repr(consumer({"sasl.password": "hunter2"}))
    assert "hunter2" not in text and "sasl.password" in text


# --- documentation ---------------------------------------------------------------------------

def test_every_key_and_alias_is_documented():
    docs = (pathlib.Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    spellings = {s for k in CLIENT_KEYS + TOPIC_KEYS + BROKER_KEYS for s in (k.name, *k.aliases)}
    assert sorted(s for s in spellings if f"`{s}`" not in docs) == []


# --- enable.idempotence (docs/exactly-once.md) ------------------------------------------------

@pytest.mark.parametrize("given", [{"acks": 1}, {"acks": 0}, {"retries": 0},
                                   {"max.in.flight.requests.per.connection": 6}])
def test_idempotence_left_at_its_default_is_off_when_a_setting_contradicts_it(given):
    assert producer(given).enable_idempotence is False


def test_idempotence_is_on_by_default_with_acks_all():
    assert producer({"acks": "all"}).enable_idempotence is True


def test_idempotence_given_true_names_every_conflicting_setting():
    text = message(parse_producer_config, {**BOOT, "enable.idempotence": True, "acks": 0, "retries": 0,
                                           "max.in.flight": 6})
    assert '"acks"' in text and '"retries"' in text and '"max.in.flight.requests.per.connection"' in text


def test_idempotence_given_true_keeps_acks_all():
    assert producer({"enable.idempotence": True}).acks == -1


def test_the_gapless_guarantee_is_refused_naming_why():
    text = message(parse_producer_config, {**BOOT, "enable.gapless.guarantee": True})
    assert '"enable.gapless.guarantee" must be false' in text and "gap" in text
    assert producer({"enable.gapless.guarantee": False}).enable_gapless_guarantee is False
