"""Quix Streams (PyPI `quixstreams`), the peer of bench/bench_streams.py: the same three
topologies on the same input, read through the broker's Kafka listener (a Kafka-protocol
broker on loopback), one process, RocksDB state with changelog topics, at-least-once.

Quix Streams pins an older confluent-kafka than shmlog's tests use, so bench_streams.py runs
this file with the Python of its own virtual environment (`--quix-python`, made with
`python -m venv Q && Q/bin/pip install quixstreams`). Prints one JSON line: records/s.

    Q/bin/python bench/peers/quix_streams.py BOOTSTRAP KIND RECORDS STATE_DIR
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from streams_functions import keep, notional, slim  # noqa: E402


def main():
    bootstrap, kind, records, state_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    from quixstreams import Application
    from quixstreams.dataframe.windows import Sum
    seen = {"n": 0, "first": None, "last": None}

    def processed(topic, partition, offset):
        if topic == "input":
            seen["n"] += 1
            seen["first"] = seen["first"] or time.perf_counter()
            if seen["n"] == records:
                seen["last"] = time.perf_counter()
                app.stop()

    app = Application(broker_address=bootstrap, consumer_group=f"quix-{kind}", auto_offset_reset="earliest",
                      state_dir=state_dir, loglevel="WARNING", processing_guarantee="at-least-once",
                      on_message_processed=processed)
    sdf = app.dataframe(app.topic("input", value_deserializer="json"))
    out = app.topic(f"quix-{kind}-out", value_serializer="json")
    if kind == "stateless":
        sdf = sdf.filter(keep).apply(notional).apply(slim)
    elif kind == "count":
        def count(value, state):
            n = state.get("n", 0) + 1
            state.set("n", n)
            return n
        sdf = sdf.apply(count, stateful=True)
    else:
        sdf = (sdf.apply(notional).group_by("symbol").tumbling_window(60_000, grace_ms=60_000)
               .agg(n=Sum("notional"), q=Sum("qty")).final())
    sdf.to_topic(out)
    app.run()
    if seen["last"] is None:
        raise SystemExit(f"quix: processed {seen['n']} of {records} input records")
    print(json.dumps({"records_per_s": records / (seen["last"] - seen["first"])}))


if __name__ == "__main__":
    main()
