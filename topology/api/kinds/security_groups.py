"""Security groups and their rules, with Neutron's per-project default group.

A rule's fields are checked and normalised by topology/secgroup_rules.py (the
model the firewall reads too); this module stores them. Each group and rule
gets a small `_key` from the store when it is created, kept for its life and
freed on delete: the controller derives conntrack zones and conjunction ids
from those keys, so they must never change while the resource exists.
"""
from __future__ import annotations

import uuid
from typing import Any

from topology import secgroup_rules as rules
from topology import validation as v
from topology.api import policy
from topology.api.errors import BadRequest, InUse, not_found
from topology.api.kinds.base import UNSET, Kind, common_attrs, now, public
from topology.store.base import Document, Txn

DEFAULT_NAMESPACE = "default-sg"
# Keys fit 24 bits, leaving a cookie's and a conjunction id's upper bits to the
# controller.
GROUP_KEY_NAMESPACE, GROUP_KEY_MAX = "security-group-key", 0xFFFFFF
RULE_KEY_NAMESPACE, RULE_KEY_MAX = "security-group-rule-key", 0xFFFFFF


def group_owner(group_id: str) -> str:
    return f"security_group:{group_id}"


def rule_owner(rule_id: str) -> str:
    return f"security_group_rule:{rule_id}"


def is_default(r, group: Document) -> bool:
    return r.claim_owner(DEFAULT_NAMESPACE, group["project_id"]) == group_owner(group["id"])


def rule_doc(group: Document, fields: dict[str, Any], project_id: str,
             default_group: bool) -> Document:
    stamp = now()
    doc = {"id": str(uuid.uuid4()), "security_group_id": group["id"], "description": "",
           "project_id": project_id, "tenant_id": project_id,
           "belongs_to_default_sg": default_group,
           "created_at": stamp, "updated_at": stamp, "revision_number": 0}
    doc.update(fields)
    return doc


def save_rule(txn: Txn, rule: Document) -> None:
    # One claim per distinct rule in a group makes a duplicate a Conflict
    # without reading the group's other rules.
    owner = rule_owner(rule["id"])
    ns = f"sg-rule:{rule['security_group_id']}"
    key = rules.signature(rule)
    existing = txn.claim_owner(ns, key)
    if existing is not None and existing != owner:
        raise InUse(f"Security group rule already exists. Rule id is "
                    f"{existing.partition(':')[2]}.", "SecurityGroupRuleExists")
    txn.claim(ns, key, owner)
    rule["_key"] = txn.allocate_key(RULE_KEY_NAMESPACE, owner, low=1, high=RULE_KEY_MAX)
    txn.put("security_group_rules", rule["id"], rule, project_id=rule["project_id"],
            parent_id=rule["security_group_id"])


def delete_rule(txn: Txn, rule: Document) -> None:
    txn.release_owner(rule_owner(rule["id"]))
    txn.delete("security_group_rules", rule["id"])


def new_group(txn: Txn, project_id: str, name: str, description: str,
              stateful: bool = True, default_group: bool = False) -> Document:
    """A group with Neutron's egress-anything rules, which every new group gets."""
    stamp = now()
    group = {"id": str(uuid.uuid4()), "name": name, "description": description,
             "project_id": project_id, "tenant_id": project_id, "stateful": stateful,
             "created_at": stamp, "updated_at": stamp, "revision_number": 0}
    group["_key"] = txn.allocate_key(GROUP_KEY_NAMESPACE, group_owner(group["id"]),
                                     low=1, high=GROUP_KEY_MAX)
    txn.put("security_groups", group["id"], group, project_id=project_id)
    for ethertype in ("IPv4", "IPv6"):
        fields = rules.normalise({"direction": "egress", "ethertype": ethertype})
        save_rule(txn, rule_doc(group, fields, project_id, default_group))
    return group


def ensure_default(txn: Txn, project_id: str) -> str:
    """The id of the project's default group, created on first use.

    Neutron's default group: egress to anywhere, and ingress from the group's
    own members, each for IPv4 and for IPv6.
    """
    owner = txn.claim_owner(DEFAULT_NAMESPACE, project_id)
    if owner is not None:
        return owner.partition(":")[2]
    group = new_group(txn, project_id, "default", "Default security group", default_group=True)
    for ethertype in ("IPv4", "IPv6"):
        fields = rules.normalise({"direction": "ingress", "ethertype": ethertype,
                                  "remote_group_id": group["id"]})
        save_rule(txn, rule_doc(group, fields, project_id, True))
    txn.claim(DEFAULT_NAMESPACE, project_id, group_owner(group["id"]))
    return group["id"]


def check_port_groups(txn, ctx, group_ids: list[str]) -> None:
    """The groups a port lists exist, and are all stateful or all stateless (Neutron)."""
    kinds = set()
    for gid in group_ids:
        group = txn.get("security_groups", gid)
        if group is None or not ctx.can_see(group):
            raise not_found("security_group", gid)
        kinds.add(group.get("stateful", True))
    if len(kinds) > 1:
        raise InUse("Cannot apply both stateful and stateless security groups on the same "
                    "port at the same time.", "SecurityGroupConflict")


def _ports_using(txn, gid: str) -> bool:
    return any(gid in p.get("security_groups", ()) for p in txn.list("ports"))


class SecurityGroups(Kind):
    collection = "security_groups"
    # shown (and filterable) beyond the attributes a client sets
    shown = frozenset({"security_group_rules"})
    member = "security_group"
    attrs = {**common_attrs(), "stateful": v.Attr(v.boolean, True)}

    def create(self, txn, ctx, values):
        project = self.resolve_project(ctx, values)
        if values["name"] == "default":
            raise InUse("Default security group already exists.", "SecurityGroupDefaultAlreadyExists")
        ensure_default(txn, project)
        return new_group(txn, project, values["name"], values["description"], values["stateful"])

    def update(self, txn, ctx, doc, changes):
        self.check_owner(ctx, doc, "update")
        if changes.get("name", "default") != "default" and is_default(txn, doc):
            raise BadRequest("Updating default security group not allowed.",
                             "SecurityGroupCannotUpdateDefault")
        if "stateful" in changes and changes["stateful"] != doc.get("stateful", True) \
                and _ports_using(txn, doc["id"]):
            raise InUse(f"Security Group {doc['id']} in use: stateful cannot change while "
                        "ports use the group.", "SecurityGroupInUse")
        return super().update(txn, ctx, doc, changes)

    def delete(self, txn, ctx, doc):
        self.check_owner(ctx, doc, "delete")
        gid = doc["id"]
        if is_default(txn, doc) and not policy.check(ctx, "delete_default_security_group", doc):
            raise InUse("Removing default security group not allowed.",
                        "SecurityGroupCannotRemoveDefault")
        if _ports_using(txn, gid):
            raise InUse(f"Security Group {gid} in use.", "SecurityGroupInUse")
        # Neutron cascades: rules elsewhere that name this group as remote go too.
        for rule in txn.list("security_group_rules"):
            if rule["security_group_id"] == gid or rule.get("remote_group_id") == gid:
                delete_rule(txn, rule)
        super().delete(txn, ctx, doc)

    def present(self, r, docs):
        by_group: dict[str, list] = {}
        if len(docs) == 1:
            group_rules = r.list("security_group_rules", parent_id=docs[0]["id"])
        else:
            group_rules = r.list("security_group_rules")
        for rule in group_rules:
            by_group.setdefault(rule["security_group_id"], []).append(public(rule))
        out = super().present(r, docs)
        for doc in out:
            doc["security_group_rules"] = by_group.get(doc["id"], [])
        return out


def _compact_text(field, value):
    text = v.string(rules.MAX_COMPACT_TEXT, empty_ok=False)(field, value)
    rules.parse_compact(field, text)
    return text


def _rule_attr(convert) -> v.Attr:
    # UNSET tells a field the client left out from one it gave: the compact
    # form may state it instead, and must agree where both do.
    return v.Attr(convert, UNSET, put=False)


class SecurityGroupRules(Kind):
    collection = "security_group_rules"
    # shown (and filterable) beyond the attributes a client sets
    shown = frozenset({"normalized_cidr", "belongs_to_default_sg"})
    member = "security_group_rule"
    parent_field = "security_group_id"
    attrs = {
        "description": v.Attr(v.string(255), ""),
        "project_id": v.Attr(v.string(255, empty_ok=False), None, put=False),
        "tenant_id": v.Attr(v.string(255, empty_ok=False), None, put=False),
        "security_group_id": v.Attr(v.uuid_str, v.REQUIRED, put=False),
        "direction": _rule_attr(rules.direction),
        "ethertype": _rule_attr(rules.ethertype),
        "protocol": _rule_attr(rules.protocol),
        "port_range_min": _rule_attr(rules.port_bound),
        "port_range_max": _rule_attr(rules.port_bound),
        "ports": _rule_attr(rules.ports),
        "remote_ip_prefix": _rule_attr(rules.remote_ip_prefix),
        "remote_group_id": _rule_attr(rules.optional_uuid),
        "remote_address_group_id": _rule_attr(rules.optional_uuid),
        "action": _rule_attr(rules.action),
        "priority": _rule_attr(rules.priority),
        "rule": _rule_attr(_compact_text),
    }

    def create(self, txn, ctx, values):
        group = txn.get("security_groups", values["security_group_id"])
        if group is None or not ctx.can_see(group):
            raise not_found("security_group", values["security_group_id"])
        self.check_owner(ctx, group, "create_rule_in")
        fields = rules.normalise({k: values[k] for k in rules.FIELDS if values[k] is not UNSET})
        self._check_remotes(txn, ctx, fields)
        project = self.resolve_project(ctx, values)
        rule = rule_doc(group, fields, project, is_default(txn, group))
        rule["description"] = values["description"]
        save_rule(txn, rule)
        return rule

    @staticmethod
    def _check_remotes(txn, ctx, fields):
        remote = fields["remote_group_id"]
        if remote:
            group = txn.get("security_groups", remote)
            if group is None or not ctx.can_see(group):
                raise not_found("security_group", remote)
        remote = fields["remote_address_group_id"]
        if remote:
            found = txn.get("address_groups", remote)
            if found is None or not ctx.can_see(found):
                raise not_found("address_group", remote)

    def update(self, txn, ctx, doc, changes):
        self.check_owner(ctx, doc, "update")
        return super().update(txn, ctx, doc, changes)

    def delete(self, txn, ctx, doc):
        self.check_owner(ctx, doc, "delete")
        delete_rule(txn, doc)
