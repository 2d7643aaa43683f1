"""ARP: answered in the switch where it can be, by the controller otherwise.

A VM's ARP request (arp_op=1) never reaches another VM. Every IPv4
address the store knows in a network is answered in the switch, by a
responder flow per (network, address) in the services table: the request
becomes the reply (eth_src -> eth_dst, the answer's MAC -> eth_src,
arp_op=2, arp_sha -> arp_tha, arp_spa -> arp_tpa, the answer -> arp_sha and
arp_spa) and goes back out of the port it came in on, as Neutron's
arp_responder and OVN do. The addresses answered are:

- the fixed IPs of every port of the network (VM ports, the DHCP port,
  router interfaces: they are all ports);
- allowed address pairs given as a single address or a /32 (wider CIDRs
  are ranges, not addresses, and are not answered for), with the pair's MAC
  or, when it has none, the port's MAC.

A fixed IP wins over an allowed address pair for the same address; between
pairs of several ports the port with the smallest key wins (the shared-VIP
case), so the answer is the same on every switch and every controller run.

Why in the switch, not (only) by packet-in. Measured on this testbed
(bench/arp_answer.py, tests/mininet/test_data_plane_resilience.py):

- A controller pause no longer costs traffic. The kernel re-checks a
  neighbour it already knows with unicast ARP requests; when those go to
  the controller, a 10 s SIGSTOP of the controller lost 24 of 120 pings
  to each of two neighbours (the issue measured 48 of 200 in 20 s). With the
  responders a 30 s SIGSTOP loses none, on one host and across hosts, with
  the neighbour caches flushed half-way.
- An answer takes 0.29 ms (p50; p90 0.57 ms) instead of 1.64 ms (p90
  2.38 ms) through the controller, and costs the controller nothing
  (0 packet-ins for 200 requests, against 200). OVS cannot rewrite ARP
  fields in its datapath, so each answer is made by ovs-vswitchd's upcall
  handler (a slow-path datapath flow), still locally and without the
  controller.
- The cost is one flow per known address per network on every switch where
  the network is present: about as many as l2_lookup's per-port flows.

What stays with the controller (per-port flows, through the port's meter):

- requests no responder matches: unknown targets get no answer and are
  counted ("unknown_target"); l2 drops the requests that reach no flow of
  this app (fail closed);
- a port asking for one of its own addresses (OWN_ADDRESS_PRIORITY, above
  the responders): a DAD probe must not see a conflict ("own_address"),
  and a pair with a MAC of its own is answered with that MAC;
- a gratuitous request that neither a responder nor an announcement flow
  (below) takes ("gratuitous").

ARP for 169.254.169.254 is the metadata app's: its services flow sits above
these (apps/metadata) and answers with the metadata service MAC.

A gratuitous request (sender address == target address, `arping -U`) that
announces one of the port's own addresses (fixed IPs, single-address pairs)
is not the proxy's to answer: it is how a VM (or keepalived moving a VIP)
tells its neighbours, so a services flow per own address, above the
others, sends it on into the network. port_security has already checked
the sender is the port's. ARP replies (including `arping -A`
announcements) are not requests: port_security checks their sender and
they are forwarded like any other packet.

Everything that decides an answer is a pure function of bytes and
documents; ArpApp only wires those to flows and packet-ins and counts
outcomes.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

import dpkt

import socket

from apps.addresses import ipv4_packed, mac_bytes, own_ipv4s, pair_ipv4s
from apps.l2 import ETH_ARP
from controller.app import App, PacketIn, PacketOut, SwitchView
from controller.flow import Flow, apply, flow, goto, move, output, set_field, to_controller
from controller.locality import is_active, is_local
from controller.pipeline import REG_IN_PORT_KEY
from topology.store.base import Document
from topology.view import TopologyView

ETH_TYPE_ARP = ETH_ARP
ARP_REQUEST = 1
ARP_REPLY = 2
SERVICES_PRIORITY = 100
# In-switch answers, per (network, address): above the to-controller flow,
# below a requester's questions about its own addresses.
RESPONDER_PRIORITY = 102
# A port asking for one of its own addresses: the controller decides (no
# answer for a DAD probe, the pair's MAC for a pair with a MAC of its own).
OWN_ADDRESS_PRIORITY = 104
# Above SERVICES_PRIORITY so an announcement is not sent to the controller;
# below metadata's 110 (its flow only matches 169.254.169.254, never an own address).
ANNOUNCE_PRIORITY = 105


def _address_maps(view: TopologyView, network_id: str
                  ) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """(fixed IPs -> MAC, single-address pairs -> MAC) of a network's ports,
    the port with the smallest key first."""
    ports = sorted(view.ports_by_network.get(network_id, {}).values(),
                   key=lambda p: (p.get("_key") or 0, p["id"]))
    fixed: dict[bytes, bytes] = {}
    pairs: dict[bytes, bytes] = {}
    for p in ports:
        port_mac = _port_mac(p)
        if port_mac is None:
            continue
        for ip in _fixed_packed(p):
            fixed.setdefault(ip, port_mac)
        for pair, text in pair_ipv4s(p):
            ip = ipv4_packed(text)
            try:
                pair_mac = mac_bytes(pair["mac_address"]) if pair.get("mac_address") else port_mac
            except ValueError:
                continue
            pairs.setdefault(ip, pair_mac)
    return fixed, pairs


def _port_mac(port: Document) -> Optional[bytes]:
    try:
        return mac_bytes(port.get("mac_address") or "")
    except ValueError:
        return None


def _fixed_packed(port: Document) -> list[bytes]:
    out = []
    for fip in port.get("fixed_ips") or ():
        ip = ipv4_packed(fip.get("ip_address") or "")
        if ip is not None:
            out.append(ip)
    return out


def address_table(view: TopologyView, network_id: str) -> dict[bytes, bytes]:
    """Every IPv4 address the store knows in a network -> the MAC that answers for it.

    Keys and values are packed (4-byte address, 6-byte MAC), as they appear
    in ARP packets.
    """
    fixed, pairs = _address_maps(view, network_id)
    table = dict(pairs)
    table.update(fixed)
    return table


def pair_answers(view: TopologyView, network_id: str) -> dict[bytes, bytes]:
    """The part of address_table that comes from allowed address pairs (no
    port has the address as a fixed IP): the only addresses several ports
    may claim, so the only ones whose answer a change to another port can
    move."""
    fixed, pairs = _address_maps(view, network_id)
    return {ip: mac for ip, mac in pairs.items() if ip not in fixed}


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
    """A local VM port's ARP requests that no responder answers, and those
    for its own addresses, go to the controller through its meter; its
    gratuitous requests for its own addresses go on into the network."""
    if port.get("_key") is None or not is_local(view, sw, port):
        return []
    key = port["_key"]
    flows = [flow(app_id, "services", SERVICES_PRIORITY,
                  {REG_IN_PORT_KEY: key, "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST},
                  *to_controller(key), owner=("ports", key))]
    for ip in own_ipv4s(port):
        flows.append(flow(app_id, "services", OWN_ADDRESS_PRIORITY,
                          {REG_IN_PORT_KEY: key, "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST,
                           "arp_tpa": ip},
                          *to_controller(key), owner=("ports", key)))
        flows.append(flow(app_id, "services", ANNOUNCE_PRIORITY,
                          {REG_IN_PORT_KEY: key, "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST,
                           "arp_spa": ip, "arp_tpa": ip},
                          goto("egress_firewall"), owner=("ports", key)))
    return flows


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def responder_flow(app_id: int, network_key: int, ip: bytes, mac: bytes,
                   owner: tuple[str, int]) -> Flow:
    """Answer an ARP request for `ip` in the network with `mac`, in the
    switch: the request is turned into the reply and sent back out of the
    port it came in on (Neutron's arp_responder, OVN's ARP flows)."""
    ip_text = socket.inet_ntoa(ip)
    mac_text = _mac_text(mac)
    return flow(app_id, "services", RESPONDER_PRIORITY,
                {"metadata": network_key, "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST,
                 "arp_tpa": ip_text},
                apply(move("eth_src", 0, "eth_dst", 0, 48),
                      set_field("eth_src", mac_text),
                      set_field("arp_op", ARP_REPLY),
                      move("arp_sha", 0, "arp_tha", 0, 48),
                      move("arp_spa", 0, "arp_tpa", 0, 32),
                      set_field("arp_sha", mac_text),
                      set_field("arp_spa", ip_text),
                      output("in_port")),
                owner=owner)


def port_responder_flows(app_id: int, view: TopologyView, sw: SwitchView,
                         port: Document) -> list[Flow]:
    """Responders for a port's fixed IPs, local or remote, on a switch
    where its network is present. A fixed IP is the port's alone (IPAM), so
    its answer depends on this port only and lives in the port's scope: a
    change to one port recomputes its own responders, not the network's."""
    network = view.networks.get(port.get("network_id"))
    if sw.host is None or not is_active(network) or network.get("_key") is None \
            or port.get("_key") is None:
        return []
    mac = _port_mac(port)
    if mac is None:
        return []
    return [responder_flow(app_id, network["_key"], ip, mac, ("ports", port["_key"]))
            for ip in dict.fromkeys(_fixed_packed(port))]


def pair_responder_flows(app_id: int, view: TopologyView, sw: SwitchView, network: Document,
                         answers: Mapping[bytes, bytes]) -> list[Flow]:
    """Responders for the network's pair addresses (`answers` is its
    pair_answers): in the network's scope, which every port change of the
    network recomputes, because which port answers for a shared address
    (a VIP in several ports' pairs) depends on all of them."""
    if sw.host is None or not is_active(network) or network.get("_key") is None:
        return []
    key = network["_key"]
    return [responder_flow(app_id, key, ip, mac, ("networks", key))
            for ip, mac in sorted(answers.items())]


class AddressCache:
    """A per-network function of the view (address_table, pair_answers),
    recomputed when the view's revision moves."""

    def __init__(self, compute=None) -> None:
        self._compute = compute or address_table
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
            table = self._tables[network_id] = self._compute(view, network_id)
        return table


class ArpApp(App):
    name = "arp"

    def __init__(self, conf=None) -> None:
        self.conf = conf
        self.cache = AddressCache()
        # Flows are computed on the core thread, packet-ins answered on
        # another: each keeps its own cache.
        self.pair_cache = AddressCache(pair_answers)
        self.runtime = None

    def network_flows(self, view: TopologyView, sw: SwitchView,
                      network: Document) -> Iterable[Flow]:
        return pair_responder_flows(self.app_id, view, sw, network,
                                    self.pair_cache.get(view, network["id"]))

    def port_flows(self, view: TopologyView, sw: SwitchView, port: Document) -> Iterable[Flow]:
        return (arp_request_flows(self.app_id, view, sw, port)
                + port_responder_flows(self.app_id, view, sw, port))

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
