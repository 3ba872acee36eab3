"""`shmlog bench partitions`: what many idle partitions cost a broker.

For each partition count: a fresh embedded broker (`shmlog.Broker`) in a temporary data dir
(under --data-dir), left to settle first (its processes start for a second or so after
Broker() returns, and timing the create over that charged ~1-2 s of their start-up to it on a
loaded machine), then one `create_topics` call creating the partitions (topics of at most
10,000 partitions each, ring.bytes as given), timed from the call until every future is done.
Then the bench waits until the persister has opened every partition (its open descriptors stop
changing and its CPU goes quiet) and measures, over an idle window with nothing produced or
consumed:
  - CPU % of one core of each broker process (the keeper, the supervisor and every process
    below it: persister, cleaner...), from psutil's cpu_times before and after the window;
  - the namespace's objects in /dev/shm: bytes allocated (st_blocks x 512) and their size;
  - the broker processes' RSS (resident pages, ring pages they touched included) and open
    descriptors.
Printed as a Markdown table, one row per partition count; not a test.
"""
import os
import shutil
import tempfile
import time

import psutil

MAX_PARTITIONS_PER_TOPIC = 10_000
SETTLE_TIMEOUT_S = 300.0
SETTLE_QUIET_S = 2.0


def broker_processes(keeper_pid):
    try:
        keeper = psutil.Process(keeper_pid)
        return [keeper] + keeper.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _name(proc):
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    for part in cmd:
        for role in ("persister", "supervisor", "keeper", "cleaner", "listener", "mirror"):
            if role in part:
                return role
    return os.path.basename(cmd[0]) if cmd else "?"


def _cpu_s(proc):
    t = proc.cpu_times()
    return t.user + t.system


def shm_usage(data_dir):
    from shmlog._native import shm
    allocated = size = 0
    for name in shm.names_in_namespace(shm.namespace(data_dir)):
        try:
            st = os.stat(os.path.join(shm.SHM_DIR, name.lstrip("/")))
        except FileNotFoundError:
            continue
        allocated += st.st_blocks * 512
        size += st.st_size
    return allocated, size


def _fds(procs):
    total = 0
    for proc in procs:
        try:
            total += proc.num_fds()
        except psutil.Error:
            pass
    return total


def wait_settled(keeper_pid, timeout_s=SETTLE_TIMEOUT_S):
    """Until the broker's descriptors stop changing and its processes use < 5% of a core, for
    SETTLE_QUIET_S in a row (the persister opening every new partition is part of creating it)."""
    deadline = time.monotonic() + timeout_s
    last = None
    quiet_since = None
    while time.monotonic() < deadline:
        procs = broker_processes(keeper_pid)
        before = {p.pid: _cpu_s(p) for p in procs}
        t0 = time.monotonic()
        time.sleep(0.5)
        spent = sum(_cpu_s(p) - before[p.pid] for p in procs if p.is_running())
        now = (_fds(procs), len(procs))
        if now == last and spent / (time.monotonic() - t0) < 0.05:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= SETTLE_QUIET_S:
                return True
        else:
            quiet_since = None
        last = now
    return False


def measure(partitions, ring_bytes=65536, idle_s=10.0, data_root=None, broker_configs=None, remove_later=None):
    """One row: a broker with `partitions` idle partitions. remove_later: a list the data dir is
    put on for the caller to remove, after the other rows (see run)."""
    import shmlog
    from shmlog.client.admin import AdminClient, NewTopic

    data_dir = tempfile.mkdtemp(prefix="shmlog-bench-partitions-", dir=data_root)
    row = {"partitions": partitions, "ring_bytes": ring_bytes}
    try:
        with shmlog.Broker(data_dir, **(broker_configs or {})) as broker:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
            wait_settled(broker.process.pid)   # the create alone is timed, not the broker's start-up
            topics, left, i = [], partitions, 0
            while left > 0:
                n = min(left, MAX_PARTITIONS_PER_TOPIC)
                topics.append(NewTopic(f"scale-{i}", n, config={"ring.bytes": str(ring_bytes)}))
                left -= n
                i += 1
            started = time.monotonic()
            for future in admin.create_topics(topics, request_timeout=600).values():
                future.result()
            row["create_s"] = time.monotonic() - started
            row["settled"] = wait_settled(broker.process.pid)
            procs = broker_processes(broker.process.pid)
            before = {p.pid: _cpu_s(p) for p in procs}
            t0 = time.monotonic()
            time.sleep(idle_s)
            elapsed = time.monotonic() - t0
            cpu = {}
            for p in procs:
                try:
                    cpu[_name(p)] = cpu.get(_name(p), 0.0) + 100 * (_cpu_s(p) - before[p.pid]) / elapsed
                except psutil.Error:
                    pass
            row["cpu_pct"] = cpu
            row["cpu_total_pct"] = sum(cpu.values())
            row["shm_allocated"], row["shm_size"] = shm_usage(data_dir)
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            row["rss"] = rss
            row["fds"] = _fds(procs)
            admin.close()
    finally:
        if remove_later is None:
            _remove(data_dir)
        else:
            _remove(data_dir, keep_files=True)
            remove_later.append(data_dir)
    return row


def _remove(data_dir, keep_files=False):
    """The data dir (keep_files: not yet), and shared memory a broker that could not stop
    cleanly left in its namespace (it is stopped by now: nobody maps them)."""
    from shmlog._native import shm
    for name in shm.names_in_namespace(shm.namespace(data_dir)):
        shm.unlink(name)
    if not keep_files:
        shutil.rmtree(data_dir, ignore_errors=True)


def table(rows):
    mib = 1 << 20
    lines = ["| partitions | ring.bytes | create_topics s | idle CPU % of a core (per process) | idle CPU % total "
             "| /dev/shm allocated MiB (size MiB) | per partition KiB (size) | RSS MiB | open fds |",
             "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        per_proc = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["cpu_pct"].items()))
        lines.append(
            f"| {r['partitions']:,} | {r['ring_bytes']:,} | {r['create_s']:.2f} | {per_proc} | "
            f"{r['cpu_total_pct']:.1f} | {r['shm_allocated'] / mib:.0f} ({r['shm_size'] / mib:.0f}) | "
            f"{r['shm_allocated'] / r['partitions'] / 1024:.1f} ({r['shm_size'] / r['partitions'] / 1024:.1f}) | "
            f"{r['rss'] / mib:.0f} | {r['fds']:,} |")
    return "\n".join(lines)


def run(counts, ring_bytes=65536, idle_s=10.0, data_root=None, echo=print):
    """The rows of `counts`. Their data dirs are removed after the last row, not between rows:
    on a file system that avoids reusing inodes freed in the last minutes (ext4 without a
    journal), making a row's directories after removing the previous row's took longer the more
    had just been removed."""
    rows, data_dirs = [], []
    try:
        for n in counts:
            row = measure(n, ring_bytes, idle_s, data_root, remove_later=data_dirs)
            if not row["settled"]:
                echo(f"note: the broker with {n} partitions did not settle within {SETTLE_TIMEOUT_S:.0f} s")
            rows.append(row)
            echo(table(rows[-1:]).splitlines()[-1])
    finally:
        for data_dir in data_dirs:
            _remove(data_dir)
    return rows


# ---------------------------------------------------------------------------- memory-only rate

def produce_rate(records, record_bytes=100, ring_bytes=1 << 20, persist=True, data_root=None):
    """Records/s of one producer (this process, produce() per record, acks=1, flush at the end)
    into a fresh one-partition topic; the ring wraps records * framing / ring_bytes times."""
    import shmlog
    from shmlog.client.admin import AdminClient, NewTopic

    data_dir = tempfile.mkdtemp(prefix="shmlog-bench-memory-only-", dir=data_root)
    try:
        with shmlog.Broker(data_dir) as broker:
            conf = {"bootstrap.servers": broker.bootstrap_servers}
            admin = AdminClient(conf)
            config = {"ring.bytes": str(ring_bytes), "shmlog.persist": "true" if persist else "false"}
            for future in admin.create_topics([NewTopic("rate", 1, config=config)]).values():
                future.result()
            admin.close()
            producer = shmlog.Producer({**conf, "acks": "1"})
            value = b"v" * record_bytes
            produce, poll = producer.produce, producer.poll
            started = time.perf_counter()
            for _ in range(records):
                try:
                    produce("rate", value, partition=0)
                except BufferError:
                    poll(0.01)
                    produce("rate", value, partition=0)
            producer.flush(600)
            elapsed = time.perf_counter() - started
    finally:
        _remove(data_dir)
    return records / elapsed


def memory_only_rows(records=2_000_000, record_bytes=100, data_root=None):
    """(row name, records/s): in-ring (a ring that holds every record), then a 1 MiB ring that
    wraps about 20 times (records 100 B: 2,000,000 x ~110 B framed / 1 MiB ~ 200 laps at the
    default; --records picks) persisted and memory-only."""
    framed = records * (record_bytes + 20)
    in_ring_bytes = 1 << max(20, (framed * 2 - 1).bit_length())
    return [
        ("in-ring (ring holds every record, persister on)", produce_rate(records, record_bytes, in_ring_bytes,
                                                                          True, data_root)),
        ("1 MiB ring, persisted (shmlog.persist=true)", produce_rate(records, record_bytes, 1 << 20, True, data_root)),
        ("1 MiB ring, memory-only (shmlog.persist=false)", produce_rate(records, record_bytes, 1 << 20, False,
                                                                         data_root)),
    ]


# ---------------------------------------------------------------------------- the command

def _command():
    import click

    @click.command("bench-partitions")
    @click.option("--partitions", "counts", default="100,1000,10000", show_default=True, metavar="N,N,...",
                  help="Partition counts, one broker (and one table row) each.")
    @click.option("--ring-bytes", type=click.IntRange(min=65536), default=65536, show_default=True,
                  help="ring.bytes of the partitions.")
    @click.option("--idle-s", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
                  help="Seconds of the idle window CPU is measured over.")
    @click.option("--memory-only-records", type=click.IntRange(min=0), default=0, metavar="N",
                  help="Also measure produce() rates in-ring, persisted and memory-only with N records "
                       "of 100 B (0: not).")
    @click.option("--data-dir", "data_root", type=click.Path(file_okay=False, exists=True), default=None,
                  help="Where the brokers' temporary data dirs are made (default: the system's temporary "
                       "directory). What the file system takes to make a directory and a file per partition "
                       "is part of the create time.")
    def bench_partitions(counts, ring_bytes, idle_s, memory_only_records, data_root):
        """What many idle partitions cost a broker: create_topics time, idle CPU % per broker
        process, /dev/shm, RSS and descriptors (bench/README.md, "scale")."""
        try:
            wanted = [int(c) for c in counts.split(",") if c.strip()]
        except ValueError:
            raise click.BadParameter(f"{counts!r} is not a comma-separated list of numbers",
                                     param_hint="'--partitions'") from None
        rows = run(wanted, ring_bytes, idle_s, data_root, echo=lambda line: click.echo(line, err=True))
        click.echo(table(rows))
        if memory_only_records:
            click.echo("\n| produce() 100 B, acks=1, one producer | records/s |\n| --- | ---: |")
            for name, rate in memory_only_rows(memory_only_records, data_root=data_root):
                click.echo(f"| {name} | {rate:,.0f} |")

    return bench_partitions


bench_partitions_command = _command()
