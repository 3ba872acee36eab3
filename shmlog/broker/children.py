"""How the supervisor stops the broker's child processes that talk to it (the log cleaner, the
Kafka listener, the mirrors): SIGTERM, then wait while still answering control requests, SIGKILL
at the timeout.

The answering is the point: a child that asked the supervisor something a moment before its
SIGTERM (the cleaner's metadata at the top of a round, a mirror's after a topic change) acts on
the stop only once it has the answer, so a supervisor that waited without serving would hold
it, and the broker's stop with it, until the SIGKILL.
"""
import time


def stop(procs, timeout_s, serve):
    """SIGTERM those of procs (subprocess.Popen) still running, then call serve() -- answer
    requests for a few milliseconds -- until all have exited or timeout_s passed; SIGKILL and
    reap the rest. Returns the ones killed."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for p in running) and time.monotonic() < deadline:
        serve()
    killed = [p for p in running if p.poll() is None]
    for p in killed:
        p.kill()
        p.wait()
    return killed
