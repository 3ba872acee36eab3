"""The control channel: newline-delimited JSON over an abstract unix socket.

Abstract socket names (Linux) leave no file behind after a crash and have no path
length limit, so the data dir can live anywhere. Closing the socket is also how the
supervisor learns at once that a client process died.
"""
import json
import os
import socket
import threading

from shmlog._native import shm
from shmlog.errors import KafkaError, error

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
                    f"broker: expected shm:///absolute/data/dir (as Broker.bootstrap_servers gives)")
    return os.path.realpath(path)


def socket_address(data_dir):
    return "\0" + shm.PREFIX + shm.namespace(data_dir) + ".ctl"


# Requests that only read: after a restarted supervisor they are sent again on a new connection.
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
        self._connect()

    def _connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(socket_address(self.data_dir))
        except (ConnectionRefusedError, FileNotFoundError):
            self.sock.close()
            raise error(KafkaError._TRANSPORT,
                        f"no shmlog broker is running for data dir {self.data_dir}: start one with "
                        f"`with shmlog.Broker({self.data_dir!r}) as broker:` or "
                        f"`shmlog broker start --data-dir {self.data_dir}`")
        self.reader = self.sock.makefile("rb")
        if self.register_as:
            line = self._exchange({"op": "register", "kind": self.register_as, "pid": os.getpid()})
            reply = json.loads(line) if line else {"error": "the broker closed the control channel"}
            if not reply.get("ok"):
                self.close()
                raise error(reply.get("code", KafkaError._TRANSPORT), reply.get("error", "register failed"))

    def _exchange(self, fields):
        """One request and its reply line (bytes; empty if the supervisor closed the channel)."""
        self.next_id += 1
        message = {**fields, "id": self.next_id}
        self.sock.sendall(encode(message))
        return self.reader.readline()

    def request(self, op, **fields):
        with self.lock:
            try:
                line = self._exchange({"op": op, **fields})
            except OSError:
                line = b""
            if not line and op in READ_ONLY_OPS:
                # The supervisor restarted (it adopts the rings, so clients keep running): a read
                # goes again on a new connection.
                self.close()
                self._connect()
                try:
                    line = self._exchange({"op": op, **fields})
                except OSError as exc:
                    raise error(KafkaError._TRANSPORT, f"lost the shmlog broker for {self.data_dir}: {exc}")
            if not line:
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
