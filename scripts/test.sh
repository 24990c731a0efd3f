#!/usr/bin/env bash
# Builds and runs every test suite: unit, golden (reference parity), the
# AddressSanitizer label and, through scripts/fuzz.sh (its own clang build in
# build-fuzz/), the fuzz label. Pass a ctest -L regex to run one label only;
# `fuzz` runs only the fuzzers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = fuzz ]; then
  exec ./scripts/fuzz.sh
fi
./scripts/build.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ $# -gt 0 ]; then
  ctest --test-dir build --output-on-failure -L "$1"
else
  ctest --test-dir build --output-on-failure
  ./scripts/fuzz.sh
fi
