"""Group timers against a real broker: the supervisor sleeps until the coordinator's next
deadline, so a session that runs out is acted on at once, not on its next 100 ms
housekeeping round.

Members speak the control protocol directly (as tests/integration/test_groups.py does), so
the test knows to the request when the broker last heard from the silent member.
"""
import json
import time

import pytest

import shmlog
from shmlog.control import Control, encode
from tests.conftest import create_topic, stop_leftover_broker

# Not a multiple of the 100 ms housekeeping period: a supervisor that only looked at group
# timers on housekeeping rounds would notice this expiry about 90 ms late, every time.
SESSION_MS = 310
# Scheduling on two busy cores can delay the supervisor now and then, so the bound is on the
# median of a few trials (such a supervisor's median would be ~90 ms); each trial alone gets
# only a loose bound.
TRIALS = 5
MEDIAN_LATE_MS = 50
ANY_LATE_MS = 2000


@pytest.fixture
def broker(data_dir):
    with shmlog.Broker(data_dir, group_initial_rebalance_delay_ms=0, group_min_session_timeout_ms=50) as b:
        yield b
    stop_leftover_broker(data_dir)


def send(ctl, op, **fields):
    ctl.next_id += 1
    ctl.sock.sendall(encode({"op": op, "id": ctl.next_id, **fields}))
    return ctl.next_id


def read(ctl):
    line = ctl.reader.readline()
    assert line, "the broker closed the control channel"
    return json.loads(line)


def reply_to(ctl, request_id):
    """The reply to request_id; pushes that come first are returned alongside it."""
    pushes = []
    while True:
        message = read(ctl)
        if message.get("push"):
            pushes.append(message)
        elif message.get("id") == request_id:
            assert message["ok"], message
            return message, pushes


def join(ctl, group, session_ms, member_id=""):
    return send(ctl, "join_group", group=group, member_id=member_id, protocols=["range"], subscription=["t"],
                session_timeout_ms=session_ms, rebalance_timeout_ms=10_000)


def sync(ctl, group, member_id, generation):
    return reply_to(ctl, send(ctl, "sync_group", group=group, member_id=member_id, generation=generation))[0]


def expiry_times(data_dir, group):
    """A stable group of an observer (long session) and a member that falls silent after its
    sync; returns (sent, answered, noticed): when the member's last request was sent, when its
    reply arrived, and when the observer was told to rejoin because the member was expelled."""
    observer, member = Control(data_dir), Control(data_dir)
    try:
        first, _ = reply_to(observer, join(observer, group, 60_000))
        sync(observer, group, first["member_id"], first["generation"])
        pending = join(member, group, SESSION_MS)
        push = read(observer)                    # the member's join: the observer is told to rejoin
        assert push.get("push") and push["event"] == "rebalance", push
        rejoined, _ = reply_to(observer, join(observer, group, 60_000, first["member_id"]))
        joined, _ = reply_to(member, pending)
        assert joined["generation"] == rejoined["generation"] == first["generation"] + 1
        sync(observer, group, first["member_id"], joined["generation"])
        sent = time.monotonic()
        sync(member, group, joined["member_id"], joined["generation"])   # the member's last word
        answered = time.monotonic()
        observer.sock.settimeout(10 * SESSION_MS / 1000)
        push = read(observer)
        noticed = time.monotonic()
        assert push.get("push") and push["event"] == "rebalance", push
        members = reply_to(observer, send(observer, "describe_groups", groups=[group]))[0]["groups"][0]["members"]
        assert [m["member_id"] for m in members] == [first["member_id"]]
        return sent, answered, noticed
    finally:
        member.close()
        observer.close()


def test_a_silent_member_is_expelled_when_its_session_runs_out_not_on_a_housekeeping_tick(broker, admin):
    create_topic(admin, "t", 2)
    late_ms = []
    for trial in range(TRIALS):
        sent, answered, noticed = expiry_times(broker.data_dir, f"g{trial}")
        assert (noticed - sent) * 1000 > SESSION_MS          # never before the session ran out
        late_ms.append((noticed - answered) * 1000 - SESSION_MS)
    assert max(late_ms) < ANY_LATE_MS, late_ms
    assert sorted(late_ms)[TRIALS // 2] < MEDIAN_LATE_MS, late_ms
