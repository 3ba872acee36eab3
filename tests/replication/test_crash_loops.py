"""A persister or mirror that keeps dying while it works on a partition (a crash loop; here
real SIGKILLs) takes that replica offline as a failed log dir does: the leader's moves
leadership to an in-sync replica, a follower's leaves the ISR until it has copied new records."""
import os
import signal

import psutil

from .conftest import create, mirror_pid, partition_state, persister_pid, produce, wait_for, wait_isr, warm_up


def working_on(pid, log_dir, topic):
    """True when process pid has a file of log_dir's replica of topic-0 open (its segment)."""
    try:
        files = psutil.Process(pid).open_files()
    except psutil.Error:
        return False
    return any(f.path.startswith(os.path.join(log_dir, f"{topic}-0") + os.sep) for f in files)


def kill_three_times_while_working(pid_of, log_dir, topic):
    last = None
    for _ in range(3):
        pid = wait_for(lambda last=last: (q := pid_of()) not in (None, last) and working_on(q, log_dir, topic) and q,
                       f"a restarted process working on {topic}-0")
        os.kill(pid, signal.SIGKILL)
        last = pid


def test_a_persister_that_keeps_dying_on_a_partition_takes_the_leader_offline_and_leadership_moves(
        replicated, data_dir):
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=10_000)
    create(admin, "t", [0, 1])
    warm_up(conf, admin, "t", [0, 1])
    kill_three_times_while_working(lambda: persister_pid(data_dir), dirs[0], "t")
    state = wait_for(lambda: (s := partition_state(admin, "t")).leader == 1 and s, "replica 1 to lead")
    assert state.offline == [0] and state.isrs == [1]
    assert [err for err, *_ in produce(conf, "t", [b"after"])] == [None]


def test_a_mirror_that_keeps_dying_on_a_partition_takes_its_follower_out_of_the_isr_until_it_copies_again(
        replicated, data_dir):
    conf, admin, dirs = replicated(2, replica_lag_time_max_ms=10_000)
    create(admin, "t", [0, 1])
    warm_up(conf, admin, "t", [0, 1])
    kill_three_times_while_working(lambda: mirror_pid(data_dir, 1), dirs[1], "t")
    state = wait_for(lambda: (s := partition_state(admin, "t")).isrs == [0] and s, "replica 1 to leave the ISR")
    assert state.leader == 0 and state.offline == [1]
    assert [err for err, *_ in produce(conf, "t", [b"after"])] == [None]   # min.insync.replicas=1
    wait_isr(admin, "t", [0, 1])     # the restarted mirror copied "after": back in the ISR
    assert partition_state(admin, "t").offline == []
