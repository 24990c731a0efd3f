#!/usr/bin/python3
"""How precise detect's box centres must be for issue 14's detect target:
for each spread of centre error (a normal error of standard deviation
sigma, in fractions of the image, on x and y alike; the box's size exact),
the share of the scenes' shapes whose box would still match at IoU 0.5,
over all scenes and over those of aspect 1.8 or more, with the R² of cx
such an error means (1 - sigma² / var(cx)): the R² the feature-probe
readouts can be held against.

usage: tools/train/centre_budget.py TRUTH_JSON [DRAWS]
  TRUTH_JSON: what `moondream-bench scenes --out=DIR` writes (DIR/truth.json)
  DRAWS: error draws per shape (default 5); the draws are seeded (1).
"""

import json
import random
import statistics
import sys

SIGMAS = [0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05]
GRID = 27  # the image prefix's cells per side
WIDE = 1.8


def iou_of_shifted(w, h, dx, dy):
    """IoU of a w x h box with itself shifted by (dx, dy)."""
    ix, iy = max(0.0, w - abs(dx)), max(0.0, h - abs(dy))
    shared = ix * iy
    return shared / (2 * w * h - shared)


def shapes_of(truth):
    """(box, wide) per shape; box in the image's fractions."""
    out = []
    for scene in truth["scenes"]:
        aspect = (max(scene["width"], scene["height"]) /
                  min(scene["width"], scene["height"]))
        for shape in scene["shapes"]:
            out.append((shape["box"], aspect >= WIDE))
    return out


def budget(shapes, draws, seed=1):
    """[(sigma, r2_cx, share_matched, share_matched_wide)]."""
    rng = random.Random(seed)
    centres = [(b["x_min"] + b["x_max"]) / 2 for b, _ in shapes]
    variance = statistics.pvariance(centres)
    rows = []
    for sigma in SIGMAS:
        matched = total = matched_wide = total_wide = 0
        for box, wide in shapes:
            w, h = box["x_max"] - box["x_min"], box["y_max"] - box["y_min"]
            for _ in range(draws):
                ok = iou_of_shifted(w, h, rng.gauss(0, sigma),
                                    rng.gauss(0, sigma)) >= 0.5
                matched += ok
                total += 1
                if wide:
                    matched_wide += ok
                    total_wide += 1
        rows.append((sigma, 1 - sigma * sigma / variance, matched / total,
                     matched_wide / total_wide if total_wide else float("nan")))
    return rows


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    with open(argv[1]) as f:
        shapes = shapes_of(json.load(f))
    if len(shapes) < 2:
        sys.exit(f"{argv[1]}: fewer than two shapes")
    draws = int(argv[2]) if len(argv) == 3 else 5
    print(f"{len(shapes)} shapes; a box matches at IoU >= 0.5 when its centre "
          "is off by a normal error of sigma on x and y")
    print(f"{'sigma':>8} {'cells':>6} {'R2 cx':>7} {'matched':>8} "
          f"{'aspect>=1.8':>12}")
    for sigma, r2, share, wide in budget(shapes, draws):
        print(f"{sigma:8.4f} {sigma * GRID:6.2f} {r2:7.3f} {share:8.3f} "
              f"{wide:12.3f}")


if __name__ == "__main__":
    main(sys.argv)
