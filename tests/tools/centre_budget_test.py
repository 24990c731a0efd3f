#!/usr/bin/python3
"""tools/train/centre_budget.py: the share of boxes still matched at IoU 0.5
under a centre error, on hand-made shapes whose answer is known.

usage: centre_budget_test.py SOURCE_DIR
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
from e2e_support import FAILED, PASSED, check  # noqa: E402

SCRIPT = os.path.join(sys.argv[1], "tools", "train", "centre_budget.py")


def load():
    spec = importlib.util.spec_from_file_location("centre_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scene(width, height, boxes):
    return {"width": width, "height": height,
            "shapes": [{"box": {"x_min": x0, "y_min": y0, "x_max": x1,
                                "y_max": y1}} for x0, y0, x1, y1 in boxes]}


def main():
    cb = load()
    # A box shifted by a third of its width on one axis: IoU exactly 0.5.
    check("a third of the width off is IoU 0.5",
          abs(cb.iou_of_shifted(0.3, 0.2, 0.1, 0) - 0.5) < 1e-12)
    check("no overlap is IoU 0", cb.iou_of_shifted(0.1, 0.1, 0.2, 0) == 0)

    # Large square boxes in a square image, small ones in a 3:1 image.
    truth = {"scenes": [scene(600, 600, [(0.1, 0.1, 0.4, 0.4),
                                         (0.6, 0.6, 0.9, 0.9)]),
                        scene(768, 256, [(0.1, 0.2, 0.15, 0.35),
                                         (0.8, 0.5, 0.85, 0.65)])]}
    shapes = cb.shapes_of(truth)
    check("every shape, wide where the image is",
          [wide for _, wide in shapes] == [False, False, True, True])
    rows = cb.budget(shapes, draws=400)
    shares = [share for _, _, share, _ in rows]
    wide = [w for _, _, _, w in rows]
    # sigma 0.005 is a tenth of the smallest box (0.05 wide): 3.3 sigma.
    check("a small error keeps nearly every box", shares[0] > 0.99,
          str(rows[0]))
    check("more error, fewer boxes matched",
          all(a >= b for a, b in zip(shares, shares[1:])), str(shares))
    check("the small boxes of the wide image go first",
          all(w <= s for w, s in zip(wide, shares)) and wide[-1] < 0.5,
          str(rows))
    check("R² falls with sigma",
          all(a[1] > b[1] for a, b in zip(rows, rows[1:])), str(rows))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "truth.json")
        with open(path, "w") as f:
            json.dump(truth, f)
        result = subprocess.run([sys.executable, SCRIPT, path, "20"],
                                capture_output=True, text=True)
        check("the command prints the table",
              result.returncode == 0 and "aspect>=1.8" in result.stdout and
              len(result.stdout.splitlines()) == 2 + len(cb.SIGMAS),
              result.stdout + result.stderr)
        result = subprocess.run([sys.executable, SCRIPT], capture_output=True,
                                text=True)
        check("no argument gives the usage", result.returncode != 0 and
              "usage" in result.stderr, result.stderr)
    print(f"{len(PASSED)} passed, {len(FAILED)} failed", flush=True)
    return 1 if FAILED or not PASSED else 0


if __name__ == "__main__":
    sys.exit(main())
