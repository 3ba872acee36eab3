"""StopEvent: what a process's SIGTERM and SIGINT handlers set to ask it to stop.

It is not a threading.Event, whose lock makes setting it from a signal handler hang the process
for good: Python runs a handler in the main thread between two bytecodes, so a signal that comes
while the main thread holds that lock -- inside another handler's Event.set (a second SIGTERM, or
a Ctrl-C to the process group on top of a parent's SIGTERM), or inside Event.wait before it lets
the lock go -- has the handler wait for a lock its own thread holds. StopEvent takes no lock: a
flag, and a pipe that becomes readable when the flag is raised, which wait() selects on.
"""
import os
import select
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)   # a Ctrl-C reaches the whole process group


class StopEvent:
    """is_set(), set() and wait(timeout) as threading.Event has them; once set it stays set."""

    def __init__(self):
        self._set = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def is_set(self):
        return self._set

    def set(self):
        self._set = True
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass   # the pipe is full, so readable already

    def on_signal(self, *_):
        """A signal handler: signal.signal(signal.SIGTERM, event.on_signal)."""
        self.set()

    def set_on_signals(self, signums=STOP_SIGNALS):
        """Make SIGTERM and SIGINT (or signums) set it."""
        for signum in signums:
            signal.signal(signum, self.on_signal)

    def wait(self, timeout=None):
        """Until set or timeout seconds passed (None: no limit); whether it is set."""
        if not self._set:
            select.select([self._wake_r], [], [], timeout)
        return self._set

    def fileno(self):
        """Readable once set: a select() or poll() may wait on it beside other descriptors."""
        return self._wake_r
