"""Benchmark of the ARP proxy and the DHCP server's packet handling.

Drives ArpApp.packet_in and DhcpApp.packet_in directly (the work the
controller does per packet-in, minus the OpenFlow socket) with many distinct
clients: a network of N VM ports, every client with its own MAC and address.

    .venv/bin/python bench/dhcp_arp.py [--clients 2000] [--rounds 3]

Reports, for DHCP, 4-way exchanges per second (DISCOVER->OFFER then
REQUEST->ACK, each client in turn) with p50/p99 latency of a whole exchange,
and for ARP, replies per second with p50/p99 latency of one reply.
Goals on the 2-core test machine: 500 DHCP exchanges/s, 2000 ARP replies/s.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dpkt  # noqa: E402
import netaddr  # noqa: E402

from apps.addresses import mac_bytes  # noqa: E402
from apps.arp import ArpApp  # noqa: E402
from controller.app import PacketIn, SwitchView  # noqa: E402
from apps.dhcp import DhcpApp  # noqa: E402
from topology.view import TopologyView  # noqa: E402

NET = "bench-net"
SUBNET = "bench-subnet"


class NullRuntime:
    """Counts outcomes, so a run proves every client got its answer."""

    def __init__(self):
        self.counts = {}

    def count(self, name, n=1):
        self.counts[name] = self.counts.get(name, 0) + n

    def send_packet(self, dpid, port, data):
        pass

    def call_later(self, seconds, fn):
        return None


def build_view(clients: int) -> tuple[TopologyView, list[dict]]:
    cidr = netaddr.IPNetwork("10.0.0.0/16")
    ports = []
    for i in range(clients):
        mac = "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF)
        ip = str(cidr[10 + i])
        ports.append({"id": f"port-{i:08d}", "network_id": NET, "mac_address": mac,
                      "fixed_ips": [{"subnet_id": SUBNET, "ip_address": ip}],
                      "allowed_address_pairs": [], "port_security_enabled": True,
                      "device_id": f"inst-{i}", "device_owner": "compute:nova",
                      "binding:host_id": "h1", "_key": 100 + i})
    dhcp = {"id": "port-dhcp", "network_id": NET, "mac_address": "fa:16:3f:00:00:02",
            "fixed_ips": [{"subnet_id": SUBNET, "ip_address": "10.0.0.2"}],
            "allowed_address_pairs": [], "device_owner": "network:dhcp", "device_id": "dhcp",
            "binding:host_id": "", "_key": 2}
    data = {
        "networks": {NET: {"id": NET, "mtu": 1450, "_key": 1}},
        "subnets": {SUBNET: {"id": SUBNET, "network_id": NET, "cidr": str(cidr),
                             "gateway_ip": "10.0.0.1", "dns_nameservers": ["10.0.0.53"],
                             "host_routes": [], "enable_dhcp": True}},
        "ports": {p["id"]: p for p in ports + [dhcp]},
        "instances": {f"inst-{i}": {"id": f"inst-{i}", "hostname": f"vm-{i}"}
                      for i in range(0, clients, 2)},
        "hosts": {"h1": {"name": "h1", "datapath_id": "1"}},
    }
    return TopologyView(1, data), ports


def dhcp_frame(mac: str, msg_type: int, xid: int, options=()) -> bytes:
    opts = [(53, bytes([msg_type])), (55, bytes([1, 3, 6, 12, 15, 26, 28, 121]))] + list(options)
    d = dpkt.dhcp.DHCP(op=1, xid=xid, chaddr=mac_bytes(mac) + b"\x00" * 10, opts=opts)
    u = dpkt.udp.UDP(sport=68, dport=67, data=bytes(d))
    u.ulen = len(u)
    i = dpkt.ip.IP(src=b"\x00" * 4, dst=b"\xff" * 4, p=17, data=u)
    return bytes(dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=mac_bytes(mac), type=0x0800, data=i))


def offered(frame: bytes) -> tuple[bytes, bytes]:
    """(yiaddr, server id) of an OFFER."""
    payload = bytes(dpkt.ethernet.Ethernet(frame).data.data.data)
    d = dpkt.dhcp.DHCP(payload)
    return d.yiaddr.to_bytes(4, "big"), dict(d.opts)[54]


def arp_frame(mac: str, sender_ip: str, target_ip: str) -> bytes:
    a = dpkt.arp.ARP(op=1, sha=mac_bytes(mac), spa=socket.inet_aton(sender_ip),
                     tha=b"\x00" * 6, tpa=socket.inet_aton(target_ip))
    return bytes(dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=mac_bytes(mac), type=0x0806, data=a))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_dhcp(view, ports, sw) -> dict:
    app = DhcpApp()
    rt = NullRuntime()
    app.bind(rt)
    discovers = [dhcp_frame(p["mac_address"], 1, 1000 + i) for i, p in enumerate(ports)]
    latencies = []
    start = time.perf_counter()
    for i, p in enumerate(ports):
        t0 = time.perf_counter()
        (offer,) = app.packet_in(PacketIn(1, 10, discovers[i], p, sw, view))
        yiaddr, server = offered(offer.data)
        request = dhcp_frame(p["mac_address"], 3, 1000 + i, [(50, yiaddr), (54, server)])
        (ack,) = app.packet_in(PacketIn(1, 10, request, p, sw, view))
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    if rt.counts != {"offer": len(ports), "ack": len(ports)}:
        raise SystemExit(f"DHCP outcomes wrong: {rt.counts}")
    return {"rate": len(ports) / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


def bench_arp(view, ports, sw) -> dict:
    app = ArpApp()
    rt = NullRuntime()
    app.bind(rt)
    n = len(ports)
    frames = [arp_frame(p["mac_address"], p["fixed_ips"][0]["ip_address"],
                        ports[(i + n // 2 + 1) % n]["fixed_ips"][0]["ip_address"])
              for i, p in enumerate(ports)]
    latencies = []
    start = time.perf_counter()
    for i, p in enumerate(ports):
        t0 = time.perf_counter()
        (reply,) = app.packet_in(PacketIn(1, 10, frames[i], p, sw, view))
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    if rt.counts != {"replied": n}:
        raise SystemExit(f"ARP outcomes wrong: {rt.counts}")
    return {"rate": n / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    view, ports = build_view(args.clients)
    sw = SwitchView(dpid=1, host=view.hosts["h1"])
    results = {"dhcp": [], "arp": []}
    for _ in range(args.rounds):
        results["dhcp"].append(bench_dhcp(view, ports, sw))
        results["arp"].append(bench_arp(view, ports, sw))
    ok = True
    for name, goal, unit in (("dhcp", 500, "4-way exchanges/s"), ("arp", 2000, "replies/s")):
        runs = results[name]
        rate = statistics.median(r["rate"] for r in runs)
        p50 = statistics.median(r["p50"] for r in runs) * 1e3
        p99 = statistics.median(r["p99"] for r in runs) * 1e3
        verdict = "ok" if rate >= goal else "BELOW GOAL"
        ok &= rate >= goal
        print(f"{name}: {rate:,.0f} {unit} (goal {goal}: {verdict}); "
              f"p50 {p50:.3f} ms, p99 {p99:.3f} ms; {args.clients} distinct clients, "
              f"median of {args.rounds} rounds")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
