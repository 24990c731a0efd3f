#!/usr/bin/python3
"""Scale-out behind an L4 balancer: how long until a new replica carries its
share, with and without --max_connection_age_seconds.

A Kubernetes ClusterIP Service balances TCP connections, not gRPC calls: a
client keeps its HTTP/2 connection, and with it its replica, for good. This
reproduces that on loopback: R replicas behind a connection-level proxy that
sends each new TCP connection to a random replica (as kube-proxy's iptables
mode does), and C client channels, each one connection, each running S
closed-loop Query streams. After a warm-up one more replica starts and joins
the proxy's list; every call's replica is read from its x-moondream-replica
metadata, and the new replica's share of completed calls is followed per
second.

"Carries its share": the new replica's share of the calls completed in a
sliding 2 s window reaches 80% of 1/(R+1) and stays there for 3 s. Reported per mode: the time from the
new replica being ready to that moment (or "never" within the run), its
share over the last 10 s, and the proxy's connections per replica at the end.

usage: scaleout.py --server BIN --model DIR [--replicas 2] [--channels 12]
                   [--streams 2] [--warmup 8] [--after 40] [--age 5]
                   [--json OUT] [--source REPO]
"""
import argparse
import asyncio
import collections
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_process  # noqa: E402

WINDOW_S = 2.0
SHARE_OF_FAIR = 0.8
SUSTAIN_S = 3


class L4Proxy:
    """Forwards each accepted TCP connection to a backend picked at random
    when it connects (kube-proxy iptables-style); backends can be added."""

    def __init__(self, seed):
        self.backends = []
        self.connections = collections.Counter()  # backend -> open now
        self.random = random.Random(seed)
        self.loop = asyncio.new_event_loop()
        self.port = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,),
                                       daemon=True)
        self.thread.start()
        ready.wait()

    def add(self, port):
        self.loop.call_soon_threadsafe(self.backends.append, int(port))

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _accept(self, reader, writer):
        backend = self.random.choice(self.backends)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", backend)
        except OSError:
            writer.close()
            return
        self.connections[backend] += 1
        try:
            await asyncio.gather(self._pipe(reader, up_writer),
                                 self._pipe(up_reader, writer))
        finally:
            self.connections[backend] -= 1

    @staticmethod
    async def _pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except (ConnectionError, OSError):
                pass


def replica_of(metadata):
    for key, value in metadata or ():
        if key == "x-moondream-replica":
            return value
    return None


class Clients:
    """`channels` channels to the proxy, `streams` closed-loop streams on
    each; records (end time, replica, ok) per call."""

    def __init__(self, pb, pbg, port, channels, streams, image):
        self.pb, self.image = pb, image
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = []
        # A local subchannel pool: otherwise gRPC shares one connection
        # between channels to the same address, as one client would.
        self.channels = [
            grpc.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.use_local_subchannel_pool", 1)])
            for _ in range(channels)]
        self.threads = [
            threading.Thread(target=self._loop,
                             args=(pbg.MoondreamStub(channel),), daemon=True)
            for channel in self.channels for _ in range(streams)]
        for t in self.threads:
            t.start()

    def _loop(self, stub):
        while not self.stop.is_set():
            replica, ok = None, False
            try:
                call = stub.Query(self.pb.QueryRequest(
                    image=self.pb.Image(data=self.image), question=b"q",
                    settings=self.pb.SamplingSettings(max_tokens=8,
                                                      ignore_eos=True)),
                    timeout=60)
                for _ in call:
                    pass
                replica, ok = replica_of(call.trailing_metadata()), True
            except grpc.RpcError as e:
                replica = replica_of(e.trailing_metadata())
                time.sleep(0.05)
            with self.lock:
                self.calls.append((time.monotonic(), replica, ok))

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=70)
        for channel in self.channels:
            channel.close()


def start_replica(args, index, age):
    flags = [f"--replica_name=replica-{index}", "--threads=1",
             "--http_port=-1", "--grace_seconds=30"]
    if age:
        flags += [f"--max_connection_age_seconds={age}",
                  "--max_connection_age_grace_seconds=30"]
    process, grpc_port, _ = server_process.start_server(
        args.server, args.model, flags)
    return process, grpc_port


def share_timeline(calls, new_name, t0, end):
    """Per second from t0: the new replica's share of the calls completed in
    the WINDOW_S before."""
    timeline = []
    t = t0 + 1.0
    while t <= end:
        window = [r for when, r, ok in calls if ok and t - WINDOW_S < when <= t]
        share = (sum(r == new_name for r in window) / len(window)
                 if window else 0.0)
        timeline.append((round(t - t0, 1), round(share, 3), len(window)))
        t += 1.0
    return timeline


def first_sustained(timeline, threshold, seconds=SUSTAIN_S):
    """The first time from which the share stays >= threshold for
    `seconds` consecutive samples (None: never)."""
    run = 0
    for i, (_, share, _) in enumerate(timeline):
        run = run + 1 if share >= threshold else 0
        if run == seconds:
            return timeline[i - seconds + 1][0]
    return None


def run_mode(args, pb, pbg, image, age):
    label = f"--max_connection_age_seconds={age}" if age else "no max age"
    print(f"== {label}: {args.replicas} replicas, then one more", flush=True)
    proxy = L4Proxy(seed=1)
    replicas = []
    clients = None
    try:
        for k in range(1, args.replicas + 1):
            process, port = start_replica(args, k, age)
            replicas.append(process)
            proxy.add(port)
        clients = Clients(pb, pbg, proxy.port, args.channels, args.streams,
                          image)
        time.sleep(args.warmup)
        new_index = args.replicas + 1
        process, port = start_replica(args, new_index, age)
        replicas.append(process)
        proxy.add(port)
        t0 = time.monotonic()
        time.sleep(args.after)
        end = time.monotonic()
        connections = {f"replica-{i + 1}": proxy.connections[b]
                       for i, b in enumerate(proxy.backends)}
    finally:
        if clients is not None:
            clients.close()
        for process in replicas:
            process.send_signal(signal.SIGTERM)
        for process in replicas:
            try:
                process.wait(timeout=40)
            except Exception:  # noqa: BLE001 - a stuck replica is killed
                process.kill()
        proxy.close()
    new_name = f"replica-{new_index}"
    timeline = share_timeline(clients.calls, new_name, t0, end)
    fair = 1.0 / (args.replicas + 1)
    reached = first_sustained(timeline, SHARE_OF_FAIR * fair)
    last = [(r, ok) for when, r, ok in clients.calls if when > end - 10]
    last_share = (sum(r == new_name for r, ok in last if ok) /
                  max(1, sum(ok for _, ok in last)))
    failed = sum(not ok for _, _, ok in clients.calls)
    result = {"mode": label, "max_connection_age_s": age,
              "replicas_before": args.replicas,
              "seconds_to_share": reached, "fair_share": round(fair, 3),
              "share_last_10s": round(last_share, 3),
              "connections_at_end": connections,
              "calls": len(clients.calls), "failed_calls": failed,
              "timeline": timeline}
    print(f"  new replica ready; share reached {SHARE_OF_FAIR:.0%} of fair "
          f"({fair:.2f}) after "
          + (f"{reached:.0f} s" if reached is not None else
             f"never (in {args.after:.0f} s)")
          + f"; share over the last 10 s {last_share:.2f}; connections "
          f"{connections}; {len(clients.calls)} calls, {failed} failed",
          flush=True)
    return result


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--source", default=os.path.join(here, "..", ".."))
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--channels", type=int, default=12)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--after", type=float, default=40)
    parser.add_argument("--age", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pb, pbg = server_process.generate_stubs(args.source, tmp)
        with open(os.path.join(args.source, "tests/data/golden/images/"
                               "rgb_378x378.png"), "rb") as f:
            image = f.read()
        results = [run_mode(args, pb, pbg, image, age)
                   for age in (0, args.age)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
