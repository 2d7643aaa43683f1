"""External networks on real OVS: floating IP create -> first reply from
outside, and TCP connections per second through SNAT and through a floating
IP, each as a ratio to routed east-west, on one run.

    sudo .venv/bin/python bench/external.py [--rounds 5] [--seconds 3]

The cloud is tests/mininet/test_external.py's (c1, c2 compute, c3 and c4
gateways, an outside host on the external VLAN), built with the Mininet
harness: a real `vmflow api` + `vmflow controller`, real bridges. Floating
IPs are written to the store as the API writes them (ExtStore), until the
REST side of issue 11 lands.

- create -> reply: the clock starts before the floating IP document is
  written and stops at the first echo reply the outside host gets from it
  (its ARP cache is cold for the address: the ARP answer is part of it).
- connections/s: a client opens and closes TCP connections one after the
  other for --seconds (connect, 1 byte each way, close): the outside host to
  a VM's floating IP; a VM with no floating IP to the outside host (SNAT on
  the gateway host, across the fabric twice); a VM to a VM of another subnet
  on another host (routed east-west, across the fabric once).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "mininet"))

from harness import Cloud, wait_for  # noqa: E402
from test_external import build  # noqa: E402

CLIENT = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    s = socket.create_connection((host, port), timeout=2)
    s.sendall(b"x")
    s.recv(1)
    s.close()
    n += 1
print(n / seconds)
"""


def rate(vm, host: str, port: int, seconds: float) -> float:
    out = vm.run([sys.executable, "-c", CLIENT, host, str(port), str(seconds)],
                 timeout=seconds + 30)
    if out.returncode:
        raise RuntimeError(f"{vm.name} -> {host}:{port}: {out.stderr[-500:]}")
    return float(out.stdout.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Cloud.start(Path(tmp)) as cloud:
        t = build(cloud)
        m = cloud.add_network("m", cidr="10.81.2.0/24", vlan=182)
        cloud.api.request("PUT", f"/v2.0/routers/{t.router['id']}/add_router_interface",
                          {"subnet_id": m.subnet["id"]})
        east = cloud.add_vm(t.c2, m, "east", ip="10.81.2.11", port_security_enabled=False,
                            security_groups=[])
        t.a.wait_ping(east, 15)
        t.b.wait_ping(t.peer.ip, 15)

        took = []
        for i in range(args.rounds):
            address = f"203.0.113.{60 + i}"
            t.peer.cmd("ip neigh flush dev eth0")
            t0 = time.monotonic()
            fip = t.store.fip(t.ext, address, t.router, t.a)
            wait_for(lambda: t.peer.ping(address, timeout=0.1), 15, 0.0, f"{address} to answer")
            took.append(time.monotonic() - t0)
            t.store.delete("floatingips", fip["id"])
        print(f"floating IP create -> first reply from outside: median {statistics.median(took):.2f} s"
              f" (min {min(took):.2f}, max {max(took):.2f}, {len(took)} rounds)")

        fip = t.store.fip(t.ext, "203.0.113.70", t.router, t.a)
        wait_for(lambda: t.peer.ping("203.0.113.70", timeout=0.2), 15, 0.0, "the floating IP")
        for vm in (t.a, east, t.peer):
            vm.tcp_server(5001)
        routed = rate(t.a, east.ip, 5001, args.seconds)
        via_fip = rate(t.peer, "203.0.113.70", 5001, args.seconds)
        via_snat = rate(t.b, t.peer.ip, 5001, args.seconds)
        print(f"TCP connections/s: routed east-west {routed:.0f}, through a floating IP "
              f"{via_fip:.0f} ({via_fip / routed:.2f} of routed), through SNAT {via_snat:.0f} "
              f"({via_snat / routed:.2f} of routed)")
        t.store.delete("floatingips", fip["id"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
