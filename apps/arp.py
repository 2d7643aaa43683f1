"""ARP proxy: the controller answers every ARP request a VM sends.

A VM's ARP request (arp_op=1) never reaches another VM. The services table
sends it to the controller through the port's meter; the controller answers
from the store, with a packet-out back to the port it came in on, for every
IPv4 address it knows in the requester's network:

- the fixed IPs of every port of the network (VM ports, the DHCP port,
  router interfaces: they are all ports);
- allowed address pairs given as a single address or a /32 (wider CIDRs
  are ranges, not addresses, and are not answered for), with the pair's MAC
  or, when it has none, the port's MAC.

ARP for 169.254.169.254 is the metadata app's: its services flow sits above
this one (apps/metadata) and answers with the metadata service MAC.

A fixed IP wins over an allowed address pair for the same address; between
pairs of several ports the port with the smallest key wins, so the answer is
the same on every controller run.

An unknown target gets no answer, and is counted. So is a request for the
requester's own address (duplicate address detection must not see a
conflict).

A gratuitous request (sender address == target address, `arping -U`) that
announces one of the port's own addresses (fixed IPs, single-address pairs)
is not the proxy's to answer: it is how a VM (or keepalived moving a VIP)
tells its neighbours, so a services flow per own address, above the
to-controller flow, sends it on into the network. port_security has already
checked the sender is the port's. Any other gratuitous request reaches the
controller, which drops and counts it ("gratuitous"). ARP replies (including
`arping -A` announcements) are not requests: port_security checks their
sender and they are forwarded like any other packet.

Below all of these, l2 drops every other ARP request from a VM, so ARP
fails closed when this app or its flows are missing.

Everything that decides an answer is a pure function of bytes and
documents; ArpApp only wires those to packet-ins and counts outcomes.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

import dpkt

from apps.addresses import ipv4_packed, mac_bytes, own_ipv4s, pair_ipv4s
from controller.app import App, PacketIn, PacketOut, SwitchView
from apps.l2 import ETH_ARP
from controller.locality import is_local
from controller.flow import Flow, flow, goto, to_controller
from controller.pipeline import REG_IN_PORT_KEY
from topology.store.base import Document
from topology.view import TopologyView

ETH_TYPE_ARP = ETH_ARP
ARP_REQUEST = 1
ARP_REPLY = 2
SERVICES_PRIORITY = 100
# Above SERVICES_PRIORITY so an announcement is not sent to the controller;
# below metadata's 110 (its flow only matches 169.254.169.254, never an own address).
ANNOUNCE_PRIORITY = 105


def address_table(view: TopologyView, network_id: str) -> dict[bytes, bytes]:
    """Every IPv4 address the store knows in a network -> the MAC that answers for it.

    Keys and values are packed (4-byte address, 6-byte MAC), as they appear
    in ARP packets.
    """
    ports = sorted(view.ports_by_network.get(network_id, {}).values(),
                   key=lambda p: (p.get("_key") or 0, p["id"]))
    fixed: dict[bytes, bytes] = {}
    pairs: dict[bytes, bytes] = {}
    for p in ports:
        mac = p.get("mac_address")
        if not mac:
            continue
        try:
            port_mac = mac_bytes(mac)
        except ValueError:
            continue
        for fip in p.get("fixed_ips") or ():
            ip = ipv4_packed(fip.get("ip_address") or "")
            if ip is not None:
                fixed.setdefault(ip, port_mac)
        for pair, text in pair_ipv4s(p):
            ip = ipv4_packed(text)
            try:
                pair_mac = mac_bytes(pair["mac_address"]) if pair.get("mac_address") else port_mac
            except ValueError:
                continue
            pairs.setdefault(ip, pair_mac)
    table = dict(pairs)
    table.update(fixed)
    return table


def arp_reply(frame: bytes, table: Mapping[bytes, bytes],
              requester_mac: Optional[bytes] = None) -> tuple[Optional[bytes], str]:
    """Answer one frame from a VM: (reply frame or None, outcome name).

    The outcome is what the caller counts: "replied", "malformed",
    "not_request", "unknown_target", "own_address" or "gratuitous".
    Never raises, whatever the bytes.
    """
    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.Error, ValueError, IndexError, KeyError, TypeError):
        return None, "malformed"
    if eth.type != ETH_TYPE_ARP or getattr(eth, "vlan_tags", None):
        return None, "malformed"
    arp = eth.data
    if not isinstance(arp, dpkt.arp.ARP):
        return None, "malformed"
    if (arp.hrd != dpkt.arp.ARP_HRD_ETH or arp.pro != dpkt.arp.ARP_PRO_IP
            or arp.hln != 6 or arp.pln != 4
            or len(arp.sha) != 6 or len(arp.spa) != 4 or len(arp.tpa) != 4):
        return None, "malformed"
    if arp.op != ARP_REQUEST:
        return None, "not_request"
    if arp.spa == arp.tpa:
        return None, "gratuitous"
    target_mac = table.get(arp.tpa)
    if target_mac is None:
        return None, "unknown_target"
    if target_mac == arp.sha or (requester_mac is not None and target_mac == requester_mac):
        return None, "own_address"
    reply = dpkt.arp.ARP(hrd=dpkt.arp.ARP_HRD_ETH, pro=dpkt.arp.ARP_PRO_IP, hln=6, pln=4,
                         op=ARP_REPLY, sha=target_mac, spa=arp.tpa,
                         tha=arp.sha, tpa=arp.spa)
    out = dpkt.ethernet.Ethernet(dst=eth.src, src=target_mac, type=ETH_TYPE_ARP, data=reply)
    return bytes(out), "replied"


def arp_request_flows(app_id: int, view: TopologyView, sw: SwitchView,
                      port: Document) -> list[Flow]:
    """A local VM port's ARP requests go to the controller through its meter;
    its gratuitous requests for its own addresses go on into the network."""
    if port.get("_key") is None or not is_local(view, sw, port):
        return []
    key = port["_key"]
    flows = [flow(app_id, "services", SERVICES_PRIORITY,
                  {REG_IN_PORT_KEY: key, "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST},
                  *to_controller(key), owner=("ports", key))]
    for ip in own_ipv4s(port):
        flows.append(flow(app_id, "services", ANNOUNCE_PRIORITY,
                          {REG_IN_PORT_KEY: key, "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST,
                           "arp_spa": ip, "arp_tpa": ip},
                          goto("egress_firewall"), owner=("ports", key)))
    return flows


class AddressCache:
    """address_table per network, recomputed when the view's revision moves."""

    def __init__(self) -> None:
        self._view_id: Optional[int] = None
        self._revision: Optional[int] = None
        self._tables: dict[str, dict[bytes, bytes]] = {}

    def get(self, view: TopologyView, network_id: str) -> dict[bytes, bytes]:
        if self._view_id != id(view) or self._revision != view.revision:
            self._view_id = id(view)
            self._revision = view.revision
            self._tables = {}
        table = self._tables.get(network_id)
        if table is None:
            table = self._tables[network_id] = address_table(view, network_id)
        return table


class ArpApp(App):
    name = "arp"

    def __init__(self, conf=None) -> None:
        self.conf = conf
        self.cache = AddressCache()
        self.runtime = None

    def port_flows(self, view: TopologyView, sw: SwitchView, port: Document) -> Iterable[Flow]:
        return arp_request_flows(self.app_id, view, sw, port)

    def _count(self, name: str) -> None:
        if self.runtime is not None:
            self.runtime.count(name)

    def packet_in(self, pkt: PacketIn) -> Iterable[PacketOut]:
        port = pkt.port
        if port is None or not port.get("network_id"):
            self._count("unknown_port")
            return ()
        try:
            requester = mac_bytes(port.get("mac_address") or "")
        except ValueError:
            requester = None
        table = self.cache.get(pkt.view, port["network_id"])
        reply, outcome = arp_reply(pkt.data, table, requester)
        self._count(outcome)
        if reply is None:
            return ()
        return (PacketOut(pkt.in_port, reply),)
