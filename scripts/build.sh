#!/usr/bin/env bash
# Configures build/ once (Ninja, RelWithDebInfo) and builds the given targets
# (default: everything). CMAKE_ARGS in the environment go to the first
# configure, e.g. CMAKE_ARGS="-DMD_BUILD_TESTS=OFF".
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  # shellcheck disable=SC2086
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-}
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j "$(nproc)" "${targets[@]}"
