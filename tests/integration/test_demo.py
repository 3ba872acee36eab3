"""`python -m shmlog.demo`, the README's first command, run as a real subprocess with small
numbers: it must pass its own check, report throughput and light-load latency in sensible
units, leave nothing behind, and document every option in --help. No timed assertions."""
import os
import re
import subprocess
import sys
from pathlib import Path

from shmlog import demo
from shmlog._native import shm
from tests.conftest import broker_processes

REPO = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_S = 120
CHECK_OK = "check: OK - no loss: True, per-key order kept: True, every input offset committed: True"
DURATION = r"[\d,]+(\.\d{1,2})? (µs|us|ms|s)"  # demo.duration(): 45.2 µs, 410.3 ms, 1.52 s


def run_demo(*args):
    return subprocess.run([sys.executable, "-m", "shmlog.demo", *map(str, args)], capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT_S, cwd=REPO, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def test_demo_passes_its_check_and_reports_throughput_and_light_load_latency():
    result = run_demo("--records", 5000, "--paced-records", 500)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert CHECK_OK in out
    assert re.search(r"^throughput at full load: [\d,]+ trades/s end to end", out, re.M), out
    assert re.search(rf"^  under full load records queue behind the backlog: produce\(\) to the worker "
                     rf"p50 {DURATION}, p99 {DURATION}$", out, re.M), out
    assert re.search(rf"^latency at light load \(paced 2,000 trades/s\): p50 {DURATION}, p99 {DURATION} - "
                     rf"produce\(\) to the worker's function, across processes$", out, re.M), out
    assert re.search(r"\(500 trades\)$", out, re.M), out
    assert not re.search(r"\d,\d{3}(\.\d)? (µs|us)", out), "no thousands of microseconds: ms instead"
    data_dir = re.search(r"^broker up at shm://(\S+):", out, re.M).group(1)
    assert not os.path.exists(data_dir), "the demo's temporary data dir is removed"
    assert shm.names_in_namespace(shm.namespace(data_dir)) == []
    assert not broker_processes(data_dir)


def test_help_names_the_module_and_every_option_with_its_help():
    result = run_demo("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m shmlog.demo ")
    options = [a for a in demo.build_parser()._actions if a.option_strings and "--help" not in a.option_strings]
    assert {o.option_strings[0] for o in options} >= {"--records", "--producers", "--workers", "--partitions",
                                                      "--value-bytes", "--paced-records", "--paced-rate"}
    for option in options:
        assert option.help, f"{option.option_strings[0]} has no help"
        shown = re.search(rf"^  {re.escape(option.option_strings[0])} \S+ +(\S.*)$", result.stdout, re.M)
        assert shown, f"{option.option_strings[0]} is not in --help:\n{result.stdout}"


def test_a_bad_option_value_is_a_usage_error_naming_it():
    result = run_demo("--records", 0)
    assert result.returncode == 2
    assert "--records" in result.stderr and "must be at least 1" in result.stderr
    assert result.stdout == ""
