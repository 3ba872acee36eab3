"""A host crash, simulated many times at random moments under load.

Each round starts the broker, producer processes (acks=all, keyed, small random batches)
and a consumer process reading from the beginning, waits until every producer has had
deliveries acknowledged, lets a random moment pass, then SIGKILLs every broker and client
process at once (supervisor, persister, producers, consumer) and deletes all of the
broker's shared-memory objects, as a reboot would.

A reboot also drops whatever the page cache held that was never fsynced. The test
simulates that too, using what fsync promised: before unlinking a ring it reads the
ring's flushed offset (everything below it was fdatasync'ed before it was published),
and in the newest segment, past the end of the last batch below that offset, it may cut
the file at a batch boundary, cut it mid-batch, append garbage after such a cut, or leave
it whole (the page cache survived). Older segments were fsynced when the log rolled past
them and are left as they are; their index files are sometimes deleted or scrambled,
which recovery must notice and rebuild.

Each producer appends every acknowledged record to its own file (one write per batch of
reports, so a kill leaves at most a torn last line, which is ignored). After the last
round the broker starts once more and everything is read back from offset 0 through the
normal Consumer. Checked: every record whose delivery report said acks=all success is
there exactly once, at the partition and offset the report gave; no record appears twice
(acknowledged or not); each producer's records are in the order it sent them; offsets
increase. SHMLOG_CRASH_ROUNDS (default 6) sets the number of crashes; SHMLOG_CRASH_SEED
replays a printed seed's choices (the timing of each crash still varies).
"""
import multiprocessing
import os
import random
import signal
import time

import psutil
import pytest

import shmlog
from shmlog import OFFSET_BEGINNING, TopicPartition
from shmlog._native import shm
from shmlog._native.ring import Ring
from shmlog.log import index
from shmlog.log.segment import _Mapped, _walk, list_segments, segment_path

from .conftest import create_topic, partition_dir, read_all

pytestmark = pytest.mark.crash

SPAWN = multiprocessing.get_context("spawn")
ROUNDS = max(1, int(os.environ.get("SHMLOG_CRASH_ROUNDS", "6")))
PRODUCERS = 3
PARTITIONS = 2
TOPIC = "crash"
START_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------- children

def producer_main(bootstrap, tag, acked_path, acked_once, seed):
    """Produce keyed records until killed; append every acks=all success to acked_path."""
    rnd = random.Random(seed)
    lines = []

    def on_delivery(err, msg):
        if err is None:
            lines.append(b"%s %d %d\n" % (msg.value().split(b"|")[0], msg.partition(), msg.offset()))

    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": rnd.choice([0, 1, 5]),
                         "batch.size": 8192, "max.block.ms": 60000, "message.timeout.ms": 60000})
    fd = os.open(acked_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    seq = 0
    while True:
        for _ in range(rnd.randint(1, 40)):
            p.produce(TOPIC, b"%s:%d|" % (tag, seq) + b"v" * rnd.randint(10, 600), key=b"k%d" % (seq % 13),
                      on_delivery=on_delivery)
            seq += 1
        p.flush(60)
        if lines:
            os.write(fd, b"".join(lines))  # one write: a kill tears at most the last line
            lines.clear()
            acked_once.set()


def consumer_main(bootstrap):
    """Read every partition from the beginning, forever (through segments, then the ring)."""
    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-reader"})
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    while True:
        c.consume(1000, 0.1)


# ---------------------------------------------------------------------------- the crash

def kill_everything(broker, children):
    """SIGKILL the supervisor, its persister and every client at once; reap them all."""
    sup = psutil.Process(broker.process.pid)
    procs = [sup] + sup.children(recursive=True) + [psutil.Process(c.pid) for c in children]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    broker.process.wait()
    for child in children:
        child.join(30)
    gone, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive, f"processes survived SIGKILL: {alive}"
    broker.process.stdout.close()
    broker.process = None


def flushed_offsets_then_unlink(data_dir):
    """{partition: flushed offset} read from the rings; then every shared-memory object goes."""
    flushed = {}
    for name in shm.names_in_namespace(shm.namespace(data_dir)):
        if name != shm.doorbell_name(shm.namespace(data_dir)):
            ring = Ring.open(name, TOPIC, -1)
            flushed[ring.header.descriptor.partition] = ring.header.persist.flushed_offset
            ring.close()
        shm.unlink(name)
    return flushed


def lose_the_page_cache(pdir, flushed, rnd):
    """Drop a random part of what was never fsynced from the newest segment; damage indexes."""
    bases = list_segments(pdir)
    if not bases:
        return "no segment"
    newest = bases[-1]
    path = segment_path(pdir, newest)
    ends = []  # (byte after a batch, offset after it)
    mapped = _Mapped.of_path(path)
    try:
        _walk(mapped, newest, False, lambda pos, nbytes, last, ts: ends.append((pos + nbytes, last + 1)))
        size = mapped.size
    finally:
        mapped.close()
    keep = max([b for b, o in ends if o <= flushed], default=0)  # fdatasync'ed: survives any crash
    boundaries = [keep] + [b for b, _ in ends if b > keep]
    choice = rnd.random()
    what = "page cache survived"
    if keep < size and choice < 0.75:
        if choice < 0.3:
            cut = rnd.choice(boundaries)
            what = f"cut at batch boundary {cut} of {size}"
        else:
            cut = rnd.randint(keep, size)
            what = f"cut at byte {cut} of {size}"
        with open(path, "r+b") as f:
            f.truncate(cut)
            if choice >= 0.55:
                f.seek(cut)
                f.write(os.urandom(rnd.randint(1, 300)))
                what += " plus garbage"
    if len(bases) > 1 and rnd.random() < 0.5:
        victim = rnd.choice(bases[:-1])
        target = rnd.choice([index.offset_index_path(pdir, victim), index.time_index_path(pdir, victim)])
        if rnd.random() < 0.5:
            os.unlink(target)
            what += f", deleted {os.path.basename(target)}"
        else:
            with open(target, "r+b") as f:
                f.write(os.urandom(16))
            what += f", scrambled {os.path.basename(target)}"
    return what


def read_acked(paths):
    acked = {}
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            for line in f.read().split(b"\n")[:-1]:  # a torn last line has no newline: dropped
                ident, partition, offset = line.split(b" ")
                acked[ident] = (int(partition), int(offset))
    return acked


# ---------------------------------------------------------------------------- the test

def test_every_acks_all_record_survives_repeated_host_crashes_exactly_once_in_order(data_dir, start_broker,
                                                                                    tmp_path):
    seed = int(os.environ.get("SHMLOG_CRASH_SEED") or int.from_bytes(os.urandom(4), "big"))
    rnd = random.Random(seed)
    history, acked_paths = [f"seed {seed}"], []
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, TOPIC, PARTITIONS, ring_bytes=65536, segment_bytes=64 * 1024)
    for round_no in range(ROUNDS):
        if broker is None:
            broker = start_broker()
        events = [SPAWN.Event() for _ in range(PRODUCERS)]
        children = []
        for i, acked_once in enumerate(events):
            path = str(tmp_path / f"acked-{round_no}-{i}")
            acked_paths.append(path)
            children.append(SPAWN.Process(target=producer_main, args=(
                broker.bootstrap_servers, b"r%dp%d" % (round_no, i), path, acked_once, rnd.getrandbits(32))))
        children.append(SPAWN.Process(target=consumer_main, args=(broker.bootstrap_servers,)))
        for child in children:
            child.start()
        for acked_once in events:
            assert acked_once.wait(START_TIMEOUT_S), f"round {round_no}: a producer had nothing acknowledged"
        time.sleep(rnd.uniform(0, 0.3))  # not synchronisation: the crash comes at a random moment
        kill_everything(broker, children)
        broker = None
        flushed = flushed_offsets_then_unlink(data_dir)
        for p in range(PARTITIONS):
            what = lose_the_page_cache(partition_dir(data_dir, TOPIC, p), flushed.get(p, 0), rnd)
            history.append(f"round {round_no} partition {p}: flushed {flushed.get(p)}, {what}")

    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    got = read_all(conf, TOPIC, tuple(range(PARTITIONS)))
    where = "\n".join(history)

    seen = {}
    for partition, offset, value in got:
        ident = value.split(b"|")[0]
        assert ident not in seen, f"{ident} read twice: at {seen[ident]} and {(partition, offset)}\n{where}"
        seen[ident] = (partition, offset)
    acked = read_acked(acked_paths)
    assert len(acked) > ROUNDS * PRODUCERS
    lost = {i: at for i, at in acked.items() if seen.get(i) != at}
    assert not lost, (f"{len(lost)} of {len(acked)} acknowledged records missing or moved, e.g. "
                      f"{sorted(lost.items())[:5]} (found at {[seen.get(i) for i in sorted(lost)[:5]]})\n{where}")
    last = {}
    for partition, offset, value in got:
        tag, seq = value.split(b"|")[0].split(b":")
        assert offset > last.get(partition, -1), f"offsets do not increase at {partition}/{offset}\n{where}"
        last[partition] = offset
        assert int(seq) > last.get((partition, tag), -1), f"{tag}:{seq} out of order\n{where}"
        last[(partition, tag)] = int(seq)
    print(f"{ROUNDS} crashes, {len(got)} records read back, {len(acked)} acknowledged with acks=all\n{where}")
