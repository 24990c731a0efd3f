#!/usr/bin/env bash
# Builds and runs every test suite: unit, golden (reference parity) and the
# AddressSanitizer label. Pass a ctest -L regex to run one label only.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ $# -gt 0 ]; then
  ctest --test-dir build --output-on-failure -L "$1"
else
  ctest --test-dir build --output-on-failure
fi
