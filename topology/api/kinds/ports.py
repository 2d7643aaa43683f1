"""Ports: a VM's (or a network service's) attachment to a network."""
from __future__ import annotations

from typing import Any, Optional

from topology import ipam
from topology import validation as v
from topology.api.errors import BadRequest, InUse
from topology.api.kinds import fip_refs, qos, security_groups
from topology.api.kinds.base import UNSET, Kind, common_attrs
from topology.store.base import Document, Txn

# A port key is also its firewall's conntrack zone; 0xC000 and up are the
# routers' external zones (controller/pipeline.py external_zone).
PORT_KEY_MAX = 0xBFFF


def _fixed_ip(field, value):
    if not isinstance(value, dict) or not value or set(value) - {"subnet_id", "ip_address"}:
        raise v.Invalid(field, f"'{value!r}' must be an object with subnet_id and/or ip_address")
    out = {}
    if "subnet_id" in value:
        out["subnet_id"] = v.uuid_str(f"{field}.subnet_id", value["subnet_id"])
    if "ip_address" in value:
        out["ip_address"] = v.ipv4_address(f"{field}.ip_address", value["ip_address"])
    return out


def _address_pair(field, value):
    if not isinstance(value, dict) or "ip_address" not in value or \
            set(value) - {"ip_address", "mac_address"}:
        raise v.Invalid(field, f"'{value!r}' must be an object with ip_address and optional mac_address")
    out = {"ip_address": v.ipv4_address_or_cidr(f"{field}.ip_address", value["ip_address"])}
    if value.get("mac_address") is not None:
        out["mac_address"] = v.mac_address(f"{field}.mac_address", value["mac_address"])
    return out


def _profile(field, value):
    profile = v.json_dict(field, value)
    if "interface_name" in profile:
        v.interface_name(f"{field}.interface_name", profile["interface_name"])
    return profile


# ports that belong to a router, created and removed through the router API
L3_OWNERS = ("network:router_interface_distributed", "network:router_gateway")


def port_owner(port_id: str) -> str:
    return f"port:{port_id}"


def assign_fixed_ips(txn: Txn, network_id: str, requests: list[dict], owner: str,
                     current: Optional[list[dict]] = None) -> list[dict]:
    """Claim the requested addresses (or allocate) and return the port's fixed_ips.

    Addresses in `current` that are requested again are kept as they are, so an
    update may list a port's own addresses without conflicting with itself.
    """
    kept = {(ip["subnet_id"], ip["ip_address"]) for ip in current or []}
    subnets: dict[str, Document] = {}

    def subnet(subnet_id: str) -> Document:
        if subnet_id not in subnets:
            doc = txn.get("subnets", subnet_id)
            if doc is None or doc["network_id"] != network_id:
                raise v.Invalid("fixed_ips", f"subnet {subnet_id} is not on network {network_id}")
            subnets[subnet_id] = doc
        return subnets[subnet_id]

    result = []
    for req in requests:
        addr = req.get("ip_address")
        if "subnet_id" in req:
            sub = subnet(req["subnet_id"])
            if addr is not None and not ipam.in_cidr(addr, sub["cidr"]):
                raise v.Invalid("fixed_ips", f"IP address {addr} is not a valid IP for "
                                             f"subnet {sub['id']}")
        else:
            sub = next((s for s in txn.list("subnets", parent_id=network_id)
                        if ipam.in_cidr(addr, s["cidr"])), None)
            if sub is None:
                raise v.Invalid("fixed_ips", f"IP address {addr} is not in any subnet of "
                                             f"network {network_id}")
            subnets[sub["id"]] = sub
        if addr is None:
            held = frozenset(ip["ip_address"] for ip in (current or []) + result
                             if ip["subnet_id"] == sub["id"])
            addr = ipam.allocate_ip(txn, sub, owner, held)
        elif (sub["id"], addr) not in kept:
            ipam.claim_ip(txn, sub, addr, owner)
        result.append({"subnet_id": sub["id"], "ip_address": addr})
    if len({(ip["subnet_id"], ip["ip_address"]) for ip in result}) != len(result):
        raise v.Invalid("fixed_ips", "the same address is listed twice")
    return result


def default_fixed_ips(txn: Txn, network_id: str, owner: str) -> list[dict]:
    """One address from the first subnet that has one free (Neutron's IPv4 rule).

    A network without subnets gives none; one whose subnets are all full is a 409.
    """
    subnets = txn.list("subnets", parent_id=network_id)
    for sub in subnets:
        try:
            addr = ipam.allocate_ip(txn, sub, owner)
        except ipam.PoolExhausted:
            continue
        return [{"subnet_id": sub["id"], "ip_address": addr}]
    if subnets:
        raise ipam.PoolExhausted(subnets[0]["id"])
    return []


def release_fixed_ips(txn: Txn, fixed_ips: list[dict]) -> None:
    for ip in fixed_ips:
        txn.release(ipam.ip_namespace(ip["subnet_id"]), ip["ip_address"])


class Ports(Kind):
    collection = "ports"
    # shown (and filterable) beyond the attributes a client sets
    shown = frozenset({"status", "binding:vif_type", "binding:vif_details"})
    member = "port"
    parent_field = "network_id"
    attrs = {
        **common_attrs(),
        "network_id": v.Attr(v.uuid_str, v.REQUIRED, put=False),
        "admin_state_up": v.Attr(v.boolean, True),
        "mac_address": v.Attr(v.mac_address, None, put=False),
        "fixed_ips": v.Attr(v.list_of(_fixed_ip, max_items=64), UNSET),
        "device_id": v.Attr(v.string(255), ""),
        "device_owner": v.Attr(v.string(255), ""),
        "binding:host_id": v.Attr(v.string(255), ""),
        "binding:profile": v.Attr(_profile, dict),
        "binding:vnic_type": v.Attr(v.one_of("normal"), "normal"),
        "allowed_address_pairs": v.Attr(v.list_of(_address_pair, max_items=64), list),
        "port_security_enabled": v.Attr(v.boolean, UNSET),
        "security_groups": v.Attr(v.unique_list_of(v.uuid_str, max_items=64), UNSET),
        "qos_policy_id": qos.policy_id_attr(),
    }

    def create_reads(self, ctx, items):
        # the subnets an address comes from, the project's default group
        reads = super().create_reads(ctx, items)
        reads["kinds"].append("subnets")
        reads["claims"].extend((security_groups.DEFAULT_NAMESPACE, project)
                               for project in {self.requested_project(ctx, values) for values in items})
        return reads

    def create(self, txn, ctx, values):
        network = txn.get("networks", values["network_id"])
        return self.build(txn, ctx, values, network)

    def build(self, txn: Txn, ctx, values: dict[str, Any], network: Document) -> Document:
        doc = self.new_doc(ctx, values)
        owner = port_owner(doc["id"])
        doc["_key"] = txn.allocate_key("port-key", owner, low=1, high=PORT_KEY_MAX)
        if doc["mac_address"] is None:
            doc["mac_address"] = ipam.allocate_mac(txn, self.settings.base_mac, "mac", owner)
        else:
            txn.claim("mac", doc["mac_address"], owner)
        if doc["fixed_ips"] is UNSET:
            doc["fixed_ips"] = default_fixed_ips(txn, network["id"], owner)
        else:
            doc["fixed_ips"] = assign_fixed_ips(txn, network["id"], doc["fixed_ips"], owner)
        if doc["port_security_enabled"] is UNSET:
            doc["port_security_enabled"] = network.get("port_security_enabled", True)
        if doc["security_groups"] is UNSET:
            wants_default = doc["port_security_enabled"] and \
                not doc["device_owner"].startswith("network:")
            doc["security_groups"] = [security_groups.ensure_default(txn, doc["project_id"])] \
                if wants_default else []
        else:
            self._check_groups(txn, ctx, doc["security_groups"])
        self._check_security(doc)
        qos.check_policy(txn, ctx, doc.get("qos_policy_id"))
        doc["allowed_address_pairs"] = self._pairs(doc)
        doc.update(status="DOWN", **self._binding(doc))
        self.save(txn, doc)
        return doc

    @staticmethod
    def _binding(doc):
        bound = bool(doc["binding:host_id"])
        return {"binding:vif_type": "ovs" if bound else "unbound",
                "binding:vif_details": {"port_filter": True} if bound else {}}

    @staticmethod
    def _pairs(doc):
        return [{"ip_address": p["ip_address"], "mac_address": p.get("mac_address") or doc["mac_address"]}
                for p in doc["allowed_address_pairs"]]

    @staticmethod
    def _check_security(doc):
        if not doc["port_security_enabled"]:
            if doc["security_groups"]:
                raise BadRequest("Port security must be enabled and port must have an IP "
                                 "address in order to use security groups.",
                                 "PortSecurityAndIPRequiredForSecurityGroups")
            if doc["allowed_address_pairs"]:
                raise InUse("Port Security must be enabled in order to have allowed "
                            "address pairs on a port.", "AddressPairAndPortSecurityRequired")

    @staticmethod
    def _check_groups(txn, ctx, group_ids):
        security_groups.check_port_groups(txn, ctx, group_ids)

    def delete(self, txn, ctx, doc):
        # Neutron's rule: a router's interface goes through remove_router_interface,
        # which also checks no route still needs it; its gateway port goes with
        # its external_gateway_info.
        if doc.get("device_owner") in L3_OWNERS:
            raise InUse(f"Port {doc['id']} cannot be deleted directly via the port API: has "
                        f"device owner {doc['device_owner']}.", "L3PortInUse")
        # Neutron disassociates the port's floating IPs and deletes its port forwardings.
        fip_refs.release_port(txn, doc)
        super().delete(txn, ctx, doc)

    def update(self, txn, ctx, doc, changes):
        owner = port_owner(doc["id"])
        if "fixed_ips" in changes:
            new = assign_fixed_ips(txn, doc["network_id"], changes["fixed_ips"], owner,
                                   current=doc["fixed_ips"])
            lost = [ip for ip in doc["fixed_ips"] if ip not in new]
            release_fixed_ips(txn, lost)
            if lost:
                fip_refs.release_port(txn, doc, [ip["ip_address"] for ip in lost])
            changes["fixed_ips"] = new
        if "security_groups" in changes:
            self._check_groups(txn, ctx, changes["security_groups"])
        if "qos_policy_id" in changes:
            qos.check_policy(txn, ctx, changes["qos_policy_id"])
        if changes.get("port_security_enabled") is False and "security_groups" not in changes \
                and doc["security_groups"]:
            # Neutron asks for the groups to be removed in the same request
            changes.setdefault("security_groups", doc["security_groups"])
        doc.update(changes)
        self._check_security(doc)
        if "allowed_address_pairs" in changes:
            doc["allowed_address_pairs"] = self._pairs(doc)
        doc.update(self._binding(doc))
        self.touch(doc)
        self.save(txn, doc)
        return doc
