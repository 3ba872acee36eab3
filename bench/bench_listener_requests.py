"""What one request costs the Kafka listener's Python, without the network or a client: a
listener Connection in this process, against a running broker, handles one-record Produce
requests (acks=1) and Produce + Fetch pairs (the Fetch reading the record just produced, as a
consumer at the end of a partition does) in a loop. Prints microseconds per request (pair), the
best and the median of the rounds.

    PYTHONPATH=. python bench/bench_listener_requests.py [--requests N] [--rounds R]

Compare builds by running it from two checkouts in turn (PYTHONPATH=<checkout>); the machine's
noise is larger between minutes than between the rounds of one run.
"""
import argparse
import datetime
import io
import os
import socket
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kio.index import load_request_schema  # noqa: E402
from kio.serial import entity_writer  # noqa: E402

import shmlog  # noqa: E402
from shmlog._native import lib  # noqa: E402
from shmlog.broker.kafka_listener import server, wire  # noqa: E402
from shmlog.log.batch import HEADER, RecordsBuilder, record_size  # noqa: E402

TOPIC = "t"


def frame(api_key, version, values):
    cls = load_request_schema(api_key, version)
    out = io.BytesIO()
    entity_writer(cls.__header_schema__)(out, wire.build(cls.__header_schema__, {
        "request_api_key": api_key, "request_api_version": version, "correlation_id": 7, "client_id": "bench"}))
    entity_writer(cls)(out, wire.build(cls, values))
    return out.getvalue()


def one_record_batch(value):
    builder = RecordsBuilder()
    builder.add(None, value, int(time.time() * 1000), None, record_size(None, value))
    records, base_ts, max_ts = builder.encode()
    body = bytearray(HEADER.pack(0, HEADER.size - 12 + len(records), 0, 2, 0, 0, 0, base_ts, max_ts, -1, -1, -1, 1)
                     + bytes(records))
    struct.pack_into(">I", body, 17, lib.shmlog_crc32c(0, bytes(body[21:]), len(body) - 21))
    return bytes(body)


def produce_frame(batch):
    return frame(0, 9, {"transactional_id": None, "acks": 1, "timeout": datetime.timedelta(seconds=30),
                        "topic_data": [{"name": TOPIC, "partition_data": [{"index": 0, "records": batch}]}]})


def fetch_frame(offset):
    return frame(1, 12, {"cluster_id": None, "replica_id": -1, "max_wait": datetime.timedelta(0), "min_bytes": 1,
                         "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                         "forgotten_topics_data": [], "rack_id": "", "topics": [{"topic": TOPIC, "partitions": [
                             {"partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                              "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}]})


def timed(rounds, n, one):
    """[us per call] of `rounds` rounds of n calls of one(i)."""
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n):
            one(i)
        out.append((time.perf_counter() - t0) / n * 1e6)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000, help="requests (pairs) per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        data_dir = os.path.join(d, "data")
        # A 1 MiB ring laps within the first round: the rounds then write memory already in use.
        with shmlog.Broker(data_dir, listeners="PLAINTEXT://127.0.0.1:0", **{"ring.bytes": 1 << 20}):
            admin = shmlog.AdminClient({"bootstrap.servers": data_dir})
            admin.create_topics([shmlog.NewTopic(TOPIC, 1)])[TOPIC].result()
            listener = server.Server(data_dir)
            listener.advertised = ("127.0.0.1", 9092)
            with socket.create_server(("127.0.0.1", 0)) as ls:
                client = socket.create_connection(ls.getsockname())
                accepted, addr = ls.accept()
            conn = server.Connection(listener, accepted, addr)
            try:
                produce = produce_frame(one_record_batch(b"x" * 100))
                produced = timed(args.rounds, args.requests, lambda i: conn.handle(produce))
                start = listener.logs.ring(TOPIC, 0).high_watermark
                fetches = iter([fetch_frame(start + i) for i in range(args.rounds * args.requests)])
                pairs = timed(args.rounds, args.requests, lambda i: (conn.handle(produce), conn.handle(next(fetches))))
            finally:
                conn.close("bench over")
                client.close()
                listener.logs.close()
                admin.close()
    print(f"listener Python per request, {args.rounds} rounds of {args.requests:,}: best [median] us")
    print("| request | us |")
    print("| --- | --- |")
    print(f"| Produce of one 100 B record, acks=1 | {min(produced):.1f} [{statistics.median(produced):.1f}] |")
    print(f"| that Produce and the Fetch of its record | {min(pairs):.1f} [{statistics.median(pairs):.1f}] |")


if __name__ == "__main__":
    main()
