#!/usr/bin/python3
"""A client that is not ours: Debian's python3-grpcio calls every RPC of a
real moondream-server process, then sends SIGTERM while streams are in flight
and checks that every stream completes and the process exits 0.

usage: python_client_test.py SERVER_BINARY SOURCE_DIR
"""

import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tools", "bench"))
import server_process  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
from e2e_support import FAILED, PASSED, check, generate_stubs  # noqa: E402,E501

SERVER, SOURCE = sys.argv[1], sys.argv[2]


def start_server():
    return server_process.start_server(
        SERVER, f"{SOURCE}/models/tiny-random",
        # fp32 (not auto's bf16): the drain check needs its long streams
        # still running a few tenths of a second after SIGTERM.
        ["--slots=3", "--grace_seconds=60", "--dtype=fp32"], echo_stderr=True)


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def health(channel):
    # grpc.health.v1.Health/Check with an empty request; SERVING is
    # status = 1, serialized as b"\x08\x01".
    check_call = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda r: r,
        response_deserializer=lambda r: r)
    return check_call(b"", timeout=10)


def image_bytes(name):
    with open(f"{SOURCE}/tests/data/golden/images/{name}.png", "rb") as f:
        return f.read()


FAMILIES = [
    "moondream_queue_seconds", "moondream_time_to_first_token_seconds",
    "moondream_inter_token_latency_seconds",
    "moondream_request_duration_seconds", "moondream_requests_total",
    "moondream_tokens_in_total", "moondream_tokens_out_total",
    "moondream_image_cache_hits_total", "moondream_image_cache_misses_total",
    "moondream_queue_length", "moondream_running_slots",
    "moondream_kv_usage_ratio", "moondream_batch_size"]


def scrape_has_every_family(metrics_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                  timeout=10).read().decode()
    typed = {line.split()[2] for line in text.splitlines()
             if line.startswith("# TYPE ")}
    missing = [f for f in FAMILIES if f not in typed]
    check("GET /metrics holds every family", not missing, missing)
    check("requests are counted by skill, status and tenant",
          'moondream_requests_total{skill="query",status="ok",'
          'tenant="anonymous"}' in text)


def every_rpc(pb, stub, channel):
    check("health is SERVING", health(channel) == b"\x08\x01")
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    check("GetModelInfo says the weights are random", info.random_weights)
    check("GetModelInfo image positions", info.image_positions == 730,
          info.image_positions)

    handle = stub.EncodeImage(pb.EncodeImageRequest(
        image=pb.Image(data=image_bytes("rgb_378x378"))), timeout=60)
    check("EncodeImage returns a handle",
          handle.handle and handle.width == 378 and handle.height == 378,
          handle)

    chunks = list(stub.Caption(pb.CaptionRequest(
        image=pb.Image(handle=handle.handle), length=pb.CaptionRequest.SHORT,
        settings=pb.SamplingSettings(max_tokens=8)), timeout=60))
    check("Caption streams and finishes",
          chunks and chunks[-1].finished and
          chunks[-1].finish_reason in ("eos", "max_tokens"), chunks)

    chunks = list(stub.Query(pb.QueryRequest(
        image=pb.Image(handle=handle.handle), question=b"What is this?",
        settings=pb.SamplingSettings(max_tokens=8)), timeout=60))
    check("Query on a handle streams and hits the image cache",
          chunks and chunks[-1].finished and
          chunks[-1].usage.image_cache_hit, chunks)

    detect = stub.Detect(pb.DetectRequest(
        image=pb.Image(data=image_bytes("gray_200x150")), object=b"face",
        max_objects=3), timeout=60)
    check("Detect answers", len(detect.objects) <= 3, detect)

    point = stub.Point(pb.PointRequest(
        image=pb.Image(handle=handle.handle), object=b"cup"), timeout=60)
    check("Point answers", len(point.points) <= 50, point)

    gaze = stub.DetectGaze(pb.DetectGazeRequest(
        image=pb.Image(handle=handle.handle), eye=pb.Point(x=0.4, y=0.3)),
        timeout=60)
    check("DetectGaze answers", gaze.usage.prompt_tokens > 0, gaze)

    try:
        list(stub.Query(pb.QueryRequest(
            image=pb.Image(handle=handle.handle), question=b""), timeout=30))
        check("empty question is refused", False, "no error")
    except grpc.RpcError as e:
        check("empty question is INVALID_ARGUMENT",
              e.code() == grpc.StatusCode.INVALID_ARGUMENT and
              "question" in e.details(), (e.code(), e.details()))
    try:
        stub.Point(pb.PointRequest(image=pb.Image(handle="nope"),
                                   object=b"cup"), timeout=30)
        check("unknown handle is refused", False, "no error")
    except grpc.RpcError as e:
        check("unknown handle is NOT_FOUND",
              e.code() == grpc.StatusCode.NOT_FOUND, (e.code(), e.details()))


def drain_on_sigterm(pb, stub, channel, process, metrics_port):
    # Six long streams (ignore_eos: exactly max_tokens each) on a server with
    # 3 slots: three run, three wait queued. 1,200 tokens (the most the
    # context leaves after the 730-position prefix is ~1,300) keep the first
    # three running for over a second even on a fast machine: with 400 a
    # contended CI run once saw them finish before the last three arrived,
    # so the queue never held three and SIGTERM came after the work.
    started = [threading.Event() for _ in range(6)]

    def stream(i):
        chunks = []
        for chunk in stub.Query(pb.QueryRequest(
                image=pb.Image(data=image_bytes("gray_200x150")),
                question=b"Tell me everything.",
                settings=pb.SamplingSettings(max_tokens=1200, ignore_eos=True)),
                timeout=300):
            chunks.append(chunk)
            started[i].set()
        return chunks

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(stream, i) for i in range(6)]
        deadline = time.time() + 60
        while time.time() < deadline and not (
                sum(e.is_set() for e in started) >= 3 and
                metric(metrics_port, "moondream_queue_length") == 3):
            time.sleep(0.01)
        running = sum(e.is_set() for e in started)
        queued = metric(metrics_port, "moondream_queue_length")
        check("three streams running and three queued at SIGTERM",
              running >= 3 and queued == 3, (running, queued))
        # Scrapers keep reading /metrics through the drain and the exit
        # (a scrape racing the engine's destruction used to abort the
        # process), and a second SIGTERM follows the first (it used to kill
        # the drain): neither may cost a stream or the clean exit.
        stop_scraping = threading.Event()

        def scrape():
            while not stop_scraping.is_set():
                try:
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{metrics_port}/metrics",
                        timeout=5).read()
                except OSError:
                    time.sleep(0.01)

        scrapers = [threading.Thread(target=scrape) for _ in range(3)]
        for t in scrapers:
            t.start()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        draining = sum(not f.done() for f in futures)
        # The listener closes at SIGTERM and gRPC sends GOAWAY: a probe
        # either still reaches the health service (NOT_SERVING) or is
        # refused at connect; it never sees SERVING.
        try:
            status = health(channel)
        except grpc.RpcError as e:
            status = e.code()
        check("health is NOT_SERVING or refused while draining",
              status in (b"\x08\x02", grpc.StatusCode.UNAVAILABLE), status)
        try:
            list(stub.Query(pb.QueryRequest(
                image=pb.Image(data=image_bytes("gray_200x150")),
                question=b"late", settings=pb.SamplingSettings(max_tokens=2)),
                timeout=10))
            check("a call while draining is refused", False, "accepted")
        except grpc.RpcError as e:
            check("a call while draining is UNAVAILABLE",
                  e.code() == grpc.StatusCode.UNAVAILABLE and draining > 0,
                  (e.code(), e.details(), draining))
        results = []
        for f in futures:
            try:
                results.append(f.result())
            except grpc.RpcError as e:
                results.append(e)
    completed = [r for r in results
                 if isinstance(r, list) and r and r[-1].finished]
    check("every in-flight stream completed", len(completed) == 6,
          [r if not isinstance(r, list) else "ok" for r in results])
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        code = "timeout"
    stop_scraping.set()
    for t in scrapers:
        t.join()
    check("the server exited 0 (two SIGTERMs, scrapers running)", code == 0,
          code)


def help_lists_every_flag():
    # Issue 13 #11: --help used to print "No flags matched."
    out = subprocess.run([SERVER, "--help"], capture_output=True, text=True,
                         timeout=60)
    text = out.stdout + out.stderr
    flags = ["--model", "--slots", "--grace_seconds", "--metrics_host",
             "--log_level", "--handles_mb", "--queue"]
    missing = [f for f in flags if f not in text]
    check("--help lists every flag", not missing and
          "No flags matched" not in text, missing or text[:300])


def main():
    help_lists_every_flag()
    with tempfile.TemporaryDirectory() as out_dir:
        pb, pb_grpc = generate_stubs(SOURCE, out_dir)
        process, port, metrics_port = start_server()
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = pb_grpc.MoondreamStub(channel)
            every_rpc(pb, stub, channel)
            scrape_has_every_family(metrics_port)
            drain_on_sigterm(pb, stub, channel, process, metrics_port)
        finally:
            if process.poll() is None:
                process.kill()
    print(f"{len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
