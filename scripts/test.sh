#!/usr/bin/env bash
# Builds and runs every test suite: unit, golden (reference parity), the
# AddressSanitizer and ThreadSanitizer labels and, through scripts/fuzz.sh
# (its own clang build in build-fuzz/), the fuzz label. Pass a ctest -L regex to run one label only;
# `fuzz` runs only the fuzzers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = fuzz ]; then
  exec ./scripts/fuzz.sh
fi
./scripts/build.sh
# The tsan label loads an Abseil built with ThreadSanitizer (once, cached).
if grep -q '^MD_ENABLE_TSAN_TESTS:BOOL=ON' build/CMakeCache.txt; then
  ./scripts/tsan-absl.sh "$(sed -n 's/^MD_TSAN_ABSL_DIR:PATH=//p' build/CMakeCache.txt)"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ $# -gt 0 ]; then
  ctest --test-dir build --output-on-failure -L "$1"
else
  ctest --test-dir build --output-on-failure
  ./scripts/fuzz.sh
fi
