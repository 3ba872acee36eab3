"""Process identity: a pid plus its start time, so a recycled pid is not mistaken for the owner."""
import os


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


MY_PID = os.getpid()
MY_START_TIME = start_time(MY_PID)


def me():
    """(pid, start time) of the calling process, recomputed after a fork."""
    global MY_PID, MY_START_TIME
    pid = os.getpid()
    if pid != MY_PID:
        MY_PID, MY_START_TIME = pid, start_time(pid)
    return MY_PID, MY_START_TIME
