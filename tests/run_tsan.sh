#!/usr/bin/env bash
# Runs one tsan-label test: ABSL_DIR/lib (Abseil built with -fsanitize=thread
# by scripts/tsan-absl.sh) goes first on the library path, so every user of
# Abseil in the process, gRPC included, synchronizes through instrumented
# code. Any report fails the test (halt_on_error).
set -euo pipefail
absl_dir="$1"
shift
if [ ! -f "$absl_dir/lib/libabsl_synchronization.so" ]; then
  echo "run_tsan: no instrumented Abseil in $absl_dir;" \
    "run scripts/tsan-absl.sh first (scripts/test.sh does)" >&2
  exit 1
fi
here="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="$absl_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# ignore_noninstrumented_modules: memcpy and friends called from libraries we
# do not build (LibTorch, OpenBLAS, libvips, gRPC) are not checked; their
# threads synchronize in ways TSan cannot see. OpenBLAS computes on the
# calling thread, so tensors the model writes are not "raced" by its pool.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 ignore_noninstrumented_modules=1 suppressions=$here/tsan.supp ${TSAN_OPTIONS:-}"
export OPENBLAS_NUM_THREADS=1
exec "$@"
