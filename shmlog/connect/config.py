"""Config files and config definitions, with Kafka Connect's names.

A worker config (connect-standalone.properties) and one config per connector, each a
.properties file (Java's format: key=value or key: value, # and ! comments, \\ continues a
line) or a .json file (a flat object, or the REST API's {"name": ..., "config": {...}}).

Every key is checked: a key the worker, the connector, a converter or a transform does not
know is refused with an error naming it (a typo must not pass as a setting that has no effect),
and so is a bad value.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Callable
from typing import Any

from shmlog.connect.api import ConfigException

# ---------------------------------------------------------------------------- files

def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    props: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.lstrip()      # Java keeps a value's trailing blanks; Key conversion trims them
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        m = re.match(r"((?:\\.|[^=:\s])+)\s*[=:\s]\s*(.*)$", logical)
        if m is None:
            key, value = logical, ""
        else:
            key, value = m.group(1), m.group(2)
        props[key.replace("\\", "")] = value.replace("\\\\", "\\")
        logical = ""
    return props


def load_config_file(path: str) -> dict[str, str]:
    """A .json or .properties file as {key: str}."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigException(f"cannot read config file {path}: {exc.strerror}") from None
    if path.endswith(".json"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ConfigException(f"{path} is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ConfigException(f"{path}: expected a JSON object of config keys")
        if isinstance(obj.get("config"), dict):
            obj = {**obj["config"], **({"name": obj["name"]} if "name" in obj else {})}
        return {str(k): _as_str(v) for k, v in obj.items()}
    return parse_properties(text, path)


def _as_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


# ---------------------------------------------------------------------------- definitions

@dataclasses.dataclass
class Key:
    """One config key: its type ("string", "int", "long", "boolean", "list", "password",
    "class"), default (REQUIRED: must be given), allowed values, and doc line."""
    name: str
    type: str = "string"
    default: Any = None
    choices: tuple | None = None
    doc: str = ""
    minimum: int | None = None


REQUIRED = object()


def _convert(key: Key, raw: Any, where: str) -> Any:
    if raw is None:
        return None
    text = str(raw).strip() if key.type != "password" else str(raw)
    try:
        if key.type in ("int", "long"):
            value: Any = int(text)
            if key.minimum is not None and value < key.minimum:
                raise ValueError(f"must be at least {key.minimum}")
        elif key.type == "boolean":
            if text.lower() not in ("true", "false"):
                raise ValueError("expected true or false")
            value = text.lower() == "true"
        elif key.type == "list":
            value = [item.strip() for item in text.split(",") if item.strip()]
        else:
            value = text
    except ValueError as exc:
        reason = str(exc) if "must be" in str(exc) or "expected" in str(exc) else f"expected a {key.type}"
        raise ConfigException(f"Invalid value {raw!r} for configuration {key.name}{where}: {reason}") from None
    if key.choices is not None and value not in key.choices:
        raise ConfigException(f"Invalid value {raw!r} for configuration {key.name}{where}: must be one of "
                              f"{', '.join(map(str, key.choices))}")
    return value


def parse(defs: dict[str, Key], props: dict[str, Any], where: str = "") -> dict[str, Any]:
    """props restricted to defs, converted and defaulted. Keys outside defs are the caller's to check."""
    out = {}
    for name, key in defs.items():
        if name in props:
            out[name] = _convert(key, props[name], where)
        elif key.default is REQUIRED:
            raise ConfigException(f"Missing required configuration \"{name}\"{where}")
        else:
            out[name] = key.default
    return out


def refuse_unknown(props: dict[str, Any], known: Callable[[str], bool], where: str, prefix: str = "") -> None:
    unknown = sorted(prefix + k for k in props if not known(k))
    if unknown:
        raise ConfigException(f"Unknown configuration {'keys' if len(unknown) > 1 else 'key'} "
                              f"{', '.join(unknown)}{where}")


def with_prefix(props: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in props.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------- the worker

CLIENT_PREFIXES = ("producer.", "consumer.", "admin.")

WORKER = {k.name: k for k in [
    Key("bootstrap.servers", default=REQUIRED, doc="The broker (shm:///data/dir)."),
    Key("key.converter", "class", "org.apache.kafka.connect.json.JsonConverter",
        doc="Default key converter of connectors."),
    Key("value.converter", "class", "org.apache.kafka.connect.json.JsonConverter",
        doc="Default value converter of connectors."),
    Key("offset.storage.topic", default="connect-offsets", doc="Compacted topic of source offsets."),
    Key("offset.storage.partitions", "int", 25, minimum=1),
    Key("offset.storage.replication.factor", "int", 1, minimum=1),
    Key("offset.flush.interval.ms", "long", 60000, minimum=0,
        doc="How often tasks commit offsets (sinks: flush, then group commit; sources: offsets topic)."),
    Key("offset.flush.timeout.ms", "long", 5000, minimum=1,
        doc="How long a commit may wait for outstanding records to be delivered."),
    Key("exactly.once.source.support", default="disabled", choices=("disabled", "enabled", "preparing")),
    Key("task.shutdown.graceful.timeout.ms", "long", 5000, minimum=0),
    Key("task.restart.backoff.ms", "long", 500, minimum=0,
        doc="shmlog: wait before restarting a failed task (doubled after each failure in a row)."),
    Key("task.restart.backoff.max.ms", "long", 60000, minimum=0,
        doc="shmlog: the longest wait between restarts of a failed task."),
]}


def worker_config(props: dict[str, str], where: str = " in the worker config") -> dict[str, Any]:
    refuse_unknown(props, lambda k: k in WORKER or k.startswith(CLIENT_PREFIXES)
                   or k.startswith(("key.converter.", "value.converter.")), where)
    conf = parse(WORKER, props, where)
    conf["_props"] = dict(props)
    return conf


# ---------------------------------------------------------------------------- connectors

COMMON = {k.name: k for k in [
    Key("name", default=REQUIRED),
    Key("connector.class", "class", REQUIRED),
    Key("tasks.max", "int", 1, minimum=1),
    Key("key.converter", "class", None),
    Key("value.converter", "class", None),
    Key("transforms", "list", []),
    Key("predicates", "list", []),
    Key("errors.tolerance", default="none", choices=("none", "all")),
    Key("errors.log.enable", "boolean", False),
    Key("errors.log.include.messages", "boolean", False),
]}

SINK = {k.name: k for k in [
    Key("topics", "list", []),
    Key("topics.regex", default=""),
    Key("errors.deadletterqueue.topic.name", default=""),
    Key("errors.deadletterqueue.topic.replication.factor", "int", 1, minimum=1),
    Key("errors.deadletterqueue.context.headers.enable", "boolean", False),
]}

SOURCE = {k.name: k for k in [
    Key("exactly.once.support", default="requested", choices=("requested", "required")),
    Key("transaction.boundary", default="poll", choices=("poll", "interval")),
    Key("transaction.boundary.interval.ms", "long", None, minimum=1),
]}

CONNECTOR_ALIASES = {
    "org.apache.kafka.connect.file.FileStreamSourceConnector": "shmlog.connect.file_stream:FileStreamSourceConnector",
    "org.apache.kafka.connect.file.FileStreamSinkConnector": "shmlog.connect.file_stream:FileStreamSinkConnector",
    "io.confluent.connect.jdbc.JdbcSourceConnector": "shmlog.connect.sql_source:SqlSourceConnector",
    "io.confluent.connect.jdbc.JdbcSinkConnector": "shmlog.connect.sql_sink:SqlSinkConnector",
}


def resolve_class(name: str, aliases: dict[str, str], what: str, key: str) -> Any:
    """A Kafka class name (full, simple, or simple without its kind's suffix, as Kafka accepts)
    or a Python `module:Class` / `module.Class` -> the class."""
    target = aliases.get(name)
    if target is None:
        for full, impl in aliases.items():
            simple = full.rsplit(".", 1)[-1]
            if name in (simple, simple.removesuffix("Connector"), simple.removesuffix("Converter")):
                target = impl
                break
    target = target or name
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        known = ", ".join(sorted(aliases))
        raise ConfigException(f"Invalid value {name!r} for configuration {key}: no {what} of that name "
                              f"({type(exc).__name__}: {exc}); known: {known}, or a Python module:Class") from None


@dataclasses.dataclass
class ConnectorConfig:
    name: str
    connector_class: Any
    kind: str                 # "source" or "sink"
    common: dict              # COMMON (+ SINK or SOURCE) values
    own: dict                 # the connector's own keys, parsed
    props: dict               # everything as given (transforms.*, converter settings...)


def connector_config(props: dict[str, str], worker: dict[str, Any]) -> ConnectorConfig:
    """Check a connector's config completely (including its converters and transforms, by
    building them), so a wrong key fails `connect run` at once, before any task starts."""
    name = props.get("name", "?")
    where = f" of connector {name!r}"
    common = parse(COMMON, props, where)
    cls = resolve_class(common["connector.class"], CONNECTOR_ALIASES, "connector", "connector.class")
    kind = getattr(cls, "kind", None)
    if kind not in ("source", "sink"):
        raise ConfigException(f"connector.class {common['connector.class']!r}{where} is neither a source "
                              f"nor a sink connector")
    extra = SINK if kind == "sink" else SOURCE
    common.update(parse(extra, props, where))
    own = parse(cls.config_def, props, where)
    transform_keys = {f"transforms.{t}." for t in common["transforms"]} | {f"predicates.{p}."
                                                                          for p in common["predicates"]}
    client = ("consumer.override.",) if kind == "sink" else ("producer.override.",)

    def known(k: str) -> bool:
        return (k in COMMON or k in extra or k in cls.config_def or k.startswith(client)
                or k.startswith(("key.converter.", "value.converter."))
                or any(k.startswith(p) for p in transform_keys))
    refuse_unknown(props, known, where)
    if kind == "sink":
        if bool(common["topics"]) == bool(common["topics.regex"]):
            raise ConfigException(f"Must configure one of topics or topics.regex{where}")
        dlq = common["errors.deadletterqueue.topic.name"]
        if dlq and dlq in common["topics"]:
            raise ConfigException(f"The DLQ topic '{dlq}' may not be included in the list of topics "
                                  f"('topics={','.join(common['topics'])}') consumed by the connector{where}")
    else:
        eos = worker["exactly.once.source.support"] == "enabled"
        if common["exactly.once.support"] == "required" and not eos:
            raise ConfigException(f"exactly.once.support=required{where} needs exactly.once.source.support="
                                  f"enabled in the worker config")
        if common["transaction.boundary"] == "interval" and not eos:
            raise ConfigException(f"transaction.boundary=interval{where} needs exactly.once.source.support="
                                  f"enabled in the worker config")
    cfg = ConnectorConfig(name, cls, kind, common, own, dict(props))
    # Building them checks their keys and values now; task processes build their own.
    from shmlog.connect.converters import converters_of
    from shmlog.connect.transforms import transform_chain
    converters_of(cfg, worker, check_only=True)
    transform_chain(cfg)
    return cfg
