"""The keeper: a tiny parent that keeps a data dir's supervisor running.

Run as `python -m shmlog.broker.keeper <data_dir> <broker config json>`; shmlog.Broker and
`shmlog broker start` start it, and it starts `python -m shmlog.broker.supervisor` with the
same arguments. It does nothing else, and imports nothing of shmlog (nor anything beyond
os, select, signal, sys and time), so there is next to nothing in it that can fail:

- It passes the first supervisor's "shmlog broker ready" line on to its own stdout (the
  launcher waits for it) and exits with the supervisor's status if that first one dies
  before it is ready: a broker that cannot start is an error for whoever started it.
- A supervisor that exits 0 was stopped cleanly: the keeper exits 0.
- A supervisor that dies any other way (a signal, SIGKILL included, or a crash) is started
  again at once; the new one adopts the rings, so attached clients never notice beyond a
  reconnect of their control channel. A supervisor that keeps dying before it is ready (or
  soon after) is started again with a doubling delay (0.1 s up to 5 s); after
  START_FAILURES_MAX starts in a row that never got ready the keeper gives up and exits 1
  (so a service manager's Restart=on-failure takes over).
- SIGTERM or SIGINT: the keeper passes SIGTERM on to the supervisor (once it is ready: one
  still starting is stopped as soon as it is), waits for it, and exits 0 without restarting.

If the keeper itself is killed, the supervisor notices (it polls its parent pid), says so
once in its log and carries on serving without a keeper; a clean stop still works.
"""
import os
import select
import signal
import sys
import time

READY = b"shmlog broker ready"
ENV = "SHMLOG_KEEPER_PID"       # tells the supervisor whose child it is
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
STABLE_S = 5.0                  # a supervisor that dies sooner after being ready counts as failing
START_FAILURES_MAX = 10         # supervisors in a row that died before they were ready: give up


def log(message):
    try:
        os.write(2, f"shmlog keeper[{os.getpid()}]: {message}\n".encode())
    except OSError:
        pass  # whoever read our stderr is gone; keeping the broker up matters more


def describe(status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Keeper:
    def __init__(self, argv):
        self.argv = [sys.executable, "-m", "shmlog.broker.supervisor", *argv]
        self.child = 0
        self.ready = False
        self.stopping = False
        self.announced = False     # the first ready line went to our stdout
        self.outputs = {}          # fd of a supervisor's stdout pipe -> buffered bytes

    def on_stop(self, *_):
        self.stopping = True
        if self.child and self.ready:
            try:
                os.kill(self.child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def spawn(self):
        r, w = os.pipe()
        env = dict(os.environ)
        env[ENV] = str(os.getpid())
        try:
            self.child = os.posix_spawn(self.argv[0], self.argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)],
                                        setsigmask=())
        finally:
            os.close(w)
        self.ready = False
        os.set_blocking(r, False)
        self.outputs[r] = b""

    def read_output(self, fd):
        """Lines a supervisor wrote to stdout: the ready line is what we look for."""
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # every writer (the supervisor, the persister it started) has gone
            os.close(fd)
            del self.outputs[fd]
            return
        buf = self.outputs[fd] + chunk
        *lines, self.outputs[fd] = buf.split(b"\n")
        for line in lines:
            if line.startswith(READY) and not self.ready:
                self.ready = True
                if not self.announced:
                    self.announced = True
                    try:
                        os.write(1, line + b"\n")
                    except OSError:
                        pass
                    # Nothing else goes to our stdout, whose reader (the launcher) may exit now.
                    null = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(null, 1)
                    os.close(null)
                else:
                    log(f"supervisor pid {self.child} is ready")
                if self.stopping:
                    self.on_stop()

    def reap(self):
        """The child's wait status once it has exited, else None."""
        try:
            pid, status = os.waitpid(self.child, os.WNOHANG)
        except ChildProcessError:
            return 0
        return status if pid == self.child else None

    def wait_child(self, wake_r):
        """Serve the child's stdout until it exits; its wait status."""
        while True:
            status = self.reap()
            if status is not None:
                for fd in list(self.outputs):  # what it wrote before dying (its ready line, maybe)
                    self.read_output(fd)
                return status
            try:
                readable, _, _ = select.select([wake_r, *self.outputs], [], [], 1.0)
            except InterruptedError:
                continue
            for fd in readable:
                if fd == wake_r:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                else:
                    self.read_output(fd)

    def run(self):
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)            # SIGCHLD (and a stop) end the select at once
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal is not a stop
        failures = 0
        while True:
            started = time.monotonic()
            self.spawn()
            status = self.wait_child(wake_r)
            pid, was_ready, self.child = self.child, self.ready, 0
            code = os.waitstatus_to_exitcode(status)
            if not self.announced:
                log(f"supervisor pid {pid} {describe(status)} before it was ready")
                return code if code > 0 else 1
            if self.stopping or code == 0:
                return 0 if code == 0 or self.stopping else code
            lived = time.monotonic() - started
            failures = 0 if was_ready and lived >= STABLE_S else failures + 1
            if not was_ready and failures >= START_FAILURES_MAX:
                log(f"supervisor pid {pid} {describe(status)} before it was ready, {failures} times in a row; "
                    f"giving up")
                return 1
            delay = 0.0 if failures <= 1 else min(BACKOFF_FIRST_S * 2 ** (failures - 2), BACKOFF_MAX_S)
            log(f"supervisor pid {pid} {describe(status)}; starting it again"
                + (f" in {delay:g} s" if delay else ""))
            deadline = time.monotonic() + delay
            while not self.stopping and time.monotonic() < deadline:
                select.select([wake_r, *self.outputs], [], [], deadline - time.monotonic())
                for fd in list(self.outputs):
                    self.read_output(fd)
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            if self.stopping:
                return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m shmlog.broker.keeper <data_dir> [broker config json]", file=sys.stderr)
        return 2
    return Keeper(argv).run()


if __name__ == "__main__":
    sys.exit(main())
