"""cffi out-of-line (API mode) build of the C core in csrc/.

The cdef is the C headers themselves, preprocessed without their #includes, so the
Python binding can never drift from the structs and signatures the C code compiles.
"""
import os
import re
import subprocess

from cffi import FFI

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "csrc")
HEADERS = ("shmlog_layout.h", "shmlog_core.h")


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
    sources=[os.path.join(CSRC, "shmlog_core.c")],
    include_dirs=[CSRC],
    extra_compile_args=["-O3", "-std=gnu11", "-mcx16", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir), verbose=True)
