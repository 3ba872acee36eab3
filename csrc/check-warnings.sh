#!/usr/bin/env bash
# Builds both native modules (the cffi core from csrc/core/, the _fast extension from csrc/fast/)
# from scratch with -Wall -Wextra -Werror into a temporary directory; the installed build is not
# touched. Exits non-zero on the first warning. CI runs it (.ci/run); see tests/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
SHMLOG_WERROR=1 python setup.py -q build_ext --force --build-temp "$out/temp" --build-lib "$out/lib"
echo "csrc: both native modules build with -Wall -Wextra -Werror"
