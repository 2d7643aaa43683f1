"""Hosts (vmflow's own): a compute host's switch and its uplinks.

Each host holds two MACs the API allocates: `dvr_mac`, its source on tenant
networks for routed frames, and `external_mac`, its source on every external
network (floating IP ARP answers, NATed frames), one per host like Neutron's
fip gateway port. The two ranges may share a base, so neither is ever handed
out while the other namespace holds it. `is_gateway` and `admin_state_up`
decide which hosts carry routers' centralized SNAT (topology/placement.py).
"""
from __future__ import annotations

from topology import ipam
from topology import validation as v
from topology.api import availability_zones
from topology.api.kinds.base import Kind
from topology.store.base import Conflict

DVR_MAC, EXTERNAL_MAC = "dvr-mac", "external-mac"


def _owner(doc) -> str:
    return f"host:{doc['id']}"


def _allocate_mac(txn, base: str, namespace: str, other: str, owner: str) -> str:
    for _ in range(ipam.MAC_ATTEMPTS):
        mac = ipam.random_mac(base)
        if txn.claim_owner(other, mac) is not None:
            continue
        try:
            txn.claim(namespace, mac, owner)
            return mac
        except Conflict:
            continue
    raise Conflict(namespace, "*", "nobody")


class Hosts(Kind):
    collection = "hosts"
    member = "host"
    has_project = False
    attrs = {
        "name": v.Attr(v.hostname, v.REQUIRED),
        "description": v.Attr(v.string(255), ""),
        "datapath_id": v.Attr(v.datapath_id, v.REQUIRED),
        "physical_networks": v.Attr(v.physnet_map, dict),
        "dvr_mac": v.Attr(v.nullable(v.mac_address), None, put=False),
        "is_gateway": v.Attr(v.boolean, False),
        "admin_state_up": v.Attr(v.boolean, True),
        "external_mac": v.Attr(v.mac_address, None, post=False, put=False),
        # Pins the host's switch certificate (OpenFlow over TLS): a connection
        # for this datapath id with any other certificate is refused.
        "switch_cert_sha256": v.Attr(v.nullable(v.sha256_fingerprint), None),
        "availability_zone": v.Attr(availability_zones.name, availability_zones.DEFAULT),
        "project_id": v.Attr(v.string(255), None, put=False),
        "tenant_id": v.Attr(v.string(255), None, put=False),
    }

    def create(self, txn, ctx, values):
        doc = self.new_doc(ctx, values)
        owner = _owner(doc)
        txn.claim("host-name", doc["name"], owner)
        txn.claim("dpid", doc["datapath_id"], owner)
        if doc["dvr_mac"] is None:
            doc["dvr_mac"] = _allocate_mac(txn, self.settings.dvr_base_mac, DVR_MAC,
                                           EXTERNAL_MAC, owner)
        else:
            if txn.claim_owner(EXTERNAL_MAC, doc["dvr_mac"]) is not None:
                raise v.Invalid("dvr_mac", f"{doc['dvr_mac']} is a host's external_mac")
            txn.claim(DVR_MAC, doc["dvr_mac"], owner)
        self._give_external_mac(txn, doc)
        self.save(txn, doc)
        return doc

    def _give_external_mac(self, txn, doc) -> None:
        doc["external_mac"] = _allocate_mac(txn, self.settings.external_base_mac, EXTERNAL_MAC,
                                            DVR_MAC, _owner(doc))

    def update(self, txn, ctx, doc, changes):
        owner = _owner(doc)
        for field, namespace in (("name", "host-name"), ("datapath_id", "dpid")):
            if field in changes and changes[field] != doc[field]:
                txn.claim(namespace, changes[field], owner)
                txn.release(namespace, doc[field])
        if not doc.get("external_mac"):
            # a host registered before external networks existed gets one now
            self._give_external_mac(txn, doc)
        return super().update(txn, ctx, doc, changes)

    def present(self, r, docs):
        out = super().present(r, docs)
        for doc in out:
            doc.setdefault("availability_zone", availability_zones.DEFAULT)
            doc.setdefault("admin_state_up", True)
            doc.setdefault("external_mac", None)
        return out
