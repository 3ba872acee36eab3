"""The broker processes' log: Python's logging, one format for the supervisor and the persister.

Each line is `2026-12-03T14:45:04.123Z INFO shmlog supervisor[1234]: message` (timestamp in UTC,
level, role and pid, message) on stderr, which `shmlog.Broker` writes to `DIR/supervisor.log` and
passes on to the embedding process's stderr from WARNING up (launcher._forward), which is
`DIR/supervisor.log` for `shmlog broker start` and the journal under systemd.
The level is the broker config `shmlog.log.level` (INFO by default); the supervisor passes it
on to the persister it starts in the environment (LEVEL_ENV)."""
import logging
import os
import sys
import time

LEVEL_ENV = "SHMLOG_LOG_LEVEL"
DEFAULT_LEVEL = "INFO"


class _Formatter(logging.Formatter):
    converter = time.gmtime

    def __init__(self, role):
        super().__init__()
        self.role = role

    def format(self, record):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return (f"{stamp}.{int(record.msecs):03d}Z {record.levelname} shmlog {self.role}[{record.process}]: "
                f"{message}")


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is now; a reader that went away never stops the broker."""

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record):
        self.stream = sys.stderr
        try:
            super().emit(record)
        except Exception:  # noqa: BLE001 - losing a log line must not take the broker down
            pass

    def handleError(self, record):
        pass


def setup(role, level=None):
    """Configure the `shmlog.broker` logger for this process (role: "supervisor", "persister");
    returns it. level: a name (DEBUG, INFO, WARNING, ERROR); None: the environment's, else INFO."""
    logger = logging.getLogger("shmlog.broker")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(_Formatter(role))
    logger.addHandler(handler)
    logger.propagate = False
    name = (level or os.environ.get(LEVEL_ENV) or DEFAULT_LEVEL).upper()
    logger.setLevel(getattr(logging, name, logging.INFO))
    return logger


def get():
    return logging.getLogger("shmlog.broker")


def exit_process(code):
    """End a broker process whose work is done and whose files are closed at once, as
    multiprocessing ends its children (os._exit after the target): what is left is the
    interpreter tearing its modules down, tens of milliseconds that every broker stop waits
    for in the persister, the supervisor and the keeper in turn."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


class RateLimited:
    """At most `per_s` lines a second of one kind; the rest are counted and the count goes
    with the next line that is written."""

    def __init__(self, per_s=10.0, window_s=1.0):
        self.per_s = per_s
        self.window_s = window_s
        self.window_start = 0.0
        self.in_window = 0
        self.quiet = 0
        self.level = logging.INFO

    def __call__(self, level, message):
        now = time.monotonic()
        if now - self.window_start >= self.window_s:
            self.window_start, self.in_window = now, 0
        if self.in_window >= self.per_s:
            self.quiet += 1
            return
        self.in_window += 1
        if self.quiet:
            message += f" ({self.quiet} more like it not logged)"
            self.quiet = 0
        self.level = level
        get().log(level, message)

    def flush(self, what):
        """Once the window is over, one line for what was left out of it (so a burst's count
        is not held until the next such event)."""
        if self.quiet and time.monotonic() - self.window_start >= self.window_s:
            get().log(self.level, f"{self.quiet} more {what} not logged (at most {self.per_s:g} a second)")
            self.quiet = 0


class Grouped:
    """Lines about many partitions that share one condition (a log dir that cannot be written,
    descriptors run out, writing works again), written as one line per condition with the count
    of partitions and a few of their names, rather than one line per partition: 10,000
    partitions in trouble at once must not make 10,000 lines."""

    EXAMPLES = 5

    def __init__(self):
        self.pending = {}   # condition -> [level, first partition's line, [partition names]]

    def add(self, condition, where, message, level=logging.WARNING):
        entry = self.pending.setdefault(condition, [level, message, []])
        entry[2].append(where)

    def flush(self):
        pending, self.pending = self.pending, {}
        for level, message, wheres in pending.values():
            if len(wheres) > 1:
                names = ", ".join(wheres[:self.EXAMPLES]) + (", ..." if len(wheres) > self.EXAMPLES else "")
                message += f" [the same for {len(wheres)} partitions: {names}]"
            get().log(level, message)
