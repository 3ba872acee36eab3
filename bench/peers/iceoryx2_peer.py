"""iceoryx2 (Eclipse, Rust core, PyPI wheel `iceoryx2`) publish-subscribe over shared memory.

One `Ipc` node per process; a publish-subscribe service whose payload is a fixed-size ctypes
structure of the record size (100 or 2048 bytes), no safe overflow (a full subscriber buffer
makes the publisher retry, `BackpressureStrategy.RetryUntilDelivered`, instead of dropping the
oldest sample: no record may be lost, as with every other row), subscriber buffer of
BUFFER samples. Producer: `loan_uninit()`, `ctypes.memmove` of the value into the sample,
`assume_init().send()` per record. Consumer: `receive()` per record, `ctypes.string_at` of the
payload (a copy into a `bytes`, like the other peers' consumers get).

iceoryx2's subscriber has no blocking receive. Two ways to wait are measured:

- "iceoryx2 busy-poll": the consumer spins on `receive()` (what iceoryx2's own benchmarks
  do). Used for the per-record rows and one latency row.
- "iceoryx2 event" (latency row only): an event service next to the data service; the
  producer `notify()`s after every `send()`, the consumer sleeps in `Listener.timed_wait`
  whenever `receive()` comes back empty. This is the blocking wait the other peers use.

Each row gets its own iceoryx2 root directory (node and service files) inside the run's temp
dir and its own shared-memory prefix `sbiox<parent pid>r<row>_`; the parent removes both after
the row (and `leftovers()` lists any /dev/shm object of this process's prefix still there).
"""
import ctypes
import os
import shutil
import struct
import time

from peers._common import (
    LATENCY_INTERVAL_NS,
    MONO,
    STALL_S,
    Checker,
    latency_result,
    now_ns,
    pace,
    precise_sleep,
    wait_go,
)

NAME = "iceoryx2"
WORKLOADS = ("records", "latency")
VARIANTS = [("iceoryx2 busy-poll", {"wake": "spin"}),
            ("iceoryx2 event", {"wake": "event", "only": ("latency",)})]
BUFFER = 1024            # subscriber_max_buffer_size (samples in flight)
SERVICE = "shmlog-bench/records"
EVENT = "shmlog-bench/wake"
_seq = [0]
_made = []               # (prefix, root) of channels opened by this process and not yet closed


def _prefix_base():
    return f"sbiox{os.getpid()}r"


def available():
    try:
        import iceoryx2  # noqa: F401
    except ImportError:
        return "the iceoryx2 Python package is not installed (pip install iceoryx2)"
    except Exception as exc:        # e.g. an incompatible wheel
        return f"import iceoryx2 failed: {type(exc).__name__}: {exc}"
    return None


def _remove_shm(prefix):
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass


def leftovers():
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(_prefix_base()))
    except OSError:
        return []


def open_channel(ctx, row, workdir):
    _seq[0] += 1
    prefix = f"{_prefix_base()}{_seq[0]}_"
    root = os.path.join(workdir, f"iox2-{_seq[0]}") + "/"
    os.mkdir(root)
    done = ctx.Event()              # consumer -> producer: everything received, you may drop the publisher
    _made.append((prefix, root))

    def close():
        # children are gone by now (the runner stops them first): their nodes' files can go
        _remove_shm(prefix)
        shutil.rmtree(root, ignore_errors=True)
        if (prefix, root) in _made:
            _made.remove((prefix, root))

    return {"prefix": prefix, "root": root, "done": done, "opts": dict(row.get("opts") or {})}, close


def _node(chan):
    import iceoryx2 as iox2
    iox2.set_log_level_from_env_or(iox2.LogLevel.Warn)
    cfg = iox2.config.default()
    cfg.global_cfg.prefix = iox2.FileName.new(chan["prefix"])
    cfg.global_cfg.root_path = iox2.Path.new(chan["root"])
    return (iox2.NodeBuilder.new().config(cfg).signal_handling_mode(iox2.SignalHandlingMode.Disabled)
            .create(iox2.ServiceType.Ipc))


def _record_type(rb):
    class Record(ctypes.Structure):
        _fields_ = [("data", ctypes.c_uint8 * rb)]

        @staticmethod
        def type_name():
            return f"shmlog_bench_record_{rb}"
    return Record


def _services(chan, rb):
    import iceoryx2 as iox2
    node = _node(chan)
    svc = (node.service_builder(iox2.ServiceName.new(SERVICE))
           .publish_subscribe(_record_type(rb))
           .enable_safe_overflow(False)
           .subscriber_max_buffer_size(BUFFER)
           .history_size(0)
           .max_publishers(1).max_subscribers(1)
           .open_or_create())
    event = None
    if chan["opts"].get("wake") == "event":
        event = node.service_builder(iox2.ServiceName.new(EVENT)).event().open_or_create()
    return node, svc, event


class _Pub:
    def __init__(self, chan, rb):
        import iceoryx2 as iox2
        self.node, self.svc, event = _services(chan, rb)
        self.pub = (self.svc.publisher_builder()
                    .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered).create())
        self.notifier = event.notifier_builder().create() if event is not None else None
        self.done = chan["done"]
        self.rb = rb

    def connect(self):
        """After the start signal (the subscriber exists by then): wait until it is seen."""
        deadline = time.monotonic() + 10
        while self.svc.dynamic_config.number_of_subscribers < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        self.pub.update_connections()

    def finish(self):
        """Keep the publisher (and its data segment) alive until the consumer has everything."""
        self.done.wait(STALL_S + 5)
        self.pub.delete()
        if self.notifier is not None:
            self.notifier.delete()


class _Sub:
    def __init__(self, chan, rb):
        self.node, self.svc, event = _services(chan, rb)
        self.sub = self.svc.subscriber_builder().buffer_size(BUFFER).create()
        self.listener = event.listener_builder().create() if event is not None else None
        self.done = chan["done"]
        self.rb = rb

    def reader(self):
        """A function returning the next value as bytes, or None after STALL_S without one."""
        import iceoryx2 as iox2
        receive, string_at, rb, listener = self.sub.receive, ctypes.string_at, self.rb, self.listener
        tick = iox2.Duration.from_millis(100)

        def next_value():
            s = receive()
            if s is not None:
                return string_at(s.payload_ptr, rb)
            start = time.monotonic()
            while True:
                if listener is not None:
                    listener.timed_wait(tick)    # sleeps until the producer's notify() (or 100 ms)
                s = receive()
                if s is not None:
                    return string_at(s.payload_ptr, rb)
                if time.monotonic() - start > STALL_S:
                    return None
        return next_value

    def extra(self):
        extra = 0
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            if self.sub.receive() is not None:
                extra += 1
        return extra

    def finish(self):
        self.done.set()
        self.sub.delete()
        if self.listener is not None:
            self.listener.delete()


def produce_records(params, ready, go, chan):
    n, rb = params["n"], params["record_bytes"]
    p = _Pub(chan, rb)
    pad = b"x" * (rb - 8)
    loan, memmove, notifier = p.pub.loan_uninit, ctypes.memmove, p.notifier
    t0 = wait_go(ready, go)
    p.connect()
    for i in range(n):
        s = loan()
        memmove(s.payload_ptr, i.to_bytes(8, "little") + pad, rb)
        s.assume_init().send()
        if notifier is not None:
            notifier.notify()
    t_done = now_ns(MONO)
    p.finish()
    return {"t_start": t0, "t_done": t_done}


def consume_records(params, ready, go, chan):
    n = params["n"]
    c = _Sub(chan, params["record_bytes"])
    ck = Checker()
    next_value = c.reader()
    wait_go(ready, go)
    while ck.expected < n:
        v = next_value()
        if v is None:
            break
        seq = int.from_bytes(v[:8], "little")
        if seq != ck.expected:
            ck.gap(seq)
        ck.nbytes += len(v)
        ck.expected += 1
    t_last = now_ns(MONO)
    extra = c.extra()
    c.finish()
    return ck.result(t_last, extra)


def produce_latency(params, ready, go, chan):
    n, rb = params["n"], params["record_bytes"]
    precise_sleep()
    p = _Pub(chan, rb)
    pad = b"x" * (rb - 16)
    pack, loan, memmove, notifier = struct.Struct("<qq").pack, p.pub.loan_uninit, ctypes.memmove, p.notifier
    t0 = wait_go(ready, go)
    p.connect()
    for i in range(n):
        pace(t0 + i * LATENCY_INTERVAL_NS)
        s = loan()
        memmove(s.payload_ptr, pack(i, now_ns(MONO)) + pad, rb)
        s.assume_init().send()
        if notifier is not None:
            notifier.notify()
    t_done = now_ns(MONO)
    p.finish()
    return {"t_start": t0, "t_done": t_done}


def consume_latency(params, ready, go, chan):
    n = params["n"]
    c = _Sub(chan, params["record_bytes"])
    ck = Checker()
    lat = []
    next_value = c.reader()
    wait_go(ready, go)
    while ck.expected < n:
        v = next_value()
        if v is None:
            break
        t = now_ns(MONO)
        ck.timed(v, t, lat)
    t_last = now_ns(MONO)
    extra = c.extra()
    c.finish()
    return latency_result(ck, lat, t_last, extra)
