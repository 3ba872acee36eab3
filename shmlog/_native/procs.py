"""Process identity: a pid plus its start time, so a recycled pid is not mistaken for the owner."""
import os

from shmlog._native import _fast


def start_time(pid):
    """The process's start time in clock ticks since boot, or 0 when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return 0
    return int(fields[19])


def alive(pid, expected_start_time):
    if pid <= 0:
        return False
    started = start_time(pid)
    return started != 0 and (expected_start_time == 0 or started == expected_start_time)


_me = (os.getpid(), start_time(os.getpid()), _fast.fork_generation())


def me():
    """(pid, start time) of the calling process, recomputed after a fork (the C core's fork
    generation says when, as for the clients' fork checks)."""
    global _me
    if _me[2] != _fast.fork_generation():
        pid = os.getpid()
        _me = (pid, start_time(pid), _fast.fork_generation())
    return _me[0], _me[1]
