#!/usr/bin/python3
"""Hardening probe: attacks a real moondream-server from outside, on loopback.

Four probes, each against its own fresh server process (--threads=2,
--host=127.0.0.1, ephemeral ports, --log_level=warning):

  slowloris  many TCP clients trickle one header byte every few seconds to the
             HTTP port and never finish, while /health is timed and a real
             /v1/query (64x64 PNG, max_tokens 4) runs every 2 s. The server
             should answer 408 / close them (header deadline) and stay healthy.
  sigterm    /metrics scrapers and two gRPC streams in flight, then SIGTERM
             (in half of the runs a second one 0.1 s later),
             --grace_seconds=10: the server must exit 0, in time, without
             an abort on stderr.
  handles    distinct 3000x3000 PNGs (~31 KB each) sent to EncodeImage one
             after another: RSS against the --handles_mb byte budget.
  bigimages  eight 7000x7000 PNGs (~48 KB each) posted at once to /v1/query:
             with the default --max_image_pixels they must get a quick 413;
             then again with --max_image_pixels=50000000 (an operator who
             raised the limit), where --decode_concurrency must keep /health
             responsive (row "bigimages_raised").

For every probe the server's RSS is polled from /proc/PID/status every 100 ms
(peak reported, VmHWM as a cross-check) and a watcher times GET /health
every 200 ms (p50 and worst reported; over 2 s is a defect). The result is one
summary table on stdout and, with --json FILE, every measurement as JSON. The
exit status is 0 when every probe's outcome is OK, 1 when one found a DEFECT,
2 on an ERROR (usage, setup, a server that would not start, a probe that
failed). Defaults take ~5 minutes on a 2-core machine,
--quick ~2.

usage:
  python3 tools/probe/hardening_probe.py \\
      --server build/service/moondream-server --model models/tiny-random \\
      [--only slowloris,sigterm,handles,bigimages] [--json out.json] \\
      [--quick] [-- EXTRA_SERVER_FLAGS...]

Needs only the Python standard library and Debian's python3-grpcio (the gRPC
stubs are generated from proto/ with protoc + grpc_python_plugin, or
grpc_tools when installed). Every server it starts is killed when it exits,
however it exits (try/finally, atexit, and PR_SET_PDEATHSIG).
"""

import argparse
import atexit
import base64
import concurrent.futures
import ctypes
import importlib
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import zlib

PROBES = ("slowloris", "sigterm", "handles", "bigimages")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HEALTH_LIMIT_MS = 2000.0  # /health slower than this is a defect.
# stderr lines that mean the process died badly (or nearly did).
BAD_STDERR = re.compile(
    r"mutex corrupt|abort|terminate called|check failed|segmentation fault|"
    r"sigsegv|sigabrt|sigbus|core dumped|addresssanitizer|pure virtual|"
    r"double free|corrupted|stack smashing", re.IGNORECASE)


def log(*parts):
    print("[probe %s]" % time.strftime("%H:%M:%S"), *parts, file=sys.stderr,
          flush=True)


class SetupError(Exception):
    """The probe cannot run (missing binary, model, tool, server start)."""


# --------------------------------------------------------------------------
# Small helpers: statistics, PNGs, HTTP.

def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def rnd(x, digits=1):
    return None if x is None else round(x, digits)


def _adler32_combine(adler1, adler2, len2):
    """zlib's adler32_combine: the Adler-32 of A+B from those of A and B."""
    base = 65521
    rem = len2 % base
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 = (sum1 + (adler2 & 0xFFFF) + base - 1) % base
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + base - rem) % base
    return (sum2 << 16) | sum1


_PNG_TAILS = {}


def png(width, height, seed, gray=False):
    """A uniform PNG with one pixel of row 0 set from `seed`: distinct
    content (a distinct image hash), a file of a few tens of KB even at
    7000x7000.

    Rows 1.. are identical for every seed, so their deflate stream is made
    once per size and reused: row 0 is deflated on its own, ended with a
    full flush (byte-aligned, no back references across it), the shared
    tail follows, and the Adler-32s are combined."""
    channels = 1 if gray else 3
    # Black gray rows are all zero bytes, deflate's best case (~1030:1):
    # 7000x7000 is ~48 KB.
    pixel = bytes([0]) if gray else bytes([200, 100, 50])
    row = b"\x00" + pixel * width  # filter 0 + pixels
    key = (width, height, gray)
    if key not in _PNG_TAILS:
        rest = row * (height - 1)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        _PNG_TAILS[key] = (c.compress(rest) + c.flush(zlib.Z_FINISH),
                           zlib.adler32(rest), len(rest))
    tail, tail_adler, tail_len = _PNG_TAILS[key]
    first = bytearray(row)
    varied = bytes([seed % 256, (seed >> 8) % 256, 7 + (seed >> 16) % 200])
    first[1:1 + channels] = varied[:channels]
    if gray:  # one byte per pixel: vary two pixels to get 65536 seeds
        first[2] = (seed >> 8) % 256
    first = bytes(first)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(first) + c.flush(zlib.Z_FULL_FLUSH)
    adler = _adler32_combine(zlib.adler32(first), tail_adler, tail_len)
    idat = b"\x78\xda" + head + tail + struct.pack(">I", adler)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if gray else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def data_url(image):
    return "data:image/png;base64," + base64.b64encode(image).decode()


def http_request(url, body=None, timeout=30.0):
    """(HTTP status or 'ERR:<what>', milliseconds, response text)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, body, headers)
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode(errors="replace")
            status = response.status
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        status = e.code
    except (OSError, urllib.error.URLError) as e:
        reason = getattr(e, "reason", e)
        text, status = str(reason), "ERR:" + type(reason).__name__
    return status, (time.monotonic() - start) * 1000.0, text


def query_body(image, max_tokens=4, question="What is in this image?"):
    return json.dumps({"image_url": data_url(image), "question": question,
                       "settings": {"max_tokens": max_tokens}}).encode()


def tally(values):
    out = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------
# The server process, its RSS poller and the /health watcher.

_LIVE = set()  # every Server not yet reaped: atexit kills what is left


def _kill_live_servers():
    for server in list(_LIVE):
        server.kill()


atexit.register(_kill_live_servers)


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent():
    # In the child between fork and exec: PR_SET_PDEATHSIG (1), so the
    # kernel SIGKILLs the server when the probe dies, even by SIGKILL (kept
    # across the server's own re-exec).
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL))


class Server:
    """One moondream-server process on 127.0.0.1 with ephemeral ports.

    A context manager: __enter__ starts it and waits for the startup lines
    naming its gRPC, HTTP and metrics ports; __exit__ kills it (if it is
    still running). While it runs, a thread polls VmRSS every 100 ms and
    threads keep its stdout/stderr (which are also kept for inspection)."""

    def __init__(self, config, flags=(), name="server"):
        self.config = config
        self.name = name
        self.args = [config.server, f"--model={config.model}",
                     "--grpc_port=0", "--http_port=0", "--metrics_port=0",
                     "--host=127.0.0.1", "--threads=2", "--log_level=warning",
                     *config.extra, *flags]
        self.process = None
        self.grpc_port = self.http_port = self.metrics_port = None
        self.stdout, self.stderr = [], []  # (monotonic time, line)
        self.rss = []  # (monotonic time, MB)
        self.hwm_mb = None
        self.exit_code = None
        self._lines = threading.Condition()
        self._stop = threading.Event()
        self._threads = []

    # -- lifecycle
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.kill()

    def start(self):
        log(f"{self.name}: starting", " ".join(self.args[1:]))
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
            preexec_fn=_die_with_parent)
        _LIVE.add(self)
        for stream, into in ((self.process.stdout, self.stdout),
                             (self.process.stderr, self.stderr)):
            self._spawn(self._read_lines, stream, into)
        self._spawn(self._poll_rss)
        deadline = time.monotonic() + self.config.start_timeout
        with self._lines:
            while not (self.grpc_port and self.http_port and
                       self.metrics_port):
                if self.process.poll() is not None or \
                        time.monotonic() > deadline:
                    break
                self._lines.wait(0.2)
        if not (self.grpc_port and self.http_port and self.metrics_port):
            code = self.process.poll()
            self.kill()
            raise SetupError(
                f"{self.name} did not start (exit {code}; ports grpc="
                f"{self.grpc_port} http={self.http_port} metrics="
                f"{self.metrics_port}); its output:\n" + self.output_tail(30))
        log(f"{self.name}: pid {self.process.pid} grpc :{self.grpc_port} "
            f"http :{self.http_port} metrics :{self.metrics_port}")

    def kill(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._finish()

    def wait(self, timeout):
        """The exit code, or None if it is still running after `timeout`."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._finish()
        return self.process.returncode

    def _finish(self):
        if self.exit_code is None:
            self.exit_code = self.process.returncode
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        _LIVE.discard(self)

    def alive(self):
        return self.process is not None and self.process.poll() is None

    # -- threads
    def _spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _read_lines(self, stream, into):
        for line in stream:
            line = line.rstrip("\n")
            with self._lines:
                into.append((time.monotonic(), line))
                self._parse_port(line)
                self._lines.notify_all()

    def _parse_port(self, line):
        m = re.search(r"serving gRPC on \S*:(\d+)", line)
        if m:
            self.grpc_port = int(m.group(1))
        m = re.search(r"HTTP API on http://\S*?:(\d+)/", line)
        if m:
            self.http_port = int(m.group(1))
        m = re.search(r"metrics on http://\S*?:(\d+)/", line)
        if m:
            self.metrics_port = int(m.group(1))

    def _poll_rss(self):
        path = f"/proc/{self.process.pid}/status"
        while not self._stop.is_set() and self.process.poll() is None:
            try:
                with open(path) as f:
                    fields = dict(l.split(":", 1) for l in f if ":" in l)
                rss = int(fields["VmRSS"].split()[0]) / 1024.0
                self.hwm_mb = int(fields["VmHWM"].split()[0]) / 1024.0
                self.rss.append((time.monotonic(), rss))
            except (OSError, KeyError, ValueError):
                pass  # exiting (a zombie has no VmRSS)
            self._stop.wait(0.1)

    # -- measurements
    def rss_mb(self):
        return self.rss[-1][1] if self.rss else None

    def peak_mb(self, since=None, until=None):
        values = [mb for t, mb in self.rss
                  if (since is None or t >= since) and
                  (until is None or t <= until)]
        return max(values) if values else None

    def timeline(self, step=1.0):
        """[seconds since start, max MB] per `step` seconds, for the JSON."""
        if not self.rss:
            return []
        t0, buckets = self.rss[0][0], {}
        for t, mb in self.rss:
            k = int((t - t0) / step)
            buckets[k] = max(buckets.get(k, 0.0), mb)
        return [[round(k * step, 1), round(mb)] for k, mb in
                sorted(buckets.items())]

    def url(self, path, port=None):
        return f"http://127.0.0.1:{port or self.http_port}{path}"

    def output_tail(self, n=20):
        lines = sorted(self.stdout + self.stderr)
        return "\n".join("  " + l for _, l in lines[-n:])

    def bad_stderr_lines(self):
        return [l for _, l in self.stderr if BAD_STDERR.search(l)]


class HealthWatcher:
    """Times GET /health every `period` seconds in a thread while entered."""

    def __init__(self, server, period=0.2, timeout=30.0):
        self.server, self.period, self.timeout = server, period, timeout
        self.samples = []  # (monotonic time, status, ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)

    def _run(self):
        url = self.server.url("/health")
        while not self._stop.is_set():
            status, ms, _ = http_request(url, timeout=self.timeout)
            self.samples.append((time.monotonic(), status, ms))
            self._stop.wait(self.period)

    def summary(self, until=None):
        """p50/worst over answered requests (any HTTP status) up to `until`;
        requests that got no answer count as failures (their time is the
        time until the error, a timeout shows as ~timeout ms)."""
        rows = [s for s in self.samples if until is None or s[0] <= until]
        answered = [ms for _, st, ms in rows if isinstance(st, int)]
        failed = [(st, ms) for _, st, ms in rows if not isinstance(st, int)]
        every = answered + [ms for _, ms in failed]
        return {"samples": len(rows), "p50_ms": rnd(pct(answered, 0.5)),
                "p99_ms": rnd(pct(answered, 0.99)),
                "worst_ms": rnd(max(every) if every else None),
                "over_2s": sum(ms > HEALTH_LIMIT_MS for ms in every),
                "statuses": tally(st for _, st, _ in rows)}


# --------------------------------------------------------------------------
# gRPC stubs.

class Grpc:
    """The generated moondream.v1 modules and grpc, made once per run."""

    def __init__(self, proto_dir):
        import grpc  # noqa: imported here so --help works without it
        self.grpc = grpc
        self._dir = tempfile.mkdtemp(prefix="md_probe_stubs_")
        atexit.register(shutil.rmtree, self._dir, True)
        proto = os.path.join(proto_dir, "moondream/v1/moondream.proto")
        if not os.path.isfile(proto):
            raise SetupError(f"no {proto} (use --proto_dir)")
        plugin = shutil.which("grpc_python_plugin") or \
            "/usr/bin/grpc_python_plugin"
        commands = []  # Debian's protoc first; grpc_tools as a fallback
        if shutil.which("protoc") and os.path.exists(plugin):
            commands.append(["protoc",
                             f"--plugin=protoc-gen-grpc_python={plugin}"])
        if importlib.util.find_spec("grpc_tools") is not None:
            commands.append([sys.executable, "-m", "grpc_tools.protoc",
                             "--experimental_allow_proto3_optional"])
        if not commands:
            raise SetupError("need protoc and grpc_python_plugin (apt install "
                             "protobuf-compiler protobuf-compiler-grpc) or "
                             "python3-grpc-tools")
        errors = []
        for cmd in commands:
            result = subprocess.run(
                cmd + [f"-I{proto_dir}", f"--python_out={self._dir}",
                       f"--grpc_python_out={self._dir}", proto],
                capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                break
            errors.append(" ".join(cmd[:3]) + ": " + result.stderr[-1000:])
        else:
            raise SetupError("generating the gRPC stubs failed:\n" +
                             "\n".join(errors))
        sys.path.insert(0, self._dir)
        self.pb = importlib.import_module("moondream.v1.moondream_pb2")
        self.pb_grpc = importlib.import_module(
            "moondream.v1.moondream_pb2_grpc")

    def stub(self, server):
        channel = self.grpc.insecure_channel(
            f"127.0.0.1:{server.grpc_port}",
            options=[("grpc.max_send_message_length", 64 << 20),
                     ("grpc.max_receive_message_length", 64 << 20)])
        return channel, self.pb_grpc.MoondreamStub(channel)

    def code(self, error):
        try:
            return error.code().name
        except Exception:  # noqa: not an RpcError with a code
            return type(error).__name__


# --------------------------------------------------------------------------
# Probe 1: slowloris.

class _SlowClient:
    """One slowloris connection: a request that never ends, one byte at a
    time. When the server closes it, the client opens a new one."""

    # The header never ends: one more byte of X-Slow each interval.
    REQUEST = (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " +
               b"a" * 100000)

    def __init__(self, port, first_send):
        self.port, self.next = port, first_send
        self.sock, self.sent, self.reply = None, 0, b""
        self.connected_at = self.first_byte_at = None
        self.error = None

    def connect(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        try:
            self.sock.connect(("127.0.0.1", self.port))
        except OSError as e:
            self.sock.close()
            self.sock, self.error = None, f"connect: {e}"
            return False
        self.sock.setblocking(False)
        self.connected_at = time.monotonic()
        self.sent, self.reply, self.first_byte_at = 0, b"", None
        return True

    def send_byte(self):
        """False when the server has closed the connection."""
        try:
            self.sock.send(self.REQUEST[self.sent:self.sent + 1])
        except OSError:
            return False
        if self.sent == 0:
            self.first_byte_at = time.monotonic()
        self.sent += 1
        return True

    def receive(self):
        """False when the server has closed the connection."""
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return True
        except OSError:
            return False
        self.reply += data
        return bool(data)

    def record(self, how):
        """The finished connection's record; the socket is closed."""
        now = time.monotonic()
        self.sock.close()
        self.sock = None
        status = self.reply.split(b"\r\n", 1)[0].decode(errors="replace")
        return {"how": how, "reply": status or "(no reply)",
                "bytes_sent": self.sent,
                "after_connect_s": now - self.connected_at,
                "after_first_byte_s": (now - self.first_byte_at
                                       if self.first_byte_at else None)}


def probe_slowloris(cfg, rpc):
    """Slow clients hold the HTTP port while /health and /v1/query are timed.

    Each of the N clients keeps one connection trickling a header byte every
    3 s; a connection the server closes is replaced at once (a new
    connection of the same client), so N slow connections stand for the
    whole duration."""
    n, duration, interval = cfg.slowloris_clients, cfg.slowloris_seconds, 3.0
    small = png(64, 64, 1)
    result = {"clients": n, "duration_s": duration, "byte_every_s": interval}
    with Server(cfg, name="slowloris") as server, \
            HealthWatcher(server) as health:
        time.sleep(1.0)  # a baseline for /health
        # Warm up: the first query on an image runs the vision encoder
        # (seconds); the timed ones below hit the image cache.
        warmup = http_request(server.url("/v1/query"), query_body(small),
                              timeout=60)
        rss_before = server.rss_mb()
        start = time.monotonic()
        clients = [_SlowClient(server.http_port, start + interval * i / n)
                   for i in range(n)]
        connect_failures = 0
        for c in clients:
            connect_failures += not c.connect()
        log(f"slowloris: {n - connect_failures}/{n} connected in "
            f"{time.monotonic() - start:.2f} s")

        queries, stop = [], threading.Event()

        def query_loop():
            url, body = server.url("/v1/query"), query_body(small)
            while not stop.is_set():
                t0 = time.monotonic()
                status, ms, text = http_request(url, body, timeout=60)
                queries.append({"t_s": rnd(t0 - start), "status": status,
                                "ms": rnd(ms), "error": None if status == 200
                                else text[:200]})
                stop.wait(max(0.0, 2.0 - (time.monotonic() - t0)))

        querier = threading.Thread(target=query_loop, daemon=True)
        querier.start()

        closed = []  # records of connections the server ended
        end = start + duration
        while time.monotonic() < end:
            live = [c for c in clients if c.sock is not None]
            for c in clients:  # replace connections that failed to open
                if c.sock is None and c.next <= time.monotonic():
                    if not c.connect():
                        connect_failures += 1
                        c.next += interval
            next_send = min(c.next for c in clients)
            wait = max(0.0, min(next_send, end) - time.monotonic())
            readable, _, _ = select.select([c.sock for c in live], [], [],
                                           wait)
            by_sock = {c.sock: c for c in live}
            for sock in readable:
                c = by_sock[sock]
                if not c.receive():
                    closed.append(c.record("closed"))
                    if time.monotonic() < end and not c.connect():
                        connect_failures += 1
            now = time.monotonic()
            for c in clients:
                if c.sock is not None and c.next <= now:
                    if not c.send_byte():
                        closed.append(c.record("send failed"))
                        if not c.connect():
                            connect_failures += 1
                    c.next += interval
        held = sum(c.sock is not None for c in clients)
        for c in clients:
            if c.sock is not None:
                c.sock.close()
        stop.set()
        querier.join(timeout=70)
        finished = time.monotonic()
        time.sleep(0.5)
        after_status, after_ms, _ = http_request(server.url("/health"))
        after_query = http_request(server.url("/v1/query"), query_body(small),
                                   timeout=60)
        watch = health.summary()
        peak = server.peak_mb()
        alive = server.alive()

    by_byte = [r["after_first_byte_s"] for r in closed
               if r["after_first_byte_s"] is not None]
    by_connect = [r["after_connect_s"] for r in closed]
    replies = tally(r["reply"] for r in closed)
    statuses = [q["status"] for q in queries]
    q_ms = [q["ms"] for q in queries]
    result.update({
        "connections_opened": len(closed) + held,
        "connect_failures": connect_failures,
        "closed_by_server": len(closed),
        "still_open_at_end": held,
        "close_after_first_byte_s": {"min": rnd(min(by_byte, default=None)),
                                     "p50": rnd(pct(by_byte, 0.5)),
                                     "max": rnd(max(by_byte, default=None))},
        "close_after_connect_s": {"min": rnd(min(by_connect, default=None)),
                                  "max": rnd(max(by_connect, default=None))},
        "first_close_at_s": rnd(min((r["after_connect_s"] for r in closed),
                                    default=None)),
        "close_how": tally(r["how"] for r in closed),
        "replies_before_close": replies,
        "bytes_sent_before_close_p50": pct([r["bytes_sent"] for r in closed],
                                           0.5),
        "queries": {"count": len(queries), "statuses": tally(statuses),
                    "p50_ms": rnd(pct(q_ms, 0.5)),
                    "worst_ms": rnd(max(q_ms, default=None)),
                    "log": queries},
        "warmup_query": {"status": warmup[0], "ms": rnd(warmup[1])},
        "health": watch,
        "health_after": {"status": after_status, "ms": rnd(after_ms)},
        "query_after": {"status": after_query[0], "ms": rnd(after_query[1])},
        "rss_before_mb": rnd(rss_before), "rss_peak_mb": rnd(peak),
        "vm_hwm_mb": rnd(server.hwm_mb),
        "probe_seconds": rnd(finished - start),
        "rss_timeline": server.timeline(),
    })
    problems = []
    if watch["worst_ms"] is not None and watch["worst_ms"] > HEALTH_LIMIT_MS:
        problems.append(f"/health worst {watch['worst_ms']:.0f} ms")
    bad_q = [s for s in statuses if s != 200]
    if bad_q or not queries:
        problems.append(f"queries {tally(statuses)}")
    if duration > 15 and not closed:  # the header deadline is 10 s
        problems.append(f"no slow connection closed in {duration:.0f} s")
    if by_byte and max(by_byte) > 15:
        problems.append(f"a slow connection lived {max(by_byte):.0f} s "
                        "after its first byte")
    if connect_failures:
        problems.append(f"{connect_failures} connects failed")
    if after_status != 200 or after_query[0] != 200 or not alive:
        problems.append(f"after: health {after_status}, "
                        f"query {after_query[0]}, alive {alive}")
    q408 = replies.get("HTTP/1.1 408 Request Timeout", 0)
    cab = result["close_after_first_byte_s"]
    summary = (f"{n} slow clients {duration:.0f} s: {len(closed)} conns "
               f"closed by server ({q408} with 408) "
               f"{cab['min']}-{cab['max']} s after first byte; "
               f"{len(queries)} queries {tally(statuses)} "
               f"p50 {result['queries']['p50_ms']} ms worst "
               f"{result['queries']['worst_ms']} ms")
    return result, problems, summary, watch, peak


# --------------------------------------------------------------------------
# Probe 2: SIGTERM with scrapers and streams in flight.

def _sigterm_run(cfg, rpc, run, double):
    image = png(64, 64, 100 + run)
    flags = ["--grace_seconds=10"]
    with Server(cfg, flags=flags, name=f"sigterm#{run}") as server, \
            HealthWatcher(server, timeout=5) as health:
        channel, stub = rpc.stub(server)
        pb = rpc.pb
        streams = [{"chunks": 0, "finished": False, "reason": None,
                    "error": None, "first": threading.Event()}
                   for _ in range(2)]

        def stream(s):
            try:
                for chunk in stub.Query(pb.QueryRequest(
                        image=pb.Image(data=image),
                        question=b"Tell me everything about this image.",
                        settings=pb.SamplingSettings(
                            max_tokens=cfg.stream_tokens, ignore_eos=True)),
                        timeout=60):
                    s["chunks"] += 1
                    s["first"].set()
                    if chunk.finished:
                        s["finished"], s["reason"] = True, chunk.finish_reason
            except rpc.grpc.RpcError as e:
                s["error"] = f"{rpc.code(e)}: {e.details()}"
            except Exception as e:  # noqa: recorded, not fatal
                s["error"] = repr(e)
            s["first"].set()

        stream_threads = [threading.Thread(target=stream, args=(s,),
                                           daemon=True) for s in streams]
        for t in stream_threads:
            t.start()
        for s in streams:
            s["first"].wait(30)

        scrapes = {"ok": 0, "failures": []}  # failures: (time, status)
        stop = threading.Event()

        def scrape():
            url = server.url("/metrics", server.metrics_port)
            while not stop.is_set():
                status, _, _ = http_request(url, timeout=5)
                if status == 200:
                    scrapes["ok"] += 1
                else:
                    scrapes["failures"].append((time.monotonic(), status))
                    time.sleep(0.01)

        scrapers = [threading.Thread(target=scrape, daemon=True)
                    for _ in range(3)]
        for t in scrapers:
            t.start()
        time.sleep(0.3)
        in_flight = sum(t.is_alive() for t in stream_threads)
        chunks_at_signal = [s["chunks"] for s in streams]
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        if double:
            time.sleep(0.1)
            if server.alive():
                server.process.send_signal(signal.SIGTERM)
        code = server.wait(timeout=10 + cfg.exit_slack)
        exited = time.monotonic()
        exit_s = exited - signalled
        if code is None:
            server.kill()
            code = "still running"
        stop.set()
        for t in scrapers + stream_threads:
            t.join(timeout=10)
        channel.close()
        watch = health.summary()
    bad = server.bad_stderr_lines()
    # Scrape failures by phase: before the signal; while draining (until
    # the server logs that the drain is over); tearing down (after that,
    # until the process was seen to exit); after the exit (refused:
    # expected). Times are when the failure was seen.
    drained = next((t for t, l in server.stderr
                    if "every request finished" in l or
                    "grace period over" in l), exited)
    failures = scrapes.pop("failures")
    phases = (("failed_before", 0, signalled),
              ("failed_draining", signalled, drained),
              ("failed_teardown", drained, exited),
              ("failed_after_exit", exited, float("inf")))
    for phase, since, until in phases:
        scrapes[phase] = tally(st for t, st in failures if since <= t < until)
    scrapes["drain_s"] = rnd(drained - signalled, 2)
    return {
        "run": run, "double_sigterm": double, "exit_code": code,
        "exit_after_s": rnd(exit_s, 2), "streams_in_flight": in_flight,
        "chunks_at_sigterm": chunks_at_signal,
        "streams": [{k: v for k, v in s.items() if k != "first"}
                    for s in streams],
        "scrapes": scrapes, "bad_stderr": bad,
        "stderr_tail": [l for _, l in server.stderr[-6:]],
        "health": watch, "rss_peak_mb": rnd(server.peak_mb()),
    }


def probe_sigterm(cfg, rpc):
    runs = []
    for run in range(cfg.sigterm_runs):
        double = run % 2 == 1
        r = _sigterm_run(cfg, rpc, run, double)
        log(f"sigterm run {run} (double={double}): exit {r['exit_code']} "
            f"after {r['exit_after_s']} s, in flight "
            f"{r['streams_in_flight']}, scrapes {r['scrapes']}")
        runs.append(r)
    problems = []
    for r in runs:
        tag = f"run {r['run']}{' (2x SIGTERM)' if r['double_sigterm'] else ''}"
        if r["exit_code"] != 0:
            problems.append(f"{tag}: exit {r['exit_code']}")
        if r["bad_stderr"]:
            problems.append(f"{tag}: stderr {r['bad_stderr'][:2]}")
        if r["scrapes"]["failed_before"] or r["scrapes"]["failed_draining"]:
            problems.append(f"{tag}: /metrics scrapes failed before/while "
                            f"draining: {r['scrapes']['failed_before']} "
                            f"{r['scrapes']['failed_draining']}")
        if r["exit_after_s"] > 10 + cfg.exit_slack:
            problems.append(f"{tag}: exit took {r['exit_after_s']} s")
        # A stream may be cancelled when the grace period runs out; one
        # that ends unfinished before that was dropped by the drain.
        lost = [s["error"] for s in r["streams"] if not s["finished"]]
        if lost and (r["scrapes"]["drain_s"] or 0) < 10 - 0.5:
            problems.append(f"{tag}: streams not finished: {lost}")
    answered = [h for r in runs for h in (r["health"]["p50_ms"],) if h]
    worst = [r["health"]["worst_ms"] for r in runs
             if r["health"]["worst_ms"] is not None]
    watch = {"p50_ms": rnd(statistics.median(answered)) if answered else None,
             "worst_ms": max(worst) if worst else None}
    peak = max((r["rss_peak_mb"] or 0) for r in runs) if runs else None
    exits = tally(r["exit_code"] for r in runs)
    summary = (f"{len(runs)} runs ({sum(r['double_sigterm'] for r in runs)} "
               f"with 2 SIGTERMs): exit codes {exits}, exit after "
               f"{min(r['exit_after_s'] for r in runs)}-"
               f"{max(r['exit_after_s'] for r in runs)} s, "
               f"{sum(r['streams_in_flight'] for r in runs)}/{2 * len(runs)} "
               f"streams in flight at SIGTERM, "
               f"{sum(s['finished'] for r in runs for s in r['streams'])} "
               f"finished; " +
               ("an abort on stderr" if any(r["bad_stderr"] for r in runs)
                else "no abort on stderr"))
    return {"runs": runs, "grace_seconds": 10}, problems, summary, watch, peak


# --------------------------------------------------------------------------
# Probe 3: EncodeImage handles.

def probe_handles(cfg, rpc):
    n = cfg.handles_count
    images = [png(3000, 3000, 5000 + i) for i in range(n)]
    handles_mb = cfg.flag_value("handles_mb")
    with Server(cfg, name="handles") as server, \
            HealthWatcher(server) as health:
        channel, stub = rpc.stub(server)
        pb = rpc.pb
        time.sleep(1.0)
        rss_before = server.rss_mb()
        calls = []
        start = time.monotonic()
        for i, image in enumerate(images):
            t0 = time.monotonic()
            try:
                h = stub.EncodeImage(pb.EncodeImageRequest(
                    image=pb.Image(data=image)), timeout=120)
                calls.append({"i": i, "status": "OK", "handle": h.handle,
                              "ms": rnd((time.monotonic() - t0) * 1000),
                              "rss_mb": rnd(server.rss_mb())})
            except rpc.grpc.RpcError as e:
                calls.append({"i": i, "status": rpc.code(e),
                              "detail": e.details(),
                              "ms": rnd((time.monotonic() - t0) * 1000),
                              "rss_mb": rnd(server.rss_mb())})
            if not server.alive():
                break
        encode_s = time.monotonic() - start
        time.sleep(2.0)
        rss_after = server.rss_mb()
        channel.close()
        watch = health.summary()
        peak = server.peak_mb()
        hwm = server.hwm_mb
        alive = server.alive()
    statuses = [c["status"] for c in calls]
    accepted = statuses.count("OK")
    growth = (peak or 0) - (rss_before or 0)
    result = {
        "images": n, "size": "3000x3000", "png_bytes": len(images[0]),
        "handles_mb_flag": handles_mb, "accepted": accepted,
        "refused": len(calls) - accepted, "statuses": tally(statuses),
        "encode_seconds": rnd(encode_s),
        "encode_ms_p50": rnd(pct([c["ms"] for c in calls], 0.5)),
        "rss_before_mb": rnd(rss_before), "rss_after_mb": rnd(rss_after),
        "rss_peak_mb": rnd(peak), "vm_hwm_mb": rnd(hwm),
        "rss_growth_mb": rnd(growth), "rss_timeline": server.timeline(),
        "health": watch, "calls": calls,
    }
    problems = []
    if watch["worst_ms"] is not None and watch["worst_ms"] > HEALTH_LIMIT_MS:
        problems.append(f"/health worst {watch['worst_ms']:.0f} ms")
    # The budget covers what the store keeps; allow 512 MB for the model,
    # one image being decoded and the allocator's slack on top of it.
    if handles_mb is not None and growth > float(handles_mb) + 512:
        problems.append(f"RSS grew {growth:.0f} MB > --handles_mb="
                        f"{handles_mb} + 512")
    if not alive:
        problems.append("server died")
    refused = tally(s for s in statuses if s != "OK")
    summary = (f"{accepted}/{n} accepted, refused {refused}; "
               f"RSS {result['rss_before_mb']}->{result['rss_after_mb']} MB "
               f"(peak {result['rss_peak_mb']}) vs --handles_mb={handles_mb}")
    return result, problems, summary, watch, peak


# --------------------------------------------------------------------------
# Probe 4: eight 7000x7000 images at once, at the default pixel limit and
# at a raised one.

def _big_burst(cfg, name, flags, images):
    with Server(cfg, flags=flags, name=name) as server, \
            HealthWatcher(server) as health:
        time.sleep(1.0)
        rss_before = server.rss_mb()
        url = server.url("/v1/query")
        bodies = [query_body(image) for image in images]
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            replies = list(pool.map(
                lambda b: http_request(url, b, timeout=cfg.big_timeout),
                bodies))
        burst_s = time.monotonic() - start
        peak = server.peak_mb()
        time.sleep(5.0)
        rss_after = server.rss_mb()
        watch = health.summary()
        alive = server.alive()
        hwm = server.hwm_mb
    statuses = [r[0] for r in replies]
    ms = [r[1] for r in replies]
    errors = tally(_error_message(r[2]) for r in replies if r[0] != 200)
    return {
        "flags": flags, "requests": len(images), "statuses": tally(statuses),
        "latencies_ms": sorted(rnd(m) for m in ms),
        "errors": errors, "burst_seconds": rnd(burst_s),
        "health": watch, "rss_before_mb": rnd(rss_before),
        "rss_peak_mb": rnd(peak), "rss_5s_after_mb": rnd(rss_after),
        "vm_hwm_mb": rnd(hwm), "alive_after": alive,
        "rss_timeline": server.timeline(),
    }


def _error_message(text):
    try:
        return json.loads(text)["error"]["message"][:120]
    except (ValueError, KeyError, TypeError):
        return text[:120]


def probe_bigimages(cfg, rpc):
    n = cfg.big_count
    images = [png(7000, 7000, 9000 + i, gray=True) for i in range(n)]
    default_pixels = cfg.flag_value("max_image_pixels")
    rows = []
    a = _big_burst(cfg, "bigimages", [], images)
    a["png_bytes"] = len(images[0])
    a["max_image_pixels"] = default_pixels
    problems_a = []
    if set(a["statuses"]) != {"413"}:
        problems_a.append(f"expected 413 for every request, got "
                          f"{a['statuses']}")
    if max(a["latencies_ms"]) > 2000:
        problems_a.append(f"413 took up to {max(a['latencies_ms']):.0f} ms")
    if a["health"]["worst_ms"] and a["health"]["worst_ms"] > HEALTH_LIMIT_MS:
        problems_a.append(f"/health worst {a['health']['worst_ms']:.0f} ms")
    if not a["alive_after"]:
        problems_a.append("server died")
    rows.append(("bigimages", a, problems_a,
                 f"{n}x 7000x7000 ({len(images[0]) // 1024} KB): "
                 f"{a['statuses']} in {min(a['latencies_ms']):.0f}-"
                 f"{max(a['latencies_ms']):.0f} ms "
                 f"(--max_image_pixels={default_pixels})"))

    b = _big_burst(cfg, "bigimages_raised",
                   ["--max_image_pixels=50000000"], images)
    b["decode_concurrency"] = cfg.flag_value("decode_concurrency")
    problems_b = []
    unexpected = {s for s in b["statuses"] if s not in ("200", "429")}
    if unexpected:
        problems_b.append(f"statuses {b['statuses']}")
    if b["health"]["worst_ms"] and b["health"]["worst_ms"] > HEALTH_LIMIT_MS:
        problems_b.append(f"/health worst {b['health']['worst_ms']:.0f} ms")
    if not b["alive_after"]:
        problems_b.append("server died")
    rows.append(("bigimages_raised", b, problems_b,
                 f"--max_image_pixels=50000000, --decode_concurrency="
                 f"{b['decode_concurrency']}: {b['statuses']} in "
                 f"{min(b['latencies_ms']) / 1000:.1f}-"
                 f"{max(b['latencies_ms']) / 1000:.1f} s; RSS "
                 f"{b['rss_before_mb']:.0f} -> peak {b['rss_peak_mb']:.0f} "
                 f"-> {b['rss_5s_after_mb']:.0f} MB 5 s after"))
    return rows


# --------------------------------------------------------------------------
# Driver.

def server_defaults(server):
    """Flag defaults from `server --help` (name -> default string)."""
    try:
        out = subprocess.run([server, "--help"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SetupError(f"{server} --help failed: {e}")
    text = " ".join((out.stdout + out.stderr).split())
    return {m.group(1): m.group(2).strip('"') for m in re.finditer(
        r"--(\w+) \(.*?\); default: (\"[^\"]*\"|[^;\s]+);", text)}


def parse_args(argv):
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Flags after -- go to every server started (after the "
               "probe's own, so they win unless a probe sets the same one).")
    p.add_argument("--server", default=os.path.join(
        REPO, "build/service/moondream-server"), help="the server binary")
    p.add_argument("--model", default=os.path.join(REPO, "models/tiny-random"),
                   help="model directory passed as --model")
    p.add_argument("--proto_dir", default=os.path.join(REPO, "proto"))
    p.add_argument("--only", default=",".join(PROBES),
                   help="comma-separated subset of " + ",".join(PROBES))
    p.add_argument("--json", metavar="FILE", help="write every measurement")
    p.add_argument("--quick", action="store_true",
                   help="fewer clients, runs and images: about 2 minutes "
                   "instead of 5")
    p.add_argument("--slowloris_seconds", type=float)
    p.add_argument("--slowloris_clients", type=int)
    p.add_argument("--sigterm_runs", type=int)
    p.add_argument("--handles_count", type=int)
    p.add_argument("--big_count", type=int)
    p.add_argument("--stream_tokens", type=int, default=1000,
                   help="max_tokens of the streams in flight at SIGTERM")
    p.add_argument("--start_timeout", type=float, default=60)
    p.add_argument("--exit_slack", type=float, default=10,
                   help="seconds past --grace_seconds an exit may take")
    p.add_argument("--big_timeout", type=float, default=330,
                   help="client timeout of each big-image request (the "
                   "server answers 504 after --http_timeout_seconds=300)")
    cfg = p.parse_args(argv)
    cfg.extra = extra
    quick = cfg.quick
    for name, full, small in (("slowloris_seconds", 30.0, 15.0),
                              ("slowloris_clients", 200, 50),
                              ("sigterm_runs", 6, 2),
                              ("handles_count", 40, 10),
                              ("big_count", 8, 2)):
        if getattr(cfg, name) is None:
            setattr(cfg, name, small if quick else full)
    cfg.only = [x.strip() for x in cfg.only.split(",") if x.strip()]
    unknown = [x for x in cfg.only if x not in PROBES]
    if unknown:
        p.error(f"unknown probe(s) {unknown}; choose from {PROBES}")
    return cfg


def check_setup(cfg):
    cfg.server = os.path.abspath(os.path.expanduser(cfg.server))
    cfg.model = os.path.abspath(os.path.expanduser(cfg.model))
    if not os.path.isfile(cfg.server) or not os.access(cfg.server, os.X_OK):
        raise SetupError(f"no executable server binary at {cfg.server} "
                         "(build it first, or pass --server)")
    if not os.path.isdir(cfg.model):
        raise SetupError(f"no model directory at {cfg.model} (pass --model)")
    missing = [f for f in ("model.safetensors", "tokenizer.json")
               if not os.path.exists(os.path.join(cfg.model, f))]
    if missing:
        raise SetupError(f"model directory {cfg.model} lacks {missing}")
    defaults = server_defaults(cfg.server)
    if not defaults:
        raise SetupError(f"could not read flag defaults from {cfg.server} "
                         "--help")
    cfg.defaults = defaults

    def flag_value(name):
        """The value the servers get: the last --name=V of the extra flags,
        else the --help default."""
        value = defaults.get(name)
        for arg in cfg.extra:
            if arg.startswith(f"--{name}="):
                value = arg.split("=", 1)[1]
        return value

    cfg.flag_value = flag_value


def print_table(rows):
    head = ("probe", "health p50/worst ms", "peak RSS MB", "outcome")
    cells = []
    for r in rows:
        h = r["health"] or {}
        cells.append((r["probe"],
                      f"{_fmt(h.get('p50_ms'))} / {_fmt(h.get('worst_ms'))}",
                      _fmt(r["peak_rss_mb"]),
                      r["verdict"] + ": " + r["summary"] +
                      ("" if r["ok"] else " | " + "; ".join(r["problems"]))))
    widths = [max(len(head[i]), *(len(c[i]) for c in cells))
              for i in range(3)]
    line = " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " | " + \
        head[3]
    print(line)
    print("-" * min(len(line) + 40, 160))
    for c in cells:
        print(" | ".join(x.ljust(w) for x, w in zip(c, widths)) + " | " + c[3])


def _fmt(x):
    return "-" if x is None else f"{x:.0f}"


def main(argv):
    cfg = parse_args(argv)
    if {"sigterm", "handles"} & set(cfg.only):
        _ensure_grpc()
    try:
        check_setup(cfg)
        rpc = Grpc(cfg.proto_dir) if {"sigterm", "handles"} & set(cfg.only) \
            else None
    except SetupError as e:
        print(f"hardening_probe: {e}", file=sys.stderr)
        return 2
    report = {"server": cfg.server, "model": cfg.model,
              "extra_flags": cfg.extra,
              "probes": cfg.only, "quick": cfg.quick,
              "defaults": {k: cfg.defaults.get(k) for k in (
                  "handles_mb", "max_handles", "max_image_pixels",
                  "decode_concurrency", "grace_seconds", "cache_mb")},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": {}}
    rows = []
    t0 = time.monotonic()
    funcs = {"slowloris": probe_slowloris, "sigterm": probe_sigterm,
             "handles": probe_handles}
    try:
        for name in cfg.only:
            log(f"=== {name}")
            started = time.monotonic()
            try:
                if name == "bigimages":
                    out = probe_bigimages(cfg, rpc)
                else:
                    result, problems, summary, watch, peak = funcs[name](cfg,
                                                                          rpc)
                    out = [(name, dict(result, health=watch,
                                       rss_peak_mb=rnd(peak)),
                            problems, summary)]
            except SetupError as e:
                out = [(name, {"error": str(e)}, [f"setup: {e}"],
                        "could not run")]
            except Exception as e:  # one probe's crash is its outcome
                traceback.print_exc()
                out = [(name, {"error": repr(e)}, [f"probe error: {e!r}"],
                        "the probe itself failed")]
            for row_name, result, problems, summary in out:
                result["seconds"] = rnd(time.monotonic() - started)
                result["problems"], result["outcome"] = problems, summary
                report["results"][row_name] = result
                verdict = ("ERROR" if "error" in result else
                           "DEFECT" if problems else "OK")
                result["verdict"] = verdict
                rows.append({"probe": row_name, "health": result.get("health"),
                             "peak_rss_mb": result.get("rss_peak_mb"),
                             "ok": not problems, "verdict": verdict,
                             "summary": summary, "problems": problems})
                log(f"{row_name}: {verdict}: "
                    f"{summary}" + ("" if not problems else
                                    " | " + "; ".join(problems)))
    finally:
        _kill_live_servers()
    report["total_seconds"] = rnd(time.monotonic() - t0)
    report["summary"] = rows
    print()
    print_table(rows)
    print(f"\n({report['total_seconds']} s; "
          f"--handles_mb={cfg.flag_value('handles_mb')}, "
          f"--max_image_pixels={cfg.flag_value('max_image_pixels')}, "
          f"--decode_concurrency={cfg.flag_value('decode_concurrency')})")
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {cfg.json}")
    verdicts = {r["verdict"] for r in rows}
    return 2 if "ERROR" in verdicts else 1 if "DEFECT" in verdicts else 0


def _ensure_grpc():
    """Re-run under Debian's /usr/bin/python3 when this python lacks grpc
    (e.g. a pyenv python3 first on PATH)."""
    if importlib.util.find_spec("grpc") is not None:
        return
    system = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(system) and \
            os.path.exists(system) and not os.environ.get("MD_PROBE_REEXEC"):
        os.environ["MD_PROBE_REEXEC"] = "1"
        os.execv(system, [system, os.path.abspath(__file__)] + sys.argv[1:])
    print("hardening_probe: python module grpc is missing (apt install "
          "python3-grpcio)", file=sys.stderr)
    sys.exit(2)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the finally blocks


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    sys.exit(main(sys.argv[1:]))
