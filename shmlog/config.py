"""Configuration parsing for clients, topics and the broker.

Every key lives in a table row (`Key`): canonical name, other spellings,
value type, default and the client kinds that use it. Parsing is one generic
loop over the user's dict; nothing here is an if-chain per key. The tables
follow librdkafka's and Apache Kafka's names, ranges and defaults, because a
config dict written for confluent-kafka must work unchanged (docs/configuration.md).

Every problem is a KafkaException with code _INVALID_ARG whose message names
the key as the user spelled it.
"""

import difflib
import grp
import math
import os
import pwd
import re
from dataclasses import dataclass
from types import MappingProxyType

from shmlog.errors import KafkaError, error

# partition.assignment.strategy: the coordinator runs these, members announce them.
EAGER_ASSIGNORS = ("range", "roundrobin")
COOPERATIVE_ASSIGNORS = ("cooperative-sticky",)

__all__ = [
    "Config", "Key", "CLIENT_KEYS", "TOPIC_KEYS", "BROKER_KEYS", "TOPIC_DEFAULTS",
    "parse_producer_config", "parse_consumer_config", "parse_admin_config",
    "parse_broker_config", "parse_topic_config", "effective_topic_config",
    "INTERNAL_TOPICS", "topic_name_problem", "topic_names_collide",
]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _invalid(reason):
    return error(KafkaError._INVALID_ARG, reason)


# ---------------------------------------------------------------------------
# Value types. parse() returns the normalized value or raises _Rejected;
# the caller adds the key name, so types stay free of naming concerns.
# ---------------------------------------------------------------------------

class _Rejected(ValueError):
    """A value a type does not accept; `detail` replaces the generic 'expected ...'."""

    def __init__(self, detail=None):
        super().__init__(detail)
        self.detail = detail


def _range_text(lo, hi):
    if lo is not None and hi is not None:
        return f"in {lo}..{hi}"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return ""


def _in_range(n, lo, hi):
    return (lo is None or n >= lo) and (hi is None or n <= hi)


class Int:
    """An integer; strings of digits are accepted because librdkafka takes all values as text."""

    def __init__(self, lo=None, hi=None, names=None):
        self.lo, self.hi = lo, hi
        self.names = names or {}  # symbolic values, e.g. acks "all" -> -1

    @property
    def expected(self):
        text = f"an integer {_range_text(self.lo, self.hi)}".rstrip()
        if self.names:
            text += " or " + ", ".join(self.names)
        return text

    def parse(self, value):
        n = self._to_int(value)
        if not _in_range(n, self.lo, self.hi):
            raise _Rejected()
        return n

    def _to_int(self, value):
        if isinstance(value, bool):  # bool is an int subclass; True as a size is a mistake
            raise _Rejected()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in self.names:
                return self.names[text.lower()]
            try:
                return int(text, 10)
            except ValueError:
                pass
        raise _Rejected()


class Float:
    """A number that may have a fraction (librdkafka's linger.ms is a double)."""

    def __init__(self, lo=None, hi=None):
        self.lo, self.hi = lo, hi

    @property
    def expected(self):
        return f"a number {_range_text(self.lo, self.hi)}".rstrip()

    def parse(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _Rejected()
        try:
            x = float(value.strip() if isinstance(value, str) else value)
        except ValueError:
            raise _Rejected() from None
        if math.isnan(x) or not _in_range(x, self.lo, self.hi):
            raise _Rejected()
        return x


class Bool:
    """librdkafka's spellings: true/t/1 and false/f/0, any case."""

    _WORDS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}
    expected = "true or false"

    def parse(self, value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in self._WORDS:
            return self._WORDS[value.strip().lower()]
        raise _Rejected()


class Str:
    """Text; numbers are turned into text the way confluent-kafka passes them on, and
    pathlib paths too, since bootstrap.servers and log.dirs may name directories."""

    expected = "a string"

    def parse(self, value):
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Rejected()


class Listener:
    """A Kafka listener URL, `PROTOCOL://host:port` (one listener; port 0: any free port)."""

    expected = ("PROTOCOL://host:port, PROTOCOL one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL (port 0-65535; "
                "an IPv6 host in [brackets])")

    def parse(self, value):
        if not isinstance(value, str):
            raise _Rejected()
        protocol, _, _ = listener_parts(value)
        if protocol not in SERVED_LISTENER_PROTOCOLS:
            raise _Rejected(f"{protocol} is not a listener protocol: use one of "
                            f"{', '.join(SERVED_LISTENER_PROTOCOLS)}")
        return value.strip()


SERVED_LISTENER_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_LISTENER_URL = re.compile(r"^([A-Za-z_]+)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):([0-9]{1,5})$")


def listener_parts(value):
    """(PROTOCOL, host, port) of a listener URL; an empty host is loopback."""
    m = _LISTENER_URL.match(value.strip())
    if not m or int(m.group(3)) > 65535:
        raise _Rejected()
    return m.group(1).upper(), m.group(2).strip("[]") or "127.0.0.1", int(m.group(3))


class Enum:
    """One of fixed words, case-insensitive; `synonyms` map extra words onto a canonical one."""

    def __init__(self, choices, synonyms=None):
        self.choices = tuple(choices)
        self.synonyms = synonyms or {}
        self._lookup = {c.lower(): c for c in self.choices}
        self._lookup.update({k.lower(): v for k, v in self.synonyms.items()})

    @property
    def expected(self):
        text = "one of: " + ", ".join(self.choices)
        if self.synonyms:
            text += " (also " + ", ".join(self.synonyms) + ")"
        return text

    def parse(self, value):
        if isinstance(value, str) and value.strip().lower() in self._lookup:
            return self._lookup[value.strip().lower()]
        raise _Rejected()


class CsvList:
    """A comma-separated string or a list; the result is a tuple (or a canonical string)."""

    def __init__(self, item=None, check=None, canonical_str=False):
        self.item = item or Str()
        self.check = check                  # cross-item rule, raises _Rejected(detail)
        self.canonical_str = canonical_str  # order-free sets (cleanup.policy) compare as text

    @property
    def expected(self):
        what = self.item.choices if isinstance(self.item, Enum) else None
        text = "a non-empty comma-separated string or list"
        return text + " of: " + ", ".join(what) if what else text

    def parse(self, value):
        if isinstance(value, str):
            parts = value.split(",")
        elif isinstance(value, os.PathLike):
            parts = [value]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            raise _Rejected()
        items = []
        for part in parts:
            if isinstance(part, str) and not part.strip():
                continue
            item = self.item.parse(part.strip() if isinstance(part, str) else part)
            if item not in items:
                items.append(item)
        if not items:
            raise _Rejected()
        if self.check:
            self.check(items)
        if self.canonical_str:
            return ",".join(c for c in self.item.choices if c in items)
        return tuple(items)


class Callback:
    """A function; None means 'not set', as confluent-kafka treats it."""

    expected = "a callable"

    def parse(self, value):
        if value is None or callable(value):
            return value
        raise _Rejected()


class Logger:
    """confluent-kafka's `logger` is a logging.Logger, which is not callable: duck-type it."""

    expected = "a logging.Logger (an object with a log() method)"

    def parse(self, value):
        if value is None or callable(getattr(value, "log", None)):
            return value
        raise _Rejected()


class PowerOfTwo(Int):
    """Ring sizes: the C core masks offsets into the ring, which needs a power of two."""

    @property
    def expected(self):
        return f"a power of two {_range_text(self.lo, self.hi)}"

    def parse(self, value):
        n = super().parse(value)
        if n & (n - 1):
            raise _Rejected()
        return n


class FileMode(Int):
    """A permission mode; strings are octal ("0600", "0o600") as they are in a shell."""

    def __init__(self):
        super().__init__(0, 0o7777)

    expected = "a file mode in 0..0o7777 (an int such as 0o600 or an octal string such as \"0600\")"

    def _to_int(self, value):
        if isinstance(value, str):
            try:
                return int(value.strip(), 8)
            except ValueError:
                raise _Rejected() from None
        return super()._to_int(value)


class _HostId:
    """A user or group of this host: a name from its database or a numeric id."""

    def __init__(self, kind, lookup):
        self.kind, self.lookup = kind, lookup
        self.expected = f"a {kind} name or a numeric {kind[0]}id"

    def parse(self, value):
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32 - 1:
            return value
        if isinstance(value, str) and value.strip():
            text = value.strip()
            if text.isdigit():
                return self.parse(int(text))
            try:
                return self.lookup(text)
            except KeyError:
                raise _Rejected(f"there is no {self.kind} named {text!r} on this host") from None
        raise _Rejected()


USER_ID = _HostId("user", lambda name: pwd.getpwnam(name).pw_uid)
GROUP_ID = _HostId("group", lambda name: grp.getgrnam(name).gr_gid)


class IdList(CsvList):
    """Users or groups: a comma-separated string, a list, or one bare uid/gid."""

    expected = "a non-empty comma-separated string or list of names or numeric ids"

    def parse(self, value):
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        return super().parse(value)


class Anything:
    """For inert broker keys whose values are too varied to be worth checking."""

    expected = "any value"

    def parse(self, value):
        return value


def _no_mixed_assignors(items):
    # librdkafka refuses this too: a group cannot switch protocols mid-rebalance.
    cooperative = set(COOPERATIVE_ASSIGNORS)
    if cooperative & set(items) and set(items) - cooperative:
        raise _Rejected("cooperative and eager assignment strategies must not be mixed")


# ---------------------------------------------------------------------------
# Key tables
# ---------------------------------------------------------------------------

PRODUCER, CONSUMER, ADMIN = "producer", "consumer", "admin"
ALL = frozenset({PRODUCER, CONSUMER, ADMIN})
P = frozenset({PRODUCER})
C = frozenset({CONSUMER})


@dataclass(frozen=True)
class Key:
    name: str
    type: object
    default: object
    doc: str
    kinds: frozenset = ALL
    aliases: tuple = ()
    no_effect: bool = False

    @property
    def attr(self):
        return _attr(self.name)


def _attr(name):
    return name.replace(".", "_").replace("-", "_")


def _inert(name, type_, default, doc, kinds=ALL, aliases=()):
    """A key accepted only so confluent-kafka configs work: it changes nothing here."""
    return Key(name, type_, default, doc, kinds, aliases, no_effect=True)


BOOL, STR, CALLBACK = Bool(), Str(), Callback()
# librdkafka's debug contexts; shmlog writes debug lines for cgrp, consumer, fetch, metadata, broker, msg
# and topic, and accepts the others (nothing of theirs happens on one host).
DEBUG_CONTEXTS = ("generic", "broker", "topic", "metadata", "feature", "queue", "msg", "protocol", "cgrp",
                  "security", "fetch", "interceptor", "plugin", "consumer", "admin", "eos", "mock", "assignor",
                  "conf", "telemetry", "all")
COMPRESSION = Enum(("none", "gzip", "snappy", "lz4", "zstd"), {"uncompressed": "none"})
RING_BYTES = PowerOfTwo(65536, 2**40)
RING_BYTES_DEFAULT = 64 * 1024 * 1024

_NET = "no network on one host"
_SEC = "no network to secure on one host; access is file permissions on the data dir and /dev/shm"
_META = "metadata comes from the supervisor directly, there is nothing to refresh or cache"
_NO_RETRY = ("an append is one call into the ring that lands or is refused: nothing is retried on a timer "
             "(a producer whose broker stopped looks for it again every 100 ms)")
_NO_FETCH = ("a shared-memory consumer sends no fetch requests: it reads each partition's ring as records are "
             "published (max.partition.fetch.bytes bounds a read from the segment files)")
_COMPAT = "deprecated or librdkafka-internal; kept so old configs load"

_SECURITY_STRINGS = (
    "ssl.cipher.suites", "ssl.curves.list", "ssl.sigalgs.list", "ssl.key.location",
    "ssl.key.password", "ssl.key.pem", "ssl.certificate.location", "ssl.certificate.pem",
    "ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores", "ssl.crl.location",
    "ssl.keystore.location", "ssl.keystore.password", "ssl.providers",
    "ssl.engine.location", "ssl.engine.id", "https.ca.location", "https.ca.pem",
    "sasl.kerberos.service.name", "sasl.kerberos.principal", "sasl.kerberos.kinit.cmd",
    "sasl.kerberos.keytab", "sasl.username", "sasl.password", "sasl.oauthbearer.config",
    "sasl.oauthbearer.scope", "sasl.oauthbearer.extensions",
    "sasl.oauthbearer.token.endpoint.url", "sasl.oauthbearer.grant.type",
    "sasl.oauthbearer.assertion.algorithm", "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem", "sasl.oauthbearer.assertion.file",
    "sasl.oauthbearer.assertion.claim.aud", "sasl.oauthbearer.assertion.claim.iss",
    "sasl.oauthbearer.assertion.claim.sub", "sasl.oauthbearer.assertion.jwt.template.file",
    "sasl.oauthbearer.metadata.authentication.type",
)

CLIENT_KEYS = (
    # --- shmlog and connection --------------------------------------------------
    Key("bootstrap.servers", STR, None,
        "Where the broker is: the `bootstrap_servers` of a running shmlog.Broker. Required.",
        aliases=("metadata.broker.list",)),
    Key("shmlog.busy.poll", BOOL, False,
        "Consumer spins on the ring instead of sleeping on a futex while waiting for data: "
        "lower latency, one busy core."),
    Key("shmlog.wait.spin.max.us", Int(0, 1_000_000), 200,
        "Blocking wait (shmlog.busy.poll=false): while records arrive less than this many "
        "microseconds apart the consumer spins (up to 1.5x the gap) before sleeping on its futex, "
        "because waking from a futex takes tens of microseconds on a VM; records further apart, "
        "or an idle partition, are waited for asleep. 0: always sleep at once (least CPU, higher "
        "latency).", C),
    Key("shmlog.wait.spin.share", Float(0, 1), 0.25,
        "Blocking wait: the share of the wall time the consumer may spend spinning (a budget that "
        "refills with time). A stream too slow to spin through within it (e.g. 10k records/s) is "
        "waited for asleep until shortly before the next record is due, then spun for. 1: spin "
        "through every gap below shmlog.wait.spin.max.us; 0: never spin.", C),
    Key("shmlog.claim.timeout.ms", Int(1, 3_600_000), 2000,
        "A consumer blocked behind a claim that a live producer has held (stopped by SIGSTOP, "
        "Ctrl-Z or a debugger) for this long fences it and reads on: the claim's offsets become an "
        "empty control batch, and the producer, when it resumes, fails that batch with "
        "_MSG_TIMED_OUT without writing it. The persister and the supervisor do the same after the "
        "default 2000 ms. A dead producer's claim is repaired at once, without this timeout. "
        "Producers accept the key; it changes nothing for them."),
    Key("message.max.bytes", Int(1000, 1_000_000_000), 1_000_000,
        "Largest record batch the client produces or accepts."),
    Key("statistics.interval.ms", Int(0, 86_400_000), 0,
        "How often `stats_cb` receives a JSON statistics string; 0 disables statistics."),
    # --- callbacks (confluent-kafka takes these in the config dict) -------------
    Key("error_cb", CALLBACK, None, "Called with a KafkaError for client-level errors."),
    Key("stats_cb", CALLBACK, None, "Called with a JSON string every `statistics.interval.ms`."),
    Key("logger", Logger(), None, "A logging.Logger that receives the client's log lines."),
    Key("on_delivery", CALLBACK, None,
        "Default delivery report callback `(err, msg)` for produce() calls that pass none.", P),
    Key("on_commit", CALLBACK, None,
        "Called `(err, partitions)` with the result of every offset commit.", C),
    # --- producer ----------------------------------------------------------------
    Key("acks", Int(-1, 1, {"all": -1}), -1,
        "When a delivery report fires: 0 accepted into the batch, 1 published in the "
        "leader ring, -1 (all) fsynced by every in-sync replica.", P,
        aliases=("request.required.acks",)),
    Key("linger.ms", Float(0, 900_000), 5.0,
        "How long to wait for more records before a batch is published.", P,
        aliases=("queue.buffering.max.ms",)),
    Key("batch.size", Int(1, INT32_MAX), 1_000_000, "Largest batch in bytes.", P),
    Key("batch.num.messages", Int(1, 1_000_000), 10_000, "Most records in one batch.", P),
    Key("queue.buffering.max.messages", Int(0, INT32_MAX), 100_000,
        "Most records awaiting delivery; produce() raises BufferError beyond it (0 = no limit).", P),
    Key("queue.buffering.max.kbytes", Int(1, INT32_MAX), 1_048_576,
        "Most KiB of records awaiting delivery, unless `buffer.memory` is given.", P),
    Key("buffer.memory", Int(0, INT64_MAX), 33_554_432,
        "Java name: when given, the byte bound on records awaiting delivery "
        "(replaces `queue.buffering.max.kbytes`).", P),
    Key("max.request.size", Int(0, INT32_MAX), 1_048_576,
        "Java name: largest record batch a producer publishes.", P),
    Key("max.block.ms", Int(0, INT64_MAX), 60_000,
        "How long produce/flush wait for space in a full ring before failing.", P),
    Key("message.timeout.ms", Int(0, INT32_MAX), 300_000,
        "How long a record may wait for delivery before its report is an error (0 = forever).", P,
        aliases=("delivery.timeout.ms",)),
    Key("compression.type", COMPRESSION, "none", "Codec for record batches.", P,
        aliases=("compression.codec",)),
    Key("compression.level", Int(-1, 12), -1, "Codec level; -1 = the codec's default.", P),
    Key("retries", Int(0, INT32_MAX), INT32_MAX,
        "Whether batches a stopping broker refused are appended again when it is back (any value "
        "above 0; message.timeout.ms bounds how long). 0: they fail at once with _TRANSPORT.", P,
        aliases=("message.send.max.retries",)),
    Key("enable.idempotence", BOOL, True,
        "Exactly-once, in-order publishing per partition (producer id and sequence numbers); "
        "on unless acks is 0/1, retries 0 or max.in.flight above 5 are given (as in the Java client).", P),
    Key("enable.gapless.guarantee", BOOL, False,
        "Only false: a producer has no fatal state to stop in when a record times out (see docs).", P),
    Key("transactional.id", STR, None,
        "Enables transactions; identifies the producer across restarts.", P),
    Key("transaction.timeout.ms", Int(1000, INT32_MAX), 60_000,
        "How long a transaction may stay open before the coordinator aborts it.", P),
    Key("partitioner", Enum(("random", "consistent", "consistent_random", "murmur2",
                             "murmur2_random", "fnv1a", "fnv1a_random")), "murmur2_random",
        "How a partition is picked for records produced with partition=-1.", P),
    Key("delivery.report.only.error", BOOL, False, "Deliver reports for failed records only.", P),
    # --- consumer ----------------------------------------------------------------
    Key("group.id", STR, None, "Consumer group name; needed for subscribe() and commits.", C),
    Key("group.instance.id", STR, None, "Static membership: rejoin without a rebalance.", C),
    Key("enable.auto.commit", BOOL, True,
        "Commit stored offsets in the background every `auto.commit.interval.ms`.", C,
        aliases=("auto.commit.enable",)),
    Key("auto.commit.interval.ms", Int(0, 86_400_000), 5000, "Auto-commit period (0 = off).", C),
    Key("enable.auto.offset.store", BOOL, True,
        "Store the offset of each record handed to the application, for the next commit.", C),
    Key("auto.offset.reset",
        Enum(("earliest", "latest", "error"),
             {"smallest": "earliest", "beginning": "earliest", "largest": "latest", "end": "latest"}),
        "latest",
        "Where to start without a committed offset, or when it is out of range.", C),
    Key("isolation.level", Enum(("read_committed", "read_uncommitted")), "read_committed",
        "Whether records of open and aborted transactions are returned.", C),
    Key("session.timeout.ms", Int(1, 3_600_000), 45_000,
        "A member silent this long leaves the group (dead processes are noticed at once).", C),
    Key("heartbeat.interval.ms", Int(1, 3_600_000), 3000, "Member heartbeat period.", C),
    Key("max.poll.interval.ms", Int(1, 86_400_000), 300_000,
        "Longest allowed gap between poll() calls before the member leaves the group.", C),
    Key("partition.assignment.strategy",
        CsvList(Enum(EAGER_ASSIGNORS + COOPERATIVE_ASSIGNORS), check=_no_mixed_assignors),
        ("range", "roundrobin"),
        "Assignors in order of preference (a tuple after parsing).", C),
    Key("max.partition.fetch.bytes", Int(1, 1_000_000_000), 1_048_576,
        "Most bytes one fetch returns from one partition.", C,
        aliases=("fetch.message.max.bytes",)),
    Key("check.crcs", BOOL, False, "Verify the CRC32C of every consumed batch.", C),
    Key("max.poll.records", Int(1, INT32_MAX), 500,
        "Java name: most records one consume() call returns.", C),
    Key("enable.partition.eof", BOOL, False,
        "Deliver a _PARTITION_EOF event when a partition's end is reached.", C),
    # --- accepted, no effect on one host ------------------------------------------
    _inert("client.id", STR, "rdkafka", "it names the client in broker logs and quotas of a real cluster"),
    _inert("client.rack", STR, None, "there is one rack"),
    _inert("client.dns.lookup", Enum(("use_all_dns_ips", "resolve_canonical_bootstrap_servers_only")),
           "use_all_dns_ips", _NET),
    _inert("client.software.name", STR, None, _COMPAT),
    _inert("client.software.version", STR, None, _COMPAT),
    _inert("builtin.features", STR, None, _COMPAT),
    _inert("message.copy.max.bytes", Int(0, 1_000_000_000), 65535, _COMPAT),
    _inert("receive.message.max.bytes", Int(1000, INT32_MAX), 100_000_000, _NET),
    _inert("max.in.flight.requests.per.connection", Int(1, 1_000_000), 1_000_000,
           "an append is one synchronous call into the ring: at most one batch per partition is "
           "ever in flight (with `enable.idempotence` it must still be at most 5, as Kafka checks)",
           aliases=("max.in.flight",)),
    _inert("metadata.recovery.strategy", Enum(("none", "rebootstrap")), "rebootstrap", _META),
    _inert("metadata.recovery.rebootstrap.trigger.ms", Int(0, INT32_MAX), 300_000, _META),
    _inert("topic.metadata.refresh.interval.ms", Int(-1, 3_600_000), 300_000, _META),
    _inert("metadata.max.age.ms", Int(1, 86_400_000), 900_000, _META),
    _inert("topic.metadata.refresh.fast.interval.ms", Int(1, 60_000), 100, _META),
    _inert("topic.metadata.refresh.fast.cnt", Int(0, 1000), 10, _META),
    _inert("topic.metadata.refresh.sparse", BOOL, True, _META),
    _inert("topic.metadata.propagation.max.ms", Int(0, 3_600_000), 30_000, _META),
    _inert("topic.blacklist", STR, None, _META),
    Key("debug", CsvList(Enum(DEBUG_CONTEXTS)), None,
        "librdkafka's debug contexts (comma list): their debug lines go to `logger` (see docs/configuration.md)."),
    Key("log_level", Int(0, 7), 6, "Syslog level: log lines above it are not emitted (7 with `debug`)."),
    _inert("log.queue", BOOL, False, _COMPAT),
    _inert("log.thread.name", BOOL, True, _COMPAT),
    _inert("log.connection.close", BOOL, True, _NET),
    _inert("enable.random.seed", BOOL, True, _COMPAT),
    _inert("enabled_events", Int(0, INT32_MAX), 0, _COMPAT),
    _inert("internal.termination.signal", Int(0, 128), 0, _COMPAT),
    _inert("plugin.library.paths", STR, None, "librdkafka plugins cannot load into shmlog"),
    _inert("socket.timeout.ms", Int(10, 300_000), 60_000, _NET),
    _inert("socket.blocking.max.ms", Int(1, 60_000), 1000, _NET),
    _inert("socket.send.buffer.bytes", Int(0, 100_000_000), 0, _NET),
    _inert("socket.receive.buffer.bytes", Int(0, 100_000_000), 0, _NET),
    _inert("socket.keepalive.enable", BOOL, False, _NET),
    _inert("socket.nagle.disable", BOOL, True, _NET),
    _inert("socket.max.fails", Int(0, 1_000_000), 1, _NET),
    _inert("socket.connection.setup.timeout.ms", Int(1000, INT32_MAX), 30_000, _NET),
    _inert("broker.address.ttl", Int(0, 86_400_000), 1000, _NET),
    _inert("broker.address.family", Enum(("any", "v4", "v6")), "any", _NET),
    _inert("connections.max.idle.ms", Int(0, INT32_MAX), 0, _NET),
    _inert("reconnect.backoff.jitter.ms", Int(0, 3_600_000), 0, _NET),
    _inert("reconnect.backoff.ms", Int(0, 3_600_000), 100, _NET),
    _inert("reconnect.backoff.max.ms", Int(0, 3_600_000), 10_000, _NET),
    _inert("api.version.request", BOOL, True, "there is one broker version"),
    _inert("api.version.request.timeout.ms", Int(1, 300_000), 10_000, "there is one broker version"),
    _inert("api.version.fallback.ms", Int(0, 604_800_000), 0, "there is one broker version"),
    _inert("broker.version.fallback", STR, "0.10.0", "there is one broker version"),
    _inert("allow.auto.create.topics", BOOL, False,
           "topic auto-creation is decided by the broker's `auto.create.topics.enable`"),
    _inert("enable.metrics.push", BOOL, True, _NET),
    _inert("throttle_cb", CALLBACK, None, "nothing throttles clients on one host"),
    _inert("oauth_cb", CALLBACK, None, _SEC),
    _inert("security.protocol", Enum(("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")),
           "plaintext", _SEC),
    _inert("sasl.mechanism", STR, "GSSAPI", _SEC, aliases=("sasl.mechanisms",)),
    _inert("sasl.kerberos.min.time.before.relogin", Int(0, 86_400_000), 60_000, _SEC),
    _inert("sasl.oauthbearer.method", Enum(("default", "oidc")), "default", _SEC),
    _inert("sasl.oauthbearer.client.id", STR, None, _SEC,
           aliases=("sasl.oauthbearer.client.credentials.client.id",)),
    _inert("sasl.oauthbearer.client.secret", STR, None, _SEC,
           aliases=("sasl.oauthbearer.client.credentials.client.secret",)),
    _inert("sasl.oauthbearer.assertion.claim.exp.seconds", Int(1, INT32_MAX), 300, _SEC),
    _inert("sasl.oauthbearer.assertion.claim.nbf.seconds", Int(0, INT32_MAX), 60, _SEC),
    _inert("sasl.oauthbearer.assertion.claim.jti.include", BOOL, False, _SEC),
    _inert("enable.sasl.oauthbearer.unsecure.jwt", BOOL, False, _SEC),
    _inert("enable.ssl.certificate.verification", BOOL, True, _SEC),
    _inert("ssl.endpoint.identification.algorithm", Enum(("none", "https")), "https", _SEC),
    *(_inert(name, STR, None, _SEC) for name in _SECURITY_STRINGS),
    _inert("request.timeout.ms", Int(1, 900_000), 30_000,
           "there are no produce requests; `message.timeout.ms` bounds delivery", P),
    _inert("queuing.strategy", Enum(("fifo", "lifo")), "fifo", _COMPAT, P),
    _inert("produce.offset.report", BOOL, False, _COMPAT, P),
    _inert("queue.buffering.backpressure.threshold", Int(1, 1_000_000), 1, _NET, P),
    _inert("queued.min.messages", Int(1, 10_000_000), 100_000,
           "the consumer reads the ring in place; there is no prefetch queue", C),
    _inert("queued.max.messages.kbytes", Int(1, 2_097_151), 65_536,
           "the consumer reads the ring in place; there is no prefetch queue", C),
    _inert("fetch.queue.backoff.ms", Int(0, 300_000), 1000,
           "the consumer reads the ring in place; there is no prefetch queue", C),
    _inert("retry.backoff.ms", Int(1, 300_000), 100, _NO_RETRY, P),
    _inert("retry.backoff.max.ms", Int(1, 300_000), 1000, _NO_RETRY, P),
    _inert("sticky.partitioning.linger.ms", Int(0, 900_000), 10,
           "keyless records stick to one partition until its batch is sent (within linger.ms), not for a time", P),
    _inert("fetch.error.backoff.ms", Int(0, 300_000), 500, _NET, C),
    _inert("fetch.min.bytes", Int(1, 100_000_000), 1, _NO_FETCH, C),
    _inert("fetch.wait.max.ms", Int(0, 300_000), 500, _NO_FETCH, C, aliases=("fetch.max.wait.ms",)),
    _inert("fetch.max.bytes", Int(0, 2_147_483_135), 52_428_800, _NO_FETCH, C),
    _inert("coordinator.query.interval.ms", Int(1, 3_600_000), 600_000,
           "the coordinator is always the supervisor", C),
    _inert("group.protocol", Enum(("classic", "consumer")), "classic",
           "the supervisor's coordinator has one protocol", C),
    _inert("group.protocol.type", STR, "consumer", "the supervisor's coordinator has one protocol", C),
    _inert("group.remote.assignor", STR, None, "the supervisor's coordinator has one protocol", C),
    _inert("offset.store.method", Enum(("none", "file", "broker")), "broker", _COMPAT, C),
    _inert("offset.store.path", STR, ".", _COMPAT, C),
    _inert("offset.store.sync.interval.ms", Int(-1, 86_400_000), -1, _COMPAT, C),
    _inert("consume.callback.max.messages", Int(0, 1_000_000), 0, _COMPAT, C),
)

# ---------------------------------------------------------------------------
# Topic names: Kafka's rule (org.apache.kafka.common.internals.Topic), shared by the
# AdminClient (which refuses a bad name without asking) and the supervisor (which decides).
# ---------------------------------------------------------------------------

TOPIC_NAME_MAX_CHARS = 249
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")
# Topics the broker creates and owns; users cannot create them (Kafka refuses to create its
# internal metadata topic the same way, with INVALID_REQUEST).
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
# Topics whose deletion the broker refuses (INVALID_REQUEST): its internal topics, and the
# schema registry's (shmlog.schema_registry.SCHEMAS_TOPIC). Deleted, each would come back
# empty on next use: committed offsets or registered schemas gone. (Kafka's kafka-topics tool
# refuses to delete an internal topic; here the broker decides, for every client.)
SCHEMAS_TOPIC = "_schemas"
UNDELETABLE_TOPICS = INTERNAL_TOPICS | {SCHEMAS_TOPIC}
# Topics the log cleaner compacts whatever their cleanup.policy says: their readers replay
# them on start (committed offsets, transaction state, schemas), which must stay bounded.
COMPACTED_TOPICS = INTERNAL_TOPICS | {SCHEMAS_TOPIC}


def topic_name_problem(name):
    """Why `name` is not a legal topic name, or None: 1..249 characters, each an ASCII letter
    or digit, '.', '_' or '-', and not "." or "..". (Refused with TOPIC_EXCEPTION, Kafka's
    INVALID_TOPIC_EXCEPTION, code 17.)"""
    if not isinstance(name, str):
        return f"a topic name must be a string, not {type(name).__name__}"
    if not name:
        return "a topic name cannot be empty"
    if name in (".", ".."):
        return f'"{name}" is not a topic name ("." and ".." are not allowed)'
    if len(name) > TOPIC_NAME_MAX_CHARS:
        return (f"the topic name {name[:40]!r}... is {len(name)} characters long; "
                f"at most {TOPIC_NAME_MAX_CHARS} are allowed")
    if not _TOPIC_NAME.fullmatch(name):
        bad = next(c for c in name if not _TOPIC_NAME.fullmatch(c))
        shown = repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
        return f"the topic name {shown} contains {bad!r}: only ASCII letters and digits, '.', '_' and '-' are allowed"
    return None


def topic_names_collide(a, b):
    """Kafka refuses a topic whose name equals an existing one's once '.' and '_' are taken as
    the same character (its metric names cannot tell them apart): "a.b" and "a_b" collide."""
    return a != b and a.replace(".", "_") == b.replace(".", "_")


_AS_PRODUCED = "batches are stored as the producer compressed them"

# Kafka's topic-level configs, as given to NewTopic(config=...) or alter_configs.
TOPIC_KEYS = (
    Key("cleanup.policy", CsvList(Enum(("compact", "delete")), canonical_str=True), "delete",
        "delete: drop old segments by retention; compact: keep the newest record per key; "
        "both: \"compact,delete\"."),
    Key("retention.ms", Int(-1, INT64_MAX), 604_800_000,
        "Age after which a segment may be deleted (-1 = forever)."),
    Key("retention.bytes", Int(-1, INT64_MAX), -1,
        "Partition size beyond which old segments are deleted (-1 = no limit)."),
    Key("segment.bytes", Int(1024, INT32_MAX), 1_073_741_824, "Size at which a segment file rolls."),
    Key("segment.ms", Int(1, INT64_MAX), 604_800_000, "Age at which a segment file rolls."),
    Key("segment.index.bytes", Int(4, INT32_MAX), 10_485_760, "Largest offset index per segment."),
    Key("segment.jitter.ms", Int(0, INT64_MAX), 0, "Random subtraction from `segment.ms`."),
    Key("max.message.bytes", Int(0, INT32_MAX), 1_048_588, "Largest record batch the topic accepts."),
    Key("min.insync.replicas", Int(1, INT32_MAX), 1,
        "In-sync replicas (the leader included) an acks=all batch needs; fewer: NOT_ENOUGH_REPLICAS (before the "
        "append) or NOT_ENOUGH_REPLICAS_AFTER_APPEND."),
    Key("message.timestamp.type", Enum(("CreateTime", "LogAppendTime")), "CreateTime",
        "CreateTime: records keep the producer's timestamps. LogAppendTime: each batch is stamped with "
        "the time it is appended to the log (by the producer's append into the ring, or the Kafka "
        "listener's), and every record of it is read with that time."),
    _inert("compression.type",
           Enum(("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"), {"none": "uncompressed"}),
           "producer", _AS_PRODUCED),
    Key("flush.messages", Int(1, INT64_MAX), INT64_MAX, "Records between forced fsyncs."),
    Key("flush.ms", Int(0, INT64_MAX), INT64_MAX, "Milliseconds between forced fsyncs."),
    Key("min.compaction.lag.ms", Int(0, INT64_MAX), 0,
        "Records stay uncompacted this long: a segment is cleaned once its largest timestamp is this old."),
    Key("max.compaction.lag.ms", Int(1, INT64_MAX), INT64_MAX,
        "A partition whose oldest uncleaned segment is this old is cleaned whatever its dirty ratio."),
    Key("delete.retention.ms", Int(0, INT64_MAX), 86_400_000,
        "How long a compacted topic keeps a tombstone (null value) after its timestamp."),
    Key("min.cleanable.dirty.ratio", Float(0, 1), 0.5,
        "Uncleaned / total bytes of the cleanable segments at which the log cleaner cleans a partition."),
    Key("unclean.leader.election.enable", BOOL, False,
        "Let a replica outside the ISR lead when no in-sync replica can (it may lack acknowledged records)."),
    Key("index.interval.bytes", Int(0, INT32_MAX), 4096, "Bytes between offset index entries."),
    _inert("file.delete.delay.ms", Int(0, INT64_MAX), 60_000,
           "segments that retention removes are deleted at once (readers that mapped them keep reading); "
           "a deleted topic's directories go about a second after the delete"),
    _inert("preallocate", BOOL, False, "segment files grow as they are written"),
    Key("ring.bytes", RING_BYTES, RING_BYTES_DEFAULT,
        "shmlog: size of each partition's shared-memory ring (a power of two)."),
    Key("ring.slots", Int(0, 65536), 0,
        "shmlog: producer processes (and as many zero-copy reader pins) each partition ring "
        "admits at once; 0 sizes it by ring.bytes (one per 64 KiB, 64..1024)."),
    Key("shmlog.persist", BOOL, True,
        "shmlog: false makes a memory-only topic (docs/durability.md): nothing is written to disk, "
        "the ring is overwritten as it wraps, acks=all is refused; fixed at creation."),
)

TOPIC_DEFAULTS = MappingProxyType({k.name: k.default for k in TOPIC_KEYS})

_BROKER_NET = ("the Kafka listener is one process serving each connection in its own thread, with the kernel's "
               "socket buffer sizes; there is one listener and no inter-broker traffic")
_MIRRORS = "followers are copied by one mirror process per log dir, from the leader's segment files"

BROKER_KEYS = (
    Key("log.dirs", CsvList(), None,
        "Directories for segment files, one per replica (ideally on distinct disks). "
        "Default: the data dir.", aliases=("log.dir",)),
    Key("message.max.bytes", Int(0, INT32_MAX), 1_048_588,
        "Default `max.message.bytes` for topics."),
    Key("num.partitions", Int(1, INT32_MAX), 1, "Partitions of an auto-created topic."),
    Key("default.replication.factor", Int(1, INT32_MAX), 1,
        "Replicas (log dirs) of a topic created without a replication factor; at most the number of log dirs."),
    Key("auto.create.topics.enable", BOOL, True,
        "Create a topic on first produce or subscribe when it does not exist."),
    Key("delete.topic.enable", BOOL, True,
        "Allow delete_topics; false refuses it with TOPIC_DELETION_DISABLED."),
    Key("log.flush.interval.messages", Int(1, INT64_MAX), INT64_MAX,
        "Default `flush.messages` for topics."),
    Key("log.flush.interval.ms", Int(0, INT64_MAX), None,
        "Default `flush.ms` for topics (unset = the topic default)."),
    Key("log.retention.ms", Int(-1, INT64_MAX), None,
        "Default `retention.ms`. Unset: taken from `log.retention.minutes`, "
        "else `log.retention.hours`; always set after parsing."),
    Key("log.retention.minutes", Int(-1, INT32_MAX), None, "See `log.retention.ms`."),
    Key("log.retention.hours", Int(-1, INT32_MAX), 168, "See `log.retention.ms`."),
    Key("log.retention.bytes", Int(-1, INT64_MAX), -1, "Default `retention.bytes`."),
    Key("log.retention.check.interval.ms", Int(1, INT64_MAX), 300_000,
        "How often persisters apply retention."),
    Key("log.segment.bytes", Int(1024, INT32_MAX), 1_073_741_824, "Default `segment.bytes`."),
    Key("log.roll.ms", Int(1, INT64_MAX), None,
        "Default `segment.ms`. Unset: taken from `log.roll.hours`; always set after parsing."),
    Key("log.roll.hours", Int(1, INT32_MAX), 168, "See `log.roll.ms`."),
    Key("log.cleanup.policy", CsvList(Enum(("compact", "delete")), canonical_str=True), "delete",
        "Default `cleanup.policy`."),
    Key("log.cleaner.enable", BOOL, True,
        "Run the log cleaner process, which compacts topics whose cleanup.policy has compact."),
    Key("log.cleaner.threads", Int(1, 64), 1, "Partitions the log cleaner cleans at once (threads)."),
    Key("log.cleaner.backoff.ms", Int(0, INT64_MAX), 15_000,
        "Pause of the log cleaner when no partition needs cleaning."),
    Key("log.cleaner.io.max.bytes.per.second", Float(0, None), 1.7976931348623157e308,
        "Bytes per second the log cleaner reads and writes at most (its throttle; Kafka's default, "
        "the largest double, means none)."),
    Key("log.cleaner.dedupe.buffer.size", Int(1024, INT64_MAX), 134_217_728,
        "Bytes of key map for one clean, at 24 bytes a key as Kafka counts: more keys than fit are "
        "cleaned by later passes."),
    Key("log.cleaner.min.cleanable.ratio", Float(0, 1), 0.5, "Default `min.cleanable.dirty.ratio`."),
    Key("log.cleaner.delete.retention.ms", Int(0, INT64_MAX), 86_400_000, "Default `delete.retention.ms`."),
    Key("log.cleaner.min.compaction.lag.ms", Int(0, INT64_MAX), 0, "Default `min.compaction.lag.ms`."),
    Key("log.cleaner.max.compaction.lag.ms", Int(1, INT64_MAX), INT64_MAX, "Default `max.compaction.lag.ms`."),
    Key("log.message.timestamp.type", Enum(("CreateTime", "LogAppendTime")), "CreateTime",
        "Default `message.timestamp.type`."),
    _inert("compression.type",
           Enum(("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"), {"none": "uncompressed"}),
           "producer", _AS_PRODUCED),
    Key("min.insync.replicas", Int(1, INT32_MAX), 1, "Default `min.insync.replicas` for topics."),
    Key("unclean.leader.election.enable", BOOL, False, "Default `unclean.leader.election.enable` for topics."),
    Key("replica.lag.time.max.ms", Int(0, INT64_MAX), 30_000,
        "A follower that has not caught up with the leader's log end for this long leaves the ISR."),
    Key("group.initial.rebalance.delay.ms", Int(0, INT32_MAX), 3000,
        "Wait for more members before the first rebalance of an empty group."),
    Key("group.min.session.timeout.ms", Int(0, INT32_MAX), 6000,
        "Smallest allowed `session.timeout.ms`."),
    Key("group.max.session.timeout.ms", Int(0, INT32_MAX), 1_800_000,
        "Largest allowed `session.timeout.ms`."),
    Key("offsets.retention.minutes", Int(1, INT32_MAX), 10_080,
        "How long committed offsets of an empty group are kept."),
    Key("transaction.max.timeout.ms", Int(1, INT32_MAX), 900_000,
        "Largest `transaction.timeout.ms` a transactional producer may ask for (larger: "
        "INVALID_TRANSACTION_TIMEOUT)."),
    Key("transactional.id.expiration.ms", Int(1, INT32_MAX), 604_800_000,
        "A transactional id with no transaction open and no request for this long is forgotten."),
    Key("shm.mode", FileMode(), 0o600,
        "shmlog: permission mode of the /dev/shm objects; no bits for others (use "
        "`shmlog.shared.group`). Unset: 0o600, or 0o660 with `shmlog.shared.group`."),
    Key("shmlog.shared.group", GROUP_ID, None,
        "shmlog: a group (name or gid) the owner shares the broker with: its data dir, files and "
        "shared memory become group-readable (dirs 2750, files 0640, shm 0660, with that group) "
        "and its members may use the control channel. Unset: the owner only. See docs/security.md."),
    Key("shmlog.allowed.users", IdList(USER_ID), None,
        "shmlog: more users (names or uids) who may use the control channel (the owner always may; "
        "root only if named). The data dir gets o+x so they reach the socket. See docs/security.md."),
    Key("shmlog.allowed.groups", IdList(GROUP_ID), None,
        "shmlog: groups (names or gids) whose members may use the control channel. See "
        "docs/security.md."),
    Key("ring.bytes", RING_BYTES, RING_BYTES_DEFAULT, "shmlog: default `ring.bytes` for new topics."),
    Key("shmlog.shm.max.bytes", Int(0, INT64_MAX), None,
        "shmlog: most shared memory (bytes) this broker's rings may hold together; create_topics and "
        "create_partitions that would need more are refused with POLICY_VIOLATION before anything is "
        "allocated. Unset: no cap of its own (a request must still fit in /dev/shm's free space)."),
    Key("shmlog.log.level", Enum(("DEBUG", "INFO", "WARNING", "ERROR"), {"WARN": "WARNING"}), "INFO",
        "shmlog: the least severe level the supervisor and the persister log (stderr, `DIR/supervisor.log` "
        "for `shmlog broker start`). INFO: topic changes, group rebalances, clients attached and lost, "
        "persister starts and exits, recovery results; WARNING: problems only."),
    _inert("broker.id", Int(-1, INT32_MAX), -1, "there is one broker"),
    _inert("node.id", Int(-1, INT32_MAX), -1, "there is one broker"),
    _inert("process.roles", Anything(), None, "there is one broker"),
    _inert("broker.rack", STR, None, "there is one rack"),
    _inert("zookeeper.connect", Anything(), None, "metadata lives in the data dir"),
    _inert("controller.quorum.voters", Anything(), None, "metadata lives in the data dir"),
    _inert("controller.listener.names", Anything(), None, "metadata lives in the data dir"),
    Key("listeners", Listener(), None,
        "The Kafka-protocol TCP listener (docs/kafka-protocol.md), e.g. `PLAINTEXT://127.0.0.1:9092` or `SSL://...` "
        "(port 0: any free port, published in the broker status). Unset: no listener."),
    Key("advertised.listeners", Listener(), None,
        "The address Metadata gives clients for this broker. Unset: the bound address."),
    Key("sasl.enabled.mechanisms", CsvList(Enum(("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))),
        "SCRAM-SHA-256,SCRAM-SHA-512",
        "SASL mechanisms a SASL_PLAINTEXT or SASL_SSL listener offers; users and their salted credentials are "
        "set with `shmlog users set` (docs/kafka-protocol.md)."),
    Key("ssl.keystore.type", Enum(("PEM",)), "PEM",
        "Format of `ssl.keystore.location` and `ssl.truststore.location`: PEM only (JKS and PKCS12 are refused)."),
    Key("ssl.keystore.location", Str(), None,
        "An SSL listener's certificate chain and private key, one PEM file. Required for SSL://."),
    Key("ssl.key.password", Str(), None, "Password of the private key in `ssl.keystore.location`, if encrypted."),
    Key("ssl.truststore.type", Enum(("PEM",)), "PEM", "Format of `ssl.truststore.location`: PEM only."),
    Key("ssl.truststore.location", Str(), None,
        "CA certificates (PEM) client certificates are checked against; required by `ssl.client.auth`."),
    Key("ssl.client.auth", Enum(("none", "requested", "required")), "none",
        "Whether an SSL listener asks clients for a certificate (`requested`) or refuses those without a valid "
        "one (`required`)."),
    Key("shmlog.listener.allow.insecure", BOOL, False,
        "shmlog: allow a PLAINTEXT listener on an address other than loopback (a warning is logged)."),
    Key("max.connections", Int(1, 100_000), 1000,
        "Most client connections the Kafka listener holds at once; more are closed on accept."),
    Key("authorizer.class.name", Enum(("kafka.security.authorizer.AclAuthorizer",
                                       "org.apache.kafka.metadata.authorizer.StandardAuthorizer")), None,
        "Set (to either Kafka authorizer's name): the Kafka listener enforces ACLs on every request "
        "(docs/kafka-protocol.md). Unset: every authenticated client may use every API."),
    Key("super.users", Str(), None,
        "Principals the authorizer allows everything, `;`-separated, e.g. `User:admin;User:ops`."),
    Key("allow.everyone.if.no.acl.found", BOOL, False,
        "With an authorizer: a resource no ACL matches is open to everyone (default: to no one)."),
    _inert("listener.security.protocol.map", Anything(), None, _BROKER_NET),
    _inert("inter.broker.listener.name", Anything(), None, _BROKER_NET),
    _inert("num.network.threads", Int(1, INT32_MAX), 3, _BROKER_NET),
    _inert("num.io.threads", Int(1, INT32_MAX), 8, "persisters are processes, not I/O threads"),
    _inert("num.replica.fetchers", Int(1, INT32_MAX), 1, _MIRRORS),
    _inert("replica.fetch.max.bytes", Int(0, INT32_MAX), 1_048_576, _MIRRORS),
    _inert("num.recovery.threads.per.data.dir", Int(1, INT32_MAX), 1,
           "persisters recover their own logs"),
    _inert("socket.send.buffer.bytes", Int(-1, INT32_MAX), 102_400, _BROKER_NET),
    _inert("socket.receive.buffer.bytes", Int(-1, INT32_MAX), 102_400, _BROKER_NET),
    Key("socket.request.max.bytes", Int(8, INT32_MAX), 104_857_600,
        "Largest request the Kafka listener reads; a larger one closes the connection."),
    Key("offsets.topic.segment.bytes", Int(1024, INT32_MAX), 104_857_600,
        "`segment.bytes` of `__consumer_offsets` when the broker creates it (smaller segments are "
        "compacted sooner: only sealed segments are cleaned)."),
    Key("schemas.topic.segment.bytes", Int(1024, INT32_MAX), 10_485_760,
        "`segment.bytes` of `_schemas` when the broker creates it without one (the log cleaner "
        "compacts only sealed segments, so this bounds what a schema registry replays uncompacted)."),
    _inert("offsets.topic.replication.factor", Int(1, 32767), 3, "group offsets live in the data dir"),
    _inert("offsets.topic.num.partitions", Int(1, INT32_MAX), 50, "group offsets live in the data dir"),
    _inert("transaction.state.log.replication.factor", Int(1, 32767), 3,
           "transaction state lives in the data dir"),
    _inert("transaction.state.log.min.isr", Int(1, INT32_MAX), 2,
           "transaction state lives in the data dir"),
)

# Kafka's broker-level defaults for topic configs (its "synonyms").
_TOPIC_DEFAULT_FROM_BROKER = MappingProxyType({
    "cleanup.policy": "log.cleanup.policy",
    "retention.ms": "log.retention.ms",
    "retention.bytes": "log.retention.bytes",
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
    "max.message.bytes": "message.max.bytes",
    "min.insync.replicas": "min.insync.replicas",
    "message.timestamp.type": "log.message.timestamp.type",
    "compression.type": "compression.type",
    "flush.messages": "log.flush.interval.messages",
    "flush.ms": "log.flush.interval.ms",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
    "ring.bytes": "ring.bytes",
    "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
    "delete.retention.ms": "log.cleaner.delete.retention.ms",
    "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
    "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
})

# Kafka takes a duration in the finest unit given, whatever the dict order.
_BROKER_UNIT_FAMILIES = MappingProxyType({
    "log.retention.ms": (("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000)),
    "log.roll.ms": (("log.roll.hours", 3_600_000),),
})


def _index(keys):
    """Every spelling -> its Key; a spelling used twice is a table bug, caught at import."""
    index = {}
    for key in keys:
        for spelling in (key.name, *key.aliases):
            assert spelling not in index, f"duplicate config spelling {spelling}"
            index[spelling] = key
    return MappingProxyType(index)


_CLIENT_INDEX = _index(CLIENT_KEYS)
_TOPIC_INDEX = _index(TOPIC_KEYS)
_BROKER_INDEX = _index(BROKER_KEYS)

_NESTED_TOPIC_CONFIG = "default.topic.config"
_TOPIC_PREFIX = "topic."


# ---------------------------------------------------------------------------
# Config object
# ---------------------------------------------------------------------------

_SECRET_WORDS = ("password", "secret", "passphrase", ".pem", "sasl.oauthbearer.config")


class Config:
    """Parsed configuration: one read-only attribute per canonical key ('.' -> '_').

    kind       'producer', 'consumer', 'admin' or 'broker'
    explicit   canonical keys the user gave (and that apply to this kind)
    no_effect  the subset of `explicit` that has no effect on one host
    ignored    canonical keys the user gave that belong to another client kind
               (accepted and validated, not applied: librdkafka warns and ignores)
    """

    def __init__(self, kind, values, index, explicit=(), no_effect=(), ignored=()):
        own = {
            "kind": kind, "explicit": frozenset(explicit), "no_effect": frozenset(no_effect),
            "ignored": frozenset(ignored), "_values": dict(values), "_index": index,
        }
        for name, value in own.items():
            object.__setattr__(self, name, value)
        for name, value in values.items():
            object.__setattr__(self, _attr(name), value)

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only; parse a new dict instead")

    def __delattr__(self, name):
        raise AttributeError("Config is read-only; parse a new dict instead")

    def get(self, key, default=None):
        """Value by canonical key, or by any alias of it."""
        known = self._index.get(key)
        name = known.name if known is not None else key
        return self._values.get(name, default)

    def as_dict(self):
        return dict(self._values)

    def __repr__(self):
        shown = {k: ("***" if any(w in k for w in _SECRET_WORDS) else self._values[k])
                 for k in sorted(self.explicit)}
        return f"Config(kind={self.kind!r}, explicit={shown!r})"


_OWN_ATTRS = {"kind", "explicit", "no_effect", "ignored", "get", "as_dict"}
assert not _OWN_ATTRS & {k.attr for k in CLIENT_KEYS + BROKER_KEYS}, "key shadows a Config member"


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------

def _show(value):
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _spelled(spelling, key):
    return f'"{spelling}"' if spelling == key.name else f'"{spelling}" (alias of "{key.name}")'


def _convert(what, spelling, key, value):
    """Run the key's type; None means 'the default', as confluent-kafka passes it (NULL)."""
    if value is None:
        return key.default
    try:
        return key.type.parse(value)
    except _Rejected as rejected:
        detail = rejected.detail or f"expected {key.type.expected}"
        raise _invalid(f"Invalid value {_show(value)} for {what} {_spelled(spelling, key)}: "
                       f"{detail}") from None


def _unknown(what, spelling, indexes, probe=None, restyle=str):
    """Name the key as given; suggest the known spelling closest to `probe`, written the
    way the user writes keys (`restyle`), so the suggestion can be pasted back."""
    known = [s for index in indexes for s in index]
    close = difflib.get_close_matches(probe or spelling, known, n=1, cutoff=0.75)
    hint = f' (did you mean "{restyle(close[0])}"?)' if close else ""
    return _invalid(f'No such {what}: "{spelling}"{hint}')


def _check_dict(what, conf):
    if not isinstance(conf, dict):
        raise _invalid(f"{what} must be a dict, not {type(conf).__name__}")
    for spelling in conf:
        if not isinstance(spelling, str):
            raise _invalid(f"{what} property names must be strings, not {spelling!r}")


def _apply(key, given, parsed, values, explicit, no_effect):
    values[key.name] = parsed
    # None resets to the default, so a later None undoes an earlier spelling.
    if given is None:
        explicit.discard(key.name)
        no_effect.discard(key.name)
        return
    explicit.add(key.name)
    if key.no_effect:
        no_effect.add(key.name)


def _merge_nested_topic_config(conf):
    """confluent-kafka merges `default.topic.config` into the top level, nested values winning.

    Returns the merged items in dict order, and the spellings that came from the nested
    dict (those may also be Kafka topic configs, which the top level may not).
    """
    merged = dict(conf)
    nested = merged.pop(_NESTED_TOPIC_CONFIG, None)
    if nested is None:
        return list(merged.items()), frozenset()
    _check_dict(f'"{_NESTED_TOPIC_CONFIG}"', nested)
    merged.update(nested)
    return list(merged.items()), frozenset(nested)


def _parse_client(kind, conf):
    _check_dict("Configuration", conf)
    items, nested = _merge_nested_topic_config(conf)
    values = {k.name: k.default for k in CLIENT_KEYS if kind in k.kinds}
    explicit, no_effect, ignored, topic_config = set(), set(), set(), {}

    for spelling, value in items:
        key, topic_key = _resolve_client_spelling(spelling, spelling in nested)
        if topic_key is not None:
            if value is not None:
                topic_config[topic_key.name] = _convert("topic configuration property",
                                                        spelling, topic_key, value)
            continue
        parsed = _convert("configuration property", spelling, key, value)
        if kind in key.kinds:
            _apply(key, value, parsed, values, explicit, no_effect)
        elif value is not None:
            ignored.add(key.name)

    values[_NESTED_TOPIC_CONFIG] = MappingProxyType(topic_config)
    for rule in _CLIENT_RULES[kind]:
        rule(values, explicit)
    return Config(kind, values, _CLIENT_INDEX, explicit, no_effect, ignored)


def _resolve_client_spelling(spelling, from_nested):
    """(client Key, None) or (None, topic Key); topic configs only where librdkafka allows them."""
    if spelling in _CLIENT_INDEX:
        return _CLIENT_INDEX[spelling], None
    prefixed = spelling.startswith(_TOPIC_PREFIX)
    bare = spelling[len(_TOPIC_PREFIX):] if prefixed else spelling
    if prefixed and bare in _CLIENT_INDEX:
        return _CLIENT_INDEX[bare], None
    if (prefixed or from_nested) and bare in _TOPIC_INDEX:
        return None, _TOPIC_INDEX[bare]
    indexes = (_CLIENT_INDEX, _TOPIC_INDEX) if (prefixed or from_nested) else (_CLIENT_INDEX,)
    restyle = (lambda s: _TOPIC_PREFIX + s if s in _TOPIC_INDEX else s) if prefixed else str
    raise _unknown("configuration property", spelling, indexes, probe=bare, restyle=restyle)


# --- cross-key rules: librdkafka's own consistency checks, applied after parsing ---------

def _require_bootstrap_servers(values, explicit):
    if not values["bootstrap.servers"]:
        raise _invalid('Missing configuration property "bootstrap.servers": set it to the '
                       '`bootstrap_servers` of a running shmlog.Broker (a "shm://..." URL)')


def _transactions_imply_idempotence(values, explicit):
    if values["transactional.id"] is None:
        return
    if "enable.idempotence" in explicit and not values["enable.idempotence"]:
        raise _invalid('"transactional.id" requires "enable.idempotence" to be true')
    values["enable.idempotence"] = True
    # A record must not outlive the transaction it belongs to.
    if "message.timeout.ms" not in explicit:
        values["message.timeout.ms"] = values["transaction.timeout.ms"]
    elif not 0 < values["message.timeout.ms"] <= values["transaction.timeout.ms"]:
        raise _invalid(f'"message.timeout.ms" ({values["message.timeout.ms"]}) must be at most '
                       f'"transaction.timeout.ms" ({values["transaction.timeout.ms"]}) '
                       f'when "transactional.id" is set')


_IDEMPOTENCE_LIMITS = (
    # key, acceptable(value), what it must be
    ("acks", lambda v: v == -1, "all (-1)"),
    ("retries", lambda v: v >= 1, ">= 1"),
    ("max.in.flight.requests.per.connection", lambda v: v <= 5, "<= 5"),
)


def _idempotence_limits(values, explicit):
    """enable.idempotence given true (or implied by transactional.id) forces acks=all and refuses
    the settings that contradict it; left at its default it is on only where nothing given
    contradicts it, as the Java client decides."""
    conflicts = [(name, must_be) for name, acceptable, must_be in _IDEMPOTENCE_LIMITS
                 if name in explicit and not acceptable(values[name])]
    if "enable.idempotence" not in explicit and values["transactional.id"] is None:
        values["enable.idempotence"] = not conflicts
        return
    if not values["enable.idempotence"]:
        return
    if conflicts:
        raise _invalid("; ".join(f'"{name}" must be {must_be} when "enable.idempotence" is true '
                                 f'(got {values[name]})' for name, must_be in conflicts))
    values["acks"] = -1


def _no_gapless_guarantee(values, explicit):
    """librdkafka's gapless guarantee stops an idempotent producer with a fatal error when a batch
    fails in a way that leaves a gap; shmlog's producer has no such fatal state (a record that
    times out while its broker is down fails alone and the ones after it are appended), so the
    guarantee is refused rather than promised."""
    if values["enable.gapless.guarantee"]:
        raise _invalid('"enable.gapless.guarantee" must be false: a record that times out '
                       '(message.timeout.ms) while the broker is down fails alone and the records after it are '
                       'still appended, which leaves a gap; shmlog has no fatal producer state to stop in instead')


def _fetch_max_bytes_covers_a_message(values, explicit):
    if values["fetch.max.bytes"] >= values["message.max.bytes"]:
        return
    if "fetch.max.bytes" in explicit:
        raise _invalid(f'"fetch.max.bytes" ({values["fetch.max.bytes"]}) must be >= '
                       f'"message.max.bytes" ({values["message.max.bytes"]})')
    values["fetch.max.bytes"] = values["message.max.bytes"]


_CLIENT_RULES = MappingProxyType({
    PRODUCER: (_require_bootstrap_servers, _transactions_imply_idempotence, _idempotence_limits,
               _no_gapless_guarantee),
    CONSUMER: (_require_bootstrap_servers, _fetch_max_bytes_covers_a_message),
    ADMIN: (_require_bootstrap_servers,),
})


def parse_producer_config(conf):
    """A Producer's dict -> Config; raises KafkaException(_INVALID_ARG) naming the key."""
    return _parse_client(PRODUCER, conf)


def parse_consumer_config(conf):
    """A Consumer's dict -> Config; raises KafkaException(_INVALID_ARG) naming the key."""
    return _parse_client(CONSUMER, conf)


def parse_admin_config(conf):
    """An AdminClient's dict -> Config; raises KafkaException(_INVALID_ARG) naming the key."""
    return _parse_client(ADMIN, conf)


def parse_topic_config(conf):
    """NewTopic/alter_configs config -> {canonical key: normalized value}, only keys given.

    Values may be strings, as AdminClient config dicts usually are; None is skipped.
    Defaults for keys not given are in TOPIC_DEFAULTS (or effective_topic_config()).
    """
    _check_dict("Topic configuration", conf)
    parsed = {}
    for spelling, value in conf.items():
        key = _TOPIC_INDEX.get(spelling)
        if key is None:
            raise _unknown("topic configuration property", spelling, (_TOPIC_INDEX,))
        if value is not None:
            parsed[key.name] = _convert("topic configuration property", spelling, key, value)
    return parsed


def memory_only_problem(topic, effective, replication_factor=1):
    """Why a topic's effective config cannot be memory-only (shmlog.persist=false), or None."""
    if effective.get("shmlog.persist", True):
        return None
    if "compact" in str(effective.get("cleanup.policy", "")).split(","):
        return (f"topic {topic!r}: shmlog.persist=false cannot go with cleanup.policy=compact "
                f"(the log cleaner compacts segment files, and a memory-only topic has none)")
    if replication_factor > 1:
        return (f"topic {topic!r}: shmlog.persist=false cannot go with replication factor {replication_factor} "
                f"(followers copy segment files, and a memory-only topic has none)")
    return None


def parse_broker_config(conf):
    """shmlog.Broker(data_dir, **configs) -> Config; keys with dots or underscores."""
    _check_dict("Broker configuration", conf)
    values = {k.name: k.default for k in BROKER_KEYS}
    explicit, no_effect = set(), set()
    for spelling, value in conf.items():
        # Python kwargs cannot contain dots, so log_dirs means log.dirs.
        key = _BROKER_INDEX.get(spelling) or _BROKER_INDEX.get(spelling.replace("_", "."))
        if key is None:
            kwargs_style = "." not in spelling
            raise _unknown("broker configuration property", spelling, (_BROKER_INDEX,),
                           probe=spelling.replace("_", "."),
                           restyle=(lambda s: s.replace(".", "_")) if kwargs_style else str)
        parsed = _convert("broker configuration property", spelling, key, value)
        _apply(key, value, parsed, values, explicit, no_effect)
    _derive_durations(values, explicit)
    _derive_access(values, explicit)
    return Config("broker", values, _BROKER_INDEX, explicit, no_effect)


def _derive_access(values, explicit):
    """shm.mode follows shmlog.shared.group unless given; given, it may not open the broker's
    memory to every user, and the owner keeps read-write. The shared group must be one the
    owner can give files to (a member, or root). See docs/security.md."""
    group = values["shmlog.shared.group"]
    if "shm.mode" not in explicit:
        values["shm.mode"] = 0o660 if group is not None else 0o600
    mode = values["shm.mode"]
    if mode & 0o007:
        raise _invalid(f"shm.mode={mode:#o} would let every user of this host read or write the broker's "
                       f"shared memory: share with one group instead (shmlog.shared.group; docs/security.md)")
    if mode & 0o600 != 0o600:
        raise _invalid(f"shm.mode={mode:#o} must give the owner read and write (0o600)")
    if group is not None and os.geteuid() != 0 and group != os.getegid() and group not in os.getgroups():
        raise _invalid(f"shmlog.shared.group={group}: this user (uid {os.geteuid()}) is not a member of that "
                       f"group, so the broker cannot give its files to it (docs/security.md)")


def _derive_durations(values, explicit):
    for target, sources in _BROKER_UNIT_FAMILIES.items():
        if target in explicit:
            continue
        given = [(name, scale) for name, scale in sources if name in explicit]
        name, scale = (given or [s for s in sources if values[s[0]] is not None])[0]
        amount = values[name]
        values[target] = -1 if amount < 0 else amount * scale


def effective_topic_config(topic_conf=None, broker=None):
    """Every topic key with its value: Kafka's default, overridden by the broker's
    default for it (a parse_broker_config result), overridden by the topic's own config."""
    effective = dict(TOPIC_DEFAULTS)
    if broker is not None:
        for topic_key, broker_key in _TOPIC_DEFAULT_FROM_BROKER.items():
            if broker.get(broker_key) is not None:
                effective[topic_key] = broker.get(broker_key)
    effective.update(parse_topic_config(topic_conf or {}))
    return effective
