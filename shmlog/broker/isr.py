"""ISR tracking (pure: no I/O): which follower replicas are in sync, by Kafka's rule.

A follower is *caught up* at time t when its fsynced log end reached the leader's log end as
it was at t. A follower in the ISR that has not been caught up within the last
`replica.lag.time.max.ms` leaves it; a follower out of the ISR joins once its fsynced log
end reaches the high watermark (so the high watermark, the ISR's minimum, never moves back)
and it has caught up with the leader within that window again (so a stopped follower does
not flap in and out).
The supervisor samples each replicated partition's leader log end every housekeeping round
(`observe`) and applies what `decide` returns to topics.json and the ring header.
"""
from collections import deque


class LagTracker:
    """The leader's log end over the last lag window of one partition."""

    def __init__(self):
        self.samples = deque()    # (time s, leader log end), oldest first

    def observe(self, now, leader_end, window_s):
        self.samples.append((now, leader_end))
        # Keep one sample older than the window: it says where the leader was window_s ago.
        while len(self.samples) > 2 and self.samples[1][0] <= now - window_s:
            self.samples.popleft()

    def caught_up_within(self, fsynced, now, window_s):
        """True if the follower reached the leader's log end at some time in the last window_s
        (or the window is not yet known: too few samples to judge)."""
        if not self.samples:
            return True
        if self.samples[0][0] > now - window_s:
            return True   # tracking started less than a window ago
        for t, end in reversed(self.samples):
            if fsynced >= end:
                return t >= now - window_s
        return False


def decide(state, fsynced, high_watermark, tracker, now, window_s):
    """The new ISR of one partition (a list in replica order), or None if unchanged.

    state: its partition state (replicas, leader, isr); fsynced: {replica id: fsynced offset}
    of the followers (absent: unknown)."""
    isr = set(state["isr"])
    new = {state["leader"]}
    for r in state["replicas"]:
        if r == state["leader"] or r not in fsynced:
            continue
        if r in isr:
            if tracker.caught_up_within(fsynced[r], now, window_s):
                new.add(r)
        elif fsynced[r] >= high_watermark and tracker.caught_up_within(fsynced[r], now, window_s):
            new.add(r)
    if new == isr:
        return None
    return [r for r in state["replicas"] if r in new]
