"""cffi out-of-line (API mode) build of the C core in csrc/core/.

The cdef is the public C headers themselves (csrc/shmlog_layout.h, csrc/shmlog_core.h),
preprocessed without their #includes, so the Python binding can never drift from the structs
and signatures the C code compiles.

`python shmlog/_native/_ffi_build.py --werror` compiles the core with warnings as errors in a
temporary directory (a check; without --werror it builds in place). `SHMLOG_WERROR=1` in the
environment makes warnings errors for `pip install`/setup.py; csrc/check-warnings.sh checks both
native modules that way.
"""
import glob
import os
import re
import subprocess
import sys

from cffi import FFI

CSRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "csrc"))
HEADERS = ("shmlog_layout.h", "shmlog_core.h")
SOURCES = sorted(glob.glob(os.path.join(CSRC, "core", "*.c")))
WARNINGS = ["-Wall", "-Wextra"]


def strict():
    """Warnings are errors: SHMLOG_WERROR=1, or --werror on this script's command line."""
    return os.environ.get("SHMLOG_WERROR", "") not in ("", "0") or "--werror" in sys.argv


def _header_text():
    return "\n".join(open(os.path.join(CSRC, name)).read() for name in HEADERS)


def _cdef():
    text = re.sub(r"^#include.*$", "", _header_text(), flags=re.M)
    expanded = subprocess.run(["cc", "-E", "-P", "-x", "c", "-"], input=text, text=True,
                              capture_output=True, check=True).stdout
    expanded = expanded.replace("_Alignas(16) ", "")
    constants = re.findall(r"^#define (SHMLOG_[A-Z0-9_]+) ", text, flags=re.M)
    guards = {"SHMLOG_LAYOUT_H", "SHMLOG_CORE_H"}
    return expanded + "\n" + "\n".join(f"#define {name} ..." for name in constants if name not in guards)


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "shmlog._native._core",
    '#include "shmlog_core.h"',
    sources=SOURCES,
    depends=sorted(glob.glob(os.path.join(CSRC, "*.h")) + glob.glob(os.path.join(CSRC, "core", "*.h"))),
    include_dirs=[CSRC],
    extra_compile_args=["-O3", "-std=gnu11", "-mcx16"] + WARNINGS +
                       (["-Werror"] if strict() else []),
)

if __name__ == "__main__":
    if "--werror" in sys.argv:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            ffibuilder.compile(tmpdir=tmp, verbose=True)
    else:
        ffibuilder.compile(tmpdir=os.path.dirname(CSRC), verbose=True)
