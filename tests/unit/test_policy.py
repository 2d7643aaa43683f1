"""The policy table's rule language (topology/api/policy.py), as pure functions."""
from __future__ import annotations

import pytest

from topology.api import policy
from topology.api.auth import Context
from topology.api.errors import Forbidden

ADMIN, ALICE, BOB = Context("ops", True), Context("alice", False), Context("bob", False)


def test_every_rule_compiles():
    policy.validate()


@pytest.mark.parametrize("rule,ctx,target,want", [
    ("@", BOB, {}, True),
    ("!", ADMIN, {}, False),
    ("role:admin", ADMIN, {}, True),
    ("role:admin", ALICE, {}, False),
    ("project_id:%(project_id)s", ALICE, {"project_id": "alice"}, True),
    ("project_id:%(project_id)s", ALICE, {"project_id": "bob"}, False),
    ("project_id:%(project_id)s", ALICE, {}, False),
    ("field:device_owner=~^network:", BOB, {"device_owner": "network:dhcp"}, True),
    ("field:device_owner=~^network:", BOB, {"device_owner": "compute:nova"}, False),
    ("not field:device_owner=~^network: or role:admin", BOB, {"device_owner": "network:x"}, False),
    ("not field:device_owner=~^network: or role:admin", ADMIN, {"device_owner": "network:x"}, True),
    ("field:network:shared=True", BOB, {"network:shared": True}, True),
    ("role:admin or (project_id:%(project_id)s and field:shared=False)", ALICE,
     {"project_id": "alice", "shared": False}, True),
    ("role:admin or (project_id:%(project_id)s and field:shared=False)", ALICE,
     {"project_id": "alice", "shared": True}, False),
])
def test_rule_language(monkeypatch, rule, ctx, target, want):
    monkeypatch.setitem(policy.RULES, "under_test", rule)
    policy._compiled.cache_clear()
    try:
        assert policy.check(ctx, "under_test", target) is want
    finally:
        policy._compiled.cache_clear()


@pytest.mark.parametrize("rule", ["rule:no_such_rule", "(role:admin", "project_id:alice",
                                  "bogus:thing", "role:admin and", ""])
def test_bad_rules_fail_at_compile_time(monkeypatch, rule):
    monkeypatch.setitem(policy.RULES, "under_test", rule)
    policy._compiled.cache_clear()
    try:
        with pytest.raises(ValueError):
            policy.validate()
    finally:
        policy._compiled.cache_clear()


def test_network_attributes_come_from_the_network_only_when_asked():
    loads = []
    net = {"id": "n", "project_id": "alice", "shared": True}
    target = policy.Target({"project_id": "bob", "network_id": "n"},
                           lambda: loads.append(1) or net)
    assert policy.check(BOB, "get_port", target) and loads == []
    assert policy.check(ALICE, "create_port:mac_address", target) and loads == [1]
    assert not policy.check(BOB, "create_port:mac_address", target)
    assert policy.check(BOB, "create_port:fixed_ips:subnet_id", target)      # shared
    assert loads == [1]


def test_attribute_rules_name_keys_inside_lists():
    target = policy.Target({"project_id": "bob", "fixed_ips": [{"subnet_id": "s"}],
                            "network_id": "n"}, lambda: {"project_id": "alice", "shared": True})
    policy.enforce_attributes(BOB, "create", "port", target, ["fixed_ips"])
    target["fixed_ips"] = [{"ip_address": "10.0.0.5"}]
    with pytest.raises(Forbidden, match="create_port:fixed_ips:ip_address"):
        policy.enforce_attributes(BOB, "create", "port", target, ["fixed_ips"])


def test_unnamed_actions_fall_back_to_the_default_rule():
    assert policy.check(ALICE, "frobnicate_widget", {"project_id": "alice"})
    assert not policy.check(ALICE, "frobnicate_widget", {"project_id": "bob"})
    assert policy.hidden_attributes(ALICE, "network", {}) == {
        "provider:network_type", "provider:physical_network", "provider:segmentation_id"}
    assert policy.hidden_attributes(ADMIN, "network", {}) == set()
