#!/usr/bin/env bash
# Builds, then runs moondream-server on the default model (models/scenes-demo:
# a tiny Moondream trained on synthetic scenes of coloured shapes, not
# Moondream's weights; see README "Real weights"). Flags go to the server:
#   ./scripts/run.sh                                  # gRPC :50051, HTTP :8080, metrics :9090
#   ./scripts/run.sh --model=DIR --dtype=bf16 --slots=16
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh moondream-server >/dev/null
cat >&2 <<'USAGE'
Try it from another terminal:
  curl -s localhost:8080/v1/query -H 'Content-Type: application/json' -d \
    "{\"image_url\":\"data:image/png;base64,$(base64 -w0 models/scenes-demo/examples/scene_00000.png)\",\"question\":\"What color is the circle?\"}"
  curl -s localhost:9090/metrics | grep moondream_
Stop with Ctrl-C (or SIGTERM): in-flight requests finish first.
USAGE
exec ./build/service/moondream-server "$@"
