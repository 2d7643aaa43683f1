"""L2: classification, baseline port security, VLAN translation, forwarding.

Implements the table docs of controller/pipeline.py for classify,
port_security, l2_lookup and output, and the pass-through defaults of the
stages other apps fill in (services, egress_firewall, routing,
ingress_firewall). Every MAC is known from the store, so there is no
learning: an unknown destination hits l2_lookup's table-miss drop, whose
packet counter is the "unknown destination" count.

ARP fails closed: l2 owns a low-priority services flow dropping every ARP
request from a VM, so only the arp app's (and metadata's) higher per-port
flows let one through, to the controller or, for a port announcing its own
address, to the network. Without those apps no ARP request reaches a VM.

Which ports get VM-port flows is decided once, here, by `is_local` (see its
doc); arp, dhcp and metadata call it so that all apps agree.
"""
from __future__ import annotations

from typing import Iterable, Optional

from apps.addresses import ipv4_cidr
from apps.base import App, SwitchView
from controller.flow import (Flow, apply, flow, goto, output, pop_vlan, push_vlan,
                             set_field, write_metadata)
from controller.pipeline import REG_IN_PORT_KEY, REG_OUT_PORT_KEY
from topology.store.base import Document
from topology.view import TopologyView, interface_name

OFPVID_PRESENT = 0x1000
ETH_IP = 0x0800
ETH_ARP = 0x0806
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")

# Priorities, per table: specific matches above defaults.
PRIO_DEFAULT = 0
PRIO_ARP_REQUEST_DROP = 10     # services: below arp (100) and metadata (110)
PRIO_FLOOD = 50
PRIO_MATCH = 100


def is_active(doc: Optional[Document]) -> bool:
    return bool(doc) and doc.get("admin_state_up", True) is not False


def forwards(view: TopologyView, port: Document) -> bool:
    """Does this port get forwarding flows anywhere? The DHCP port is served
    by the controller itself and is plugged into no bridge."""
    if not is_active(port) or port.get("device_owner") == "network:dhcp":
        return False
    return is_active(view.networks.get(port["network_id"]))


def local_ofport(view: TopologyView, sw: SwitchView, port: Document) -> Optional[int]:
    """The ofport a VM port is plugged into on this switch, if it is bound
    here, enabled and its interface is present; otherwise None."""
    if sw.host is None or port.get("binding:host_id") != sw.host_name:
        return None
    if not forwards(view, port):
        return None
    return sw.ofport(interface_name(port))


def is_local(view: TopologyView, sw: SwitchView, port: Document) -> bool:
    """The one rule for "this port gets VM-port flows on this switch" (l2's
    classification and port security, and arp/dhcp/metadata's services
    flows): the port is plugged into this switch (bound to its host, its
    interface present), and it and its network are enabled.

    device_owner does not matter, except network:dhcp: that port is served
    by the controller and never plugged (see `forwards`). A router
    interface, once something plugs it, is an endpoint on the bridge like a
    VM's vNIC, so it is treated as one rather than silently left without ARP
    and DHCP service.
    """
    return local_ofport(view, sw, port) is not None


def uplink_ofport(sw: SwitchView, network: Document) -> Optional[int]:
    """The switch port of the network's physical network on this host."""
    if sw.host is None:
        return None
    physnet = network.get("provider:physical_network")
    if not physnet:
        return None
    iface = (sw.host.get("physical_networks") or {}).get(physnet)
    return sw.ofport(iface) if iface else None


def _is_vlan(network: Document) -> bool:
    return network.get("provider:network_type") == "vlan"


def _to_uplink(network: Document, uplink: int) -> tuple:
    """Actions sending a packet out of the uplink, tagged for vlan networks."""
    if _is_vlan(network):
        vid = OFPVID_PRESENT | int(network["provider:segmentation_id"])
        return (push_vlan(), set_field("vlan_vid", vid), output(uplink))
    return (output(uplink),)


class L2App(App):
    name = "l2"

    def __init__(self, conf=None):
        self.conf = conf

    # -- per switch: the defaults of every table ------------------------
    def switch_flows(self, view: TopologyView, sw: SwitchView) -> Iterable[Flow]:
        a = self.app_id
        # Empty instructions drop: classify's miss drops anything not from a
        # known VM port or uplink; on a switch no host claims, that is all.
        yield flow(a, "classify", PRIO_DEFAULT, {})
        if sw.host is None:
            return
        yield flow(a, "port_security", PRIO_DEFAULT, {})
        yield flow(a, "services", PRIO_DEFAULT, {}, goto("egress_firewall"))
        # Fail closed: an ARP request no app claimed (arp app absent, or its
        # flows missing) would otherwise flood the network. Only VM traffic
        # reaches services (uplink traffic skips to l2_lookup), so no reg6
        # match is needed to spare requests from other hosts.
        yield flow(a, "services", PRIO_ARP_REQUEST_DROP,
                   {"eth_type": ETH_ARP, "arp_op": 1})
        yield flow(a, "egress_firewall", PRIO_DEFAULT, {}, goto("routing"))
        yield flow(a, "routing", PRIO_DEFAULT, {}, goto("l2_lookup"))
        yield flow(a, "l2_lookup", PRIO_DEFAULT, {})
        yield flow(a, "ingress_firewall", PRIO_DEFAULT, {}, goto("output"))
        yield flow(a, "output", PRIO_DEFAULT, {})

    # -- per network: VLAN translation in, and flooding ------------------
    def network_flows(self, view: TopologyView, sw: SwitchView, network: Document) -> Iterable[Flow]:
        if sw.host is None or not is_active(network):
            return
        a = self.app_id
        key = network["_key"]
        uplink = uplink_ofport(sw, network)
        if uplink is not None:
            if _is_vlan(network):
                vid = OFPVID_PRESENT | int(network["provider:segmentation_id"])
                yield flow(a, "classify", PRIO_MATCH, {"in_port": uplink, "vlan_vid": vid},
                           apply(pop_vlan()), write_metadata(key), goto("l2_lookup"))
            elif network.get("provider:network_type") == "flat":
                # vlan_vid 0 = OFPVID_NONE: untagged frames only.
                yield flow(a, "classify", PRIO_MATCH, {"in_port": uplink, "vlan_vid": 0},
                           write_metadata(key), goto("l2_lookup"))
        local = sorted(p for p in (local_ofport(view, sw, port)
                                   for port in view.ports_by_network.get(network["id"], {}).values())
                       if p is not None)
        actions = [output(p) for p in local]
        if uplink is not None:
            # The tag is pushed last, so only the uplink copy carries it. OVS
            # never outputs to the ingress port, so a frame is not reflected.
            actions += _to_uplink(network, uplink)
        if actions:
            yield flow(a, "l2_lookup", PRIO_FLOOD, {"metadata": key, "eth_dst": MULTICAST},
                       apply(*actions))

    # -- per port: classification, port security, forwarding -------------
    def port_flows(self, view: TopologyView, sw: SwitchView, port: Document) -> Iterable[Flow]:
        if sw.host is None or not forwards(view, port):
            return
        network = view.networks[port["network_id"]]
        ofport = local_ofport(view, sw, port)
        if ofport is not None:
            yield from self._local_port(network, port, ofport)
            return
        host = port.get("binding:host_id")
        if host and host != sw.host_name:
            uplink = uplink_ofport(sw, network)
            if uplink is not None:
                yield flow(self.app_id, "l2_lookup", PRIO_MATCH,
                           {"metadata": network["_key"], "eth_dst": port["mac_address"]},
                           apply(*_to_uplink(network, uplink)))

    def _local_port(self, network: Document, port: Document, ofport: int) -> Iterable[Flow]:
        a = self.app_id
        pkey, nkey = port["_key"], network["_key"]
        yield flow(a, "classify", PRIO_MATCH, {"in_port": ofport},
                   apply(set_field(REG_IN_PORT_KEY, pkey)), write_metadata(nkey), goto("port_security"))
        yield from self._port_security(port)
        yield flow(a, "l2_lookup", PRIO_MATCH, {"metadata": nkey, "eth_dst": port["mac_address"]},
                   apply(set_field(REG_OUT_PORT_KEY, pkey)), goto("ingress_firewall"))
        yield flow(a, "output", PRIO_MATCH, {REG_OUT_PORT_KEY: pkey}, apply(output(ofport)))

    def _port_security(self, port: Document) -> Iterable[Flow]:
        a = self.app_id
        pkey = port["_key"]
        if port.get("port_security_enabled", True) is False:
            yield flow(a, "port_security", PRIO_MATCH, {REG_IN_PORT_KEY: pkey}, goto("services"))
            return
        mac = port["mac_address"].lower()
        # (MAC, IPv4 address or CIDR) pairs the port may send from.
        allowed: set[tuple[str, str]] = set()
        for fixed in port.get("fixed_ips") or ():
            ip = ipv4_cidr(fixed.get("ip_address", ""))
            if ip:
                allowed.add((mac, ip))
        for pair in port.get("allowed_address_pairs") or ():
            ip = ipv4_cidr(pair.get("ip_address", ""))
            if ip:
                allowed.add(((pair.get("mac_address") or mac).lower(), ip))
        for src_mac, ip in sorted(allowed):
            yield flow(a, "port_security", PRIO_MATCH,
                       {REG_IN_PORT_KEY: pkey, "eth_src": src_mac, "eth_type": ETH_IP, "ipv4_src": ip},
                       goto("services"))
            yield flow(a, "port_security", PRIO_MATCH,
                       {REG_IN_PORT_KEY: pkey, "eth_src": src_mac, "eth_type": ETH_ARP,
                        "arp_sha": src_mac, "arp_spa": ip},
                       goto("services"))
        # A VM without an address yet: DHCP DISCOVER/REQUEST and ARP probes.
        yield flow(a, "port_security", PRIO_MATCH,
                   {REG_IN_PORT_KEY: pkey, "eth_src": mac, "eth_type": ETH_IP, "ipv4_src": "0.0.0.0",
                    "ip_proto": 17, "udp_src": 68, "udp_dst": 67},
                   goto("services"))
        yield flow(a, "port_security", PRIO_MATCH,
                   {REG_IN_PORT_KEY: pkey, "eth_src": mac, "eth_type": ETH_ARP,
                    "arp_sha": mac, "arp_spa": "0.0.0.0"},
                   goto("services"))
