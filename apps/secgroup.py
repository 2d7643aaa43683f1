"""The stateful per-vNIC firewall: security groups in flows, as OneCloud's
agent and Neutron's OVS firewall do it.

Every local port with port security on gets its own conntrack zone, the
port's key (1-65535, allocated once by the store, so a restart changes
nothing). Egress rules run in the sender's zone on the sender's host, in
egress_firewall/egress_rules; ingress rules in the receiver's zone on the
receiver's host, in ingress_firewall/ingress_rules (controller/pipeline.py
documents each flow by priority). For a connection:

    +inv               dropped
    +rel               passes
    +est               passes while the rule that admitted it (its key is the
                       connection's ct_mark) still applies to the port; a rule
                       removed, or the port leaving the group, cuts it at once.
                       ct_mark was chosen over flushing zones: OpenFlow cannot
                       flush conntrack entries one by one, and a mark keeps the
                       verdict in the flow table the reconciler already diffs
    +new               the port's rules by priority (1 first; deny wins a tie);
                       an allow commits with ct_mark = rule key; nothing
                       matching means dropped

A port with port security on and no groups sends and receives no IPv4, as in
Neutron; a port with port security off has no firewall. Groups marked
`stateful: false` match every packet against their rules without ct().
vmflow's own services (ARP, DHCP, metadata) are answered in `services`,
before the firewall, and anti-spoofing is port_security's: no user rule can
block either.

Flow economy: a rule over a remote group or address group is a conjunctive
match. Clause 1 is the port side (port key, protocol, one flow per masked
port range); clause 2 the remote set's addresses, kept in a scope of their
own ("remote_set"), so a member joining a group changes only those address
flows on the hosts that refer to the group, and N rules over M members cost
about N + M flows, not N x M. Clause flows of different rules that match the
same thing are one flow with several conjunction actions (the compiler's
memo merges them across scopes too, controller/compiler.py).

Limits: a zone per port key, so at most 65,535 firewalled ports in the whole
cloud (the store refuses the 65,536th port with 409). IPv4 rules only: IPv6
rules are stored and shown but have no flows yet. Port lists match for
tcp, udp and sctp; other protocols match on the protocol alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from controller import scopes
from controller.app import App, SwitchView
from controller.fields import port_masks
from controller.flow import Flow, apply, conjunction, ct, ct_state, flow, goto, set_field
from controller.locality import is_local
from controller.pipeline import REG_IN_PORT_KEY, REG_OUT_PORT_KEY
from topology.secgroup_rules import Rule
from topology.store.base import Document
from topology.view import TopologyView, remote_refs

ETH_IP = 0x0800
PRIO_CT = 100
PRIO_STATE = 65000       # +inv drop, +rel pass
PRIO_ESTABLISHED = 60000
PRIO_RULE_BASE = 1000
# Conjunction ids: a rule's is its key (< 2**24); a group's established
# check is this bit plus the group's key.
ESTABLISHED_CONJ = 1 << 24

# Match fields of a protocol's destination port (OpenFlow 1.3 has no others).
PORT_FIELDS = {6: "tcp_dst", 17: "udp_dst", 132: "sctp_dst"}

CT_INV = ct_state("+trk+inv")
CT_REL = ct_state("+trk+rel-inv")
CT_EST = ct_state("+trk+est-rel-inv")
CT_NEW = ct_state("+trk+new-est-rel-inv")


@dataclass(frozen=True)
class Side:
    """One direction of the firewall, as the pipeline lays it out."""
    ct_table: str
    rules_table: str
    next: str
    port_reg: str        # the register holding the firewalled port's key
    remote_field: str    # where the other end's address is


SIDES = {
    "egress": Side("egress_firewall", "egress_rules", "routing", REG_IN_PORT_KEY, "ipv4_dst"),
    "ingress": Side("ingress_firewall", "ingress_rules", "pre_output", REG_OUT_PORT_KEY,
                    "ipv4_src"),
}


def rule_priority(rule: Rule) -> int:
    """OpenFlow priority of a rule: smaller rule priority first, deny wins a tie."""
    return PRIO_RULE_BASE + 2 * (100 - rule.priority) + (1 if rule.action == "deny" else 0)


def firewalled(port: Document) -> bool:
    return port.get("port_security_enabled", True) is not False


def stateful(view: TopologyView, port: Document) -> bool:
    """The API refuses a port mixing stateful and stateless groups."""
    groups = [view.docs.get("security_groups", {}).get(g) for g in port.get("security_groups") or ()]
    return not any(g is not None and g.get("stateful") is False for g in groups)


def remote_addresses(view: TopologyView, ref: str) -> list[str]:
    """The IPv4 addresses and CIDRs of a remote set ("sg:ID" or "ag:ID")."""
    kind, _, rid = ref.partition(":")
    out: set[str] = set()
    if kind == "sg":
        for p in view.ports_by_group.get(rid, {}).values():
            out.update(port_addresses(p))
    else:
        doc = view.docs.get("address_groups", {}).get(rid)
        for a in (doc or {}).get("addresses") or ():
            if ":" not in a:
                out.add(a)
    return sorted(out)


def rule_matches(rule: Rule, side: Side) -> list[dict]:
    """The rule's own match, port independent: one per masked port range."""
    base: dict = {"eth_type": ETH_IP}
    if rule.protocol is not None:
        base["ip_proto"] = rule.protocol
        if rule.icmp_type is not None and rule.protocol == 1:
            base["icmpv4_type"] = rule.icmp_type
            if rule.icmp_code is not None:
                base["icmpv4_code"] = rule.icmp_code
    if rule.remote_prefix and rule.remote_prefix != "0.0.0.0/0":
        base[side.remote_field] = rule.remote_prefix
    field = PORT_FIELDS.get(rule.protocol)
    if field and rule.port_ranges:
        return [{**base, field: m} for lo, hi in rule.port_ranges for m in port_masks(lo, hi)]
    return [base]


_RULES: dict[str, tuple[Document, Rule]] = {}


def rule_of(doc: Document) -> Rule:
    """The parsed rule of a stored one, parsed once per version of it: every
    member port's flows read the same rules."""
    got = _RULES.get(doc["id"])
    if got is not None and got[0] is doc:
        return got[1]
    if len(_RULES) > 200_000:
        _RULES.clear()     # bounded: versions of deleted rules go with it
    rule = Rule.from_doc(doc)
    _RULES[doc["id"]] = (doc, rule)
    return rule


def group_rules(view: TopologyView, gid: str) -> list[Rule]:
    """A group's IPv4 rules that have keys, in key order."""
    return sorted((rule_of(d) for d in view.rules_by_group.get(gid, {}).values()
                   if d.get("ethertype", "IPv4") == "IPv4" and d.get("_key")),
                  key=lambda r: r.key)


def port_groups(view: TopologyView, port: Document) -> list[tuple[int, list[Rule]]]:
    """(group key, its rules) for each of the port's groups that has a key."""
    out = []
    for gid in port.get("security_groups") or ():
        group = view.docs.get("security_groups", {}).get(gid)
        if group is not None and group.get("_key"):
            out.append((group["_key"], group_rules(view, gid)))
    return out


def port_addresses(port: Document) -> list[str]:
    """A port's IPv4 addresses as a remote group member: fixed IPs and the
    allowed address pairs' addresses or CIDRs, as Neutron counts them."""
    out = {f.get("ip_address", "") for f in port.get("fixed_ips") or ()}
    out |= {p.get("ip_address", "") for p in port.get("allowed_address_pairs") or ()}
    return sorted(a for a in out if a and ":" not in a)


def _ref(rule: Rule) -> Optional[str]:
    if rule.remote_group_id:
        return "sg:" + rule.remote_group_id
    if rule.remote_address_group_id:
        return "ag:" + rule.remote_address_group_id
    return None


class _Merged:
    """Flows of one scope keyed by identity, conjunction actions of clause
    flows that match the same thing merged into one flow."""

    def __init__(self) -> None:
        self.flows: dict[tuple, Flow] = {}
        self.conj: dict[tuple, tuple[Flow, set]] = {}

    def add(self, f: Flow) -> None:
        self.flows.setdefault(f.key, f)

    def add_conj(self, f: Flow, action: tuple) -> None:
        got = self.conj.get(f.key)
        if got is None:
            self.conj[f.key] = (f, {action})
        else:
            got[1].add(action)

    def all(self) -> list[Flow]:
        out = list(self.flows.values())
        for f, actions in self.conj.values():
            out.append(Flow(f.table, f.priority, f.match, (apply(*sorted(actions)),), f.cookie))
        return out


class SecGroupApp(App):
    name = "secgroup"

    def __init__(self, conf=None):
        self.conf = conf

    # -- per switch: the connection-state verdicts ---------------------------
    def switch_flows(self, view: TopologyView, sw: SwitchView) -> Iterable[Flow]:
        if sw.host is None:
            return
        a = self.app_id
        for side in SIDES.values():
            yield flow(a, side.rules_table, PRIO_STATE, {"eth_type": ETH_IP, "ct_state": CT_INV})
            yield flow(a, side.rules_table, PRIO_STATE, {"eth_type": ETH_IP, "ct_state": CT_REL},
                       goto(side.next))

    # -- per local port: its zone and its membership clauses ------------------
    def port_flows(self, view: TopologyView, sw: SwitchView, port: Document) -> Iterable[Flow]:
        if not firewalled(port) or port.get("_key") is None or not is_local(view, sw, port):
            return []
        key = port["_key"]
        keep_state = stateful(view, port)
        out = _Merged()
        a = self.app_id
        owner = ("ports", key)
        for direction, side in SIDES.items():
            out.add(flow(a, side.ct_table, PRIO_CT, {side.port_reg: key, "eth_type": ETH_IP},
                         apply(ct(zone=key, table=side.rules_table)) if keep_state
                         else goto(side.rules_table), owner=owner))
            port_side = {side.port_reg: key, "eth_type": ETH_IP}
            if keep_state:
                port_side["ct_state"] = CT_NEW
            for gkey, rules in port_groups(view, port):
                if keep_state:
                    # Clause 1 of "a connection of this port lives on while
                    # the rule that admitted it is in one of its groups".
                    out.add_conj(flow(a, side.rules_table, PRIO_ESTABLISHED,
                                      {side.port_reg: key, "eth_type": ETH_IP, "ct_state": CT_EST},
                                      owner=owner), conjunction(ESTABLISHED_CONJ | gkey, 1, 2))
                for rule in rules:
                    if rule.direction == direction:
                        out.add_conj(flow(a, side.rules_table, rule_priority(rule), port_side,
                                          owner=owner),
                                     conjunction(rule.key, 1, 3 if _ref(rule) else 2))
        return out.all()

    # -- per group with a firewalled member here: its rules' own clauses -------
    def secgroup_flows(self, view: TopologyView, sw: SwitchView, group: Document) -> Iterable[Flow]:
        """Clause 2 of each rule (protocol, ports, prefix) and its verdict on
        conj_id, and the established check's clause 2 (ct_mark is one of the
        group's rules): the same for every member port, so computed once."""
        a = self.app_id
        gkey = group["_key"]
        keep_state = group.get("stateful", True) is not False
        est = ESTABLISHED_CONJ | gkey
        out = _Merged()
        for rule in group_rules(view, group["id"]):
            side = SIDES[rule.direction]
            owner = ("security_group_rules", rule.key)
            prio = rule_priority(rule)
            n = 3 if _ref(rule) else 2
            for m in rule_matches(rule, side):
                out.add_conj(flow(a, side.rules_table, prio, m, owner=owner),
                             conjunction(rule.key, 2, n))
            out.add(flow(a, side.rules_table, prio, {"conj_id": rule.key, "eth_type": ETH_IP},
                         *self._verdict(side, rule, keep_state), owner=owner))
            if keep_state:
                for s in SIDES.values():
                    out.add_conj(flow(a, s.rules_table, PRIO_ESTABLISHED,
                                      {"eth_type": ETH_IP, "ct_state": CT_EST, "ct_mark": rule.key},
                                      owner=owner), conjunction(est, 2, 2))
        if keep_state:
            for s in SIDES.values():
                out.add(flow(a, s.rules_table, PRIO_ESTABLISHED, {"conj_id": est, "eth_type": ETH_IP},
                             goto(s.next), owner=("security_groups", gkey)))
        return out.all()

    def _verdict(self, side: Side, rule: Rule, keep_state: bool) -> tuple:
        if rule.action == "deny":
            return ()
        if not keep_state:
            return (goto(side.next),)
        return (apply(ct(commit=True, zone=side.port_reg,
                         exec=(set_field("ct_mark", rule.key),))), goto(side.next))

    # -- per remote set referred to from this switch: its addresses -----------
    def remote_set_flows(self, view: TopologyView, sw: SwitchView, doc: Document) -> Iterable[Flow]:
        """Clause 3 of the rules over an address group: its addresses. A
        security group's members each have a scope of their own
        (remote_member_flows), so one joining changes only its own flows."""
        ref = doc["ref"]
        if not ref.startswith("ag:"):
            return []
        target = view.docs.get("address_groups", {}).get(ref[3:]) or {}
        owner = ("address_groups", target["_key"]) if target.get("_key") else None
        return self._addresses(view, sw, ref, remote_addresses(view, ref), owner)

    def remote_member_flows(self, view: TopologyView, sw: SwitchView, doc: Document) -> Iterable[Flow]:
        """Clause 3 of the rules over a security group, for one member: its
        fixed IPs and allowed address pairs."""
        port = doc["port"]
        return self._addresses(view, sw, doc["ref"], port_addresses(port),
                               ("ports", port["_key"]) if port.get("_key") else None)

    def _addresses(self, view: TopologyView, sw: SwitchView, ref: str, addresses: list[str],
                   owner) -> list[Flow]:
        """One flow per address and (direction, priority) of the rules here
        that refer to `ref`, carrying every such rule's conjunction."""
        wanted: dict[tuple[str, int], list[tuple]] = {}
        for rule in _referring_rules(view, sw, ref):
            wanted.setdefault((rule.direction, rule_priority(rule)), []).append(
                conjunction(rule.key, 3, 3))
        out = []
        for (direction, prio), actions in sorted(wanted.items()):
            side = SIDES[direction]
            instructions = (apply(*sorted(actions)),)
            for addr in addresses:
                out.append(flow(self.app_id, side.rules_table, prio,
                                {"eth_type": ETH_IP, side.remote_field: addr}, *instructions,
                                owner=owner))
        return out


# -- the secgroup, remote_set and remote_member scope kinds ----------------------
def _local_firewalled(view: TopologyView, host: Optional[str], group: str) -> bool:
    return bool(host) and view.group_hosts.get(group, {}).get(host, 0) > 0


def _referring_rules(view: TopologyView, sw: SwitchView, ref: str) -> list[Rule]:
    """IPv4 rules referring to a remote set, of groups with a firewalled
    member on this switch's host."""
    out = []
    for group in view.groups_referring.get(ref, ()):
        if not _local_firewalled(view, sw.host_name, group):
            continue
        for doc in view.rules_by_group.get(group, {}).values():
            if ref in remote_refs(doc) and doc.get("ethertype", "IPv4") == "IPv4" \
                    and doc.get("_key"):
                out.append(rule_of(doc))
    out.sort(key=lambda r: r.key)
    return out


def _docs(old, new) -> list[Document]:
    return [d for d in (old, new) if d]


# secgroup: a group with a firewalled member on the switch's host
def _groups_on(view: TopologyView, sw) -> list[tuple[str, Document]]:
    groups = view.docs.get("security_groups", {})
    ids = {g for p in (view.ports_on_host(sw.host_name) if sw.host else ()) if firewalled(p)
           for g in p.get("security_groups") or ()}
    return [(g, groups[g]) for g in sorted(ids) if g in groups and groups[g].get("_key")]


def _group_here(view: TopologyView, sw, gid: str) -> Optional[Document]:
    group = view.docs.get("security_groups", {}).get(gid)
    if group is None or not group.get("_key") or not _local_firewalled(view, sw.host_name, gid):
        return None
    return group


SECGROUP = scopes.register(scopes.ScopeKind(
    name="secgroup",
    on_switch=_groups_on,
    lookup=_group_here,
    hosts=lambda view, gid: set(view.group_hosts.get(gid, ())),
))


@SECGROUP.watch("security_groups")
def _group_changed(view, old, new):
    return {d["id"] for d in _docs(old, new)}


@SECGROUP.watch("security_group_rules")
def _group_of_rule(view, old, new):
    return {d["security_group_id"] for d in _docs(old, new)}


@SECGROUP.watch("ports")
def _groups_of_port(view, old, new):
    # A member arriving on a host, or leaving it, brings or takes the group.
    return {g for d in _docs(old, new) for g in d.get("security_groups") or ()}


# remote_set: a remote group or address group that a rule here refers to
def _remote_sets_on(view: TopologyView, sw) -> list[tuple[str, Document]]:
    refs = set()
    for port in view.ports_on_host(sw.host_name) if sw.host else ():
        if firewalled(port):
            for g in port.get("security_groups") or ():
                for doc in view.rules_by_group.get(g, {}).values():
                    refs.update(remote_refs(doc))
    return [(ref, {"ref": ref}) for ref in sorted(refs)]


def _remote_set_here(view: TopologyView, sw, ref: str) -> Optional[Document]:
    if sw.host is None:
        return None
    if any(_local_firewalled(view, sw.host_name, g) for g in view.groups_referring.get(ref, ())):
        return {"ref": ref}
    return None


def _remote_set_hosts(view: TopologyView, ref: str) -> set[str]:
    return {h for g in view.groups_referring.get(ref, ()) for h in view.group_hosts.get(g, ())}


def _members(view: TopologyView, ref: str) -> list[str]:
    if not ref.startswith("sg:"):
        return []
    return [f"{ref}|{pid}" for pid in view.ports_by_group.get(ref[3:], {})]


REMOTE_SET = scopes.register(scopes.ScopeKind(
    name="remote_set",
    on_switch=_remote_sets_on,
    lookup=_remote_set_here,
    hosts=_remote_set_hosts,
    children=("remote_member", _members),
))


@REMOTE_SET.watch("ports")
def _sets_of_port(view, old, new):
    # Its groups' rules decide which sets the port's host refers to.
    return {ref for d in _docs(old, new) for g in d.get("security_groups") or ()
            for doc in view.rules_by_group.get(g, {}).values() for ref in remote_refs(doc)}


@REMOTE_SET.watch("security_group_rules")
def _sets_of_rule(view, old, new):
    return {ref for d in _docs(old, new) for ref in remote_refs(d)}


@REMOTE_SET.watch("address_groups")
def _address_group(view, old, new):
    return {"ag:" + d["id"] for d in _docs(old, new)}


# remote_member: one member port of a remote group referred to here ("sg:G|port id")
def _remote_members_on(view: TopologyView, sw) -> list[tuple[str, Document]]:
    out = []
    for ref, _ in _remote_sets_on(view, sw):
        for sid in _members(view, ref):
            doc = _remote_member_here(view, sw, sid)
            if doc is not None:
                out.append((sid, doc))
    return out


def _remote_member_here(view: TopologyView, sw, sid: str) -> Optional[Document]:
    ref, _, pid = sid.partition("|")
    port = view.ports.get(pid)
    if port is None or ref[3:] not in (port.get("security_groups") or ()) \
            or _remote_set_here(view, sw, ref) is None:
        return None
    return {"ref": ref, "port": port}


REMOTE_MEMBER = scopes.register(scopes.ScopeKind(
    name="remote_member",
    on_switch=_remote_members_on,
    lookup=_remote_member_here,
    hosts=lambda view, sid: _remote_set_hosts(view, sid.partition("|")[0]),
    parent=lambda doc: ("remote_set", doc["ref"]),
))


@REMOTE_MEMBER.watch("ports")
def _member_of(view, old, new):
    return {f"sg:{g}|{d['id']}" for d in _docs(old, new) for g in d.get("security_groups") or ()}


@REMOTE_MEMBER.watch("security_group_rules")
def _members_referred_by_rule(view, old, new):
    # Which rules here refer to the set decides each member's conjunctions.
    return {sid for d in _docs(old, new) for ref in remote_refs(d)
            for sid in _members(view, ref)}


@scopes.KINDS["port"].watch("security_group_rules")
def _members_of_rule_group(view, old, new):
    groups = {d["security_group_id"] for d in _docs(old, new)}
    return [pid for g in groups for pid in view.ports_by_group.get(g, {})]


@scopes.KINDS["port"].watch("security_groups")
def _members_of_group(view, old, new):
    return [pid for d in _docs(old, new) for pid in view.ports_by_group.get(d["id"], {})]
