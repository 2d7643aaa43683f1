"""Port creates per second and latency through the real API (gunicorn).

    .venv/bin/python bench/api.py [--store sqlite,etcd] [--workers 4] [--apis 2]
                                  [--existing 10000] [--creates 3000] [--clients 8]

For each store in --store (both by default, one after the other in one run):
prefills it with --existing ports in bulk requests through the app
in-process (the same code path, without HTTP), then starts `vmflow api` with
--workers gunicorn workers on a free loopback port and has --clients client
processes create --creates ports over HTTP, one connection per request (as
gunicorn's sync workers serve). Prints creates/s, p50, p99 and max latency.

sqlite: one API server on one store file. etcd: a 3-member etcd cluster on
loopback (topology/etcd_cluster.py) and --apis API servers of --workers
workers each sharing it, the clients spread over them, as API servers on
several machines behind a load balancer would be.
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


def prefill(store_url: str, existing: int) -> str:
    """A network with a /16 and `existing` ports on it; returns the network id."""
    import falcon.testing

    from topology.api.app import create_app
    from topology.config import new_conf
    from topology.store import open_store

    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    store = open_store(store_url, timeout_s=60)
    client = falcon.testing.TestClient(create_app(conf, store))
    net = client.simulate_post("/v2.0/networks", json={"network": {"name": "bench"}}).json["network"]
    client.simulate_post("/v2.0/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.128.0.0/16"}})
    batch = 1000
    for start in range(0, existing, batch):
        n = min(batch, existing - start)
        r = client.simulate_post("/v2.0/ports", json={"ports": [{"network_id": net["id"]}] * n})
        assert r.status_code == 201, r.text
    store.close()
    return net["id"]


def client_proc(ports: list[int], n: int, network_id: str, count: int, out) -> None:
    port = ports[n % len(ports)]
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


def start_api(tmp: str, store_url: str, workers: int) -> tuple[int, subprocess.Popen]:
    """A real `vmflow api` (gunicorn) on a free loopback port, answering;
    (port, process). The caller terminates it."""
    port = free_port()
    conf = os.path.join(tmp, f"vmflow-{port}.conf")
    Path(conf).write_text(f"[DEFAULT]\nlog_level = WARNING\n[api]\nworkers = {workers}\n")
    server = subprocess.Popen([sys.executable, "-m", "controller.cli", "api", "--config", conf,
                               "--store", store_url, "--api-listen", f"127.0.0.1:{port}"],
                              cwd=ROOT)
    try:
        wait_ready(port, server)
    except BaseException:
        server.kill()
        raise
    return port, server


def run(store: str, args) -> bool:
    tmp = tempfile.mkdtemp(prefix="vmflow-bench-")
    cluster = None
    apis = 1
    if store == "etcd":
        from topology.etcd_cluster import EtcdCluster
        cluster = EtcdCluster(3, workdir=os.path.join(tmp, "etcd")).start()
        store_url = cluster.store_url
        apis = args.apis
    else:
        store_url = f"sqlite:///{os.path.join(tmp, 'store.db')}"
    servers = []
    try:
        t0 = time.perf_counter()
        network_id = prefill(store_url, args.existing)
        print(f"[{store}] prefill: {args.existing} ports in {time.perf_counter() - t0:.1f} s")
        servers = [start_api(tmp, store_url, args.workers) for _ in range(apis)]
        ports = [port for port, _ in servers]
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        per_client = args.creates // args.clients
        procs = [ctx.Process(target=client_proc, args=(ports, n, network_id, per_client, out))
                 for n in range(args.clients)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        elapsed = time.perf_counter() - start
        for p in procs:
            p.join()
    finally:
        for _, server in servers:
            server.send_signal(signal.SIGTERM)
        for _, server in servers:
            server.wait(30)
        if cluster is not None:
            cluster.stop()
    latencies = sorted(l for lat, _ in results for l in lat)
    errors = sum(e for _, e in results)
    total = len(latencies)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"[{store}] api_servers={apis} workers={args.workers} clients={args.clients} "
          f"existing_ports={args.existing} cpus={os.cpu_count()}")
    print(f"[{store}] port creates: {total} in {elapsed:.2f} s = {total / elapsed:.0f} creates/s, "
          f"errors {errors}")
    print(f"[{store}] latency ms: p50 {cuts[49] * 1000:.1f}  p99 {cuts[98] * 1000:.1f}  "
          f"max {latencies[-1] * 1000:.1f}")
    return errors == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="sqlite,etcd",
                    help="comma-separated stores to measure, in order (sqlite, etcd)")
    ap.add_argument("--workers", type=int, default=4, help="gunicorn workers per API server")
    ap.add_argument("--apis", type=int, default=2, help="API servers sharing the etcd store")
    ap.add_argument("--existing", type=int, default=10000)
    ap.add_argument("--creates", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    stores = [s.strip() for s in args.store.split(",") if s.strip()]
    for s in stores:
        if s not in ("sqlite", "etcd"):
            ap.error(f"--store: unknown store {s!r}")
    ok = True
    for s in stores:
        ok = run(s, args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
