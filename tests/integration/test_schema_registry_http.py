"""`shmlog schemas serve`: Confluent Schema Registry's REST API over the `_schemas` topic, as
a real process against a real broker. The API is checked with plain urllib (always), and
with confluent-kafka's own SchemaRegistryClient and serializers when confluent-kafka is
installed (it is not a test dependency)."""
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from shmlog.schema_registry import Schema, SchemaRegistryClient
from shmlog.schema_registry.avro import AvroDeserializer
from shmlog.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from shmlog.schema_registry.protobuf import ProtobufDeserializer
from shmlog.serialization import MessageField, SerializationContext
from tests.helpers import START_TIMEOUT_S, registry_url, serve_registry, stop_registry

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

TRADE_AVRO = json.dumps({"type": "record", "name": "Trade", "namespace": "demo", "fields": [
    {"name": "symbol", "type": "string"}, {"name": "price", "type": "double"}]})
TRADE_AVRO_V2 = json.dumps({"type": "record", "name": "Trade", "namespace": "demo", "fields": [
    {"name": "symbol", "type": "string"}, {"name": "price", "type": "double"},
    {"name": "qty", "type": "int", "default": 0}]})
TRADE_AVRO_BREAKING = json.dumps({"type": "record", "name": "Trade", "namespace": "demo", "fields": [
    {"name": "symbol", "type": "string"}, {"name": "price", "type": "double"}, {"name": "venue", "type": "string"}]})
TRADE_JSON = json.dumps({"title": "Trade", "type": "object", "properties": {
    "symbol": {"type": "string"}, "price": {"type": "number"}}, "required": ["symbol", "price"]})

VALUE = SerializationContext("trades", MessageField.VALUE)


# ---------------------------------------------------------------------------- the server process

def _wait_for_port(host, port, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # retry pacing while the port comes up, bounded by the deadline


@pytest.fixture
def server(broker, data_dir):
    """(url, process) of `shmlog schemas serve --port 0` for the broker; stopped with SIGTERM after."""
    proc = serve_registry(data_dir, "--port", "0")
    try:
        url = registry_url(proc)
        host, port = url[len("http://"):].rsplit(":", 1)
        _wait_for_port(host, int(port), START_TIMEOUT_S)
        yield url, proc
    finally:
        rc, _ = stop_registry(proc)
    assert rc == 0, f"`shmlog schemas serve` exited {rc} on SIGTERM"


@pytest.fixture
def url(server):
    return server[0]


def call(url, method, path, body=None, headers=None):
    """(status, content type, decoded JSON or text) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": CONTENT_TYPE, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, ctype, raw = resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, raw = exc.code, exc.headers["Content-Type"], exc.read()
    try:
        return status, ctype, json.loads(raw)
    except ValueError:
        return status, ctype, raw.decode()


def register(url, subject, schema, schema_type=None):
    body = {"schema": schema}
    if schema_type:
        body["schemaType"] = schema_type
    return call(url, "POST", f"/subjects/{subject}/versions", body)


# ---------------------------------------------------------------------------- the REST API (urllib)

def test_registering_over_http_returns_the_id_and_the_version_reads_back(url):
    assert register(url, "trades-value", TRADE_AVRO)[::2] == (200, {"id": 1})
    status, ctype, body = call(url, "GET", "/subjects/trades-value/versions/latest")
    assert (status, ctype) == (200, CONTENT_TYPE)
    assert body == {"subject": "trades-value", "version": 1, "id": 1, "schema": TRADE_AVRO}


def test_registering_the_same_schema_again_returns_the_same_id_and_no_new_version(url):
    register(url, "trades-value", TRADE_AVRO)
    assert register(url, "trades-value", TRADE_AVRO)[2] == {"id": 1}
    assert call(url, "GET", "/subjects/trades-value/versions")[2] == [1]


def test_an_unknown_subject_is_a_404_with_confluents_error_body(url):
    status, ctype, body = call(url, "GET", "/subjects/nope/versions/1")
    assert (status, ctype) == (404, CONTENT_TYPE)
    assert body == {"error_code": 40401, "message": "Subject 'nope' not found."}


def test_an_unknown_version_and_an_unknown_id_have_their_own_error_codes(url):
    register(url, "trades-value", TRADE_AVRO)
    assert call(url, "GET", "/subjects/trades-value/versions/7")[2]["error_code"] == 40402
    assert call(url, "GET", "/schemas/ids/99")[2]["error_code"] == 40403


def test_an_incompatible_schema_is_refused_with_409_and_the_reason(url):
    register(url, "trades-value", TRADE_AVRO)
    status, _, body = register(url, "trades-value", TRADE_AVRO_BREAKING)
    assert status == 409 and body["error_code"] == 409
    assert "venue" in body["message"] and "has no default" in body["message"]


def test_an_invalid_schema_is_refused_with_422_42201(url):
    bad = json.dumps({"type": "record", "name": "T", "fields": [{"name": "x", "type": "nosuch"}]})
    status, _, body = register(url, "trades-value", bad)
    assert (status, body["error_code"]) == (422, 42201)


def test_lookup_finds_the_version_of_a_registered_schema(url):
    register(url, "trades-value", TRADE_AVRO)
    register(url, "trades-value", TRADE_AVRO_V2)
    status, _, body = call(url, "POST", "/subjects/trades-value", {"schema": TRADE_AVRO})
    assert status == 200 and (body["version"], body["id"]) == (1, 1)
    assert call(url, "POST", "/subjects/trades-value", {"schema": TRADE_AVRO_BREAKING})[2]["error_code"] == 40403


def test_a_schema_by_id_lists_its_subjects_and_versions(url):
    register(url, "trades-value", TRADE_AVRO)
    register(url, "audit-value", TRADE_AVRO)
    assert call(url, "GET", "/schemas/ids/1")[2] == {"schema": TRADE_AVRO}
    assert call(url, "GET", "/schemas/ids/1/subjects")[2] == ["audit-value", "trades-value"]
    assert call(url, "GET", "/schemas/ids/1/versions")[2] == [{"subject": "audit-value", "version": 1},
                                                              {"subject": "trades-value", "version": 1}]


def test_the_schema_endpoints_return_the_schema_text_alone(url):
    register(url, "trades-value", TRADE_AVRO)
    assert call(url, "GET", "/subjects/trades-value/versions/1/schema")[2] == json.loads(TRADE_AVRO)
    assert call(url, "GET", "/schemas/ids/1/schema")[2] == json.loads(TRADE_AVRO)


def test_schema_types_are_avro_json_and_protobuf(url):
    assert call(url, "GET", "/schemas/types")[2] == ["AVRO", "JSON", "PROTOBUF"]


def test_a_json_schema_registers_with_its_schema_type(url):
    assert register(url, "trades-value", TRADE_JSON, "JSON")[0] == 200
    body = call(url, "GET", "/subjects/trades-value/versions/1")[2]
    assert (body["schemaType"], body["schema"]) == ("JSON", TRADE_JSON)


def test_the_compatibility_endpoint_answers_is_compatible_and_the_reasons_when_verbose(url):
    register(url, "trades-value", TRADE_AVRO)
    path = "/compatibility/subjects/trades-value/versions/latest"
    assert call(url, "POST", path, {"schema": TRADE_AVRO_V2})[2] == {"is_compatible": True}
    body = call(url, "POST", path + "?verbose=true", {"schema": TRADE_AVRO_BREAKING})[2]
    assert body["is_compatible"] is False and "venue" in body["messages"][0]


def test_the_global_level_is_backward_and_a_subject_level_can_be_set_and_deleted(url):
    assert call(url, "GET", "/config")[2] == {"compatibilityLevel": "BACKWARD"}
    assert call(url, "PUT", "/config/trades-value", {"compatibility": "FULL"})[2] == {"compatibility": "FULL"}
    assert call(url, "GET", "/config/trades-value")[2] == {"compatibilityLevel": "FULL"}
    assert call(url, "DELETE", "/config/trades-value")[2] == {"compatibilityLevel": "FULL"}
    assert call(url, "GET", "/config/trades-value")[2]["error_code"] == 40408
    assert call(url, "GET", "/config/trades-value?defaultToGlobal=true")[2] == {"compatibilityLevel": "BACKWARD"}


def test_an_unknown_compatibility_level_is_refused_with_42203(url):
    status, _, body = call(url, "PUT", "/config", {"compatibility": "SIDEWAYS"})
    assert (status, body["error_code"]) == (422, 42203)


def test_soft_deleted_versions_are_listed_only_when_asked_and_a_permanent_delete_needs_one_first(url):
    register(url, "trades-value", TRADE_AVRO)
    register(url, "trades-value", TRADE_AVRO_V2)
    assert call(url, "DELETE", "/subjects/trades-value/versions/1?permanent=true")[2]["error_code"] == 40407
    assert call(url, "DELETE", "/subjects/trades-value/versions/1")[2] == 1
    assert call(url, "GET", "/subjects/trades-value/versions")[2] == [2]
    assert call(url, "GET", "/subjects/trades-value/versions?deleted=true")[2] == [1, 2]
    assert call(url, "DELETE", "/subjects/trades-value/versions/1?permanent=true")[2] == 1
    assert call(url, "GET", "/subjects/trades-value/versions?deleted=true")[2] == [2]


def test_a_deleted_subject_leaves_the_list_unless_deleted_ones_are_asked_for(url):
    register(url, "trades-value", TRADE_AVRO)
    register(url, "audit-value", TRADE_AVRO)
    assert call(url, "DELETE", "/subjects/audit-value")[2] == [1]
    assert call(url, "GET", "/subjects")[2] == ["trades-value"]
    assert call(url, "GET", "/subjects?deleted=true")[2] == ["audit-value", "trades-value"]
    assert call(url, "GET", "/subjects?subjectPrefix=tr")[2] == ["trades-value"]


def test_an_unknown_path_is_a_404_and_a_wrong_method_a_405(url):
    assert call(url, "GET", "/nothing/here")[::2] == (404, {"error_code": 404, "message": "HTTP 404 Not Found"})
    assert call(url, "PUT", "/subjects")[0] == 405


def test_a_request_naming_another_host_is_refused(url):
    status, _, body = call(url, "GET", "/subjects", headers={"Host": "attacker.example"})
    assert status == 403 and "loopback" in body["message"]
    assert call(url, "GET", "/subjects", headers={"Origin": "http://attacker.example"})[0] == 403


def test_schemas_registered_over_http_are_the_ones_in_process_clients_see(url, conf):
    register(url, "trades-value", TRADE_AVRO)
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as sr:
        assert sr.get_latest_version("trades-value").schema == Schema(TRADE_AVRO, "AVRO")
        sr.register_schema("trades-value", Schema(TRADE_AVRO_V2, "AVRO"))
    assert call(url, "GET", "/subjects/trades-value/versions")[2] == [1, 2]


def test_serve_on_a_port_in_use_exits_1_with_one_line(broker, data_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = serve_registry(data_dir, "--port", str(taken.getsockname()[1]))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.decode().startswith("shmlog: error: cannot listen on 127.0.0.1:") and err.decode().count("\n") == 1


def test_shmlogs_client_given_an_http_url_says_what_it_supports(url):
    with pytest.raises(ValueError, match=r"HTTP schema registry.*shm:///path/to/data_dir.*confluent_kafka"):
        SchemaRegistryClient({"url": url})


# ---------------------------------------------------------------------------- confluent-kafka's own client

@pytest.fixture
def confluent(request):
    """confluent_kafka.schema_registry.SchemaRegistryClient against the server; skipped, before
    any broker or server starts, when confluent-kafka is not installed."""
    ck = pytest.importorskip("confluent_kafka.schema_registry")
    client = ck.SchemaRegistryClient({"url": request.getfixturevalue("url")})
    yield client
    client.close()


def test_confluents_client_registers_lists_and_reads_schemas(confluent):
    from confluent_kafka.schema_registry import Schema as CSchema
    schema_id = confluent.register_schema("trades-value", CSchema(TRADE_AVRO, "AVRO"))
    assert confluent.get_subjects() == ["trades-value"]
    assert confluent.get_versions("trades-value") == [1]
    latest = confluent.get_latest_version("trades-value")
    assert (latest.schema_id, latest.version, latest.schema.schema_str) == (schema_id, 1, TRADE_AVRO)
    assert confluent.get_schema(schema_id).schema_str == TRADE_AVRO
    assert confluent.lookup_schema("trades-value", CSchema(TRADE_AVRO, "AVRO")).version == 1


def test_confluents_client_sees_confluents_error_codes(confluent):
    from confluent_kafka.schema_registry.error import SchemaRegistryError as CError
    with pytest.raises(CError) as info:
        confluent.get_version("nope", 1)
    assert (info.value.http_status_code, info.value.error_code) == (404, 40401)


def test_confluents_client_tests_and_sets_compatibility(confluent):
    from confluent_kafka.schema_registry import Schema as CSchema
    confluent.register_schema("trades-value", CSchema(TRADE_AVRO, "AVRO"))
    assert confluent.test_compatibility("trades-value", CSchema(TRADE_AVRO_V2, "AVRO")) is True
    assert confluent.test_compatibility("trades-value", CSchema(TRADE_AVRO_BREAKING, "AVRO")) is False
    confluent.set_compatibility("trades-value", "FULL")
    assert confluent.get_compatibility("trades-value") == "FULL"
    assert confluent.get_compatibility() == "BACKWARD"


def test_confluents_avro_serializer_writes_records_shmlogs_avro_deserializer_reads(confluent, conf):
    from confluent_kafka.schema_registry.avro import AvroSerializer as CAvroSerializer
    data = CAvroSerializer(confluent, TRADE_AVRO)({"symbol": "AAPL", "price": 189.5}, VALUE)
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as sr:
        assert AvroDeserializer(sr)(data, VALUE) == {"symbol": "AAPL", "price": 189.5}


def test_confluents_json_serializer_writes_records_shmlogs_json_deserializer_reads(confluent, conf):
    from confluent_kafka.schema_registry.json_schema import JSONSerializer as CJSONSerializer
    data = CJSONSerializer(TRADE_JSON, confluent)({"symbol": "AAPL", "price": 189.5}, VALUE)
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as sr:
        assert sr.get_latest_version("trades-value").schema.schema_type == "JSON"
        assert JSONDeserializer(None, schema_registry_client=sr)(data, VALUE) == {"symbol": "AAPL", "price": 189.5}


def test_shmlogs_json_serializer_writes_records_confluents_json_deserializer_reads(confluent, conf):
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer as CJSONDeserializer
    with SchemaRegistryClient({"url": conf["bootstrap.servers"]}) as sr:
        data = JSONSerializer(TRADE_JSON, sr)({"symbol": "AAPL", "price": 189.5}, VALUE)
    assert CJSONDeserializer(None, schema_registry_client=confluent)(data, VALUE) == {"symbol": "AAPL",
                                                                                      "price": 189.5}


def test_confluents_protobuf_serializer_writes_records_shmlogs_protobuf_deserializer_reads(confluent):
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as CProtobufSerializer
    quote = _quote_class()
    data = CProtobufSerializer(quote, confluent)(quote(symbol="AAPL", bid=189.5), VALUE)
    assert ProtobufDeserializer(quote)(data, VALUE) == quote(symbol="AAPL", bid=189.5)
    assert confluent.get_latest_version("trades-value").schema.schema_type == "PROTOBUF"


def _quote_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fdp = descriptor_pb2.FileDescriptorProto(name="http_quote.proto", package="httptest", syntax="proto3")
    msg = fdp.message_type.add(name="Quote")
    msg.field.add(name="symbol", number=1, type=9, label=1)
    msg.field.add(name="bid", number=2, type=1, label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("httptest.Quote"))
