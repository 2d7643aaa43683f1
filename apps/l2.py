"""L2: classification, baseline port security, VLAN translation, forwarding.

Implements the stage docs of controller/pipeline.py for classify,
port_security, l2_lookup and output; the table misses come from the
pipeline's declaration. l2_lookup only decides (a port key, or the uplink,
in reg7); output turns that into an ofport and a VLAN tag. Every MAC is known from the store, so there is no
learning: an unknown destination hits l2_lookup's table-miss drop, whose
packet counter is the "unknown destination" count.

ARP fails closed: l2 owns a low-priority services flow dropping every ARP
request from a VM, so only the arp app's (and metadata's) higher per-port
flows let one through, to the controller or, for a port announcing its own
address, to the network. Without those apps no ARP request reaches a VM.

Which ports get VM-port flows, and which switch port is a network's uplink,
is decided once, in controller/locality.py, so that all apps agree.
"""
from __future__ import annotations

from typing import Iterable

from apps.addresses import ipv4_cidr
from controller.app import App, SwitchView
from controller.flow import (Flow, apply, flow, goto, output, pop_vlan, push_vlan, resubmit,
                             set_field, write_metadata)
from controller.locality import forwards, is_active, local_ofport, uplink_ofport
from controller.pipeline import OUT_KEY_UPLINK, REG_IN_PORT_KEY, REG_OUT_PORT_KEY
from topology.store.base import Document
from topology.view import TopologyView

OFPVID_PRESENT = 0x1000
ETH_IP = 0x0800
ETH_ARP = 0x0806
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")

# Priorities, per table: specific matches above defaults.
PRIO_DEFAULT = 0
PRIO_ARP_REQUEST_DROP = 10     # services: below arp (100) and metadata (110)
PRIO_FLOOD = 50
PRIO_MATCH = 100


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

    # -- per switch ----------------------------------------------------------
    def switch_flows(self, view: TopologyView, sw: SwitchView) -> Iterable[Flow]:
        # Table misses come from the pipeline's declaration (compiler).
        if sw.host is None:
            return
        # Fail closed: an ARP request no app claimed (arp app absent, or its
        # flows missing) would otherwise flood the network. Only VM traffic
        # reaches services (uplink traffic skips to l2_lookup), so no reg6
        # match is needed to spare requests from other hosts.
        yield flow(self.app_id, "services", PRIO_ARP_REQUEST_DROP,
                   {"eth_type": ETH_ARP, "arp_op": 1})

    # -- per network: VLAN translation in and out, and flooding --------------
    def network_flows(self, view: TopologyView, sw: SwitchView, network: Document) -> Iterable[Flow]:
        if sw.host is None or not is_active(network):
            return
        a = self.app_id
        key = network["_key"]
        owner = ("networks", key)
        uplink = uplink_ofport(sw, network)
        if uplink is not None:
            if _is_vlan(network):
                vid = OFPVID_PRESENT | int(network["provider:segmentation_id"])
                yield flow(a, "classify", PRIO_MATCH, {"in_port": uplink, "vlan_vid": vid},
                           apply(pop_vlan()), write_metadata(key), goto("l2_lookup"), owner=owner)
            elif network.get("provider:network_type") == "flat":
                # vlan_vid 0 = OFPVID_NONE: untagged frames only.
                yield flow(a, "classify", PRIO_MATCH, {"in_port": uplink, "vlan_vid": 0},
                           write_metadata(key), goto("l2_lookup"), owner=owner)
            yield flow(a, "output", PRIO_MATCH, {"metadata": key, REG_OUT_PORT_KEY: OUT_KEY_UPLINK},
                       apply(*_to_uplink(network, uplink)), owner=owner)
        # A flood is one copy per receiver, each through its ingress_firewall
        # like a unicast packet; the uplink's copy goes last, as the tag is
        # pushed on the packet itself.
        local = sorted(port["_key"] for port in view.ports_by_network.get(network["id"], {}).values()
                       if local_ofport(view, sw, port) is not None)
        actions = []
        for pkey in local:
            actions += [set_field(REG_OUT_PORT_KEY, pkey), resubmit("ingress_firewall")]
        if uplink is not None:
            actions += [set_field(REG_OUT_PORT_KEY, OUT_KEY_UPLINK), resubmit("pre_output")]
        if actions:
            yield flow(a, "l2_lookup", PRIO_FLOOD, {"metadata": key, "eth_dst": MULTICAST},
                       apply(*actions), owner=owner)

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
        if host and host != sw.host_name and uplink_ofport(sw, network) is not None:
            yield flow(self.app_id, "l2_lookup", PRIO_MATCH,
                       {"metadata": network["_key"], "eth_dst": port["mac_address"]},
                       apply(set_field(REG_OUT_PORT_KEY, OUT_KEY_UPLINK)), goto("pre_output"),
                       owner=("ports", port["_key"]))

    def _local_port(self, network: Document, port: Document, ofport: int) -> Iterable[Flow]:
        a = self.app_id
        pkey, nkey = port["_key"], network["_key"]
        owner = ("ports", pkey)
        yield flow(a, "classify", PRIO_MATCH, {"in_port": ofport},
                   apply(set_field(REG_IN_PORT_KEY, pkey)), write_metadata(nkey),
                   goto("port_security"), owner=owner)
        yield from self._port_security(port)
        yield flow(a, "l2_lookup", PRIO_MATCH, {"metadata": nkey, "eth_dst": port["mac_address"]},
                   apply(set_field(REG_OUT_PORT_KEY, pkey)), goto("ingress_firewall"), owner=owner)
        yield flow(a, "output", PRIO_MATCH, {REG_OUT_PORT_KEY: pkey}, apply(output(ofport)),
                   owner=owner)

    def _port_security(self, port: Document) -> Iterable[Flow]:
        a = self.app_id
        pkey = port["_key"]
        owner = ("ports", pkey)
        if port.get("port_security_enabled", True) is False:
            yield flow(a, "port_security", PRIO_MATCH, {REG_IN_PORT_KEY: pkey}, goto("services"),
                       owner=owner)
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
                       goto("services"), owner=owner)
            yield flow(a, "port_security", PRIO_MATCH,
                       {REG_IN_PORT_KEY: pkey, "eth_src": src_mac, "eth_type": ETH_ARP,
                        "arp_sha": src_mac, "arp_spa": ip},
                       goto("services"), owner=owner)
        # A VM without an address yet: DHCP DISCOVER/REQUEST and ARP probes.
        yield flow(a, "port_security", PRIO_MATCH,
                   {REG_IN_PORT_KEY: pkey, "eth_src": mac, "eth_type": ETH_IP, "ipv4_src": "0.0.0.0",
                    "ip_proto": 17, "udp_src": 68, "udp_dst": 67},
                   goto("services"), owner=owner)
        yield flow(a, "port_security", PRIO_MATCH,
                   {REG_IN_PORT_KEY: pkey, "eth_src": mac, "eth_type": ETH_ARP,
                    "arp_sha": mac, "arp_spa": "0.0.0.0"},
                   goto("services"), owner=owner)
