"""Networks: VLAN or flat segments on a physical network."""
from __future__ import annotations

from topology import validation as v
from topology.api import availability_zones
from topology.api.errors import InUse
from topology.api.kinds import dhcp, qos
from topology.api.kinds.base import UNSET, Kind, common_attrs
from topology.store.base import Conflict

NETWORK_KEY_MAX = 0xFFFFFF


class Networks(Kind):
    collection = "networks"
    # shown (and filterable) beyond the attributes a client sets
    shown = frozenset({"status", "subnets", "availability_zones"})
    member = "network"
    attrs = {
        **common_attrs(),
        "admin_state_up": v.Attr(v.boolean, True),
        "shared": v.Attr(v.boolean, False),
        "router:external": v.Attr(v.boolean, False),
        "mtu": v.Attr(v.integer(68, 65535, nullable=True), None),
        "port_security_enabled": v.Attr(v.boolean, True),
        "provider:network_type": v.Attr(v.one_of("vlan", "flat", nullable=True), None,
                                        put=False),
        "provider:physical_network": v.Attr(v.string(64, nullable=True, empty_ok=False), None,
                                            put=False),
        "provider:segmentation_id": v.Attr(v.integer(1, 4094, nullable=True), None),
        "availability_zone_hints": v.Attr(v.unique_list_of(availability_zones.name,
                                                           max_items=64), list, put=False),
        "qos_policy_id": v.Attr(v.nullable(v.uuid_str), UNSET),
    }

    def create(self, txn, ctx, values):
        availability_zones.check_hints(txn, values["availability_zone_hints"])
        doc = self.new_doc(ctx, values)
        if doc["qos_policy_id"] is UNSET:
            # Neutron: a network created without a policy gets its project's default.
            doc["qos_policy_id"] = next(
                (p["id"] for p in txn.list("qos_policies", project_id=doc["project_id"])
                 if p.get("is_default")), None)
        qos.check_policy(txn, ctx, doc["qos_policy_id"])
        owner = f"network:{doc['id']}"
        self._segment(txn, doc, owner)
        if doc["mtu"] is None:
            doc["mtu"] = self.settings.default_mtu
        doc.update(status="ACTIVE", subnets=[])
        doc["_key"] = txn.allocate_key("network-key", owner, low=1, high=NETWORK_KEY_MAX)
        self.save(txn, doc)
        return doc

    def _segment(self, txn, doc, owner):
        ntype = doc["provider:network_type"]
        physnet = doc["provider:physical_network"]
        seg = doc["provider:segmentation_id"]
        if ntype is None:
            if physnet is not None or seg is not None:
                raise v.Invalid("provider:network_type",
                                "required with provider:physical_network or provider:segmentation_id")
            physnet, seg = self._tenant_vlan(txn, owner)
            ntype = "vlan"
        elif ntype == "flat":
            v.check(seg is None, "provider:segmentation_id", "must not be set for a flat network")
            v.check(physnet is not None, "provider:physical_network",
                    "required for a flat network")
            txn.claim(f"flat:{physnet}", "flat", owner)
        else:
            v.check(physnet is not None, "provider:physical_network",
                    "required for a vlan network")
            if seg is None:
                seg = self._vlan_from_ranges(txn, physnet, owner)
            else:
                txn.claim(f"vlan:{physnet}", str(seg), owner)
        doc["provider:network_type"] = ntype
        doc["provider:physical_network"] = physnet
        doc["provider:segmentation_id"] = seg

    def _vlan_from_ranges(self, txn, physnet, owner):
        ranges = self.settings.vlan_ranges.get(physnet)
        if not ranges:
            raise v.Invalid("provider:segmentation_id",
                            f"required: no tenant VLAN range is configured for {physnet}")
        for low, high in ranges:
            try:
                return txn.allocate_key(f"vlan:{physnet}", owner, low=low, high=high)
            except Conflict:
                continue
        raise InUse(f"Unable to create the network. No tenant network is available "
                    f"for allocation on {physnet}.", "NoNetworkAvailable")

    def _tenant_vlan(self, txn, owner):
        for physnet in self.settings.vlan_ranges:
            try:
                return physnet, self._vlan_from_ranges(txn, physnet, owner)
            except InUse:
                continue
        raise InUse("Unable to create the network. No tenant network is available for "
                    "allocation.", "NoNetworkAvailable")

    def update(self, txn, ctx, doc, changes):
        if doc.get("router:external") and changes.get("router:external") is False:
            # Neutron's ExternalNetworkInUse: routers' gateways and floating
            # IPs would be left on a network that is no longer external.
            if any(p.get("device_owner") == "network:router_gateway"
                   for p in txn.list("ports", parent_id=doc["id"])) or self._floating_ips(txn, doc):
                raise InUse(f"External network {doc['id']} cannot be updated to be made "
                            "non-external, since it has existing gateway ports or floating "
                            "IPs.", "ExternalNetworkInUse")
        if changes.get("mtu", 0) is None:
            changes["mtu"] = self.settings.default_mtu
        if "qos_policy_id" in changes:
            qos.check_policy(txn, ctx, changes["qos_policy_id"])
        seg = changes.get("provider:segmentation_id", doc["provider:segmentation_id"])
        if seg != doc["provider:segmentation_id"]:
            self._move_segment(txn, doc, seg)
        return super().update(txn, ctx, doc, changes)

    @staticmethod
    def _move_segment(txn, doc, seg):
        """A new VLAN id for a network that no VM uses yet (Neutron's
        provider-segmentation-id update): a bound port would lose its traffic."""
        if doc["provider:network_type"] != "vlan":
            raise v.Invalid("provider:segmentation_id",
                            f"cannot be set on a {doc['provider:network_type']} network")
        v.check(seg is not None, "provider:segmentation_id", "required for a vlan network")
        bound = [p["id"] for p in txn.list("ports", parent_id=doc["id"]) if p.get("binding:host_id")]
        if bound:
            raise InUse(f"Unable to update the segmentation id of network {doc['id']}: "
                        f"ports {', '.join(bound)} are bound to hosts.", "NetworkInUse")
        namespace = f"vlan:{doc['provider:physical_network']}"
        txn.claim(namespace, str(seg), f"network:{doc['id']}")
        txn.release(namespace, str(doc["provider:segmentation_id"]))

    def present(self, r, docs):
        out = super().present(r, docs)
        zones = availability_zones.zones(r)
        for doc in out:
            hints = doc.setdefault("availability_zone_hints", [])
            # Every host serves every network (the controller answers DHCP and
            # metadata on each): a network is in every zone, or in its hinted ones.
            doc["availability_zones"] = sorted(set(hints) & zones if hints else zones)
        return out

    @staticmethod
    def _floating_ips(txn, doc) -> list:
        if not doc.get("router:external"):
            return []
        return [f for f in txn.list("floatingips") if f.get("floating_network_id") == doc["id"]]

    def delete(self, txn, ctx, doc):
        net_id = doc["id"]
        ports = txn.list("ports", parent_id=net_id)
        if any(p.get("device_owner") != dhcp.DEVICE_OWNER for p in ports) or \
                self._floating_ips(txn, doc):
            raise InUse(f"Unable to complete operation on network {net_id}. There are one "
                        "or more ports still in use on the network.", "NetworkInUse")
        for port in ports:
            txn.release_owner(f"port:{port['id']}")
            txn.delete("ports", port["id"])
        for subnet in txn.list("subnets", parent_id=net_id):
            txn.release_owner(f"subnet:{subnet['id']}")
            txn.delete("subnets", subnet["id"])
        super().delete(txn, ctx, doc)
