"""Starts a real moondream-server for the load-test scenarios and the Python
end-to-end tests, and makes Python gRPC stubs from our proto.

The server listens on ephemeral loopback ports and prints where: gRPC on its
first stdout line, metrics on stderr. Its HTTP port is chosen here
(free_port) and passed as --http_port by callers that want HTTP.
"""
import importlib
import socket
import subprocess
import sys
import threading
import urllib.request


def free_port():
    """A loopback port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(server, model_dir, flags, echo_stderr=False):
    """Returns (process, grpc_port, metrics_port); `flags` are extra flags.
    model_dir None: the server's default model. What the server printed on
    stderr before its metrics line (the model banner) is kept in
    process.startup_stderr."""
    model_flag = [] if model_dir is None else [f"--model={model_dir}"]
    process = subprocess.Popen(
        [server] + model_flag + ["--grpc_port=0", "--metrics_port=0",
                                 "--host=127.0.0.1", "--threads=2"] +
        list(flags),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.startup_stderr = []
    line = process.stdout.readline()
    if "serving gRPC on" not in line:
        process.kill()
        raise RuntimeError("server did not start: " + line +
                           process.stderr.read())
    metrics_port = None
    while metrics_port is None:
        err = process.stderr.readline()
        if not err:
            raise RuntimeError("server printed no metrics port")
        process.startup_stderr.append(err)
        if "metrics on http://" in err:
            metrics_port = err.strip().rsplit(":", 1)[1].split("/")[0]

    def drain_stderr():
        for err_line in process.stderr:
            if echo_stderr:
                print("server: " + err_line.rstrip(), flush=True)

    threading.Thread(target=drain_stderr, daemon=True).start()
    return process, line.strip().rsplit(":", 1)[1], metrics_port


def scrape_metrics(target, timeout=10):
    """The server's /metrics at host:port now: sample (with its labels, as
    written) -> value."""
    with urllib.request.urlopen(f"http://{target}/metrics",
                                timeout=timeout) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            samples[name] = float(value)
        except ValueError:
            pass
    return samples


def generate_stubs(source, out_dir):
    """(moondream_pb2, moondream_pb2_grpc) for the repository at `source`."""
    subprocess.run(
        ["protoc", f"-I{source}/proto", f"--python_out={out_dir}",
         f"--grpc_python_out={out_dir}",
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
         f"{source}/proto/moondream/v1/moondream.proto"],
        check=True)
    sys.path.insert(0, out_dir)
    return (importlib.import_module("moondream.v1.moondream_pb2"),
            importlib.import_module("moondream.v1.moondream_pb2_grpc"))
