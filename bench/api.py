"""Port creates per second and latency through the real API (gunicorn).

    .venv/bin/python bench/api.py [--workers 4] [--existing 10000] [--creates 3000] [--clients 8]

Prefills the store with --existing ports in bulk requests through the app
in-process (the same code path, without HTTP), then starts `vmflow api` with
--workers gunicorn workers on a free loopback port and has --clients client
processes create --creates ports over HTTP, one connection per request (as
gunicorn's sync workers serve). Prints creates/s, p50, p99 and max latency.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefill(db: str, existing: int) -> str:
    """A network with a /16 and `existing` ports on it; returns the network id."""
    import falcon.testing

    from topology.api.app import create_app
    from topology.config import new_conf
    from topology.store import SqliteStore

    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    client = falcon.testing.TestClient(create_app(conf, SqliteStore(db)))
    net = client.simulate_post("/v2.0/networks", json={"network": {"name": "bench"}}).json["network"]
    client.simulate_post("/v2.0/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.128.0.0/16"}})
    batch = 1000
    for start in range(0, existing, batch):
        n = min(batch, existing - start)
        r = client.simulate_post("/v2.0/ports", json={"ports": [{"network_id": net["id"]}] * n})
        assert r.status_code == 201, r.text
    return net["id"]


def client_proc(port: int, network_id: str, count: int, out) -> None:
    body = json.dumps({"port": {"network_id": network_id}})
    latencies, errors = [], 0
    for _ in range(count):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v2.0/ports", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        latencies.append(time.perf_counter() - t0)
        if resp.status != 201:
            errors += 1
    out.put((latencies, errors))


def wait_ready(port: int, proc) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("vmflow api exited early")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("vmflow api did not start")


def start_api(tmp: str, db: str, workers: int) -> tuple[int, subprocess.Popen]:
    """A real `vmflow api` (gunicorn) on a free loopback port, answering;
    (port, process). The caller terminates it."""
    port = free_port()
    conf = os.path.join(tmp, "vmflow.conf")
    Path(conf).write_text(f"[DEFAULT]\nlog_level = WARNING\n[api]\nworkers = {workers}\n")
    server = subprocess.Popen([sys.executable, "-m", "controller.cli", "api", "--config", conf,
                               "--store", f"sqlite:///{db}", "--api-listen", f"127.0.0.1:{port}"],
                              cwd=ROOT)
    try:
        wait_ready(port, server)
    except BaseException:
        server.kill()
        raise
    return port, server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--existing", type=int, default=10000)
    ap.add_argument("--creates", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="vmflow-bench-")
    db = os.path.join(tmp, "store.db")
    t0 = time.perf_counter()
    network_id = prefill(db, args.existing)
    print(f"prefill: {args.existing} ports in {time.perf_counter() - t0:.1f} s")

    port, server = start_api(tmp, db, args.workers)
    try:
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        per_client = args.creates // args.clients
        procs = [ctx.Process(target=client_proc, args=(port, network_id, per_client, out))
                 for _ in range(args.clients)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        elapsed = time.perf_counter() - start
        for p in procs:
            p.join()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    latencies = sorted(l for lat, _ in results for l in lat)
    errors = sum(e for _, e in results)
    total = len(latencies)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"workers={args.workers} clients={args.clients} existing_ports={args.existing} "
          f"cpus={os.cpu_count()}")
    print(f"port creates: {total} in {elapsed:.2f} s = {total / elapsed:.0f} creates/s, "
          f"errors {errors}")
    print(f"latency ms: p50 {cuts[49] * 1000:.1f}  p99 {cuts[98] * 1000:.1f}  "
          f"max {latencies[-1] * 1000:.1f}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
