"""A stop signal arriving inside another one's handler (shmlog/stop_event.py).

A child process sets its StopEvent from SIGTERM and SIGINT handlers while its main thread waits
on it and looks at it in a loop; the parent sends it signals back to back. An event with a lock
(threading.Event: tried, the child hangs in every run) would now and then run a handler while
the main thread holds that lock, and the handler would wait for it for good: the child must
answer after every storm and exit.
"""
import os
import select
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.concurrency

SIGNALS_PER_STORM = 20_000 * int(os.environ.get("SHMLOG_CONCURRENCY_SCALE", "1"))
STORMS = 5
ANSWER_S = 30

CHILD = r"""
import os, select, signal, sys
from shmlog.stop_event import StopEvent

event = StopEvent()
signal.signal(signal.SIGTERM, event.on_signal)
signal.signal(signal.SIGINT, event.on_signal)
commands, answers = int(sys.argv[1]), int(sys.argv[2])
os.write(answers, b"r")
while True:
    for _ in range(100):
        event.wait(0)          # a lock-taking event would hold its lock here now and then
    if select.select([commands], [], [], 0)[0]:
        if os.read(commands, 1) != b"?":
            break
        os.write(answers, b"!")
"""


def read_answer(fd):
    assert select.select([fd], [], [], ANSWER_S)[0], f"the child did not answer within {ANSWER_S} s: a signal " \
                                                       f"handler hung"
    return os.read(fd, 1)


def test_a_storm_of_stop_signals_never_hangs_the_process_that_handles_them():
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(to_child_r), str(from_child_w)],
                             pass_fds=(to_child_r, from_child_w))
    os.close(to_child_r)
    os.close(from_child_w)
    try:
        assert read_answer(from_child_r) == b"r"
        for _ in range(STORMS):
            for i in range(SIGNALS_PER_STORM):
                os.kill(child.pid, signal.SIGTERM if i % 2 else signal.SIGINT)
            os.write(to_child_w, b"?")
            assert read_answer(from_child_r) == b"!"
        os.write(to_child_w, b"q")
        assert child.wait(ANSWER_S) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(to_child_w)
        os.close(from_child_r)
