"""Databases for the SQL connector tests: SQLite files, and a real PostgreSQL server started
from Debian's package binaries (/usr/lib/postgresql/*/bin) on a temporary dir, listening only
on a unix socket in that dir (no TCP), one server per test session and xdist worker, one
database per test. Tests needing it skip, saying why, when the binaries are missing or the
server does not start."""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

START_TIMEOUT_S = 60


def _postgres_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """(socket dir, port, user) of a running PostgreSQL server, stopped at the end of the session."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql: /usr/lib/postgresql/*/bin/initdb)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'shmlog[connect]')")
    user = None
    if os.geteuid() == 0:     # initdb and postgres refuse to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
    root = tempfile.mkdtemp(prefix="shmlog-pg-")
    os.chmod(root, 0o755)
    data, sock = os.path.join(root, "data"), os.path.join(root, "sock")
    os.mkdir(sock)
    run_as = {}
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(sock, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    proc = None
    try:
        done = subprocess.run([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
                               "--no-sync"], capture_output=True, text=True, timeout=START_TIMEOUT_S, **run_as)
        if done.returncode != 0:
            pytest.skip(f"initdb failed: {done.stderr.strip()[-300:]}")
        port = 5432 + uuid.uuid4().int % 20000     # names the socket file only: no TCP listener
        logfile = os.path.join(root, "postgres.log")
        options = f"-k {sock} -p {port} -c listen_addresses= -c fsync=off"
        started = subprocess.run([os.path.join(bindir, "pg_ctl"), "-D", data, "-o", options, "-l", logfile, "-w",
                                  "-t", str(START_TIMEOUT_S), "start"], capture_output=True, text=True,
                                 timeout=START_TIMEOUT_S + 10, **run_as)
        proc = started
        if started.returncode != 0:
            tail = open(logfile).read().strip()[-300:] if os.path.exists(logfile) else started.stderr.strip()[-300:]
            pytest.skip(f"postgres did not start: {tail}")
        yield sock, port
    finally:
        if proc is not None:
            subprocess.run([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60, **run_as)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An SQLAlchemy URL of an empty database: a SQLite file, or a new database on the test server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    sock, port = request.getfixturevalue("postgres_server")
    import psycopg
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(host=sock, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@/{name}?host={sock}&port={port}"


@pytest.fixture
def broker(data_dir):
    """The shared fixture's broker without the 3 s wait before a new group's first assignment:
    every sink connector here is a new group."""
    import shmlog
    from tests.conftest import stop_leftover_broker
    with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0) as b:
        yield b
    stop_leftover_broker(data_dir)
