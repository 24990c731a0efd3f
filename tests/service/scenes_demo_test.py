#!/usr/bin/python3
"""The default model answers right, end to end: a real moondream-server
started without --model (so on the shipped synthetic-scenes demo model),
asked over its Moondream-compatible HTTP API about the scenes shipped with
that model (models/scenes-demo/examples, truth.json beside them).

Which skills are checked follows the model's own card,
models/scenes-demo/eval.json (scenes-eval's reports on held-out scenes): a
skill it claims (its targets met on seed 1 and on seed 2) must answer the
shipped scenes right about as often as it claims. "About": the examples are
a sample, and a model right 90% of the time answers all of 16 counts right
only 19% of the time, so the check is a one-sided binomial test: it fails
when so few answers are right that a model at the claimed rate would give as
few in under 1% of samples (e.g. fewer than 11 of 16 for a 90% skill). Every
skill, claimed or not, must answer well formed, and the boxes must land: at
least one shipped shape is found by a box at IoU >= 0.5 and one point lands
inside a shape asked for (a region head decoded wrong finds none). The log
says how each answer went. Then `moondream-bench scenes-eval` evaluates the
shipped weights on the card's confirmation scenes (200 of seed 2) again:
the claimed skills must meet their targets there, as the card says.

Both run in fp32, the dtype of the card's claims (bf16 answers differ a
little, and by the CPU's path: AVX512-BF16 kernels or ATen's).

usage: scenes_demo_test.py SERVER_BINARY BENCH_BINARY SOURCE_DIR
"""

import base64
import json
import math
import os
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tools", "bench"))
import server_process  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
from e2e_support import FAILED, PASSED, check  # noqa: E402

SERVER, BENCH, SOURCE = sys.argv[1], sys.argv[2], sys.argv[3]
MODEL = os.path.join(SOURCE, "models", "scenes-demo")
EXAMPLES = os.path.join(MODEL, "examples")


def post(port, skill, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/{skill}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def data_url(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def iou(a, b):
    w = min(a["x_max"], b["x_max"]) - max(a["x_min"], b["x_min"])
    h = min(a["y_max"], b["y_max"]) - max(a["y_min"], b["y_min"])
    inter = max(w, 0) * max(h, 0)

    def area(r):
        return (r["x_max"] - r["x_min"]) * (r["y_max"] - r["y_min"])
    return inter / (area(a) + area(b) - inter)


def caption_of(shapes):
    """The caption format of the scenes' specification, left to right."""
    phrases = [f"a {s['color']} {s['kind']}"
               for s in sorted(shapes, key=lambda s: s["centre"]["x"])]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


SKILL_METRICS = {"count": ["count"], "color": ["color"], "shape": ["shape"],
                 "caption": ["caption short", "caption normal"],
                 "detect": ["detect F1"],
                 "point": ["point inside", "point recall"]}


def claimed_skills():
    """Skills the card claims (their targets met on both held-out seeds),
    each with the share of answers it claims right: e.g. {"color": 0.9}."""
    with open(os.path.join(MODEL, "eval.json")) as f:
        metrics = json.load(f)["metrics"]
    claimed = {}
    for skill, names in SKILL_METRICS.items():
        if all(metrics[n]["claimed"] for n in names):
            m = metrics[names[0]]
            claimed[skill] = m["target"] / (100 if m["unit"] == "%" else 1)
    return claimed


def binomial_cdf(k, n, p):
    """P(X <= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p)**(n - i)
               for i in range(k + 1))


FALSE_FAILURE = 0.01  # per skill, for a model exactly at its claimed rate


def fewest_right(asked, rate):
    """The fewest right answers of `asked` that a model right at `rate`
    gives in at least FALSE_FAILURE of samples."""
    return next(k for k in range(asked + 1)
                if binomial_cdf(k, asked, rate) >= FALSE_FAILURE)


def check_claimed_rates(skills, tally):
    """Each claimed skill's right answers on the shipped scenes are
    consistent with the rate it claims (the binomial test above)."""
    for skill, rate in sorted(skills.items()):
        right, asked = tally.get(skill, (0, 0))
        needed = fewest_right(asked, rate) if asked else 1
        check(f"{skill}: {right} of {asked} shipped-scene answers right "
              f"(needs {needed}, the card claims {rate:.0%})",
              asked > 0 and right >= needed)


def check_regions_land(tally):
    """Whether or not the card claims detect and point, the region head's
    answers are decoded into the image's coordinates: some shipped shape is
    found by a box, and some point falls inside a shape it was asked for."""
    found, shapes = tally.get("boxes", (0, 0))
    check(f"detect: {found} of {shapes} shipped shapes found by a box at "
          "IoU >= 0.5 (needs at least one)", found > 0)
    inside, points = tally.get("points", (0, 0))
    check(f"point: {inside} of {points} points inside a shape asked for "
          "(needs at least one)", inside > 0)


def evaluate_shipped_weights(skills):
    """scenes-eval on the card's confirmation scenes meets the targets."""
    names = [n for skill in sorted(skills) for n in SKILL_METRICS[skill]]
    with open(os.path.join(MODEL, "eval.json")) as f:
        confirmation = json.load(f)["confirmation"]
    result = subprocess.run(
        [BENCH, "scenes-eval", f"--model={MODEL}",
         f"--count={confirmation['scenes']}", f"--seed={confirmation['seed']}",
         "--threads=2", f"--dtype={confirmation['dtype']}",
         "--require=" + ",".join(names)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(result.stdout, flush=True)
    check(f"scenes-eval meets the card's targets on seed "
          f"{confirmation['seed']}: " + ", ".join(names),
          result.returncode == 0, result.stdout[-300:])


def matched_boxes(objects, targets):
    """How many targets a distinct answered box overlaps at IoU >= 0.5,
    matched greedily from the largest overlap."""
    pairs = sorted(((iou(o, t), i, j) for i, o in enumerate(objects)
                    for j, t in enumerate(targets)), reverse=True)
    used_objects, used_targets = set(), set()
    for overlap, i, j in pairs:
        if overlap < 0.5:
            break
        if i not in used_objects and j not in used_targets:
            used_objects.add(i)
            used_targets.add(j)
    return len(used_targets)


def ask(port, image, scene, skills, tally):
    """Asks every skill about one scene; tallies (right, asked) per skill
    the card claims, and logs the others."""
    shapes = scene["shapes"]
    name = scene["file"]

    def expect(skill, label, got, want):
        verdict = "right" if got == want else "WRONG"
        if skill in skills:
            add_to(tally, skill, got == want, 1)
        else:
            verdict = f"skip ({verdict}; the card does not claim {skill})"
        print(f"{verdict} {name} {label}: got {got!r}, want {want!r}",
              flush=True)

    answer = post(port, "query", {"image_url": image,
                                  "question": "How many shapes are there?"})
    expect("count", "count", answer["answer"], str(len(shapes)))
    # Asked only where exactly one shape fits, as the specification says.
    for skill, key, answer_key, values, question in [
            ("color", "kind", "color", ("circle", "square", "triangle"),
             "What color is the {}?"),
            ("shape", "color", "kind", ("red", "green", "blue", "yellow"),
             "What shape is {}?")]:
        for value in values:
            same = [s for s in shapes if s[key] == value]
            if len(same) != 1:
                continue
            answer = post(port, "query", {
                "image_url": image, "question": question.format(value)})
            expect(skill, question.format(value), answer["answer"],
                   same[0][answer_key])
    caption = post(port, "caption", {"image_url": image, "length": "normal"})
    expect("caption", "caption", caption["caption"], caption_of(shapes))

    kind = shapes[0]["kind"]
    wanted = [s for s in shapes if s["kind"] == kind]
    objects = post(port, "detect", {"image_url": image,
                                    "object": kind})["objects"]
    found = matched_boxes(objects, [s["box"] for s in wanted])
    add_to(tally, "boxes", found, len(wanted))
    expect("detect", f"{kind} boxes at IoU >= 0.5",
           len(objects) == len(wanted) and found == len(wanted), True)
    points = post(port, "point", {"image_url": image,
                                  "object": kind})["points"]
    check(f"{name} point answers are in the image",
          all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in points),
          str(points))
    inside, reached = score_points(points, scene, wanted)
    add_to(tally, "points", inside, len(points))
    expect("point", f"{kind} points inside",
           inside == len(points) and reached == len(wanted), True)


def add_to(tally, key, right, asked):
    """Adds to the (right, asked) pair that `tally` keeps under `key`."""
    right_before, asked_before = tally.get(key, (0, 0))
    tally[key] = (right_before + right, asked_before + asked)


def score_points(points, scene, wanted):
    """(points inside one of the `wanted` shapes, wanted shapes that some
    point falls inside), as scenes-eval scores them."""
    pixels = [(p["x"] * scene["width"], p["y"] * scene["height"])
              for p in points]
    inside = sum(any(shape_contains(s, x, y) for s in wanted)
                 for x, y in pixels)
    reached = sum(any(shape_contains(s, x, y) for x, y in pixels)
                  for s in wanted)
    return inside, reached


def cross(ax, ay, bx, by, px, py):
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def shape_contains(shape, x, y):
    """Whether pixel (x, y) is inside the drawn shape, as the scenes'
    truth defines it (tools/scenes/scene.cc: ShapeContains)."""
    b = shape["box_px"]
    if shape["kind"] == "circle":
        r = (b["x_max"] - b["x_min"]) / 2
        dx, dy = x - (b["x_min"] + r), y - (b["y_min"] + r)
        return dx * dx + dy * dy <= r * r
    if shape["kind"] == "square":
        return (b["x_min"] <= x <= b["x_max"] and
                b["y_min"] <= y <= b["y_max"])
    top_x = (b["x_min"] + b["x_max"]) / 2
    d = [cross(b["x_min"], b["y_max"], b["x_max"], b["y_max"], x, y),
         cross(b["x_max"], b["y_max"], top_x, b["y_min"], x, y),
         cross(top_x, b["y_min"], b["x_min"], b["y_max"], x, y)]
    return not (min(d) < 0 and max(d) > 0)


def main():
    skills = claimed_skills()
    print("the card claims: " + ", ".join(sorted(skills)), flush=True)
    check("the card claims colour and shape answers",
          {"color", "shape"} <= skills.keys(), sorted(skills))
    with open(os.path.join(EXAMPLES, "truth.json")) as f:
        scenes = json.load(f)["scenes"]
    http_port = server_process.free_port()
    process, _, _ = server_process.start_server(
        SERVER, None, [f"--http_port={http_port}", "--log_level=warning",
                       "--dtype=fp32"])
    tally = {}
    try:
        banner = "".join(process.startup_stderr)
        check("the banner says it serves the demo model",
              "models/scenes-demo" in banner and
              "a demo model, not Moondream's weights" in banner, banner)
        for scene in scenes:
            ask(http_port, data_url(os.path.join(EXAMPLES, scene["file"])),
                scene, skills, tally)
    finally:
        process.terminate()
        process.wait(timeout=60)
    check_claimed_rates(skills, tally)
    check_regions_land(tally)
    evaluate_shipped_weights(skills)
    print(f"{len(PASSED)} passed, {len(FAILED)} failed", flush=True)
    return 1 if FAILED or not PASSED else 0


if __name__ == "__main__":
    sys.exit(main())
