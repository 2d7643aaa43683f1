"""Behaviour of the apps' flows, through the packet walker.

    h1 = Switch.of(view, 0xA1)                 # every app, the real compiler
    t = h1.send(port_a, eth_dst=port_b["mac_address"], ipv4_dst="10.0.0.2", tcp_dst=22)
    assert t.ports == [h1.ofport(port_b)]

Tests written with this assert where a packet ends up (ports, VLAN tags,
the controller, the table that dropped it), never the flows themselves, so
they hold whatever way the apps lay their flows out.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from apps.arp import ArpApp
from apps.dhcp import DhcpApp
from apps.l2 import L2App
from apps.metadata import MetadataApp
from controller.compiler import FlowCompiler, SwitchFlows
from controller.packetfields import make_packet, packet_from_frame
from controller.walker import Trace, Walker, flow_problems
from topology.view import TopologyView, interface_name


def all_apps() -> list:
    return [L2App(), ArpApp(), DhcpApp(), MetadataApp()]


class Switch:
    def __init__(self, view: TopologyView, sw, apps: Optional[Iterable] = None):
        self.view, self.sw = view, sw
        memo = SwitchFlows()
        compiler = FlowCompiler(list(apps) if apps is not None else all_apps())
        compiler.refresh(view, sw, memo)
        assert compiler.errors == 0, compiler.app_errors
        self.flows = list(memo.desired.values())
        self.walker = Walker(self.flows)

    def problems(self) -> list[str]:
        return flow_problems(self.flows)

    def ofport(self, port: dict) -> int:
        n = self.sw.ofport(interface_name(port))
        assert n is not None, f"{port['id']} is not plugged here"
        return n

    def uplink(self, physnet: str = "physnet1") -> int:
        return self.sw.ofport(self.sw.host["physical_networks"][physnet])

    def send(self, port: dict, *, ct="new", **fields: Any) -> Trace:
        """A packet from a VM port: its MAC (and, for IPv4, its first fixed IP)
        unless fields say otherwise."""
        pkt = {"in_port": self.ofport(port), "eth_src": port["mac_address"]}
        is_ip = any(k.startswith(("ipv4_", "tcp_", "udp_", "icmpv4_", "ip_")) for k in fields)
        if is_ip and port.get("fixed_ips"):
            pkt["ipv4_src"] = port["fixed_ips"][0]["ip_address"]
        pkt.update(fields)
        return self.walker.walk(make_packet(pkt), ct=ct)

    def send_frame(self, in_port: int, frame: bytes, *, ct="new") -> Trace:
        return self.walker.walk(packet_from_frame(frame, in_port), ct=ct)

    def receive(self, *, vlan: Optional[int] = None, physnet: str = "physnet1", ct="new",
                **fields: Any) -> Trace:
        """A packet coming in by the uplink, tagged with `vlan` if given."""
        pkt = {"in_port": self.uplink(physnet), **fields}
        if vlan is not None:
            pkt["vlan"] = vlan
        return self.walker.walk(make_packet(pkt), ct=ct)


def owner_app(trace_output) -> Optional[str]:
    """The app that wanted the flow that sent this packet (from its cookie)."""
    from controller.pipeline import decode_cookie
    from controller.trace import app_names
    decoded = decode_cookie(trace_output.flow.cookie)
    return app_names().get(decoded[0]) if decoded else None


def arp_answered(t: Trace, asker: dict, asker_ofport: int, answer_mac: str) -> bool:
    """The ARP request of `asker` got answered and went nowhere else: by the
    controller (the ARP proxy), or in the switch by a reply back out of the
    asker's port saying `answer_mac`."""
    if t.controller and not t.outputs:
        return owner_app(t.controller[0]) == "arp"
    if [o.port for o in t.outputs] != [asker_ofport] or t.controller:
        return False
    reply = t.outputs[0].packet
    return (reply.get("arp_op") == "2" and reply.get("arp_sha") == answer_mac
            and reply.get("eth_src") == answer_mac
            and reply.get("eth_dst") == asker["mac_address"]
            and reply.get("arp_tha") == asker["mac_address"])
