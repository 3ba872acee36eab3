"""Consumer groups: how fast a group recovers from a SIGKILLed member, and how fast it consumes.

    python bench/bench_groups.py [--kills 30] [--partitions 8] [--members 4] [--records 1000000]

1. Failover. A producer process keeps every partition of a topic busy (~1000 records/s each); `--members` member
   processes consume it as one group (committing every 100 ms). Then, `--kills` times: SIGKILL
   a random member and time from the kill until *each* partition it owned delivers a record
   to its new owner (the slowest of its partitions counts), then start a replacement and wait
   until the group covers every partition again. Reported per strategy: p50/p99/max over the
   kills. For scale: Kafka notices a dead member when its session times out (45 s by default).
2. Throughput. `--records` records of 100 B are produced up front; a group of 1, 2 and 4
   member processes reads them all (consume(10000) batches, auto-commit on); records/s from
   the first record any member got to the last.

All timestamps are CLOCK_MONOTONIC (time.monotonic_ns), which is one clock for all processes.
"""
import argparse
import multiprocessing
import multiprocessing.connection
import os
import pickle
import random
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shmlog  # noqa: E402
import shmlog.client.admin  # noqa: E402

SPAWN = multiprocessing.get_context("spawn")
TOPIC = "bench"
THROUGHPUT_TOPIC = "bench-throughput"


# ---------------------------------------------------------------------------- processes

def feeder(bootstrap, partitions, stop):
    """Keeps every partition busy: one small record per partition every ~1 ms, in batches of ~5 (a
    faster feed of tiny batches outruns the persister on 2 busy cores and fills the rings)."""
    failed = []

    def on_delivery(err, msg):
        if err is not None and len(failed) < 3:
            failed.append(err)
            print(f"feeder: delivery failed: {err}", file=sys.stderr, flush=True)

    p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 5, "on_delivery": on_delivery})
    i = 0
    while not stop.is_set():
        for part in range(partitions):
            p.produce(TOPIC, value=b"%d" % i, partition=part)
        i += 1
        p.poll(0)
        time.sleep(0.001)
    p.flush(10)
    p.close()


def failover_member(bootstrap, group, strategy, reports, ready):
    """Reports (pid, partition, monotonic ns) for the first record of each newly assigned partition,
    over a pipe of its own (a Queue shared by members has a lock a killed member may die holding)."""
    fresh = set()

    def on_assign(consumer, partitions):
        fresh.update((tp.topic, tp.partition) for tp in partitions)

    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "latest",
                         "partition.assignment.strategy": strategy, "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 1000, "auto.commit.interval.ms": 100})
    c.subscribe([TOPIC], on_assign=on_assign)
    ready.set()
    pid = os.getpid()
    while True:
        for m in c.consume(1000, timeout=0.1):
            if m.error() is None:
                key = (m.topic(), m.partition())
                if key in fresh:
                    fresh.discard(key)
                    reports.send((pid, m.partition(), time.monotonic_ns()))


def throughput_member(bootstrap, group, results, ready, go):
    c = shmlog.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    ready.set()
    go.wait()
    c.subscribe([THROUGHPUT_TOPIC])
    count, first, last, idle_since = 0, None, None, None
    while True:
        batch = c.consume(10000, timeout=0.2)
        now = time.monotonic_ns()
        n = sum(1 for m in batch if m.error() is None)
        if n:
            count += n
            first = first or now
            last = now
            idle_since = None
        elif count:
            idle_since = idle_since or now
            if now - idle_since > 1e9:
                break
    c.close()
    results.put((count, first, last))


# ---------------------------------------------------------------------------- failover

def failover(bootstrap, partitions, members, kills, strategy):
    group = f"failover-{strategy}"
    owner = {}            # partition -> (pid, time) of the latest first-delivery report
    procs = {}
    conns = []
    admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})

    def start_member():
        ready = SPAWN.Event()
        recv, send = SPAWN.Pipe(duplex=False)
        proc = SPAWN.Process(target=failover_member, args=(bootstrap, group, strategy, send, ready), daemon=True)
        proc.start()
        send.close()
        conns.append(recv)
        ready.wait(30)
        procs[proc.pid] = proc
        return proc

    def drain(until_ns, done):
        while time.monotonic_ns() < until_ns:
            for conn in multiprocessing.connection.wait(conns, 0.05):
                try:
                    pid, part, t = conn.recv()
                except (EOFError, OSError, pickle.UnpicklingError):
                    conns.remove(conn)     # a killed member
                    continue
                if part not in owner or t > owner[part][1]:
                    owner[part] = (pid, t)     # pipes are read in any order: keep the newest report
            if done():
                return True
        return done()

    def assignment():
        """partition -> pid, once the group is stable with every member and every partition."""
        desc = admin.describe_consumer_groups([group])[group].result()
        if desc.state != shmlog.client.admin.ConsumerGroupState.STABLE or len(desc.members) != members:
            return None
        out = {tp.partition: int(m.host.split(":")[1]) for m in desc.members
               for tp in m.assignment.topic_partitions}
        return out if len(out) == partitions else None

    def settled():
        """Stable, and every partition has delivered at its current owner."""
        current = assignment()
        return current is not None and all(owner.get(p, (0, 0))[0] == pid for p, pid in current.items())

    def diagnose(what):
        lag = admin.list_consumer_group_lag(group).result()
        return (f"{what}; first deliveries {owner}; committed/log end/member: "
                f"{[(r.partition, r.committed, r.log_end_offset, r.host) for r in lag]}")

    try:
        for _ in range(members):
            start_member()
        if not drain(time.monotonic_ns() + 30e9, settled):
            raise SystemExit(diagnose(f"the group never settled with {members} members"))
        latencies = []
        rng = random.Random(1)
        for _ in range(kills):
            current = assignment()
            victim = rng.choice(sorted(set(current.values())))
            lost = {part for part, pid in current.items() if pid == victim}
            t0 = time.monotonic_ns()
            os.kill(victim, signal.SIGKILL)
            procs.pop(victim).join(10)
            if not drain(t0 + 30e9, lambda: all(owner[part][0] != victim and owner[part][1] > t0 for part in lost)):
                raise SystemExit(diagnose(f"partitions {sorted(lost)} of killed member {victim} were not "
                                          f"delivered again within 30 s"))
            latencies.append(max(owner[part][1] for part in lost) - t0)
            start_member()
            if not drain(time.monotonic_ns() + 30e9, settled):
                raise SystemExit(diagnose("the group did not settle after a replacement joined"))
        return sorted(latencies)
    finally:
        admin.close()
        for proc in procs.values():
            proc.kill()
            proc.join()


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


# ---------------------------------------------------------------------------- throughput

def throughput(bootstrap, n_members, total):
    results, go = SPAWN.Queue(), SPAWN.Event()
    readies = [SPAWN.Event() for _ in range(n_members)]
    procs = [SPAWN.Process(target=throughput_member, args=(bootstrap, f"tput-{n_members}", results, r, go))
             for r in readies]
    for proc in procs:
        proc.start()
    for r in readies:      # every member is up (imports done) before any joins: one rebalance, not four
        r.wait(60)
    go.set()
    outs = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(30)
    count = sum(o[0] for o in outs)
    first = min(o[1] for o in outs if o[1])
    last = max(o[2] for o in outs if o[2])
    return count, count / ((last - first) / 1e9)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--strategies", default="range,cooperative-sticky")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shmlog-bench-groups-") as data_dir, \
            shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=300) as broker:
        bootstrap = broker.bootstrap_servers
        admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
        topic = shmlog.NewTopic(TOPIC, args.partitions, config={"ring.bytes": str(64 << 20)})
        admin.create_topics([topic])[TOPIC].result()
        admin.close()
        print(f"cpus: {os.cpu_count()}, partitions: {args.partitions}")

        stop = SPAWN.Event()
        feed = SPAWN.Process(target=feeder, args=(bootstrap, args.partitions, stop), daemon=True)
        feed.start()
        try:
            for strategy in args.strategies.split(","):
                lat = failover(bootstrap, args.partitions, args.members, args.kills, strategy)
                ms = [x / 1e6 for x in lat]
                print(f"failover ({strategy}, {args.members} members, {args.kills} SIGKILLs): kill -> its "
                      f"partitions delivering at the new owners: p50 {pct(ms, 0.5):.1f} ms, "
                      f"p99 {pct(ms, 0.99):.1f} ms, max {ms[-1]:.1f} ms, mean {statistics.mean(ms):.1f} ms",
                      flush=True)
        finally:
            stop.set()
            feed.join(30)

        admin = shmlog.AdminClient({"bootstrap.servers": bootstrap})
        topic = shmlog.NewTopic(THROUGHPUT_TOPIC, args.partitions, config={"ring.bytes": str(256 << 20)})
        admin.create_topics([topic])[THROUGHPUT_TOPIC].result()
        admin.close()
        p = shmlog.Producer({"bootstrap.servers": bootstrap, "acks": 1})
        value = b"v" * 100
        per = args.records // args.partitions
        for part in range(args.partitions):
            for start in range(0, per, 50_000):
                p.produce_values(THROUGHPUT_TOPIC, [value] * min(50_000, per - start), partition=part)
        p.close()
        total = per * args.partitions
        for n in (1, 2, 4):
            count, rate = throughput(bootstrap, n, total)
            flag = "" if count >= total else f" (only {count:,} of {total:,}!)"
            print(f"throughput, {n} member{'s' if n > 1 else ' '}: {rate:,.0f} records/s ({total:,} records of 100 B)"
                  f"{flag}")


if __name__ == "__main__":
    main()
