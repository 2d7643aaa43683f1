"""Distributed routing in flows: every host routes for the routers of its networks.

Neutron's DVR (a router namespace per compute host, gateway traffic kept on
the host, a MAC per host replacing the gateway MAC on the wire) done with
flows alone. A router's interfaces are ports (device_owner
network:router_interface_distributed) that nothing plugs: their MAC is
answered by the routing stage on every host where the router is present,
and their address by the ARP proxy like any port's.

Where: a router is present on a host that has a bound port on one of its
networks; the view makes the router's other networks present there too, so
l2 gives them classification, forwarding to remote ports and uplink output
(topology/view.py `networks_on_host`).

What, following controller/pipeline.py's routing and pre_output docs:

- routing, per (interface i, other interface j) of a router: IPv4 to i's
  MAC on i's network with a destination in j's subnet is routed: dec_ttl,
  source = j's MAC (the target subnet's gateway MAC), metadata = j's
  network, reg5 = ROUTED, then a resubmit to routing, where the neighbour
  step (a flow per port address, from the store: no ARP) sets the
  destination MAC and goes to l2_lookup. l2_lookup and the receiver's
  ingress firewall follow as for any packet of that network.
- routing, per (interface i, static route): as above, but the destination
  MAC is the nexthop's, straight to l2_lookup. A nexthop no port owns
  routes nothing (the router-MAC drop below takes the packet).
- routing, per (local VM port, interface on its network): IPv4 to the
  interface's MAC with TTL 0 or 1 goes to the controller through the port's
  packet-in meter; the app answers ICMP time-exceeded from the interface's
  address if the packet would have been routed (apps/dvr_icmp.py), as a
  router does when dec_ttl would expire it.
- routing: anything else to an interface's MAC is dropped, so a gateway MAC
  never reaches the fabric.
- pre_output: a routed frame bound for the uplink leaves with this host's
  DVR MAC as source.
- classify: a frame on an uplink whose source is another host's DVR MAC gets
  the destination subnet's gateway MAC back as source, then goes on as any
  frame from the uplink. Any other source in the DVR MAC range ([api]
  dvr_base_mac's first three octets) on an uplink is dropped; that flow's
  packet counter is the count (another host's external_mac, which may share
  the range, is dropped by a flow of its own, above, and not counted) (controller/dropcounts.py reads it for
  `vmflow status` and /metrics).

All of it is pure computation over the view.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Optional

from apps import dvr_icmp
from apps.l2 import ETH_IP, OFPVID_PRESENT
from controller import scopes
from controller.app import App, PacketIn, PacketOut, SwitchView
from controller.flow import (Flow, apply, dec_ttl, flow, goto, pop_vlan, resubmit, set_field,
                             to_controller, write_metadata)
from controller.locality import forwards, is_active, local_ofport, uplink_ofport
from controller.pipeline import (OUT_KEY_UPLINK, REG_IN_PORT_KEY, REG_OUT_PORT_KEY, REG_ROUTED,
                                 ROUTED)
from topology.store.base import Document
from topology.view import ROUTER_INTERFACE, TopologyView

DEFAULT_DVR_BASE_MAC = "fa:16:3f:00:00:00"
PRIO_ROUTER_MAC_DROP = 1
PRIO_NO_NEIGHBOUR = 2
PRIO_ROUTE_BASE = 1000          # + 2 * prefix length (+1 for a connected subnet)
PRIO_TTL_EXPIRED = 1100         # above every route: dec_ttl would expire the packet
PRIO_NEIGHBOUR = 60000
PRIO_DVR_OUT = 100
PRIO_DVR_UNKNOWN = 115          # a DVR-range source no host registered
PRIO_DVR_EXTERNAL = 116         # another host's external_mac: known, dropped, not counted
PRIO_DVR_IN = 120               # a network's first interface
PRIO_DVR_IN_SUBNET = 121        # per interface subnet, where a network has several


@dataclass(frozen=True)
class Interface:
    port: Document
    network: Document
    subnet: Document
    address: str

    @property
    def mac(self) -> str:
        return self.port["mac_address"].lower()

    @property
    def net_key(self) -> int:
        return self.network["_key"]

    @property
    def cidr(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.subnet["cidr"])


def router_interfaces(view: TopologyView, router_id: str) -> list[Interface]:
    """A router's working interfaces (port and network up), one per address,
    in key order so every run computes the same flows."""
    out = []
    ports = sorted(view.router_ports.get(router_id, {}).values(), key=lambda p: p["_key"])
    for port in ports:
        network = view.networks.get(port["network_id"])
        if not is_active(port) or not is_active(network):
            continue
        for ip in port.get("fixed_ips") or ():
            subnet = view.subnets.get(ip["subnet_id"])
            if subnet is not None:
                out.append(Interface(port, network, subnet, ip["ip_address"]))
    return out


def network_interfaces(view: TopologyView, network_id: str) -> list[Interface]:
    """The interfaces on one network, of every router that has one there."""
    out = []
    for rid in sorted(view.routers_of_network(network_id)):
        router = view.routers.get(rid)
        if router is None or not is_active(router):
            continue
        out.extend(i for i in router_interfaces(view, rid) if i.network["id"] == network_id)
    return sorted(out, key=lambda i: (i.port["_key"], i.address))


def nexthop_mac(view: TopologyView, iface: Interface, nexthop: str) -> Optional[str]:
    """The MAC of the port on iface's network that owns the nexthop address."""
    ports = sorted(view.ports_by_network.get(iface.network["id"], {}).values(),
                   key=lambda p: p["_key"])
    for port in ports:
        if port.get("device_owner") == ROUTER_INTERFACE or not forwards(view, port):
            continue
        if any(ip.get("ip_address") == nexthop for ip in port.get("fixed_ips") or ()):
            return port["mac_address"].lower()
    return None


def routes(view: TopologyView, router: Document, ifaces: list[Interface], src: Interface,
           dst: str) -> bool:
    """Do router_flows route a packet to dst that came in on src? The same
    choice as the route flows: another interface's subnet, or a static route
    whose nexthop a port on a connected subnet owns."""
    addr = ipaddress.ip_address(dst)
    if any(i.port["id"] != src.port["id"] and addr in i.cidr for i in ifaces):
        return True
    for route in router.get("routes") or ():
        if addr not in ipaddress.ip_network(route["destination"]):
            continue
        hop = ipaddress.ip_address(route["nexthop"])
        via = next((i for i in ifaces if hop in i.cidr), None)
        if via is not None and nexthop_mac(view, via, route["nexthop"]) is not None:
            return True
    return False


def _is_vlan(network: Document) -> bool:
    return network.get("provider:network_type") == "vlan"


def _uplink_match(network: Document, uplink: int) -> Optional[dict]:
    if _is_vlan(network):
        return {"in_port": uplink,
                "vlan_vid": OFPVID_PRESENT | int(network["provider:segmentation_id"])}
    if network.get("provider:network_type") == "flat":
        return {"in_port": uplink, "vlan_vid": 0}
    return None


class DvrApp(App):
    name = "dvr"

    def __init__(self, conf=None):
        self.conf = conf
        base = conf.api.dvr_base_mac if conf is not None else DEFAULT_DVR_BASE_MAC
        # The API allocates DVR MACs keeping the base's first three octets
        # (topology/ipam.random_mac), so that prefix is the DVR MAC range.
        self.dvr_range = (base.lower()[:8] + ":00:00:00", "ff:ff:ff:00:00:00")

    # -- per switch: the host's DVR MAC on routed frames leaving it ----------
    def switch_flows(self, view: TopologyView, sw: SwitchView) -> Iterable[Flow]:
        if sw.host is None:
            return
        a = self.app_id
        yield flow(a, "routing", PRIO_NO_NEIGHBOUR, {REG_ROUTED: ROUTED})
        # Registered DVR MACs are recognised per network above this; any other
        # source in the DVR range on an uplink is dropped, and this flow's
        # packet counter is the count.
        # Hosts' external MACs may share the range ([api] external_base_mac
        # has the same default): frames from them that the nat app does not
        # take above are dropped too, but they are no stranger's, so not in
        # the count.
        prefix = self.dvr_range[0][:8]
        externals = sorted({h["external_mac"].lower() for h in view.hosts.values()
                            if h.get("external_mac") and h["name"] != sw.host_name
                            and h["external_mac"].lower().startswith(prefix)})
        for iface in sorted(set((sw.host.get("physical_networks") or {}).values())):
            uplink = sw.ofport(iface)
            if uplink is not None:
                yield flow(a, "classify", PRIO_DVR_UNKNOWN,
                           {"in_port": uplink, "eth_src": self.dvr_range})
                for mac in externals:
                    yield flow(a, "classify", PRIO_DVR_EXTERNAL,
                               {"in_port": uplink, "eth_src": mac})
        dvr_mac = sw.host.get("dvr_mac")
        if dvr_mac:
            yield flow(a, "pre_output", PRIO_DVR_OUT,
                       {REG_ROUTED: ROUTED, REG_OUT_PORT_KEY: OUT_KEY_UPLINK},
                       apply(set_field("eth_src", dvr_mac.lower())), goto("output"))

    # -- per router present here: routes and the router-MAC drops -----------
    def router_flows(self, view: TopologyView, sw: SwitchView, router: Document) -> Iterable[Flow]:
        if sw.host is None or not is_active(router):
            return
        a = self.app_id
        owner = ("routers", router["_key"])
        ifaces = router_interfaces(view, router["id"])
        for src in ifaces:
            into = {REG_ROUTED: 0, "metadata": src.net_key, "eth_dst": src.mac,
                    "eth_type": ETH_IP}
            for dst in ifaces:
                if dst.port["id"] == src.port["id"]:
                    continue
                yield flow(a, "routing", PRIO_ROUTE_BASE + 2 * dst.cidr.prefixlen + 1,
                           {**into, "ipv4_dst": str(dst.cidr)},
                           apply(dec_ttl(), set_field("eth_src", dst.mac),
                                 set_field("metadata", dst.net_key),
                                 set_field(REG_ROUTED, ROUTED), resubmit("routing")),
                           owner=owner)
            for route in router.get("routes") or ():
                hop = ipaddress.ip_address(route["nexthop"])
                via = next((i for i in ifaces if hop in i.cidr), None)
                mac = nexthop_mac(view, via, route["nexthop"]) if via else None
                if mac is None:
                    continue
                dest = ipaddress.ip_network(route["destination"])
                yield flow(a, "routing", PRIO_ROUTE_BASE + 2 * dest.prefixlen,
                           {**into, "ipv4_dst": str(dest)},
                           apply(dec_ttl(), set_field("eth_src", via.mac),
                                 set_field("eth_dst", mac), set_field("metadata", via.net_key),
                                 set_field(REG_ROUTED, ROUTED)),
                           goto("l2_lookup"), owner=owner)
            yield flow(a, "routing", PRIO_ROUTER_MAC_DROP,
                       {"metadata": src.net_key, "eth_dst": src.mac}, owner=owner)

    # -- per network present here: routed frames from other hosts ----------
    def network_flows(self, view: TopologyView, sw: SwitchView, network: Document) -> Iterable[Flow]:
        if sw.host is None or not is_active(network):
            return
        ifaces = network_interfaces(view, network["id"])
        uplink = uplink_ofport(sw, network)
        base = _uplink_match(network, uplink) if uplink is not None and ifaces else None
        if base is None:
            return
        a = self.app_id
        owner = ("networks", network["_key"])
        strip = (pop_vlan(),) if _is_vlan(network) else ()
        others = sorted((h for h in view.hosts.values()
                         if h.get("dvr_mac") and h["name"] != sw.host_name),
                        key=lambda h: h["dvr_mac"])
        for host in others:
            from_host = {**base, "eth_src": host["dvr_mac"].lower()}
            yield flow(a, "classify", PRIO_DVR_IN, from_host,
                       apply(*strip, set_field("eth_src", ifaces[0].mac)),
                       write_metadata(network["_key"]), goto("l2_lookup"), owner=owner)
            if len(ifaces) > 1:
                for iface in ifaces:
                    yield flow(a, "classify", PRIO_DVR_IN_SUBNET,
                               {**from_host, "eth_type": ETH_IP, "ipv4_dst": str(iface.cidr)},
                               apply(*strip, set_field("eth_src", iface.mac)),
                               write_metadata(network["_key"]), goto("l2_lookup"), owner=owner)

    # -- per port: the neighbour step, its addresses in interface subnets ---
    def port_flows(self, view: TopologyView, sw: SwitchView, port: Document) -> Iterable[Flow]:
        if sw.host is None or port.get("device_owner") == ROUTER_INTERFACE \
                or not forwards(view, port):
            return
        ifaces = network_interfaces(view, port["network_id"])
        if not ifaces:
            return
        network = view.networks[port["network_id"]]
        if local_ofport(view, sw, port) is not None:
            yield from self._ttl_expiry(port, network, ifaces)
        seen = set()
        for ip in port.get("fixed_ips") or ():
            addr = ip.get("ip_address")
            if not addr or addr in seen:
                continue
            if any(ipaddress.ip_address(addr) in i.cidr for i in ifaces):
                seen.add(addr)
                yield flow(self.app_id, "routing", PRIO_NEIGHBOUR,
                           {REG_ROUTED: ROUTED, "metadata": network["_key"],
                            "eth_type": ETH_IP, "ipv4_dst": addr},
                           apply(set_field("eth_dst", port["mac_address"].lower())),
                           goto("l2_lookup"), owner=("ports", port["_key"]))


    def _ttl_expiry(self, port: Document, network: Document,
                    ifaces: list[Interface]) -> Iterable[Flow]:
        """A local port's IPv4 to a gateway MAC whose TTL dec_ttl would
        expire goes to the controller through the port's meter, before the
        route flows: OVS's own dec_ttl packet-in would be unmetered."""
        key = port["_key"]
        for mac in dict.fromkeys(i.mac for i in ifaces):
            for ttl in (0, 1):      # OVS cannot mask nw_ttl: one flow each
                yield flow(self.app_id, "routing", PRIO_TTL_EXPIRED,
                           {REG_IN_PORT_KEY: key, REG_ROUTED: 0, "metadata": network["_key"],
                            "eth_dst": mac, "eth_type": ETH_IP, "nw_ttl": ttl},
                           *to_controller(key), owner=("ports", key))

    # -- packet-in: ICMP time-exceeded from the sender's gateway -------------
    def _count(self, name: str) -> None:
        if getattr(self, "runtime", None) is not None:
            self.runtime.count(name)

    def packet_in(self, pkt: PacketIn) -> Iterable[PacketOut]:
        frame, outcome = self.answer(pkt.view, pkt.port, pkt.data)
        self._count(outcome)
        return (PacketOut(pkt.in_port, frame),) if frame is not None else ()

    def answer(self, view: TopologyView, port: Optional[Document],
               data: bytes) -> tuple[Optional[bytes], str]:
        """(the time-exceeded reply or None, the outcome to count).

        The gateway is the interface whose MAC the packet was sent to, on
        the sender's network; of several addresses on that port, the one
        whose subnet holds the sender's address. Only a packet the router
        would have routed is answered: one for the gateway itself or for
        nowhere is not the router's to expire ("not_routed")."""
        if port is None or not port.get("network_id"):
            return None, "unknown_port"
        expired, outcome = dvr_icmp.parse(data)
        if expired is None:
            return None, outcome
        mac = ":".join(f"{b:02x}" for b in expired.eth_dst)
        ifaces = [i for i in network_interfaces(view, port["network_id"]) if i.mac == mac]
        if not ifaces:
            return None, "not_a_gateway"
        src = ipaddress.ip_address(expired.ip_src)
        iface = next((i for i in ifaces if src in i.cidr), ifaces[0])
        router = view.routers.get(iface.port.get("device_id"))
        if router is None or not routes(view, router, router_interfaces(view, router["id"]),
                                        iface, expired.ip_dst):
            return None, "not_routed"
        return dvr_icmp.reply(expired, bytes(expired.eth_dst), iface.address), "time_exceeded"


# -- the router scope: present where one of its networks has a bound port ---
def _routers_on(view: TopologyView, sw) -> list[tuple[str, Document]]:
    if sw.host is None:
        return []
    ids = {r for n in view.bound_networks_on_host(sw.host_name)
           for r in view.routers_of_network(n)}
    return [(r, view.routers[r]) for r in sorted(ids) if r in view.routers]


def _router_here(view: TopologyView, sw, rid: str) -> Optional[Document]:
    router = view.routers.get(rid)
    if router is None or sw.host is None:
        return None
    here = view.bound_networks_on_host(sw.host_name)
    return router if view.router_networks(rid) & here else None


ROUTER = scopes.register(scopes.ScopeKind(
    name="router",
    on_switch=_routers_on,
    lookup=_router_here,
    hosts=lambda view, rid: view.hosts_of_router(rid),
))


def _docs(old, new) -> list[Document]:
    return [d for d in (old, new) if d]


def _is_interface(doc: Document) -> bool:
    return doc.get("device_owner") == ROUTER_INTERFACE


@ROUTER.watch("routers")
def _router_changed(view, old, new):
    return {d["id"] for d in _docs(old, new)}


@ROUTER.watch("ports")
def _routers_of_port(view, old, new):
    # An interface changes its router; any port of a router's network may be
    # a static route's nexthop, or bring the router to a host.
    out = set()
    for d in _docs(old, new):
        if _is_interface(d) and d.get("device_id"):
            out.add(d["device_id"])
        out |= view.routers_of_network(d["network_id"])
    return out


@ROUTER.watch("subnets")
@ROUTER.watch("networks")
def _routers_of_network(view, old, new):
    return {r for d in _docs(old, new) for r in view.routers_of_network(d.get("network_id", d["id"]))}


@scopes.KINDS["network"].watch("ports")
def _networks_routed_with(view, old, new):
    """An interface brings or takes its router's networks to its network's
    hosts; a port bound to a new host brings its network's routed networks."""
    out = set()
    for d in _docs(old, new):
        if _is_interface(d) and d.get("device_id"):
            out |= view.router_networks(d["device_id"]) | {d["network_id"]}
    if (old or {}).get("binding:host_id") != (new or {}).get("binding:host_id"):
        for d in _docs(old, new):
            out |= view.routed_networks(d["network_id"])
    return out


@scopes.KINDS["switch"].watch("hosts")
def _switches_of_external_macs(view, old, new):
    # Every switch knows every other host's external MAC.
    if (old or {}).get("external_mac") == (new or {}).get("external_mac"):
        return ()
    return [""]


@scopes.KINDS["network"].watch("hosts")
def _networks_of_dvr_macs(view, old, new):
    # Every host recognises every other host's DVR MAC.
    if (old or {}).get("dvr_mac") == (new or {}).get("dvr_mac"):
        return ()
    return [n for n in view.networks if view.routers_of_network(n)]


@scopes.KINDS["port"].watch("ports")
def _ports_behind_interface(view, old, new):
    # The neighbour step exists for ports of networks with an interface.
    return [pid for d in _docs(old, new) if _is_interface(d)
            for pid in view.ports_by_network.get(d["network_id"], {})]


@scopes.KINDS["network"].watch("routers")
def _networks_of_router(view, old, new):
    return {n for d in _docs(old, new) for n in view.router_networks(d["id"])}


@scopes.KINDS["port"].watch("routers")
def _ports_of_router(view, old, new):
    return [pid for d in _docs(old, new) for n in view.router_networks(d["id"])
            for pid in view.ports_by_network.get(n, {})]
