"""Which etcd client library the etcd store uses, on measured latency.

Starts a 3-member etcd cluster on loopback and times, for each candidate
library that imports here, N rounds of: a put followed by a get of the same
key, and a transaction (compare a key's mod revision, put two keys). Prints
median and p99 in milliseconds.

    python bench/etcd_client.py [--rounds 500]

etcd3 (gRPC) 0.12 needs protobuf < 4 (its generated code predates the
protobuf 4 runtime), so it is measured from a scratch venv that has it:
    python3 -m venv /tmp/v && /tmp/v/bin/pip install etcd3 'protobuf<4' etcd3gw
    PYTHONPATH=. /tmp/v/bin/python bench/etcd_client.py
"""
from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from topology.etcd_cluster import EtcdCluster  # noqa: E402


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def time_rounds(fn, rounds: int) -> list[float]:
    for i in range(20):   # warm up connections
        fn(i)
    out = []
    for i in range(rounds):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def bench_etcd3gw(member, rounds):
    import etcd3gw
    c = etcd3gw.client(host="127.0.0.1", port=member.client_port)

    def put_get(i):
        c.put(f"/b/gw/{i % 50}", "x" * 200)
        c.get(f"/b/gw/{i % 50}")

    def txn(i):
        k = f"/b/gwt/{i % 50}"
        c.transaction({
            "compare": [{"key": b64(k), "target": "MOD", "result": "LESS",
                         "mod_revision": 1 << 62}],
            "success": [{"request_put": {"key": b64(k), "value": b64("y" * 200)}},
                        {"request_put": {"key": b64(k + "/2"), "value": b64("z")}}],
            "failure": []})
    return time_rounds(put_get, rounds), time_rounds(txn, rounds), \
        time_rounds(lambda i: c.get(f"/b/gw/{i % 50}"), rounds)


def bench_etcd3(member, rounds):
    import etcd3
    c = etcd3.client(host="127.0.0.1", port=member.client_port)

    def put_get(i):
        c.put(f"/b/grpc/{i % 50}", "x" * 200)
        c.get(f"/b/grpc/{i % 50}")

    def txn(i):
        k = f"/b/grpct/{i % 50}"
        c.transaction(compare=[c.transactions.mod(k) < (1 << 62)],
                      success=[c.transactions.put(k, "y" * 200),
                               c.transactions.put(k + "/2", "z")],
                      failure=[])
    return time_rounds(put_get, rounds), time_rounds(txn, rounds), \
        time_rounds(lambda i: c.get(f"/b/grpc/{i % 50}"), rounds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=500)
    args = ap.parse_args()
    results = {}
    with EtcdCluster(3) as cluster:
        member = cluster.members[0]
        for name, fn in (("etcd3gw (HTTP/JSON gateway)", bench_etcd3gw),
                         ("etcd3 (gRPC)", bench_etcd3)):
            try:
                pg, tx, g = fn(member, args.rounds)
            except ImportError as e:
                print(f"{name}: not importable here ({e})")
                continue
            results[name] = {
                "put+get median ms": round(pct(pg, 0.5), 3), "put+get p99 ms": round(pct(pg, 0.99), 3),
                "txn median ms": round(pct(tx, 0.5), 3), "txn p99 ms": round(pct(tx, 0.99), 3),
                "get median ms": round(pct(g, 0.5), 3), "get p99 ms": round(pct(g, 0.99), 3)}
            print(f"{name}: put+get median {pct(pg, .5):.2f} ms p99 {pct(pg, .99):.2f} ms; "
                  f"txn median {pct(tx, .5):.2f} ms p99 {pct(tx, .99):.2f} ms; "
                  f"get median {pct(g, .5):.2f} ms p99 {pct(g, .99):.2f} ms "
                  f"({args.rounds} rounds, 3-member cluster on loopback)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
