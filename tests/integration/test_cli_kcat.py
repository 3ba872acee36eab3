"""The kcat-style `shmlog` commands (consume offsets, -e, -G, -f, -J, -s; produce -k/-K/-H/-Z;
topics alter; metadata -L), run as the real `shmlog` console script against a real daemon broker.

One broker per xdist worker (module scope: starting one per test would cost more than the
tests), stopped at the end with a check that no process and no /dev/shm object of it is left;
each test has its own topic (and group), named after the test. Records with chosen timestamps
are written with shmlog.Producer into the same broker; everything else goes through the command.
"""
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import shmlog
from shmlog._native import shm
from shmlog.schema_registry import SchemaRegistryClient
from shmlog.schema_registry.avro import AvroSerializer
from shmlog.schema_registry.json_schema import JSONSerializer
from shmlog.schema_registry.protobuf import ProtobufSerializer
from tests.conftest import broker_processes
from tests.integration.test_cli import REPO, RING, cli_env, leftovers, ok, one_line_error
from tests.integration.test_schema_registry import V1, protobuf_classes

SHMLOG = str(Path(sys.executable).with_name("shmlog"))   # the console script of this environment
RUN_TIMEOUT_S = 60
GROUP_CONFIGS = ("-X", "session.timeout.ms=1000", "-X", "heartbeat.interval.ms=100")


def shmlog_run(*args, input=None, text=True):
    return subprocess.run([SHMLOG, *map(str, args)], input=input, capture_output=True, text=text,
                          timeout=RUN_TIMEOUT_S, cwd=REPO, env=cli_env())


@pytest.fixture(scope="module")
def broker_dir(tmp_path_factory):
    """A daemon broker whose groups rebalance at once; its data dir. Stopped, and checked, at the end."""
    d = str(tmp_path_factory.mktemp("kcat") / "data")
    try:
        ok(shmlog_run("broker", "start", "--data-dir", d, "-X", RING,
                      "-X", "group.initial.rebalance.delay.ms=0", "-X", "group.min.session.timeout.ms=50"))
        yield d
    finally:
        shmlog_run("broker", "stop", "--data-dir", d)
        procs = broker_processes(d)
        for proc in procs:
            proc.kill()
        left = leftovers(d)
        for name in left:
            shm.unlink(name)
        assert not procs, f"broker processes left running: {procs}"
        assert not left, f"shared memory left behind: {left}"


@pytest.fixture
def broker(broker_dir, monkeypatch):
    monkeypatch.setenv("SHMLOG_DATA_DIR", broker_dir)   # read by run(); cli_env() keeps it from the child
    return broker_dir


@pytest.fixture
def t(request):
    """This test's topic (and group) name."""
    return re.sub(r"[^a-zA-Z0-9._-]", "_", request.node.name[len("test_"):])[:80]


def run(*args, **kwargs):
    """shmlog ARGS against the test's broker."""
    return shmlog_run(*args, "--data-dir", os.environ["SHMLOG_DATA_DIR"], **kwargs)


def create(topic, partitions=1):
    # retention.ms=-1: several tests produce records stamped long ago (s@/e@ offsets, ISO times),
    # which time-based retention (7 days) would otherwise delete before they are read.
    ok(run("topics", "create", topic, "--partitions", partitions, "--config", "retention.ms=-1"))


def produce_at(broker_dir, topic, records):
    """(partition, key, value, timestamp ms) records, with those timestamps."""
    p = shmlog.Producer({"bootstrap.servers": f"shm://{os.path.realpath(broker_dir)}"})
    try:
        for partition, key, value, ts in records:
            p.produce(topic, value, key, partition=partition, timestamp=ts)
        assert p.flush(30) == 0
    finally:
        p.close()


def lines(result):
    return ok(result).stdout.splitlines()


# ---------------------------------------------------------------------------- -o: start offsets

def test_o_beginning_reads_every_partition_from_its_first_offset(broker, t):
    create(t, 2)
    ok(run("produce", t, "-p", 0, input="a\nb\n"))
    ok(run("produce", t, "-p", 1, input="c\n"))
    assert sorted(lines(run("consume", t, "-o", "beginning", "-e", "-f", r"%p:%o:%s\n"))) == \
        ["0:0:a", "0:1:b", "1:0:c"]


def test_o_end_with_e_prints_nothing_and_exits(broker, t):
    create(t)
    ok(run("produce", t, input="a\nb\n"))
    assert lines(run("consume", t, "-o", "end", "-e")) == []


def test_o_absolute_offset_starts_at_that_offset_of_each_partition(broker, t):
    create(t)
    ok(run("produce", t, input="a\nb\nc\nd\n"))
    assert lines(run("consume", t, "-o", 2, "-e", "-f", r"%o=%s\n")) == ["2=c", "3=d"]


def test_o_minus_n_prints_the_last_n_records_of_each_partition(broker, t):
    create(t, 2)
    ok(run("produce", t, "-p", 0, input="a\nb\nc\n"))
    ok(run("produce", t, "-p", 1, input="x\ny\n"))
    assert sorted(lines(run("consume", t, "-o", -2, "-e"))) == ["b", "c", "x", "y"]


def test_o_s_at_starts_at_the_first_record_at_or_after_the_timestamp(broker, t):
    create(t)
    produce_at(broker, t, [(0, None, b"old", 1000), (0, None, b"mid", 2000), (0, None, b"new", 3000)])
    assert lines(run("consume", t, "-o", "s@2000", "-e")) == ["mid", "new"]
    assert lines(run("consume", t, "-o", "s@2500", "-e")) == ["new"]
    assert lines(run("consume", t, "-o", "s@9000", "-e")) == []


def test_o_e_at_stops_each_partition_before_the_first_record_at_or_after_the_timestamp(broker, t):
    create(t, 2)
    produce_at(broker, t, [(0, None, b"a", 1000), (0, None, b"b", 2000), (0, None, b"c", 3000),
                             (1, None, b"x", 1500), (1, None, b"y", 5000)])
    # No -e: it exits because every partition reached a record at or after e@.
    out = lines(run("consume", t, "-o", "beginning", "-o", "e@3000"))
    assert sorted(out) == ["a", "b", "x"]
    assert sorted(lines(run("consume", t, "-o", "s@1500", "-o", "e@3000"))) == ["b", "x"]


def test_o_stored_without_a_group_is_a_usage_error(broker, t):
    create(t)
    result = run("consume", t, "-o", "stored")
    assert "-G" in one_line_error(result)
    assert result.returncode == 2


# ---------------------------------------------------------------------------- -e, -c

def test_e_exits_when_every_assigned_partition_is_read_to_its_end(broker, t):
    create(t, 3)  # partition 2 stays empty
    ok(run("produce", t, "-p", 0, input="a\nb\n"))
    ok(run("produce", t, "-p", 1, input="c\n"))
    assert sorted(lines(run("consume", t, "-o", "beginning", "-e"))) == ["a", "b", "c"]
    assert lines(run("consume", t, "-o", "beginning", "-e", "-p", 1)) == ["c"]


def test_c_exits_after_that_many_records(broker, t):
    create(t)
    ok(run("produce", t, input="a\nb\nc\n"))
    assert lines(run("consume", t, "-o", "beginning", "-c", 2)) == ["a", "b"]


# ---------------------------------------------------------------------------- -G

def test_G_commits_what_it_printed_and_a_second_run_with_o_stored_resumes_there(broker, t):
    create(t)
    ok(run("produce", t, input="a\nb\nc\nd\ne\n"))
    first = lines(run("consume", t, "-G", t, "-o", "beginning", "-c", 2, *GROUP_CONFIGS))
    assert first == ["a", "b"]
    described = ok(run("groups", "describe", t)).stdout
    row = next(line.split() for line in described.splitlines() if line.startswith(t + " "))
    assert row[:4] == [t, t, "0", "2"]  # committed offset 2
    second = lines(run("consume", t, "-G", t, "-o", "stored", "-e", *GROUP_CONFIGS))
    assert second == ["c", "d", "e"]
    assert lines(run("consume", t, "-G", t, "-e", *GROUP_CONFIGS)) == []  # stored is -G's default


def test_G_with_p_is_a_usage_error(broker, t):
    result = run("consume", t, "-G", t, "-p", 0)
    assert "--group" in one_line_error(result)
    assert result.returncode == 2


# ---------------------------------------------------------------------------- -f

def test_f_kcat_tokens_print_topic_partition_offset_key_value_lengths_timestamp_and_headers(broker, t):
    create(t)
    ok(run("produce", t, "-K", ":", "-H", "src=cli", "-H", "v=2", input="k1:hello\nnokey\n"))
    out = ok(run("consume", t, "-o", "beginning", "-e", "-f", r"%t|%p|%o|%k|%K|%s|%S|%h|%T\n")).stdout
    first, second = [line.split("|") for line in out.splitlines()]
    assert first[:8] == [t, "0", "0", "k1", "2", "hello", "5", "src=cli,v=2"]
    assert second[:8] == [t, "0", "1", "", "-1", "nokey", "5", "src=cli,v=2"]
    assert int(first[8]) > 1_700_000_000_000  # milliseconds since the epoch


def test_f_kcat_format_adds_no_newline_and_percent_R_writes_a_big_endian_length(broker, t):
    create(t)
    ok(run("produce", t, input="abc\n"))
    raw = ok(run("consume", t, "-o", "beginning", "-e", "-f", "%R%s", text=False)).stdout
    assert raw == struct.pack(">i", 3) + b"abc"


def test_f_python_fields_still_work(broker, t):
    create(t)
    ok(run("produce", t, "-K", ":", input="k:v\n"))
    assert lines(run("consume", t, "-o", "beginning", "-e", "-f", "{offset} {key}={value}")) == ["0 k=v"]


def test_an_unknown_format_token_is_a_one_line_usage_error(broker, t):
    result = run("consume", t, "-f", r"%s %x\n")
    assert "%x" in one_line_error(result)
    assert result.returncode == 2


def test_time_format_iso_prints_readable_utc_timestamps(broker, t):
    create(t)
    produce_at(broker, t, [(0, None, b"v", 1_700_000_000_123)])
    out = lines(run("consume", t, "-o", "beginning", "-e", "-f", r"%T %s\n", "--time-format", "iso"))
    assert out == ["2023-11-14T22:13:20.123Z v"]


# ---------------------------------------------------------------------------- -J, null keys, headers

def test_J_prints_one_kcat_json_envelope_per_record(broker, t):
    create(t)
    ok(run("produce", t, "-K", ":", "-H", "src=cli", input="k:v\n"))
    (line,) = lines(run("consume", t, "-o", "beginning", "-e", "-J"))
    env = json.loads(line)
    assert env["ts"] > 0
    del env["ts"]
    assert env == {"topic": t, "partition": 0, "offset": 0, "tstype": "create", "broker": 0,
                   "headers": {"src": "cli"}, "key": "k", "payload": "v"}


def test_a_null_key_is_shown_apart_from_an_empty_key(broker, t):
    create(t)
    ok(run("produce", t, "-K", ":", input=":empty-key\nno-key\n"))
    envs = [json.loads(line) for line in lines(run("consume", t, "-o", "beginning", "-e", "-J"))]
    assert [(e["key"], e["payload"]) for e in envs] == [("", "empty-key"), (None, "no-key")]
    assert lines(run("consume", t, "-o", "beginning", "-e", "-Z", "-f", r"[%k]\n")) == ["[]", "[NULL]"]


def test_headers_round_trip_through_produce_and_consume(broker, t):
    create(t)
    ok(run("produce", t, "-H", "a=1", "-H", "b=x=y", "-H", "empty=", input="v\n"))
    (env,) = [json.loads(line) for line in lines(run("consume", t, "-o", "beginning", "-e", "-J"))]
    assert env["headers"] == {"a": "1", "b": "x=y", "empty": ""}


def test_produce_k_gives_every_record_the_key_and_Z_sends_empty_lines_as_null(broker, t):
    create(t, 3)
    ok(run("produce", t, "-k", "acct-7", "-Z", input="a\n\nb\n"))
    envs = [json.loads(line) for line in lines(run("consume", t, "-o", "beginning", "-e", "-J"))]
    assert [(e["key"], e["payload"]) for e in envs] == [("acct-7", "a"), ("acct-7", None), ("acct-7", "b")]
    assert len({e["partition"] for e in envs}) == 1  # one key, one partition


def test_produce_p_writes_to_that_partition(broker, t):
    create(t, 3)
    ok(run("produce", t, "-p", 2, input="a\n"))
    assert lines(run("consume", t, "-o", "beginning", "-e", "-f", r"%p\n")) == ["2"]


# ---------------------------------------------------------------------------- -s: the schema registry

def test_s_value_avro_decodes_values_through_the_schema_registry(broker, t):
    create(t)
    conf = {"bootstrap.servers": f"shm://{os.path.realpath(broker)}"}
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as registry:
        p = shmlog.SerializingProducer({**conf, "value.serializer": AvroSerializer(registry, V1)})
        p.produce(t, key=b"AAPL", value={"symbol": "AAPL", "price": 189.5})
        p.flush(30)
        p.close()
    assert lines(run("consume", t, "-o", "beginning", "-e", "-s", "value=avro")) == \
        ['{"symbol":"AAPL","price":189.5}']
    (env,) = [json.loads(x) for x in lines(run("consume", t, "-o", "beginning", "-e", "-J",
                                                "--value-deserializer", "registry"))]
    assert (env["key"], env["payload"]) == ("AAPL", {"symbol": "AAPL", "price": 189.5})


def test_s_value_protobuf_decodes_values_with_the_registered_descriptor_and_its_references(broker, t):
    create(t)
    Trade, Leg = protobuf_classes()
    conf = {"bootstrap.servers": f"shm://{os.path.realpath(broker)}"}
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as registry:
        p = shmlog.SerializingProducer({**conf, "value.serializer": ProtobufSerializer(Trade, registry)})
        p.produce(t, value=Trade(symbol="MSFT", price=2.5, qty=3, legs=[Leg(px=1.0)]))
        p.flush(30)
        p.close()
    (env,) = [json.loads(x) for x in lines(run("consume", t, "-o", "beginning", "-e", "-J",
                                                "-s", "value=protobuf"))]
    assert env["payload"] == {"symbol": "MSFT", "price": 2.5, "qty": "3", "legs": [{"px": 1.0}]}


TRADE_JSON_SCHEMA = json.dumps({"title": "Trade", "type": "object", "properties": {
    "symbol": {"type": "string"}, "price": {"type": "number"}}, "required": ["symbol", "price"]})


def produce_json_schema_trade(broker, t):
    conf = {"bootstrap.servers": f"shm://{os.path.realpath(broker)}"}
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as registry:
        p = shmlog.SerializingProducer({**conf, "value.serializer": JSONSerializer(TRADE_JSON_SCHEMA, registry)})
        p.produce(t, key=b"IBM", value={"symbol": "IBM", "price": 140.25})
        p.flush(30)
        p.close()


def test_s_value_json_schema_decodes_values_through_the_schema_registry(broker, t):
    create(t)
    produce_json_schema_trade(broker, t)
    assert lines(run("consume", t, "-o", "beginning", "-e", "-s", "value=json_schema")) == \
        ['{"symbol":"IBM","price":140.25}']
    (env,) = [json.loads(x) for x in lines(run("consume", t, "-o", "beginning", "-e", "-J",
                                                "--value-deserializer", "registry"))]
    assert (env["key"], env["payload"]) == ("IBM", {"symbol": "IBM", "price": 140.25})


def test_a_json_schema_value_read_as_avro_is_a_one_line_error_naming_both_schema_types(broker, t):
    create(t)
    produce_json_schema_trade(broker, t)
    result = run("consume", t, "-o", "beginning", "-e", "-s", "value=avro")
    line = one_line_error(result)
    assert f"{t}-0@0" in line and "is JSON, not AVRO" in line, line
    assert result.returncode == 1


def test_a_value_that_is_not_avro_is_a_one_line_error_naming_the_record(broker, t):
    create(t)
    ok(run("produce", t, input="plain text\n"))
    result = run("consume", t, "-o", "beginning", "-e", "-s", "value=avro")
    assert f"{t}-0@0" in one_line_error(result)
    assert result.returncode == 1


# ---------------------------------------------------------------------------- topics alter, metadata

def test_topics_alter_adds_partitions_and_changes_and_deletes_configs(broker, t):
    create(t, 2)
    altered = ok(run("topics", "alter", t, "--partitions", 4, "--config", "retention.ms=60000"))
    assert "partitions 2 -> 4" in altered.stdout
    described = ok(run("topics", "describe", t)).stdout
    assert f"Topic {t}: 4 partitions" in described
    assert "retention.ms                   = 60000" in described
    ok(run("produce", t, "-p", 3, input="on-a-new-partition\n"))
    assert lines(run("consume", t, "-o", "beginning", "-e", "-p", 3)) == ["on-a-new-partition"]
    ok(run("topics", "alter", t, "--delete-config", "retention.ms"))
    assert "retention.ms                   = 604800000" in ok(run("topics", "describe", t)).stdout


def test_topics_alter_cannot_remove_partitions(broker, t):
    create(t, 3)
    result = run("topics", "alter", t, "--partitions", 2)
    assert "cannot be removed" in one_line_error(result)
    assert result.returncode == 1


def test_metadata_L_J_lists_brokers_topics_partitions_and_offsets(broker, t):
    a, b = t + ".a", t + ".b"
    create(a, 2)
    create(b, 1)
    ok(run("produce", a, "-p", 1, input="x\ny\n"))
    doc = json.loads(ok(run("metadata", "-L", "-J")).stdout)
    assert doc["brokers"] == [{"id": 0, "name": f"shm://{os.path.realpath(broker)}"}]
    topics = {topic["topic"]: topic["partitions"] for topic in doc["topics"]}
    assert {a, b} <= set(topics)
    assert [(p["partition"], p["leader"], p["low"], p["high"]) for p in topics[a]] == [(0, 0, 0, 0), (1, 0, 0, 2)]
    one = json.loads(ok(run("metadata", "-L", "-J", "-t", b)).stdout)
    assert [topic["topic"] for topic in one["topics"]] == [b]
    text = ok(run("metadata", "-L", "-t", a)).stdout
    assert f'topic "{a}" with 2 partitions:' in text and "offsets: 0..2" in text


# ---------------------------------------------------------------------------- one-line errors

def test_consuming_an_unknown_topic_is_a_one_line_error(broker, t):
    result = run("consume", "nope", "-e")
    assert "nope" in one_line_error(result)
    assert result.returncode == 1


def test_a_bad_offset_spec_is_a_one_line_usage_error(broker, t):
    for spec in ("latest-ish", "s@soon", "e@"):
        result = run("consume", t, "-o", spec)
        assert spec in one_line_error(result)
        assert result.returncode == 2


def test_metadata_of_an_unknown_topic_is_a_one_line_error(broker, t):
    result = run("metadata", "-L", "-t", "nope")
    assert "nope" in one_line_error(result)
    assert result.returncode == 1
