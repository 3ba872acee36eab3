"""The control channel: newline-delimited JSON over a unix socket at <data_dir>/run/control.sock.

The socket lives in a directory only the broker's owner can write (docs/security.md), so no
other user can take its name; the supervisor checks each peer's credentials (SO_PEERCRED) and
greets an allowed one with a line naming its data dir, and a client checks that the process
listening is the data dir's owner and answers for that data dir before it sends anything.
Sockets are bound and connected through /proc/self/fd/<fd of the run dir>/control.sock: that
path is short whatever the data dir's length (sun_path holds 107 bytes), needs no chdir, and
names exactly the directory whose owner was checked. Closing the socket is also how the
supervisor learns at once that a client process died.
"""
import json
import os
import socket
import threading
import time

from shmlog.errors import KafkaError, KafkaException, error
from shmlog.security import DOCS, peer_credentials, user_name

SCHEME = "shm://"


def data_dir_from_bootstrap(bootstrap_servers):
    """`shm:///abs/data/dir` or a plain path; the first entry of a comma list."""
    if not bootstrap_servers:
        raise error(KafkaError._INVALID_ARG, "bootstrap.servers is empty: give the broker's "
                    "bootstrap_servers string (shm:///path/to/data_dir)")
    first = str(bootstrap_servers).split(",")[0].strip()
    path = first[len(SCHEME):] if first.startswith(SCHEME) else first
    if not path.startswith("/"):
        raise error(KafkaError._INVALID_ARG, f"bootstrap.servers={bootstrap_servers!r} does not name a shmlog "
                    f"broker: expected shm:///absolute/data/dir (as Broker.bootstrap_servers gives); for a "
                    f"Kafka cluster's host:port, take the clients from shmlog.clients (docs/migration.md)")
    return os.path.realpath(path)


RUN_DIR = "run"
SOCKET_NAME = "control.sock"


def run_dir(data_dir):
    return os.path.join(data_dir, RUN_DIR)


def socket_path(data_dir):
    """Where the control socket is (for people; programs go through `fd_path`)."""
    return os.path.join(data_dir, RUN_DIR, SOCKET_NAME)


def fd_path(dir_fd):
    """A short path to the socket in the directory open as dir_fd (any data dir length)."""
    return f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}"


def _no_broker(data_dir):
    return error(KafkaError._TRANSPORT,
                 f"no shmlog broker is running for data dir {data_dir}: start one with "
                 f"`with shmlog.Broker({data_dir!r}) as broker:` or "
                 f"`shmlog broker start --data-dir {data_dir}`")


def _not_allowed(data_dir, owner, exc):
    return error(KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                 f"user {user_name(os.geteuid())} is not allowed to use the shmlog broker for {data_dir} "
                 f"(owner {user_name(owner, inner=True) if owner is not None else 'unknown'}): {exc.strerror} on "
                 f"{socket_path(data_dir)}; {DOCS}")


def _read_line(sock):
    """One line the peer sent first, without reading past it (the caller may buffer the rest)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(4096, socket.MSG_PEEK)
        if not chunk:
            return line
        n = chunk.find(b"\n") + 1 or len(chunk)
        line += sock.recv(n)
        if len(line) > 65536:
            break
    return line


def connect(data_dir):
    """A socket connected to data_dir's supervisor, checked both ways, greeting read.

    Returns (sock, greeting). The listening process must be the data dir's owner (a socket
    served by anyone else is refused before a byte is sent to it) and must answer for this
    data dir; a supervisor that refuses us says why in its first line, raised here.
    """
    try:
        owner = os.stat(data_dir).st_uid
    except FileNotFoundError:
        raise _no_broker(data_dir) from None
    except PermissionError as exc:
        raise _not_allowed(data_dir, None, exc) from None
    try:
        dir_fd = os.open(run_dir(data_dir), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise _no_broker(data_dir) from None
    except PermissionError as exc:
        raise _not_allowed(data_dir, owner, exc) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(fd_path(dir_fd))
        except (ConnectionRefusedError, FileNotFoundError):
            raise _no_broker(data_dir) from None
        except PermissionError as exc:
            raise _not_allowed(data_dir, owner, exc) from None
        finally:
            os.close(dir_fd)
        pid, uid, _ = peer_credentials(sock)
        if uid != owner:
            raise error(KafkaError._AUTHENTICATION,
                        f"refusing the control socket of {data_dir}: the process listening on it (pid {pid}) runs "
                        f"as {user_name(uid)}, but the data dir belongs to {user_name(owner)}, so it is not that "
                        f"data dir's broker; {DOCS}")
        try:
            line = _read_line(sock)
        except OSError:  # reset: the supervisor died between accepting us and greeting
            line = b""
        if not line:
            raise error(KafkaError._TRANSPORT, f"the shmlog broker for {data_dir} closed the control channel "
                        f"before greeting (stopped or crashed)")
        try:
            greeting = json.loads(line)
            if not isinstance(greeting, dict):
                raise ValueError(greeting)
        except ValueError:
            raise error(KafkaError._AUTHENTICATION, f"the control socket of {data_dir} did not greet as a shmlog "
                        f"broker does: {line[:200]!r}") from None
        if not greeting.get("ok"):
            raise error(greeting.get("code", KafkaError._FAIL), greeting.get("error", "refused"))
        if greeting.get("data_dir") != data_dir:
            raise error(KafkaError._AUTHENTICATION, f"refusing the control socket of {data_dir}: the broker there "
                        f"answers for data dir {greeting.get('data_dir')!r}; {DOCS}")
        greeting["owner"] = uid  # what the kernel says, not what the line says
        return sock, greeting
    except BaseException:
        sock.close()
        raise


# Requests that only read: after a restarted supervisor they are sent again on a new connection.
RECONNECT_S = 60.0       # the longest a read waits for a restarted supervisor to listen
RECONNECT_POLL_S = 0.02
READ_ONLY_OPS = frozenset({"metadata", "offset_fetch", "describe_groups", "list_groups", "status"})


def encode(message):
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Control:
    """A client's connection to the supervisor; one request at a time per connection."""

    def __init__(self, data_dir, register_as=None):
        self.data_dir = data_dir
        self.register_as = register_as
        self.lock = threading.Lock()
        self.next_id = 0
        self.pid = os.getpid()
        self.lost = False        # the channel closed under a request: reconnect before the next
        self._connect()

    def _connect(self):
        self.sock, greeting = connect(self.data_dir)
        self.owner = greeting.get("owner")  # the uid whose shared memory the broker's rings are
        self.keeper_pid = greeting.get("keeper_pid")  # restarts the supervisor if it dies (or None)
        self.peer_pid = greeting.get("pid")           # the supervisor serving this connection
        self.reader = self.sock.makefile("rb")
        if self.register_as:
            line = self._exchange({"op": "register", "kind": self.register_as, "pid": os.getpid()})
            reply = json.loads(line) if line else {"error": "the broker closed the control channel"}
            if not reply.get("ok"):
                self.close()
                raise error(reply.get("code", KafkaError._TRANSPORT), reply.get("error", "register failed"))

    def _reconnect(self):
        """Connect again after the supervisor went. Its keeper (named in the greeting) starts a
        new one at once, which takes a moment to listen: keep trying for up to RECONNECT_S
        while that keeper lives and the broker's shared memory is still there (a clean stop
        unlinks it and the keeper exits; a killed supervisor leaves both)."""
        from shmlog._native import shm
        doorbell = os.path.join(shm.SHM_DIR, shm.doorbell_name(shm.namespace(self.data_dir)).lstrip("/"))
        deadline = time.monotonic() + RECONNECT_S
        while True:
            try:
                return self._connect()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._TRANSPORT or time.monotonic() >= deadline or \
                        not self._keeper_alive() or not os.path.exists(doorbell):
                    raise
            time.sleep(RECONNECT_POLL_S)

    def _keeper_alive(self):
        if not self.keeper_pid:
            return False
        try:
            os.kill(self.keeper_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's keeper (a shared broker): it exists
        return True

    def _exchange(self, fields):
        """One request and its reply line (bytes; empty if the supervisor closed the channel)."""
        self.next_id += 1
        message = {**fields, "id": self.next_id}
        self.sock.sendall(encode(message))
        return self.reader.readline()

    def request(self, op, **fields):
        with self.lock:
            if self.lost:
                # An earlier request found the channel closed: this one is new, so it may go on
                # a new connection (to the supervisor the keeper started again).
                self._reconnect()
                self.lost = False
            try:
                line = self._exchange({"op": op, **fields})
            except OSError:
                line = b""
            if not line and op in READ_ONLY_OPS:
                # The supervisor restarted (it adopts the rings, so clients keep running): a read
                # goes again on a new connection.
                self.close()
                self.lost = True
                self._reconnect()
                self.lost = False
                try:
                    line = self._exchange({"op": op, **fields})
                except OSError as exc:
                    raise error(KafkaError._TRANSPORT, f"lost the shmlog broker for {self.data_dir}: {exc}")
            if not line:
                # Not sent again (it may have taken effect), but the next request reconnects.
                self.close()
                self.lost = True
                raise error(KafkaError._TRANSPORT, f"the shmlog broker for {self.data_dir} closed the control "
                            f"channel (stopped or crashed)")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise error(reply.get("code", KafkaError._FAIL), reply.get("error", "request failed"))
        return reply

    def close(self):
        try:
            self.reader.close()
            self.sock.close()
        except OSError:
            pass
