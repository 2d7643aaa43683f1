"""Instances (vmflow's own): what a VM reads from the metadata service.

The id is the device_id of the VM's ports; Nova-like callers give their own.
"""
from __future__ import annotations

import uuid

from topology import validation as v
from topology.api.errors import InUse
from topology.api.kinds.base import Kind, common_attrs

USER_DATA_MAX = 65535  # Nova's limit on decoded user data


class Instances(Kind):
    collection = "instances"
    member = "instance"
    attrs = {
        **{k: a for k, a in common_attrs().items() if k != "name"},
        "id": v.Attr(v.uuid_str, None, put=False),
        "hostname": v.Attr(v.hostname, None),
        "user_data": v.Attr(v.base64_text(USER_DATA_MAX), None),
        "meta": v.Attr(v.str_map(255, 255, 128), dict),
        "public_keys": v.Attr(v.str_map(255, 16384, 32), dict),
        "availability_zone": v.Attr(v.string(255), "nova"),
    }

    def create(self, txn, ctx, values):
        id = values.pop("id") or str(uuid.uuid4())
        if txn.get("instances", id) is not None:
            raise InUse(f"Instance {id} already exists.", "InstanceExists")
        doc = self.new_doc(ctx, values, id=id)
        if doc["hostname"] is None:
            doc["hostname"] = f"instance-{id[:8]}"
        self.save(txn, doc)
        return doc

    def update(self, txn, ctx, doc, changes):
        if changes.get("hostname", "") is None:
            changes["hostname"] = f"instance-{doc['id'][:8]}"
        return super().update(txn, ctx, doc, changes)
