"""Random bytes in a live ring: readers return records or raise a clear error, never crash.

The parent fills partitions of a real broker with records, then writes random bytes into
each partition's shared memory (the data area, batch headers, frame words, the ring
header's claim/release/persist/index/slot fields), opened by name the way clients open it
(`shmlog.client.cluster.Cluster(...).ring(topic, p).mapping.mm`). A reader in a separate process
(spawn context) then consumes every fuzzed partition from the beginning. It must either
return records (with check.crcs=true only records that were produced, at their offsets)
or raise KafkaException with code _BAD_MSG naming the partition; its exit code must not
be a signal. The broker's own processes (supervisor, persister), which map the same
memory, must survive too.

Garbage in the header's magic/version/geometry is refused when the ring is opened, with
a KafkaException that says what is wrong.
"""
import multiprocessing
import random
import struct

import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from shmlog._native import ffi, layout, lib
from shmlog.broker.launcher import status
from shmlog.client.cluster import Cluster

pytestmark = pytest.mark.crash

SPAWN = multiprocessing.get_context("spawn")
RING_BYTES = 1 << 16
TOPICS_PER_TEST = 8
RECORDS = 150
CHILD_TIMEOUT_S = 120.0
H = lib.shmlog_ring_map_bytes(RING_BYTES, 0) - RING_BYTES  # where the data area starts
SLOTS = lib.shmlog_ring_default_slots(RING_BYTES)  # producer slots, then as many pins, after the fixed header


def create_topic(admin, name, partitions=1):
    admin.create_topics([shmlog.NewTopic(name, partitions, config={"ring.bytes": str(RING_BYTES)})])[name].result()
    return name


def fill(conf, topic, rnd):
    """RECORDS records in batches of random sizes; returns {offset: value}."""
    acked = {}

    def on_delivery(err, msg):
        assert err is None, err
        acked[msg.offset()] = msg.value()

    producer = shmlog.Producer({**conf, "acks": 1, "linger.ms": 600000, "batch.num.messages": 1000})
    i = 0
    while i < RECORDS:
        for _ in range(min(rnd.randint(1, 12), RECORDS - i)):
            producer.produce(topic, value=b"value-%d-" % i + b"v" * rnd.randint(0, 200), key=b"k%d" % i,
                             partition=0, on_delivery=on_delivery, headers={"h": b"%d" % i} if i % 3 else None)
            i += 1
        producer.flush(30)
    producer.close()
    assert sorted(acked) == list(range(RECORDS))
    return acked


def frame_positions(ring):
    """Data-area positions of the published frames (walked before any fuzzing)."""
    mm, out, pos = ring.mapping.mm, [], 0
    tail = ring.end()[0]
    while pos < tail:
        word, = struct.unpack_from("<Q", mm, H + pos)
        length = word & 0x7FFFFFFF
        assert length, "an unpublished frame before the tail"
        out.append(pos)
        pos += length
    return out


HEADER_REGIONS = {
    "claim": (ffi.offsetof("shmlog_ring_header", "claim"), 16),
    "release": (ffi.offsetof("shmlog_ring_header", "release"), 24),
    "persist": (ffi.offsetof("shmlog_ring_header", "persist"), 48),
    "waiters": (ffi.offsetof("shmlog_ring_header", "waiters"), 32),
    "slots": (ffi.offsetof("shmlog_ring_header", "slots"), 16),
    "producers": (lib.SHMLOG_RING_HEADER_BYTES, 64 * SLOTS),
    "pins": (lib.SHMLOG_RING_HEADER_BYTES + 64 * SLOTS, 64 * SLOTS),
    "index": (ffi.offsetof("shmlog_ring_header", "index"), 1024 * 16),
}
EXTREMES = [0, 1, 7, 8, 4096, RING_BYTES - 8, RING_BYTES, 2 ** 31, 2 ** 32 - 1, 2 ** 63, 2 ** 64 - 1]


def mutate(ring, kind, rnd):
    """Write random bytes of one kind into the ring; returns a description for failure messages."""
    mm = ring.mapping.mm
    tail = ring.end()[0]
    frames = frame_positions(ring)
    done = []

    def put(at, data):
        mm[at:at + len(data)] = data
        done.append((at, data.hex()))

    if kind == "data":
        for _ in range(rnd.randint(1, 20)):
            n = rnd.randint(1, 16)
            put(H + rnd.randrange(0, tail - n), rnd.randbytes(n))
    elif kind == "frame_words":
        for pos in rnd.sample(frames, rnd.randint(1, 3)):
            at = H + pos + rnd.choice([0, 0, 4, rnd.randrange(8)])
            put(at, rnd.choice([rnd.randbytes(rnd.randint(1, 8)),
                                struct.pack("<I", rnd.choice(EXTREMES) & 0xFFFFFFFF)]))
    elif kind == "batch_headers":
        for pos in rnd.sample(frames, rnd.randint(1, 3)):
            n = rnd.randint(1, 8)
            put(H + pos + layout.FRAME_PREFIX_BYTES + rnd.randrange(0, layout.BATCH_HEADER_BYTES - n + 1),
                rnd.randbytes(n))
    elif kind == "header_fields":
        for _ in range(rnd.randint(1, 6)):
            start, size = HEADER_REGIONS[rnd.choice(sorted(HEADER_REGIONS))]
            n = rnd.randint(1, 8)
            put(start + rnd.randrange(0, size - n + 1), rnd.randbytes(n))
    elif kind == "header_extremes":
        for _ in range(rnd.randint(1, 3)):
            start, size = HEADER_REGIONS[rnd.choice(["claim", "release", "persist", "index", "index"])]
            at = start + 8 * rnd.randrange(0, size // 8)
            put(at, struct.pack("<Q", rnd.choice(EXTREMES + [rnd.getrandbits(64), tail + 8 * rnd.randint(-9, 9)])))
    elif kind == "everything":
        for _ in range(rnd.randint(1, 40)):
            n = rnd.randint(1, 32)
            put(rnd.randrange(64, H + tail - n), rnd.randbytes(n))  # all but the descriptor line
    else:
        raise AssertionError(kind)
    return done


# ---------------------------------------------------------------------------- the reader

def read_partition(bootstrap, topic, check_crcs, expected):
    import shmlog

    consumer = None
    records = []
    try:
        consumer = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "fuzz", "check.crcs": check_crcs,
                                    "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        while len(records) <= 2 * expected:
            msg = consumer.poll(0 if len(records) >= expected else 0.3)
            if msg is None:
                break
            if msg.error() is not None:
                return ("message error", msg.error().code(), str(msg.error()))
            value, key = msg.value(), msg.key()
            assert value is None or isinstance(value, bytes)
            assert key is None or isinstance(key, bytes)
            records.append((msg.offset(), value))
        return ("records", records)
    except shmlog.KafkaException as exc:
        return ("kafka", exc.args[0].code(), str(exc), len(records))
    except Exception as exc:  # anything else is a finding: report it, do not die
        import traceback
        return ("other", repr(exc), traceback.format_exc())
    finally:
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                pass


def reader_main(bootstrap, jobs, conn):
    """jobs: [(topic, check_crcs, expected)]; reports each outcome as it goes."""
    for topic, check_crcs, expected in jobs:
        conn.send(("reading", topic))
        conn.send(("outcome", topic, read_partition(bootstrap, topic, check_crcs, expected)))
    conn.send(("finished",))


def run_reader(conf, jobs):
    """Run reader_main in a spawned process; returns ({topic: outcome}, exit code, last topic started)."""
    reader, writer = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=reader_main, args=(conf["bootstrap.servers"], jobs, writer), daemon=True)
    child.start()
    writer.close()
    outcomes, current = {}, None
    try:
        while True:
            if not reader.poll(CHILD_TIMEOUT_S):
                raise AssertionError(f"reader silent for {CHILD_TIMEOUT_S}s while reading {current}")
            try:
                msg = reader.recv()
            except EOFError:
                break  # the child is gone: its exit code says how
            if msg[0] == "reading":
                current = msg[1]
            elif msg[0] == "outcome":
                outcomes[msg[1]] = msg[2]
            else:
                break
        child.join(CHILD_TIMEOUT_S)
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
        reader.close()
    return outcomes, child.exitcode, current


def broker_pids(data_dir):
    st = status(data_dir)
    return st["pid"], st["persister_pid"]


# ---------------------------------------------------------------------------- tests

@pytest.mark.parametrize("kind", ["data", "frame_words", "batch_headers", "header_fields", "header_extremes",
                                  "everything"])
def test_a_reader_of_a_fuzzed_ring_returns_records_or_raises_bad_msg(conf, admin, broker, kind):
    seed = random.Random(kind).getrandbits(32)
    before = broker_pids(broker.data_dir)
    cluster = Cluster(conf["bootstrap.servers"], "test")
    jobs, produced, fuzz = [], {}, {}
    try:
        for i in range(TOPICS_PER_TEST):
            rnd = random.Random(seed + i)
            topic = create_topic(admin, f"fuzz-{kind}-{i}")
            produced[topic] = fill(conf, topic, rnd)
            fuzz[topic] = mutate(cluster.ring(topic, 0), kind, rnd)
            jobs.append((topic, i % 2 == 0, RECORDS))
    finally:
        cluster.close()

    outcomes, exitcode, current = run_reader(conf, jobs)
    assert exitcode == 0, (f"reader died with exit code {exitcode} (negative: killed by that signal) while "
                           f"reading {current}, fuzzed with {fuzz.get(current)}")
    for topic, check_crcs, _ in jobs:
        outcome = outcomes[topic]
        where = f"{topic} (check.crcs={check_crcs}) fuzzed with {fuzz[topic]}"
        if outcome[0] == "records":
            offsets = [o for o, _ in outcome[1]]
            assert len(offsets) == len(set(offsets)), f"{where}: an offset returned twice"
            if check_crcs:
                wrong = [(o, v) for o, v in outcome[1] if produced[topic].get(o) != v]
                assert not wrong, f"{where}: returned records that were never produced: {wrong[:3]}"
                assert offsets == sorted(offsets), f"{where}: offsets out of order"
        elif outcome[0] == "kafka":
            _, code, message, _ = outcome
            assert code == KafkaError._BAD_MSG, f"{where}: KafkaException with code {code}: {message}"
            assert f"{topic}-0" in message and ("corrupt" in message or "CRC" in message), message
        else:
            pytest.fail(f"{where}: {outcome}")
    assert broker_pids(broker.data_dir) == before, "the supervisor or persister died while the rings were fuzzed"


@pytest.mark.parametrize("field, value", [
    ("magic", None), ("layout_version", 99), ("header_bytes", 4096), ("capacity_bytes", 3 * RING_BYTES),
    ("capacity_bytes", 1 << 30), ("capacity_bytes", 0), ("index_shift", 63)])
def test_garbage_in_the_ring_descriptor_is_refused_when_the_ring_is_opened(conf, admin, field, value):
    topic = create_topic(admin, "described")
    fill(conf, topic, random.Random(field))
    cluster = Cluster(conf["bootstrap.servers"], "test")
    try:
        ring = cluster.ring(topic, 0)
        d = ring.header.descriptor
        saved = bytes(ring.mapping.mm[0:64])
        if value is None:
            garbage = random.Random(3).randbytes(8)
            ring.mapping.mm[0:8] = garbage
        else:
            setattr(d, field, value)
        try:
            outcomes, exitcode, _ = run_reader(conf, [(topic, True, RECORDS)])
            opened = None
            with pytest.raises(KafkaException) as exc:
                opened = Cluster(conf["bootstrap.servers"], "test2")
                opened.ring(topic, 0)
        finally:
            if opened is not None:
                opened.close()
            ring.mapping.mm[0:64] = saved  # the broker's own processes still map it
    finally:
        cluster.close()
    assert exitcode == 0
    err = exc.value.args[0]
    assert err.code() == KafkaError._BAD_MSG
    assert "invalid ring header" in str(err) and f"{topic}-0" in str(err)
    assert outcomes[topic][0] == "kafka" and outcomes[topic][1] == KafkaError._BAD_MSG, outcomes[topic]
    assert "invalid ring header" in outcomes[topic][2]


def live_reader_main(bootstrap, topic, expected, conn):
    """Catch up with the partition, wait for the parent to overwrite the descriptor, poll again."""
    import shmlog

    consumer = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "live", "check.crcs": True})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = 0
    while got < expected:
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None
        got += 1
    conn.send(("caught up", got))
    conn.recv()
    try:
        msg = consumer.poll(0.5)
        conn.send(("polled", None if msg is None else msg.offset()))
    except shmlog.KafkaException as exc:
        conn.send(("kafka", exc.args[0].code(), str(exc)))
    conn.recv()
    consumer.close()


def test_a_reader_that_already_maps_the_ring_survives_garbage_in_its_capacity(conf, admin):
    topic = create_topic(admin, "live")
    fill(conf, topic, random.Random(5))
    parent, child_end = SPAWN.Pipe()
    child = SPAWN.Process(target=live_reader_main, args=(conf["bootstrap.servers"], topic, RECORDS, child_end),
                          daemon=True)
    child.start()
    child_end.close()
    cluster = Cluster(conf["bootstrap.servers"], "test")
    outcome = None
    try:
        ring = cluster.ring(topic, 0)
        assert parent.poll(CHILD_TIMEOUT_S) and parent.recv() == ("caught up", RECORDS)
        saved = bytes(ring.mapping.mm[0:64])
        ring.header.descriptor.capacity_bytes = 0
        try:
            parent.send("go")
            if parent.poll(CHILD_TIMEOUT_S):
                try:
                    outcome = parent.recv()
                except EOFError:
                    pass
        finally:
            ring.mapping.mm[0:64] = saved
        try:
            parent.send("done")
        except OSError:
            pass
        child.join(CHILD_TIMEOUT_S)
    finally:
        cluster.close()
        if child.is_alive():
            child.kill()
            child.join(10)
        parent.close()
    assert child.exitcode == 0, f"reader died with exit code {child.exitcode}"
    assert outcome[0] == "polled" or (outcome[0] == "kafka" and outcome[1] == KafkaError._BAD_MSG), outcome
