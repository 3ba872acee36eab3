"""The broker processes' log format and the rate limit on client attached/lost lines
(shmlog/broker/logs.py)."""
import logging
import re

from shmlog.broker import logs


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


def test_the_format_has_utc_time_level_role_and_pid(capsys):
    logs.setup("persister", "INFO").info("started")
    err = capsys.readouterr().err
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO shmlog persister\[\d+\]: started\n", err), err


def test_the_level_leaves_less_severe_lines_out(capsys, monkeypatch):
    monkeypatch.setenv(logs.LEVEL_ENV, "WARNING")
    logger = logs.setup("persister")   # from the environment, as the supervisor passes it on
    logger.info("quiet")
    logger.warning("loud")
    err = capsys.readouterr().err
    assert "quiet" not in err and "WARNING shmlog persister[" in err and "loud" in err


def test_a_burst_past_the_limit_is_counted_and_reported_once_the_window_is_over(monkeypatch):
    logger = logs.setup("supervisor", "INFO")
    lines = Lines()
    logger.addHandler(lines)
    clock = [100.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    limited = logs.RateLimited(per_s=2)
    for i in range(5):
        limited(logging.INFO, f"client {i} attached")
    limited.flush("client lines")          # the window is not over yet: nothing
    assert [m for _, m in lines.lines] == ["client 0 attached", "client 1 attached"]
    clock[0] += 1.0
    limited.flush("client lines")
    assert lines.lines[-1] == ("INFO", "3 more client lines not logged (at most 2 a second)")
    limited(logging.INFO, "client 5 attached")
    assert lines.lines[-1] == ("INFO", "client 5 attached")


def test_one_condition_of_many_partitions_is_one_line_with_their_count_and_a_few_names():
    logger = logs.setup("persister", "INFO")
    lines = Lines()
    logger.addHandler(lines)
    grouped = logs.Grouped()
    for p in range(120):
        grouped.add(("open", "OSError", 24), f"t-{p}", f"t-{p}: cannot write: Too many open files")
    grouped.add(("open", "OSError", 28), "u-0", "u-0: cannot write: No space left on device")
    grouped.flush()
    assert lines.lines == [
        ("WARNING", "t-0: cannot write: Too many open files "
                    "[the same for 120 partitions: t-0, t-1, t-2, t-3, t-4, ...]"),
        ("WARNING", "u-0: cannot write: No space left on device")]
    grouped.flush()
    assert len(lines.lines) == 2
