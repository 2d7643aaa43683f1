"""Metadata service benchmark: requests/s and latency with concurrent clients.

    .venv/bin/python bench/metadata.py [--clients 20] [--seconds 5] [--mode both]

Drives MetadataApp.packet_in with real Ethernet/IPv4/TCP frames (dpkt), so a
request costs what it costs in the controller minus the OpenFlow socket:
frame parsing and checksums, the TCP endpoint, HTTP parsing, the document,
and building every answer frame. `--clients` simulated VMs (one port and
instance each, on one network) run at once, interleaved one frame at a time.

Modes:
  close      one connection per request, as `curl URL` in a loop: SYN,
             SYN-ACK, ACK, request, answer, ACK, FIN, FIN, ACK
  keepalive  one connection per client, requests back to back on it

A request's latency runs from the client sending its first segment (the SYN
in close mode, the request in keep-alive mode) to the last byte of the
answer arriving, so it includes waiting behind the other clients. Every
answer is checked byte for byte (the instance id of that client's own VM).
"""
from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dpkt  # noqa: E402

from controller.app import PacketIn, SwitchView  # noqa: E402
from apps.metadata import MetadataApp  # noqa: E402
from topology.config import new_conf  # noqa: E402
from topology.view import TopologyView  # noqa: E402

ACK, PSH, SYN, FIN = 0x10, 0x08, 0x02, 0x01
META = socket.inet_aton("169.254.169.254")
PATHS = ["/latest/meta-data/instance-id", "/latest/meta-data/local-ipv4",
         "/latest/meta-data/hostname", "/openstack/latest/meta_data.json"]


def make_view(n: int) -> TopologyView:
    ports, instances = {}, {}
    for i in range(n):
        pid = f"port-{i:04d}-bench-xxxx"
        ports[pid] = {"id": pid, "network_id": "net", "mac_address": f"fa:16:3e:00:{i >> 8:02x}:{i & 255:02x}",
                      "fixed_ips": [{"subnet_id": "sub", "ip_address": f"10.0.{i >> 8}.{(i & 255) + 2}"}],
                      "device_id": f"inst-{i}", "device_owner": "compute:nova",
                      "binding:host_id": "h1", "security_groups": [], "_key": 10 + i}
        instances[f"inst-{i}"] = {"id": f"inst-{i}", "hostname": f"vm-{i}", "meta": {},
                                  "public_keys": {}, "availability_zone": "nova",
                                  "project_id": "p", "user_data": None}
    return TopologyView(1, {
        "networks": {"net": {"id": "net", "mtu": 1500, "_key": 1}},
        "subnets": {"sub": {"id": "sub", "network_id": "net", "cidr": "10.0.0.0/16",
                            "gateway_ip": "10.0.0.1", "dns_nameservers": [], "enable_dhcp": True}},
        "ports": ports, "instances": instances,
        "hosts": {"h1": {"name": "h1", "datapath_id": "1"}}})


class Runtime:
    def count(self, name, n=1):
        pass

    def send_packet(self, dpid, port, data):
        pass

    def call_later(self, seconds, fn):
        pass


class Client:
    def __init__(self, i: int, port: dict, keepalive: bool):
        self.i, self.port, self.keepalive = i, port, keepalive
        self.mac = bytes.fromhex(port["mac_address"].replace(":", ""))
        self.ip = socket.inet_aton(port["fixed_ips"][0]["ip_address"])
        self.rng = random.Random(i)
        self.sport = 20000 + i * 1000
        self.latencies: list[float] = []
        self.errors = 0
        self.connected = False
        self.new_connection()

    def frame(self, flags, payload=b"", mss=None) -> bytes:
        t = dpkt.tcp.TCP(sport=self.sport, dport=80, seq=self.snd, ack=self.rcv, flags=flags,
                         win=65535, data=payload)
        if mss:
            t.opts = bytes([2, 4, mss >> 8, mss & 0xFF])
            t.off = 6
        ip = dpkt.ip.IP(src=self.ip, dst=META, p=6, data=t)
        return bytes(dpkt.ethernet.Ethernet(src=self.mac, dst=b"\x0e" * 6, type=0x0800, data=ip))

    def new_connection(self):
        self.sport = 20000 + self.i * 1000 + (self.sport + 1) % 1000
        self.snd = self.rng.getrandbits(32)
        self.rcv = 0
        self.buf = b""
        self.state = "syn"
        self.connected = False

    def start(self) -> list[bytes]:
        """The next frames this client sends to begin a request."""
        self.t0 = time.perf_counter()
        self.path = self.rng.choice(PATHS)
        self.expect = None
        if self.connected:
            return [self._request()]
        out = [self.frame(SYN, mss=1460)]
        self.snd = (self.snd + 1) % 2**32
        return out

    def _request(self) -> bytes:
        conn = "" if self.keepalive else "Connection: close\r\n"
        req = f"GET {self.path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{conn}\r\n".encode()
        f = self.frame(ACK | PSH, req)
        self.snd = (self.snd + len(req)) % 2**32
        self.state = "wait"
        return [f][0]

    def receive(self, frame: bytes) -> tuple[list[bytes], bool]:
        """(frames to send, request finished)."""
        t = dpkt.ethernet.Ethernet(frame).data.data
        if t.flags & SYN:
            self.rcv = (t.seq + 1) % 2**32
            self.connected = True
            return [self.frame(ACK), self._request()], False
        out, done = [], False
        if t.data and t.seq == self.rcv:
            self.buf += t.data
            self.rcv = (self.rcv + len(t.data)) % 2**32
        if t.flags & FIN:
            self.rcv = (self.rcv + 1) % 2**32
        if self.state == "wait" and self._complete():
            done = True
            self.latencies.append(time.perf_counter() - self.t0)
            self.state = "closing" if not self.keepalive else "idle"
            self.buf = b""
        if t.data or t.flags & FIN:
            flags = ACK
            if t.flags & FIN and not self.keepalive:
                flags |= FIN
            out.append(self.frame(flags))
            if flags & FIN:
                self.snd = (self.snd + 1) % 2**32
                self.new_connection()
        return out, done

    def _complete(self) -> bool:
        head, sep, body = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        if len(body) < length:
            return False
        if self.path.endswith("instance-id") and body != f"inst-{self.i}".encode():
            self.errors += 1
        if not head.startswith(b"HTTP/1.1 200"):
            self.errors += 1
        return True


def run(n_clients: int, seconds: float, keepalive: bool) -> dict:
    view = make_view(n_clients)
    app = MetadataApp(new_conf())
    app.bind(Runtime())
    sw = SwitchView(1, view.hosts["h1"], {})
    ports = list(view.ports.values())
    clients = [Client(i, ports[i], keepalive) for i in range(n_clients)]
    queue: deque = deque()                          # (client, frame to the app)

    def enqueue(c, frames):
        for f in frames:
            queue.append((c, f))

    for c in clients:
        enqueue(c, c.start())
    done = 0
    t_end = time.perf_counter() + seconds
    t_start = time.perf_counter()
    while queue and time.perf_counter() < t_end:
        c, frame = queue.popleft()
        pin = PacketIn(1, 10 + c.i, frame, c.port, sw, view)
        for out in app.packet_in(pin):
            frames, finished = c.receive(out.data)
            enqueue(c, frames)
            if finished:
                done += 1
                enqueue(c, c.start())
    elapsed = time.perf_counter() - t_start
    lat = sorted(x for c in clients for x in c.latencies)
    return {"mode": "keepalive" if keepalive else "close", "requests": done,
            "rate": done / elapsed, "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "errors": sum(c.errors for c in clients), "connections_left": len(app.stack)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--mode", choices=["close", "keepalive", "both"], default="both")
    args = ap.parse_args()
    modes = [False, True] if args.mode == "both" else [args.mode == "keepalive"]
    failed = False
    for keep in modes:
        r = run(args.clients, args.seconds, keep)
        print(f"{r['mode']:9s} clients={args.clients} requests={r['requests']} "
              f"rate={r['rate']:.0f}/s p50={r['p50_ms']:.2f}ms p99={r['p99_ms']:.2f}ms "
              f"errors={r['errors']}")
        failed |= r["errors"] > 0 or r["requests"] == 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
