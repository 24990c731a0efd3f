"""moondream-bench serve against the real server binary over loopback.

A short run on the tiny model: the JSON has vLLM's keys and ours, every
request completes, and the client's mean TTFT and E2EL agree with the
server's own Prometheus histograms for the same run (within 15%, allowing
for transport). Usage: serve_bench_test.py SERVER BENCH SOURCE_DIR
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
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
    return server_process.start_server(
        SERVER, f"{SOURCE}/models/tiny-random",
        ["--http_port=-1", "--log_level=warning"])


def server_mean_ms(metrics, family):
    count = metrics[f"{family}_count"]
    assert count > 0, f"{family}: no observations"
    return 1000 * metrics[f"{family}_sum"] / count


def near(client, server, what):
    ratio = client / server
    print(f"{what}: client {client:.1f} ms, server {server:.1f} ms "
          f"(ratio {ratio:.3f})")
    assert 0.85 <= ratio <= 1.15, f"{what} disagrees by more than 15%"


def main():
    process, grpc_port, metrics_port = start_server()
    try:
        out = os.path.join(tempfile.mkdtemp(), "serve.json")
        # Text skills only, so client and server time the same requests.
        run = subprocess.run(
            [BENCH, "serve", f"--target=127.0.0.1:{grpc_port}",
             f"--metrics_url=127.0.0.1:{metrics_port}",
             "--tasks=query:0.7,caption:0.3", "--num_prompts=24",
             "--request_rate=8", "--max_tokens=16", "--distinct_images=3",
             "--image_buckets=378x378:0.5,640x480:0.5",
             "--tenant=alice:weight=0.75", "--tenant=bob:weight=0.25",
             "--goodput=ttft:60000", "--save_detailed", f"--json={out}"],
            capture_output=True, text=True, timeout=300)
        print(run.stdout)
        assert run.returncode == 0, run.stderr
        result = json.load(open(out))
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
             "mean TTFT")
        near(result["mean_e2el_ms"],
             server_mean_ms(server, "moondream_request_duration_seconds"),
             "mean E2EL")
        print("serve_bench_test: ok")
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
