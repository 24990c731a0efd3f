#!/usr/bin/env bash
# The load-test scenarios (tools/bench/loadtest.py) against a real server on
# the moondream 0.5B shapes with random bf16 weights, written once by
# `moondream-bench make-model`. Writes a markdown report with plots.
#
#   scripts/loadtest.sh [--quick] [--out DIR]
#
# Full run: about 20 minutes on 2 cores; report in docs/loadtest/.
# --quick: under 3 minutes once built; report in build/loadtest-quick/.
# MODEL_DIR overrides where the random model lives (default:
# build/models/moondream-0.5b-random-bf16, 1.3 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --out) out="$2"; shift ;;
    --out=*) out="${1#--out=}" ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "loadtest: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$out" ]; then
  if [ -n "$quick" ]; then out=build/loadtest-quick; else out=docs/loadtest; fi
fi
./scripts/build.sh moondream-server moondream-bench >/dev/null
model="${MODEL_DIR:-build/models/moondream-0.5b-random-bf16}"
if [ ! -f "$model/config.json" ]; then
  echo "loadtest: writing the random 0.5B model to $model (once)"
  build/tools/moondream-bench make-model --config=moondream-0.5b --dtype=bf16 \
    --out="$model"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
exec /usr/bin/python3 tools/bench/loadtest.py --server build/service/moondream-server \
  --bench build/tools/moondream-bench --model "$model" --out "$out" $quick
