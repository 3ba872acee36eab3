"""The two memory-ordering handshakes of docs/architecture.md, as races run many times over.

Roles run as threads of the test process (cffi releases the GIL during every C call, so two
roles can be inside the core at once) or as spawned processes (true parallelism across
address spaces, as producers, consumers and the persister are deployed), on real rings and a
real doorbell in POSIX shared memory. Roles start together on a barrier and stop on events
or shared words; nothing waits on a fixed sleep. Delays that move one side of a race against
the other are spins (in C, in a Python loop, or yielding the CPU while they last).

Duels (the bare handshakes; Agrona's DekkerTests over shared memory): two processes each run
one step of a handshake from the same instant, tens of thousands of times, the first side
steering a delay so that most rounds land where either side could win.
- pin_duelist / release_duelist: pin a fresh position c vs release up to c + 64. Granted and
  released past c must never both happen.
- watch_duelist / publish_duelist: go to sleep (look, watch, look again, futex) vs publish and
  ring. The sleeper must see the record or have its doorbell sequence moved.
- close_duelist / claim_duelist: a stopping broker closes the ring and looks at the claims vs
  a producer appends one record. The closer, once it sees no claim, must see the ring's end
  stay where it is: the producer backed out (SHMLOG_ECLOSED) or was seen and waited for.

Scenarios (the handshakes inside a working ring):
- pin vs release: readers pin the next unreleased frame and, while the pin is granted, check
  that the release position stays at or below it and that the pinned frames keep their bytes
  (snapshot and CRC32C) while producers press against the pin; releasers persist and release
  behind them as fast as they can, and producers blocked for space release too.
- watch vs doorbell: two sides play ping-pong over two rings. The sleeper steers random delays
  so that the waker's next record lands on its way into the futex. A wait that runs to its
  timeout although the record it waited for was published well before is a lost wake-up.

The protocol steps the harness composes itself are module-level functions (`pin`,
`recheck_after_watch`, `close_and_look_at_claims`), so a deliberately weakened variant can be
swapped in to see the tests fail; the C core can be swapped for a weakened build too
(core_override.py). tests/README.md shows both; the committed steps are the project's.
"""
import collections
import multiprocessing
import os
import queue
import random
import sys
import threading
import time
import traceback

from tests.concurrency import core_override

core_override.install()  # before anything loads the C core

from shmlog._native import ffi, lib  # noqa: E402
from shmlog._native.ring import Doorbell, Ring  # noqa: E402
from shmlog.errors import KafkaException  # noqa: E402

SCALE = max(1, int(os.environ.get("SHMLOG_CONCURRENCY_SCALE", "1")))
SPAWN = multiprocessing.get_context("spawn")
UINT64_MAX = (1 << 64) - 1
CAPACITY = 65536          # the smallest ring: producers lap it every few hundred frames
START_TIMEOUT_S = 60.0    # spawning a role (a fresh interpreter importing shmlog) on a busy host
MAX_VIOLATIONS_KEPT = 10
THREAD_SWITCH_INTERVAL_S = 0.0001

# pin vs release
PIN_ROUNDS = 1500         # granted pins per reader, x SCALE
PIN_MAX_FRAMES = 4        # frames a reader looks at under one pin
PIN_HOLD_CHECKS = 200     # at most this many looks at the tail while holding a pin
APPEND_TIMEOUT_MS = 20_000

# watch vs doorbell
PINGPONG_ROUNDS = 2000    # records each way, x SCALE
WAKE_TIMEOUT_NS = 2_000_000_000   # far above a futex wake-up (tens of microseconds)
WAKER_SPIN_NS = 300_000   # the waker spins this long for the next record (then sleeps too)
JITTER_NS = 2_000         # random part of each side's delay before it publishes / goes to sleep
STEER_STEP_NS = 250       # the sleeper's first step when steering its delay onto the race window
RELEASE_EVERY = 64        # records a side reads before it releases its incoming ring

# duels (the bare handshakes, two processes)
DUEL_PIN_ROUNDS = 50_000  # x SCALE, or until DUEL_SECONDS x SCALE passed
DUEL_WAKE_ROUNDS = 15_000 # x SCALE, or until DUEL_SECONDS x SCALE passed
DUEL_SECONDS = 5.0        # both sides spin: on a host busy with other work rounds are slower
DUEL_JITTER = 8           # loop iterations of random lead around the steered one
DUEL_MAX_STEP = 4096      # loop iterations (tens of microseconds) the steering moves at most per round
DUEL_SLEEP_NS = 1_000_000_000  # a duelling sleeper's futex timeout
DUEL_CLOSE_ROUNDS = 20_000 # x SCALE, or until DUEL_SECONDS x SCALE passed

# close vs claim (scenario)
CLOSE_AFTER = 2000        # records each producer appends before the closer closes the ring


# ---------------------------------------------------------------------------- the steps under test

def pin(ring, pin_slot, position):
    """Publish a pin at `position`; True if granted (nothing at or after it may be released)."""
    return ring.set_pin(pin_slot, position)


def recheck_after_watch(ring, cursor):
    """After setting the waiter bit: has a record arrived since we last looked?"""
    return ring.has_data(cursor.position)


def close_and_look_at_claims(ring):
    """A stopping broker's step: close the ring, then count the claims still open (a claim seen
    here is waited for; none means nothing more will ever be published)."""
    ring.close_for_stop(ffi.NULL)
    return ring.open_claims()


# ---------------------------------------------------------------------------- running roles

class Team:
    """Roles run as threads of this process or as spawned processes; they start on one
    barrier and report one result each (a dict, or the traceback of what they raised)."""

    def __init__(self, mode, parties):
        assert mode in ("threads", "processes")
        self.mode = mode
        self.threads = mode == "threads"
        self.results = queue.Queue() if self.threads else SPAWN.Queue()
        self.barrier = threading.Barrier(parties) if self.threads else SPAWN.Barrier(parties)
        self.members = {}
        self.got = {}
        self.switch_interval = sys.getswitchinterval()
        if self.threads:  # hand the GIL over often, so Python parts of roles interleave finely too
            sys.setswitchinterval(THREAD_SWITCH_INTERVAL_S)

    def event(self):
        return threading.Event() if self.threads else SPAWN.Event()

    def shared_int64s(self, n):
        return SPAWN.RawArray("q", n)

    def start(self, who, role, **kwargs):
        args = (who, role, self.results, self.barrier, kwargs)
        if self.threads:
            member = threading.Thread(target=run_role, args=args, name=who, daemon=True)
        else:
            member = SPAWN.Process(target=run_role, args=args, name=who, daemon=True)
        member.start()
        self.members[who] = member

    def collect(self, names, deadline):
        """The results of the named roles; fails with a role's traceback if one raised."""
        names = list(names)
        while any(n not in self.got for n in names):
            remaining = deadline - time.monotonic()
            missing = [n for n in names if n not in self.got]
            if remaining <= 0:
                raise AssertionError(f"{missing} did not finish in time")
            try:
                who, ok, value = self.results.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                dead = [n for n in missing if not self.threads and not self.members[n].is_alive()]
                if dead:
                    try:  # it may have reported just before exiting
                        who, ok, value = self.results.get(timeout=1.0)
                    except queue.Empty:
                        raise AssertionError(f"{dead} exited without a result "
                                             f"(exit codes {[self.members[n].exitcode for n in dead]})") from None
                else:
                    continue
            if not ok:
                raise AssertionError(f"{who} failed:\n{value}")
            self.got[who] = value
        return {n: self.got[n] for n in names}

    def finish(self, stops, timeout=30.0):
        """Set every stop event and join every member; processes still running are killed
        (and reported: a role that does not stop when told is a bug in the test)."""
        for stop in stops:
            stop.set()
        try:
            self.barrier.abort()  # roles that never got past the start stop waiting there
        except Exception:
            pass
        deadline = time.monotonic() + timeout
        stuck = []
        for who, member in self.members.items():
            member.join(max(0.0, deadline - time.monotonic()))
            if member.is_alive():
                stuck.append(who)
                if not self.threads:
                    member.kill()
                    member.join(5.0)
        if self.threads:
            sys.setswitchinterval(self.switch_interval)
        else:
            self.results.close()
            self.results.join_thread()
        assert not stuck, f"roles still running after they were told to stop: {stuck}"


def run_role(who, role, results, barrier, kwargs):
    try:
        wanted = os.environ.get("SHMLOG_TEST_CORE")
        assert not wanted or os.path.samefile(core_override.in_use(), wanted), "not the C core under test"
        value = role(barrier=barrier, **kwargs)
    except BaseException:
        try:
            barrier.abort()
        except Exception:
            pass
        results.put((who, False, traceback.format_exc()))
    else:
        results.put((who, True, value))


class Violations:
    def __init__(self):
        self.count = 0
        self.kept = []

    def add(self, what):
        self.count += 1
        if len(self.kept) < MAX_VIOLATIONS_KEPT:
            self.kept.append(what)


class Steering:
    """Steers a delay (`lead`) to where either side of a race wins: each round moves it one
    step towards the side that lost. Near that point the winner is a coin toss and the step
    stays small; a long run of one winner (a busy host can move the point by tens of
    microseconds) doubles the step until the other side wins again."""

    RUN = 8  # wins in a row that double the step

    def __init__(self, first_step, max_step):
        self.lead, self.first_step, self.max_step = 0, first_step, max_step
        self.step, self.direction, self.run = first_step, 0, 0

    def move(self, direction):
        """direction +1: delay the steering side more (it came first); -1: less."""
        if direction != self.direction:
            self.direction, self.run, self.step = direction, 0, self.first_step
        self.run += 1
        if self.run % self.RUN == 0:
            self.step = min(self.max_step, self.step * 2)
        self.lead += direction * self.step


def spin_until_data(ring, cursor, spin_ns):
    """Spin in C (the GIL released) until the ring has data at cursor or spin_ns passed."""
    if spin_ns > 0:
        waited = ffi.new("int64_t *")
        rings, cursors = ffi.new("shmlog_ring_handle *[]", [ring.map]), ffi.new("shmlog_cursor *[]", [cursor])
        lib.shmlog_wait_any(ffi.NULL, -1, rings, cursors, 1, spin_ns, spin_ns, waited)


def yielding_delay(ns):
    """Let ns pass, giving the CPU to whoever else wants it meanwhile (a side that delays
    must not starve the side it races against on a busy host)."""
    until = time.monotonic_ns() + ns
    while time.monotonic_ns() < until:
        os.sched_yield()


# ---------------------------------------------------------------------------- pin vs release: roles

def pin_producer(barrier, ring_name, stop, seed, deadline):
    """Appends batches of 1..24 records of random bytes until told to stop."""
    ring = Ring.open(ring_name, "pins", 0)
    slot = ring.acquire_producer_slot()
    rnd = random.Random(seed)
    pool = rnd.randbytes(1 << 16)
    barrier.wait(START_TIMEOUT_S)
    appended = 0
    try:
        while not (appended % 32 == 0 and (stop.is_set() or time.monotonic() > deadline)):
            count, width = rnd.randint(1, 24), 48
            at = rnd.randrange(0, len(pool) - count * width)
            ring.append_fixed(slot, count, pool[at:at + count * width], width, 0, APPEND_TIMEOUT_MS, ffi.NULL)
            appended += 1
    finally:
        ring.release_producer_slot(slot)
    return {"appended": appended}


def pin_releaser(barrier, ring_name, stop, persists, deadline):
    """The persister's part: follow the published frames, publish them as persisted and release
    up to them, as often as possible. Other releasers (persists=False) only release up to what
    the first published, as a producer short of space does."""
    ring = Ring.open(ring_name, "pins", 0)
    cursor = ffi.new("shmlog_cursor *")
    cursor.position, cursor.next_offset = ring.start()
    frames = ffi.new("shmlog_frame_ref[]", 64)
    barrier.wait(START_TIMEOUT_S)
    rounds = advanced = 0
    release, persist = ring.header.release, ring.header.persist
    while not (rounds % 32 == 0 and (stop.is_set() or time.monotonic() > deadline)):
        before = release.release_position
        if persists:
            n = ring.fetch(cursor, ffi.NULL, 0, frames, 64, 0)
            assert n != lib.SHMLOG_EOVERWRITTEN, "bytes not yet persisted were reused"
            lib.shmlog_ring_publish_persisted(ring.map, cursor.position, cursor.next_offset, cursor.next_offset)
            released = lib.shmlog_ring_release_to(ring.map, cursor.position)
        else:
            released = lib.shmlog_ring_release_to(ring.map, persist.persisted_position)
        advanced += released > before
        rounds += 1
    return {"release_rounds": rounds, "release_advances": advanced}


def frame_position(ring, fetched_from, map_pos):
    """The ring position of a frame a fetch from `fetched_from` found at mapping byte map_pos
    (one fetch never spans more than a lap)."""
    index = map_pos - ring.data_offset - 8   # the batch follows the 8-byte frame word
    lap_start = fetched_from - fetched_from % CAPACITY
    return lap_start + index + (CAPACITY if index < fetched_from % CAPACITY else 0)


def pin_reader(barrier, ring_name, rounds, stop, deadline):
    """A zero-copy consumer that lags at the release edge. Between polls it holds no pin; each
    poll pins the next frame it has not read, or if that was released already the oldest one
    still unreleased (the next a releaser wants to release), and if the pin is granted looks
    at up to PIN_MAX_FRAMES frames in place, holds the pin until the producers press against
    it, and checks that the frames never changed and the release position never passed the
    pin. A refused pin (a releaser got there first) is counted; the next poll tries the new edge."""
    ring = Ring.open(ring_name, "pins", 0)
    pin_slot = ring.acquire_pin()
    header = ring.header
    view = ring.mapping.view()
    base = ffi.cast("uint8_t *", ring.mapping.ptr)
    frames = ffi.new("shmlog_frame_ref[]", PIN_MAX_FRAMES)
    scan_frames = ffi.new("shmlog_frame_ref[]", 64)
    scan = ffi.new("shmlog_cursor *")   # follows every published frame, to know where frames start
    known = collections.deque()         # (position, base offset) of published frames, oldest first
    cursor = ffi.new("shmlog_cursor *")
    stats = collections.Counter()
    bad = Violations()
    barrier.wait(START_TIMEOUT_S)
    scan.position, scan.next_offset = ring.start()
    try:
        while stats["granted"] < rounds and not stop.is_set():  # stop: the test gave up
            if time.monotonic() > deadline:
                raise AssertionError(f"only {stats['granted']} of {rounds} pins granted in time: {dict(stats)}")
            # Still holding the last poll's pin (if granted), find the next frame to pin.
            at = scan.position
            n = ring.fetch(scan, ffi.NULL, 0, scan_frames, 64, 0)
            if n == lib.SHMLOG_EOVERWRITTEN:     # the scan fell behind the producers: start again
                ring.set_pin(pin_slot, UINT64_MAX)
                known.clear()
                scan.position, scan.next_offset = ring.start()
                continue
            for f in scan_frames[0:max(n, 0)]:
                known.append((frame_position(ring, at, f.map_pos), f.base_offset))
            edge = max(header.release.release_position, cursor.position)  # not released, not yet read
            while known and known[0][0] < edge:
                known.popleft()
            if not known:
                ring.set_pin(pin_slot, UINT64_MAX)
                spin_until_data(ring, scan, 20_000)   # nothing published past the release edge yet
                continue
            cursor.position, cursor.next_offset = known[0]
            position = cursor.position
            # Drop the old pin and publish the new one at once: the releasers race us in between.
            ring.set_pin(pin_slot, UINT64_MAX)
            if not pin(ring, pin_slot, position):
                stats["refused"] += 1
                continue
            # From here on the reader relies on its pin: nothing at or after `position` may be reused.
            try:
                n = ring.fetch(cursor, ffi.NULL, 0, frames, PIN_MAX_FRAMES, 1)
            except KafkaException as exc:
                bad.add(f"pinned at {position}: fetch found a corrupt frame: {exc}")
                continue
            if n <= 0:
                bad.add(f"pinned at {position}: fetch of a frame published there returned {n} "
                        f"(tail {header.claim.tail_position}, release {header.release.release_position})")
                continue
            stats["granted"] += 1
            seen = [(f.map_pos, f.batch_bytes, f.base_offset, bytes(view[f.map_pos:f.map_pos + f.batch_bytes]))
                    for f in frames[0:n]]
            for _ in range(PIN_HOLD_CHECKS):  # each look is a C call: other threads run meanwhile
                if ring.end()[0] > position + CAPACITY - 4096:
                    stats["pressed"] += 1
                    break
            release = header.release.release_position
            if release > position:
                bad.add(f"pinned at {position}: the release position moved past the pin to {release}")
            for map_pos, size, base_offset, before in seen:
                if bytes(view[map_pos:map_pos + size]) != before or lib.shmlog_batch_verify(base + map_pos, size, 1):
                    bad.add(f"pinned at {position}: the frame of offset {base_offset} at mapping byte {map_pos} "
                            f"changed while pinned (release {header.release.release_position}, tail "
                            f"{header.claim.tail_position})")
                    break
            stats["frames_checked"] += n
    finally:
        ring.release_pin(pin_slot)
    return {**stats, "violations": bad.count, "examples": bad.kept}


# ---------------------------------------------------------------------------- pin vs release: scenario

def race_pins_against_releases(mode, ring_name, readers=2, producers=2, releasers=1, rounds=None, budget_s=None):
    """Runs the roles until every reader had `rounds` pins granted; returns the summed stats."""
    rounds = rounds or PIN_ROUNDS * SCALE
    budget_s = budget_s or 120.0 * SCALE
    owner = Ring.create(ring_name, CAPACITY, "pins", 1, 0)
    team = Team(mode, readers + producers + releasers)
    stop_producing, stop_releasing = team.event(), team.event()
    deadline = time.monotonic() + budget_s
    try:
        for i in range(releasers):
            team.start(f"releaser{i}", pin_releaser, ring_name=ring_name, stop=stop_releasing, persists=i == 0,
                       deadline=deadline)
        for i in range(producers):
            team.start(f"producer{i}", pin_producer, ring_name=ring_name, stop=stop_producing, seed=i,
                       deadline=deadline)
        for i in range(readers):
            team.start(f"reader{i}", pin_reader, ring_name=ring_name, rounds=rounds, stop=stop_releasing,
                       deadline=deadline)
        got = team.collect([f"reader{i}" for i in range(readers)], deadline + START_TIMEOUT_S)
        stop_producing.set()
        got.update(team.collect([f"producer{i}" for i in range(producers)], time.monotonic() + 60))
        stop_releasing.set()
        got.update(team.collect([f"releaser{i}" for i in range(releasers)], time.monotonic() + 60))
    finally:
        team.finish([stop_producing, stop_releasing])
        owner.close()
    total = collections.Counter()
    examples = []
    for value in got.values():
        examples += value.pop("examples", [])
        total.update(value)
    total["examples"] = examples
    return total


# ---------------------------------------------------------------------------- watch vs doorbell: roles

def wait_by_wait_any(bell, slot, ring, cursor, spin_ns, timeout_ns):
    """The consumer's real wait: shmlog_wait_any (spin, watch, re-check, futex, unwatch) in C."""
    waited = ffi.new("int64_t *")
    rings, cursors = ffi.new("shmlog_ring_handle *[]", [ring.map]), ffi.new("shmlog_cursor *[]", [cursor])
    rc = lib.shmlog_wait_any(bell.ptr, slot, rings, cursors, 1, spin_ns, timeout_ns, waited)
    return {lib.SHMLOG_WAIT_SPUN: "seen_before_sleeping", lib.SHMLOG_WAIT_WOKEN: "woken",
            lib.SHMLOG_WAIT_TIMEOUT: "no_record"}[rc]


def wait_by_steps(bell, slot, ring, cursor, spin_ns, timeout_ns):
    """The same handshake spelled out with the doorbell primitives, one C call per step:
    read the slot's sequence, look, set the waiter bit, look again, sleep on the sequence."""
    spin_until_data(ring, cursor, spin_ns)
    seq = lib.shmlog_doorbell_sequence(bell.ptr, slot)
    if ring.has_data(cursor.position):
        return "seen_before_watching"
    lib.shmlog_doorbell_watch(ring.map, slot, 1)
    try:
        if recheck_after_watch(ring, cursor):
            return "seen_on_recheck"
        if lib.shmlog_doorbell_wait(bell.ptr, slot, seq, timeout_ns) == 0:
            return "woken"
        return "not_woken"  # the futex timed out, or the sequence had moved before it slept
    finally:
        lib.shmlog_doorbell_watch(ring.map, slot, 0)


WAITS = {"wait_any": wait_by_wait_any, "steps": wait_by_steps}


EARLY = ("already_there", "seen_before_sleeping", "seen_before_watching")  # the record came first
SAW_IT = EARLY + ("seen_on_recheck",)   # outcomes of a wait that did not sleep


def pingpong_side(barrier, ring_out, ring_in, bell_name, rounds, first, published_out, published_in, steer, wait,
                  spin_ns, jitter_ns, seed, stop, deadline):
    """One side of the ping-pong. `first` (the sleeper) publishes record k, then waits for the
    other side's record k; the other (the waker) waits, then publishes. Each publishes, and the
    sleeper goes to sleep, after a random delay; the sleeper steers the delays (steer[0]: its
    own if positive, the waker's if negative) so the waker's record lands on its way into the
    futex: later when it had to be woken, earlier when the record was there before it slept.
    Each writes when its publication finished into published_out[k]; every wait that ran to
    WAKE_TIMEOUT_NS is checked against published_in."""
    out, inc = Ring.open(ring_out, "pingpong", 0), Ring.open(ring_in, "pingpong", 0)
    bell = Doorbell.open(bell_name)
    slot, bell_slot = out.acquire_producer_slot(), bell.acquire()
    assert bell_slot >= 0, "no doorbell slot"
    wait_step = WAITS[wait]
    rnd = random.Random(seed)
    cursor = ffi.new("shmlog_cursor *")
    cursor.position, cursor.next_offset = inc.start()
    dst = ffi.new("uint8_t[]", 4096)
    frames = ffi.new("shmlog_frame_ref[]", 1)
    outcomes = collections.Counter()
    lost = Violations()
    steering = Steering(STEER_STEP_NS, 64 * STEER_STEP_NS)

    def publish(k):
        offset = out.append_fixed(slot, 1, k.to_bytes(8, "little"), 8, 0, APPEND_TIMEOUT_MS, bell.ptr)
        published_out[k] = time.monotonic_ns()
        assert offset == k, f"published offset {offset}, expected {k}"

    def receive(k):
        first_outcome = "already_there"
        while not inc.has_data(cursor.position):
            if stop.is_set():  # the test gave up (the other side failed)
                raise AssertionError(f"stopped while waiting for record {k}")
            if time.monotonic() > deadline:
                raise AssertionError(f"record {k} never came: {dict(outcomes)}")
            started = time.monotonic_ns()
            outcome = wait_step(bell, bell_slot, inc, cursor, spin_ns, WAKE_TIMEOUT_NS)
            ended = time.monotonic_ns()
            outcomes[outcome] += 1
            if first_outcome == "already_there":
                first_outcome = outcome
            if ended - started >= WAKE_TIMEOUT_NS and inc.has_data(cursor.position):
                published = published_in[k]
                if published and published <= ended - WAKE_TIMEOUT_NS // 2:
                    lost.add(f"record {k}: published {(ended - published) / 1e6:.0f} ms before a "
                             f"{WAKE_TIMEOUT_NS / 1e6:.0f} ms sleep ran out ({outcome})")
        if first_outcome == "already_there":
            outcomes["already_there"] += 1
        n = inc.fetch(cursor, dst, 4096, frames, 1, 1)
        assert n == 1 and frames[0].base_offset == k, f"expected record {k}, fetch gave {n} frame(s)"
        if (k + 1) % RELEASE_EVERY == 0:
            lib.shmlog_ring_publish_persisted(inc.map, cursor.position, cursor.next_offset, cursor.next_offset)
            lib.shmlog_ring_release_to(inc.map, cursor.position)
        return first_outcome

    barrier.wait(START_TIMEOUT_S)
    try:
        for k in range(rounds):
            if first:
                publish(k)
                yielding_delay(max(0, steer[0]) + rnd.randint(0, jitter_ns))
                outcome = receive(k)
                if outcome in EARLY:
                    steering.move(-1)
                elif outcome == "woken":
                    steering.move(+1)
                steer[0] = steering.lead
            else:
                receive(k)
                yielding_delay(max(0, -steer[0]) + rnd.randint(0, jitter_ns))
                publish(k)
    finally:
        out.release_producer_slot(slot)
        bell.release(bell_slot)
    return {**outcomes, "lost_wakeups": lost.count, "examples": lost.kept, "steered_ns": steer[0]}


# ---------------------------------------------------------------------------- watch vs doorbell: scenario

def pingpong(mode, names, wait, rounds=None, budget_s=None):
    """Side "sleeper" publishes record k and goes to sleep at once (no spin) until the reply k
    comes; side "waker" spins for record k (and sleeps too if it is slow), then publishes the
    reply at a random moment around the sleeper's way into the futex. Returns each side's
    wait outcomes and lost wake-ups."""
    rounds = rounds or PINGPONG_ROUNDS * SCALE
    budget_s = budget_s or 120.0 * SCALE
    ring_a, ring_b, bell_name = names
    owners = [Ring.create(ring_a, CAPACITY, "pingpong", 1, 0), Ring.create(ring_b, CAPACITY, "pingpong", 2, 0)]
    bell = Doorbell.create(bell_name)
    team = Team(mode, 2)
    to_sleeper, to_waker = team.shared_int64s(rounds), team.shared_int64s(rounds)
    deadline = time.monotonic() + budget_s
    stop = team.event()
    common = dict(bell_name=bell_name, rounds=rounds, steer=team.shared_int64s(1), wait=wait, stop=stop,
                  deadline=deadline)
    try:
        team.start("sleeper", pingpong_side, ring_out=ring_a, ring_in=ring_b, first=True, published_out=to_waker,
                   published_in=to_sleeper, spin_ns=0, jitter_ns=JITTER_NS, seed=1, **common)
        team.start("waker", pingpong_side, ring_out=ring_b, ring_in=ring_a, first=False, published_out=to_sleeper,
                   published_in=to_waker, spin_ns=WAKER_SPIN_NS, jitter_ns=JITTER_NS, seed=2, **common)
        got = team.collect(["waker", "sleeper"], deadline + START_TIMEOUT_S)
    finally:
        team.finish([stop])
        for ring in owners:
            ring.close()
        bell.close()
    return got


# ---------------------------------------------------------------------------- duels: the bare handshakes
#
# Two processes run one handshake step each, from the same instant, many thousands of times
# (Agrona's DekkerTests, over shared memory): the first side publishes the round's argument
# and a start word, the other spins until it sees it; both act; the first side waits for the
# other's done word and checks the outcome. The first side steers a delay (a spin of `lead`
# loop iterations on one side or the other) towards the point where either could win, so
# most rounds land in the window the handshake exists for.

GO, DONE, STOP, LEAD, ARG, STAMP = range(6)   # words of the shared control array


def control_words():
    return SPAWN.RawArray("q", 8)


def wait_for(ctl, index, value, deadline):
    """Spin until ctl[index] >= value (True) or ctl[STOP] is set (False), yielding the CPU now
    and then so a descheduled peer gets to run on a busy host."""
    n = 0
    while ctl[index] < value:
        if ctl[STOP]:
            return False
        n += 1
        if n & 0x3FFF == 0:
            os.sched_yield()
            if time.monotonic() > deadline:
                raise AssertionError(f"the other side never reached round {value}")
    return True


def loop_delay(n):
    """Delay by n loop iterations (about 20 ns each); a long one yields the CPU meanwhile, so
    a side waiting for a descheduled peer does not keep it off the CPU by spinning."""
    if n > 1024:
        yielding_delay(n * 20)
        return
    for _ in range(n):
        pass


def pin_duelist(barrier, ring_name, ctl, rounds, deadline):
    """Pins a fresh position c just above the release position while the other side releases
    up to c + 64: granted and released past c must never both happen."""
    ring = Ring.open(ring_name, "duel", 0)
    pin_slot = ring.acquire_pin()
    release = ring.header.release
    rnd = random.Random(3)
    stats = collections.Counter()
    bad = Violations()
    steering = Steering(1, DUEL_MAX_STEP)
    barrier.wait(START_TIMEOUT_S)
    c = 0
    stop_at = time.monotonic() + DUEL_SECONDS * SCALE
    try:
        for k in range(1, rounds + 1):
            if time.monotonic() > stop_at:
                break
            stats["rounds"] += 1
            c = max(c, release.release_position) + 64
            this_lead = steering.lead + rnd.randint(-DUEL_JITTER, DUEL_JITTER)
            ctl[ARG], ctl[LEAD] = c, this_lead
            ctl[GO] = k
            loop_delay(this_lead)
            granted = pin(ring, pin_slot, c)
            wait_for(ctl, DONE, k, deadline)
            released = release.release_position
            if granted and released > c:
                bad.add(f"round {k}: pin at {c} granted, and the release went to {released}")
            elif granted:
                stats["pin_won"] += 1
                steering.move(+1)   # the pin came first: start it later
            elif released > c:
                stats["release_won"] += 1
                steering.move(-1)
            else:
                stats["neither"] += 1
            ring.set_pin(pin_slot, UINT64_MAX)
    finally:
        ctl[STOP] = 1
        ring.release_pin(pin_slot)
    return {**stats, "violations": bad.count, "examples": bad.kept, "lead": steering.lead}


def release_duelist(barrier, ring_name, ctl, deadline):
    ring = Ring.open(ring_name, "duel", 0)
    barrier.wait(START_TIMEOUT_S)
    k = 0
    while wait_for(ctl, GO, k + 1, deadline):
        k += 1
        c, lead = ctl[ARG], ctl[LEAD]
        loop_delay(-lead)
        # persisted up to c + 64 plus the quarter ring a releaser holds back: the target is c + 64
        lib.shmlog_ring_release_to(ring.map, c + 64 + CAPACITY // 4)
        ctl[DONE] = k
    return {"releases": k}


def watch_duelist(barrier, ring_name, bell_name, ctl, rounds, wait, deadline):
    """Goes to sleep (no spin: look, watch, look again, futex; `wait` names how, see WAITS)
    while the other side publishes record k: it must see the record, or be rung."""
    ring, bell = Ring.open(ring_name, "duel", 0), Doorbell.open(bell_name)
    slot = bell.acquire()
    assert slot >= 0, "no doorbell slot"
    cursor = ffi.new("shmlog_cursor *")
    cursor.position, cursor.next_offset = ring.start()
    wait_step = WAITS[wait]
    frames = ffi.new("shmlog_frame_ref[]", 1)
    rnd = random.Random(4)
    stats = collections.Counter()
    lost = Violations()
    steering = Steering(1, DUEL_MAX_STEP)
    barrier.wait(START_TIMEOUT_S)
    stop_at = time.monotonic() + DUEL_SECONDS * SCALE
    try:
        for k in range(1, rounds + 1):
            if time.monotonic() > stop_at:
                break
            stats["rounds"] += 1
            seq = lib.shmlog_doorbell_sequence(bell.ptr, slot)
            this_lead = steering.lead + rnd.randint(-DUEL_JITTER, DUEL_JITTER)
            ctl[LEAD] = this_lead
            ctl[GO] = k
            loop_delay(this_lead)
            started = time.monotonic_ns()
            outcome = wait_step(bell, slot, ring, cursor, 0, DUEL_SLEEP_NS)
            ended = time.monotonic_ns()
            wait_for(ctl, DONE, k, deadline)
            rang = lib.shmlog_doorbell_sequence(bell.ptr, slot) != seq
            slept = outcome not in SAW_IT
            if slept and not rang and ctl[STAMP] <= ended - DUEL_SLEEP_NS // 2:
                lost.add(f"round {k}: slept {(ended - started) / 1e6:.0f} ms ({outcome}); the record was "
                         f"published {(ended - ctl[STAMP]) / 1e6:.0f} ms before it woke, and nobody rang")
            if not slept and rang:
                stats["saw_it_and_was_rung"] += 1   # both sides saw each other
            elif not slept:
                stats["saw_it"] += 1
                steering.move(-1)   # the record came first: go to sleep sooner
            elif rang:
                stats["was_rung"] += 1
                steering.move(+1)
            else:
                stats["slept_and_was_not_rung"] += 1   # only a lost wake-up, or a publisher slower than the sleep
            n = ring.fetch(cursor, ffi.NULL, 0, frames, 1, 0)
            assert n == 1 and frames[0].base_offset == k - 1, f"round {k}: fetch gave {n} frame(s)"
            if k % RELEASE_EVERY == 0:
                lib.shmlog_ring_publish_persisted(ring.map, cursor.position, cursor.next_offset, cursor.next_offset)
                lib.shmlog_ring_release_to(ring.map, cursor.position)
    finally:
        ctl[STOP] = 1
        bell.release(slot)
    return {**stats, "lost_wakeups": lost.count, "examples": lost.kept, "lead": steering.lead}


def publish_duelist(barrier, ring_name, bell_name, ctl, deadline):
    ring, bell = Ring.open(ring_name, "duel", 0), Doorbell.open(bell_name)
    slot = ring.acquire_producer_slot()
    barrier.wait(START_TIMEOUT_S)
    k = 0
    try:
        while wait_for(ctl, GO, k + 1, deadline):
            k += 1
            loop_delay(-ctl[LEAD])
            ring.append_fixed(slot, 1, k.to_bytes(8, "little"), 8, 0, APPEND_TIMEOUT_MS, bell.ptr)
            ctl[STAMP] = time.monotonic_ns()
            ctl[DONE] = k
    finally:
        ring.release_producer_slot(slot)
    return {"published": k}


def duel(first, second, names, rounds, budget_s=None, **first_kwargs):
    """Runs the duel of two processes on a fresh ring (and doorbell); returns the first side's stats."""
    budget_s = budget_s or 120.0 * SCALE
    ring_name, bell_name = names
    owners = [Ring.create(ring_name, CAPACITY, "duel", 1, 0)]
    if bell_name:
        owners.append(Doorbell.create(bell_name))
    team = Team("processes", 2)
    ctl = control_words()
    deadline = time.monotonic() + budget_s
    extra = {"bell_name": bell_name} if bell_name else {}
    try:
        team.start("second", second, ring_name=ring_name, ctl=ctl, deadline=deadline, **extra)
        team.start("first", first, ring_name=ring_name, ctl=ctl, rounds=rounds, deadline=deadline, **extra,
                   **first_kwargs)
        got = team.collect(["first", "second"], deadline + START_TIMEOUT_S)
    finally:
        ctl[STOP] = 1
        team.finish([])
        for owner in owners:
            owner.close()
    return got["first"]


def duel_pins_against_releases(names, rounds=None):
    return duel(pin_duelist, release_duelist, (names[0], None), rounds or DUEL_PIN_ROUNDS * SCALE)


def duel_watches_against_publications(names, wait, rounds=None):
    return duel(watch_duelist, publish_duelist, names, rounds or DUEL_WAKE_ROUNDS * SCALE, wait=wait)


# ---------------------------------------------------------------------------- close vs claim

def settle(ring, first_look, deadline):
    """After the close: spin until no producer slot holds a claim; True if one was seen."""
    claims, seen = first_look, first_look > 0
    n = 0
    while claims:
        n += 1
        if n & 0x3FF == 0:
            os.sched_yield()
            if time.monotonic() > deadline:
                raise AssertionError("a claim stayed open after the close")
        claims = ring.open_claims()
    return seen


def persist_everything(ring):
    """Play the persister: everything published is persisted and its space released."""
    position, offset = ring.end()
    lib.shmlog_ring_publish_persisted(ring.map, position, offset, offset)
    lib.shmlog_ring_release_to(ring.map, position)


def close_duelist(barrier, ring_name, ctl, rounds, deadline):
    """Closes the ring (and looks at the claims) while the other side appends one record: once
    no claim is seen, the ring's end must never move again."""
    ring = Ring.open(ring_name, "duel", 0)
    rnd = random.Random(5)
    stats = collections.Counter()
    bad = Violations()
    steering = Steering(1, DUEL_MAX_STEP)
    barrier.wait(START_TIMEOUT_S)
    stop_at = time.monotonic() + DUEL_SECONDS * SCALE
    try:
        for k in range(1, rounds + 1):
            if time.monotonic() > stop_at:
                break
            stats["rounds"] += 1
            this_lead = steering.lead + rnd.randint(-DUEL_JITTER, DUEL_JITTER)
            ctl[LEAD] = this_lead
            ctl[GO] = k
            loop_delay(this_lead)
            waited = settle(ring, close_and_look_at_claims(ring), deadline)
            end = ring.end()[1]
            wait_for(ctl, DONE, k, deadline)
            appended = ctl[ARG]
            if ring.end()[1] != end:
                bad.add(f"round {k}: no claim was open after the close, the end was offset {end}, and then "
                        f"offset {appended} was appended (end now {ring.end()[1]})")
            elif appended < 0:
                stats["closer_won"] += 1
                steering.move(+1)   # the close came first: close later
            else:
                stats["waited_for_claim" if waited else "append_won"] += 1
                steering.move(-1)
            lib.shmlog_ring_reopen(ring.map)
            persist_everything(ring)
    finally:
        ctl[STOP] = 1
    return {**stats, "violations": bad.count, "examples": bad.kept, "lead": steering.lead}


def claim_duelist(barrier, ring_name, ctl, deadline):
    """Appends one record per round: ctl[ARG] = its offset, or -1 when the ring was closed."""
    ring = Ring.open(ring_name, "duel", 0)
    slot = ring.acquire_producer_slot()
    out = ffi.new("uint64_t *")
    value = ffi.new("uint8_t[8]")
    barrier.wait(START_TIMEOUT_S)
    k = 0
    try:
        while wait_for(ctl, GO, k + 1, deadline):
            k += 1
            loop_delay(-ctl[LEAD])
            rc = lib.shmlog_ring_append_fixed(ring.map, slot, 1, value, 8, 0, -1, -1, APPEND_TIMEOUT_MS * 1_000_000,
                                              ffi.NULL, out)
            assert rc >= 0 or rc == lib.SHMLOG_ECLOSED, f"round {k}: append failed with {rc}"
            ctl[ARG] = out[0] if rc >= 0 else -1
            ctl[DONE] = k
    finally:
        ring.release_producer_slot(slot)
    return {"appends": k}


def duel_closes_against_claims(names, rounds=None):
    return duel(close_duelist, claim_duelist, (names[0], None), rounds or DUEL_CLOSE_ROUNDS * SCALE)


def close_producer(barrier, ring_name, stop, results, index, deadline):
    """Appends records until the ring is closed; results[index] = how many were appended,
    results[index + 1] = the largest offset appended (-1: none)."""
    ring = Ring.open(ring_name, "closing", 0)
    slot = ring.acquire_producer_slot()
    out = ffi.new("uint64_t *")
    value = ffi.new("uint8_t[8]")
    barrier.wait(START_TIMEOUT_S)
    appended, last = 0, -1
    try:
        while not stop.is_set():
            rc = lib.shmlog_ring_append_fixed(ring.map, slot, 1, value, 8, 0, -1, -1, APPEND_TIMEOUT_MS * 1_000_000,
                                              ffi.NULL, out)
            if rc == lib.SHMLOG_ECLOSED:
                break
            assert rc >= 0, f"append failed with {rc}"
            appended, last = appended + 1, out[0]
            results[index], results[index + 1] = appended, last
            if time.monotonic() > deadline:
                raise AssertionError("the ring was never closed")
    finally:
        ring.release_producer_slot(slot)
    return {"appended": appended, "last": last, "refused": not stop.is_set()}


def closer(barrier, ring_name, results, producers, deadline):
    """Persists behind the producers until each appended CLOSE_AFTER records, then closes the
    ring and waits out the claims; returns the ring's end then, and whether a claim was seen."""
    ring = Ring.open(ring_name, "closing", 0)
    barrier.wait(START_TIMEOUT_S)
    while any(results[2 * i] < CLOSE_AFTER for i in range(producers)):
        persist_everything(ring)
        if time.monotonic() > deadline:
            raise AssertionError("the producers never got going")
    waited = settle(ring, close_and_look_at_claims(ring), deadline)
    end = ring.end()[1]
    persist_everything(ring)   # producers blocked for space look again, and back out
    return {"end": end, "waited": waited}


def race_close_against_producers(mode, ring_name, producers=3, budget_s=None):
    """Producers append as fast as they can while the closer closes the ring under them."""
    budget_s = budget_s or 60.0 * SCALE
    owner = Ring.create(ring_name, CAPACITY, "closing", 1, 0)
    team = Team(mode, producers + 1)
    results = team.shared_int64s(2 * producers)
    stop = team.event()
    deadline = time.monotonic() + budget_s
    try:
        for i in range(producers):
            team.start(f"producer{i}", close_producer, ring_name=ring_name, stop=stop, results=results,
                       index=2 * i, deadline=deadline)
        team.start("closer", closer, ring_name=ring_name, results=results, producers=producers, deadline=deadline)
        got = team.collect(["closer"] + [f"producer{i}" for i in range(producers)], deadline + START_TIMEOUT_S)
        got["end_after"] = owner.end()[1]
    finally:
        team.finish([stop])
        owner.close()
    return got
