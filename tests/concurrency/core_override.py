"""Run the concurrency tier against another build of the C core.

`SHMLOG_TEST_CORE=/path/to/_core.abi3.so` makes that file `shmlog._native._core` (so `lib`,
the `Ring`/`Doorbell` wrappers and `_fast` all use it) in the pytest process, when loaded as a
plugin before anything imports `shmlog._native`:

    SHMLOG_TEST_CORE=... python -m pytest -p tests.concurrency.core_override tests/concurrency

and in every process the tier spawns (tests/concurrency/harness.py imports this module first).
With build_core.py it runs the tier on a copy of csrc/ with an ordering point weakened, to see
the tier fail (tests/README.md). Without the variable this module does nothing.
"""
import importlib.util
import os
import sys

MODULE = "shmlog._native._core"


def install():
    path = os.environ.get("SHMLOG_TEST_CORE")
    if not path:
        return
    loaded = sys.modules.get(MODULE)
    if loaded is not None:
        if os.path.samefile(loaded.__file__, path):
            return
        raise RuntimeError(f"SHMLOG_TEST_CORE={path}, but {MODULE} was already loaded from {loaded.__file__}: "
                           f"load this module first (python -m pytest -p tests.concurrency.core_override ...)")
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None:
        raise RuntimeError(f"SHMLOG_TEST_CORE={path} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)


def in_use():
    """The file the C core was loaded from (None if shmlog._native is not imported yet)."""
    loaded = sys.modules.get(MODULE)
    return getattr(loaded, "__file__", None)


install()
