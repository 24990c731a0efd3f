#!/usr/bin/python3
"""Plots a `moondream-bench serve --json` result (Debian's python3-matplotlib).

  plot_serve.py RESULT.json OUT_DIR

Writes, as the result allows:
  latency.png   TTFT, ITL and E2EL distributions (needs --save_detailed)
  sweep.png     latency vs achieved throughput across a --sweep run
  tenants.png   per-tenant completed output tokens/s and TTFT over time
                (needs --save_detailed and more than one tenant)
Saturation shows as the knee where throughput stops rising and latency climbs;
unfairness as a tenant whose line sits apart from the others.
"""
import collections
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def requests_of(result):
    return [r for r in result.get("requests", []) if r["ok"]]


def plot_latency(result, out):
    reqs = requests_of(result)
    if not reqs:
        return None
    ttft = [1000 * (r["chunks"][0][0] - r["send_s"]) for r in reqs if r["chunks"]]
    itl = [1000 * (b[0] - a[0]) for r in reqs
           for a, b in zip(r["chunks"], r["chunks"][1:])]
    e2el = [1000 * (r["end_s"] - r["send_s"]) for r in reqs]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, values, name in zip(axes, (ttft, itl, e2el), ("TTFT", "ITL", "E2EL")):
        if values:
            ax.hist(values, bins=40, color="#3b6ea5")
            for p, style in ((50, "-"), (99, "--")):
                v = sorted(values)[min(len(values) - 1, int(p / 100 * len(values)))]
                ax.axvline(v, color="#c44", linestyle=style, label=f"p{p} {v:.0f} ms")
            ax.legend()
        ax.set_title(f"{name} ({len(values)})")
        ax.set_xlabel("ms")
    fig.tight_layout()
    path = os.path.join(out, "latency.png")
    fig.savefig(path, dpi=100)
    return path


def plot_sweep(result, out):
    runs = result.get("sweep")
    if not runs:
        return None
    runs = sorted(runs, key=lambda r: r["request_throughput"])
    x = [r["request_throughput"] for r in runs]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label in (("p99_ttft_ms", "TTFT p99"), ("median_ttft_ms", "TTFT p50"),
                       ("p99_e2el_ms", "E2EL p99"), ("p99_itl_ms", "ITL p99")):
        ax.plot(x, [r.get(key, 0) for r in runs], marker="o", label=label)
    ax.set_xlabel("achieved requests/s")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_title("latency vs throughput (saturation: where it turns up)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "sweep.png")
    fig.savefig(path, dpi=100)
    return path


def plot_tenants(result, out):
    reqs = requests_of(result)
    tenants = sorted({r["tenant"] for r in reqs})
    if len(tenants) < 2:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for tenant in tenants:
        mine = [r for r in reqs if r["tenant"] == tenant]
        tokens = collections.Counter()
        for r in mine:
            for at, n in r["chunks"] or [[r["end_s"], r["output_tokens"]]]:
                tokens[int(at)] += n
        seconds = sorted(tokens)
        top.plot(seconds, [tokens[s] for s in seconds], label=tenant)
        timed = sorted((r["send_s"], 1000 * (r["chunks"][0][0] - r["send_s"]))
                       for r in mine if r["chunks"])
        bottom.plot([t for t, _ in timed], [v for _, v in timed], ".", label=tenant)
    top.set_ylabel("output tokens/s")
    top.set_title(f"per tenant (Jain's fairness {result.get('fairness', 1):.3f})")
    top.legend()
    bottom.set_ylabel("TTFT ms")
    bottom.set_xlabel("seconds into the run")
    bottom.legend()
    fig.tight_layout()
    path = os.path.join(out, "tenants.png")
    fig.savefig(path, dpi=100)
    return path


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    result = json.load(open(sys.argv[1]))
    os.makedirs(sys.argv[2], exist_ok=True)
    # A sweep's distributions and timelines: its highest offered rate.
    detail = result
    if "sweep" in result:
        detail = max(result["sweep"],
                     key=lambda r: r["request_throughput"]
                     if r.get("max_concurrency") != 1 else -1)
    made = [p for p in (plot_latency(detail, sys.argv[2]),
                        plot_sweep(result, sys.argv[2]),
                        plot_tenants(detail, sys.argv[2])) if p]
    if not made:
        sys.exit("nothing to plot: run with --save_detailed, --sweep or tenants")
    for path in made:
        print(path)


if __name__ == "__main__":
    main()
