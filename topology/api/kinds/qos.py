"""QoS policies and their rules, as Neutron's qos extension.

    /v2.0/qos/policies                                   a policy: name, shared, is_default
    /v2.0/qos/policies/{id}/bandwidth_limit_rules[/{rule_id}]     max_kbps, max_burst_kbps,
                                                                  direction
    /v2.0/qos/policies/{id}/packet_rate_limit_rules[/{rule_id}]   max_kpps, max_burst_kpps,
                                                                  direction
    /v2.0/qos/policies/{id}/dscp_marking_rules[/{rule_id}]        dscp_mark
    /v2.0/qos/rule-types[/{type}]                        what this server enforces

A policy's rules are stored inside its document (`rules`, as Neutron shows
them), so changing a rule is one change of one document: the controller
recomputes the ports the policy applies to, and a new rate reaches the
switch as a meter-mod with no flow change. Each policy holds a small `_key`
from the store for its life (flow cookies name it). Ports and networks name
a policy with `qos_policy_id`; a policy in use cannot be deleted.
"""
from __future__ import annotations

import uuid

import falcon

from topology import validation as v
from topology.api.errors import BadRequest, InUse, NotFound, not_found
from topology.api.http import read_body, respond
from topology.api.kinds.base import Kind, common_attrs
from topology.store.base import Store

KEY_NAMESPACE, KEY_MAX = "qos-policy-key", 0xFFFFFF
MAX_RATE = 2 ** 31 - 1
# Neutron's valid DSCP marks (neutron_lib.constants.VALID_DSCP_MARKS).
VALID_DSCP_MARKS = (0, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 46,
                    48, 56)


def _dscp(field, value):
    if isinstance(value, bool) or not isinstance(value, int) or value not in VALID_DSCP_MARKS:
        raise v.Invalid(field, f"'{value}' is not a valid DSCP mark; valid marks are "
                               f"{list(VALID_DSCP_MARKS)}")
    return value


_DIRECTION = v.one_of("egress", "ingress")
# type -> (its URL collection, its attributes); one rule of a type per direction
# (bandwidth, packet rate) or per policy (DSCP), as Neutron allows.
RULE_TYPES = {
    "bandwidth_limit": ("bandwidth_limit_rules", {
        "max_kbps": v.Attr(v.integer(1, MAX_RATE), v.REQUIRED),
        "max_burst_kbps": v.Attr(v.integer(0, MAX_RATE), 0),
        "direction": v.Attr(_DIRECTION, "egress"),
    }),
    "packet_rate_limit": ("packet_rate_limit_rules", {
        "max_kpps": v.Attr(v.integer(1, MAX_RATE // 1000), v.REQUIRED),
        "max_burst_kpps": v.Attr(v.integer(0, MAX_RATE // 1000), 0),
        "direction": v.Attr(_DIRECTION, "egress"),
    }),
    "dscp_marking": ("dscp_marking_rules", {
        "dscp_mark": v.Attr(_dscp, v.REQUIRED),
    }),
}


def check_policy(txn, ctx, policy_id) -> None:
    """A port or network may name a policy its caller can see (404 otherwise)."""
    if policy_id is None:
        return
    doc = txn.get("qos_policies", policy_id)
    if doc is None or not (doc.get("shared") or ctx.can_see(doc)):
        raise NotFound(f"QoS policy {policy_id} could not be found.", "QosPolicyNotFound")


def policy_id_attr() -> v.Attr:
    return v.Attr(v.nullable(v.uuid_str), None)


class QosPolicies(Kind):
    collection = "qos_policies"
    plural = "policies"
    member = "policy"
    shown = frozenset({"rules"})
    attrs = {**common_attrs(), "shared": v.Attr(v.boolean, False),
             "is_default": v.Attr(v.boolean, False)}

    def create(self, txn, ctx, values):
        doc = self.new_doc(ctx, values)
        doc["rules"] = []
        self._one_default(txn, doc)
        self.give_key(txn, doc, KEY_NAMESPACE, KEY_MAX)
        self.save(txn, doc)
        return doc

    @staticmethod
    def _one_default(txn, doc):
        if not doc.get("is_default"):
            return
        for other in txn.list("qos_policies", project_id=doc["project_id"]):
            if other["id"] != doc["id"] and other.get("is_default"):
                raise InUse(f"A default QoS policy exists for project {doc['project_id']}.",
                            "QoSPolicyDefaultAlreadyExists")

    def update(self, txn, ctx, doc, changes):
        self.check_owner(ctx, doc, "update")
        self._one_default(txn, {**doc, **changes})
        return super().update(txn, ctx, doc, changes)

    def delete(self, txn, ctx, doc):
        self.check_owner(ctx, doc, "delete")
        for kind in ("ports", "networks"):
            if any(d.get("qos_policy_id") == doc["id"] for d in txn.list(kind)):
                raise InUse(f"QoS Policy {doc['id']} is used by {kind[:-1]}.", "QosPolicyInUse")
        super().delete(txn, ctx, doc)

    def present(self, r, docs):
        out = super().present(r, docs)
        for d in out:
            d["rules"] = [{**rule, "qos_policy_id": d["id"]} for rule in d.get("rules", [])]
        return out


def _shown(policy_id: str, rule: dict) -> dict:
    return {k: val for k, val in rule.items() if k != "type"} | {"qos_policy_id": policy_id}


class QosRules:
    """/v2.0/qos/policies/{policy_id}/<type>_rules[/{rule_id}] for one rule type."""

    def __init__(self, policies: QosPolicies, store: Store, rule_type: str):
        self.policies = policies
        self.store = store
        self.type = rule_type
        self.collection, self.attrs = RULE_TYPES[rule_type]
        self.member = self.collection[:-1]

    def _rules(self, doc):
        return [r for r in doc.get("rules", []) if r["type"] == self.type]

    def _find(self, doc, rule_id):
        for rule in self._rules(doc):
            if rule["id"] == rule_id:
                return rule
        raise NotFound(f"{self.type} rule {rule_id} could not be found in policy {doc['id']}.",
                       "QosRuleNotFound")

    def _check_unique(self, doc, rule):
        for other in self._rules(doc):
            if other["id"] == rule["id"]:
                continue
            if self.type == "dscp_marking" or other.get("direction") == rule.get("direction"):
                raise InUse(f"A {self.type} rule"
                            + (f" for direction {rule['direction']}" if "direction" in rule else "")
                            + f" already exists in policy {doc['id']}.", "QoSRulesConflict")

    def _save(self, txn, doc):
        self.policies.touch(doc)
        self.policies.save(txn, doc)

    def _body(self, req):
        body = read_body(req)
        if not isinstance(body, dict) or self.member not in body or len(body) != 1:
            raise BadRequest(f"Unable to find '{self.member}' in request body")
        return body[self.member]

    def on_get(self, req, resp, id):
        policy_id = id
        with self.store.read() as r:
            doc = self.policies.load(r, req.context.auth, policy_id)
        respond(resp, falcon.HTTP_200,
                {self.collection: [_shown(policy_id, x) for x in self._rules(doc)]})

    def on_post(self, req, resp, id):
        policy_id = id
        ctx = req.context.auth
        values = v.parse_create(self.attrs, self._body(req), self.member)
        rule_id = str(uuid.uuid4())

        def add(txn):
            doc = self.policies.load(txn, ctx, policy_id)
            self.policies.check_owner(ctx, doc, "update")
            rule = {"id": rule_id, "type": self.type, **values}
            self._check_unique(doc, rule)
            doc["rules"] = doc.get("rules", []) + [rule]
            self._save(txn, doc)
            return rule
        rule = self.store.run(add)
        respond(resp, falcon.HTTP_201, {self.member: _shown(policy_id, rule)})

    def on_get_item(self, req, resp, id, rule_id):
        policy_id = id
        with self.store.read() as r:
            doc = self.policies.load(r, req.context.auth, policy_id)
        respond(resp, falcon.HTTP_200, {self.member: _shown(policy_id, self._find(doc, rule_id))})

    def on_put_item(self, req, resp, id, rule_id):
        policy_id = id
        ctx = req.context.auth
        changes = v.parse_update(self.attrs, self._body(req), self.member)

        def update(txn):
            doc = self.policies.load(txn, ctx, policy_id)
            self.policies.check_owner(ctx, doc, "update")
            rule = {**self._find(doc, rule_id), **changes}
            self._check_unique(doc, rule)
            doc["rules"] = [rule if x["id"] == rule_id else x for x in doc["rules"]]
            self._save(txn, doc)
            return rule
        rule = self.store.run(update)
        respond(resp, falcon.HTTP_200, {self.member: _shown(policy_id, rule)})

    def on_delete_item(self, req, resp, id, rule_id):
        policy_id = id
        ctx = req.context.auth

        def delete(txn):
            doc = self.policies.load(txn, ctx, policy_id)
            self.policies.check_owner(ctx, doc, "update")
            self._find(doc, rule_id)
            doc["rules"] = [x for x in doc["rules"] if x["id"] != rule_id]
            self._save(txn, doc)
        self.store.run(delete)
        resp.status = falcon.HTTP_204


class RuleTypes:
    """GET /v2.0/qos/rule-types and /v2.0/qos/rule-types/{type}."""

    def on_get(self, req, resp):
        respond(resp, falcon.HTTP_200, {"rule_types": [{"type": t} for t in sorted(RULE_TYPES)]})

    def on_get_item(self, req, resp, rule_type):
        if rule_type not in RULE_TYPES:
            raise not_found("rule_type", rule_type)
        params = [{"parameter_name": name, "parameter_type": "range" if name != "direction"
                   else "choices",
                   "parameter_values": ["egress", "ingress"] if name == "direction"
                   else (list(VALID_DSCP_MARKS) if name == "dscp_mark"
                         else {"start": 0, "end": MAX_RATE})}
                  for name in RULE_TYPES[rule_type][1]]
        respond(resp, falcon.HTTP_200, {"rule_type": {
            "type": rule_type,
            "drivers": [{"name": "vmflow", "supported_parameters": params}]}})
