"""Address groups: named sets of CIDRs a security group rule can name as its remote.

As Neutron's address-group extension: addresses are given on create and then
changed only through PUT .../add_addresses and .../remove_addresses, each
address stored as its network ("10.0.0.5/24" -> "10.0.0.0/24"). A group that a
rule names cannot be deleted. Each group holds a small `_key` from the store
for its life, from which the controller derives its flows' identifiers.
"""
from __future__ import annotations

import ipaddress

import falcon

from topology import validation as v
from topology.api.collection import read_body, respond
from topology.api.errors import BadRequest, InUse, NotFound
from topology.api.kinds.base import Kind, common_attrs
from topology.store.base import Store

KEY_NAMESPACE, KEY_MAX = "address-group-key", 0xFFFFFF
MAX_ADDRESSES = 16384


def _address(field, value):
    if isinstance(value, str) and "/" in value:
        try:
            return str(ipaddress.ip_interface(value.strip()).network)
        except ValueError:
            pass
    raise v.Invalid(field, f"'{value}' is not a valid IP subnet (an address with /prefix)")


def _sort_key(cidr: str):
    net = ipaddress.ip_network(cidr)
    return net.version, net.network_address, net.prefixlen


def addresses(field, value):
    """A list of CIDRs, normalised to networks, duplicates dropped (as Neutron does)."""
    if value is None:
        return []
    items = v.list_of(_address, max_items=MAX_ADDRESSES)(field, value)
    return sorted(set(items), key=_sort_key)


class AddressGroups(Kind):
    collection = "address_groups"
    member = "address_group"
    attrs = {**common_attrs(), "addresses": v.Attr(addresses, list, put=False)}

    def create(self, txn, ctx, values):
        doc = self.new_doc(ctx, values)
        self.give_key(txn, doc, KEY_NAMESPACE, KEY_MAX)
        self.save(txn, doc)
        return doc

    def update(self, txn, ctx, doc, changes):
        self.check_owner(ctx, doc, "update")
        return super().update(txn, ctx, doc, changes)

    def change_addresses(self, txn, ctx, doc, requested: list[str], add: bool):
        self.check_owner(ctx, doc, "update")
        current = set(doc["addresses"])
        if add:
            present = [a for a in requested if a in current]
            if present:
                raise BadRequest(f"Addresses {present} already exist in the address group "
                                 f"{doc['id']}.", "AddressesAlreadyExist")
            current.update(requested)
        else:
            missing = [a for a in requested if a not in current]
            if missing:
                raise NotFound(f"Addresses {missing} not found in the address group "
                               f"{doc['id']}.", "AddressesNotFound")
            current.difference_update(requested)
        if len(current) > MAX_ADDRESSES:
            raise v.Invalid("addresses", f"an address group holds at most {MAX_ADDRESSES}")
        doc["addresses"] = sorted(current, key=_sort_key)
        self.touch(doc)
        self.save(txn, doc)
        return doc

    def delete(self, txn, ctx, doc):
        self.check_owner(ctx, doc, "delete")
        if any(r.get("remote_address_group_id") == doc["id"]
               for r in txn.list("security_group_rules")):
            raise InUse(f"Address group {doc['id']} is in use on one or more security "
                        "group rules.", "AddressGroupInUse")
        super().delete(txn, ctx, doc)


class AddressGroupActions:
    """PUT /v2.0/address-groups/{id}/add_addresses and .../remove_addresses."""

    def __init__(self, kind: AddressGroups, store: Store):
        self.kind = kind
        self.store = store

    def _change(self, req, resp, id, add: bool):
        ctx = req.context.auth
        body = read_body(req)
        if not isinstance(body, dict) or set(body) != {"addresses"}:
            raise BadRequest("Unable to find 'addresses' in request body")
        requested = addresses("addresses", body["addresses"])

        def change(txn):
            doc = self.kind.load(txn, ctx, id)
            doc = self.kind.change_addresses(txn, ctx, doc, requested, add)
            return self.kind.present(txn, [doc])
        shown = self.store.run(change)
        respond(resp, falcon.HTTP_200, {self.kind.member: shown[0]})

    def on_put_add(self, req, resp, id):
        self._change(req, resp, id, add=True)

    def on_put_remove(self, req, resp, id):
        self._change(req, resp, id, add=False)
