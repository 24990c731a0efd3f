#!/usr/bin/python3
"""Draws a training curve from the log `moondream-bench train` prints.

usage: plot_curve.py TRAIN_LOG [TRAIN_LOG ...] OUT.png [--title TEXT]

Several logs (the stages of one recipe, in order) draw one curve; a dotted
line marks where each later stage starts. A stage whose steps count from 0
again (it began from a written model, --init-from) is drawn after the one
before it.

Top: the training loss and its parts (text tokens, stop decisions, x/y and
w/h KL) per progress line, and the held-out loss at each evaluation. Bottom:
the fraction of held-out questions answered right through the served skills.
"""
import argparse
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STEP = re.compile(r"^step (\d+)/\d+ loss ([\d.]+) \(text ([\d.]+) stop "
                  r"([\d.]+) xy ([\d.]+) wh ([\d.]+)[ )]")
EVAL = re.compile(r"^eval step (\d+): held-out loss ([\d.]+), (\d+)/(\d+) "
                  r"questions right")


def parse(path):
    steps, evals = [], []
    with open(path) as f:
        for line in f:
            if m := STEP.match(line):
                steps.append([int(m[1])] + [float(x) for x in m.groups()[1:]])
            elif m := EVAL.match(line):
                evals.append((int(m[1]), float(m[2]),
                              int(m[3]) / max(1, int(m[4]))))
    return steps, evals


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("logs", nargs="+", metavar="TRAIN_LOG")
    parser.add_argument("out")
    parser.add_argument("--title", default="moondream-bench train")
    args = parser.parse_args()
    steps, evals, starts = [], [], []
    for log in args.logs:
        more_steps, more_evals = parse(log)
        if not more_steps:
            raise SystemExit(f"{log}: no progress lines")
        if steps:
            if more_steps[0][0] <= steps[-1][0]:
                # A stage that began from a written model (--init-from)
                # counts from 0: it goes on where the previous one ended.
                offset = steps[-1][0]
                more_steps = [[s[0] + offset] + s[1:] for s in more_steps]
                more_evals = [(e[0] + offset,) + e[1:] for e in more_evals]
            starts.append(more_steps[0][0])
        steps += more_steps
        evals += more_evals
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True,
                                      height_ratios=[3, 2])
    x = [s[0] for s in steps]
    for column, label, style in [(1, "loss (sum)", "-"), (2, "text", ":"),
                                 (3, "stop", ":"), (4, "x/y KL", "--"),
                                 (5, "w/h KL", "--")]:
        top.plot(x, [s[column] for s in steps], style, label=label,
                 linewidth=1.2 if column == 1 else 0.9)
    if evals:
        top.plot([e[0] for e in evals], [e[1] for e in evals], "ko-",
                 label="held-out loss", markersize=3)
        bottom.plot([e[0] for e in evals], [100 * e[2] for e in evals],
                    "o-", color="tab:green", markersize=3)
    for start in starts:
        for axis in (top, bottom):
            axis.axvline(start, color="grey", linestyle=":", linewidth=0.8)
    top.set_yscale("log")
    top.set_ylabel("loss")
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    top.set_title(args.title)
    bottom.set_ylabel("held-out questions right (%)")
    bottom.set_xlabel("step")
    bottom.set_ylim(0, 100)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
