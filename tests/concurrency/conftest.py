"""Fixtures of the concurrency tier: shared-memory names of its own, and nothing left behind."""
import itertools
import multiprocessing
import os

import pytest

from shmlog._native.shm import SHM_DIR, unlink
from tests.concurrency import core_override

_names = itertools.count()


def pytest_report_header(config):
    if os.environ.get("SHMLOG_TEST_CORE"):
        return f"shmlog C core under test: {core_override.in_use()} (SHMLOG_TEST_CORE)"
    return None


@pytest.fixture(autouse=True)
def the_core_under_test_is_the_one_asked_for():
    wanted = os.environ.get("SHMLOG_TEST_CORE")
    if wanted:
        assert core_override.in_use() and os.path.samefile(core_override.in_use(), wanted), (
            f"SHMLOG_TEST_CORE={wanted} but the C core came from {core_override.in_use()}: "
            f"run pytest with -p tests.concurrency.core_override")


@pytest.fixture
def shm_name():
    """Makes shared-memory names for this test (outside the `shmlog.` namespace, so no
    broker or cleanup command of another test ever touches them); unlinks them afterwards
    and fails the test if any is still in /dev/shm."""
    made = []

    def make(kind):
        name = f"/shmlogconc.{os.getpid()}.{next(_names)}.{kind}"
        unlink(name)
        made.append(name)
        return name

    yield make
    for name in made:
        unlink(name)
    left = [name for name in made if os.path.exists(SHM_DIR + name)]
    assert not left, f"shared memory left behind: {left}"


@pytest.fixture(autouse=True)
def no_process_left_behind():
    yield
    left = multiprocessing.active_children()
    for child in left:
        child.kill()
        child.join(5)
    assert not left, f"processes left behind: {left}"
