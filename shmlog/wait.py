"""Wait strategies for a consumer with nothing to read: a policy beside the read loop.

BlockingWait sleeps on the consumer's doorbell futex (no CPU while idle, woken by the
publishing producer); BusySpinWait re-checks the rings without sleeping, for the lowest
latency at the cost of a core.
"""
from ._core import lib

MAX_SLEEP_NS = 100_000_000  # stuck claims and metadata changes are re-checked this often


class BlockingWait:
    def __init__(self, doorbell):
        self.doorbell = doorbell
        self.slot = doorbell.acquire()

    def wait(self, readers, timeout_s):
        if timeout_s <= 0:
            return
        timeout_ns = min(int(timeout_s * 1e9), MAX_SLEEP_NS)
        if self.slot < 0:
            import time
            time.sleep(min(timeout_ns / 1e9, 0.001))
            return
        seq = lib.shmlog_doorbell_sequence(self.doorbell.ptr, self.slot)
        rings = [r.ring for r in readers]
        for ring in rings:
            lib.shmlog_doorbell_watch(ring.map, self.slot, 1)
        try:
            if not any(r.ready() for r in readers):
                lib.shmlog_doorbell_wait(self.doorbell.ptr, self.slot, seq, timeout_ns)
        finally:
            for ring in rings:
                lib.shmlog_doorbell_watch(ring.map, self.slot, 0)

    def close(self):
        self.doorbell.release(self.slot)
        self.slot = -1


class BusySpinWait:
    def __init__(self, doorbell):
        pass

    def wait(self, readers, timeout_s):
        import time
        deadline = time.perf_counter() + min(timeout_s, MAX_SLEEP_NS / 1e9)
        while time.perf_counter() < deadline:
            if any(r.ready() for r in readers):
                return

    def close(self):
        pass
