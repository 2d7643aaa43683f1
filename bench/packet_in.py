"""Packet-in services through the real controller: ARP, DHCP and metadata.

    .venv/bin/python bench/packet_in.py [--clients 1000] [--concurrency 20]
        [--metadata-clients 20] [--metadata-mode close|keepalive|both]

Unlike bench/dhcp_arp.py and bench/metadata.py, which call the apps in-process,
this runs the real `vmflow controller` process (os-ken's OpenFlow channel, the
core, the dispatcher, the apps) on a temporary SQLite store, and plays one
OpenFlow 1.3 switch against it over TCP on loopback. os-ken's ofproto
constants and OFPMatch are the only codec used; the switch side is packed by
hand because os-ken has no serialisers for switch-to-controller messages.

The simulated switch answers HELLO, FEATURES, PORT_DESC (one port per VM,
named "tap" + port id[:11], as the controller expects), barriers, echo,
bundle control, and flow-stats/meter-stats with exactly what it was sent, so
the controller's audits find no drift. Once the controller's services flows
for every port have arrived, clients send PACKET_INs carrying real frames,
each with in_port and the cookie of the services flow that would have sent
it (found by table, priority and match among the received flow-mods), and
the clock stops at the matching PACKET_OUT.

Not simulated: the per-port meters. They live in the switch, which here
accepts and reports them but does not enforce them, so the rates below are
what the controller can do, not what a VM is allowed to send.

Each client (a distinct VM port with its own MAC and address) has one request
outstanding at a time; --concurrency clients run at once.

Metadata: --metadata-clients VMs (each with its own instance) talk TCP to
169.254.169.254:80 through PACKET_IN/PACKET_OUT, with bench/metadata.py's
client (real Ethernet/IPv4/TCP frames, every answer checked). In "close" mode
each request is a connection of its own, as `curl URL` in a loop: SYN,
SYN-ACK, ACK + GET, the answer, ACKs, FIN both ways; in "keepalive" mode
each client sends its requests back to back on one connection. A request's
latency runs from its first segment (the SYN, in close mode) to the last
byte of the answer; the next request starts once the client has sent its
FIN (close) or at once (keepalive). Each round makes as many requests as
there are --clients.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import dpkt  # noqa: E402
from os_ken.ofproto import ofproto_v1_3 as ofp  # noqa: E402
from os_ken.ofproto import ofproto_v1_3_parser as parser  # noqa: E402

from controller.pipeline import table_id  # noqa: E402
from dhcp_arp import arp_frame, dhcp_frame, offered, pct  # noqa: E402
from metadata import Client as MetadataClient  # noqa: E402
from topology.store import SqliteStore  # noqa: E402
from topology.view import interface_name  # noqa: E402

DPID = 0x0000_00BE_4C00_0001
HDR = struct.Struct("!BBHI")
SERVICES = table_id("services")
NET, SUBNET = "bench-net", "bench-subnet"
DHCP_IP = "10.0.0.2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the store ----------------------------------------------------------------
def fill_store(path: str, clients: int) -> list[dict]:
    store = SqliteStore(path)
    ports = []
    for i in range(clients):
        ports.append({
            "id": f"{i:08x}-be4c-4000-8000-{i:012x}", "_key": 100 + i, "network_id": NET,
            "name": f"vm{i}",
            "mac_address": "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255),
            "fixed_ips": [{"subnet_id": SUBNET,
                           "ip_address": f"10.0.{(10 + i) >> 8 & 255}.{(10 + i) & 255}"}],
            "allowed_address_pairs": [], "admin_state_up": True, "port_security_enabled": True,
            "binding:host_id": "h1", "device_owner": "compute:nova", "device_id": f"inst-{i}",
            "security_groups": []})
    dhcp = {"id": "dhcp-port", "_key": 2, "network_id": NET, "name": "dhcp",
            "mac_address": "fa:16:3f:00:00:02",
            "fixed_ips": [{"subnet_id": SUBNET, "ip_address": DHCP_IP}],
            "allowed_address_pairs": [], "admin_state_up": True, "device_owner": "network:dhcp",
            "device_id": "dhcp", "binding:host_id": "", "security_groups": []}
    with store.transaction() as t:
        t.put("hosts", "h1", {"id": "h1", "name": "h1", "datapath_id": f"{DPID:016x}",
                              "physical_networks": {"physnet1": "uplink"}})
        t.put("networks", NET, {"id": NET, "_key": 1, "name": NET, "admin_state_up": True,
                                "mtu": 1450, "provider:network_type": "vlan",
                                "provider:physical_network": "physnet1",
                                "provider:segmentation_id": 100})
        t.put("subnets", SUBNET, {"id": SUBNET, "network_id": NET, "ip_version": 4,
                                  "cidr": "10.0.0.0/16", "gateway_ip": "10.0.0.1",
                                  "enable_dhcp": True, "dns_nameservers": ["10.0.0.53"],
                                  "host_routes": [], "allocation_pools": []}, parent_id=NET)
        for p in ports + [dhcp]:
            t.put("ports", p["id"], p, parent_id=NET)
        for i in range(0, clients, 2):
            t.put("instances", f"inst-{i}", {"id": f"inst-{i}", "hostname": f"vm-{i}"})
    store.close()
    return ports


# -- the simulated switch -------------------------------------------------------
def msg(type_: int, xid: int, body: bytes = b"") -> bytes:
    return HDR.pack(ofp.OFP_VERSION, type_, HDR.size + len(body), xid) + body


def pad8(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 8)


class Switch(asyncio.Protocol):
    """One OpenFlow 1.3 switch with a port per VM; keeps flows and meters as sent."""

    def __init__(self, port_names: list[str]):
        self.port_names = port_names   # port number i + 1
        self.buf = bytearray()
        self.transport = None
        self.flows: dict[tuple, tuple] = {}     # (table, prio, match) -> (cookie, raw match, raw instr, flags)
        self.meters: dict[int, bytes] = {}
        self.bundles: dict[int, list[bytes]] = {}
        self.waiters: dict[int, asyncio.Future] = {}   # out port -> packet-out data
        self.listeners: dict[int, asyncio.Queue] = {}   # out port -> every packet-out's data
        self.connected = asyncio.get_event_loop().create_future()
        self.unhandled: dict[int, int] = {}
        self.packet_outs = 0
        self.xid = 0x10000000

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send(msg(ofp.OFPT_HELLO, self.next_xid()))

    def connection_lost(self, exc):
        for f in self.waiters.values():
            if not f.done():
                f.set_exception(ConnectionError("controller closed the OpenFlow channel"))

    def next_xid(self) -> int:
        self.xid += 1
        return self.xid

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def data_received(self, data):
        self.buf += data
        while len(self.buf) >= HDR.size:
            _v, type_, length, xid = HDR.unpack_from(self.buf)
            if len(self.buf) < length:
                return
            m = bytes(self.buf[:length])
            del self.buf[:length]
            self.handle(type_, xid, m)

    # -- messages from the controller -----------------------------------------
    def handle(self, type_: int, xid: int, m: bytes) -> None:
        if type_ == ofp.OFPT_PACKET_OUT:
            self.packet_out(m)
        elif type_ == ofp.OFPT_EXPERIMENTER:
            self.experimenter(xid, m)
        elif type_ == ofp.OFPT_BARRIER_REQUEST:
            self.send(msg(ofp.OFPT_BARRIER_REPLY, xid))
        elif type_ == ofp.OFPT_ECHO_REQUEST:
            self.send(msg(ofp.OFPT_ECHO_REPLY, xid, m[HDR.size:]))
        elif type_ == ofp.OFPT_FEATURES_REQUEST:
            self.send(msg(ofp.OFPT_FEATURES_REPLY, xid,
                          struct.pack(ofp.OFP_SWITCH_FEATURES_PACK_STR, DPID, 0, 254, 0, 0x4F, 0)))
        elif type_ == ofp.OFPT_MULTIPART_REQUEST:
            self.multipart(xid, m)
        elif type_ == ofp.OFPT_FLOW_MOD:
            self.flow_mod(m)
        elif type_ == ofp.OFPT_METER_MOD:
            self.meter_mod(m)
        elif type_ in (ofp.OFPT_HELLO, ofp.OFPT_SET_CONFIG, ofp.OFPT_ECHO_REPLY):
            pass
        else:
            self.unhandled[type_] = self.unhandled.get(type_, 0) + 1

    def packet_out(self, m: bytes) -> None:
        _buffer, _in_port, actions_len = struct.unpack_from(ofp.OFP_PACKET_OUT_PACK_STR, m, HDR.size)
        at = HDR.size + struct.calcsize(ofp.OFP_PACKET_OUT_PACK_STR)
        atype, _alen, out_port = struct.unpack_from("!HHI", m, at)
        data = m[at + actions_len:]
        self.packet_outs += 1
        if atype == ofp.OFPAT_OUTPUT and out_port in self.listeners:
            self.listeners[out_port].put_nowait(data)
            return
        f = self.waiters.pop(out_port, None) if atype == ofp.OFPAT_OUTPUT else None
        if f is not None and not f.done():
            f.set_result(data)

    def experimenter(self, xid: int, m: bytes) -> None:
        _exp, exp_type = struct.unpack_from("!II", m, HDR.size)
        body = HDR.size + 8
        if exp_type == ofp.ONF_ET_BUNDLE_CONTROL:
            bid, ctype, flags = struct.unpack_from("!IHH", m, body)
            if ctype == ofp.ONF_BCT_OPEN_REQUEST:
                self.bundles[bid] = []
            elif ctype == ofp.ONF_BCT_COMMIT_REQUEST:
                for inner in self.bundles.pop(bid, []):
                    self.flow_mod(inner)
            elif ctype == ofp.ONF_BCT_DISCARD_REQUEST:
                self.bundles.pop(bid, None)
            # every *_REQUEST is answered by its *_REPLY (type + 1)
            self.send(msg(ofp.OFPT_EXPERIMENTER, xid, m[HDR.size:body]
                          + struct.pack("!IHH", bid, ctype + 1, flags)))
        elif exp_type == ofp.ONF_ET_BUNDLE_ADD_MESSAGE:
            bid, _flags = struct.unpack_from(ofp.ONF_BUNDLE_ADD_MSG_PACK_STR, m, body)
            inner = m[body + 8:]
            self.bundles.setdefault(bid, []).append(inner[:HDR.unpack_from(inner)[2]])
        else:
            self.unhandled[(ofp.OFPT_EXPERIMENTER, exp_type)] = 1

    def flow_mod(self, m: bytes) -> None:
        (cookie, _cmask, table, command, idle, hard, prio, _buf, _op, _og,
         flags) = struct.unpack_from(ofp.OFP_FLOW_MOD_PACK_STR0, m, HDR.size)
        at = HDR.size + struct.calcsize(ofp.OFP_FLOW_MOD_PACK_STR0)
        mlen = struct.unpack_from("!HH", m, at)[1]
        raw_match = m[at:at + mlen + (-mlen % 8)]
        instr = m[at + len(raw_match):]
        key = (table, prio, raw_match)
        if command in (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
            self.flows[key] = (cookie, raw_match, instr, flags, idle, hard)
        elif command == ofp.OFPFC_DELETE_STRICT:
            self.flows.pop(key, None)
        else:
            self.unhandled[("flow_mod", command)] = 1

    def meter_mod(self, m: bytes) -> None:
        command, flags, mid = struct.unpack_from(ofp.OFP_METER_MOD_PACK_STR, m, HDR.size)
        bands = m[HDR.size + struct.calcsize(ofp.OFP_METER_MOD_PACK_STR):]
        if command == ofp.OFPMC_DELETE:
            self.meters.pop(mid, None)
        else:
            self.meters[mid] = struct.pack(ofp.OFP_METER_CONFIG_PACK_STR, 8 + len(bands),
                                           flags, mid) + bands

    def multipart(self, xid: int, m: bytes) -> None:
        mtype, _flags = struct.unpack_from("!HH", m, HDR.size)
        if mtype == ofp.OFPMP_PORT_DESC:
            entries = [struct.pack(ofp.OFP_PORT_PACK_STR, no, bytes([2, 0, 0, 0, no >> 8, no & 255]),
                                   name.encode(), 0, ofp.OFPPS_LIVE, 0, 0, 0, 0, 10_000_000,
                                   10_000_000)
                       for no, name in enumerate(self.port_names, start=1)]
        elif mtype == ofp.OFPMP_FLOW:
            entries = []
            for (table, prio, _m), (cookie, raw_match, instr, flags, idle, hard) in self.flows.items():
                n = struct.calcsize(ofp.OFP_FLOW_STATS_0_PACK_STR) + len(raw_match) + len(instr)
                entries.append(struct.pack(ofp.OFP_FLOW_STATS_0_PACK_STR, n, table, 0, 0, prio,
                                           idle, hard, flags, cookie, 0, 0) + raw_match + instr)
        elif mtype == ofp.OFPMP_METER_CONFIG:
            entries = list(self.meters.values())
        elif mtype == ofp.OFPMP_DESC:
            entries = [b"vmflow bench".ljust(256, b"\0") + b"simulated".ljust(256, b"\0")
                       + b"0".ljust(256, b"\0") + b"0".ljust(32, b"\0") + b"0".ljust(256, b"\0")]
        else:
            self.unhandled[("multipart", mtype)] = 1
            entries = []
        # One reply per ~60 KB of entries (a message is at most 64 KiB), REPLY_MORE on all but the last.
        chunks, cur = [], b""
        for e in entries:
            if len(cur) + len(e) > 60000:
                chunks.append(cur)
                cur = b""
            cur += e
        chunks.append(cur)
        for i, c in enumerate(chunks):
            more = ofp.OFPMPF_REPLY_MORE if i < len(chunks) - 1 else 0
            self.send(msg(ofp.OFPT_MULTIPART_REPLY, xid,
                          struct.pack(ofp.OFP_MULTIPART_REPLY_PACK_STR, mtype, more) + c))

    # -- to the controller -------------------------------------------------------
    def services_flows(self) -> list[tuple[dict, int]]:
        """(match fields, cookie) of every services flow received so far."""
        out = []
        for (table, _prio, raw), (cookie, *_rest) in self.flows.items():
            if table == SERVICES:
                out.append((dict(parser.OFPMatch.parser(raw, 0).items()), cookie))
        return out

    def packet_in(self, in_port: int, cookie: int, data: bytes) -> asyncio.Future:
        fut = asyncio.get_event_loop().create_future()
        self.waiters[in_port] = fut
        self.send_packet_in(in_port, cookie, data)
        return fut

    def send_packet_in(self, in_port: int, cookie: int, data: bytes) -> None:
        match = bytearray()
        mlen = parser.OFPMatch(in_port=in_port).serialize(match, 0)
        body = struct.pack(ofp.OFP_PACKET_IN_PACK_STR, ofp.OFP_NO_BUFFER, len(data),
                           ofp.OFPR_ACTION, SERVICES, cookie) + bytes(match[:mlen]) + b"\0\0" + data
        self.send(msg(ofp.OFPT_PACKET_IN, self.next_xid(), body))


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the runs ---------------------------------------------------------------------
async def run_clients(items, concurrency: int, one):
    """Run one(item) for every item, `concurrency` at a time; latencies and wall time."""
    latencies: list[float] = []
    queue = list(reversed(items))

    async def worker():
        while queue:
            latencies.append(await one(queue.pop()))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0


async def bench_arp(sw: Switch, clients: list[dict], conc: int) -> dict:
    n = len(clients)

    async def one(c):
        target = clients[(c["i"] + n // 2 + 1) % n]
        frame = arp_frame(c["mac_address"], c["ip"], target["ip"])
        t0 = time.perf_counter()
        out = await asyncio.wait_for(sw.packet_in(c["ofport"], c["arp_cookie"], frame), 5)
        dt = time.perf_counter() - t0
        a = dpkt.ethernet.Ethernet(out).data
        if not isinstance(a, dpkt.arp.ARP) or a.op != 2 or socket.inet_ntoa(a.spa) != target["ip"]:
            raise SystemExit(f"wrong ARP answer for {c['ip']}: {out.hex()}")
        return dt

    lat, wall = await run_clients(clients, conc, one)
    return {"rate": n / wall, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": n}


async def bench_dhcp(sw: Switch, clients: list[dict], conc: int) -> dict:
    async def one(c):
        xid = 0x5000 + c["i"]
        t0 = time.perf_counter()
        offer = await asyncio.wait_for(
            sw.packet_in(c["ofport"], c["dhcp_cookie"], dhcp_frame(c["mac_address"], 1, xid)), 5)
        yiaddr, server = offered(offer)
        if socket.inet_ntoa(yiaddr) != c["ip"]:
            raise SystemExit(f"OFFER of {socket.inet_ntoa(yiaddr)} to {c['ip']}")
        request = dhcp_frame(c["mac_address"], 3, xid, [(50, yiaddr), (54, server)])
        ack = await asyncio.wait_for(sw.packet_in(c["ofport"], c["dhcp_cookie"], request), 5)
        d = dpkt.dhcp.DHCP(bytes(dpkt.ethernet.Ethernet(ack).data.data.data))
        if dict(d.opts).get(53) != bytes([dpkt.dhcp.DHCPACK]):
            raise SystemExit(f"no ACK for {c['ip']}: {dict(d.opts)}")
        return time.perf_counter() - t0

    lat, wall = await run_clients(clients, conc, one)
    n = len(clients)
    return {"rate": n / wall, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": n}


async def bench_metadata(sw: Switch, clients: list[dict], n: int, keepalive: bool) -> dict:
    """`n` requests over len(clients) concurrent metadata clients."""
    remaining = [n]
    errors: list[str] = []

    async def one_client(c: dict) -> list[float]:
        mc = MetadataClient(c["i"], c["port"], keepalive)
        # Rounds must not reuse a connection (source port, ISN) of an earlier
        # one: the server may still hold it (TIME_WAIT, an idle keep-alive).
        mc.rng = random.Random()
        mc.sport = c.get("meta_sport", mc.sport)
        mc.new_connection()
        inbox: asyncio.Queue = asyncio.Queue()
        sw.listeners[c["ofport"]] = inbox

        def send(frames):
            for f in frames:
                sw.send_packet_in(c["ofport"], c["meta_cookie"], f)

        while remaining[0] > 0:
            remaining[0] -= 1
            send(mc.start())
            done = False
            # Close mode: the request is done at the answer's last byte, the
            # connection once the client has answered the server's FIN.
            while not done or (not keepalive and mc.state != "syn"):
                data = await asyncio.wait_for(inbox.get(), 5)
                t = dpkt.ethernet.Ethernet(data).data.data
                if t.dport != mc.sport:
                    continue   # the last ACK of the client's previous connection
                frames, finished = mc.receive(data)
                done |= finished
                send(frames)
        del sw.listeners[c["ofport"]]
        c["meta_sport"] = mc.sport
        if mc.errors:
            errors.append(f"client {c['i']}: {mc.errors} wrong answers")
        return mc.latencies

    t0 = time.perf_counter()
    lat = [x for ls in await asyncio.gather(*(one_client(c) for c in clients)) for x in ls]
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"metadata: {'; '.join(errors)}")
    return {"rate": len(lat) / wall, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": len(lat)}


ARP_REQUEST = {"eth_type": 0x0806, "arp_op": 1}
DHCP_CLIENT = {"eth_type": 0x0800, "ip_proto": 17, "udp_src": 68, "udp_dst": 67}
METADATA_TCP = {"eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "169.254.169.254", "tcp_dst": 80}
COOKIES = (("arp_cookie", ARP_REQUEST), ("dhcp_cookie", DHCP_CLIENT),
           ("meta_cookie", METADATA_TCP))


async def wait_for_flows(sw: Switch, clients: list[dict], timeout: float) -> None:
    """Wait for every port's ARP, DHCP and metadata services flows; note their cookies.
    Matched exactly (reg6 = the port's key plus the packet's fields), so an
    ARP announcement flow (with arp_spa/arp_tpa) is not taken for the proxy's."""
    deadline = time.monotonic() + timeout
    by_key = {c["key"]: c for c in clients}
    while True:
        for match, cookie in sw.services_flows():
            c = by_key.get(match.pop("reg6", None))
            if c is None:
                continue
            for name, want in COOKIES:
                if match == want:
                    c[name] = cookie
        missing = sum(any(name not in c for name, _ in COOKIES) for c in clients)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"services flows for {missing} of {len(clients)} ports never arrived "
                             f"({len(sw.flows)} flows received)")
        await asyncio.sleep(0.2)


async def main_async(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="vmflow-bench-pin-"))
    db = tmp / "store.db"
    ports = fill_store(str(db), args.clients)
    names = [interface_name(p) for p in ports] + ["uplink"]
    clients = [{"i": i, "key": p["_key"], "mac_address": p["mac_address"],
                "ip": p["fixed_ips"][0]["ip_address"], "ofport": i + 1, "port": p}
               for i, p in enumerate(ports)]
    # fill_store gives an instance to every even-numbered port only.
    meta_clients = clients[0:2 * args.metadata_clients:2]
    meta_modes = {"close": [False], "keepalive": [True], "both": [False, True]}[args.metadata_mode]
    ofp_port = free_port()
    (tmp / "vmflow.conf").write_text("[DEFAULT]\nlog_level = WARNING\n")
    log = open(tmp / "controller.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "controller",
                             "--config", str(tmp / "vmflow.conf"),
                             "--store", f"sqlite:///{db}", "--ofp-listen", f"127.0.0.1:{ofp_port}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    loop = asyncio.get_event_loop()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _tr, sw = await loop.create_connection(lambda: Switch(names), "127.0.0.1", ofp_port)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"controller did not listen; see {log.name}")
                await asyncio.sleep(0.1)
        t0 = time.monotonic()
        await wait_for_flows(sw, clients, 120)
        print(f"controller installed {len(sw.flows)} flows and {len(sw.meters)} meters "
              f"for {len(clients)} ports in {time.monotonic() - t0:.1f} s", flush=True)
        await asyncio.sleep(1)   # let the initial sync's tail settle
        runs = [("arp", lambda: bench_arp(sw, clients, args.concurrency)),
                ("dhcp", lambda: bench_dhcp(sw, clients, args.concurrency))]
        for keep in meta_modes:
            runs.append((f"metadata-{'keepalive' if keep else 'close'}",
                         lambda keep=keep: bench_metadata(sw, meta_clients, len(clients), keep)))
        results = {name: [] for name, _ in runs}
        for _ in range(args.rounds):
            for name, fn in runs:
                # CPU seconds of each side, so a low rate can be put on the controller or on us
                c0, b0 = proc_cpu(proc.pid), time.process_time()
                r = await fn()
                r["ctl_cpu"], r["bench_cpu"] = proc_cpu(proc.pid) - c0, time.process_time() - b0
                results[name].append(r)
        ok = True
        # (result, goal, unit, distinct clients, clients at a time)
        goals = [("dhcp", 500, "4-way exchanges/s", len(clients), args.concurrency),
                 ("arp", 2000, "replies/s", len(clients), args.concurrency)]
        # Issue 5's goal is for curl-like clients, a connection per request;
        # keep-alive is reported against the same figure for comparison.
        goals += [(name, 300, "requests/s", len(meta_clients), len(meta_clients))
                  for name in results if name.startswith("metadata")]
        for name, goal, unit, distinct, conc in goals:
            runs = results[name]
            runs.sort(key=lambda r: r["rate"])
            r = runs[len(runs) // 2]
            verdict = "ok" if r["rate"] >= goal else "BELOW GOAL"
            ok &= r["rate"] >= goal
            print(f"{name}: {r['rate']:,.0f} {unit} (goal {goal}: {verdict}); "
                  f"p50 {r['p50'] * 1e3:.2f} ms, p99 {r['p99'] * 1e3:.2f} ms; "
                  f"{distinct} distinct clients, {conc} at a time; "
                  f"median of {args.rounds} rounds (rates: "
                  f"{', '.join(format(x['rate'], ',.0f') for x in runs)}); CPU per request: "
                  f"controller {r['ctl_cpu'] / r['n'] * 1e3:.2f} ms, "
                  f"bench {r['bench_cpu'] / r['n'] * 1e3:.2f} ms", flush=True)
        if sw.unhandled:
            print(f"messages the simulated switch ignored: {sw.unhandled}")
        return 0 if ok else 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if args.keep:
            print(f"kept {tmp}")
        else:
            for f in tmp.iterdir():
                f.unlink()
            os.rmdir(tmp)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=20,
                    help="clients with a request outstanding at once")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--metadata-clients", type=int, default=20,
                    help="concurrent metadata clients (distinct VMs with instances)")
    ap.add_argument("--metadata-mode", choices=["close", "keepalive", "both"], default="both")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (store, controller log)")
    args = ap.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
