"""A plaintext connection's time limits (server.Connection): its reads block in the kernel and
come back every WAKE_S to look at the time, so a client that starts a request and never ends
it, or sends nothing at all, is cut off. The limits are shortened here; the connection is the
listener's own class, served in this process against a running broker."""
import socket
import struct
import threading
import time

import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")

from shmlog.broker.kafka_listener import server  # noqa: E402
from tests.integration.test_kafka_listener import start_with_listener  # noqa: E402


@pytest.fixture
def serve_one(start_broker, data_dir, monkeypatch):
    """serve_one() -> (client socket, the thread serving it, [the reason it closed])."""
    monkeypatch.setattr(server, "WAKE_S", 0.05)
    monkeypatch.setattr(server, "REQUEST_READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(server, "IDLE_TIMEOUT_S", 1.0)
    b = start_with_listener(start_broker)
    listener = server.Server(data_dir)
    made = []

    def serve():
        with socket.create_server(("127.0.0.1", 0)) as ls:
            client = socket.create_connection(ls.getsockname())
            accepted, addr = ls.accept()
        conn = server.Connection(listener, accepted, addr)
        reasons, close = [], conn.close
        conn.close = lambda reason: (reasons.append(reason), close(reason))
        thread = threading.Thread(target=conn.run)
        thread.start()
        made.append((client, thread))
        return client, thread, reasons

    yield serve
    for client, thread in made:
        client.close()
        thread.join(10)
    listener.logs.close()
    b.admin.close()


def test_a_client_that_starts_a_request_and_never_finishes_it_is_cut_off(serve_one):
    client, thread, reasons = serve_one()
    client.sendall(struct.pack(">i", 100) + b"\0" * 10)
    started = time.monotonic()
    thread.join(10)
    assert reasons == ["request not received in time"]
    assert 0.5 <= time.monotonic() - started < 2


def test_a_client_that_sends_nothing_is_cut_off_once_idle_for_the_idle_limit(serve_one):
    client, thread, reasons = serve_one()
    started = time.monotonic()
    thread.join(10)
    assert reasons == ["idle"]
    assert 1.0 <= time.monotonic() - started < 3


def test_a_request_trickling_in_within_its_limit_is_served(serve_one):
    client, thread, reasons = serve_one()
    frame = struct.pack(">hhi", 18, 0, 7) + struct.pack(">h", 1) + b"c"   # ApiVersions v0, client id "c"
    for byte in struct.pack(">i", len(frame)) + frame:
        client.sendall(bytes([byte]))
        time.sleep(0.02)
    size = struct.unpack(">i", client.recv(4, socket.MSG_WAITALL))[0]
    assert struct.unpack(">i", client.recv(size, socket.MSG_WAITALL)[:4])[0] == 7   # its correlation id
    assert thread.is_alive() and not reasons
