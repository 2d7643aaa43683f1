"""Subnets: IPv4 ranges on a network, with pools, gateway, DNS and routes."""
from __future__ import annotations

import netaddr

from topology import ipam
from topology import validation as v
from topology.api.errors import InUse
from topology.api.kinds import dhcp
from topology.api.kinds.base import UNSET, Kind, common_attrs


def _pool(field, value):
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        raise v.Invalid(field, f"'{value!r}' must be an object with start and end")
    return {"start": v.ipv4_address(field, value["start"]),
            "end": v.ipv4_address(field, value["end"])}


def _route(field, value):
    if not isinstance(value, dict) or set(value) != {"destination", "nexthop"}:
        raise v.Invalid(field, f"'{value!r}' must be an object with destination and nexthop")
    return {"destination": v.ipv4_cidr(field, value["destination"]),
            "nexthop": v.ipv4_address(field, value["nexthop"])}


def _ip_version(field, value):
    if value in (4, "4"):
        return 4
    raise v.Invalid(field, f"'{value}' is not supported: vmflow subnets are IPv4 only")


class Subnets(Kind):
    collection = "subnets"
    # shown (and filterable) beyond the attributes a client sets
    shown = frozenset({"ipv6_ra_mode", "ipv6_address_mode", "subnetpool_id"})
    member = "subnet"
    parent_field = "network_id"
    attrs = {
        **common_attrs(),
        "network_id": v.Attr(v.uuid_str, v.REQUIRED, put=False),
        "cidr": v.Attr(v.ipv4_cidr, v.REQUIRED, put=False),
        "ip_version": v.Attr(_ip_version, 4, put=False),
        "gateway_ip": v.Attr(v.nullable(v.ipv4_address), UNSET),
        "allocation_pools": v.Attr(v.list_of(_pool, max_items=64), UNSET),
        "dns_nameservers": v.Attr(v.unique_list_of(v.ipv4_address, max_items=16), list),
        "host_routes": v.Attr(v.unique_list_of(_route, max_items=64), list),
        "enable_dhcp": v.Attr(v.boolean, True),
    }

    def __init__(self, settings, ports_kind, networks_kind):
        super().__init__(settings)
        self.ports = ports_kind
        self.networks = networks_kind

    def create(self, txn, ctx, values):
        network = txn.get("networks", values["network_id"])
        doc = self.new_doc(ctx, values)
        cidr = doc["cidr"]
        net = netaddr.IPNetwork(cidr)
        for other in txn.list("subnets", parent_id=network["id"]):
            if net in netaddr.IPNetwork(other["cidr"]) or netaddr.IPNetwork(other["cidr"]) in net:
                raise v.Invalid("cidr", f"requested subnet with cidr {cidr} for network "
                                        f"{network['id']} overlaps with another subnet")
        if doc["gateway_ip"] is UNSET:
            doc["gateway_ip"] = ipam.default_gateway(cidr)
        ipam.check_gateway(cidr, doc["gateway_ip"])
        if doc["allocation_pools"] is UNSET:
            doc["allocation_pools"] = ipam.default_pools(cidr, doc["gateway_ip"])
        else:
            doc["allocation_pools"] = ipam.check_pools(cidr, doc["gateway_ip"], doc["allocation_pools"])
        doc.update(ipv6_ra_mode=None, ipv6_address_mode=None, subnetpool_id=None)
        self.save(txn, doc)
        self.networks.touch(network)
        network["subnets"].append(doc["id"])
        self.networks.save(txn, network)
        if doc["enable_dhcp"]:
            dhcp.add_subnet(txn, self.ports, network, doc)
        return doc

    def update(self, txn, ctx, doc, changes):
        cidr = doc["cidr"]
        gateway = changes.get("gateway_ip", doc["gateway_ip"])
        if "gateway_ip" in changes and gateway != doc["gateway_ip"]:
            ipam.check_gateway(cidr, gateway)
            if gateway is not None and ipam.ip_owner(txn, doc["id"], gateway):
                raise InUse(f"Gateway ip {gateway} conflicts with an allocated address.",
                            "GatewayIpInUse")
        pools = changes.get("allocation_pools", doc["allocation_pools"])
        changes["allocation_pools"] = ipam.check_pools(cidr, gateway, pools)
        was_dhcp = doc["enable_dhcp"]
        doc = super().update(txn, ctx, doc, changes)
        if doc["enable_dhcp"] and not was_dhcp:
            dhcp.add_subnet(txn, self.ports, txn.get("networks", doc["network_id"]), doc)
        elif was_dhcp and not doc["enable_dhcp"]:
            dhcp.remove_subnet(txn, self.ports, doc["network_id"], doc["id"])
        return doc

    def delete(self, txn, ctx, doc):
        ns = ipam.ip_namespace(doc["id"])
        dhcp_port = dhcp.find(txn, doc["network_id"])
        dhcp_owner = f"port:{dhcp_port['id']}" if dhcp_port else None
        for addr in txn.claimed_keys(ns):
            if txn.claim_owner(ns, addr) != dhcp_owner:
                raise InUse(f"Unable to complete operation on subnet {doc['id']}: one or "
                            "more ports have an IP allocation from this subnet.", "SubnetInUse")
        dhcp.remove_subnet(txn, self.ports, doc["network_id"], doc["id"])
        network = txn.get("networks", doc["network_id"])
        if network is not None:
            network["subnets"] = [s for s in network["subnets"] if s != doc["id"]]
            self.networks.touch(network)
            self.networks.save(txn, network)
        super().delete(txn, ctx, doc)
