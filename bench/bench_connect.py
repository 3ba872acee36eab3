"""SQL sink throughput: rows/s the JdbcSinkConnector-style sink writes into SQLite and into
PostgreSQL, through the whole Connect runtime (consumer, JSON converter, put(), group commit).

    PYTHONPATH=. python bench/bench_connect.py [--records N] [--tasks T] [--mode insert|upsert] [--json PATH]

One embedded broker in a temporary data dir; a topic of 4 partitions holds N keyed JSON records
(schemaless, 5 fields, ~120 bytes) before the worker starts. For each database a fresh table
is auto-created by the sink; the time runs from Worker.start() until the table holds N rows
(counted with SELECT count(*) every 50 ms), so it includes the task processes' start and the
group join (a fixed cost of about a second: use enough records). PostgreSQL is Debian's
package, started like the tests start it (initdb + pg_ctl on a temp dir, unix socket only,
fsync=off); the row is skipped, saying why, when it cannot start. Prints a Markdown table.
"""
import argparse
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import sqlalchemy

import shmlog
from shmlog.connect.worker import Worker


def start_postgres(root):
    """(url_base, stop) of a PostgreSQL server in root, or (None, reason)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        return None, "PostgreSQL is not installed (apt-get install postgresql)"
    bindir = os.path.dirname(found[-1])
    run_as = {}
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, sock = os.path.join(root, "data"), os.path.join(root, "sock")
    os.mkdir(sock)
    if run_as:
        os.chown(sock, run_as["user"], run_as["group"])
    done = subprocess.run([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
                          capture_output=True, text=True, **run_as)
    if done.returncode != 0:
        return None, f"initdb failed: {done.stderr.strip()[-200:]}"
    port = 5432 + uuid.uuid4().int % 20000
    started = subprocess.run([os.path.join(bindir, "pg_ctl"), "-D", data, "-o",
                              f"-k {sock} -p {port} -c listen_addresses= -c fsync=off",
                              "-l", os.path.join(root, "log"), "-w", "start"], capture_output=True, text=True, **run_as)
    if started.returncode != 0:
        return None, f"postgres did not start: {started.stderr.strip()[-200:]}"

    def stop():
        subprocess.run([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True, **run_as)
    return (f"postgresql+psycopg://postgres@/postgres?host={sock}&port={port}", stop), None


def run_sink(conf, url, records, tasks, mode, name):
    sink = {"name": name, "connector.class": "JdbcSinkConnector", "topics": "rows", "tasks.max": str(tasks),
            "connection.url": url, "auto.create": "true", "insert.mode": mode, "table.name.format": name,
            **({"pk.mode": "record_key", "pk.fields": "id"} if mode == "upsert" else {})}
    worker = {"bootstrap.servers": conf["bootstrap.servers"], "offset.flush.interval.ms": "1000",
              "key.converter": "org.apache.kafka.connect.json.JsonConverter", "key.converter.schemas.enable": "false",
              "value.converter": "org.apache.kafka.connect.json.JsonConverter",
              "value.converter.schemas.enable": "false"}
    engine = sqlalchemy.create_engine(url)
    start = time.perf_counter()
    with Worker(worker, [sink]):
        while True:
            try:
                with engine.connect() as c:
                    n = c.execute(sqlalchemy.text(f"SELECT count(*) FROM {name}")).scalar()
            except sqlalchemy.exc.DBAPIError:
                n = 0
            if n >= records:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
    engine.dispose()
    return records / elapsed, elapsed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--tasks", type=int, default=1)
    ap.add_argument("--mode", choices=("insert", "upsert"), default="insert")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="shmlog-bench-connect-")
    os.chmod(root, 0o755)
    results = []
    try:
        with shmlog.Broker(os.path.join(root, "data")) as broker:
            conf = {"bootstrap.servers": broker.bootstrap_servers}
            admin = shmlog.AdminClient(conf)
            admin.create_topics([shmlog.NewTopic("rows", 4)])["rows"].result()
            admin.close()
            p = shmlog.Producer({**conf, "linger.ms": 5})
            for i in range(args.records):
                p.produce("rows", key=json.dumps(i), value=json.dumps(
                    {"id": i, "symbol": f"S{i % 500}", "price": i * 0.01, "qty": i % 97, "side": "buy"}))
            p.flush(60)
            results.append(("SQLite", *run_sink(conf, f"sqlite:///{root}/bench.db", args.records, args.tasks,
                                                 args.mode, "sink_sqlite"), ""))
            pg_root = os.path.join(root, "pg")
            os.mkdir(pg_root)
            pg, reason = start_postgres(pg_root)
            if pg is None:
                results.append(("PostgreSQL", None, None, reason))
            else:
                url, stop = pg
                try:
                    results.append(("PostgreSQL", *run_sink(conf, url, args.records, args.tasks, args.mode,
                                                             "sink_pg"), ""))
                finally:
                    stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"SQL sink, {args.records} records, tasks.max={args.tasks}, insert.mode={args.mode}\n")
    print("| database | rows/s | seconds | note |\n| --- | ---: | ---: | --- |")
    for db, rate, secs, note in results:
        print(f"| {db} | {rate:,.0f} | {secs:.2f} | |" if rate else f"| {db} | - | - | {note} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"database": d, "rows_per_s": r, "seconds": s, "note": n} for d, r, s, n in results], f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
