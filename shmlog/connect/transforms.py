"""Single message transforms and predicates, with Kafka's class names and config keys.

    transforms=route,stamp
    transforms.stamp.type=org.apache.kafka.connect.transforms.InsertField$Value
    transforms.stamp.topic.field=source_topic
    transforms.drop.type=org.apache.kafka.connect.transforms.Filter
    transforms.drop.predicate=isHeartbeat
    transforms.drop.negate=false
    predicates=isHeartbeat
    predicates.isHeartbeat.type=org.apache.kafka.connect.transforms.predicates.HasHeaderKey
    predicates.isHeartbeat.name=heartbeat

Transforms run in the order listed; one returning None drops the record (Filter).
"""
from __future__ import annotations

import re
from typing import Any

from shmlog.connect import data
from shmlog.connect.api import ConfigException, DataException
from shmlog.connect.config import Key, parse, refuse_unknown, resolve_class, with_prefix


class Transformation:
    config_def: dict = {}

    def configure(self, props: dict[str, Any], where: str, prefix: str = "") -> None:
        refuse_unknown(props, lambda k: k in self.config_def, where, prefix)
        self.config = parse(self.config_def, props, where)

    def apply(self, record: data.ConnectRecord) -> data.ConnectRecord | None:
        raise NotImplementedError


class _KeyOrValue(Transformation):
    """$Key / $Value variants operate on the record's key or value."""
    operates_on_key = False

    def _get(self, r):
        return (r.key_schema, r.key) if self.operates_on_key else (r.value_schema, r.value)

    def _set(self, r, schema, value):
        if self.operates_on_key:
            return r.new_record(key_schema=schema, key=value)
        return r.new_record(value_schema=schema, value=value)


def _field_spec(spec: str | None) -> tuple[str, bool] | None:
    """Kafka's InsertField syntax: "name!" required, "name?" or "name" optional."""
    if not spec:
        return None
    if spec.endswith("!"):
        return spec[:-1], False
    return spec.removesuffix("?"), True


class InsertField(_KeyOrValue):
    config_def = {k.name: k for k in [Key("topic.field"), Key("partition.field"), Key("offset.field"),
                                      Key("timestamp.field"), Key("static.field"), Key("static.value")]}

    def configure(self, props, where, prefix=""):
        super().configure(props, where, prefix)
        if bool(self.config["static.field"]) != bool(self.config["static.value"]):
            raise ConfigException(f"static.field and static.value go together{where}")

    def apply(self, r):
        schema, value = self._get(r)
        if value is None:
            return r           # a tombstone passes unchanged, as in Kafka
        fields = dict(data.require_struct(value, schema, "field insertion"))
        new_fields = []

        def put(spec, v, vschema):
            parsed = _field_spec(spec)
            if parsed is None:
                return
            name, optional = parsed
            if v is None and not optional:
                raise DataException(f"InsertField: {name} is required but the record has none")
            fields[name] = v
            new_fields.append({"field": name, **vschema, "optional": optional})
        put(self.config["topic.field"], r.topic, {"type": "string"})
        put(self.config["partition.field"], r.kafka_partition, {"type": "int32"})
        if self.config["offset.field"]:
            if not isinstance(r, data.SinkRecord):
                raise DataException("InsertField: offset.field is only available for sink records")
            put(self.config["offset.field"], r.kafka_offset, {"type": "int64"})
        ts = data.from_timestamp_ms(r.timestamp) if r.timestamp is not None else None
        put(self.config["timestamp.field"], ts, {"type": "int64", "name": data.TIMESTAMP, "version": 1})
        put(self.config["static.field"], self.config["static.value"], {"type": "string"})
        if schema is not None:
            names = {f["field"] for f in new_fields}
            schema = {**schema, "fields": [f for f in schema["fields"] if f["field"] not in names] + new_fields}
        return self._set(r, schema, fields)


class ReplaceField(_KeyOrValue):
    config_def = {k.name: k for k in [Key("exclude", "list", []), Key("include", "list", []),
                                      Key("renames", "list", []), Key("blacklist", "list", []),
                                      Key("whitelist", "list", [])]}

    def configure(self, props, where, prefix=""):
        super().configure(props, where, prefix)
        self.exclude = set(self.config["exclude"] or self.config["blacklist"])
        self.include = set(self.config["include"] or self.config["whitelist"])
        self.renames = {}
        for pair in self.config["renames"]:
            old, sep, new = pair.partition(":")
            if not sep or not old or not new:
                raise ConfigException(f"Invalid value {pair!r} for configuration renames{where}: expected "
                                      f"old:new pairs separated by commas")
            self.renames[old] = new

    def _keep(self, name):
        return name not in self.exclude and (not self.include or name in self.include)

    def apply(self, r):
        schema, value = self._get(r)
        if value is None:
            return r
        fields = data.require_struct(value, schema, "field replacement")
        out = {self.renames.get(k, k): v for k, v in fields.items() if self._keep(k)}
        if schema is not None:
            schema = {**schema, "fields": [{**f, "field": self.renames.get(f["field"], f["field"])}
                                           for f in schema["fields"] if self._keep(f["field"])]}
        return self._set(r, schema, out)


_JAVA_DATE = [("yyyy", "%Y"), ("yy", "%y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"),
              ("ss", "%S"), ("SSS", "%f")]


def java_date_format(pattern: str, where: str) -> str:
    """A java.text.SimpleDateFormat pattern (the letters TimestampRouter is used with) -> strftime."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "'":
            end = pattern.find("'", i + 1)
            if end < 0:
                raise ConfigException(f"Invalid value {pattern!r} for configuration timestamp.format{where}: "
                                      f"unterminated quote")
            out.append(pattern[i + 1:end].replace("%", "%%") or "'")
            i = end + 1
            continue
        for java, py in _JAVA_DATE:
            if pattern.startswith(java, i):
                out.append(py)
                i += len(java)
                break
        else:
            if pattern[i].isalpha():
                raise ConfigException(f"Invalid value {pattern!r} for configuration timestamp.format{where}: "
                                      f"pattern letter {pattern[i]!r} is not supported (yyyy yy MM dd HH mm ss SSS)")
            out.append(pattern[i].replace("%", "%%"))
            i += 1
    return "".join(out)


class TimestampRouter(Transformation):
    config_def = {k.name: k for k in [Key("topic.format", default="${topic}-${timestamp}"),
                                      Key("timestamp.format", default="yyyyMMdd")]}

    def configure(self, props, where, prefix=""):
        super().configure(props, where, prefix)
        self.strftime = java_date_format(self.config["timestamp.format"], where)

    def apply(self, r):
        if r.timestamp is None:
            raise DataException(f"Timestamp missing on record: {r}")
        when = data.from_timestamp_ms(r.timestamp)
        stamp = when.strftime(self.strftime.replace("%f", f"{when.microsecond // 1000:03d}"))
        return r.new_record(topic=self.config["topic.format"].replace("${topic}", r.topic)
                            .replace("${timestamp}", stamp))


class Filter(Transformation):
    """Drops every record its predicate matches (every record, without a predicate)."""

    def apply(self, r):
        return None


# ---------------------------------------------------------------------------- predicates

class Predicate:
    config_def: dict = {}

    def configure(self, props, where, prefix=""):
        refuse_unknown(props, lambda k: k in self.config_def, where, prefix)
        self.config = parse(self.config_def, props, where)

    def test(self, record: data.ConnectRecord) -> bool:
        raise NotImplementedError


class HasHeaderKey(Predicate):
    config_def = {"name": Key("name", default=None)}

    def configure(self, props, where, prefix=""):
        super().configure(props, where, prefix)
        if not self.config["name"]:
            raise ConfigException(f"Missing required configuration \"name\"{where}")

    def test(self, r):
        return self.config["name"] in r.header_keys()


class TopicNameMatches(Predicate):
    config_def = {"pattern": Key("pattern", default=None)}

    def configure(self, props, where, prefix=""):
        super().configure(props, where, prefix)
        try:
            self.pattern = re.compile(self.config["pattern"] or "")
        except re.error as exc:
            raise ConfigException(f"Invalid value {self.config['pattern']!r} for configuration pattern{where}: "
                                  f"{exc}") from None
        if not self.config["pattern"]:
            raise ConfigException(f"Missing required configuration \"pattern\"{where}")

    def test(self, r):
        return self.pattern.fullmatch(r.topic) is not None


class RecordIsTombstone(Predicate):
    def test(self, r):
        return r.value is None


P = "org.apache.kafka.connect.transforms."
TRANSFORM_ALIASES = {
    P + "InsertField$Key": "shmlog.connect.transforms:InsertFieldKey",
    P + "InsertField$Value": "shmlog.connect.transforms:InsertFieldValue",
    P + "ReplaceField$Key": "shmlog.connect.transforms:ReplaceFieldKey",
    P + "ReplaceField$Value": "shmlog.connect.transforms:ReplaceFieldValue",
    P + "TimestampRouter": "shmlog.connect.transforms:TimestampRouter",
    P + "Filter": "shmlog.connect.transforms:Filter",
}
PREDICATE_ALIASES = {
    P + "predicates.HasHeaderKey": "shmlog.connect.transforms:HasHeaderKey",
    P + "predicates.TopicNameMatches": "shmlog.connect.transforms:TopicNameMatches",
    P + "predicates.RecordIsTombstone": "shmlog.connect.transforms:RecordIsTombstone",
}


class InsertFieldKey(InsertField):
    operates_on_key = True


class InsertFieldValue(InsertField):
    pass


class ReplaceFieldKey(ReplaceField):
    operates_on_key = True


class ReplaceFieldValue(ReplaceField):
    pass


class TransformChain:
    """The connector's transforms in order, each with its optional predicate."""

    def __init__(self, steps: list[tuple[str, Transformation, Predicate | None, bool]]):
        self.steps = steps

    def apply(self, record: data.ConnectRecord) -> data.ConnectRecord | None:
        for _alias, transform, predicate, negate in self.steps:
            if predicate is not None and predicate.test(record) == negate:
                continue
            record = transform.apply(record)
            if record is None:
                return None
        return record


def transform_chain(cfg: Any) -> TransformChain:
    where = f" of connector {cfg.name!r}"
    predicates = {}
    for alias in cfg.common["predicates"]:
        props = with_prefix(cfg.props, f"predicates.{alias}.")
        cls_name = props.pop("type", None)
        if not cls_name:
            raise ConfigException(f"Missing required configuration \"predicates.{alias}.type\"{where}")
        pred = resolve_class(cls_name, PREDICATE_ALIASES, "predicate", f"predicates.{alias}.type")()
        pred.configure(props, where, f"predicates.{alias}.")
        predicates[alias] = pred
    steps = []
    used = set()
    for alias in cfg.common["transforms"]:
        props = with_prefix(cfg.props, f"transforms.{alias}.")
        cls_name = props.pop("type", None)
        if not cls_name:
            raise ConfigException(f"Missing required configuration \"transforms.{alias}.type\"{where}")
        pred_alias = props.pop("predicate", None)
        negate_raw = props.pop("negate", "false")
        if negate_raw.strip().lower() not in ("true", "false"):
            raise ConfigException(f"Invalid value {negate_raw!r} for configuration transforms.{alias}.negate{where}: "
                                  f"expected true or false")
        if pred_alias is not None and pred_alias not in predicates:
            raise ConfigException(f"transforms.{alias}.predicate={pred_alias!r}{where} names no predicate listed "
                                  f"in predicates")
        transform = resolve_class(cls_name, TRANSFORM_ALIASES, "transform", f"transforms.{alias}.type")()
        transform.configure(props, where, f"transforms.{alias}.")
        used.add(pred_alias)
        steps.append((alias, transform, predicates.get(pred_alias), negate_raw.strip().lower() == "true"))
    unused = sorted(set(predicates) - used)
    if unused:
        raise ConfigException(f"predicates {', '.join(unused)}{where} are used by no transform")
    return TransformChain(steps)
