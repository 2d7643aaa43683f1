"""External networks in flows: distributed floating IPs and port forwarding.

Neutron's DVR floating IPs (a fip namespace per compute host, proxy ARP on
the external network, DNAT and SNAT on the VM's own host) done with flows
and ct(nat). Store documents: EXTERNAL_SCHEMA.md (floatingips,
port_forwardings, routers' external_gateway_info, hosts' external_mac).

Where: a floating IP's flows are on the host its port is bound to; a port
forwarding's on the host of its internal port. Nothing of a floating IP is
anywhere else, so only that host answers ARP for it.

What, following controller/pipeline.py's classify, nat_in, routing, nat_out
and output docs, for floating IP f bound to fixed IP p of port P on network
N, router R with its interface I on N, external network E:

- classify: ARP for f on E's uplink is answered in the switch with this
  host's external_mac (a copy goes to the controller, which learns the
  asker); IPv4 to (external_mac, f) goes to nat_in with metadata = E.
- nat_in: ct(commit, nat(dst=p)) in R's external zone
  (pipeline.external_zone), reg4 = P's key; the recirculated packet is
  routed into N toward P (dec_ttl, I's MAC as source) and meets P's ingress
  firewall with the outside's address as source.
- routing: IPv4 from P (source p) to I's MAC that no connected subnet or
  static route takes: dec_ttl, source = external_mac, metadata = E, then
  ct(commit, nat(src=f)) in R's external zone, recirculated to nat_out. The
  same ct un-DNATs the replies of connections that came in.
- nat_out: the next hop's MAC. Neighbours on E are learned by the controller
  (ARP requests for a floating IP, and the replies to its own requests) and
  kept in the store as kind `mac_bindings` ({network_id, ip_address,
  mac_address}), so flows stay a pure function of the store and a controller
  restart computes the same flows. An unknown neighbour sends the packet to
  the controller through the sender's meter; the controller ARPs for it
  (the destination on E's subnet, or E's gateway_ip) and drops that packet.
- output: E's uplink, tagged for a vlan network.

A host without `external_mac` cannot do floating IPs: logged once, no flows.
"""
from __future__ import annotations

import ipaddress
import logging
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Optional

from apps.dvr import ROUTER, Interface, _uplink_match, router_interfaces
from apps.l2 import ETH_ARP, ETH_IP, _to_uplink
from controller import nxext, scopes
from controller.nxext import check_pkt_larger
from controller.app import App, PacketIn, PacketOut, SwitchView
from controller.flow import (Flow, apply, ct, ct_state, dec_ttl, flow, goto, move, nat, output,
                             pop_vlan, set_field, write_metadata)
from controller.locality import is_active, uplink_ofport
from controller.pipeline import (OUT_KEY_UPLINK, REG_IN_PORT_KEY, REG_NAT_PORT,
                                 REG_OUT_PORT_KEY, REG_ROUTED, ROUTED, external_zone)
from topology.placement import snat_host
from topology.store.base import Document
from topology.view import ROUTER_INTERFACE, TopologyView

LOG = logging.getLogger(__name__)

FIPS = "floatingips"
PFS = "port_forwardings"
BINDINGS = "mac_bindings"

PRIO_ARP = 126
PRIO_IN = 125
PRIO_DNAT = 100
PRIO_DNAT_PF = 110
PRIO_ROUTED_IN = 100
PRIO_FIP_OUT = 500
PRIO_NEIGHBOUR = 200
PRIO_RESOLVE = 100
PRIO_GATEWAY = 50
PRIO_RESOLVE_GATEWAY = 40
PRIO_OUTPUT = 99
PRIO_SNAT_OUT = 400        # routing: below a floating IP's 500, above nothing-routes 2
PRIO_SNAT = 90             # nat_in: a tenant frame to the gateway MAC on the snat host
PRIO_SNAT_BACK = 100       # nat_in: an un-SNATed reply to a tenant port
PRIO_RESOLVE_SNAT = 99     # nat_out: the snat host asks, through the gateway port's meter
PRIO_RESOLVE_GATEWAY_SNAT = 39
PRIO_TOO_BIG = 120         # nat_in: larger than the tenant network's MTU
REG_TOO_BIG = "reg3"       # bit 0: check_pkt_larger's answer at classify
ETH_HLEN = 14
REG_SNAT_REPLY = 0x80000000   # reg4's mark of an un-SNATed reply (port keys stay far below)
SNAT_PORTS = (1024, 65535)
ROUTER_GATEWAY = "network:router_gateway"
# in_port 0, "came in by no port", so a frame that came in by the uplink may
# leave by it (controller/actions.py SetField sends it as OVS accepts it).
NO_PORT = 0
ARP_REQUEST, ARP_REPLY = 1, 2
IP_PROTO = {"tcp": 6, "udp": 17}
BROADCAST = "ff:ff:ff:ff:ff:ff"
ARP_RETRY_S = 0.5


# -- what a floating IP needs, from the store ----------------------------------
@dataclass(frozen=True)
class Translation:
    """One floating IP (or port-forwarded address) and where it leads."""
    fip: Document
    ext_net: Document
    ext_subnet: Document
    port: Document           # the internal port
    fixed_ip: str
    router: Document
    iface: Interface         # the router's interface on the port's subnet

    @property
    def address(self) -> str:
        return self.fip["floating_ip_address"]

    @property
    def zone(self) -> int:
        return external_zone(self.router["_key"])

    @property
    def host(self) -> str:
        return self.port.get("binding:host_id") or ""

    @property
    def mtu(self) -> int:
        return int(self.iface.network.get("mtu") or 1500)


def _subnet_of(view: TopologyView, network_id: str, ip: str) -> Optional[Document]:
    addr = ipaddress.ip_address(ip)
    for s in sorted(view.subnets_by_network.get(network_id, {}).values(), key=lambda s: s["id"]):
        if addr in ipaddress.ip_network(s["cidr"]):
            return s
    return None


def translation(view: TopologyView, fip: Document, port_id: Optional[str] = None,
                fixed_ip: Optional[str] = None) -> Optional[Translation]:
    """The translation of a floating IP toward a port and fixed IP (its own
    binding unless given, as for a port forwarding); None when anything it
    needs is missing or down."""
    port_id = port_id or fip.get("port_id")
    fixed_ip = fixed_ip or fip.get("fixed_ip_address")
    port = view.ports.get(port_id) if port_id else None
    ext_net = view.networks.get(fip.get("floating_network_id") or "")
    router = view.routers.get(fip.get("router_id") or "")
    if not (port and fixed_ip and is_active(port) and is_active(ext_net) and is_active(router)):
        return None
    gw = router.get("external_gateway_info") or {}
    if gw.get("network_id") != ext_net["id"]:
        return None
    ext_subnet = _subnet_of(view, ext_net["id"], fip["floating_ip_address"])
    if ext_subnet is None:
        return None
    addr = ipaddress.ip_address(fixed_ip)
    iface = next((i for i in router_interfaces(view, router["id"])
                  if i.network["id"] == port["network_id"] and addr in i.cidr), None)
    if iface is None:
        return None
    return Translation(fip, ext_net, ext_subnet, port, fixed_ip, router, iface)


def fips_on_host(view: TopologyView, host: str) -> list[Document]:
    """Floating IPs whose port is bound to `host`, in key order."""
    out = []
    for fip in view.docs[FIPS].values():
        port = view.ports.get(fip.get("port_id") or "")
        if port is not None and port.get("binding:host_id") == host:
            out.append(fip)
    return sorted(out, key=lambda f: f["_key"])


def neighbours(view: TopologyView, network_id: str) -> dict[str, str]:
    """ip -> MAC learned on an external network."""
    return {b["ip_address"]: b["mac_address"].lower() for b in view.docs[BINDINGS].values()
            if b.get("network_id") == network_id}


def binding_id(network_id: str, ip: str) -> str:
    return f"{network_id}_{ip}"


# -- the app -------------------------------------------------------------------
class NatApp(App):
    name = "nat"

    def __init__(self, conf=None):
        self.conf = conf
        self._warned: set = set()
        self._lock = threading.Lock()
        self._learned: dict[tuple[str, str], str] = {}    # (network id, ip) -> MAC, to write
        self._asked: dict[tuple[int, str], float] = {}    # (dpid, ip) -> when we last ARPed

    # -- flows -----------------------------------------------------------
    def _external_mac(self, sw: SwitchView) -> Optional[str]:
        mac = (sw.host or {}).get("external_mac")
        if not mac and sw.host_name not in self._warned:
            self._warned.add(sw.host_name)
            LOG.warning("host %s has no external_mac: it cannot do floating IPs", sw.host_name)
        return mac.lower() if mac else None

    def floatingip_flows(self, view: TopologyView, sw: SwitchView, fip: Document) -> Iterable[Flow]:
        t = translation(view, fip)
        if t is None or sw.host is None or t.host != sw.host_name:
            return []
        mac = self._external_mac(sw)
        uplink = uplink_ofport(sw, t.ext_net)
        if mac is None or uplink is None:
            return []
        base = _uplink_match(t.ext_net, uplink)
        if base is None:
            return []
        out = list(self._answer_flows(t, base, mac))
        out += self._dnat_flows(t, base, mac, match={}, prio=PRIO_DNAT)
        out += self._snat_flows(view, t, mac, uplink)
        return out

    def port_forwarding_flows(self, view: TopologyView, sw: SwitchView, pf: Document) -> Iterable[Flow]:
        fip = view.docs[FIPS].get(pf.get("floatingip_id") or "")
        if fip is None or sw.host is None:
            return []
        t = translation(view, fip, pf.get("internal_port_id"), pf.get("internal_ip_address"))
        if t is None or t.host != sw.host_name:
            return []
        mac = self._external_mac(sw)
        uplink = uplink_ofport(sw, t.ext_net)
        base = _uplink_match(t.ext_net, uplink) if uplink is not None else None
        proto = IP_PROTO.get(pf.get("protocol") or "")
        if mac is None or base is None or proto is None:
            return []
        ext = _port_range(pf, "external")
        inner = _port_range(pf, "internal")
        if ext is None or inner is None:
            return []
        owner = (PFS, pf["_key"])
        out = list(self._answer_flows(t, base, mac))
        l4 = "tcp_dst" if proto == 6 else "udp_dst"
        (elo, ehi), (ilo, ihi) = ext, inner
        if ehi - elo == ihi - ilo and elo == ilo:
            # Same ports both sides: only the address changes.
            matches = [({"ip_proto": proto, l4: m}, None) for m in _masked_ranges(elo, ehi)]
        elif ehi == elo:
            matches = [({"ip_proto": proto, l4: elo}, (ilo, ihi))]
        elif ehi - elo == ihi - ilo:
            # A range onto a range of the same width: port by port, as
            # conntrack maps a range to a range only by hashing.
            matches = [({"ip_proto": proto, l4: elo + i}, (ilo + i, ilo + i))
                       for i in range(ehi - elo + 1)]
        else:
            matches = [({"ip_proto": proto, l4: m}, (ilo, ihi)) for m in _masked_ranges(elo, ehi)]
        for match, ports in matches:
            out += self._dnat_flows(t, base, mac, match=match, prio=PRIO_DNAT_PF, ports=ports,
                                    owner=owner)
        # Replies from the internal port go back through the same zone.
        out += self._reply_flows(view, t, mac, uplink, proto, inner, owner)
        return out

    def _answer_flows(self, t: Translation, base: dict, mac: str) -> Iterable[Flow]:
        a = self.app_id
        owner = (FIPS, t.fip["_key"])
        meter = t.port["_key"]
        f = t.address
        yield flow(a, "classify", PRIO_ARP,
                   {**base, "eth_type": ETH_ARP, "arp_op": ARP_REQUEST, "arp_tpa": f},
                   apply(nxext.controller(meter),
                         move("eth_src", 0, "eth_dst", 0, 48), set_field("eth_src", mac),
                         set_field("arp_op", ARP_REPLY),
                         move("arp_sha", 0, "arp_tha", 0, 48), move("arp_spa", 0, "arp_tpa", 0, 32),
                         set_field("arp_sha", mac), set_field("arp_spa", f), output("in_port")),
                   owner=owner)
        yield flow(a, "classify", PRIO_ARP,
                   {**base, "eth_type": ETH_ARP, "arp_op": ARP_REPLY, "arp_tpa": f},
                   apply(nxext.controller(meter)), owner=owner)
        strip = (pop_vlan(),) if "vlan_vid" in base and base["vlan_vid"] else ()
        yield from too_big_flows(a, base, strip, mac, t.ext_net, f, t.mtu, meter, owner)

    def _dnat_flows(self, t: Translation, base: dict, mac: str, *, match: dict, prio: int,
                    ports: Optional[tuple[int, int]] = None,
                    owner: Optional[tuple] = None) -> Iterable[Flow]:
        a = self.app_id
        owner = owner or (FIPS, t.fip["_key"])
        pkey = t.port["_key"]
        to = nat("dst", t.fixed_ip, None, *(ports or (0, 0)))
        yield flow(a, "nat_in", prio,
                   {"metadata": t.ext_net["_key"], "eth_type": ETH_IP, "ipv4_dst": t.address,
                    "ct_state": ct_state("-trk"), **match},
                   apply(set_field(REG_NAT_PORT, pkey),
                         ct(commit=True, zone=t.zone, table="nat_in", nat=to)),
                   owner=owner)
        yield flow(a, "nat_in", PRIO_ROUTED_IN,
                   {"metadata": t.ext_net["_key"], "eth_type": ETH_IP, REG_NAT_PORT: pkey,
                    "ct_state": ct_state("+trk-inv")},
                   apply(dec_ttl(), set_field("eth_src", t.iface.mac),
                         set_field("eth_dst", t.port["mac_address"].lower()),
                         set_field("metadata", t.iface.net_key)),
                   goto("l2_lookup"), owner=("ports", pkey))

    def _out_match(self, t: Translation) -> dict:
        return {REG_ROUTED: 0, "metadata": t.iface.net_key, "eth_dst": t.iface.mac,
                "eth_type": ETH_IP, REG_IN_PORT_KEY: t.port["_key"], "ipv4_src": t.fixed_ip}

    def _out_actions(self, t: Translation, mac: str, to) -> tuple:
        # Plain nat (a port forwarding's replies) only reverses what the
        # connection already has: nothing to commit.
        return apply(dec_ttl(), set_field("eth_src", mac),
                     set_field("metadata", t.ext_net["_key"]),
                     set_field(REG_OUT_PORT_KEY, OUT_KEY_UPLINK),
                     ct(commit=to != ("nat",), zone=t.zone, table="nat_out", nat=to))

    def _snat_flows(self, view: TopologyView, t: Translation, mac: str, uplink: int) -> Iterable[Flow]:
        yield flow(self.app_id, "routing", PRIO_FIP_OUT, self._out_match(t),
                   self._out_actions(t, mac, nat("src", t.address)),
                   owner=(FIPS, t.fip["_key"]))
        yield from self._next_hop_flows(view, t, uplink)

    def _reply_flows(self, view: TopologyView, t: Translation, mac: str, uplink: int, proto: int,
                     inner: tuple[int, int], owner: tuple) -> Iterable[Flow]:
        l4 = "tcp_src" if proto == 6 else "udp_src"
        for m in _masked_ranges(*inner):
            yield flow(self.app_id, "routing", PRIO_FIP_OUT + 1,
                       {**self._out_match(t), "ip_proto": proto, l4: m},
                       self._out_actions(t, mac, ("nat",)), owner=owner)
        yield from self._next_hop_flows(view, t, uplink)

    def _next_hop_flows(self, view: TopologyView, t: Translation, uplink: int) -> Iterable[Flow]:
        return next_hop_flows(self.app_id, view, t.ext_net, t.ext_subnet, uplink,
                              t.port["_key"], t.port["_key"])

    # -- centralized SNAT ---------------------------------------------------
    def router_flows(self, view: TopologyView, sw: SwitchView, router: Document) -> Iterable[Flow]:
        s = snat(view, router)
        if s is None or s.host is None or sw.host is None:
            return []
        if s.host == sw.host_name and uplink_ofport(sw, s.ext_net) is None:
            return []
        return list(_SnatFlows(self.app_id).compute_host(s, sw))

    def snat_flows(self, view: TopologyView, sw: SwitchView, router: Document) -> Iterable[Flow]:
        s = snat(view, router)
        if s is None or sw.host is None or s.host != sw.host_name:
            return []
        uplink = uplink_ofport(sw, s.ext_net)
        if uplink is None:
            return []
        return list(_SnatFlows(self.app_id).snat_host(view, s, sw, uplink))

    # -- packet-in: learning neighbours and asking for them -------------------
    def packet_in(self, pkt: PacketIn) -> Iterable[PacketOut]:
        frame = _parse(pkt.data)
        if frame is None or pkt.switch.host is None:
            return ()
        view, sw = pkt.view, pkt.switch
        if frame.arp is not None:
            op, sha, spa, tpa = frame.arp
            t = self._local_translation(view, sw, tpa)
            if t is None or spa == t.address:
                return ()
            subnet = ipaddress.ip_network(t.ext_subnet["cidr"])
            if ipaddress.ip_address(spa) in subnet and neighbours(view, t.ext_net["id"]).get(spa) != sha:
                with self._lock:
                    self._learned[(t.ext_net["id"], spa)] = sha
            return ()
        if frame.ipv4 is None:
            return ()
        src, dst = frame.ipv4
        inbound = self._local_translation(view, sw, dst)
        if inbound is not None and pkt.in_port == uplink_ofport(sw, inbound.ext_net):
            return self._frag_needed(sw, inbound, frame, pkt.in_port)
        t = self._local_translation(view, sw, src)
        # Asked from the address's own MAC: the answerer learns the pair.
        mac = t.mac if isinstance(t, Snat) else (sw.host or {}).get("external_mac")
        uplink = uplink_ofport(sw, t.ext_net) if t is not None else None
        if t is None or not mac or uplink is None:
            return ()
        subnet = ipaddress.ip_network(t.ext_subnet["cidr"])
        target = dst if ipaddress.ip_address(dst) in subnet else t.ext_subnet.get("gateway_ip")
        if not target:
            return ()
        now = time.monotonic()
        key = (pkt.dpid, target)
        with self._lock:
            if now - self._asked.get(key, float("-inf")) < ARP_RETRY_S:
                return ()
            self._asked[key] = now
        return [PacketOut(uplink, arp_frame(t.ext_net, mac.lower(), t.address, target))]

    def _local_translation(self, view: TopologyView, sw: SwitchView, address: str):
        """The translation (a floating IP's, a port forwarding's, or a router's
        SNAT) of an external address used on this switch's host."""
        for router in view.routers.values():
            s = snat(view, router)
            if s is not None and s.address == address and s.host == sw.host_name:
                return s
        for fip in fips_on_host(view, sw.host_name):
            if fip.get("floating_ip_address") == address:
                return translation(view, fip)
        for pf in view.docs[PFS].values():
            fip = view.docs[FIPS].get(pf.get("floatingip_id") or "")
            if fip is None or fip.get("floating_ip_address") != address:
                continue
            t = translation(view, fip, pf.get("internal_port_id"), pf.get("internal_ip_address"))
            if t is not None and t.host == sw.host_name:
                return t
        return None

    def _frag_needed(self, sw: SwitchView, t, frame: "_Frame", uplink: int) -> list[PacketOut]:
        """ICMP fragmentation needed, from the address the packet was for, back
        to its sender, with the tenant network's MTU."""
        if isinstance(t, Snat):
            mac = t.mac
        else:
            mac = (sw.host or {}).get("external_mac")
        if not mac or frame.ip is None:
            return []
        icmp = icmp_frag_needed(t.ext_net, mac.lower(), frame.eth_src, t.address, frame.ip, t.mtu)
        return [PacketOut(uplink, icmp)] if icmp else []

    def take_learned(self) -> dict[tuple[str, str], str]:
        """The neighbours learned since the last call, for the store writer."""
        with self._lock:
            out, self._learned = self._learned, {}
        return out


# -- centralized SNAT: what a router needs, from the store -----------------------
@dataclass(frozen=True)
class Snat:
    """A router's SNAT: its gateway port on the external network, the host
    that runs it, and the interfaces whose subnets it translates."""
    router: Document
    ext_net: Document
    ext_subnet: Document
    gw_port: Document
    address: str
    host: Optional[str]          # the snat host's name; None: no gateway host up
    ifaces: tuple[Interface, ...]

    @property
    def mac(self) -> str:
        return self.gw_port["mac_address"].lower()

    @property
    def mtu(self) -> int:
        return min((int(i.network.get("mtu") or 1500) for i in self.ifaces), default=1500)

    @property
    def zone(self) -> int:
        return external_zone(self.router["_key"])


def gateway_port(view: TopologyView, router_id: str) -> Optional[Document]:
    ports = [p for p in view.ports.values()
             if p.get("device_owner") == ROUTER_GATEWAY and p.get("device_id") == router_id]
    return min(ports, key=lambda p: p["_key"]) if ports else None


def snat(view: TopologyView, router: Optional[Document]) -> Optional[Snat]:
    """The router's SNAT, or None when it has none (no gateway, enable_snat
    false, anything missing or down)."""
    if not is_active(router):
        return None
    gw = router.get("external_gateway_info") or {}
    if not gw.get("network_id") or gw.get("enable_snat", True) is False:
        return None
    ext_net = view.networks.get(gw["network_id"])
    port = gateway_port(view, router["id"])
    if not is_active(ext_net) or port is None:
        return None
    fixed = [ip for ip in port.get("fixed_ips") or ()
             if ip.get("ip_address") and ipaddress.ip_address(ip["ip_address"]).version == 4]
    if not fixed:
        return None
    address = fixed[0]["ip_address"]
    ext_subnet = _subnet_of(view, ext_net["id"], address)
    if ext_subnet is None:
        return None
    host_id = snat_host(router, view.hosts.values())
    host = view.hosts[host_id]["name"] if host_id in view.hosts else None
    ifaces = tuple(i for i in router_interfaces(view, router["id"]) if i.cidr.version == 4)
    return Snat(router, ext_net, ext_subnet, port, address, host, ifaces)


def routers_without_snat_host(view: TopologyView) -> list[str]:
    """Routers that want SNAT but have no gateway host to run it on."""
    out = []
    for rid, router in sorted(view.routers.items()):
        s = snat(view, router)
        if s is not None and s.host is None:
            out.append(rid)
    return out


def _tenant_ports(view: TopologyView, s: Snat) -> Iterable[tuple[Interface, Document, str]]:
    """(interface, port, address) for every port address behind the router."""
    for iface in s.ifaces:
        ports = sorted(view.ports_by_network.get(iface.network["id"], {}).values(),
                       key=lambda p: p["_key"])
        for port in ports:
            if port.get("device_owner") in (ROUTER_INTERFACE, "network:dhcp") or not is_active(port):
                continue
            for ip in port.get("fixed_ips") or ():
                addr = ip.get("ip_address")
                if addr and ipaddress.ip_address(addr) in iface.cidr:
                    yield iface, port, addr


class _SnatFlows:
    """The flows of a router's SNAT, for NatApp."""

    def __init__(self, app_id: int):
        self.a = app_id

    def translate(self, s: Snat, match: dict, table: str, prio: int, *pre) -> Flow:
        """A tenant packet leaves translated to the gateway address."""
        return flow(self.a, table, prio, match,
                    apply(*pre, set_field("eth_src", s.mac), set_field("metadata", s.ext_net["_key"]),
                          set_field(REG_OUT_PORT_KEY, OUT_KEY_UPLINK),
                          ct(commit=True, zone=s.zone, table="nat_out",
                             nat=nat("src", s.address, None, *SNAT_PORTS))),
                    owner=("routers", s.router["_key"]))

    def compute_host(self, s: Snat, sw: SwitchView) -> Iterable[Flow]:
        """On a host where the router routes: tenant traffic no route takes
        goes to the snat host, or is translated here when this is it."""
        for iface in s.ifaces:
            match = {REG_ROUTED: 0, "metadata": iface.net_key, "eth_dst": iface.mac,
                     "eth_type": ETH_IP, "ipv4_src": str(iface.cidr)}
            if s.host == sw.host_name:
                yield self.translate(s, match, "routing", PRIO_SNAT_OUT, dec_ttl())
            else:
                yield flow(self.a, "routing", PRIO_SNAT_OUT, match,
                           apply(dec_ttl(), set_field("eth_dst", s.mac),
                                 set_field(REG_ROUTED, ROUTED),
                                 set_field(REG_OUT_PORT_KEY, OUT_KEY_UPLINK)),
                           goto("pre_output"), owner=("routers", s.router["_key"]))

    def snat_host(self, view: TopologyView, s: Snat, sw: SwitchView, ext_uplink: int) -> Iterable[Flow]:
        a, owner = self.a, ("routers", s.router["_key"])
        ext_base = _uplink_match(s.ext_net, ext_uplink)
        strip = (pop_vlan(),) if ext_base.get("vlan_vid") else ()
        meter = s.gw_port["_key"]
        # ARP for the gateway address, and replies to the controller's requests
        yield flow(a, "classify", PRIO_ARP,
                   {**ext_base, "eth_type": ETH_ARP, "arp_op": ARP_REQUEST, "arp_tpa": s.address},
                   apply(nxext.controller(meter),
                         move("eth_src", 0, "eth_dst", 0, 48), set_field("eth_src", s.mac),
                         set_field("arp_op", ARP_REPLY),
                         move("arp_sha", 0, "arp_tha", 0, 48), move("arp_spa", 0, "arp_tpa", 0, 32),
                         set_field("arp_sha", s.mac), set_field("arp_spa", s.address),
                         output("in_port")), owner=owner)
        yield flow(a, "classify", PRIO_ARP,
                   {**ext_base, "eth_type": ETH_ARP, "arp_op": ARP_REPLY, "arp_tpa": s.address},
                   apply(nxext.controller(meter)), owner=owner)
        # replies from outside: un-SNAT only what conntrack knows; nothing starts here
        yield from too_big_flows(a, ext_base, strip, s.mac, s.ext_net, s.address, s.mtu, meter,
                                 owner)
        mark = REG_SNAT_REPLY | s.router["_key"]
        yield flow(a, "nat_in", PRIO_DNAT,
                   {"metadata": s.ext_net["_key"], "eth_type": ETH_IP, "ipv4_dst": s.address,
                    "ct_state": ct_state("-trk")},
                   apply(set_field(REG_NAT_PORT, mark), ct(zone=s.zone, table="nat_in", nat=("nat",))),
                   owner=owner)
        for iface, port, addr in _tenant_ports(view, s):
            local = port.get("binding:host_id") == sw.host_name
            for state in ("+trk+est-inv", "+trk+rel-inv"):
                yield flow(a, "nat_in", PRIO_SNAT_BACK,
                           {"metadata": s.ext_net["_key"], "eth_type": ETH_IP, REG_NAT_PORT: mark,
                            "ipv4_dst": addr, "ct_state": ct_state(state)},
                           apply(dec_ttl(), set_field("eth_src", iface.mac),
                                 set_field("eth_dst", port["mac_address"].lower()),
                                 set_field("metadata", iface.net_key), set_field(REG_ROUTED, ROUTED),
                                 *(() if local else (set_field(REG_OUT_PORT_KEY, OUT_KEY_UPLINK),
                                                     set_field("in_port", NO_PORT)))),
                           goto("l2_lookup" if local else "pre_output"),
                           owner=("ports", port["_key"]))
        # tenant frames other hosts send to the gateway MAC
        for iface in s.ifaces:
            uplink = uplink_ofport(sw, iface.network)
            base = _uplink_match(iface.network, uplink) if uplink is not None else None
            if base is None:
                continue
            tstrip = (pop_vlan(),) if base.get("vlan_vid") else ()
            yield flow(a, "classify", PRIO_IN,
                       {**base, "eth_type": ETH_IP, "eth_dst": s.mac, "ipv4_src": str(iface.cidr)},
                       *((apply(*tstrip),) if tstrip else ()), write_metadata(iface.net_key),
                       goto("nat_in"), owner=owner)
            # In by the uplink, out by the uplink (another VLAN): OVS never
            # outputs to the ingress port, so the translation forgets it.
            yield self.translate(s, {"metadata": iface.net_key, "eth_type": ETH_IP,
                                     "eth_dst": s.mac, "ipv4_src": str(iface.cidr)},
                                 "nat_in", PRIO_SNAT, set_field("in_port", NO_PORT))
            yield flow(a, "output", PRIO_OUTPUT,
                       {"metadata": iface.net_key, REG_OUT_PORT_KEY: OUT_KEY_UPLINK},
                       apply(*_to_uplink(iface.network, uplink)),
                       owner=("networks", iface.net_key))
        # the next hop on the external network
        yield from next_hop_flows(a, view, s.ext_net, s.ext_subnet, ext_uplink, None, meter)


def too_big_flows(a: int, base: dict, strip: tuple, mac: str, ext_net: Document, address: str,
                  mtu: int, meter: int, owner: tuple) -> Iterable[Flow]:
    """IPv4 from outside to (mac, address) goes to nat_in with the external
    network in metadata; one longer than the tenant network's MTU goes to the
    controller instead (through `meter`), which answers ICMP fragmentation
    needed (OVN's check_pkt_larger and icmp4_error)."""
    yield flow(a, "classify", PRIO_IN,
               {**base, "eth_type": ETH_IP, "eth_dst": mac, "ipv4_dst": address},
               apply(*strip, check_pkt_larger(mtu + ETH_HLEN, REG_TOO_BIG, 0)),
               write_metadata(ext_net["_key"]), goto("nat_in"), owner=owner)
    yield flow(a, "nat_in", PRIO_TOO_BIG,
               {"metadata": ext_net["_key"], "eth_type": ETH_IP, "ipv4_dst": address,
                REG_TOO_BIG: (1, 1)},
               apply(nxext.controller(meter)), owner=owner)


def next_hop_flows(a: int, view: TopologyView, net: Document, subnet: Document, uplink: int,
                   port_key: Optional[int], meter: int) -> Iterable[Flow]:
    """nat_out and output for an external network on this host: learned
    neighbours, the gateway, and asking the controller for what is unknown
    (a floating IP's, matched by its port's key and metered by it; the snat
    host's, below them, metered by the router gateway port's key)."""
    shared = ("networks", net["_key"])
    found = neighbours(view, net["id"])
    cidr = ipaddress.ip_network(subnet["cidr"])
    for ip, nmac in sorted(found.items()):
        if ipaddress.ip_address(ip) in cidr:
            yield flow(a, "nat_out", PRIO_NEIGHBOUR,
                       {"metadata": net["_key"], "eth_type": ETH_IP, "ipv4_dst": ip},
                       apply(set_field("eth_dst", nmac)), goto("pre_output"), owner=shared)
    by_port = {REG_IN_PORT_KEY: port_key} if port_key is not None else {}
    owner = ("ports", meter)
    yield flow(a, "nat_out", PRIO_RESOLVE if by_port else PRIO_RESOLVE_SNAT,
               {"metadata": net["_key"], "eth_type": ETH_IP, "ipv4_dst": str(cidr), **by_port},
               apply(nxext.controller(meter)), owner=owner)
    gw = subnet.get("gateway_ip")
    if gw and gw in found:
        yield flow(a, "nat_out", PRIO_GATEWAY, {"metadata": net["_key"], "eth_type": ETH_IP},
                   apply(set_field("eth_dst", found[gw])), goto("pre_output"), owner=shared)
    if gw:
        yield flow(a, "nat_out", PRIO_RESOLVE_GATEWAY if by_port else PRIO_RESOLVE_GATEWAY_SNAT,
                   {"metadata": net["_key"], "eth_type": ETH_IP, **by_port},
                   apply(nxext.controller(meter)), owner=owner)
    yield flow(a, "output", PRIO_OUTPUT,
               {"metadata": net["_key"], REG_OUT_PORT_KEY: OUT_KEY_UPLINK},
               apply(*_to_uplink(net, uplink)), owner=shared)


# -- ports and ranges ------------------------------------------------------------
def _port_range(pf: Document, side: str) -> Optional[tuple[int, int]]:
    text = pf.get(f"{side}_port_range")
    if text:
        lo, _, hi = str(text).partition(":")
        lo_i, hi_i = int(lo), int(hi or lo)
    elif pf.get(f"{side}_port") is not None:
        lo_i = hi_i = int(pf[f"{side}_port"])
    else:
        return None
    if not 1 <= lo_i <= hi_i <= 65535:
        return None
    return lo_i, hi_i


def _masked_ranges(lo: int, hi: int) -> list:
    """[lo, hi] as the fewest (value, mask) prefixes (a single port as an int)."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append(lo if size == 1 else (lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


# -- frames ------------------------------------------------------------------------
@dataclass
class _Frame:
    arp: Optional[tuple[int, str, str, str]] = None     # op, sha, spa, tpa
    ipv4: Optional[tuple[str, str]] = None               # src, dst
    eth_src: str = ""
    ip: Optional[bytes] = None                           # the IPv4 packet


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def _parse(data: bytes) -> Optional[_Frame]:
    if len(data) < 14:
        return None
    etype, off = struct.unpack("!H", data[12:14])[0], 14
    while etype in (0x8100, 0x88A8) and len(data) >= off + 4:
        etype, off = struct.unpack("!H", data[off + 2:off + 4])[0], off + 4
    body = data[off:]
    if etype == ETH_ARP and len(body) >= 28:
        op = struct.unpack("!H", body[6:8])[0]
        return _Frame(arp=(op, _mac(body[8:14]), _ip(body[14:18]), _ip(body[24:28])))
    if etype == ETH_IP and len(body) >= 20:
        return _Frame(ipv4=(_ip(body[12:16]), _ip(body[16:20])), eth_src=_mac(data[6:12]),
                      ip=bytes(body))
    return _Frame()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_frag_needed(network: Document, mac: str, to_mac: str, source_ip: str, original: bytes,
                     mtu: int) -> Optional[bytes]:
    """ICMP type 3 code 4 (RFC 1191) on the external network's wire: from
    (mac, source_ip) to the original's sender, quoting its header and first
    8 bytes of data. None for what never gets an ICMP error (a fragment other
    than the first, or ICMP that is itself an error)."""
    ihl = (original[0] & 0x0F) * 4
    if len(original) < ihl or struct.unpack("!H", original[6:8])[0] & 0x1FFF:
        return None
    if original[9] == 1 and len(original) > ihl and original[ihl] not in (0, 8, 13, 15, 17):
        return None
    quote = original[:ihl + 8]
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quote
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(icmp), 0, 0, 64, 1, 0,
                     ipaddress.ip_address(source_ip).packed, original[12:16])
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = _mac_bytes(to_mac) + _mac_bytes(mac)
    if network.get("provider:network_type") == "vlan":
        eth += struct.pack("!HH", 0x8100, int(network["provider:segmentation_id"]) & 0xFFF)
    frame = eth + struct.pack("!H", ETH_IP) + ip + icmp
    return frame + b"\0" * max(0, 60 - len(frame))


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def arp_frame(network: Document, mac: str, sender_ip: str, target_ip: str,
              *, gratuitous: bool = False) -> bytes:
    """An ARP request from (mac, sender_ip) for target_ip on the external
    network's wire (tagged for a vlan network): a gratuitous one announces
    sender_ip."""
    eth = _mac_bytes(BROADCAST) + _mac_bytes(mac)
    if network.get("provider:network_type") == "vlan":
        eth += struct.pack("!HH", 0x8100, int(network["provider:segmentation_id"]) & 0xFFF)
    eth += struct.pack("!H", ETH_ARP)
    tpa = sender_ip if gratuitous else target_ip
    arp = struct.pack("!HHBBH", 1, ETH_IP, 6, 4, ARP_REQUEST) + _mac_bytes(mac) \
        + ipaddress.ip_address(sender_ip).packed + b"\0" * 6 + ipaddress.ip_address(tpa).packed
    frame = eth + arp
    return frame + b"\0" * max(0, 60 - len(frame))


# -- scopes: a floating IP on its port's host, a port forwarding on its internal port's
def _docs(old, new) -> list[Document]:
    return [d for d in (old, new) if d]


def _fips_here(view: TopologyView, sw) -> list[tuple[str, Document]]:
    if sw.host is None:
        return []
    return [(f["id"], f) for f in fips_on_host(view, sw.host_name)]


def _fip_here(view: TopologyView, sw, fid: str) -> Optional[Document]:
    fip = view.docs[FIPS].get(fid)
    if fip is None or sw.host is None:
        return None
    port = view.ports.get(fip.get("port_id") or "")
    return fip if port is not None and port.get("binding:host_id") == sw.host_name else None


def _fip_hosts(view: TopologyView, fid: str) -> list[str]:
    fip = view.docs[FIPS].get(fid) or {}
    port = view.ports.get(fip.get("port_id") or "")
    host = port.get("binding:host_id") if port else None
    return [host] if host else []


FLOATINGIP = scopes.register(scopes.ScopeKind(
    name="floatingip", on_switch=_fips_here, lookup=_fip_here, hosts=_fip_hosts))


def _pf_host(view: TopologyView, pf: Document) -> Optional[str]:
    port = view.ports.get(pf.get("internal_port_id") or "")
    return port.get("binding:host_id") if port else None


def _pfs_here(view: TopologyView, sw) -> list[tuple[str, Document]]:
    if sw.host is None:
        return []
    return sorted(((p["id"], p) for p in view.docs[PFS].values()
                   if _pf_host(view, p) == sw.host_name), key=lambda x: x[1]["_key"])


def _pf_here(view: TopologyView, sw, pid: str) -> Optional[Document]:
    pf = view.docs[PFS].get(pid)
    if pf is None or sw.host is None or _pf_host(view, pf) != sw.host_name:
        return None
    return pf


def _pf_hosts(view: TopologyView, pid: str) -> list[str]:
    pf = view.docs[PFS].get(pid)
    host = _pf_host(view, pf) if pf else None
    return [host] if host else []


PORT_FORWARDING = scopes.register(scopes.ScopeKind(
    name="port_forwarding", on_switch=_pfs_here, lookup=_pf_here, hosts=_pf_hosts))


def _fips_where(view: TopologyView, pred) -> set[str]:
    return {f["id"] for f in view.docs[FIPS].values() if pred(f)}


def _pfs_of_fips(view: TopologyView, fids: set[str]) -> set[str]:
    return {p["id"] for p in view.docs[PFS].values() if p.get("floatingip_id") in fids}


@FLOATINGIP.watch(FIPS)
def _fip_changed(view, old, new):
    return {d["id"] for d in _docs(old, new)}


@PORT_FORWARDING.watch(FIPS)
def _pfs_of_fip(view, old, new):
    return _pfs_of_fips(view, {d["id"] for d in _docs(old, new)})


@PORT_FORWARDING.watch(PFS)
def _pf_changed(view, old, new):
    return {d["id"] for d in _docs(old, new)}


def _touched_by_port(view, old, new) -> set[str]:
    ids = {d["id"] for d in _docs(old, new)}
    routers = {d["device_id"] for d in _docs(old, new) if d.get("device_id")}
    return _fips_where(view, lambda f: f.get("port_id") in ids or f.get("router_id") in routers)


@FLOATINGIP.watch("ports")
def _fips_of_port(view, old, new):
    return _touched_by_port(view, old, new)


@PORT_FORWARDING.watch("ports")
def _pfs_of_port(view, old, new):
    ids = {d["id"] for d in _docs(old, new)}
    out = {p["id"] for p in view.docs[PFS].values() if p.get("internal_port_id") in ids}
    return out | _pfs_of_fips(view, _touched_by_port(view, old, new))


def _touched_by_router(view, old, new) -> set[str]:
    ids = {d["id"] for d in _docs(old, new)}
    return _fips_where(view, lambda f: f.get("router_id") in ids)


def _touched_by_network(view, old, new) -> set[str]:
    ids = {d.get("network_id", d["id"]) for d in _docs(old, new)}
    return _fips_where(view, lambda f: f.get("floating_network_id") in ids
                       or (view.ports.get(f.get("port_id") or "") or {}).get("network_id") in ids)


def _pfs_on_networks(view, old, new) -> set[str]:
    ids = {d.get("network_id", d["id"]) for d in _docs(old, new)}
    return {p["id"] for p in view.docs[PFS].values()
            if (view.ports.get(p.get("internal_port_id") or "") or {}).get("network_id") in ids}


def _pf_watch(fn, also=None):
    def watch(view, old, new):
        out = _pfs_of_fips(view, fn(view, old, new))
        return out | also(view, old, new) if also else out
    return watch


for _kind, _fn in (("routers", _touched_by_router), ("networks", _touched_by_network),
                   ("subnets", _touched_by_network), (BINDINGS, _touched_by_network)):
    FLOATINGIP.watch(_kind)(_fn)
    PORT_FORWARDING.watch(_kind)(
        _pf_watch(_fn, _pfs_on_networks if _kind in ("networks", "subnets") else None))


# -- the snat scope: a router's SNAT on its snat host ------------------------------
def _snats_here(view: TopologyView, sw) -> list[tuple[str, Document]]:
    if sw.host is None:
        return []
    out = []
    for rid, router in sorted(view.routers.items()):
        s = snat(view, router)
        if s is not None and s.host == sw.host_name:
            out.append((rid, router))
    return out


def _snat_here(view: TopologyView, sw, rid: str) -> Optional[Document]:
    router = view.routers.get(rid)
    s = snat(view, router) if router is not None else None
    return router if s is not None and sw.host is not None and s.host == sw.host_name else None


def _snat_hosts(view: TopologyView, rid: str) -> list[str]:
    s = snat(view, view.routers.get(rid))
    return [s.host] if s is not None and s.host else []


SNAT = scopes.register(scopes.ScopeKind(
    name="snat", on_switch=_snats_here, lookup=_snat_here, hosts=_snat_hosts))


def _gateway_routers(view) -> set[str]:
    return {rid for rid, r in view.routers.items() if (r.get("external_gateway_info") or {})}


@SNAT.watch("routers")
def _snat_router_changed(view, old, new):
    return {d["id"] for d in _docs(old, new)}


@SNAT.watch("hosts")
@ROUTER.watch("hosts")
def _placement_changed(view, old, new):
    # Which host runs each router's SNAT follows every gateway host's state.
    keys = ("is_gateway", "admin_state_up", "id")
    if old and new and all(old.get(k) == new.get(k) for k in keys):
        return ()
    return _gateway_routers(view)


@SNAT.watch("ports")
def _snat_ports(view, old, new):
    out = set()
    for d in _docs(old, new):
        out |= view.routers_of_network(d["network_id"])
        if d.get("device_owner") == ROUTER_GATEWAY and d.get("device_id"):
            out.add(d["device_id"])
    return out


@ROUTER.watch("ports")
def _router_of_gateway_port(view, old, new):
    return {d["device_id"] for d in _docs(old, new)
            if d.get("device_owner") == ROUTER_GATEWAY and d.get("device_id")}


def _snat_of_networks(view, old, new):
    nets = {d.get("network_id", d["id"]) for d in _docs(old, new)}
    out = {r for n in nets for r in view.routers_of_network(n)}
    return out | {rid for rid, r in view.routers.items()
                  if (r.get("external_gateway_info") or {}).get("network_id") in nets}


for _kind in ("networks", "subnets", BINDINGS):
    SNAT.watch(_kind)(_snat_of_networks)
