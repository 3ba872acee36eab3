"""The control channel's request schema (shmlog/broker/requests.py), without processes: every
op has a schema, real requests pass, and anything else is a BadRequest naming op and field,
never another exception."""
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmlog.broker import requests
from shmlog.broker.group_service import GroupService
from shmlog.broker.requests import MAX_DEPTH, MAX_LINE_BYTES, REQUESTS, BadRequest, nesting_depth, parse
from shmlog.broker.supervisor import Supervisor
from shmlog.broker.txn_service import TxnService
from shmlog.errors import KafkaError
from tests.control_corpus import corpus


def line(obj):
    return json.dumps(obj).encode()


def refusal(raw):
    with pytest.raises(BadRequest) as caught:
        parse(raw)
    assert caught.value.code == KafkaError._INVALID_ARG
    return str(caught.value)


# ---------------------------------------------------------------------------- the table

def test_every_op_the_supervisor_and_its_services_handle_has_a_schema_and_no_schema_is_unhandled():
    handled = {name[3:] for name in dir(Supervisor) if name.startswith("op_")} | set(GroupService.OPS) | \
        set(TxnService.OPS)
    assert set(REQUESTS) == handled


def test_the_corpus_holds_a_real_request_of_every_op():
    assert {r["op"] for r in corpus()} == set(REQUESTS)


def test_every_request_of_the_corpus_passes_unchanged_but_for_defaults():
    for request in corpus():
        checked = parse(line({**request, "id": 3}))
        assert {k: checked[k] for k in request} == request
        assert checked["id"] == 3


def test_optional_fields_left_out_read_as_their_defaults():
    assert parse(line({"op": "register"})) == {"op": "register", "id": None, "kind": "client", "pid": 0}
    assert parse(line({"op": "metadata", "auto_create": None}))["auto_create"] == []
    checked = parse(line({"op": "offset_commit", "group": "g", "offsets": []}))
    assert (checked["generation"], checked["member_id"], checked["instance_id"]) == (-1, "", None)


def test_fields_an_op_does_not_name_are_ignored():
    assert parse(line({"op": "status", "newer_field": [1, {"x": 2}]}))["newer_field"] == [1, {"x": 2}]


# ---------------------------------------------------------------------------- fields

def test_a_missing_required_field_is_refused_naming_the_op_and_the_field():
    assert refusal(line({"op": "delete_topics"})) == "bad delete_topics request: field topics is required " \
                                                     "(array of string of 0..32767 characters)"


def test_a_required_field_given_as_null_is_refused():
    assert "bad join_group request: field protocols must be" in refusal(line(
        {"op": "join_group", "group": "g", "protocols": None, "subscription": ["t"], "session_timeout_ms": 1,
         "rebalance_timeout_ms": 1}))


def test_a_wrong_type_deep_in_a_request_is_refused_with_the_path_to_it():
    message = refusal(line({"op": "offset_commit", "group": "g", "offsets": [["t", 0, 1, ""], ["t", "1", 2, ""]]}))
    assert message == "bad offset_commit request: field offsets[1][1] must be an integer, not a string"


def test_a_topic_that_is_not_a_string_is_refused_before_the_metadata_op_sees_it():
    for bad in (None, 123, ["t"], {"t": 1}, True):
        assert refusal(line({"op": "metadata", "auto_create": ["ok", bad]})).startswith(
            "bad metadata request: field auto_create[1] must be a string")


def test_a_boolean_is_not_an_integer():
    assert "field topics[0].new_total_count must be an integer, not a boolean" in refusal(line(
        {"op": "create_partitions", "topics": [{"topic": "t", "new_total_count": True}]}))


def test_integers_outside_the_fields_range_are_refused():
    assert "must be in -2147483648..2147483647, not 2147483648" in refusal(line(
        {"op": "delete_records", "partitions": [{"topic": "t", "partition": 1 << 31, "offset": 0}]}))


def test_a_config_value_that_is_not_a_scalar_is_refused():
    assert "field topics['t']['retention.ms'] must be a string, number, boolean or null, not an array" in refusal(line(
        {"op": "alter_configs", "topics": {"t": {"retention.ms": [1]}}}))


def test_a_string_holding_a_lone_surrogate_is_refused():
    assert "lone surrogate" in refusal(b'{"op": "describe_groups", "groups": ["\\ud800"]}')


def test_an_overlong_name_is_refused():
    assert "must be 0..32767 characters long, not 32768" in refusal(line(
        {"op": "delete_groups", "groups": ["g" * 32768]}))


def test_an_unknown_op_is_refused_naming_it():
    assert refusal(line({"op": "drop_everything"})) == "unknown control operation 'drop_everything'"


def test_an_op_that_is_not_a_string_is_refused():
    assert refusal(line({"op": ["status"]})) == "bad request: field op must be a string, not an array"


def test_a_bad_id_is_refused_and_not_echoed():
    with pytest.raises(BadRequest) as caught:
        parse(line({"op": "status", "id": {"x": 1}}))
    assert caught.value.request_id is None and "field id must be an integer" in str(caught.value)


def test_the_id_of_a_request_refused_for_a_field_is_echoed():
    with pytest.raises(BadRequest) as caught:
        parse(line({"op": "delete_topics", "topics": "t", "id": 41}))
    assert caught.value.request_id == 41


# ---------------------------------------------------------------------------- the line

def test_json_that_is_not_an_object_is_refused():
    for raw in (b"[]", b'"status"', b"5", b"null", b"true"):
        assert refusal(raw).startswith('request must be a JSON object with an "op"')


def test_bytes_that_are_not_utf8_are_refused():
    assert refusal(b'{"op": "status", "x": "\xff"}').startswith("request is not UTF-8")


def test_nan_and_infinities_are_refused():
    for raw in (b'{"op": "status", "id": NaN}', b'{"op": "status", "x": Infinity}', b'{"x": -Infinity}',
                b'{"op": "status", "x": 1e999}'):
        assert refusal(raw).startswith("request is not valid JSON")


def test_an_integer_of_more_than_twenty_digits_is_refused_without_converting_it():
    assert "integer of 5000 digits" in refusal(b'{"op": "status", "id": ' + b"7" * 5000 + b"}")


def test_a_key_given_twice_is_refused():
    assert "key 'op' appears twice" in refusal(b'{"op": "status", "op": "shutdown"}')


def test_a_line_over_the_limit_is_refused_and_closes_the_connection():
    with pytest.raises(BadRequest) as caught:
        parse(b" " * (MAX_LINE_BYTES + 1))
    assert caught.value.close and f"limit of {MAX_LINE_BYTES} bytes" in str(caught.value)


def test_a_line_at_the_limit_is_read():
    raw = line({"op": "status", "pad": ""})
    raw = raw[:-2] + b" " * (MAX_LINE_BYTES - len(raw)) + raw[-2:]
    assert len(raw) == MAX_LINE_BYTES and parse(raw)["op"] == "status"


def test_nesting_deeper_than_the_limit_is_refused_before_the_parser_recurses():
    assert parse(b'{"op": "status", "x": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}")
    assert f"nests arrays/objects {MAX_DEPTH + 1} deep" in refusal(
        b'{"op": "status", "x": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")


def test_a_million_open_brackets_are_refused_quickly():
    started = time.monotonic()
    assert "nests arrays/objects 1000000 deep" in refusal(b"[" * 1_000_000)
    assert time.monotonic() - started < 2


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert nesting_depth(b'{"a": "[[[[{{{{\\"[[[[", "b": [1]}') == 2


def test_an_unterminated_string_of_escaped_quotes_is_measured_in_linear_time():
    started = time.monotonic()
    assert nesting_depth(b'["' + b'\\"' * 400_000) == 1
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------------------- anything at all

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4),
                    max_leaves=20)


def _outcome(raw):
    try:
        return parse(raw)
    except BadRequest as exc:
        return exc


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(st.sampled_from(corpus()), st.data())
def test_a_request_with_any_json_in_any_field_is_parsed_or_refused_as_a_bad_request(request, data):
    field = data.draw(st.sampled_from(sorted(set(request) | {"id"})))
    mutated = {**request, field: data.draw(JSON)}
    outcome = _outcome(json.dumps(mutated).encode())
    assert isinstance(outcome, (dict, BadRequest))


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(JSON)
def test_any_json_value_is_parsed_or_refused_as_a_bad_request(value):
    assert isinstance(_outcome(json.dumps(value).encode()), (dict, BadRequest))


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_as_a_bad_request(raw):
    assert isinstance(_outcome(raw.replace(b"\n", b" ")), (dict, BadRequest))


def test_the_limits_are_what_the_docs_say():
    # docs/architecture.md, "Request validation": 1 MiB lines, 16 levels, 20-digit integers
    assert (requests.MAX_LINE_BYTES, requests.MAX_DEPTH, requests.MAX_INT_DIGITS) == (1 << 20, 16, 20)
