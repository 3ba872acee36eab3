"""Build the C core (the cffi module shmlog._native._core) somewhere else, with extra flags.

    python -m tests.concurrency.build_core OUT_DIR [--csrc DIR] [--cflags "..."] [--ldflags "..."]

prints the path of the built module; run the tier on it with SHMLOG_TEST_CORE=<that path>
(see core_override.py). It reuses the project's own build description
(shmlog/_native/_ffi_build.py: its cdef, sources, include dirs and flags), with every path
under csrc/ moved to --csrc (default: the real csrc/) and the extra flags appended, so the
module is the one `pip install` builds but for those. Built from a copy of csrc/ with an
ordering point weakened, it shows which tests notice (tests/README.md, "Can these tests
fail?"). The project's own csrc/ and installed module are never touched.
"""
import argparse
import os
import shlex
import sys

from cffi import FFI


def build(out_dir, csrc=None, cflags=(), ldflags=()):
    from shmlog._native import _ffi_build as project

    real = os.path.realpath(project.CSRC)
    csrc = os.path.realpath(csrc or real)

    def moved(path):
        path = os.path.realpath(path)
        if path == real or path.startswith(real + os.sep):
            return os.path.join(csrc, os.path.relpath(path, real))
        return path

    project.CSRC = csrc  # the cdef is read from the headers of the csrc being built
    ffi = FFI()
    ffi.cdef(project._cdef())
    module, source, _, kwds = project.ffibuilder._assigned_source
    kwds = dict(kwds)
    kwds["sources"] = [moved(p) for p in kwds.get("sources", [])]
    kwds["include_dirs"] = [moved(p) for p in kwds.get("include_dirs", [])]
    kwds["depends"] = [moved(p) for p in kwds.get("depends", [])]
    kwds["extra_compile_args"] = list(kwds.get("extra_compile_args", [])) + list(cflags)
    kwds["extra_link_args"] = list(kwds.get("extra_link_args", [])) + list(ldflags)
    ffi.set_source(module, source, **kwds)
    os.makedirs(out_dir, exist_ok=True)
    return ffi.compile(tmpdir=out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--csrc", help="a directory laid out as csrc/ (default: the project's)")
    parser.add_argument("--cflags", default="", help="extra compiler flags")
    parser.add_argument("--ldflags", default="", help="extra linker flags")
    args = parser.parse_args(argv)
    path = build(args.out_dir, args.csrc, shlex.split(args.cflags), shlex.split(args.ldflags))
    print(os.path.realpath(path))


if __name__ == "__main__":
    sys.exit(main())
