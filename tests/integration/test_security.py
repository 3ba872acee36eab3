"""Only the owner (or whom the owner names) may use a broker (docs/security.md).

These tests act as other users: the suite runs as root, so the broker's owner is root and
the attacker is a uid that is neither the owner nor root (root bypasses file permissions).
Code runs as another user in a forked child that drops to that uid (`as_user`): the
interpreter of the venv may live where the other user cannot execute it. A broker *owned*
by another user needs an interpreter that user can run (`python_for`); that test skips
without one.
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import posix_ipc
import pytest

import shmlog
from shmlog import control, security
from shmlog._native import shm
from shmlog.broker import launcher
from shmlog.errors import KafkaError, KafkaException
from tests.conftest import broker_processes
from tests.helpers import NOBODY, as_user, setuid_works  # NOBODY: the attacker, or the user the owner names

STRANGER = 65533     # a uid with no name, in no group of ours
ROOT_ONLY = "acting as another user needs root (the suite runs as root in CI)"


pytestmark = pytest.mark.skipif(not setuid_works(), reason=f"setuid is not permitted here: {ROOT_ONLY}")


@pytest.fixture
def data_dir():
    """A data dir whose parent every user may traverse (pytest's tmp dirs are root's 0700: there
    the file modes under test would never be reached)."""
    parent = tempfile.mkdtemp(prefix="shmlog-security-")
    os.chmod(parent, 0o711)
    d = os.path.join(parent, "data")
    yield d
    for proc in broker_processes(d):
        proc.kill()
    leftovers = shm.names_in_namespace(shm.namespace(d))
    for name in leftovers:
        shm.unlink(name)
    shutil.rmtree(parent, ignore_errors=True)
    assert not leftovers, f"shared memory left behind: {leftovers}"


def produce_one(broker, topic="t"):
    p = shmlog.Producer({"bootstrap.servers": broker.bootstrap_servers})
    p.produce(topic, b"secret")
    p.flush(10)
    p.close()


def wait_for_segment(data_dir, topic="t"):
    path = os.path.join(data_dir, "logs", f"{topic}-0", "00000000000000000000.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not os.path.exists(path) or os.path.getsize(path) == 0):
        time.sleep(0.02)
    return path


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---------------------------------------------------------------------------- what others can touch

def try_everything(data_dir, ring):
    """What the calling user gets from each way into a broker."""
    out = {}
    try:
        control.Control(data_dir).request("status")
        out["control"] = "ok"
    except KafkaException as exc:
        out["control"] = [exc.args[0].code(), exc.args[0].str()]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        dir_fd = os.open(control.run_dir(data_dir), os.O_PATH | os.O_DIRECTORY)
        s.connect(control.fd_path(dir_fd))
        out["raw connect"] = "ok"
    except OSError as exc:
        out["raw connect"] = type(exc).__name__
    finally:
        s.close()
    for what, path in (("meta", os.path.join(data_dir, "meta", "topics.json")),
                       ("segment", wait_for_segment(data_dir)), ("log dir", os.path.join(data_dir, "logs"))):
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, "rb") as f:
                    f.read(1)
            out[what] = "ok"
        except OSError as exc:
            out[what] = type(exc).__name__
    try:
        posix_ipc.SharedMemory(ring).close_fd()
        out["ring"] = "ok"
    except posix_ipc.Error as exc:
        out["ring"] = type(exc).__name__
    return out


def test_the_data_dir_its_files_and_shared_memory_are_the_owners_only(start_broker, data_dir):
    b = start_broker()
    produce_one(b)
    wait_for_segment(data_dir)
    assert mode(data_dir) == 0o700
    for parent, dirs, files in os.walk(data_dir):
        for name in dirs:
            assert mode(os.path.join(parent, name)) == 0o700, os.path.join(parent, name)
        for name in files:
            path = os.path.join(parent, name)
            assert mode(path) == 0o600, path  # the control socket too
            assert os.lstat(path).st_uid == os.geteuid()
    names = shm.names_in_namespace(shm.namespace(data_dir))
    assert names and all(mode(os.path.join(shm.SHM_DIR, n.lstrip("/"))) == 0o600 for n in names)


def test_another_user_can_neither_use_nor_read_nor_map_a_private_broker(start_broker, data_dir):
    b = start_broker()
    produce_one(b)
    ring = shm.ring_name(shm.namespace(data_dir), 1, 0)
    got = as_user(NOBODY, NOBODY, try_everything, data_dir, ring)
    code, message = got.pop("control")
    assert code == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert message.startswith(f"user nobody (uid {NOBODY}) is not allowed to use the shmlog broker for {data_dir} "
                              f"(owner root, uid 0)") and message.endswith("see docs/security.md")
    assert got == {"raw connect": "PermissionError", "meta": "PermissionError", "segment": "PermissionError",
                   "log dir": "PermissionError", "ring": "PermissionsError"}
    # The owner can (and the broker never noticed the attempt).
    assert try_everything(data_dir, ring) == {"control": "ok", "raw connect": "ok", "meta": "ok", "segment": "ok",
                                              "log dir": "ok", "ring": "ok"}


def status_pid(data_dir):
    return control.Control(data_dir).request("status")["pid"]


def test_a_user_the_owner_names_may_use_the_control_channel_and_others_get_one_clear_line(start_broker, data_dir):
    b = start_broker(shmlog_allowed_users="nobody")
    produce_one(b)
    # Named users reach the socket through o+x (search only) on the data dir and run dir.
    assert mode(data_dir) == 0o701 and mode(control.run_dir(data_dir)) == 0o701
    assert mode(control.socket_path(data_dir)) == 0o666
    pid = b.supervisor_pid
    assert as_user(NOBODY, NOBODY, status_pid, data_dir) == pid
    refused = as_user(STRANGER, STRANGER, status_pid, data_dir)
    assert refused["code"] == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert refused["message"].endswith(f"user uid {STRANGER} is not allowed to use the shmlog broker for {data_dir} "
                                       f"(owner root, uid 0); see docs/security.md")
    # A refused peer leaves the broker running; a named user still reads no data files.
    assert status_pid(data_dir) == pid and b.process.poll() is None
    ring = shm.ring_name(shm.namespace(data_dir), 1, 0)
    got = as_user(NOBODY, NOBODY, try_everything, data_dir, ring)
    assert got["control"] == "ok" and got["raw connect"] == "ok"
    assert got["meta"] == got["segment"] == "PermissionError" and got["ring"] == "PermissionsError"


def test_members_of_an_allowed_group_may_use_the_control_channel_by_primary_or_supplementary_group(
        start_broker, data_dir):
    b = start_broker(shmlog_allowed_groups=str(NOBODY))
    pid = b.supervisor_pid
    assert as_user(STRANGER, NOBODY, status_pid, data_dir) == pid  # primary group
    assert as_user(STRANGER, STRANGER, status_pid, data_dir, groups=[NOBODY]) == pid  # supplementary (SO_PEERGROUPS)
    assert as_user(STRANGER, STRANGER, status_pid, data_dir)["code"] == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def produce_as_member(bootstrap):
    p = shmlog.Producer({"bootstrap.servers": bootstrap})
    p.produce("t", b"from the group")
    left = p.flush(10)
    p.close()
    return left


def test_a_shared_group_reads_the_data_maps_the_rings_and_produces(start_broker, data_dir):
    b = start_broker(shmlog_shared_group=NOBODY)
    produce_one(b)
    wait_for_segment(data_dir)
    assert mode(data_dir) == 0o2750 and os.stat(data_dir).st_gid == NOBODY
    for parent, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = os.path.join(parent, name)
            want = 0o2750 if name in dirs else 0o600 if name in security.PRIVATE_FILES else 0o660 \
                if name == control.SOCKET_NAME else 0o640
            assert (mode(path), os.lstat(path).st_gid) == (want, NOBODY), path
    objects = [os.path.join(shm.SHM_DIR, n.lstrip("/")) for n in shm.names_in_namespace(shm.namespace(data_dir))]
    assert objects and all((mode(o), os.stat(o).st_gid) == (0o660, NOBODY) for o in objects)
    ring = shm.ring_name(shm.namespace(data_dir), 1, 0)
    member = as_user(STRANGER, NOBODY, try_everything, data_dir, ring)
    assert member == {"control": "ok", "raw connect": "ok", "meta": "ok", "segment": "ok", "log dir": "ok",
                      "ring": "ok"}
    assert as_user(STRANGER, NOBODY, produce_as_member, b.bootstrap_servers) == 0
    c = shmlog.Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "g", "auto.offset.reset": "earliest"})
    c.subscribe(["t"])
    values = []
    deadline = time.monotonic() + 30
    while len(values) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            values.append(m.value())
    c.close()
    assert values == [b"secret", b"from the group"]
    outsider = as_user(STRANGER, STRANGER, try_everything, data_dir, ring)
    assert outsider["meta"] == outsider["raw connect"] == "PermissionError" and outsider["ring"] == "PermissionsError"


# ---------------------------------------------------------------------------- names others could take

def squat(address, ready_w, stop_r):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(address)
    s.listen(8)
    s.setblocking(False)
    os.write(ready_w, b"x")
    got = b""
    while True:
        try:
            conn, _ = s.accept()
            conn.settimeout(0.5)
            try:
                conn.sendall(b'{"ok": true, "epoch": 0, "topics": {}}\n')  # whatever it is asked
                got += conn.recv(4096)
            except OSError:
                pass  # a client that refused us is gone already
            conn.close()
        except BlockingIOError:
            pass
        r, _, _ = __import__("select").select([stop_r], [], [], 0.05)
        if r:
            return got.decode(errors="replace")


def start_in_child(uid, gid, fn, *args):
    """fn(*args, ready_w, stop_r) as uid in a forked child that runs until told to stop; returns
    stop() which ends it and gives what fn returned."""
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (ready_r, stop_w, out_r):
                os.close(fd)  # else the child would hold its own stop pipe open
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            value = fn(*args, ready_w, stop_r)
            os.write(out_w, json.dumps({"value": value}).encode())
        except BaseException as exc:
            os.write(out_w, json.dumps({"raised": repr(exc)}).encode())
            os.write(ready_w, b"!")
        finally:
            os._exit(0)
    for fd in (ready_w, stop_r, out_w):
        os.close(fd)
    first = os.read(ready_r, 1)
    os.close(ready_r)

    def stop():
        os.close(stop_w)
        data = os.read(out_r, 65536)
        os.close(out_r)
        os.waitpid(pid, 0)
        return json.loads(data or b"{}")
    if first != b"x":
        raise AssertionError(f"the child as uid {uid} could not start: {stop()}")
    return stop


def test_a_squatter_on_the_old_abstract_socket_name_changes_nothing(start_broker, data_dir):
    stop = start_in_child(NOBODY, NOBODY, squat, f"\0shmlog.{shm.namespace(os.path.realpath(data_dir))}.ctl")
    try:
        b = start_broker()
        produce_one(b)
        c = shmlog.Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "g",
                             "auto.offset.reset": "earliest"})
        c.subscribe(["t"])
        m = None
        deadline = time.monotonic() + 30
        while (m is None or m.error() is not None) and time.monotonic() < deadline:
            m = c.poll(0.5)
        c.close()
        assert m.value() == b"secret"
    finally:
        heard = stop()
    assert heard == {"value": ""}  # nobody ever talked to the squatter


def test_a_client_refuses_a_control_socket_that_its_data_dirs_owner_does_not_serve(data_dir):
    os.makedirs(control.run_dir(data_dir))
    os.chmod(data_dir, 0o755)
    os.chown(control.run_dir(data_dir), NOBODY, NOBODY)  # as if another user could write there
    path = control.socket_path(data_dir)
    stop = start_in_child(NOBODY, NOBODY, squat, path)
    try:
        with pytest.raises(KafkaException) as caught:
            control.Control(data_dir)
    finally:
        heard = stop()
    err = caught.value.args[0]
    assert err.code() == KafkaError._AUTHENTICATION
    assert f"runs as nobody (uid {NOBODY}), but the data dir belongs to root (uid 0)" in err.str()
    assert heard == {"value": ""}  # refused before a single byte went to it


def test_a_client_refuses_a_broker_that_answers_for_another_data_dir(data_dir):
    os.makedirs(control.run_dir(data_dir), mode=0o700)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dir_fd = os.open(control.run_dir(data_dir), os.O_PATH | os.O_DIRECTORY)
    server.bind(control.fd_path(dir_fd))
    os.close(dir_fd)
    server.listen(1)

    def greet():
        conn, _ = server.accept()
        conn.sendall(control.encode({"ok": True, "hello": "shmlog", "data_dir": "/somewhere/else", "pid": 1}))
        conn.close()
    t = threading.Thread(target=greet)
    t.start()
    try:
        with pytest.raises(KafkaException) as caught:
            control.Control(data_dir)
    finally:
        t.join(10)
        server.close()
    assert caught.value.args[0].code() == KafkaError._AUTHENTICATION
    assert "answers for data dir '/somewhere/else'" in caught.value.args[0].str()


def create_object(name):
    mem = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o666, size=4096)
    mem.close_fd()
    return True


def test_shared_memory_another_user_created_under_the_brokers_names_is_never_adopted(start_broker, data_dir):
    ns = shm.namespace(os.path.realpath(data_dir))
    assert as_user(NOBODY, NOBODY, create_object, shm.doorbell_name(ns)) is True
    assert shm.owner(shm.doorbell_name(ns)) == NOBODY
    b = start_broker()
    produce_one(b)
    assert shm.owner(shm.doorbell_name(ns)) == 0  # root removed the squatter's and made its own
    # And a client maps nothing its broker's owner does not own.
    with pytest.raises(KafkaException) as caught:
        shm.Mapping.open(shm.doorbell_name(ns), owner=NOBODY)
    assert caught.value.args[0].code() == KafkaError._AUTHENTICATION


# ---------------------------------------------------------------------------- owners

def test_a_broker_refuses_to_run_on_a_data_dir_another_user_owns(data_dir):
    os.makedirs(data_dir)
    os.chown(data_dir, NOBODY, NOBODY)
    with pytest.raises(KafkaException) as caught:
        shmlog.Broker(data_dir).start()
    assert f"data dir {data_dir} belongs to nobody (uid {NOBODY}), but this broker runs as root (uid 0)" \
        in caught.value.args[0].str()


def test_the_control_socket_works_for_a_data_dir_longer_than_a_unix_socket_path(data_dir):
    long_dir = os.path.join(data_dir, "d" * 150)
    assert len(control.socket_path(long_dir)) > 108
    with shmlog.Broker(long_dir) as b:
        produce_one(b)
        assert control.Control(os.path.realpath(long_dir)).request("status")["pid"] == b.supervisor_pid
    assert not shm.names_in_namespace(shm.namespace(long_dir))


def python_for(uid, gid):
    """An interpreter (and environment) uid can run shmlog's broker with, or None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(shmlog.__file__)))
    site = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join([root, *site])}
    for exe in (sys.executable, os.path.realpath(sys.executable), "/usr/local/bin/python3", "/usr/bin/python3"):
        if not exe:
            continue
        try:
            done = subprocess.run([exe, "-c", "import shmlog.broker.supervisor, shmlog.broker.persister"],
                                  user=uid, group=gid, extra_groups=[], env=env, cwd="/", capture_output=True,
                                  timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return exe, env
    return None


def start_daemon(data_dir, exe, env, configs):
    sys.executable = exe  # the supervisor and its persister run as this user: with its interpreter
    os.environ.clear()
    os.environ.update(env)
    return launcher.start(data_dir, configs)


def stop_daemon(data_dir):
    return launcher.stop(os.path.realpath(data_dir))


def test_root_may_not_use_another_users_broker_unless_named(data_dir):
    found = python_for(NOBODY, NOBODY)
    if found is None:
        pytest.skip(f"no Python interpreter that uid {NOBODY} can run shmlog with (the venv's lives under a "
                    f"directory only root may enter)")
    exe, env = found
    os.makedirs(data_dir)
    os.chown(data_dir, NOBODY, NOBODY)
    for configs, allowed in (({}, False), ({"shmlog.allowed.users": "root"}, True)):
        pid = as_user(NOBODY, NOBODY, start_daemon, data_dir, exe, env, configs)
        assert isinstance(pid, int), pid
        try:
            if allowed:
                assert control.Control(data_dir).request("status")["pid"] == pid
            else:
                with pytest.raises(KafkaException) as caught:
                    control.Control(data_dir)
                assert caught.value.args[0].str() == (
                    f"user root (uid 0) is not allowed to use the shmlog broker for {data_dir} (owner nobody, "
                    f"uid {NOBODY}); see docs/security.md")
        finally:
            assert as_user(NOBODY, NOBODY, stop_daemon, data_dir) == pid
        deadline = time.monotonic() + 10
        while broker_processes(data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not broker_processes(data_dir)


# ---------------------------------------------------------------------------- settings

def test_security_settings_are_checked_when_the_broker_is_made(tmp_path):
    for configs, words in (({"shmlog_allowed_users": "no-such-user-here"}, "there is no user named"),
                           ({"shmlog_allowed_groups": "no-such-group-here"}, "there is no group named"),
                           ({"shmlog_shared_group": "no-such-group-here"}, "there is no group named"),
                           ({"shm_mode": 0o666}, "would let every user of this host"),
                           ({"shm_mode": "0440"}, "must give the owner read and write")):
        with pytest.raises(KafkaException) as caught:
            shmlog.Broker(str(tmp_path), **configs)
        assert caught.value.args[0].code() == KafkaError._INVALID_ARG and words in caught.value.args[0].str()
