"""shmlog.streams applications on a real broker, with real worker processes, real SIGKILLs and
real state files: outputs read with read_committed equal the model's exactly."""
import json
import os
import pickle
import random
import signal
import sqlite3
import time
from collections import Counter

import pytest

import shmlog
from shmlog.streams import App, Sum
from tests.conftest import create_topic

DEADLINE_S = 120


@pytest.fixture
def fast_broker(start_broker):
    return start_broker(group_initial_rebalance_delay_ms=0)


@pytest.fixture
def conf(fast_broker):
    return {"bootstrap.servers": fast_broker.bootstrap_servers}


@pytest.fixture
def admin(conf):
    a = shmlog.AdminClient(conf)
    yield a
    a.close()


def produce(conf, topic, records):
    p = shmlog.Producer(conf)
    for key, value, ts in records:
        p.produce(topic, key=key, value=json.dumps(value), timestamp=ts)
    assert p.flush(30) == 0


def read_committed(conf, topic, count, timeout_s=DEADLINE_S, decode=json.loads):
    """The first `count` records of topic (all partitions), read_committed: [(key, value)]."""
    c = shmlog.Consumer({**conf, "group.id": f"check-{topic}", "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    meta = c.list_topics(topic, timeout=10)
    c.assign([shmlog.TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in meta.topics[topic].partitions])
    out, deadline = [], time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                if m.error() is None:
                    out.append((m.key(), decode(m.value())))
        return out
    finally:
        c.close()


def read_committed_to_end(conf, topic):
    """Every committed record of topic (all partitions), once nothing writes to it: [(key, value)]."""
    c = shmlog.Consumer({**conf, "group.id": f"check-all-{topic}", "isolation.level": "read_committed",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([shmlog.TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in partitions])
    out, at_end, deadline = [], set(), time.monotonic() + DEADLINE_S
    try:
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(at_end)} of {len(partitions)} read"
            for m in c.consume(1000, 0.2):
                if m.error() is None:
                    out.append((m.key(), json.loads(m.value())))
                elif m.error().code() == shmlog.KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
        return out
    finally:
        c.close()


def trades(n, keys, seed=0):
    rng = random.Random(seed)
    base = int(time.time() * 1000) - 3_600_000
    return [(f"T{rng.randrange(keys)}", {"qty": rng.randint(1, 9), "price": rng.randint(90, 110)}, base + i * 10)
            for i in range(n)]


def count_app(conf, tmp_path, app_id, guarantee):
    app = App({**conf, "application.id": app_id, "processing.guarantee": guarantee,
               "state.dir": str(tmp_path / "state")})
    app.stream("trades").count().to_topic("counts")
    return app


def per_key_sequences(outputs):
    seqs = {}
    for key, value in outputs:
        seqs.setdefault(key, []).append(value)
    return seqs


def test_a_keyed_count_over_two_workers_counts_every_record_once_per_key(conf, admin, tmp_path):
    create_topic(admin, "trades", 4)
    records = trades(2000, 40)
    produce(conf, "trades", records)
    runner = count_app(conf, tmp_path, "counter", "at_least_once").runner(workers=2)
    with runner:
        outputs = read_committed(conf, "counts", len(records))
    expected = {}
    for key, _, _ in records:
        expected[key.encode()] = expected.get(key.encode(), 0) + 1
    assert {k: seq[-1] for k, seq in per_key_sequences(outputs).items()} == expected


def test_exactly_once_outputs_equal_the_model_when_workers_are_sigkilled(conf, admin, tmp_path):
    create_topic(admin, "trades", 4)
    records = trades(6000, 60, seed=1)
    runner = count_app(conf, tmp_path, "counter-eos", "exactly_once").runner(workers=2, batch_size=200)
    rng = random.Random(2)
    kills = 0
    with runner:
        for i in range(0, len(records), 500):
            produce(conf, "trades", records[i:i + 500])
            pids = list(runner.worker_pids().values())
            if pids and rng.random() < 0.6:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
        outputs = read_committed(conf, "counts", len(records))
    assert kills > 0 and runner.restarts >= kills
    expected = {}
    for key, _, _ in records:
        expected.setdefault(key.encode(), []).append(len(expected.get(key.encode(), [])) + 1)
    assert per_key_sequences(outputs) == expected       # every count exactly once, in order
    state = {}                                          # and the local state, killed tasks restored, agrees
    for kv, _ in _state_rows(os.path.join(str(tmp_path / "state"), "counter-eos")).values():
        state.update({key: pickle.loads(value) for store, key, value in kv if store == "count-1"})
    assert state == {key: seq[-1] for key, seq in expected.items()}


def _state_rows(state_dir):
    rows = {}
    for name in sorted(os.listdir(state_dir)):
        if name.endswith(".sqlite"):
            db = sqlite3.connect(os.path.join(state_dir, name))
            rows[name] = (db.execute("SELECT * FROM kv ORDER BY 1, 2").fetchall(),
                          db.execute("SELECT * FROM win ORDER BY 1, 2, 3").fetchall())
            db.close()
    return rows


def test_state_restored_from_the_changelog_equals_the_state_before(conf, admin, tmp_path):
    create_topic(admin, "trades", 2)
    records = trades(3000, 30, seed=3)
    produce(conf, "trades", records)

    def build():
        app = App({**conf, "application.id": "positions", "processing.guarantee": "exactly_once",
                   "state.dir": str(tmp_path / "state")})
        sdf = app.stream("trades")
        sdf.apply(lambda v, state: state.set("qty", state.get("qty", 0) + v["qty"]), stateful=True, name="position")
        sdf.tumbling_window(1000).agg(qty=Sum("qty")).current().to_topic("windows")
        return app
    app = build()
    with app.runner(workers=2):
        read_committed(conf, "windows", len(records))
    before = _state_rows(app.state_dir)
    assert before and all(kv for kv, _ in before.values())
    for name in os.listdir(app.state_dir):
        os.unlink(os.path.join(app.state_dir, name))
    runner = build().runner(workers=1)
    with runner:
        deadline = time.monotonic() + DEADLINE_S
        while len(runner.stats()["workers"]) < 1 or not runner.assignments.get(0):
            assert time.monotonic() < deadline, "the restarted application was never assigned its partitions"
            time.sleep(0.05)
    assert _state_rows(app.state_dir) == before


def test_results_stay_exact_when_the_worker_count_changes_mid_run(conf, admin, tmp_path):
    create_topic(admin, "trades", 4)
    records = trades(4000, 50, seed=4)
    app = count_app(conf, tmp_path, "rescaled", "exactly_once")
    first = app.runner(workers=1, batch_size=100)
    first.start()
    try:
        produce(conf, "trades", records[:1500])
        with count_app(conf, tmp_path, "rescaled", "exactly_once").runner(workers=2, batch_size=100):
            produce(conf, "trades", records[1500:3000])
            first.stop()
            first.join()
            produce(conf, "trades", records[3000:])
            outputs = read_committed(conf, "counts", len(records))
    finally:
        first.stop()
        first.join()
    expected = {}
    for key, _, _ in records:
        expected.setdefault(key.encode(), []).append(len(expected.get(key.encode(), [])) + 1)
    assert per_key_sequences(outputs) == expected


def test_a_stream_table_join_uses_the_tables_latest_row(conf, admin, tmp_path):
    create_topic(admin, "trades", 2)
    create_topic(admin, "symbols", 1, cleanup_policy="compact")
    produce(conf, "symbols", [("T0", {"name": "old"}, int(time.time() * 1000)),
                              ("T0", {"name": "zero"}, int(time.time() * 1000)),
                              ("T1", {"name": "one"}, int(time.time() * 1000))])
    app = App({**conf, "application.id": "joiner", "state.dir": str(tmp_path / "state")})
    table = app.table("symbols")
    app.stream("trades").join_table(table, how="left").to_topic("enriched")
    records = trades(300, 3, seed=5)
    with app.runner(workers=1):
        produce(conf, "trades", records)
        outputs = read_committed(conf, "enriched", len(records))
    names = {b"T0": "zero", b"T1": "one"}
    assert sorted((k, v.get("name"), v["qty"]) for k, v in outputs) == \
        sorted((k.encode(), names.get(k.encode()), v["qty"]) for k, v, _ in records)


def test_streams_describe_prints_the_topology_of_an_app_in_a_module(tmp_path, capsys):
    module = tmp_path / "vwap_app.py"
    module.write_text(
        "from shmlog.streams import App, Sum\n"
        "app = App({'bootstrap.servers': 'shm:///nowhere', 'application.id': 'vwap'})\n"
        "app.stream('trades').group_by('symbol').tumbling_window(60000).agg(qty=Sum('qty')).final()"
        ".to_topic('vwap')\n")
    from shmlog.cli import main
    assert main(["streams", "describe", "vwap_app:app", "--path", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "source trades" in printed and "vwap-repartition-symbol" in printed
    assert "store window-1: changelog vwap-window-1-changelog (compacted)" in printed


def test_the_worked_example_computes_positions_and_vwap_as_the_model(conf, admin, tmp_path, monkeypatch):
    examples = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
    monkeypatch.syspath_prepend(examples)          # spawned workers inherit sys.path
    import streams_trades
    create_topic(admin, "trades", 3)
    rng, start = random.Random(6), (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    records = []
    for i in range(3000):
        trade_id = f"T{rng.randrange(40)}"
        records.append((trade_id, {"trade_id": trade_id, "symbol": rng.choice("ABC"), "price": rng.randint(90, 110),
                                   "qty": rng.randint(1, 100), "side": rng.choice(["buy", "sell"])}, start + i * 100))
    closing = [(f"close-{s}", {"trade_id": f"close-{s}", "symbol": s, "price": 1, "qty": 1, "side": "buy"},
                start + 3_600_000) for s in "ABC"]
    produce(conf, "trades", records)
    app = streams_trades.build(conf, state_dir=str(tmp_path / "state"), grace_ms=600_000)
    runner = app.runner(workers=2)
    with runner:
        positions = read_committed(conf, "positions", len(records))
        produce(conf, "trades", closing)    # an hour later on every symbol: every minute closes
        minutes = len({(v["symbol"], ts // 60_000) for _, v, ts in records})
        vwaps = read_committed(conf, "vwap", minutes)
        assert all(m["late_dropped"] == 0 for m in runner.metrics().values())
    expected_positions, held = {}, {}
    notional, volume = {}, {}
    for key, v, ts in records:
        held[key] = held.get(key, 0) + (v["qty"] if v["side"] == "buy" else -v["qty"])
        expected_positions.setdefault(key.encode(), []).append({"trade_id": key, "position": held[key]})
        minute = (v["symbol"].encode(), ts // 60_000 * 60_000)
        notional[minute] = notional.get(minute, 0) + v["price"] * v["qty"]
        volume[minute] = volume.get(minute, 0) + v["qty"]
    assert per_key_sequences(positions) == expected_positions
    assert sorted((k, v["start"], round(v["vwap"], 9), v["volume"]) for k, v in vwaps) == \
        sorted((s, m, round(notional[(s, m)] / volume[(s, m)], 9), volume[(s, m)]) for s, m in notional)


def test_a_windowed_stream_join_pairs_orders_with_their_payments(conf, admin, tmp_path):
    create_topic(admin, "orders", 2)
    create_topic(admin, "payments", 3)          # not co-partitioned: the join topic brings keys together
    app = App({**conf, "application.id": "matcher", "state.dir": str(tmp_path / "state")})
    (app.stream("orders").join_stream(app.stream("payments"), within_ms=60_000, grace_ms=3_600_000, name="paid",
                                      merge=lambda order, payment: {"order": order["n"], "paid": payment["amount"]})
        .to_topic("paid-orders"))
    base = int(time.time() * 1000) - 3_600_000
    orders = [(f"O{i}", {"n": i}, base + i * 1000) for i in range(200)]
    payments = [(f"O{i}", {"amount": i * 10}, base + i * 1000 + 500) for i in range(0, 200, 2)]
    with app.runner(workers=2):
        produce(conf, "orders", orders)
        produce(conf, "payments", payments)
        outputs = read_committed(conf, "paid-orders", len(payments))
    assert sorted((k, v["order"], v["paid"]) for k, v in outputs) == \
        sorted((f"O{i}".encode(), i, i * 10) for i in range(0, 200, 2))


def test_an_exactly_once_left_join_emits_every_order_paid_or_unpaid_once_when_workers_are_sigkilled(
        conf, admin, tmp_path):
    create_topic(admin, "orders", 3)
    create_topic(admin, "payments", 2)
    app = App({**conf, "application.id": "dunning", "processing.guarantee": "exactly_once",
               "state.dir": str(tmp_path / "state")})
    (app.stream("orders").join_stream(app.stream("payments"), within_ms=60_000, grace_ms=3_600_000, name="paid",
                                      how="left",
                                      merge=lambda order, payment: {
                                          "order": order["n"], "payment": None if payment is None else payment["n"]})
        .to_topic("order-status"))
    rng = random.Random(8)
    base = int(time.time() * 1000) - 5 * 3_600_000
    customers = [f"C{i}" for i in range(12)]
    orders = [(rng.choice(customers), {"n": i}, base + i * 10_000) for i in range(300)]
    payments = [(key, {"n": 1000 + o["n"]}, ts + rng.randint(-30_000, 90_000))      # some too late to count
                for key, o, ts in orders if rng.random() < 0.5]
    inputs = [("orders", *r) for r in orders] + [("payments", *r) for r in payments]
    rng.shuffle(inputs)
    runner = app.runner(workers=2, batch_size=50)
    kills = 0
    with runner:
        for i in range(0, len(inputs), 60):
            for topic in ("orders", "payments"):
                produce(conf, topic, [r[1:] for r in inputs[i:i + 60] if r[0] == topic])
            pids = list(runner.worker_pids().values())
            if pids and rng.random() < 0.6:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
        # The data spans less event time than the grace: nothing is late and no window closes
        # before every record is in the join topic. Then one order per customer, hours later,
        # moves every join task's stream time past every window.
        assert len(read_committed(conf, "dunning-join-paid", len(inputs), decode=pickle.loads)) == len(inputs)
        produce(conf, "orders", [(key, {"n": -1}, base + 3 * 3_600_000) for key in customers])
        expected = []
        for key, order, ts in orders:
            paid_by = [p["n"] for k, p, p_ts in payments if k == key and abs(p_ts - ts) <= 60_000]
            expected += [(key.encode(), {"order": order["n"], "payment": n}) for n in paid_by or [None]]
        read_committed(conf, "order-status", len(expected))
    assert kills > 0 and runner.restarts >= kills
    outputs = read_committed_to_end(conf, "order-status")
    assert sorted(outputs, key=repr) == sorted(expected, key=repr)
    assert 0 < sum(v["payment"] is None for _, v in expected) < len(orders)
    assert max(Counter(v["order"] for _, v in expected).values()) > 1    # an order joined once per payment


def test_step_metrics_reach_the_brokers_prometheus_endpoint(conf, admin, tmp_path, capsys, fast_broker):
    create_topic(admin, "trades", 2)
    records = trades(500, 10, seed=7)
    produce(conf, "trades", records)
    app = count_app(conf, tmp_path, "metered", "at_least_once")
    from shmlog.cli import main
    with app.runner(workers=1):
        read_committed(conf, "counts", len(records))
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert main(["metrics", "--once", "--data-dir", fast_broker.data_dir]) == 0
            scraped = capsys.readouterr().out
            lines = [line for line in scraped.splitlines()
                     if line.startswith("shmlog_client_streams_step_records_in_total{")
                     and 'application="metered"' in line and 'step="count-1"' in line]
            if lines and float(lines[0].rsplit(" ", 1)[1]) == len(records):
                break
            assert time.monotonic() < deadline, f"no step metrics in:\n{scraped}"
            time.sleep(0.1)


# ---------------------------------------------------------------------- co-partitioned table joins

def billing_app(conf, tmp_path, app_id, guarantee="exactly_once"):
    """Payments keyed by account, each joined (left) with its account's tier as of its time."""
    app = App({**conf, "application.id": app_id, "processing.guarantee": guarantee,
               "state.dir": str(tmp_path / "state")})
    accounts = app.ktable("accounts")
    (app.stream("payments")
        .join_table(accounts, how="left",
                    merge=lambda payment, account: {"n": payment["n"], "tier": account and account["tier"]})
        .to_topic("billed"))
    return app


def table_rows(state_dir, partition, store="table-accounts"):
    """{key: value} of a co-partitioned table's store in the state file of payments partition `partition`."""
    db = sqlite3.connect(os.path.join(state_dir, f"payments-{partition}.sqlite"))
    try:
        return {k: json.loads(pickle.loads(v)) for k, v in
                db.execute("SELECT key, value FROM kv WHERE store=?", (store,)).fetchall()}
    finally:
        db.close()


def partitions_of_keys(conf, topic):
    """{key: partition} of every record of topic (all written, nothing writing)."""
    c = shmlog.Consumer({**conf, "group.id": f"where-{topic}", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([shmlog.TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in partitions])
    found, at_end, deadline = {}, set(), time.monotonic() + DEADLINE_S
    try:
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(at_end)} of {len(partitions)} read"
            for m in c.consume(1000, 0.2):
                if m.error() is None:
                    found[m.key()] = m.partition()
                elif m.error().code() == shmlog.KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
        return found
    finally:
        c.close()


def produce_table(conf, topic, records):
    """records: (key, value or None for a tombstone, timestamp ms)."""
    p = shmlog.Producer(conf)
    for key, value, ts in records:
        p.produce(topic, key=key, value=None if value is None else json.dumps(value), timestamp=ts)
    assert p.flush(30) == 0


def model_as_of(table, key, ts):
    """The value of key's last table update with a timestamp <= ts (None: none, or deleted)."""
    value = None
    for k, v, t in table:
        if k == key and t <= ts:
            value = v
    return value


def test_an_exactly_once_co_partitioned_table_join_equals_the_model_when_workers_are_sigkilled(conf, admin, tmp_path):
    create_topic(admin, "payments", 3)
    create_topic(admin, "accounts", 3, cleanup_policy="compact")
    rng = random.Random(10)
    base = int(time.time() * 1000) - 3_600_000
    accounts = [f"A{i}" for i in range(24)]
    table, payments, rounds = [], [], []
    for r in range(12):
        # Each round's table updates and payments share one span of time; the payments see the
        # updates up to their own time, not the round's later ones (the table is written first).
        span = base + r * 10_000
        updates = sorted(((rng.choice(accounts), None if rng.random() < 0.15 else {"tier": r * 100 + j},
                           span + rng.randrange(10_000)) for j in range(15)), key=lambda u: u[2])
        times = sorted(span + rng.randrange(10_000) for _ in range(100))
        paid = [(rng.choice(accounts), {"n": len(payments) + j}, ts) for j, ts in enumerate(times)]
        table += updates
        payments += paid
        rounds.append((updates, paid))
    closing = [(key, {"n": len(payments) + i}, base + 1_000_000) for i, key in enumerate(accounts)]
    payments += closing       # every partition's stream time passes every table update
    app = billing_app(conf, tmp_path, "billing")
    runner = app.runner(workers=2, batch_size=50)
    kills = 0
    with runner:
        for updates, paid in rounds:
            produce_table(conf, "accounts", updates)
            produce(conf, "payments", paid)
            pids = list(runner.worker_pids().values())
            if pids and rng.random() < 0.6:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
        produce(conf, "payments", closing)
        read_committed(conf, "billed", len(payments))
    assert kills > 0 and runner.restarts >= kills
    expected = [(key.encode(), {"n": p["n"], "tier": (model_as_of(table, key, ts) or {}).get("tier")})
                for key, p, ts in payments]
    outputs = read_committed_to_end(conf, "billed")
    assert sorted(outputs, key=repr) == sorted(expected, key=repr)
    assert 0 < sum(v["tier"] is None for _, v in expected) < len(expected) // 2
    # Each partition's state file holds that partition's accounts, as the table ends, and no other.
    where = partitions_of_keys(conf, "accounts")
    final = {}
    for key, value, _ in table:
        final[key.encode()] = value
    for p in range(3):
        mine = {k: v for k, v in final.items() if where[k] == p and v is not None}
        assert mine and table_rows(app.state_dir, p) == mine


def test_a_restored_table_store_replays_the_table_topic_up_to_the_committed_position_only(conf, admin, tmp_path):
    create_topic(admin, "payments", 2)
    create_topic(admin, "accounts", 2, cleanup_policy="compact")
    base = int(time.time() * 1000) - 3_600_000
    now_table = [(f"A{i}", {"tier": i}, base + i) for i in range(10)]
    later_table = [(f"A{i}", {"tier": 100 + i}, base + 600_000) for i in range(10)]   # after every payment
    payments = [(f"A{i % 10}", {"n": i}, base + 1000 + i) for i in range(200)]
    produce_table(conf, "accounts", now_table + later_table)
    produce(conf, "payments", payments)
    app = billing_app(conf, tmp_path, "billing-restore", "at_least_once")
    with app.runner(workers=2):
        outputs = read_committed(conf, "billed", len(payments))
    assert sorted(v["tier"] for _, v in outputs) == sorted(i % 10 for i in range(200))
    before = {p: table_rows(app.state_dir, p) for p in range(2)}
    assert sorted(v["tier"] for rows in before.values() for v in rows.values()) == list(range(10))
    for name in os.listdir(app.state_dir):
        os.unlink(os.path.join(app.state_dir, name))
    runner = billing_app(conf, tmp_path, "billing-restore", "at_least_once").runner(workers=1)
    with runner:
        deadline = time.monotonic() + DEADLINE_S
        while len(runner.stats()["workers"]) < 1 or not runner.assignments.get(0):
            assert time.monotonic() < deadline, "the restarted application was never assigned its partitions"
            time.sleep(0.05)
    assert {p: table_rows(app.state_dir, p) for p in range(2)} == before


def test_a_co_partitioned_table_join_is_refused_unless_the_stream_has_the_tables_partition_count(conf, admin,
                                                                                                  tmp_path):
    create_topic(admin, "payments", 3)
    create_topic(admin, "accounts", 2, cleanup_policy="compact")
    with pytest.raises(shmlog.KafkaException, match="stream topic 'payments' has 3 partitions but table topic "
                                                    "'accounts' has 2: a co-partitioned table join needs"):
        billing_app(conf, tmp_path, "billing-refused").runner()

    def rekeyed(app_id):
        app = App({**conf, "application.id": app_id, "state.dir": str(tmp_path / "state")})
        app.stream("payments").group_by("account").join_table(app.ktable("accounts")).to_topic("billed")
        return app
    rekeyed("by-account").setup_topics()          # a repartition topic is created with the table's count
    assert len(admin.list_topics(timeout=10).topics["by-account-repartition-account"].partitions) == 2
    create_topic(admin, "stale-repartition-account", 3)
    with pytest.raises(shmlog.KafkaException, match="stream topic 'stale-repartition-account' has 3 partitions "
                                                    "but table topic 'accounts' has 2"):
        rekeyed("stale").setup_topics()


def test_a_task_that_lost_its_state_file_resumes_with_the_committed_stream_time(conf, admin, tmp_path):
    create_topic(admin, "payments", 1)
    create_topic(admin, "accounts", 1, cleanup_policy="compact")
    base = int(time.time() * 1000) - 3_600_000
    produce_table(conf, "accounts", [("A", {"tier": 1}, base)])
    produce(conf, "payments", [("A", {"n": 0}, base + 1000)])
    app = billing_app(conf, tmp_path, "billing-time")
    with app.runner(workers=1):
        assert read_committed(conf, "billed", 1) == [(b"A", {"n": 0, "tier": 1})]
    for name in os.listdir(app.state_dir):
        os.unlink(os.path.join(app.state_dir, name))
    # Stream time was 1000 when the task committed: an update at 500 is due for every record
    # after, including one whose own time is earlier.
    produce_table(conf, "accounts", [("A", {"tier": 2}, base + 500)])
    produce(conf, "payments", [("A", {"n": 1}, base + 200)])
    with billing_app(conf, tmp_path, "billing-time").runner(workers=1):
        assert read_committed(conf, "billed", 2)[1] == (b"A", {"n": 1, "tier": 2})
