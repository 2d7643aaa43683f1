"""Where a port is: the one rule every app uses for "is this port local
here" and "which switch port is this network's uplink".

A port gets VM-port flows on a switch (classification, port security, the
services flows) when it is plugged there: bound to the switch's host, its
interface present, and it and its network enabled. Apps that disagreed on
this would leave a port with forwarding but no ARP, or ARP but no port
security; so none of them decides it alone.
"""
from __future__ import annotations

from typing import Optional

from controller.app import SwitchView
from topology.store.base import Document
from topology.view import ROUTER_INTERFACE, TopologyView, interface_name


UNPLUGGED = frozenset(("network:dhcp", ROUTER_INTERFACE))


def is_active(doc: Optional[Document]) -> bool:
    return bool(doc) and doc.get("admin_state_up", True) is not False


def forwards(view: TopologyView, port: Document) -> bool:
    """Does this port get forwarding flows anywhere? The DHCP port is served
    by the controller itself, and a distributed router's interface by every
    host's routing flows (apps/dvr.py): neither is plugged into a bridge."""
    if not is_active(port) or port.get("device_owner") in UNPLUGGED:
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

    device_owner does not matter, except for the ports nothing plugs (see
    `forwards`): the DHCP port, served by the controller, and a distributed
    router's interface, whose MAC every host's routing flows answer.
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
