"""moondream-bench serve against the real server binary over loopback.

A short run on the tiny model over each protocol (gRPC, and HTTP with SSE
streams): the JSON has vLLM's keys and ours, every request completes, and the
client's mean TTFT and E2EL agree with the server's own Prometheus histograms
for the same run (within 15%, allowing for transport). Then, per protocol, a
run that abandons half the streams: the client counts them as cancelled, and
the server frees every slot and queue place they held. And a short run over
TLS, against a server with a self-signed certificate. Usage:
serve_bench_test.py SERVER BENCH SOURCE_DIR
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tools", "bench"))
import server_process  # noqa: E402

SERVER, BENCH, SOURCE = sys.argv[1:4]

VLLM_KEYS = [
    "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput",
    "total_token_throughput", "max_output_tokens_per_s",
    "max_concurrent_requests", "duration",
] + [f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl", "e2el")
     for stat in ("mean", "median", "std", "p99")]
OUR_KEYS = ["per_tenant", "fairness", "errors_by_code", "server_metrics"]


def start_server():
    """Returns (process, {"grpc": port, "http": port}, metrics_port)."""
    http_port = server_process.free_port()
    process, grpc_port, metrics_port = server_process.start_server(
        SERVER, f"{SOURCE}/models/tiny-random",
        [f"--http_port={http_port}", "--log_level=warning"])
    return process, {"grpc": grpc_port, "http": http_port}, metrics_port


def server_mean_ms(metrics, family):
    count = metrics[f"{family}_count"]
    assert count > 0, f"{family}: no observations"
    return 1000 * metrics[f"{family}_sum"] / count


def near(client, server, what):
    ratio = client / server
    print(f"{what}: client {client:.1f} ms, server {server:.1f} ms "
          f"(ratio {ratio:.3f})")
    assert 0.85 <= ratio <= 1.15, f"{what} disagrees by more than 15%"


def run_bench(protocol, port, metrics_port, flags):
    """Runs moondream-bench serve; returns its JSON."""
    out = os.path.join(tempfile.mkdtemp(), "serve.json")
    run = subprocess.run(
        [BENCH, "serve", f"--protocol={protocol}",
         f"--target=127.0.0.1:{port}",
         f"--metrics_url=127.0.0.1:{metrics_port}", f"--json={out}"] + flags,
        capture_output=True, text=True, timeout=300)
    print(run.stdout)
    assert run.returncode == 0, run.stderr
    with open(out) as f:
        return json.load(f)


def check_run(protocol, port, metrics_port):
    print(f"--- {protocol}")
    # Text skills only, so client and server time the same requests.
    result = run_bench(protocol, port, metrics_port, [
        "--tasks=query:0.7,caption:0.3", "--num_prompts=24",
        "--request_rate=8", "--max_tokens=16", "--distinct_images=3",
        "--image_buckets=378x378:0.5,640x480:0.5",
        "--tenant=alice:weight=0.75", "--tenant=bob:weight=0.25",
        "--goodput=ttft:60000", "--save_detailed"])
    for key in VLLM_KEYS + OUR_KEYS:
        assert key in result, f"missing key {key}"
    assert result["completed"] == 24, result["errors_by_code"]
    assert result["failed"] == 0
    assert sorted(result["per_tenant"]) == ["alice", "bob"]
    assert len(result["requests"]) == 24
    assert 0 < result["fairness"] <= 1
    assert result["total_output_tokens"] > 0
    server = result["server_metrics"]
    near(result["mean_ttft_ms"],
         server_mean_ms(server, "moondream_time_to_first_token_seconds"),
         f"{protocol} mean TTFT")
    near(result["mean_e2el_ms"],
         server_mean_ms(server, "moondream_request_duration_seconds"),
         f"{protocol} mean E2EL")


def server_samples(metrics_port):
    """The server's /metrics now: sample (with labels) -> value."""
    return server_process.scrape_metrics(f"127.0.0.1:{metrics_port}")


def server_cancelled(samples):
    return sum(v for k, v in samples.items()
               if k.startswith("moondream_requests_total{")
               and 'status="cancelled"' in k)


def check_cancellation(protocol, port, metrics_port):
    """Half the streams abandoned mid-way: the client counts them as
    cancelled (not failed), and the server cancels them and lets go of all
    their slots and queue places."""
    print(f"--- {protocol}, cancelling")
    cancelled_before = server_cancelled(server_samples(metrics_port))
    num_prompts = 16
    # Long streams: the server must still be generating when a client
    # leaves. With 32 tokens a fast machine finished every stream (~30 ms)
    # before the client walked away from it, and counted no cancellation.
    result = run_bench(protocol, port, metrics_port, [
        "--tasks=query:0.5,caption:0.5", f"--num_prompts={num_prompts}",
        "--request_rate=inf", "--max_tokens=512", "--ignore_eos",
        "--distinct_images=2", "--image_buckets=378x378:1",
        "--cancel_fraction=0.5", "--seed=3"])
    assert result["cancelled"] > 0, result
    assert result["failed"] == 0, result["errors_by_code"]
    assert result["completed"] + result["cancelled"] == num_prompts, result
    # The server notices a departed client at its next step: give it a
    # moment to count the cancellations and free the slots. It may count
    # fewer than the client (a stream can end as the client leaves it), but
    # never none.
    gauges = ["moondream_running_slots", "moondream_queue_length"]
    deadline = time.monotonic() + 10
    while True:
        samples = server_samples(metrics_port)
        busy = {g: samples.get(g) for g in gauges if samples.get(g) != 0}
        cancelled = server_cancelled(samples) - cancelled_before
        if not busy and 0 < cancelled <= result["cancelled"]:
            break
        assert time.monotonic() < deadline, (
            f"server still busy: {busy}, cancelled {cancelled} of "
            f"{result['cancelled']}")
        time.sleep(0.1)
    print(f"{protocol}: client cancelled {result['cancelled']}, completed "
          f"{result['completed']}; server cancelled {cancelled:.0f}, "
          f"running slots and queue 0")


def check_tls():
    """--tls against a server with a certificate: every request completes
    through the encrypted channel, verified against the given roots."""
    print("--- grpc over TLS")
    tmp = tempfile.mkdtemp()
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
         key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True)
    process, grpc_port, metrics_port = server_process.start_server(
        SERVER, f"{SOURCE}/models/tiny-random",
        ["--http_port=-1", "--log_level=warning", f"--tls_cert={cert}",
         f"--tls_key={key}"])
    try:
        out = os.path.join(tmp, "tls.json")
        run = subprocess.run(
            [BENCH, "serve", f"--target=localhost:{grpc_port}", "--tls",
             f"--tls_ca={cert}", "--tasks=query:1", "--num_prompts=4",
             "--max_tokens=4", "--distinct_images=1",
             "--image_buckets=378x378:1", f"--json={out}"],
            capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        with open(out) as f:
            result = json.load(f)
        assert result["completed"] == 4, result["errors_by_code"]
        print("grpc over TLS: 4 of 4 completed")
    finally:
        process.kill()
        process.wait()


def main():
    check_tls()
    process, ports, metrics_port = start_server()
    try:
        for protocol in ("grpc", "http"):
            check_run(protocol, ports[protocol], metrics_port)
        for protocol in ("grpc", "http"):
            check_cancellation(protocol, ports[protocol], metrics_port)
        print("serve_bench_test: ok")
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
