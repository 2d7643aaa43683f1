"""A normal GET's latency while many slow clients hold half-sent requests.

    .venv/bin/python bench/slow_clients.py [--slow 200] [--seconds 20] [--workers 4]

Starts `vmflow api` (--workers workers) on a free loopback port with a fresh
store holding a few networks, then opens --slow connections that each send
part of a request and stall: half stop inside the request header, half send
a whole POST header announcing a 4 KiB body and stop after 10 bytes of it.
A connection the server closes (as its deadlines say it should) is opened
again at once, so --slow are held the whole time. Meanwhile one client
sends `GET /v2.0/networks`, each on a new connection, every 50 ms, and one
more on a kept-alive connection. Prints the normal GETs' latency before the
slow clients, while they are held, and how many slow connections the server
closed. Bounded: it stops after --seconds (at most 300), with at most 2,000
slow connections, and stops the server.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import start_api  # noqa: E402


PARTIAL_HEADER = b"GET /v2.0/networks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
PARTIAL_BODY = (b"POST /v2.0/networks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
                b'{"network"')


class SlowClients:
    """Holds `count` half-sent requests open until stopped, reopening closed ones."""

    def __init__(self, port: int, count: int):
        self.port = port
        self.count = count
        self.sel = selectors.DefaultSelector()
        self.closed_by_server = 0
        self.answers: dict[str, int] = {}
        self.failed_connects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> None:
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", self.port))
            s.sendall(PARTIAL_HEADER if i % 2 == 0 else PARTIAL_BODY)
        except OSError:
            self.failed_connects += 1
            s.close()
            return
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, i)

    def start(self) -> None:
        for i in range(self.count):
            self._open(i)
        self.thread.start()

    def held(self) -> int:
        return len(self.sel.get_map())

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.2):
                s, i = key.fileobj, key.data
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 "):
                    status = data[9:12].decode()
                    self.answers[status] = self.answers.get(status, 0) + 1
                if data:
                    continue
                self.sel.unregister(s)
                s.close()
                self.closed_by_server += 1
                if not self.stop.is_set():
                    self._open(i)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()



def sample(port: int, seconds: float, keepalive: bool) -> tuple[list[float], int]:
    """GET /v2.0/networks every 50 ms for `seconds`: latencies (s) and failures."""
    latencies, failures = [], 0
    conn = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/v2.0/networks")
            resp = conn.getresponse()
            body = resp.read()
            ok = resp.status == 200 and len(json.loads(body)["networks"]) == 5
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            ok = False
            conn = None
        latencies.append(time.perf_counter() - t0)
        failures += not ok
        if not keepalive and conn is not None:
            conn.close()
            conn = None
        time.sleep(0.05)
    return latencies, failures


def report(name: str, lat: list[float], failures: int) -> str:
    ms = sorted(x * 1000 for x in lat)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) >= 2 else ms[-1]
    return (f"{name}: {len(ms)} GETs, failed {failures}, p50 {statistics.median(ms):.1f} ms, "
            f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slow", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    args.slow = max(0, min(args.slow, 2000))
    args.seconds = max(1.0, min(args.seconds, 300.0))

    tmp = tempfile.mkdtemp(prefix="vmflow-slow-")
    port, server = start_api(tmp, f"{tmp}/store.db", args.workers)
    slow = None
    try:
        for n in range(5):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", "/v2.0/networks", json.dumps({"network": {"name": f"n{n}"}}),
                      {"Content-Type": "application/json"})
            assert c.getresponse().status == 201
            c.close()
        idle = sample(port, 2, keepalive=False)
        slow = SlowClients(port, args.slow)
        t0 = time.perf_counter()
        slow.start()
        opened = time.perf_counter() - t0
        results: dict[str, tuple[list[float], int]] = {}
        kept = threading.Thread(target=lambda: results.__setitem__(
            "keepalive", sample(port, args.seconds, keepalive=True)))
        kept.start()
        results["new"] = sample(port, args.seconds, keepalive=False)
        kept.join()
        held = slow.held()
    finally:
        if slow is not None:
            slow.stop.set()
            if slow.thread.is_alive():
                slow.thread.join(5)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"workers={args.workers} slow_clients={args.slow} seconds={args.seconds:g} "
          f"cpus={os.cpu_count()}")
    print(f"slow clients: {args.slow} opened in {opened:.2f} s, {held} held at the end, "
          f"{slow.failed_connects} connects failed, {slow.closed_by_server} closed by the "
          f"server and reopened; answers they got: {slow.answers or 'none'}")
    print(report("before, new connection each", *idle))
    print(report("during, new connection each", *results["new"]))
    print(report("during, one kept-alive connection", *results["keepalive"]))
    failed = idle[1] + results["new"][1] + results["keepalive"][1]
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
