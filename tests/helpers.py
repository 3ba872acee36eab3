"""Helpers several test files share: acting as another user (a forked child that drops to a
uid) and running `shmlog schemas serve` as a real process."""
# The child of as_user runs as a user who may not be able to read this interpreter's library
# (a checkout under a private home): what it imports lazily must be imported before the fork.
# socket and http.client encode a host name through the idna codec on first use.
import encodings.idna  # noqa: F401
import json
import os
import selectors
import signal
import subprocess
import sys
import time

from shmlog.errors import KafkaException

NOBODY = 65534        # nobody; its primary group nogroup is 65534 too on Debian and Ubuntu
START_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------- another user

def setuid_works():
    """Whether this process may act as another user (root, and setuid permitted here)."""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def as_user(uid, gid, fn, *args, groups=(), timeout_s=60.0, must_return=False):
    """Run fn(*args) in a forked child as uid/gid (and only `groups` besides); its JSON-able
    return value, or the exception it raised as {"raised": type name, "message": ..., "code":
    the KafkaError code or None}. must_return: an exception fails the test instead."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            out = {"value": fn(*args)}
        except BaseException as exc:
            kafka = isinstance(exc, KafkaException) and exc.args
            out = {"raised": type(exc).__name__, "message": exc.args[0].str() if kafka else str(exc),
                   "code": exc.args[0].code() if kafka else None}
        try:
            os.write(w, json.dumps(out, default=str).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(r, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    os.kill(pid, signal.SIGKILL)
                    raise AssertionError(f"{fn.__name__} as uid {uid} did not finish within {timeout_s} s")
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks) or b'{"raised": "nothing", "message": "the child died"}')
    if "value" in out:
        return out["value"]
    assert not must_return, f"{fn.__name__} as uid {uid} raised {out['raised']}: {out.get('message')}"
    return out


# ---------------------------------------------------------------------------- shmlog schemas serve

def serve_registry(data_dir, *args):
    """`python -m shmlog.cli schemas serve --data-dir DATA_DIR ARGS...` as a process with pipes."""
    return subprocess.Popen([sys.executable, "-m", "shmlog.cli", "schemas", "serve", "--data-dir", data_dir, *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def registry_url(proc, timeout_s=START_TIMEOUT_S):
    """The URL of the server's first stdout line (`serving the schema registry of DIR at URL`),
    waiting at most timeout_s; the server listens once it has printed it."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"`shmlog schemas serve` printed no address within {timeout_s} s: {buf!r}")
            if sel.select(remaining):
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"`shmlog schemas serve` exited {proc.wait(10)} without an address: "
                                         f"{proc.stderr.read().decode(errors='replace')}")
                buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    assert line.startswith("serving the schema registry of "), line
    return line.rsplit(" at ", 1)[1].strip()


def stop_registry(proc):
    """SIGTERM the server; (exit status, stderr)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise AssertionError("`shmlog schemas serve` did not stop on SIGTERM") from None
    return proc.returncode, err.decode(errors="replace")
