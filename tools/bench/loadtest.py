#!/usr/bin/python3
"""The load-test scenarios: a real moondream-server, `moondream-bench serve`
against it, and a markdown report with tables and plots.

  loadtest.py --server BIN --bench BIN --model DIR --out DIR [--quick]

Scenarios (issue 9; each says what it shows):
  1. sweep        where the server saturates, TTFT/ITL percentiles at each
                  rate, and what the image cache is worth (repeated images
                  against a new image per request)
  2. noisy        tenant A sends 10x tenant B's rate; B's p99 TTFT beside A,
                  against B alone, and Jain's index
  3. overload     >= 10x capacity against a small --queue: how fast
                  rejections come, admitted latency, peak server RSS, and
                  that the server is healthy and idle afterwards
  4. cancel       half the streams abandoned at random points: every slot
                  comes back

Capacity is measured first (the sweep), and every later rate is a multiple
of it, so the same script means the same thing on a faster machine.
scripts/loadtest.sh builds what is needed and calls this.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import plot_serve  # noqa: E402
import server_process  # noqa: E402

# The workload every scenario shares: the two streamed skills (so TTFT and
# ITL exist), fixed-length answers (random weights say anything), and a few
# images that repeat (the image cache is on, as in production).
TEXT_TASKS = "query:0.7,caption:0.3"
IMAGES = "378x378:0.5,756x378:0.5"
CAPPED_SLOTS = 6  # of the default 8
KEYS = {"key-a": "tenant-a", "key-b": "tenant-b", "key-load": "loadtest"}


class Mode:
    def __init__(self, quick):
        self.quick = quick
        self.max_tokens = 16 if quick else 32
        self.sweep_prompts = 6 if quick else 32
        self.sweep_steps = 1 if quick else 4
        self.miss_prompts = 2 if quick else 12
        self.phase_s = 10 if quick else 120
        self.overload_s = 5 if quick else 30
        self.cancel_s = 6 if quick else 60


# ---------------------------------------------------------------- the server

class Server:
    """A moondream-server on ephemeral loopback ports, with its RSS."""

    def __init__(self, binary, model, flags):
        self.http_port = server_process.free_port()
        self.process, self.grpc_port, self.metrics_port = (
            server_process.start_server(
                binary, model, flags + [f"--http_port={self.http_port}"]))
        self.pid = self.process.pid

    @property
    def target(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_target(self):
        return f"127.0.0.1:{self.metrics_port}"

    def metrics(self):
        return server_process.scrape_metrics(self.metrics_target)

    def status_kib(self, field):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        self.process.terminate()
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def metric_sum(metrics, family, **labels):
    """The sum of a family's samples whose labels include `labels`."""
    total = 0.0
    for name, value in metrics.items():
        base = name.split("{", 1)[0]
        if base != family:
            continue
        if all(f'{k}="{v}"' in name for k, v in labels.items()):
            total += value
    return total


def wait_idle(server, limit_s=120):
    """Seconds until queue and running slots are both 0 (None: never)."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        m = server.metrics()
        if (m.get("moondream_queue_length", 1) == 0
                and m.get("moondream_running_slots", 1) == 0):
            return time.monotonic() - start
        time.sleep(0.2)
    return None


class RssSampler:
    """Polls the server's resident memory while a scenario runs."""

    def __init__(self, server, every_s=0.1):
        self.server, self.every_s = server, every_s
        self.peak_kib = 0
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        start = time.monotonic()
        while not self._stop.is_set() and self.server.alive():
            rss = self.server.status_kib("VmRSS")
            self.samples.append((time.monotonic() - start, rss))
            self.peak_kib = max(self.peak_kib, rss)
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------- the client

def bench(args, server, name, flags, log):
    """Runs `moondream-bench serve`; returns its JSON result."""
    out = os.path.join(args.work, f"{name}.json")
    cmd = [args.bench, "serve", f"--target={server.target}",
           f"--metrics_url={server.metrics_target}", f"--json={out}",
           "--percentiles=50,90,99"] + flags
    log(f"$ {' '.join(cmd[1:])}")
    started = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True)
    log(run.stdout.rstrip())
    if run.returncode != 0:
        raise RuntimeError(f"{name}: moondream-bench failed:\n{run.stderr}")
    log(f"({name}: {time.monotonic() - started:.0f} s)")
    with open(out) as f:
        return json.load(f)


def common_flags(mode, key="key-load"):
    return [f"--tasks={TEXT_TASKS}", f"--image_buckets={IMAGES}",
            f"--max_tokens={mode.max_tokens}", "--ignore_eos",
            f"--api_key={key}", "--seed=1"]


def percentile(values, p):
    """numpy's default (linear) percentile; 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    rank = (len(s) - 1) * p / 100
    lo = int(rank)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (rank - lo)


def detailed(result, error=None, ok=None):
    reqs = result.get("requests", [])
    if error is not None:
        reqs = [r for r in reqs if r["error"] == error]
    if ok is not None:
        reqs = [r for r in reqs if r["ok"] == ok]
    return reqs


def e2el_ms(reqs):
    return [1000 * (r["end_s"] - r["send_s"]) for r in reqs]


# ---------------------------------------------------------------- scenarios

def prime(args, mode, server, key, log):
    """Encodes the scenarios' repeating images for `key` (each tenant has
    its own image cache), so every measured run sees the same warm cache."""
    bench(args, server, f"prime-{key}", common_flags(mode, key) + [
        "--distinct_images=2", "--num_prompts=4", "--num_warmups=0",
        "--max_concurrency=1"], log)


def scenario_sweep(args, mode, server, log):
    """Capacity and the latency/throughput curve, then cache misses."""
    prime(args, mode, server, "key-load", log)
    hits = bench(args, server, "sweep", common_flags(mode) + [
        "--distinct_images=2", f"--num_prompts={mode.sweep_prompts}",
        f"--sweep={mode.sweep_steps}", "--num_warmups=2", "--save_detailed"],
        log)
    # Every request a new image: the vision encoder runs each time.
    # Images are drawn at random from --distinct_images: far more than the
    # requests, so repeats are rare (the table counts the encodes).
    misses = bench(args, server, "misses", common_flags(mode) + [
        f"--distinct_images={50 * (mode.miss_prompts + 1)}",
        f"--num_prompts={mode.miss_prompts}", "--num_warmups=1",
        "--request_rate=inf", "--seed=2"], log)
    return {"hits": hits, "misses": misses}


def noisy_pair(args, mode, server, rate_b, name, log):
    """A at 10x B's rate beside B."""
    flags = [f for f in common_flags(mode) if not f.startswith("--api_key")]
    return bench(args, server, name, flags + [
        "--distinct_images=2", "--num_prompts=0", f"--duration={mode.phase_s}",
        f"--tenant=key-a:rate={10 * rate_b:.4f}",
        f"--tenant=key-b:rate={rate_b:.4f}", "--num_warmups=2",
        "--save_detailed"], log)


def scenario_noisy(args, mode, server, sustainable, log):
    """B alone, then A at 10x B's rate beside it: A alone sends the most the
    server sustains (the sweep's saturation rate), so together they load it
    just past that, and only fairness keeps B's latency."""
    rate_b = sustainable / 10
    prime(args, mode, server, "key-a", log)
    prime(args, mode, server, "key-b", log)
    alone = bench(args, server, "noisy-alone", common_flags(mode, "key-b") + [
        "--distinct_images=2", "--num_prompts=0", f"--duration={mode.phase_s}",
        f"--request_rate={rate_b:.4f}", "--num_warmups=1", "--save_detailed"],
        log)
    both = noisy_pair(args, mode, server, rate_b, "noisy", log)
    return {"alone": alone, "both": both, "rate_b": rate_b}


def scenario_noisy_capped(args, mode, binary, model, rate_b, log):
    """The pair again, at a server where one tenant may hold 6 of 8 slots."""
    server = Server(binary, model, base_flags(args) + [
        f"--tenant_slots={CAPPED_SLOTS}"])
    try:
        prime(args, mode, server, "key-a", log)
        prime(args, mode, server, "key-b", log)
        return noisy_pair(args, mode, server, rate_b, "noisy-capped", log)
    finally:
        server.stop()


def scenario_overload(args, mode, binary, model, capacity, log):
    """>= 10x capacity at a server with a queue of 4."""
    server = Server(binary, model, base_flags(args) + ["--queue=4"])
    try:
        prime(args, mode, server, "key-load", log)
        rate = 10 * capacity
        with RssSampler(server) as rss:
            result = bench(args, server, "overload", common_flags(mode) + [
                "--distinct_images=2", "--num_prompts=0",
                f"--duration={mode.overload_s}", f"--request_rate={rate:.3f}",
                "--num_warmups=1", "--save_detailed", "--timeout=300"], log)
            idle_s = wait_idle(server)
        health = http_get(f"http://127.0.0.1:{server.http_port}/health")
        m = server.metrics()
        return {"result": result, "rate": rate, "idle_s": idle_s,
                "peak_rss_kib": rss.peak_kib,
                "hwm_kib": server.status_kib("VmHWM"),
                "rss_samples": rss.samples, "alive": server.alive(),
                "health": health.strip(),
                "queue_after": m.get("moondream_queue_length"),
                "running_after": m.get("moondream_running_slots")}
    finally:
        server.stop()


def scenario_cancel(args, mode, server, capacity, log):
    """Half the streams abandoned at random points, at 2x capacity."""
    before = server.metrics()
    result = bench(args, server, "cancel", common_flags(mode) + [
        "--distinct_images=2", "--num_prompts=0",
        f"--duration={mode.cancel_s}", f"--request_rate={2 * capacity:.3f}",
        "--cancel_fraction=0.5", f"--max_tokens={2 * mode.max_tokens}",
        "--num_warmups=1", "--save_detailed"], log)
    idle_s = wait_idle(server)
    after = server.metrics()
    cancelled_server = (
        metric_sum(after, "moondream_rejections_total", reason="cancelled")
        - metric_sum(before, "moondream_rejections_total", reason="cancelled"))
    return {"result": result, "idle_s": idle_s,
            "server_cancelled": cancelled_server,
            "queue_after": after.get("moondream_queue_length"),
            "running_after": after.get("moondream_running_slots"),
            "slots": after.get("moondream_slots")}


# ------------------------------------------------------------------- report

def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def sweep_table(sweep):
    rows = ["| offered req/s | req/s (throughput) | sent/s | done/s | "
            "kept up | out tok/s | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | "
            "ITL p50 ms | ITL p99 ms | E2EL p99 ms | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sweep["sweep"]:
        label = ("synchronous" if r["max_concurrency"] == 1 else
                 "unlimited" if r["request_rate"] == "inf"
                 else f"{r['request_rate']:.3f}")
        rows.append(
            f"| {label} | {r['request_throughput']:.3f} | "
            f"{sent_rate(r)} | {r['completion_rate']:.3f} | "
            f"{kept_up(r)} | {r['output_throughput']:.1f} | {r['median_ttft_ms']:.0f} | "
            f"{r['p90_ttft_ms']:.0f} | {r['p99_ttft_ms']:.0f} | "
            f"{r['median_itl_ms']:.0f} | {r['p99_itl_ms']:.0f} | "
            f"{r['p99_e2el_ms']:.0f} | {r['failed']} |")
    return "\n".join(rows)


def sent_rate(run):
    """All at once has no rate to speak of."""
    return "-" if run["request_rate"] == "inf" else f"{run['send_rate']:.3f}"


def kept_up(run):
    """The sweep's test (moondream-bench serve): completions came at >= 90%
    of the rate requests were sent at."""
    if run["request_rate"] == "inf":
        return "-"
    return "yes" if run["completion_rate"] >= 0.9 * run["send_rate"] else "no"


def p99_ttft_at_half(sweep):
    """p99 TTFT of the finite-rate run closest to half the saturation rate."""
    target = sweep["saturation_request_rate"] / 2
    runs = [r for r in sweep["sweep"] if r["request_rate"] != "inf"
            and r["max_concurrency"] != 1]
    if not runs or target <= 0:
        return None, None
    run = min(runs, key=lambda r: abs(r["request_rate"] - target))
    return run["request_rate"], run["p99_ttft_ms"]


def write_report(args, mode, env, results, out):
    sweep = results["sweep"]["hits"]
    misses = results["sweep"]["misses"]
    unlimited = next(r for r in sweep["sweep"]
                     if r["request_rate"] == "inf" and r["max_concurrency"] != 1)
    half_rate, half_p99 = p99_ttft_at_half(sweep)
    noisy = results["noisy"]
    b_alone = noisy["alone"]["p99_ttft_ms"]
    b_beside = noisy["both"]["per_tenant"].get("key-b", {}).get("p99_ttft_ms")
    noisy_ratio = b_beside / b_alone if b_alone and b_beside else None
    capped = results.get("noisy_capped", {"per_tenant": {}, "fairness": 0})
    b_capped = capped["per_tenant"].get("key-b", {}).get("p99_ttft_ms")
    capped_ratio = b_capped / b_alone if b_alone and b_capped else None
    over = results["overload"]
    rejected = detailed(over["result"], error="RESOURCE_EXHAUSTED")
    admitted = detailed(over["result"], ok=True)
    cancel = results["cancel"]

    plots = {}
    for name, result, sub in (
            ("sweep", sweep, "sweep"),
            ("latency", max((r for r in sweep["sweep"]
                             if r["max_concurrency"] != 1),
                            key=lambda r: r["request_throughput"]), "sweep"),
            ("tenants", noisy["both"], "noisy"),
            ("tenants", capped if "requests" in capped else {},
             "noisy-capped")):
        d = os.path.join(out, sub)
        os.makedirs(d, exist_ok=True)
        fn = getattr(plot_serve, f"plot_{name}")
        path = fn(result, d)
        if path:
            plots[f"{sub}/{name}"] = os.path.relpath(path, out)
    rss_plot = plot_rss(over["rss_samples"], os.path.join(out, "overload"))
    if rss_plot:
        plots["overload/rss"] = os.path.relpath(rss_plot, out)

    def image(key, alt):
        return f"![{alt}]({plots[key]})" if key in plots else ""

    headline = {
        "saturation_request_rate": sweep["saturation_request_rate"],
        "capacity_request_throughput": sweep["capacity_request_throughput"],
        "p99_ttft_ms_at_half_saturation": half_p99,
        "half_saturation_rate": half_rate,
        "cache_hit_capacity": unlimited["request_throughput"],
        "cache_miss_capacity": misses["request_throughput"],
        "noisy_b_p99_ttft_alone_ms": b_alone,
        "noisy_b_p99_ttft_beside_a_ms": b_beside,
        "noisy_ratio": noisy_ratio,
        "noisy_fairness": noisy["both"]["fairness"],
        "noisy_capped_b_p99_ttft_ms": b_capped,
        "noisy_capped_ratio": capped_ratio,
        "overload_rejections": len(rejected),
        "overload_rejection_p99_ms": percentile(e2el_ms(rejected), 99),
        "overload_admitted_p99_e2el_ms": percentile(e2el_ms(admitted), 99),
        "overload_peak_rss_mib": over["peak_rss_kib"] / 1024,
        "overload_idle_after_s": over["idle_s"],
        "cancel_client_cancelled": cancel["result"]["cancelled"],
        "cancel_server_cancelled": cancel["server_cancelled"],
        "cancel_idle_after_s": cancel["idle_s"],
    }
    with open(os.path.join(out, "headline.json"), "w") as f:
        json.dump(headline, f, indent=2)

    per_b = noisy["both"]["per_tenant"]
    a = per_b.get("key-a", {})
    b = per_b.get("key-b", {})
    ca = capped["per_tenant"].get("key-a", {})
    cb = capped["per_tenant"].get("key-b", {})
    lines = [
        f"# Load test: moondream-serve on the 0.5B-shaped random model"
        f"{' (quick)' if mode.quick else ''}",
        "",
        f"Made by `scripts/loadtest.sh{' --quick' if mode.quick else ''}` "
        f"on {time.strftime('%Y-%m-%d', time.gmtime())}. {env}",
        "",
        "The server runs the real moondream 0.5B shapes with random weights "
        "in bf16 (`moondream-bench make-model --config=moondream-0.5b "
        "--dtype=bf16`), so the compute is real and the answers are not. "
        f"Every request is a caption or a query ({TEXT_TASKS}) with "
        f"`--max_tokens={mode.max_tokens} --ignore_eos`, so every answer "
        "has the same length; images are synthetic, 378x378 or 756x378. "
        "Metrics are `vllm bench serve`'s (README, \"Load-testing a "
        "server\"). Machines of one kind differ up to 3x in speed: read "
        "the ratios, not the absolute figures.",
        "",
        "## Headline",
        "",
        f"- **Saturation:** the server kept up with offered rates up to "
        f"**{sweep['saturation_request_rate']:.3f} req/s**; all at once it "
        f"completed {sweep['capacity_request_throughput']:.3f} req/s "
        f"(one at a time: {sweep['synchronous_request_throughput']:.3f}).",
        f"- **p99 TTFT at about half of it** ({fmt(half_rate, 3)} req/s): "
        f"**{fmt(half_p99, 0)} ms**.",
        f"- **Image cache:** with two images that repeat the server "
        f"completes {unlimited['request_throughput']:.3f} req/s "
        f"(mean TTFT {unlimited['mean_ttft_ms']:.0f} ms); with a new "
        f"image per request {misses['request_throughput']:.3f} req/s "
        f"(mean TTFT {misses['mean_ttft_ms']:.0f} ms).",
        f"- **Noisy neighbour:** B's p99 TTFT beside A (10x its rate) is "
        f"**{fmt(noisy_ratio, 2)}x** B's alone ({fmt(b_beside, 0)} vs "
        f"{fmt(b_alone, 0)} ms); Jain's index "
        f"{noisy['both']['fairness']:.3f}. With `--tenant_slots="
        f"{CAPPED_SLOTS}` (A may hold {CAPPED_SLOTS} of 8 slots): "
        f"**{fmt(capped_ratio, 2)}x**.",
        f"- **Overload** ({over['rate']:.2f} req/s offered, 10x capacity, "
        f"`--queue=4`): {len(rejected)} rejections with p99 latency "
        f"**{percentile(e2el_ms(rejected), 99):.1f} ms**; peak server RSS "
        f"**{over['peak_rss_kib'] / 1024:.0f} MiB**; idle "
        f"{fmt(over['idle_s'])} s after the last answer.",
        f"- **Cancellation storm:** {cancel['result']['cancelled']} streams "
        f"abandoned; the server counted {cancel['server_cancelled']:.0f} "
        f"cancellations and was idle (queue {fmt(cancel['queue_after'], 0)}, "
        f"running slots {fmt(cancel['running_after'], 0)}) "
        f"{fmt(cancel['idle_s'])} s later.",
        "",
        "## 1. Sweep: where the server saturates",
        "",
        f"{mode.sweep_prompts} requests per step over two repeating images: "
        "one at a time, all at once (capacity), then "
        f"{mode.sweep_steps} rates evenly between (Poisson arrivals). "
        "Saturation is the highest offered rate the server kept up with: it "
        "completed requests at >= 90% of the rate they were sent at, both "
        "measured across their own span ((n - 1) / (last - first)), so a "
        "short run's start and drain do not count as falling behind. "
        "`req/s` is vLLM's request throughput (completed / whole run).",
        "",
        sweep_table(sweep),
        "",
        image("sweep/sweep", "latency against throughput"),
        "",
        image("sweep/latency", "TTFT, ITL and E2EL at capacity"),
        "",
        "### Cache hits against distinct images",
        "",
        "| workload | req/s (all at once) | mean TTFT ms | p99 TTFT ms | "
        "images encoded | cache hits |",
        "|---|---|---|---|---|---|",
        f"| 2 images, repeated | {unlimited['request_throughput']:.3f} | "
        f"{unlimited['mean_ttft_ms']:.0f} | {unlimited['p99_ttft_ms']:.0f} | "
        f"{images_encoded(unlimited)} | {cache_hits(unlimited)} |",
        f"| a new image per request | {misses['request_throughput']:.3f} | "
        f"{misses['mean_ttft_ms']:.0f} | {misses['p99_ttft_ms']:.0f} | "
        f"{images_encoded(misses)} | {cache_hits(misses)} |",
        "",
        "## 2. Noisy neighbour",
        "",
        f"Tenant B sends {noisy['rate_b']:.3f} req/s for {mode.phase_s} s, "
        "first alone, then beside tenant A at 10x that rate (the "
        "saturation rate above: the most the server sustains). The engine gives a free slot to the tenant "
        "holding the fewest, so B should not wait behind A's backlog.",
        "",
        f"| | B alone | B beside A | A | B beside A, capped | "
        f"A, capped to {CAPPED_SLOTS} slots |",
        "|---|---|---|---|---|---|",
        tenant_row("completed", noisy["alone"], b, a, cb, ca, "completed",
                   "{:.0f}"),
        tenant_row("mean TTFT ms", noisy["alone"], b, a, cb, ca,
                   "mean_ttft_ms", "{:.0f}"),
        tenant_row("p99 TTFT ms", noisy["alone"], b, a, cb, ca,
                   "p99_ttft_ms", "{:.0f}"),
        tenant_row("p99 ITL ms", noisy["alone"], b, a, cb, ca, "p99_itl_ms",
                   "{:.0f}"),
        tenant_row("output tok/s", noisy["alone"], b, a, cb, ca,
                   "output_throughput", "{:.1f}"),
        "",
        f"B's p99 TTFT ratio (beside A / alone): **{fmt(noisy_ratio, 2)}** "
        f"(the goal: within 2); with `--tenant_slots={CAPPED_SLOTS}`: "
        f"**{fmt(capped_ratio, 2)}**. Jain's index over served fractions: "
        f"{noisy['both']['fairness']:.3f} "
        f"({capped['fairness']:.3f} capped).",
        "",
        "Without a cap, A's backlog holds every slot, so B's request waits "
        "for one of A's to finish (fair admission gives B the next free "
        "slot, not an immediate one). `--tenant_slots` keeps slots that A "
        "may not take free for newcomers, at the price of A's throughput "
        "while it is alone.",
        "",
        image("noisy/tenants", "per-tenant throughput and TTFT"),
        "",
        f"With `--tenant_slots={CAPPED_SLOTS}`:",
        "",
        image("noisy-capped/tenants", "the same, A capped"),
        "",
        "## 3. Overload",
        "",
        f"{over['rate']:.2f} req/s offered for {mode.overload_s} s (10x the "
        "capacity above) to a server started with `--queue=4`.",
        "",
        "| | |",
        "|---|---|",
        f"| sent | {over['result']['num_prompts']} |",
        f"| completed | {over['result']['completed']} |",
        f"| rejected (RESOURCE_EXHAUSTED) | {len(rejected)} |",
        f"| other errors | {over['result']['failed'] - len(rejected)} |",
        f"| rejection latency p50 / p99 ms | "
        f"{percentile(e2el_ms(rejected), 50):.1f} / "
        f"{percentile(e2el_ms(rejected), 99):.1f} |",
        f"| admitted TTFT p99 ms | {over['result']['p99_ttft_ms']:.0f} |",
        f"| admitted E2EL p99 ms | "
        f"{percentile(e2el_ms(admitted), 99):.0f} |",
        f"| peak server RSS during the run | "
        f"{over['peak_rss_kib'] / 1024:.0f} MiB |",
        f"| server's VmHWM (whole life, model load included) | "
        f"{over['hwm_kib'] / 1024:.0f} MiB |",
        f"| alive afterwards; GET /health | {over['alive']}; "
        f"`{over['health']}` |",
        f"| idle afterwards (queue, running slots) | "
        f"{fmt(over['queue_after'], 0)}, {fmt(over['running_after'], 0)}, "
        f"{fmt(over['idle_s'])} s after the last answer |",
        "",
        image("overload/rss", "server RSS during overload"),
        "",
        "## 4. Cancellation storm",
        "",
        f"{2 * mode.max_tokens}-token streams at 2x capacity for "
        f"{mode.cancel_s} s; the client abandons half of them after a "
        "uniformly random number of chunks (0: right after sending).",
        "",
        "| | |",
        "|---|---|",
        f"| sent | {cancel['result']['num_prompts']} |",
        f"| completed | {cancel['result']['completed']} |",
        f"| abandoned by the client | {cancel['result']['cancelled']} |",
        f"| failed | {cancel['result']['failed']} |",
        f"| cancellations the server counted | "
        f"{cancel['server_cancelled']:.0f} |",
        f"| afterwards: queue, running slots (of {fmt(cancel['slots'], 0)}) "
        f"| {fmt(cancel['queue_after'], 0)}, "
        f"{fmt(cancel['running_after'], 0)} ({fmt(cancel['idle_s'])} s "
        "after the last answer) |",
        "",
        "Streams abandoned before the server admitted them are refused or "
        "dropped before the engine, so the server's count can be below "
        "the client's.",
        "",
        "Every run's `moondream-bench serve --json` result, with its "
        "per-request records, is in `results.json`; "
        "`tools/bench/loadtest.py --report_only --out DIR` rewrites "
        "this page from it.",
    ]
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return headline


def tenant_row(label, alone, b, a, cb, ca, key, form):
    cells = [alone.get(key), b.get(key), a.get(key), cb.get(key), ca.get(key)]
    return (f"| {label} | " + " | ".join(
        "n/a" if v is None else form.format(v) for v in cells) + " |")


def images_encoded(result):
    return int(result.get("server_metrics", {}).get(
        "moondream_images_encoded_total", 0))


def cache_hits(result):
    return int(result.get("server_metrics", {}).get(
        "moondream_image_cache_hits_total", 0))


def plot_rss(samples, out):
    if not samples:
        return None
    os.makedirs(out, exist_ok=True)
    plt = plot_serve.plt
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([t for t, _ in samples], [k / 1024 for _, k in samples])
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title("server memory under 10x overload")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "rss.png")
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------- main

def base_flags(args):
    return ["--dtype=bf16", f"--threads={os.cpu_count()}",
            f"--api_keys={args.keys_file}", "--log_level=warning"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server")
    parser.add_argument("--bench")
    parser.add_argument("--model")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report_only", action="store_true",
                        help="rewrite the report from OUT/results.json")
    args = parser.parse_args()
    mode = Mode(args.quick)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    if args.report_only:
        with open(results_path) as f:
            saved = json.load(f)
        write_report(args, mode, saved["env"], saved["results"], args.out)
        return
    if not (args.server and args.bench and args.model):
        parser.error("--server, --bench and --model are needed to run")
    args.work = tempfile.mkdtemp()  # each run's JSON; all of it lands in
    # results.json
    args.keys_file = os.path.join(tempfile.mkdtemp(), "keys")
    with open(args.keys_file, "w") as f:
        for key, tenant in KEYS.items():
            f.write(f"{key} {tenant}\n")
    log_file = open(os.path.join(args.out, "loadtest.log"), "w")

    def log(text):
        print(text, flush=True)
        log_file.write(text + "\n")
        log_file.flush()

    env = (f"{os.cpu_count()} cores, "
           f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30}"
           f" GiB, {cpu_model()}.")
    started = time.monotonic()
    results = {}
    server = Server(args.server, args.model, base_flags(args))
    try:
        log("== 1. sweep")
        results["sweep"] = scenario_sweep(args, mode, server, log)
        capacity = results["sweep"]["hits"]["capacity_request_throughput"]
        # A quick sweep may find no rate it kept up with: then most of the
        # capacity stands in for the sustainable rate.
        sustainable = (results["sweep"]["hits"]["saturation_request_rate"]
                       or 0.8 * capacity)
        log(f"capacity: {capacity:.3f} req/s, sustained {sustainable:.3f}")
        log("== 2. noisy neighbour")
        results["noisy"] = scenario_noisy(args, mode, server, sustainable, log)
        log("== 4. cancellation storm")
        results["cancel"] = scenario_cancel(args, mode, server, capacity, log)
    finally:
        code = server.stop()
        log(f"server exited with {code}")
    if not mode.quick:  # too few of B's requests in a quick run to tell
        log("== 2b. noisy neighbour, --tenant_slots")
        results["noisy_capped"] = scenario_noisy_capped(
            args, mode, args.server, args.model, results["noisy"]["rate_b"],
            log)
    log("== 3. overload")
    results["overload"] = scenario_overload(args, mode, args.server,
                                            args.model, capacity, log)
    with open(results_path, "w") as f:
        json.dump({"env": env, "results": results}, f)
    headline = write_report(args, mode, env, results, args.out)
    log(json.dumps(headline, indent=2))
    log(f"total {time.monotonic() - started:.0f} s; report: "
        f"{os.path.join(args.out, 'README.md')}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            return m.group(1).strip() if m else "unknown CPU"
    except OSError:
        return "unknown CPU"


if __name__ == "__main__":
    main()
