"""Hosts (vmflow's own): a compute host's switch and its uplinks."""
from __future__ import annotations

from topology import ipam
from topology import validation as v
from topology.api import availability_zones
from topology.api.kinds.base import Kind


def _owner(doc) -> str:
    return f"host:{doc['id']}"


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
            doc["dvr_mac"] = ipam.allocate_mac(txn, self.settings.dvr_base_mac, "dvr-mac", owner)
        else:
            txn.claim("dvr-mac", doc["dvr_mac"], owner)
        self.save(txn, doc)
        return doc

    def update(self, txn, ctx, doc, changes):
        owner = _owner(doc)
        for field, namespace in (("name", "host-name"), ("datapath_id", "dpid")):
            if field in changes and changes[field] != doc[field]:
                txn.claim(namespace, changes[field], owner)
                txn.release(namespace, doc[field])
        return super().update(txn, ctx, doc, changes)

    def present(self, r, docs):
        out = super().present(r, docs)
        for doc in out:
            doc.setdefault("availability_zone", availability_zones.DEFAULT)
        return out
