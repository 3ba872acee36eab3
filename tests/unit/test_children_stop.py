"""How the supervisor stops its children (shmlog/broker/children.py), on real child processes."""
import os
import select
import subprocess
import sys

from shmlog.broker import children

# A child that, told to stop, first asks its parent something (as the cleaner asks the
# supervisor for the metadata at the top of a round) and exits only with the answer.
ASKS_BEFORE_STOPPING = r"""
import os, signal, sys
asks, answers = int(sys.argv[1]), int(sys.argv[2])
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
os.write(asks, b"r")
signal.sigwait([signal.SIGTERM])
os.write(asks, b"?")
sys.exit(0 if os.read(answers, 1) == b"!" else 3)
"""
IGNORES_SIGTERM = r"""
import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.write(int(sys.argv[1]), b"r")
signal.pause()
"""


def start(code):
    asks_r, asks_w = os.pipe()
    answers_r, answers_w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", code, str(asks_w), str(answers_r)], pass_fds=(asks_w, answers_r))
    os.close(asks_w)
    os.close(answers_r)
    assert select.select([asks_r], [], [], 30)[0] and os.read(asks_r, 1) == b"r"
    return child, asks_r, answers_w


def test_a_child_that_asks_before_it_stops_is_answered_while_the_stop_waits_and_exits_unkilled():
    child, asks_r, answers_w = start(ASKS_BEFORE_STOPPING)
    answered = []

    def serve():
        if select.select([asks_r], [], [], 0.01)[0] and os.read(asks_r, 1) == b"?":
            os.write(answers_w, b"!")
            answered.append(True)
    try:
        killed = children.stop([child], 30, serve)
    finally:
        os.close(asks_r)
        os.close(answers_w)
    assert killed == [] and answered == [True] and child.returncode == 0


def test_a_child_that_ignores_sigterm_is_killed_at_the_timeout_and_reaped():
    child, asks_r, answers_w = start(IGNORES_SIGTERM)
    try:
        killed = children.stop([child], 0.2, lambda: select.select([], [], [], 0.01))
    finally:
        os.close(asks_r)
        os.close(answers_w)
    assert killed == [child] and child.returncode == -9


def test_children_that_have_exited_already_are_left_alone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert children.stop([child], 30, lambda: None) == []
