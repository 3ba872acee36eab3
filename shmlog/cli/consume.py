"""`shmlog consume TOPIC`: records -> lines on stdout, as kcat -C / -G and kafka-console-consumer.

    shmlog consume TOPIC [-o beginning|end|stored|N|-N|s@MS] [-o e@MS] [-p P ...] [-e] [-c N]
                         [-G GROUP] [-f FORMAT | -J] [-K SEP] [-Z] [--time-format ms|iso|local]
                         [-s [key=|value=]DESERIALIZER ...] [-X K=V ...]

Without -G the partitions are assigned (no group; start: the end of each partition). With
-G GROUP the consumer joins GROUP, subscribes to TOPIC and commits what it printed (start:
the committed offsets). See docs/cli.md.
"""
import base64
import datetime
import decimal
import json
import re
import string
import struct
import sys
import time
import uuid

import click

from shmlog.cli._common import Failure, bootstrap, config_option, data_dir_option, quiet_stdout
from shmlog.client.consumer import Consumer
from shmlog.control import SCHEME
from shmlog.errors import KafkaError, reason_of
from shmlog.message import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    TopicPartition,
)

FORMAT_FIELDS = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")
KCAT_TOKENS = "sSRkKThtpo"   # kcat's -f tokens (and %% for a literal %)
DESERIALIZERS = ("string", "json", "base64", "avro", "protobuf", "json_schema", "registry")
# The registry-backed deserializers and the schema type each reads ("registry": whichever it is).
SCHEMA_TYPES = {"avro": "AVRO", "protobuf": "PROTOBUF", "json_schema": "JSON"}
IDLE_CHECK_S = 1.0           # without --timeout: how often to check the broker is still there
AT_END_CHECK_S = 0.2         # with -e or e@: how often to look again when nothing arrives
CONSUME_BATCH = 1000         # records written per stdout flush at most
TSTYPES = {TIMESTAMP_CREATE_TIME: "create", TIMESTAMP_LOG_APPEND_TIME: "logappend"}


# ---------------------------------------------------------------------------- -o: where to start and stop

class OffsetSpec:
    """What -o (repeatable) and --from-beginning asked for: a start and an optional stop timestamp."""

    def __init__(self):
        self.start = None       # "beginning", "end", "stored", ("abs", N), ("rel", N), ("ts", MS), or None
        self.end_ts = None      # e@MS: stop each partition before its first record at or after MS
        self.explicit_abs = False


_OFFSET_HELP = "beginning, end, stored, N (absolute), -N (N before the end), s@MS (first record at or after " \
               "MS ms since the epoch), e@MS (stop before MS)"


def _parse_offsets(ctx, param, values):
    spec = OffsetSpec()
    for value in values or ():
        v = value.strip()
        if v.startswith("e@"):
            kind, arg = "end", v[2:]
        elif v.startswith("s@"):
            kind, arg = "ts", v[2:]
        else:
            kind, arg = "start", v
        if kind in ("end", "ts"):
            if not re.fullmatch(r"\d+", arg):
                raise click.BadParameter(f"{value!r}: {v[:2]} takes a timestamp in milliseconds since the epoch",
                                         ctx=ctx, param=param)
            if kind == "end":
                if spec.end_ts is not None:
                    raise click.BadParameter("e@ is given twice", ctx=ctx, param=param)
                spec.end_ts = int(arg)
                continue
            start = ("ts", int(arg))
        elif v in ("beginning", "end", "stored"):
            start = v
        elif re.fullmatch(r"-\d+", v):
            start = ("rel", -int(v))
        elif re.fullmatch(r"\+?\d+", v):
            start = ("abs", int(v))
            spec.explicit_abs = True
        else:
            raise click.BadParameter(f"{value!r} is not an offset: use {_OFFSET_HELP}", ctx=ctx, param=param)
        if spec.start is not None:
            raise click.BadParameter(f"{value!r}: a start offset is already given ({values[0]!r}); only e@MS "
                                     f"may be added", ctx=ctx, param=param)
        spec.start = start
    return spec


def _start_offsets(consumer, topic, partitions, start):
    """[TopicPartition] with the offset each partition starts at, for a start other than stored."""
    tps = []
    for p in partitions:
        tp = TopicPartition(topic, p)
        if start == "beginning":
            offset = OFFSET_BEGINNING
        elif start in (None, "end"):
            offset = OFFSET_END
        elif start[0] == "abs":
            offset = start[1]
        elif start[0] == "rel":
            low, high = consumer.get_watermark_offsets(tp)
            offset = max(low, high - start[1])
        else:  # ("ts", ms)
            (found,) = consumer.offsets_for_times([TopicPartition(topic, p, start[1])])
            offset = found.offset if found.offset >= 0 else OFFSET_END
        tps.append(TopicPartition(topic, p, offset))
    return tps


# ---------------------------------------------------------------------------- -f, -J: what a record prints as

_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "0": "\0"}


def _unescape(fmt):
    """`\\t`, `\\n`, `\\r`, `\\0`, `\\\\` and `\\xXX` as typed in a shell's single quotes."""
    def one(m):
        text = m.group(1)
        return chr(int(text[1:], 16)) if text[0] == "x" else _ESCAPES[text]
    return re.sub(r"\\(x[0-9a-fA-F]{2}|[\\tnr0])", one, fmt)


def _has_fields(fmt):
    try:
        return any(f is not None for _, f, _, _ in string.Formatter().parse(fmt))
    except ValueError:
        return "{" in fmt


class KcatFormat:
    """kcat's -f: literal text and %-tokens, printed as they are (no newline is added)."""

    def __init__(self, fmt):
        self.parts = []       # literal str, or a token letter
        i, literal = 0, []
        while i < len(fmt):
            c = fmt[i]
            if c != "%":
                literal.append(c)
                i += 1
                continue
            token = fmt[i + 1:i + 2]
            if token == "%":
                literal.append("%")
            elif token and token in KCAT_TOKENS:
                if literal:
                    self.parts.append("".join(literal))
                    literal = []
                self.parts.append(("token", token))
            else:
                shown = f"%{token}" if token else "a lone % at the end"
                raise ValueError(f"unknown token {shown}; use " + " ".join("%" + t for t in KCAT_TOKENS)
                                 + " (and %% for %)")
            i += 2
        if literal:
            self.parts.append("".join(literal))


def _check_format(ctx, param, fmt):
    """-f FORMAT: a Python format over {fields} (a line each), or kcat's %-tokens (as kcat prints)."""
    if fmt is None:
        return None
    fmt = _unescape(fmt)
    if "%" in fmt and not _has_fields(fmt):
        try:
            return KcatFormat(fmt)
        except ValueError as exc:
            raise click.BadParameter(f"{fmt!r}: {exc}", ctx=ctx, param=param) from None
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None]
    except ValueError as exc:
        raise click.BadParameter(f"{fmt!r}: {exc}", ctx=ctx, param=param) from None
    for field in fields:
        base = re.split(r"[.\[]", field, maxsplit=1)[0]
        if base not in FORMAT_FIELDS:
            raise click.BadParameter(
                f"unknown field {{{field}}}; use " + ", ".join("{" + f + "}" for f in FORMAT_FIELDS)
                + ", or kcat's %-tokens", ctx=ctx, param=param)
    try:
        fmt.format_map({"topic": "t", "partition": 0, "offset": 0, "timestamp": 0, "key": "k", "value": "v",
                        "headers": ""})
    except (ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
        raise click.BadParameter(f"{fmt!r}: {exc}", ctx=ctx, param=param) from None
    return fmt


def _text(data):
    if isinstance(data, str):
        return data
    return bytes(data).decode("utf-8", errors="replace")


def _json_default(obj):
    """Avro/Protobuf values JSON has no type for: bytes as Avro's JSON encoding writes them
    (one char per byte), decimals and UUIDs as text, times in ISO 8601."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("latin-1")
    if isinstance(obj, (decimal.Decimal, uuid.UUID)):
        return str(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _json(obj):
    return json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _timestamp_text(ms, how):
    if how == "ms" or ms is None or ms < 0:
        return str(ms)
    tz = datetime.timezone.utc if how == "iso" else None
    when = datetime.datetime.fromtimestamp(ms / 1000.0, tz) if tz else \
        datetime.datetime.fromtimestamp(ms / 1000.0).astimezone()
    text = when.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if how == "iso" else text


# ---------------------------------------------------------------------------- -s: deserializers

class Decoders:
    """Key and value deserializers by name; the schema registry is opened on first need."""

    def __init__(self, key, value, registry_url):
        self.names = {"key": key, "value": value}
        self.registry_url = registry_url
        self._registry = None
        self._avro = None
        self._json_schema = None
        self._pb_classes = {}

    @property
    def registry(self):
        if self._registry is None:
            from shmlog.schema_registry import SchemaRegistryClient, SchemaRegistryError
            try:
                self._registry = SchemaRegistryClient({"url": self.registry_url})
            except SchemaRegistryError as exc:
                raise Failure(f"schema registry {self.registry_url}: {exc.error_message}") from None
        return self._registry

    def close(self):
        if self._registry is not None:
            self._registry.close()

    def decode(self, field, data):
        """(the decoded object, True when it is structured (JSON-able) rather than text)."""
        name = self.names[field]
        if data is None:
            return None, False
        if name == "string":
            return _text(data), False
        if name == "base64":
            return base64.standard_b64encode(bytes(data)).decode("ascii"), False
        if name == "json":
            try:
                return json.loads(bytes(data)), True
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
        return self._from_registry(name, bytes(data)), True

    def _from_registry(self, name, data):
        from shmlog.schema_registry import SchemaRegistryError
        from shmlog.schema_registry._wire import _read_header
        from shmlog.serialization import SerializationError
        try:
            schema_id, payload = _read_header(data, None, f"{name} deserializer")
            schema = self.registry.get_schema(schema_id)
        except SerializationError as exc:
            raise ValueError(reason_of(exc)) from None
        except SchemaRegistryError as exc:
            raise ValueError(exc.error_message) from None
        kind = schema.schema_type
        if name != "registry" and kind != SCHEMA_TYPES[name]:
            raise ValueError(f"schema {schema_id} is {kind}, not {SCHEMA_TYPES[name]}")
        if kind == "AVRO":
            if self._avro is None:
                from shmlog.schema_registry.avro import AvroDeserializer
                self._avro = AvroDeserializer(self.registry)
            decode = self._avro
        elif kind == "JSON":
            if self._json_schema is None:
                from shmlog.schema_registry.json_schema import JSONDeserializer
                self._json_schema = JSONDeserializer(None, schema_registry_client=self.registry)
            decode = self._json_schema
        elif kind == "PROTOBUF":
            return self._protobuf(schema_id, schema, bytes(payload))
        else:
            raise ValueError(f"schema {schema_id} is {kind}, which this command cannot decode "
                             f"(it decodes {', '.join(sorted(SCHEMA_TYPES.values()))})")
        try:
            return decode(data)
        except SerializationError as exc:
            raise ValueError(reason_of(exc)) from None

    def _protobuf(self, schema_id, schema, payload):
        from google.protobuf import json_format

        from shmlog.log.batch import read_zigzag_varint
        try:
            count, pos = read_zigzag_varint(payload, 0)
            indexes = []
            for _ in range(count):
                i, pos = read_zigzag_varint(payload, pos)
                indexes.append(i)
            indexes = indexes or [0]
            cls = self._pb_class(schema_id, schema, tuple(indexes))
            msg = cls.FromString(payload[pos:])
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"cannot decode with PROTOBUF schema {schema_id}: {type(exc).__name__}: {exc}") from None
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)

    def _pb_class(self, schema_id, schema, indexes):
        key = (schema_id, indexes)
        if key not in self._pb_classes:
            from google.protobuf import descriptor_pool, message_factory

            from shmlog.schema_registry.protobuf import parse_protobuf
            pool = descriptor_pool.DescriptorPool()
            seen = set()

            def add(s):
                for ref in s.references:
                    add(self.registry.get_version(ref.subject, ref.version).schema)
                fdp = parse_protobuf(s.schema_str)
                if fdp.name not in seen:
                    seen.add(fdp.name)
                    pool.Add(fdp)
                return fdp
            fdp = add(schema)
            file_desc = pool.FindFileByName(fdp.name)
            desc = list(file_desc.message_types_by_name.values())[indexes[0]]
            for i in indexes[1:]:
                desc = desc.nested_types[i]
            self._pb_classes[key] = message_factory.GetMessageClass(desc)
        return self._pb_classes[key]


def _parse_serdes(ctx, param, values):
    """-s FMT (key and value), -s key=FMT, -s value=FMT -> {field: FMT}."""
    out = {}
    for value in values or ():
        field, sep, name = value.partition("=")
        fields = ("key", "value") if not sep else (field,)
        name = value if not sep else name
        if sep and field not in ("key", "value"):
            raise click.BadParameter(f"{value!r}: use key=FORMAT, value=FORMAT or FORMAT", ctx=ctx, param=param)
        if name not in DESERIALIZERS:
            raise click.BadParameter(f"{value!r}: unknown deserializer {name!r}; use one of "
                                     + ", ".join(DESERIALIZERS), ctx=ctx, param=param)
        for f in fields:
            out[f] = name
    return out


# ---------------------------------------------------------------------------- the command

@click.command()
@click.argument("topic")
@data_dir_option()
@click.option("--offset", "-o", "offsets", multiple=True, callback=_parse_offsets, metavar="SPEC",
              help="Where to start in each partition: " + _OFFSET_HELP + ". Repeatable to add e@MS.")
@click.option("--from-beginning", is_flag=True, help="Start at each partition's first offset (-o beginning).")
@click.option("--partition", "-p", "partitions", multiple=True, type=click.IntRange(min=0), metavar="P",
              help="Read only partition P; repeatable (default: all partitions). Not with -G.")
@click.option("--exit", "-e", "exit_at_end", is_flag=True,
              help="Exit 0 when every assigned partition has been read to its end.")
@click.option("--max-messages", "--count", "-n", "-c", "max_messages", type=click.IntRange(min=1), metavar="N",
              help="Exit after N records.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S",
              help="Exit after S seconds with no new record (default: wait forever).")
@click.option("--group", "-G", metavar="GROUP",
              help="Join consumer group GROUP, subscribe to TOPIC and commit what was printed (start: the "
                   "committed offsets).")
@click.option("--format", "-f", "fmt", callback=_check_format, metavar="FORMAT",
              help="Per record: kcat's tokens %t %p %o %k %K %s %S %R %T %h (printed as is: end it with \\n), "
                   "or a Python format over " + ", ".join("{" + f + "}" for f in FORMAT_FIELDS)
                   + " (one line each). \\t, \\n, \\xXX are understood. Default: the value, one per line.")
@click.option("--json", "-J", "as_json", is_flag=True,
              help="One JSON object per record: topic, partition, offset, tstype, ts, broker, headers, key, payload.")
@click.option("--key-delimiter", "-K", metavar="SEP", help="Without -f: print the key, SEP, then the value.")
@click.option("--null-str", "-Z", "show_null", is_flag=True,
              help="Print a null key or value as NULL (default: as nothing; -J always writes null).")
@click.option("--time-format", type=click.Choice(["ms", "iso", "local"]), default="ms", show_default=True,
              help="Timestamps (%T, {timestamp}) as milliseconds since the epoch, ISO 8601 in UTC, or local time.")
@click.option("--serdes", "-s", "serdes", multiple=True, callback=_parse_serdes, metavar="[key=|value=]FMT",
              help="Deserialize keys and/or values: " + ", ".join(DESERIALIZERS)
                   + " (avro/protobuf/json_schema/registry: Confluent framing, schemas from the registry). Repeatable.")
@click.option("--key-deserializer", type=click.Choice(DESERIALIZERS), help="As -s key=FMT.")
@click.option("--value-deserializer", type=click.Choice(DESERIALIZERS), help="As -s value=FMT.")
@click.option("--schema-registry", "-r", "registry", metavar="shm:///DIR",
              help="The schema registry: a broker's bootstrap.servers or data dir (default: --data-dir's).")
@config_option("A consumer config (check.crcs=true, session.timeout.ms=6000, ...). Repeatable.")
def consume(topic, data_dir, offsets, from_beginning, partitions, exit_at_end, max_messages, timeout, group, fmt,
            as_json, key_delimiter, show_null, time_format, serdes, key_deserializer, value_deserializer,
            registry, configs):
    """Print records of TOPIC, one line each (default: new records, from the end)."""
    spec = offsets
    if from_beginning:
        if spec.start is not None:
            raise click.UsageError("--from-beginning and --offset/-o give two start offsets")
        spec.start = "beginning"
    if fmt is not None and as_json:
        raise click.UsageError("--format and --json are mutually exclusive")
    if key_delimiter is not None and (fmt is not None or as_json):
        raise click.UsageError("--key-delimiter is for the default output; with --format use %k or {key}")
    if group is not None and partitions:
        raise click.UsageError("--partition and --group are mutually exclusive: the group assigns partitions")
    if spec.start == "stored" and group is None:
        raise click.UsageError("-o stored needs a consumer group: add -G GROUP")
    names = {"key": "string", "value": "string"}
    names.update(serdes)
    if key_deserializer:
        names["key"] = key_deserializer
    if value_deserializer:
        names["value"] = value_deserializer

    conf = dict(configs)
    conf["bootstrap.servers"] = bootstrap(data_dir)
    if group is not None:
        conf["group.id"] = group
        conf["enable.auto.offset.store"] = "false"   # only what was printed is stored, then committed
    if spec.explicit_abs:
        conf.setdefault("auto.offset.reset", "error")  # an explicit offset out of range is an error
    if registry is not None and not registry.startswith(SCHEME):
        registry = bootstrap(registry)
    decoders = Decoders(names["key"], names["value"], registry or bootstrap(data_dir))
    printer = Printer(fmt, as_json, key_delimiter, show_null, time_format, decoders)
    consumer = None
    try:
        consumer = Consumer(conf)
        cooperative = "cooperative" in conf.get("partition.assignment.strategy", "")
        run = Run(consumer, topic, spec, partitions, group, exit_at_end, max_messages, timeout, printer, cooperative)
        run.start()
        run.loop()
    except KeyboardInterrupt:
        pass  # Ctrl-C: a normal way to stop
    except BrokenPipeError:
        quiet_stdout()  # the reader went away (`| head`): stop quietly
    finally:
        decoders.close()
        if consumer is not None:
            try:
                consumer.close()   # in a group: the final commit of what was printed
            except Exception:
                pass


class Printer:
    def __init__(self, fmt, as_json, key_delimiter, show_null, time_format, decoders):
        self.fmt, self.as_json, self.key_delimiter = fmt, as_json, key_delimiter
        self.null = "NULL" if show_null else ""
        self.time_format = time_format
        self.decoders = decoders

    def _decoded(self, msg, field):
        data = msg.key() if field == "key" else msg.value()
        try:
            return self.decoders.decode(field, data) + (None,)
        except ValueError as exc:
            return None, False, f"{msg.topic()}-{msg.partition()}@{msg.offset()}: cannot decode the {field}: {exc}"

    def _as_text(self, msg, field):
        obj, structured, problem = self._decoded(msg, field)
        if problem is not None:
            raise Failure(problem)
        if obj is None:
            return None
        return _json(obj) if structured else obj

    def render(self, msg):
        """The bytes one record prints as."""
        if self.as_json:
            return (self._envelope(msg) + "\n").encode()
        headers = msg.headers() or []
        header_text = ",".join(_text(k) if v is None else f"{_text(k)}={_text(v)}" for k, v in headers)
        key = self._as_text(msg, "key")
        value = self._as_text(msg, "value")
        ts = _timestamp_text(msg.timestamp()[1], self.time_format)
        if isinstance(self.fmt, KcatFormat):
            out = []
            for part in self.fmt.parts:
                if isinstance(part, str):
                    out.append(part.encode())
                    continue
                out.append(self._token(part[1], msg, key, value, ts, header_text))
            return b"".join(out)
        if self.fmt is not None:
            fields = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                      "timestamp": ts if self.time_format != "ms" else msg.timestamp()[1],
                      "key": self.null if key is None else key, "value": self.null if value is None else value,
                      "headers": header_text}
            return (self.fmt.format_map(fields) + "\n").encode()
        line = self.null if value is None else value
        if self.key_delimiter is not None:
            line = (self.null if key is None else key) + self.key_delimiter + line
        return (line + "\n").encode()

    def _token(self, token, msg, key, value, ts, header_text):
        if token == "s":
            return (self.null if value is None else value).encode()
        if token == "k":
            return (self.null if key is None else key).encode()
        if token in "SR":
            raw = msg.value()
            n = -1 if raw is None else len(raw)
            return struct.pack(">i", n) if token == "R" else str(n).encode()
        if token == "K":
            raw = msg.key()
            return str(-1 if raw is None else len(raw)).encode()
        if token == "T":
            return ts.encode()
        if token == "h":
            return header_text.encode()
        if token == "t":
            return msg.topic().encode()
        if token == "p":
            return str(msg.partition()).encode()
        return str(msg.offset()).encode()  # "o"

    def _envelope(self, msg):
        tstype, ts = msg.timestamp()
        env = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
               "tstype": TSTYPES.get(tstype, "unknown"), "ts": ts, "broker": 0}
        headers = msg.headers()
        if headers:
            env["headers"] = {_text(k): None if v is None else _text(v) for k, v in headers}
        for field, name in (("key", "key"), ("value", "payload")):
            obj, _structured, problem = self._decoded(msg, field)
            env[name] = obj
            if problem is not None:
                env[f"{name}_error"] = problem
        return _json(env)


class Run:
    """One consume: assign (or join the group), then print until a stop condition holds."""

    def __init__(self, consumer, topic, spec, partitions, group, exit_at_end, max_messages, timeout, printer,
                 cooperative):
        self.consumer, self.topic, self.spec = consumer, topic, spec
        self.partitions, self.group = list(partitions), group
        self.exit_at_end, self.max_messages, self.timeout = exit_at_end, max_messages, timeout
        self.printer, self.cooperative = printer, cooperative
        self.done = set()          # (topic, partition) past e@MS
        self.tps = []              # the assignment without a group

    def start(self):
        md = self.consumer.list_topics(self.topic)
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None:
            raise Failure(str(tmd.error) if tmd is not None and tmd.error is not None
                          else f"unknown topic {self.topic!r}")
        for p in self.partitions:
            if p not in tmd.partitions:
                raise Failure(f"{self.topic} has no partition {p} (it has {len(tmd.partitions)})")
        if self.group is not None:
            self.consumer.subscribe([self.topic], on_assign=self._on_assign)
            return
        self.tps = _start_offsets(self.consumer, self.topic, self.partitions or sorted(tmd.partitions),
                                  self.spec.start)
        self.consumer.assign(self.tps)

    def _on_assign(self, consumer, tps):
        self.done -= {(tp.topic, tp.partition) for tp in tps}
        if self.spec.start in (None, "stored"):
            return  # the committed offsets (else auto.offset.reset), as the group member does by default
        resolved = []
        for tp in tps:
            resolved += _start_offsets(consumer, tp.topic, [tp.partition], self.spec.start)
        if self.cooperative:
            consumer.incremental_assign(resolved)
        else:
            consumer.assign(resolved)

    def _assigned(self):
        if self.group is None:
            return [TopicPartition(tp.topic, tp.partition) for tp in self.tps]
        return self.consumer.assignment()

    def _finished(self):
        """-e / e@: every assigned partition is past e@MS or (with -e) read to its end."""
        assigned = self._assigned()
        if not assigned:
            return False
        for tp, pos in zip(assigned, self.consumer.position(assigned)):
            key = (tp.topic, tp.partition)
            if key in self.done:
                continue
            if not self.exit_at_end:
                return False
            if pos.offset < 0 or pos.offset < self.consumer.get_watermark_offsets(tp)[1]:
                return False
        return True

    def loop(self):
        consumer, printer = self.consumer, self.printer
        out = sys.stdout.buffer
        count = 0
        watch_end = self.exit_at_end or self.spec.end_ts is not None
        idle_since = time.monotonic()
        while self.max_messages is None or count < self.max_messages:
            if watch_end and self._finished():
                break
            want = CONSUME_BATCH if self.max_messages is None else min(CONSUME_BATCH, self.max_messages - count)
            wait_s = AT_END_CHECK_S if watch_end else IDLE_CHECK_S
            if self.timeout is not None:
                wait_s = min(wait_s, max(0.0, idle_since + self.timeout - time.monotonic()))
            msgs = consumer.consume(want, wait_s)
            if not msgs:
                if self.timeout is not None and time.monotonic() - idle_since >= self.timeout:
                    break
                consumer.list_topics(self.topic)  # raises if the broker went away while we wait
                continue
            chunks, printed = [], {}
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise Failure(f"{msg.topic()}-{msg.partition()}: {reason_of(err)}")
                key = (msg.topic(), msg.partition())
                if key in self.done:
                    continue
                if self.spec.end_ts is not None and msg.timestamp()[1] >= self.spec.end_ts:
                    self.done.add(key)
                    tp = TopicPartition(msg.topic(), msg.partition(), msg.offset())
                    consumer.seek(tp)     # not printed, so not committed either
                    consumer.pause([tp])
                    continue
                chunks.append(printer.render(msg))
                printed[key] = msg
                count += 1
                if self.max_messages is not None and count >= self.max_messages:
                    break
            if chunks:
                out.write(b"".join(chunks))
                out.flush()
            if self.group is not None:
                for msg in printed.values():
                    consumer.store_offsets(message=msg)   # committed in the background and on close
            idle_since = time.monotonic()

