#!/usr/bin/env bash
# A fresh text decoder and region head trained through the whole text
# curriculum in one run, on the shipped model's vision tower, with every
# flag the staged recipe (recipe.sh) found necessary on from its first step;
# then a second stage on fresh scenes at half the learning rate. With
# MD_EXTRA_FLAGS=--focus-coverage and 6 layers it is the shipped model's
# recipe (tools/train/README.md, "2026-12-07, last").
#
#   tools/train/recipe_fresh.sh [OUT] [TEXT_LAYERS]   # default ~/scenes-fresh, 6
#   moondream-bench scenes-eval --model=OUT/fresh/model --count=200 --seed=5
#
# Resumable: rerun it after a stop (a finished stage leaves a marker file).
# MD_EXTRA_FLAGS="--flag ..." adds training flags to every stage (the
# variants of "2026-12-07, later" in the README); MD_FRESH_ONLY=1 stops
# after the first stage; MD_MORE_STEPS=N shortens the second (default 8000)
# to a cosine of N steps, one that fits a session on a 2-core VM.
# MD_MORE_SEEDS="2000000 3000000 ..." runs the second stage once per train
# seed (the first in OUT/more, the others in OUT/more-SEED), one after the
# other, and writes the mean of their models to OUT/mean (the shipped
# model's averaging, recipe.sh's "soup" steps).
# One thread per stage; ~1.1-1.4 s/step at 6 text layers on a 2-core VM.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-$HOME/scenes-fresh}"
LAYERS="${2:-6}"
BENCH="${MD_BENCH:-build/tools/moondream-bench}"
LOG="$OUT/recipe.log"
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"

if [ ! -f "$OUT/config.json" ]; then
  sed "s/\"n_layers\": 4/\"n_layers\": $LAYERS/" models/scenes-demo/config.json \
    > "$OUT/config.json"
  grep -q "\"n_layers\": $LAYERS" "$OUT/config.json"
fi
FLAGS="--config=$OUT/config.json --vision-lr-scale=0 --head-patch-weight=1 \
  --row-box-weight=1 --center-region-head --fourier-bins --clip=1000 \
  --warmup=50 --bin-sigma=16 --eval-every=500 --readout-probe \
  --focus-weight=4 --focus-spread --focus-sink --balance-stops \
  --position-weight=1 --row-norm-weight=10 --centre-gradient \
  --row-extent-weight=1 --row-centre-weight=1 --threads=1 \
  ${MD_EXTRA_FLAGS:-}"

# stage NAME DIR START FLAGS...: one `train` call, skipped once done; START
# is the flag a fresh directory starts from, replaced by --resume once the
# directory has a checkpoint.
stage() {
  local name="$1" dir="$2" start="$3"
  shift 3
  [ -f "$dir/done.$name" ] && return 0
  echo "== stage $name: $*" | tee -a "$LOG"
  mkdir -p "$dir"
  [ -f "$dir/checkpoint.pt" ] && start=--resume
  "$BENCH" train --out="$dir" $FLAGS "$start" "$@" >> "$LOG" 2>&1
  touch "$dir/done.$name"
}

# 1. One cosine over 5,000 steps at 1e-3: one shape to step 300, two to
#    1,500, then all four (--stop-after ends each part; the resume changes
#    only --max-shapes).
TOWER="--init-vision-from=models/scenes-demo"
stage one "$OUT/fresh" "$TOWER" --lr=1e-3 --steps=5000 --max-shapes=1 \
  --stop-after=300
stage two "$OUT/fresh" "$TOWER" --lr=1e-3 --steps=5000 --max-shapes=2 \
  --stop-after=1500
stage four "$OUT/fresh" "$TOWER" --lr=1e-3 --steps=5000 --max-shapes=4
if [ -n "${MD_FRESH_ONLY:-}" ]; then
  echo "done: $OUT/fresh/model" | tee -a "$LOG"
  exit 0
fi
# 2. The same losses on scenes stage 1 never saw, a fresh cosine from 5e-4;
#    once per train seed, all from stage 1's model, so that they share its
#    basin and their mean answers better than each.
read -r -a SEEDS <<< "${MD_MORE_SEEDS:-2000000}"
MODELS=()
for seed in "${SEEDS[@]}"; do
  dir="$OUT/more"
  [ "$seed" = "${SEEDS[0]}" ] || dir="$OUT/more-$seed"
  stage more "$dir" "--init-from=$OUT/fresh/model" --lr=5e-4 \
    --steps="${MD_MORE_STEPS:-8000}" --max-shapes=4 --train-seed="$seed"
  echo "done: $dir/model" | tee -a "$LOG"
  MODELS+=("$dir/model")
done
if [ "${#MODELS[@]}" -gt 1 ]; then
  python3 tools/train/average_weights.py "$OUT/mean" "${MODELS[@]}" \
    | tee -a "$LOG"
fi
