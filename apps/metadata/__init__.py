"""Metadata service at 169.254.169.254, terminated by the controller.

A VM's TCP segments to 169.254.169.254:80 and its ARP requests for
169.254.169.254 reach the controller through the port's meter (flows in the
services table, matched on reg6 = the port's key, so only local VM ports
have them). The asking VM is the port the packet came in on, so it cannot be
spoofed; the packet's source address must also be one of the port's fixed
IPs, or it is dropped and counted.

Pieces, each pure and tested on its own:
    packets.py    frames in (strictly checked) and out (dpkt)
    tcp.py        the sans-IO TCP endpoint (segments in -> segments out, timers)
    http.py       HTTP/1.x parsing with bounds, keep-alive and pipelining
    documents.py  EC2 and OpenStack documents
    tokens.py     IMDSv2 tokens (stateless HMAC)

ARP for 169.254.169.254 is answered here, by a services flow above the ARP
proxy's, with the service MAC ([metadata] mac). Every reply from
169.254.169.254 carries that MAC as its source, so the VM's neighbour entry
and the frames it receives agree.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from apps.addresses import fixed_ipv4s, mac_bytes
from controller.app import App, PacketIn, PacketOut, SwitchView
from controller.locality import is_local
from apps.metadata import documents, packets
from apps.metadata.http import HttpSession, Request, Response
from apps.metadata.tcp import Limits, TcpStack
from apps.metadata.tokens import TokenIssuer
from topology.store.base import SECRETS_KIND
from controller.flow import Flow, flow, to_controller
from controller.pipeline import REG_IN_PORT_KEY
from topology.store.base import Document
from topology.view import TopologyView

LOG = logging.getLogger(__name__)

# Above the ARP proxy's ARP flow (apps/arp.py, 100), so ARP for the metadata
# address comes to this app; the TCP flow needs no order against others.
ARP_PRIORITY = 110
TCP_PRIORITY = 110
DEFAULT_MAC = "0e:a9:fe:a9:fe:fe"


@dataclass(frozen=True)
class ConnCtx:
    """Where a connection's segments go: fixed when the SYN arrives."""
    dpid: int
    ofport: int
    port_id: str
    vm_mac: bytes
    vm_ip: str


def limits_from_conf(conf) -> Limits:
    m = conf.metadata
    return Limits(max_connections=m.max_connections,
                  max_per_scope=m.max_connections_per_port,
                  idle_timeout=float(m.idle_timeout))


# The store secret that signs IMDSv2 tokens (made at controller start).
TOKEN_SECRET = "metadata-token"


class MetadataApp(App):
    name = "metadata"

    def __init__(self, conf=None, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 limits: Optional[Limits] = None, rng=None, secret: Optional[bytes] = None):
        mac = DEFAULT_MAC
        if conf is not None:
            mac = getattr(conf.metadata, "mac", None) or DEFAULT_MAC
            limits = limits or limits_from_conf(conf)
            configured = getattr(conf.metadata, "token_secret", "")
            if secret is None and configured:
                secret = configured.encode()
        # A secret given here (config) wins over the store's.
        self._fixed_secret = secret is not None
        self.wall_clock = wall_clock
        self.mac = mac_bytes(mac)
        self.clock = clock
        self.tokens = TokenIssuer(secret)
        self.stack = TcpStack(self._handler_for, limits or Limits(), rng=rng, count=self._count)
        self.runtime = None
        self._view: Optional[TopologyView] = None
        self._lock = threading.RLock()
        self._wake_at: Optional[float] = None

    # -- flows -------------------------------------------------------------
    def port_flows(self, view: TopologyView, sw: SwitchView, port: Document) -> Iterable[Flow]:
        key = port.get("_key")
        if key is None or not is_local(view, sw, port):
            return []
        return [
            flow(self.app_id, "services", TCP_PRIORITY,
                 {REG_IN_PORT_KEY: key, "eth_type": packets.ETH_IP, "ip_proto": 6,
                  "ipv4_dst": packets.METADATA_IP, "tcp_dst": packets.METADATA_PORT},
                 *to_controller(key), owner=("ports", key)),
            flow(self.app_id, "services", ARP_PRIORITY,
                 {REG_IN_PORT_KEY: key, "eth_type": packets.ETH_ARP, "arp_op": 1,
                  "arp_tpa": packets.METADATA_IP},
                 *to_controller(key), owner=("ports", key)),
        ]

    # -- packets -----------------------------------------------------------
    def _count(self, name: str) -> None:
        if self.runtime is not None:
            self.runtime.count(name[len("metadata."):] if name.startswith("metadata.") else name)

    def packet_in(self, pkt: PacketIn) -> Iterable[PacketOut]:
        with self._lock:
            self._view = pkt.view
            parsed = packets.parse(pkt.data)
            if isinstance(parsed, packets.Refused):
                self._count("metadata.drop." + parsed.reason)
                return []
            port = pkt.port
            if port is None:
                self._count("metadata.drop.unknown_port")
                return []
            ips = set(fixed_ipv4s(port))
            if isinstance(parsed, packets.ArpRequest):
                if parsed.sender_ip not in ips:
                    self._count("metadata.drop.arp_spoofed_sender")
                    return []
                self._count("metadata.arp_replied")
                return [PacketOut(pkt.in_port, packets.build_arp_reply(
                    self.mac, parsed.src_mac, parsed.sender_ip))]
            if parsed.src_ip not in ips:
                self._count("metadata.drop.spoofed_source")
                return []
            try:
                vm_mac = mac_bytes(port.get("mac_address") or "")
            except ValueError:
                vm_mac = parsed.src_mac
            ctx = ConnCtx(pkt.dpid, pkt.in_port, port["id"], vm_mac, parsed.src_ip)
            now = self.clock()
            outs = self.stack.segment(now, port["id"], parsed.src_ip, ctx, parsed.segment)
            result = []
            for c, seg in outs:
                frame = packets.build_tcp(self.mac, c.vm_mac, c.vm_ip, seg)
                if c.dpid == pkt.dpid:
                    result.append(PacketOut(c.ofport, frame))
                else:
                    self._send(c, frame)
            self._arm(now)
            return result

    def _send(self, ctx: ConnCtx, frame: bytes) -> None:
        if self.runtime is not None:
            self.runtime.send_packet(ctx.dpid, ctx.ofport, frame)

    # -- timers --------------------------------------------------------------
    def _arm(self, now: float) -> None:
        if self.runtime is None:
            return
        d = self.stack.next_deadline()
        if d is None or (self._wake_at is not None and self._wake_at <= d):
            return
        self._wake_at = d
        self.runtime.call_later(max(0.0, d - now) + 0.001, self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_at = None
            self.poll()

    def poll(self) -> None:
        """Run what is due (timers), send it, and ask to be woken for the next."""
        now = self.clock()
        for c, seg in self.stack.on_timer(now):
            self._send(c, packets.build_tcp(self.mac, c.vm_mac, c.vm_ip, seg))
        self._arm(now)

    # -- HTTP ----------------------------------------------------------------
    def _handler_for(self, ctx: ConnCtx) -> HttpSession:
        return HttpSession(lambda req: self._serve(ctx, req), self._count)

    def _serve(self, ctx: ConnCtx, req: Request) -> Response:
        view = self._view
        port = view.ports.get(ctx.port_id) if view is not None else None
        instance = view.instance_for_port(port) if port is not None else None
        if view is not None and not self._fixed_secret:
            stored = view.docs.get(SECRETS_KIND, {}).get(TOKEN_SECRET)
            if stored is not None:
                self.tokens.secret = bytes.fromhex(stored["value"])
        return documents.serve(req, documents.Context(port, instance, view, self.tokens,
                                                      self.wall_clock()))
