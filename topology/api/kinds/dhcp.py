"""The network's DHCP port: the address the controller's DHCP server speaks from.

One port per network with device_owner "network:dhcp", holding one address in
every DHCP-enabled subnet (the lowest free one, as Neutron's DHCP agent takes).
It is found through the claim ("dhcp-port", network_id), so keeping it current
costs an indexed lookup, never a scan of the network's ports.
"""
from __future__ import annotations

from typing import Optional

from topology import ipam
from topology.api.auth import Context
from topology.api.kinds.ports import port_owner
from topology.store.base import Document, Txn

DEVICE_OWNER = "network:dhcp"
NAMESPACE = "dhcp-port"


def find(txn: Txn, network_id: str) -> Optional[Document]:
    owner = txn.claim_owner(NAMESPACE, network_id)
    return txn.get("ports", owner.partition(":")[2]) if owner else None


def add_subnet(txn: Txn, ports_kind, network: Document, subnet: Document) -> Document:
    """Give the DHCP port an address in subnet, creating the port if needed."""
    port = find(txn, network["id"])
    if port is None:
        ctx = Context(network["project_id"], True)
        port = ports_kind.build(txn, ctx, {
            "name": "", "description": "", "network_id": network["id"],
            "project_id": network["project_id"], "admin_state_up": True,
            "mac_address": None, "fixed_ips": [], "device_id": f"dhcp{network['id']}",
            "device_owner": DEVICE_OWNER, "binding:host_id": "", "binding:profile": {},
            "binding:vnic_type": "normal", "allowed_address_pairs": [],
            "port_security_enabled": False, "security_groups": [],
        }, network)
        txn.claim(NAMESPACE, network["id"], port_owner(port["id"]))
    if any(ip["subnet_id"] == subnet["id"] for ip in port["fixed_ips"]):
        return port
    addr = ipam.first_free_ip(txn, subnet, port_owner(port["id"]))
    port["fixed_ips"].append({"subnet_id": subnet["id"], "ip_address": addr})
    port["status"] = "ACTIVE"
    ports_kind.touch(port)
    ports_kind.save(txn, port)
    return port


def remove_subnet(txn: Txn, ports_kind, network_id: str, subnet_id: str) -> None:
    """Drop the DHCP port's address in subnet; the port goes with its last address."""
    port = find(txn, network_id)
    if port is None:
        return
    mine = [ip for ip in port["fixed_ips"] if ip["subnet_id"] == subnet_id]
    if not mine:
        return
    for ip in mine:
        txn.release(ipam.ip_namespace(subnet_id), ip["ip_address"])
    port["fixed_ips"] = [ip for ip in port["fixed_ips"] if ip["subnet_id"] != subnet_id]
    if port["fixed_ips"]:
        ports_kind.touch(port)
        ports_kind.save(txn, port)
    else:
        txn.release_owner(f"port:{port['id']}")
        txn.delete("ports", port["id"])
