"""Each streams operator against a plain-Python model on random input (out-of-order times and
late records included), driven through a real Task with its SQLite state, no broker."""
import itertools
import json
import pickle
import random

import pytest

from shmlog.streams import App, Count, Latest, Max, Mean, Min, Sum
from shmlog.streams import state as st
from shmlog.streams.ktable import TablePartition, TableRecord
from shmlog.streams.task import Task

TOPIC = "input"


class Harness:
    """One task (partition 0 of TOPIC) of app's topology; `produced` collects what it produces.
    table_log: the records of partition 0 of every co-partitioned table the task joins, as
    (key str, value or None, timestamp ms) in offset order from `first_offset`, all in the
    table topic before the first batch is read."""

    def __init__(self, app, path, table_log=(), first_offset=0):
        self.app = app
        self.produced = []
        roots = [src for src in app.sources if src.topic == TOPIC]
        self.metrics = {}
        self.tables = [TablePartition(table, 0, first_offset) for table in app.ktables_of(TOPIC)]
        for offset, (key, value, ts) in enumerate(table_log, first_offset):
            for table in self.tables:
                table.add(TableRecord(offset, ts, key.encode(), None if value is None else json.dumps(value).encode()))
        self.task = Task(TOPIC, 0, st.TaskState(str(path)), roots, app.stores_of(TOPIC),
                         lambda *args: self.produced.append(args), self.metrics, self.tables)

    def feed(self, records, batch=50):
        """records: (key str, value, timestamp ms); committed every `batch` records as the worker does."""
        for i, (key, value, ts) in enumerate(records):
            self.task.process(key.encode(), json.dumps(value).encode(), ts, 0, None)
            if (i + 1) % batch == 0:
                list(self.task.changelog_records(self.app.changelog_topic))
                self.task.state.commit()
        list(self.task.changelog_records(self.app.changelog_topic))
        self.task.state.commit()


def new_app():
    return App({"bootstrap.servers": "shm:///unused", "application.id": "t"})


def sink(sdf):
    out = []
    sdf.update(out.append)
    return out


def keyed_sink(sdf):
    """(key, value) of every record reaching this point."""
    out = []
    sdf.apply(lambda v, state: v, stateful=False).update(out.append)
    return out


def random_records(seed, n=400, keys=5, disorder_ms=3000):
    rng = random.Random(seed)
    records, now = [], 1_000_000
    for _ in range(n):
        now += rng.randint(0, 8) * 50           # coarse times: window edges are hit exactly, often
        ts = now - rng.randint(0, disorder_ms // 50) * 50 if rng.random() < 0.3 else now
        records.append((f"k{rng.randrange(keys)}", {"x": rng.randint(-50, 50)}, ts))
    return records


# ---------------------------------------------------------------------- the models

def model_fixed_windows(records, windows_of, grace, aggregate):
    """Final results of fixed windows: {(key, start, end): aggregate of on-time values},
    emitted when closed; plus the number of late records."""
    stream_time, open_, final, late = -1, {}, [], 0
    for key, value, ts in records:
        stream_time = max(stream_time, ts)
        placed = False
        for start, end in windows_of(ts):
            if stream_time >= end + grace:
                continue
            placed = True
            open_.setdefault((key, start, end), []).append(value["x"])
        late += not placed
        for wkey in sorted(k for k in open_ if stream_time >= k[2] + grace):
            final.append((wkey, aggregate(open_.pop(wkey))))
    return final, late


def model_sessions(records, gap, grace):
    stream_time, sessions, final, late = -1, {}, [], 0
    for key, value, ts in records:
        stream_time = max(stream_time, ts)
        if ts + grace < stream_time:
            late += 1
        else:
            mine = sessions.setdefault(key, [])
            touching = [s for s in mine if s[0] - gap <= ts <= s[1] + gap]
            start = min([ts] + [s[0] for s in touching])
            end = max([ts] + [s[1] for s in touching])
            values = [value["x"]] + [v for s in touching for v in s[2]]
            for s in touching:
                mine.remove(s)
            mine.append((start, end, values))
        for k, mine in sessions.items():
            for s in sorted(mine):
                if stream_time > s[1] + gap + grace:
                    final.append(((k, s[0], s[1]), sum(s[2])))
                    mine.remove(s)
    return final, late


def emitted(outputs):
    return [(o["start"], o["end"], o["value"]) for o in outputs]


# ---------------------------------------------------------------------- stateless

def test_fused_stateless_steps_equal_the_same_python_functions(tmp_path):
    app = new_app()
    out = sink(app.stream(TOPIC).filter(lambda v: v["x"] % 3 != 0).apply(lambda v: {"x": v["x"] * 2, "y": 1})
               .flat_map(lambda v: [v, {"x": -v["x"], "y": 2}])["x"])
    records = random_records(1)
    Harness(app, tmp_path / "s.sqlite").feed(records)
    expected = [y for _, v, _ in records if v["x"] % 3 != 0 for y in (v["x"] * 2, -v["x"] * 2)]
    assert out == expected


def test_a_branch_sees_every_record_of_its_parent(tmp_path):
    app = new_app()
    sdf = app.stream(TOPIC)
    evens = sink(sdf.filter(lambda v: v["x"] % 2 == 0))
    everything = sink(sdf)
    records = random_records(2)
    Harness(app, tmp_path / "s.sqlite").feed(records)
    assert everything == [v for _, v, _ in records]
    assert evens == [v for _, v, _ in records if v["x"] % 2 == 0]


def test_group_by_produces_each_record_to_the_repartition_topic_under_its_new_key(tmp_path):
    app = new_app()
    app.stream(TOPIC).group_by(lambda v: "even" if v["x"] % 2 == 0 else "odd", name="parity")
    records = random_records(3)
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed(records)
    assert [(t, k) for t, k, _, _, _ in h.produced] == \
        [("t-repartition-parity", b"even" if v["x"] % 2 == 0 else b"odd") for _, v, _ in records]


# ---------------------------------------------------------------------- per-key aggregations

@pytest.mark.parametrize("seed", [4, 5])
def test_running_aggregations_per_key_equal_the_model(tmp_path, seed):
    app = new_app()
    sdf = app.stream(TOPIC)
    counts = sink(sdf.count())
    sums = sink(sdf.sum("x"))
    means = sink(sdf.mean("x"))
    lows = sink(sdf.min("x"))
    highs = sink(sdf.max("x"))
    composite = sink(sdf.agg(n=Count(), total=Sum("x"), last=Latest("x")))
    records = random_records(seed)
    Harness(app, tmp_path / "s.sqlite").feed(records)
    seen = {}
    exp = {"count": [], "sum": [], "mean": [], "min": [], "max": [], "agg": []}
    for key, value, ts in records:
        seen.setdefault(key, []).append((ts, value["x"]))
        xs = [x for _, x in seen[key]]
        exp["count"].append(len(xs))
        exp["sum"].append(sum(xs))
        exp["mean"].append(sum(xs) / len(xs))
        exp["min"].append(min(xs))
        exp["max"].append(max(xs))
        latest = max(enumerate(seen[key]), key=lambda item: (item[1][0], item[0]))[1][1]
        exp["agg"].append({"n": len(xs), "total": sum(xs), "last": latest})
    assert (counts, sums, means, lows, highs, composite) == \
        (exp["count"], exp["sum"], exp["mean"], exp["min"], exp["max"], exp["agg"])


def test_a_stateful_apply_keeps_state_per_message_key(tmp_path):
    app = new_app()

    def running_position(value, state):
        position = state.get("position", 0) + value["x"]
        state.set("position", position)
        return position
    out = sink(app.stream(TOPIC).apply(running_position, stateful=True))
    records = random_records(6)
    Harness(app, tmp_path / "s.sqlite").feed(records)
    positions, expected = {}, []
    for key, value, _ in records:
        positions[key] = positions.get(key, 0) + value["x"]
        expected.append(positions[key])
    assert out == expected


# ---------------------------------------------------------------------- windows

@pytest.mark.parametrize("seed", [7, 8, 9])
def test_tumbling_windows_final_results_and_late_records_equal_the_model(tmp_path, seed):
    app = new_app()
    out = sink(app.stream(TOPIC).tumbling_window(1000, grace_ms=500).sum("x").final())
    records = random_records(seed)
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed(records)
    final, late = model_fixed_windows(records, lambda ts: [(ts - ts % 1000, ts - ts % 1000 + 1000)], 500, sum)
    assert sorted(emitted(out)) == sorted((s, e, v) for (_, s, e), v in final)
    assert h.metrics["window-1"][2] == late > 0


@pytest.mark.parametrize("seed", [10, 11])
def test_hopping_windows_final_results_equal_the_model(tmp_path, seed):
    app = new_app()
    out = sink(app.stream(TOPIC).hopping_window(1000, 250, grace_ms=300).sum("x").final())
    records = random_records(seed)
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed(records)

    def windows_of(ts):
        return [(s, s + 1000) for s in range(0, ts + 1, 250) if s <= ts < s + 1000]
    final, late = model_fixed_windows(records, windows_of, 300, sum)
    assert sorted(emitted(out)) == sorted((s, e, v) for (_, s, e), v in final)
    assert h.metrics["window-1"][2] == late


def test_current_emission_reports_every_update_of_a_window(tmp_path):
    app = new_app()
    out = sink(app.stream(TOPIC).tumbling_window(1000).count().current())
    records = [("a", {"x": 1}, 100), ("a", {"x": 1}, 200), ("a", {"x": 1}, 1100), ("a", {"x": 1}, 900)]
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed(records)
    assert emitted(out) == [(0, 1000, 1), (0, 1000, 2), (1000, 2000, 1)]   # 900 came after window 0 closed
    assert h.metrics["window-1"][2] == 1


@pytest.mark.parametrize("seed", [12, 13])
def test_session_windows_final_results_equal_the_model(tmp_path, seed):
    app = new_app()
    out = sink(app.stream(TOPIC).session_window(600, grace_ms=400).sum("x").final())
    records = random_records(seed, keys=3)
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed(records)
    final, late = model_sessions(records, 600, 400)
    assert sorted(emitted(out)) == sorted((s, e, v) for (_, s, e), v in final)
    assert h.metrics["window-1"][2] == late


def test_closed_windows_free_their_state(tmp_path):
    app = new_app()
    app.stream(TOPIC).tumbling_window(100).agg(low=Min("x"), high=Max("x"), avg=Mean("x")).final()
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed([("k", {"x": i}, i * 10) for i in range(1000)])
    assert h.task.state.count("window-1") == 1      # only the window still open


# ---------------------------------------------------------------------- changelog and restore

def test_replaying_the_changelog_rebuilds_the_same_state(tmp_path):
    app = new_app()
    sdf = app.stream(TOPIC)
    sdf.count()
    sdf.session_window(500).sum("x").current()
    h = Harness(app, tmp_path / "a.sqlite")
    changelog = []
    records = random_records(14)
    for i in range(0, len(records), 37):
        for key, value, ts in records[i:i + 37]:
            h.task.process(key.encode(), json.dumps(value).encode(), ts, 0, None)
        changelog += list(h.task.changelog_records(app.changelog_topic))
        h.task.state.commit()
    restored = st.TaskState(str(tmp_path / "b.sqlite"))
    restored.begin()
    for topic, key, value in changelog:
        restored.apply(topic[len("t-"):-len("-changelog")], key, value)
    restored.commit()
    dump = "SELECT * FROM kv ORDER BY 1, 2", "SELECT * FROM win ORDER BY 1, 2, 3"
    for query in dump:
        assert restored.db.execute(query).fetchall() == h.task.state.db.execute(query).fetchall()
    assert restored.meta(st.STREAM_TIME) == h.task.ctx.stream_time


def test_a_rolled_back_batch_leaves_no_trace_in_state(tmp_path):
    app = new_app()
    counts = sink(app.stream(TOPIC).count())
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed([("a", {"x": 1}, 10)])
    h.task.process(b"a", b'{"x": 1}', 20, 0, None)
    h.task.rollback()
    h.feed([("a", {"x": 1}, 30)])
    assert counts == [1, 2, 2]       # the rolled-back record's update is gone: counted again from 1
    assert h.task.ctx.stream_time == 30


# ---------------------------------------------------------------------- building errors

def test_bad_topologies_are_refused_with_what_is_wrong():
    app = new_app()
    sdf = app.stream(TOPIC)
    with pytest.raises(ValueError, match="group_by.*name"):
        sdf.group_by(lambda v: v)
    with pytest.raises(ValueError, match="step_ms"):
        sdf.hopping_window(100, 200)
    with pytest.raises(ValueError, match="merger"):
        sdf.session_window(100).reduce(lambda a, b: a + b)
    with pytest.raises(ValueError, match="application.id"):
        App({"bootstrap.servers": "shm:///x"})
    with pytest.raises(ValueError, match="processing.guarantee"):
        App({"bootstrap.servers": "shm:///x", "application.id": "a", "processing.guarantee": "twice"})
    with pytest.raises(ValueError, match="how= must be one of 'inner', 'left', 'outer', not 'full'"):
        sdf.join_stream(app.stream("other"), within_ms=10, how="full")
    sdf.count(name="n")
    with pytest.raises(ValueError, match="used twice"):
        sdf.count(name="n")


def model_sliding(records, size, grace):
    """Final results of sliding windows: the window ending at a record's time t covers
    [t - size, t]; a record joins every window containing it that is open when it arrives."""
    stream_time, late, arrived, windows, closed = -1, 0, [], {}, []
    for key, value, ts in records:
        stream_time = max(stream_time, ts)
        if stream_time >= ts + 1 + grace:
            late += 1
        else:
            arrived.append((key, ts, value["x"]))
            if (key, ts) not in windows:
                windows[(key, ts)] = [x for k, t, x in arrived[:-1] if k == key and ts - size <= t <= ts]
            for (k, end), xs in windows.items():
                if k == key and end - size <= ts <= end:
                    xs.append(value["x"])
        for (k, end) in sorted(windows):
            if stream_time >= end + 1 + grace:
                closed.append(((k, end - size, end + 1), sum(windows.pop((k, end)))))
    return closed, late


@pytest.mark.parametrize("seed", [15, 16])
def test_sliding_windows_final_results_equal_the_model(tmp_path, seed):
    app = new_app()
    out = sink(app.stream(TOPIC).sliding_window(1000, grace_ms=300).sum("x").final())
    records = random_records(seed, keys=3)
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed(records)
    final, late = model_sliding(records, 1000, 300)
    assert sorted(emitted(out)) == sorted((s, e, v) for (_, s, e), v in final)
    assert h.metrics["window-1"][2] == late
    assert h.task.state.count("window-1") < 3 * 20      # old records and closed windows are forgotten


class JoinHarness:
    """The task of partition 0 of a join's internal topic, fed (side, key, value, ts) arrivals as
    the Repartition steps of both sides would write them. Outputs go to topic "out": `emitted`
    holds, per arrival, what it emitted as (key, value, timestamp)."""

    def __init__(self, app, path, join_topic="t-join-j"):
        self.app = app
        self.produced = []
        self.metrics = {}
        self.emitted = []
        roots = [src for src in app.sources if src.topic == join_topic]
        self.task = Task(join_topic, 0, st.TaskState(str(path)), roots, app.stores_of(join_topic),
                         lambda *args: self.produced.append(args), self.metrics)

    def arrive(self, side, key, value, ts):
        before = len(self.produced)
        self.task.process(key.encode(), pickle.dumps((side, value)), ts, 0, None)
        self.emitted.append([(k.decode(), json.loads(v), t) for _, k, v, t, _ in self.produced[before:]])
        return self.emitted[-1]

    def commit(self):
        """What the worker does after a batch: the changelog records of what changed, then commit."""
        changelog = list(self.task.changelog_records(self.app.changelog_topic))
        self.task.state.commit()
        return changelog


def join_app(how, within_ms, grace_ms, merge=None):
    app = new_app()
    (app.stream(TOPIC).join_stream(app.stream("other"), within_ms=within_ms, grace_ms=grace_ms, merge=merge,
                                   name="j", how=how)
        .to_topic("out"))
    return app


def ids(left, right):
    """A merge that names the records it joined: their ids, None for a missing side."""
    return [None if left is None else left["id"], None if right is None else right["id"]]


def model_stream_join(arrivals, within, grace, how):
    """What a windowed join emits as each arrival is processed, stated from the definitions:
    [[(key, [left id, right id], timestamp), ...] per arrival], and the number of late records.
    arrivals: (side, key, ts) in the order the join's task reads them; a record's id is its index.

    Stream time after an arrival is the largest time so far. A record is late if stream time has
    passed its time + within + grace when it arrives; otherwise it stays open until the first
    arrival that moves stream time past that (it closes after that arrival is joined). A pair
    (one record per side, same key, at most within apart) is emitted when its second record
    arrives while the first is open, timestamped with the later time. A record of an outer side
    that is in no pair is emitted at the arrival that closes it, at its own time."""
    outer_sides = {"inner": "", "left": "L", "outer": "LR"}[how]
    stream_time = list(itertools.accumulate((ts for _, _, ts in arrivals), max))
    late = [ts + within + grace < stream_time[i] for i, (_, _, ts) in enumerate(arrivals)]

    never = len(arrivals)
    closes_at = [next((i for i, now in enumerate(stream_time) if now > ts + within + grace), never)
                 for _, _, ts in arrivals]
    out, matched = [[] for _ in arrivals], set()
    for i, (side, key, ts) in enumerate(arrivals):
        for j, (o_side, o_key, o_ts) in enumerate(arrivals[:i]):
            if (not late[i] and not late[j] and o_side != side and o_key == key and abs(o_ts - ts) <= within
                    and closes_at[j] >= i):
                out[i].append((key, [j, i] if side == "R" else [i, j], max(ts, o_ts)))
                matched |= {i, j}
    for j, (side, key, ts) in enumerate(arrivals):
        if not late[j] and j not in matched and side in outer_sides and closes_at[j] != never:
            out[closes_at[j]].append((key, [j, None] if side == "L" else [None, j], ts))
    return out, sum(late)


def random_arrivals(seed):
    rng = random.Random(seed)
    return [(rng.choice("LR"), key, ts) for key, _, ts in random_records(seed, keys=4)]


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
@pytest.mark.parametrize("seed", [17, 18, 19])
def test_a_windowed_stream_join_emits_what_the_model_emits_at_each_arrival(tmp_path, how, seed):
    h = JoinHarness(join_app(how, within_ms=500, grace_ms=200, merge=ids), tmp_path / "j.sqlite")
    arrivals = random_arrivals(seed)
    for i, (side, key, ts) in enumerate(arrivals):
        h.arrive(side, key, {"id": i}, ts)
        if i % 50 == 49:
            h.commit()
    expected, late = model_stream_join(arrivals, 500, 200, how)
    assert [sorted(e, key=repr) for e in h.emitted] == [sorted(e, key=repr) for e in expected]
    assert h.metrics["j"][2] == late > 0
    results = [r for per_arrival in expected for r in per_arrival]
    pairs_out_of_order = [r for r in results                 # the first to arrive has the later time
                          if None not in r[1] and arrivals[min(r[1])][2] > arrivals[max(r[1])][2]]
    unmatched = [r for r in results if None in r[1]]
    assert pairs_out_of_order, "no pair whose later arrival had the earlier time: the input tests too little"
    assert bool(unmatched) == (how != "inner")
    if how == "outer":
        assert {r[1].index(None) for r in unmatched} == {0, 1}      # unmatched records of both sides


def test_a_left_join_emits_an_unmatched_record_once_its_window_closes(tmp_path):
    h = JoinHarness(join_app("left", within_ms=100, grace_ms=50), tmp_path / "j.sqlite")
    assert h.arrive("L", "a", {"order": 1}, 1000) == []
    assert h.arrive("R", "b", {"paid": 5}, 1100) == []         # another key's payment
    assert h.arrive("L", "b", {"order": 2}, 1150) == [("b", {"order": 2, "paid": 5}, 1150)]
    # Stream time is 1150 = 1000 + within + grace: order 1's window is still open, a payment
    # arriving out of order now joins it.
    assert h.arrive("R", "a", {"paid": 9}, 1100) == [("a", {"order": 1, "paid": 9}, 1100)]
    assert h.arrive("L", "c", {"order": 3}, 1151) == []        # closes order 1: paid, so not emitted alone
    assert h.arrive("L", "d", {"order": 4}, 1301) == []        # order 3 stays open until past 1151 + 150
    assert h.arrive("L", "e", {"order": 5}, 1302) == [("c", {"order": 3}, 1151)]   # alone, at its own time
    assert h.metrics["j"][2] == 0


def test_an_outer_join_emits_the_unmatched_records_of_both_sides_when_their_windows_close(tmp_path):
    h = JoinHarness(join_app("outer", within_ms=100, grace_ms=0), tmp_path / "j.sqlite")
    assert h.arrive("L", "a", {"order": 1}, 1000) == []
    assert h.arrive("R", "b", {"paid": 8}, 1050) == []         # no order of b ever comes
    # Payment 7 is too far from order 1 to join it, and moves stream time past order 1's window.
    assert h.arrive("R", "a", {"paid": 7}, 1101) == [("a", {"order": 1}, 1000)]
    assert h.arrive("R", "z", {"paid": 0}, 1151) == [("b", {"paid": 8}, 1050)]
    assert h.arrive("L", "y", {"order": 2}, 1202) == [("a", {"paid": 7}, 1101)]


def test_a_record_later_than_its_window_and_grace_is_dropped_and_never_emitted_unmatched(tmp_path):
    h = JoinHarness(join_app("outer", within_ms=100, grace_ms=50), tmp_path / "j.sqlite")
    assert h.arrive("L", "a", {"order": 1}, 2000) == []
    assert h.arrive("L", "b", {"order": 2}, 1849) == []        # 1849 + 150 < 2000: late
    assert h.arrive("R", "b", {"paid": 3}, 1850) == []         # just in time, and the late order is not there
    assert h.arrive("L", "z", {"order": 0}, 9000) == [("b", {"paid": 3}, 1850), ("a", {"order": 1}, 2000)]
    assert h.metrics["j"][2] == 1


def restored_from(app, changelog, path):
    """The join's task as a worker that takes it over sees it: a new state file filled from
    nothing but the changelog records of the batches committed before."""
    state = st.TaskState(str(path))
    state.begin()
    for _, key, value in changelog:
        state.apply("j", key, value)
    state.commit()
    state.close()
    return JoinHarness(app, path)


def test_pending_unmatched_records_survive_a_crash_and_a_restore_from_the_changelog(tmp_path):
    """Every other batch, the worker dies halfway under exactly-once: the batch's outputs are
    aborted, a new worker restores the task from the changelog and reads the batch again. The
    committed batches' outputs equal the model's: no unmatched record lost or emitted twice."""
    app = join_app("outer", within_ms=1500, grace_ms=500, merge=ids)
    arrivals = random_arrivals(20)
    batches = [range(start, min(start + 12, len(arrivals))) for start in range(0, len(arrivals), 12)]
    h, changelog, committed = JoinHarness(app, tmp_path / "task-0.sqlite"), [], []
    for n, batch in enumerate(batches):
        if n % 2 == 1:
            for i in batch[:6]:
                h.arrive(arrivals[i][0], arrivals[i][1], {"id": i}, arrivals[i][2])
            h.task.state.close()
            h = restored_from(app, changelog, tmp_path / f"task-{n}.sqlite")
        for i in batch:
            h.arrive(arrivals[i][0], arrivals[i][1], {"id": i}, arrivals[i][2])
        changelog += h.commit()
        committed += h.emitted[-len(batch):]
    expected, _ = model_stream_join(arrivals, 1500, 500, "outer")
    assert [sorted(e, key=repr) for e in committed] == [sorted(e, key=repr) for e in expected]
    assert sum(None in r[1] for e in expected for r in e) > 10


def test_both_sides_of_a_stream_join_go_to_one_internal_topic_keyed_as_they_were(tmp_path):
    app = new_app()
    app.stream(TOPIC).join_stream(app.stream("other"), within_ms=10, name="j")
    h = Harness(app, tmp_path / "s.sqlite")
    h.feed([("k1", {"x": 1}, 5)])
    assert [(t, k, pickle.loads(v)) for t, k, v, _, _ in h.produced] == [("t-join-j", b"k1", ("L", {"x": 1}))]


# ---------------------------------------------------------------------- co-partitioned table joins

def model_ktable_join(stream, table_log, how):
    """What a co-partitioned table join emits, stated from its definition: each stream record, in
    order, sees the table as of the task's stream time (the largest stream timestamp so far):
    every table record in offset order up to the first whose timestamp is later, a None value
    deleting its key. [(key, [stream id, table value or None])]."""
    table, applied, stream_time, out = {}, 0, -1, []
    for key, value, ts in stream:
        stream_time = max(stream_time, ts)
        while applied < len(table_log) and table_log[applied][2] <= stream_time:
            table_key, table_value, _ = table_log[applied]
            if table_value is None:
                table.pop(table_key, None)
            else:
                table[table_key] = table_value["v"]
            applied += 1
        if key in table or how == "left":
            out.append((key, [value["id"], table.get(key)]))
    return out


def ktable_app(how):
    app = new_app()
    table = app.ktable("accounts")
    app.stream(TOPIC).join_table(table, how=how, merge=lambda v, row: [v["id"], None if row is None else row["v"]]) \
        .to_topic("out")
    return app


def random_table_log(seed, n=150, keys=6):
    """Updates (and 20% deletes) of k0..k5 over the same time span as random_records(seed + 1000),
    with out-of-order timestamps; k5 never occurs in the stream."""
    rng = random.Random(seed)
    log, now = [], 1_000_000
    for i in range(n):
        now += rng.randint(0, 21) * 50
        ts = now - rng.randint(0, 40) * 50 if rng.random() < 0.3 else now
        log.append((f"k{rng.randrange(keys)}", None if rng.random() < 0.2 else {"v": i}, ts))
    return log


def joined(harness):
    return [(k.decode(), json.loads(v)) for _, k, v, _, _ in harness.produced]


@pytest.mark.parametrize("how", ["inner", "left"])
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_a_co_partitioned_table_join_sees_the_table_as_of_stream_time_as_the_model_does(tmp_path, how, seed):
    stream = [(key, {"id": i}, ts) for i, (key, _, ts) in enumerate(random_records(seed + 1000, n=300))]
    table_log = random_table_log(seed)
    h = Harness(ktable_app(how), tmp_path / "s.sqlite", table_log)
    h.feed(stream)
    expected = model_ktable_join(stream, table_log, how)
    assert joined(h) == expected
    # An input where time and offset order matter (joining the final table, or the table's
    # records in timestamp order, gives other results) and deleted rows are looked up.
    assert expected != model_ktable_join([(k, v, 10**12) for k, v, _ in stream], table_log, how)
    assert expected != model_ktable_join(stream, sorted(table_log, key=lambda r: r[2]), how)
    had_row, deleted_rows_seen = set(), 0
    for key, (_, row) in model_ktable_join(stream, table_log, "left"):
        deleted_rows_seen += row is None and key in had_row
        if row is not None:
            had_row.add(key)
    assert deleted_rows_seen > 0


def test_a_table_record_waits_until_stream_time_reaches_it_and_a_null_value_deletes_the_row(tmp_path):
    table_log = [("a", {"v": 1}, 100), ("a", {"v": 2}, 300), ("b", {"v": 3}, 150), ("a", None, 400)]
    h = Harness(ktable_app("left"), tmp_path / "s.sqlite", table_log)
    h.feed([("a", {"id": 0}, 50), ("a", {"id": 1}, 100), ("b", {"id": 2}, 200), ("a", {"id": 3}, 310),
            ("b", {"id": 4}, 120), ("a", {"id": 5}, 400)])
    assert joined(h) == [("a", [0, None]),     # before the table's first record
                         ("a", [1, 1]),        # a record at the stream's time is applied first
                         ("b", [2, None]),     # b's row (150) waits behind a's 300 in offset order
                         ("a", [3, 2]),
                         ("b", [4, 3]),        # out of order: stream time is still 310
                         ("a", [5, None])]     # deleted at 400


def test_a_task_restored_from_the_table_topic_at_the_committed_position_joins_as_the_one_it_replaces(tmp_path):
    """Every other batch the worker dies halfway: its batch is never committed. A new task
    starts from a new state file, fills the table store from the table topic's records below
    the committed position (nothing else), reads the table on from there, and reads the batch
    again. What the committed batches emitted equals the model's."""
    app = ktable_app("left")
    table_log = random_table_log(24)
    stream = [(key, {"id": i}, ts) for i, (key, _, ts) in enumerate(random_records(1024, n=300))]
    h, committed, position, emitted = Harness(app, tmp_path / "task-0.sqlite", table_log), 0, 0, []
    for n, start in enumerate(range(0, len(stream), 20)):
        batch = stream[start:start + 20]
        if n % 2 == 1:
            for key, value, ts in batch[:10]:
                h.task.process(key.encode(), json.dumps(value).encode(), ts, 0, None)
            h.task.state.close()
            state = st.TaskState(str(tmp_path / f"task-{n}.sqlite"))
            state.begin()
            for key, value, _ in table_log[:position]:
                app.ktables[0].apply(state, key.encode(), None if value is None else json.dumps(value).encode())
            state.commit()
            state.close()
            h = Harness(app, tmp_path / f"task-{n}.sqlite", table_log[position:], first_offset=position)
            committed = 0
        h.feed(batch)
        emitted += joined(h)[committed:]
        committed, position = len(h.produced), h.tables[0].position()
    assert emitted == model_ktable_join(stream, table_log, "left")
    assert 0 < position < len(table_log)        # some table records were still waiting for stream time


def test_co_partitioned_table_joins_that_cannot_work_are_refused_with_what_is_wrong():
    app = new_app()
    accounts = app.ktable("accounts")
    with pytest.raises(ValueError, match="looks up the record's key"):
        app.stream(TOPIC).join_table(accounts, on=lambda v: v["account"])
    app.stream(TOPIC).join_table(accounts)
    with pytest.raises(ValueError, match="joined by stream 'input' already, and cannot also be joined by stream "
                                         "'other'"):
        app.stream("other").join_table(accounts)
    with pytest.raises(ValueError, match="'accounts' is a co-partitioned table .* cannot also be a stream"):
        app.stream("accounts")
    with pytest.raises(ValueError, match="'input' is a stream .* cannot also be a co-partitioned table"):
        app.ktable(TOPIC)
    with pytest.raises(ValueError, match="join_table how= must be 'inner' or 'left'"):
        app.stream(TOPIC).join_table(accounts, how="outer")


def test_describe_names_a_co_partitioned_table_its_store_and_its_changelog():
    app = new_app()
    (app.stream(TOPIC).group_by("account").join_table(app.ktable("accounts", name="balances"), how="left")
        .to_topic("out"))
    printed = app.describe()
    assert "join-1: join_table accounts (left, co-partitioned table, store balances)" in printed
    assert ("table accounts: co-partitioned with t-repartition-account, store balances: changelog accounts "
            "(the table's topic)") in printed
    assert "t-balances-changelog" not in printed
