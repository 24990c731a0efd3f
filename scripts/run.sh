#!/usr/bin/env bash
# Builds, then runs moondream-cli on the default model (the tiny random test
# model: its answers are meaningless; see README "Real weights").
#   ./scripts/run.sh                                 # caption a sample image
#   ./scripts/run.sh query --image=x.jpg --question="What is this?" --model=DIR
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh moondream-cli >/dev/null
if [ $# -eq 0 ]; then
  set -- caption --image=tests/data/golden/images/rgb_shapes_1000x700.png --length=short
fi
exec ./build/tools/moondream-cli "$@"
