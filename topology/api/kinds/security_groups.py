"""Security groups and their rules, with Neutron's per-project default group."""
from __future__ import annotations

import uuid

import netaddr

from topology import validation as v
from topology.api.errors import BadRequest, InUse, not_found
from topology.api.kinds.base import Kind, common_attrs, now
from topology.store.base import Document, Txn

DEFAULT_NAMESPACE = "default-sg"
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132, "dccp": 33, "udplite": 136,
             "gre": 47, "esp": 50, "ah": 51, "ipip": 4, "icmpv6": 58, "ipv6-icmp": 58}
PORTED = {"tcp", "udp", "sctp", "dccp", "udplite", "6", "17", "132", "33", "136"}
ICMP = {"icmp", "icmpv6", "ipv6-icmp", "1", "58"}


def _protocol(field, value):
    if value is None or value == "any":
        return None
    if isinstance(value, bool):
        raise v.Invalid(field, f"'{value}' is not a protocol")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        if not 0 <= number <= 255:
            raise v.Invalid(field, f"'{value}' is not in range 0 through 255")
        return str(number)
    if isinstance(value, str) and value.lower() in PROTOCOLS:
        return value.lower()
    raise v.Invalid(field, f"'{value}' is not a supported protocol "
                           f"(a name of {sorted(PROTOCOLS)} or 0-255)")


def _prefix(field, value):
    if value is None:
        return None
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise v.Invalid(field, f"'{value}' is not a valid CIDR") from None
    return str(net.cidr)


def rule_doc(group: Document, direction: str, ethertype: str, remote_group_id=None,
             project_id=None) -> Document:
    stamp = now()
    project = project_id or group["project_id"]
    return {"id": str(uuid.uuid4()), "security_group_id": group["id"], "direction": direction,
            "ethertype": ethertype, "protocol": None, "port_range_min": None,
            "port_range_max": None, "remote_ip_prefix": None,
            "remote_group_id": remote_group_id, "remote_address_group_id": None,
            "normalized_cidr": None, "description": "", "project_id": project,
            "tenant_id": project, "created_at": stamp, "updated_at": stamp,
            "revision_number": 0}


def _signature(rule: Document) -> str:
    return "|".join(str(rule[k]) for k in (
        "direction", "ethertype", "protocol", "port_range_min", "port_range_max",
        "remote_ip_prefix", "remote_group_id"))


def save_rule(txn: Txn, rule: Document) -> None:
    # One claim per distinct rule in a group makes a duplicate a Conflict
    # without reading the group's other rules.
    owner = f"security_group_rule:{rule['id']}"
    ns = f"sg-rule:{rule['security_group_id']}"
    existing = txn.claim_owner(ns, _signature(rule))
    if existing is not None and existing != owner:
        raise InUse(f"Security group rule already exists. Rule id is "
                    f"{existing.partition(':')[2]}.", "SecurityGroupRuleExists")
    txn.claim(ns, _signature(rule), owner)
    txn.put("security_group_rules", rule["id"], rule, project_id=rule["project_id"],
            parent_id=rule["security_group_id"])


def new_group(txn: Txn, project_id: str, name: str, description: str,
              stateful: bool = True) -> Document:
    """A group with Neutron's egress-anything rules, which every new group gets."""
    stamp = now()
    group = {"id": str(uuid.uuid4()), "name": name, "description": description,
             "project_id": project_id, "tenant_id": project_id, "stateful": stateful,
             "created_at": stamp, "updated_at": stamp, "revision_number": 0}
    txn.put("security_groups", group["id"], group, project_id=project_id)
    for ethertype in ("IPv4", "IPv6"):
        save_rule(txn, rule_doc(group, "egress", ethertype))
    return group


def ensure_default(txn: Txn, project_id: str) -> str:
    """The id of the project's default group, created on first use."""
    owner = txn.claim_owner(DEFAULT_NAMESPACE, project_id)
    if owner is not None:
        return owner.partition(":")[2]
    group = new_group(txn, project_id, "default", "Default security group")
    for ethertype in ("IPv4", "IPv6"):
        save_rule(txn, rule_doc(group, "ingress", ethertype, remote_group_id=group["id"]))
    txn.claim(DEFAULT_NAMESPACE, project_id, f"security_group:{group['id']}")
    return group["id"]


class SecurityGroups(Kind):
    collection = "security_groups"
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
        if changes.get("name", "default") != "default" and \
                txn.claim_owner(DEFAULT_NAMESPACE, doc["project_id"]) == f"security_group:{doc['id']}":
            raise BadRequest("Updating default security group not allowed.")
        return super().update(txn, ctx, doc, changes)

    def delete(self, txn, ctx, doc):
        self.check_owner(ctx, doc, "delete")
        gid = doc["id"]
        if txn.claim_owner(DEFAULT_NAMESPACE, doc["project_id"]) == f"security_group:{gid}" \
                and not ctx.is_admin:
            raise InUse("Removing default security group not allowed.",
                        "SecurityGroupCannotRemoveDefault")
        if any(gid in p.get("security_groups", ()) for p in txn.list("ports")):
            raise InUse(f"Security Group {gid} in use.", "SecurityGroupInUse")
        for rule in txn.list("security_group_rules"):
            if rule["security_group_id"] == gid or rule.get("remote_group_id") == gid:
                txn.release_owner(f"security_group_rule:{rule['id']}")
                txn.delete("security_group_rules", rule["id"])
        super().delete(txn, ctx, doc)

    def present(self, r, docs):
        by_group: dict[str, list] = {}
        if len(docs) == 1:
            rules = r.list("security_group_rules", parent_id=docs[0]["id"])
        else:
            rules = r.list("security_group_rules")
        for rule in rules:
            by_group.setdefault(rule["security_group_id"], []).append(rule)
        out = super().present(r, docs)
        for doc in out:
            doc["security_group_rules"] = by_group.get(doc["id"], [])
        return out


class SecurityGroupRules(Kind):
    collection = "security_group_rules"
    member = "security_group_rule"
    parent_field = "security_group_id"
    attrs = {
        "description": v.Attr(v.string(255), ""),
        "project_id": v.Attr(v.string(255, empty_ok=False), None, put=False),
        "tenant_id": v.Attr(v.string(255, empty_ok=False), None, put=False),
        "security_group_id": v.Attr(v.uuid_str, v.REQUIRED, put=False),
        "direction": v.Attr(v.one_of("ingress", "egress"), v.REQUIRED, put=False),
        "ethertype": v.Attr(v.one_of("IPv4", "IPv6"), "IPv4", put=False),
        "protocol": v.Attr(_protocol, None, put=False),
        "port_range_min": v.Attr(v.integer(0, 65535, nullable=True), None, put=False),
        "port_range_max": v.Attr(v.integer(0, 65535, nullable=True), None, put=False),
        "remote_ip_prefix": v.Attr(_prefix, None, put=False),
        "remote_group_id": v.Attr(v.nullable(v.uuid_str), None, put=False),
    }

    def create(self, txn, ctx, values):
        group = txn.get("security_groups", values["security_group_id"])
        if group is None or not ctx.can_see(group):
            raise not_found("security_group", values["security_group_id"])
        self.check_owner(ctx, group, "create_rule_in")
        self._check(txn, ctx, values)
        project = self.resolve_project(ctx, values)
        rule = rule_doc(group, values["direction"], values["ethertype"],
                        values["remote_group_id"], project)
        rule.update(values)
        if rule["remote_ip_prefix"]:
            rule["normalized_cidr"] = rule["remote_ip_prefix"]
        save_rule(txn, rule)
        return rule

    @staticmethod
    def _check(txn, ctx, val):
        prefix, remote = val["remote_ip_prefix"], val["remote_group_id"]
        if prefix and remote:
            raise BadRequest("Only remote_ip_prefix or remote_group_id may be provided.")
        if prefix and netaddr.IPNetwork(prefix).version != (4 if val["ethertype"] == "IPv4" else 6):
            raise v.Invalid("remote_ip_prefix", f"{prefix} does not match ethertype {val['ethertype']}")
        if remote:
            group = txn.get("security_groups", remote)
            if group is None or not ctx.can_see(group):
                raise not_found("security_group", remote)
        low, high, proto = val["port_range_min"], val["port_range_max"], val["protocol"]
        if low is None and high is None:
            return
        if proto in ICMP:
            v.check(low is None or low <= 255, "port_range_min", f"ICMP type {low} is not 0-255")
            v.check(high is None or high <= 255, "port_range_max", f"ICMP code {high} is not 0-255")
            v.check(not (low is None and high is not None), "port_range_min",
                    "an ICMP code needs an ICMP type")
            return
        if proto not in PORTED:
            raise v.Invalid("protocol", "must be tcp, udp, sctp, dccp or udplite when a port range is given")
        v.check(low is not None and high is not None and 1 <= low <= high, "port_range_min",
                "port_range_min must be 1 or more and not above port_range_max")

    def update(self, txn, ctx, doc, changes):
        self.check_owner(ctx, doc, "update")
        return super().update(txn, ctx, doc, changes)

    def delete(self, txn, ctx, doc):
        self.check_owner(ctx, doc, "delete")
        super().delete(txn, ctx, doc)
