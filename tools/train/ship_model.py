#!/usr/bin/python3
"""Makes a trained model directory the shipped default, models/scenes-demo:
copies its weights, config and tokenizer, evaluates it on held-out scenes
(scenes-eval, 200 scenes, seed 1: the card, eval.json), writes the banner
the tools print at start-up (DEMO-MODEL) from that evaluation, so that it
claims exactly the skills that meet issue 14's targets, and writes the
example scenes the README and the end-to-end test use (seed 3).

usage: tools/train/ship_model.py TRAINED_MODEL_DIR [BENCH_BINARY]
  (run from the repository root; BENCH_BINARY: build/tools/moondream-bench)
"""

import json
import os
import shutil
import struct
import subprocess
import sys

DEST = os.path.join("models", "scenes-demo")
SKILLS = [  # (what the banner calls it, the report's metric names)
    ("counts (\"How many shapes are there?\")", ["count"]),
    ("colours (\"What color is the circle?\")", ["color"]),
    ("shapes (\"What shape is red?\")", ["shape"]),
    ("captions (the shapes left to right)",
     ["caption short", "caption normal"]),
    ("detect (\"circle\", \"red square\", ...)", ["detect F1"]),
    ("point", ["point inside", "point recall"]),
]


def summary(metrics, names):
    """e.g. "98% right" or "point inside 16%, point recall 0.11"."""
    parts = []
    for n in names:
        m = metrics[n]
        if not m["measured"]:
            parts.append(f"{n}: no answers")
            continue
        value = (f"{m['value']:.0f}%" if m["unit"] == "%"
                 else f"{m['value']:.2f}")
        parts.append(f"{n} {value}" if len(names) > 1 or m["unit"] != "%"
                     else f"{value} right")
    return ", ".join(parts)


def banner(metrics, step):
    def listed(passing):
        return "; ".join(f"{label}: {summary(metrics, names)}"
                         for label, names in SKILLS
                         if all(metrics[n]["pass"] for n in names) == passing)
    good, weak = listed(True), listed(False)
    text = ("a tiny Moondream trained here only on synthetic scenes (1 to 4 "
            "red, green, blue or yellow circles, squares and triangles on a "
            f"white or light grey background; {step} training steps). ")
    if good:
        text += f"On held-out scenes it answers {good}. "
    if weak:
        text += f"Not reliable yet: {weak}. "
    text += ("Other images and questions get meaningless answers "
             "(models/scenes-demo/README.md).\n")
    return text


TABLE_START = "<!-- eval table: tools/train/ship_model.py writes it -->"
TABLE_END = "<!-- end of eval table -->"


def eval_table(card):
    """The card's report as a Markdown table."""
    rows = [f"scenes-eval, {card['scenes']} held-out scenes (seed "
            f"{card['seed']}), {card['questions']} questions, "
            f"{card['dtype']}:", "",
            "| metric | value | target | result | counts |",
            "|---|---|---|---|---|"]
    for name, m in card["metrics"].items():
        if not m["measured"]:
            value = "n/a"
        elif m["unit"] == "%":
            value = f"{m['value']:.1f}%"
        else:
            value = f"{m['value']:.3f}"
        target = ""
        if "target" in m:
            target = (f">= {m['target']:.0f}%" if m["unit"] == "%"
                      else f">= {m['target']:.2f}")
        result = ("pass" if m.get("pass") else "FAIL") if target else ""
        rows.append(f"| {name} | {value} | {target} | {result} | "
                    f"{m['detail']} |")
    return "\n".join(rows)


def update_card_table(card):
    """Rewrites the table between the markers of the model's README.md."""
    path = os.path.join(DEST, "README.md")
    if not os.path.exists(path):
        print(f"{path} missing: write the card, with the table markers")
        return
    text = open(path).read()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        sys.exit(f"{path}: no table markers")
    text = (text[:start] + TABLE_START + "\n" + eval_table(card) + "\n" +
            text[end:])
    with open(path, "w") as f:
        f.write(text)


def trained_step(safetensors):
    """The step the trainer wrote into the file's metadata."""
    with open(safetensors, "rb") as f:
        header_bytes = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_bytes))
    return header.get("__metadata__", {}).get("step", "?")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    source = sys.argv[1]
    bench = sys.argv[2] if len(sys.argv) == 3 else os.path.join(
        "build", "tools", "moondream-bench")
    os.makedirs(DEST, exist_ok=True)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        shutil.copyfile(os.path.join(source, name), os.path.join(DEST, name))
    report = os.path.join(DEST, "eval.json")
    subprocess.run([bench, "scenes-eval", f"--model={DEST}", "--count=200",
                    "--seed=1", "--threads=2", "--dtype=fp32",
                    f"--json={report}"], check=True)
    with open(report) as f:
        card = json.load(f)
    card["model"] = DEST
    with open(report, "w") as f:
        json.dump(card, f, indent=1)
        f.write("\n")
    step = trained_step(os.path.join(DEST, "model.safetensors"))
    with open(os.path.join(DEST, "DEMO-MODEL"), "w") as f:
        f.write(banner(card["metrics"], step))
    update_card_table(card)
    examples = os.path.join(DEST, "examples")
    shutil.rmtree(examples, ignore_errors=True)
    subprocess.run([bench, "scenes", "--count=4", "--seed=3",
                    f"--out={examples}"], check=True)
    print(open(os.path.join(DEST, "DEMO-MODEL")).read())


if __name__ == "__main__":
    main()
