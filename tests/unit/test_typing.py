"""The type information shmlog ships (py.typed) holds for programs written against its API:
mypy, run as a user would run it, finds no error in typed_programs/good.py (confluent-kafka's
example calls with the imports changed to shmlog) and reports every line of
typed_programs/bad.py marked `# E`, and no other line."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "typed_programs"
MYPY_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """{program file name: {line: [messages]}} of one mypy run over both programs, checked as
    on the oldest Python shmlog supports; shmlog itself is followed silently (its own bodies
    are not what is under test)."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-version", "3.10", "--follow-imports=silent", "--no-error-summary",
         "--show-error-codes", "--cache-dir", str(cache), "good.py", "bad.py"],
        cwd=PROGRAMS, capture_output=True, text=True, timeout=MYPY_TIMEOUT_S,
        env={**os.environ, "MYPYPATH": str(REPO)})
    assert result.returncode in (0, 1), result.stderr or result.stdout   # 2: mypy itself failed
    out = {}
    for line in result.stdout.splitlines():
        m = re.match(r"^(\w+\.py):(\d+): error: (.*)$", line)
        if m:
            out.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(m.group(3))
    return out


def marked_lines(name):
    lines = (PROGRAMS / name).read_text().splitlines()
    return {i for i, line in enumerate(lines, 1) if re.search(r"#\s*E:", line)}


def test_mypy_finds_no_error_in_a_program_using_the_api_as_confluent_kafkas_examples_do(reported):
    assert reported.get("good.py", {}) == {}


def test_mypy_reports_each_type_error_against_the_api_and_nothing_else(reported):
    marked = marked_lines("bad.py")
    assert len(marked) >= 8
    assert set(reported.get("bad.py", {})) == marked, reported.get("bad.py")
