"""The `shmlog` command: run a broker, manage topics, produce and consume lines, clean up /dev/shm.

    shmlog broker start|stop|status --data-dir D
    shmlog topics create|list|describe|alter|delete ... --data-dir D   (topics.py)
    shmlog produce TOPIC --data-dir D          (lines on stdin -> records; produce.py)
    shmlog consume TOPIC --data-dir D          (records -> lines on stdout; consume.py)
    shmlog metadata -L [-J] --data-dir D       (brokers, topics, partitions; metadata.py)
    shmlog cleanup [--data-dir D | --all --force]

`--data-dir` may also come from the environment variable SHMLOG_DATA_DIR. Every error
is one line on stderr and a non-zero exit: 1 for a failure, 2 for a usage error.
See docs/cli.md for each command's output.
"""
import collections
import json
import os

import click
import posix_ipc

from shmlog import __version__, control, security
from shmlog._native import shm
from shmlog.broker import launcher as broker_mod
from shmlog.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Failure,
    bootstrap,
    config_option,
    data_dir_option,
    print_error,
    quiet_stdout,
    table,
)
from shmlog.cli.acls import acls
from shmlog.cli.bench import bench
from shmlog.cli.bench_partitions import bench_partitions_command
from shmlog.cli.connect import connect
from shmlog.cli.consume import consume
from shmlog.cli.groups import groups
from shmlog.cli.log import dump_log, log_group, verify_log
from shmlog.cli.metadata import metadata
from shmlog.cli.metrics import metrics
from shmlog.cli.mirror import mirror
from shmlog.cli.produce import produce
from shmlog.cli.schemas import schemas
from shmlog.cli.streams import streams
from shmlog.cli.top import top
from shmlog.cli.topics import topics
from shmlog.cli.transactions import transactions
from shmlog.cli.users import users
from shmlog.config import parse_broker_config
from shmlog.errors import KafkaError, KafkaException, reason_of

# ---------------------------------------------------------------------------- helpers

def _human_bytes(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _broker_pid(data_dir):
    """The pid of the broker running for data_dir, or None when none answers (one that refuses
    us, or a socket that is not the data dir's broker, is an error that says so)."""
    try:
        ctl = control.Control(os.path.realpath(data_dir))
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError._TRANSPORT:
            return None
        raise
    try:
        return ctl.request("status").get("pid")
    except KafkaException:
        return -1  # it accepted the connection, so it runs, but would not say its pid
    finally:
        ctl.close()


# ---------------------------------------------------------------------------- the command tree

@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="shmlog", message="%(prog)s %(version)s")
def cli():
    """shmlog: a Kafka-semantics broker for one host over POSIX shared memory.

    Every command that talks to a broker takes --data-dir DIR (or $SHMLOG_DATA_DIR).
    """


# ---------------------------------------------------------------------------- broker

@cli.group()
def broker():
    """Start, stop and inspect the broker (supervisor) of a data directory."""


@broker.command("start")
@data_dir_option()
@config_option("A broker config (Kafka's name: num.partitions=3, ring.bytes=1048576, log.dirs=a,b). Repeatable.")
def broker_start(data_dir, configs):
    """Start a broker for DIR as a daemon; prints its pid and bootstrap.servers."""
    data_dir = os.path.realpath(data_dir)
    configs = dict(configs)
    parse_broker_config(configs)  # a bad key or value: a clear error here, not in the daemon's log
    running = _broker_pid(data_dir)
    if running is not None:
        raise Failure(f"a shmlog broker is already running for {data_dir} (pid {running})")
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise Failure(f"data dir {data_dir} exists and is not a directory")
    log_path = os.path.join(data_dir, "supervisor.log")
    log_size = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    try:
        pid = broker_mod.start(data_dir, configs)
    except KafkaException as exc:
        reason = _log_tail(log_path, log_size)
        raise Failure(reason_of(exc) + (f" ({reason})" if reason else "") + f"; see {log_path}") from None
    click.echo(f"started shmlog broker pid {pid} for {data_dir}")
    click.echo(f"bootstrap.servers={bootstrap(data_dir)}")


def _log_tail(path, since):
    """The last non-empty line the daemon wrote to its log after `since` bytes."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


@broker.command("stop")
@data_dir_option()
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="S",
              help="Seconds to wait for a clean exit before the broker is killed.")
def broker_stop(data_dir, timeout):
    """Stop the broker of DIR and wait until it has exited."""
    data_dir = os.path.realpath(data_dir)
    pid = broker_mod.stop(data_dir, timeout)
    click.echo(f"stopped shmlog broker pid {pid} for {data_dir}")


@broker.command("status")
@data_dir_option()
@click.option("--json", "as_json", is_flag=True, help="Print the broker's status reply as JSON.")
def broker_status(data_dir, as_json):
    """Show the broker's pids, clients and each partition's offsets and ring fill."""
    st = dict(broker_mod.status(data_dir))
    st.pop("ok", None)
    st.pop("id", None)
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    click.echo(f"broker     pid {st.get('pid')}  ({st.get('bootstrap_servers') or bootstrap(data_dir)})")
    persister = st.get("persister_pid")
    click.echo(f"persister  {'pid ' + str(persister) if persister else 'not running'}")
    kafka = st.get("kafka_listener")
    if kafka:
        click.echo(f"kafka      pid {kafka['pid']}  listening on {kafka['host']}:{kafka['port']}, advertised as "
                   f"{kafka['advertised_host']}:{kafka['advertised_port']}")
    clients = sorted(st.get("clients") or [], key=lambda c: (c.get("kind", ""), c.get("pid", 0)))
    listed = ", ".join(f"{c.get('kind', 'client')} pid {c.get('pid')}" for c in clients)
    click.echo(f"clients    {len(clients)}" + (f": {listed}" if listed else ""))
    parts = st.get("partitions") or []
    if not parts:
        click.echo("\nno topics")
        return
    rows = []
    for p in parts:
        ring_bytes = p.get("ring_bytes") or 0
        used = p.get("ring_used_bytes") or 0
        fill = 100.0 * used / ring_bytes if ring_bytes else 0.0
        fill_text = "<0.1%" if 0 < fill < 0.1 else f"{fill:.1f}%"
        rows.append([p["topic"], p["partition"], p["log_start_offset"], p["log_end_offset"],
                     p["persisted_offset"], p["flushed_offset"], fill_text, _human_bytes(ring_bytes)])
    click.echo("")
    click.echo(table(["TOPIC", "PARTITION", "LOG-START", "LOG-END", "PERSISTED", "FLUSHED", "RING-FILL",
                       "RING-SIZE"], rows))


# ---------------------------------------------------------------------------- cleanup

def _namespace_broker(ns, pids):
    """(pid, data_dir) of the supervisor of namespace ns among the processes that map its
    objects (`python -m shmlog.broker.supervisor <data_dir> ...`), or None."""
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if "-m" in argv and "shmlog.broker.supervisor" in argv:
            i = argv.index("shmlog.broker.supervisor") + 1
            if i < len(argv) and shm.namespace(argv[i]) == ns:
                return pid, argv[i]
    return None


def _mapped_by(names):
    """{name: [pids]} of live processes that map each /dev/shm object (those we may read)."""
    paths = {os.path.join(shm.SHM_DIR, n.lstrip("/")): n for n in names}
    users = collections.defaultdict(set)
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/maps", "rb") as f:
                maps = f.read().decode(errors="replace")
        except OSError:
            continue
        for line in maps.splitlines():
            fields = line.split(None, 5)  # address perms offset dev inode [path]
            path = fields[5].strip().removesuffix(" (deleted)") if len(fields) == 6 else ""
            if path in paths:
                users[paths[path]].add(int(entry))
    return {n: sorted(p) for n, p in users.items()}


def _size(name):
    try:
        return os.stat(os.path.join(shm.SHM_DIR, name.lstrip("/"))).st_size
    except OSError:
        return 0


def _namespace_of(name):
    rest = name.lstrip("/")[len(shm.PREFIX):]
    return rest.split(".", 1)[0]


@cli.command()
@data_dir_option(required=False)
@click.option("--all", "remove_all", is_flag=True,
              help="Without --data-dir: remove the objects of every namespace whose broker is not running.")
@click.option("--force", is_flag=True,
              help="Confirm --all; with --data-dir, remove objects even if live processes still map them.")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.pass_context
def cleanup(ctx, data_dir, remove_all, force, dry_run):
    """Remove stale /dev/shm objects a crashed broker left behind.

    With --data-dir (or $SHMLOG_DATA_DIR): remove that data dir's objects, refusing while its
    broker runs. Without it: list every shmlog object on this host by namespace; add
    --all --force to remove those whose broker is not running.
    """
    from click.core import ParameterSource
    if remove_all and ctx.get_parameter_source("data_dir") == ParameterSource.ENVIRONMENT:
        data_dir = None  # --all means the whole host even when $SHMLOG_DATA_DIR is set
    if data_dir is not None:
        if remove_all:
            raise click.UsageError("--all and --data-dir are mutually exclusive")
        return _cleanup_data_dir(data_dir, force, dry_run)
    if remove_all and not force and not dry_run:
        raise click.UsageError("--all removes the shared memory of every stopped shmlog broker on this host: "
                               "add --force to confirm (or --dry-run to see what it would remove)")
    if force and not remove_all:
        raise click.UsageError("--force without --data-dir needs --all")
    return _cleanup_host(remove_all, dry_run)


def _cleanup_data_dir(data_dir, force, dry_run):
    data_dir = os.path.realpath(data_dir)
    ns = shm.namespace(data_dir)
    pid = _broker_pid(data_dir)
    if pid is not None:
        raise Failure(f"a shmlog broker (pid {pid}) is running for {data_dir}: it owns its shared memory; "
                      f"stop it with `shmlog broker stop --data-dir {data_dir}` (that removes its objects)")
    names = shm.names_in_namespace(ns)
    if not names:
        click.echo(f"nothing to clean up for {data_dir} (namespace {ns})")
        return
    users = _mapped_by(names)
    if users and not force:
        pids = sorted({p for ps in users.values() for p in ps})
        raise Failure(f"{len(users)} of {len(names)} objects of {data_dir} are still mapped by running processes "
                      f"(pids {', '.join(map(str, pids))}): restart the broker to adopt them, stop those "
                      f"processes, or pass --force")
    removed = _remove(names, dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {removed} shared-memory object{'s' if removed != 1 else ''} of {data_dir} (namespace {ns})")


def _remove(names, dry_run):
    removed = 0
    for name in names:
        if dry_run:
            click.echo(f"would remove {name}")
            removed += 1
        elif shm.unlink(name):
            click.echo(f"removed {name}")
            removed += 1
    return removed


def _cleanup_host(remove_all, dry_run):
    names = shm.all_names()
    if not names:
        click.echo("no shmlog shared-memory objects on this host")
        return
    by_ns = collections.defaultdict(list)
    for name in names:
        by_ns[_namespace_of(name)].append(name)
    users = _mapped_by(names)
    stale = []
    me = os.geteuid()
    for ns in sorted(by_ns):
        objs = by_ns[ns]
        owner = _namespace_broker(ns, {p for n in objs for p in users.get(n, ())})
        uids = {shm.owner(n) for n in objs} - {None, me}
        total = sum(_size(n) for n in objs)
        if owner is not None:
            state = f"broker running: pid {owner[0]}, data dir {owner[1]}"
        elif uids and me != 0:  # another user's: we can neither see its broker nor remove them
            state = "of " + ", ".join(security.user_name(u) for u in sorted(uids)) + ": left alone"
        else:
            pids = sorted({p for n in objs for p in users.get(n, ())})
            state = "no broker running" + (f", mapped by pids {', '.join(map(str, pids))}" if pids else "")
            stale.extend(objs)
        click.echo(f"namespace {ns}: {len(objs)} object{'s' if len(objs) != 1 else ''}, "
                   f"{_human_bytes(total)} ({state})")
        for name in objs:
            click.echo(f"  {name}  {_human_bytes(_size(name))}")
    if not remove_all:
        if stale:
            click.echo(f"\n{len(stale)} object{'s' if len(stale) != 1 else ''} without a running broker: remove "
                       f"them with `shmlog cleanup --data-dir DIR` or, for every namespace, "
                       f"`shmlog cleanup --all --force`")
        return
    click.echo("")
    removed = _remove(stale, dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {removed} shared-memory object{'s' if removed != 1 else ''}"
               + (" (objects of running brokers are left alone)" if len(stale) < len(names) else ""))


# ---------------------------------------------------------------------------- groups in their own modules

cli.add_command(topics)    # docs/cli.md
cli.add_command(produce)   # docs/cli.md
cli.add_command(consume)   # docs/cli.md
cli.add_command(metadata)  # docs/cli.md
cli.add_command(dump_log)  # docs/durability.md
cli.add_command(verify_log)  # docs/durability.md
cli.add_command(log_group)   # docs/compaction.md
cli.add_command(schemas)   # docs/serialization.md
cli.add_command(groups)    # docs/consumer-groups.md
cli.add_command(users)     # docs/kafka-protocol.md
cli.add_command(acls)      # docs/kafka-protocol.md
cli.add_command(bench)     # docs/cli.md#shmlog-bench
cli.add_command(bench_partitions_command)   # bench/README.md, "scale"
cli.add_command(metrics)   # docs/observability.md
cli.add_command(top)       # docs/observability.md
cli.add_command(transactions)  # docs/exactly-once.md
cli.add_command(streams)   # docs/streams.md
cli.add_command(connect)   # docs/connect.md
cli.add_command(mirror)    # docs/migration.md


# ---------------------------------------------------------------------------- entry point

def main(argv=None):
    """Entry point of the `shmlog` console script and `python -m shmlog.cli`; returns the exit status."""
    try:
        rv = cli.main(args=argv, prog_name="shmlog", standalone_mode=False)
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx is not None else "shmlog"
        print_error(f"{exc.format_message()} (see `{cmd} --help`)", cmd)
        return EXIT_USAGE
    except click.ClickException as exc:
        print_error(exc.format_message())
        return exc.exit_code
    except click.Abort:
        return EXIT_INTERRUPTED  # Ctrl-C outside consume (click already ended the line)
    except KafkaException as exc:
        print_error(reason_of(exc))
        return EXIT_FAILURE
    except BrokenPipeError:
        quiet_stdout()
        return EXIT_FAILURE
    except posix_ipc.Error as exc:  # e.g. a broker's object vanished under us
        print_error(f"shared memory: {exc}")
        return EXIT_FAILURE
    except OSError as exc:
        print_error(f"{exc.strerror or exc}" + (f": {exc.filename}" if getattr(exc, "filename", None) else ""))
        return EXIT_FAILURE
    return rv if isinstance(rv, int) else 0


