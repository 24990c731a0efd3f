#!/usr/bin/env bash
# Reproduces the shipped demo model (models/scenes-demo) from scratch: every
# stage of its training, in order (~9.5 hours on a 2-core VM).
# Resumable: rerun it after a stop and it goes on from the last checkpoint
# (a stage that finished leaves a marker file and is skipped).
#
#   tools/train/recipe.sh [OUT]     # OUT: default ~/scenes-recipe
#   tools/train/ship_model.py OUT/soup1   # evaluate it and ship it
#
# Each stage is deterministic for its flags and thread count; a stopped and
# resumed stage goes on exactly as one that never stopped (train_test). The
# stages and why each exists: tools/train/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-$HOME/scenes-recipe}"
BENCH="${MD_BENCH:-build/tools/moondream-bench}"
LOG="$OUT/recipe.log"
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"

# The default scene model with 2 vision layers instead of 4.
if [ ! -f "$OUT/config.json" ]; then
  "$BENCH" train --out="$OUT/cfg" --steps=0 --eval-every=0 >/dev/null
  sed 's/"enc_n_layers": 4/"enc_n_layers": 2/' "$OUT/cfg/model/config.json" \
    > "$OUT/config.json"
  grep -q '"enc_n_layers": 2' "$OUT/config.json"
fi
C="--config=$OUT/config.json"

# stage NAME DIR FLAGS...: one `train` call, skipped once done. A stage that
# starts a directory anew may name its start (--init-vision-from); later
# stages of the same directory resume it.
stage() {
  local name="$1" dir="$2"
  shift 2
  [ -f "$dir/done.$name" ] && return 0
  echo "== stage $name: $*" | tee -a "$LOG"
  local start=()
  if [ -f "$dir/checkpoint.pt" ]; then
    start=(--resume)
  fi
  "$BENCH" train --out="$dir" $C "${start[@]}" "$@" >> "$LOG" 2>&1
  touch "$dir/done.$name"
}

# copy FROM TO: a later stage goes on from FROM's checkpoint in its own
# directory (so each stage's result stays).
copy() {
  [ -f "$2/checkpoint.pt" ] && return 0
  mkdir -p "$2"
  cp "$1/checkpoint.pt" "$2/checkpoint.pt"
}

VISION="--vision-only --scenes-per-step=8 --lr=1e-3 --warmup=50 --clip=1000 --eval-every=250 --threads=2"
# 1. The vision tower alone learns which kind of shape covers each patch.
stage v1 "$OUT/v1" $VISION --patch-kind-weight=1 --sincos-positions --steps=1500
# 2. ... and each shape cell's colour and box, on top.
if [ ! -f "$OUT/v3/checkpoint.pt" ]; then
  V3_START=(--init-vision-from="$OUT/v1/checkpoint.pt")
else
  V3_START=()
fi
stage v3 "$OUT/v3" $VISION --patch-kind-weight=1 --patch-box-weight=1 \
  --patch-colour-weight=1 --steps=1000 "${V3_START[@]}"

# 3. The text decoder and region head on the frozen tower.
S0="--vision-lr-scale=0 --head-patch-weight=1 --row-box-weight=1 --center-region-head --fourier-bins --clip=1000"
S1="--warmup=50 --bin-sigma=16 --eval-every=200 --readout-probe"
S="$S0 --lr=1e-3 $S1"
if [ ! -f "$OUT/s5/checkpoint.pt" ]; then
  S5_START=(--init-vision-from="$OUT/v3/checkpoint.pt")
else
  S5_START=()
fi
stage s5a "$OUT/s5" $S --focus-weight=1 --steps=3500 --max-shapes=1 \
  --stop-after=300 --threads=2 "${S5_START[@]}"
stage s5b "$OUT/s5" $S --focus-weight=1 --steps=3500 --max-shapes=2 \
  --stop-after=1200 --threads=2
# 4. The focus head told more firmly where to look (steps 1,200-2,200 ran on
#    one thread, which the determinism keeps).
copy "$OUT/s5" "$OUT/s6"
stage s6a "$OUT/s6" $S --focus-weight=4 --steps=3500 --max-shapes=2 \
  --stop-after=2200 --threads=1
stage s6b "$OUT/s6" $S --focus-weight=4 --steps=3500 --max-shapes=2 --threads=2
# 5. Stop rows balanced: detect and point answer.
copy "$OUT/s6" "$OUT/s9"
stage s9 "$OUT/s9" $S --focus-weight=4 --max-shapes=2 --balance-stops \
  --steps=4500 --threads=2
# 6. Each image token's own position read from the focus head's values.
copy "$OUT/s9" "$OUT/p1"
stage p1 "$OUT/p1" $S --focus-weight=4 --max-shapes=2 --balance-stops \
  --position-weight=1 --steps=5500 --stop-after=4900 --threads=2
# 7. Scenes of up to four shapes (counts and captions of 3 and 4).
copy "$OUT/p1" "$OUT/p2"
stage p2 "$OUT/p2" $S --focus-weight=4 --max-shapes=4 --balance-stops \
  --position-weight=1 --steps=7500 --stop-after=5500 --threads=2
# 8. The focus spread evenly over the shape's cells.
copy "$OUT/p2" "$OUT/final"
stage final "$OUT/final" $S --focus-weight=4 --focus-spread --max-shapes=4 \
  --balance-stops --position-weight=1 --steps=7500 --threads=2
# 9. The rows that decide how many (a count, a caption's separators and end,
#    a region's stop) attend to bos and the shapes left (--focus-sink), at
#    half the learning rate; the run that found the rows' massive common part
#    went on to 10,790, the recipe stops where the next stage took it over.
copy "$OUT/final" "$OUT/sink"
stage sink "$OUT/sink" $S0 --lr=5e-4 $S1 --focus-weight=4 --focus-spread \
  --focus-sink --max-shapes=4 --balance-stops --position-weight=1 \
  --steps=13500 --stop-after=10700 --threads=2
# 10. The last block's MLP starts afresh (it made the common part), and the
#     common part is kept from coming back (--centre-gradient, and a row-norm
#     penalty of weight 10). --reinit only at this stage's first start: while
#     its checkpoint is still the one copied in.
copy "$OUT/sink" "$OUT/norm"
NORM_START=()
if cmp -s "$OUT/sink/checkpoint.pt" "$OUT/norm/checkpoint.pt"; then
  NORM_START=(--reinit=model.text.blocks.3.mlp)
fi
NORM="--focus-weight=4 --focus-spread --focus-sink --max-shapes=4 \
  --balance-stops --position-weight=1 --row-norm-weight=10 --centre-gradient"
stage norm "$OUT/norm" $S $NORM --steps=16000 --threads=2 "${NORM_START[@]}"
# 11. The same stage longer (its held-out curve still fell at 16,000): a new
#     cosine from 1.95e-4 at 16,000 ("norm" ended at 1e-4) down to 6e-5.
copy "$OUT/norm" "$OUT/long"
stage long "$OUT/long" $S0 --lr=6e-4 $S1 $NORM --steps=24000 --threads=2
# 12. Still the same losses, 4,500 steps more, from stage 11's written model
#     (--init-from: the machine that trained 11 was gone with its checkpoint):
#     a fresh cosine from 1.5e-4, fresh AdamW, and the probes off (fresh
#     random probes would only push noise into the decoder at this rate).
MORE="--vision-lr-scale=0 --center-region-head --fourier-bins --clip=1000 \
  --lr=1.5e-4 --warmup=50 --bin-sigma=16 --eval-every=1000 --readout-probe \
  --focus-weight=4 --focus-spread --focus-sink --max-shapes=4 \
  --balance-stops --row-norm-weight=10 --centre-gradient"
stage more "$OUT/more" $MORE --steps=4500 --threads=2 \
  --init-from="$OUT/long/model"
# 13. The same once more ("more2"), from stage 12's written model: held-out
#     loss still fell at the end of 12 (1.10 at 1,000 to 0.92 at 4,500).
stage more2 "$OUT/more2" $MORE --steps=4500 --threads=2 \
  --init-from="$OUT/more/model"
# 14. The vision tower alone again, at full size (not shrunk to one crop),
#     also asked for each shape cell's extent (--patch-extent-weight): the
#     features held the shapes' centres but little of their width and height.
VE="--vision-only --vision-only-side=768 --patch-kind-weight=1 \
  --patch-box-weight=1 --patch-extent-weight=1 --patch-colour-weight=1 \
  --scenes-per-step=8 --lr=5e-4 --warmup=50 --clip=1000 --eval-every=250"
stage ve "$OUT/ve" $VE --steps=1000 --threads=2 --init-from="$OUT/more2/model"
# 15. The decoder on that tower ("more2"'s losses) with the size and
#     coordinate rows read by zero-initialised linear probes
#     (--row-extent-weight, --row-centre-weight), one thread; then 1,500
#     steps more twice, each from the model written before; then two
#     3,000-step stages from rows3's model, the second with the centre probe
#     weighted 3.
ROWS="--vision-lr-scale=0 --center-region-head --fourier-bins --clip=1000 \
  --lr=1.5e-4 --warmup=50 --bin-sigma=16 --eval-every=500 --readout-probe \
  --focus-weight=4 --focus-spread --focus-sink --max-shapes=4 \
  --balance-stops --row-norm-weight=10 --centre-gradient \
  --row-extent-weight=1 --threads=1"
stage rows "$OUT/rows" $ROWS --row-centre-weight=1 --steps=3500 \
  --init-from="$OUT/ve/model"
stage rows2 "$OUT/rows2" $ROWS --row-centre-weight=1 --steps=1500 \
  --init-from="$OUT/rows/model"
stage rows3 "$OUT/rows3" $ROWS --row-centre-weight=1 --steps=1500 \
  --init-from="$OUT/rows2/model"
stage rows4 "$OUT/rows4" $ROWS --row-centre-weight=1 --steps=3000 \
  --init-from="$OUT/rows3/model"
stage rows4c "$OUT/rows4c" $ROWS --row-centre-weight=3 --steps=3000 \
  --init-from="$OUT/rows3/model"
# 16. The mean of stage 15's five models (each alone answers boxes worse
#     than their mean).
tools/train/average_weights.py "$OUT/soup" "$OUT/rows/model" \
  "$OUT/rows2/model" "$OUT/rows3/model" "$OUT/rows4/model" \
  "$OUT/rows4c/model" | tee -a "$LOG"
# 17. From that mean, two 1,500-step stages on scenes no stage has seen
#     (--train-seed; every stage before starts at the same scene 0), and the
#     mean of the three: the shipped weights.
FRESH="$ROWS --row-centre-weight=1 --steps=1500"
stage soup1a "$OUT/soup1a" $FRESH --train-seed=2000000 --init-from="$OUT/soup"
stage soup1b "$OUT/soup1b" $FRESH --train-seed=3000000 --init-from="$OUT/soup"
tools/train/average_weights.py "$OUT/soup1" "$OUT/soup" "$OUT/soup1a/model" \
  "$OUT/soup1b/model" | tee -a "$LOG"
echo "done: $OUT/soup1 (tools/train/ship_model.py $OUT/soup1)"
