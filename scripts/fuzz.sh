#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) in build-fuzz/ with clang-14 --
# a fuzz-only tree, no LibTorch -- and runs them.
#
#   ./scripts/fuzz.sh                           the `fuzz` CTest label: each
#       target for MD_FUZZ_SECONDS (30) on its seed corpus, and once over its
#       regressions; fails on any finding
#   ./scripts/fuzz.sh long TARGET SECONDS [RUNS]
#       one target for SECONDS (or RUNS executions, whichever comes first),
#       its corpus kept in build-fuzz/long/TARGET between runs; prints the
#       executions, coverage and findings
#   ./scripts/fuzz.sh build                     build only
#
# Targets: image_decode_fuzz tokenizer_fuzz safetensors_fuzz config_fuzz
# http_request_fuzz grpc_request_fuzz.
# Environment: MD_FUZZ_BUILD_DIR (default build-fuzz), MD_FUZZ_JOBS (build
# parallelism, default nproc), CMAKE_ARGS (extra arguments to the first
# configure).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD="${MD_FUZZ_BUILD_DIR:-build-fuzz}"
TARGETS=(image_decode_fuzz tokenizer_fuzz safetensors_fuzz config_fuzz
  http_request_fuzz grpc_request_fuzz)

build() {
  if [ ! -f "$BUILD/build.ninja" ]; then
    # shellcheck disable=SC2086
    CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD" -G Ninja \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMD_FUZZ_ONLY=ON ${CMAKE_ARGS:-}
  fi
  cmake --build "$BUILD" -j "${MD_FUZZ_JOBS:-$(nproc)}" --target "${TARGETS[@]}"
}

long_run() {
  local target=$1 seconds=$2 runs=${3:--1}
  if [[ ! " ${TARGETS[*]} " == *" $target "* ]]; then
    echo "fuzz.sh: unknown target '$target' (known: ${TARGETS[*]})" >&2
    exit 2
  fi
  local dir="$BUILD/long/$target"
  local artifacts="$dir/artifacts"
  local log="$dir/last-run.log"
  mkdir -p "$dir/corpus" "$artifacts"
  local flags=(-max_total_time="$seconds" -runs="$runs" -timeout=10
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/")
  if [ -f "tests/fuzz/dicts/$target.dict" ]; then
    flags+=(-dict="tests/fuzz/dicts/$target.dict")
  fi
  touch "$dir/.start"
  echo "fuzz.sh: $target for ${seconds}s (runs: $runs), corpus $dir/corpus"
  set +e
  UBSAN_OPTIONS=print_stacktrace=1 \
    LSAN_OPTIONS="suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0" \
    "$BUILD/tests/fuzz/$target" "${flags[@]}" \
    "$dir/corpus" "tests/fuzz/corpus/$target" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  set -e

  echo
  echo "=== $target: summary ==="
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
  # libFuzzer's last progress line carries the final coverage.
  grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE '(cov|ft|corp): [^ ]+' || true
  local found
  found=$(find "$artifacts" -type f -newer "$dir/.start")
  if [ "$status" -ne 0 ] || [ -n "$found" ]; then
    echo "findings (exit status $status):"
    grep -E '(==[0-9]+==ERROR|^SUMMARY|FUZZ_CHECK failed|runtime error)' "$log" || true
    echo "${found:-no input saved}"
  else
    echo "findings: none"
  fi
  echo "log: $log"
  return "$status"
}

case "${1:-label}" in
  label)
    build
    ctest --test-dir "$BUILD" --output-on-failure -L fuzz
    ;;
  build)
    build
    ;;
  long)
    if [ $# -lt 3 ]; then
      echo "usage: $0 long TARGET SECONDS [RUNS]" >&2
      exit 2
    fi
    build
    long_run "$2" "$3" "${4:-}"
    ;;
  *)
    echo "usage: $0 [label | build | long TARGET SECONDS [RUNS]]" >&2
    exit 2
    ;;
esac
