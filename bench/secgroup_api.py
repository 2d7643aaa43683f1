"""Security group rule writes through the real API (gunicorn): bulk, single, show, delete.

    .venv/bin/python bench/secgroup_api.py [--rules 1000] [--singles 200] [--workers 2]

Starts `vmflow api` on a free loopback port, creates one group and then
--rules rules in one bulk request (each in the compact form with a prefix,
a port and a priority: parsed, checked for duplicates, given a store key, one
transaction), --singles more one request each, shows the group with all its
rules and deletes it (every rule's key and claims freed). Prints the times.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import tempfile
import time

from api import start_api


def call(port: int, method: str, path: str, body=None) -> tuple[int, dict, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    conn.request(method, "/v2.0" + path, json.dumps(body) if body is not None else None,
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.perf_counter() - t0
    conn.close()
    return resp.status, (json.loads(data) if data else {}), elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--singles", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="vmflow-bench-sg-")
    db = os.path.join(tmp, "store.db")
    port, server = start_api(tmp, db, args.workers)
    try:
        status, body, _ = call(port, "POST", "/security-groups", {"security_group": {"name": "big"}})
        assert status == 201, body
        gid = body["security_group"]["id"]
        rules = [{"security_group_id": gid, "priority": 1 + i % 100,
                  "rule": f"in:allow 10.{i // 250 % 256}.{i % 250}.0/24 tcp {1000 + i % 60000}"}
                 for i in range(args.rules)]
        status, body, bulk = call(port, "POST", "/security-group-rules",
                                  {"security_group_rules": rules})
        assert status == 201, body
        singles = []
        for i in range(args.singles):
            status, body, took = call(port, "POST", "/security-group-rules", {"security_group_rule": {
                "security_group_id": gid, "rule": f"in:deny udp {1 + i}"}})
            assert status == 201, body
            singles.append(took)
        status, body, show = call(port, "GET", f"/security-groups/{gid}")
        count = len(body["security_group"]["security_group_rules"])
        status, _, delete = call(port, "DELETE", f"/security-groups/{gid}")
        assert status == 204
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    singles.sort()
    print(f"workers={args.workers} cpus={os.cpu_count()}")
    print(f"bulk create of {args.rules} rules: {bulk * 1000:.0f} ms "
          f"({bulk / args.rules * 1e6:.0f} us a rule)")
    if singles:
        print(f"single rule creates: p50 {singles[len(singles) // 2] * 1000:.1f} ms, "
              f"max {singles[-1] * 1000:.1f} ms")
    print(f"show the group with {count} rules: {show * 1000:.0f} ms; delete it: {delete * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
