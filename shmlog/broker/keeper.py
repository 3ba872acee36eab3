"""The keeper: a tiny parent that keeps a data dir's supervisor running.

Run as `python -m shmlog.broker.keeper <data_dir> <broker config json>`; shmlog.Broker and
`shmlog broker start` start it, and it starts `python -m shmlog.broker.supervisor` with the
same arguments. It does nothing else, and imports nothing of shmlog (nor anything beyond
os, select, signal, sys and time), so there is next to nothing in it that can fail:

- It passes the first supervisor's "shmlog broker ready" line on to its own stdout (the
  launcher waits for it) and exits with the supervisor's status if that first one dies
  before it is ready: a broker that cannot start is an error for whoever started it.
- A supervisor that exits 0 was stopped cleanly: the keeper exits 0.
- A supervisor that dies any other way (a signal, SIGKILL included, or a crash) is replaced
  at once by the warm standby: a second supervisor process the keeper starts as soon as the
  first is ready, which imports everything and then waits for supervisor.lock and the
  keeper's go-ahead (SIGUSR1, sent once the dead one is reaped), so it takes over at once
  (well within a second) instead of after an interpreter start; it dies with the keeper
  (PR_SET_PDEATHSIG) until then. It adopts the rings, so attached clients never notice beyond a reconnect of their
  control channel; the keeper then starts the next standby. (A standby that gets the lock
  after a clean stop finds it marked stopped and exits.) With no standby ready, a new
  supervisor is started. One that keeps dying before it is ready is started again with a
  doubling delay (0.1 s up to 5 s); after START_FAILURES_MAX starts in a row that never got
  ready the keeper gives up and exits 1 (so a service manager's Restart=on-failure takes
  over).
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
STANDBY_ENV = "SHMLOG_STANDBY"  # "1": a warm standby, which waits for supervisor.lock
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
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
        self.child = 0             # the supervisor (holding, or about to hold, supervisor.lock)
        self.ready = False         # ... and it said it is ready
        self.standby = 0           # the warm standby, waiting for supervisor.lock
        self.standby_ready = False
        self.stopping = False
        self.announced = False     # the first ready line went to our stdout
        self.outputs = {}          # fd of a supervisor's stdout pipe -> [buffered bytes, its pid]

    def on_stop(self, *_):
        self.stopping = True
        self.kill_standby(wait=False)
        if self.child and self.ready:
            try:
                os.kill(self.child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def spawn(self, standby=False):
        r, w = os.pipe()
        env = dict(os.environ)
        env[ENV] = str(os.getpid())
        if standby:
            env[STANDBY_ENV] = "1"
        try:
            # A standby starts with SIGUSR1 blocked: the go-ahead to take over, which it waits for.
            pid = os.posix_spawn(self.argv[0], self.argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)],
                                 setsigmask={signal.SIGUSR1} if standby else ())
        finally:
            os.close(w)
        os.set_blocking(r, False)
        self.outputs[r] = [b"", pid]
        if standby:
            self.standby, self.standby_ready = pid, False
        else:
            self.child, self.ready = pid, False
        return pid

    def kill_standby(self, wait=True):
        """It holds nothing (it waits for the lock before it touches anything): SIGKILL is fine."""
        pid = self.standby
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if wait:
            self.standby = 0
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def promote_standby(self):
        """The standby takes over (it has the lock already, or is about to): it is the supervisor now."""
        try:
            os.kill(self.standby, signal.SIGUSR1)   # the go-ahead: we have reaped the one that died
        except ProcessLookupError:
            pass
        said_ready = self.standby_ready
        self.child, self.ready = self.standby, False
        self.standby, self.standby_ready = 0, False
        log(f"standby supervisor pid {self.child} takes over")
        if said_ready:
            self.became_ready(b"")

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
        entry = self.outputs[fd]
        *lines, entry[0] = (entry[0] + chunk).split(b"\n")
        for line in lines:
            if not line.startswith(READY):
                continue
            if entry[1] == self.standby:
                self.standby_ready = True   # it took over before we noticed the other one died
            elif entry[1] == self.child and not self.ready:
                self.became_ready(line)

    def became_ready(self, line):
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
        elif not self.standby:
            self.spawn(standby=True)   # the next supervisor, imported and waiting

    def reap(self):
        """The supervisor's wait status once it has exited, else None (a standby's exit is noted)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0 if self.child else None
            if pid == 0:
                return None
            if pid == self.child:
                return status
            if pid == self.standby:
                self.standby = 0
                if not self.stopping and status != 0:
                    log(f"standby supervisor pid {pid} {describe(status)}")

    def wait_child(self, wake_r):
        """Serve the supervisors' stdout until the supervisor exits; its wait status."""
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
        try:
            return self.keep(wake_r)
        finally:
            self.kill_standby()

    def keep(self, wake_r):
        failures = 0
        self.spawn()
        while True:
            status = self.wait_child(wake_r)
            pid, was_ready, self.child = self.child, self.ready, 0
            code = os.waitstatus_to_exitcode(status)
            if not self.announced:
                log(f"supervisor pid {pid} {describe(status)} before it was ready")
                return code if code > 0 else 1
            if self.stopping or code == 0:
                return 0 if code == 0 or self.stopping else code
            failures = 0 if was_ready else failures + 1
            if not was_ready and failures >= START_FAILURES_MAX:
                log(f"supervisor pid {pid} {describe(status)} before it was ready, {failures} times in a row; "
                    f"giving up")
                return 1
            delay = 0.0 if failures <= 1 else min(BACKOFF_FIRST_S * 2 ** (failures - 2), BACKOFF_MAX_S)
            if self.standby and not delay:
                log(f"supervisor pid {pid} {describe(status)}")
                self.promote_standby()
                continue
            self.kill_standby()
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
            self.spawn()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m shmlog.broker.keeper <data_dir> [broker config json]", file=sys.stderr)
        return 2
    # The supervisors it starts (posix_spawn, `python -m`) put their cwd first on sys.path: "/"
    # holds no shmlog/ package that could shadow the installed one (launcher.BROKER_CWD).
    argv = [os.path.realpath(argv[0]), *argv[1:]]
    os.chdir("/")
    return Keeper(argv).run()


if __name__ == "__main__":
    sys.exit(main())
