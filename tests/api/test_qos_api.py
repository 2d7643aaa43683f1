"""QoS policies, their rules, rule types and qos_policy_id, through the real API (gunicorn)."""
from __future__ import annotations

import pytest

from apihelpers import error
from test_security_groups import stored

BW = "bandwidth_limit_rules"


def qos_policy(client, **attrs) -> dict:
    return client.create("qos/policies", "policy", **attrs)


def add_rule(client, pid, kind, **attrs):
    r = client.call("POST", f"/qos/policies/{pid}/{kind}", {kind[:-1]: attrs})
    assert r.status_code == 201, r.text
    return r.json()[kind[:-1]]


def test_policy_lifecycle_with_rules_and_a_stable_key(api, client):
    pol = qos_policy(client, name="gold", description="d", shared=True)
    assert pol["rules"] == [] and pol["shared"] is True and pol["is_default"] is False
    key = stored(api, "qos_policies", pol["id"])["_key"]
    assert key >= 1
    bw = add_rule(client, pol["id"], BW, max_kbps=10000, direction="ingress")
    assert bw["max_burst_kbps"] == 0 and bw["qos_policy_id"] == pol["id"]
    pps = add_rule(client, pol["id"], "packet_rate_limit_rules", max_kpps=1, max_burst_kpps=2)
    assert pps["direction"] == "egress"
    dscp = add_rule(client, pol["id"], "dscp_marking_rules", dscp_mark=26)
    shown = client.call("GET", f"/qos/policies/{pol['id']}").json()["policy"]
    assert {r["type"] for r in shown["rules"]} == {"bandwidth_limit", "packet_rate_limit",
                                                   "dscp_marking"}
    listed = client.call("GET", "/qos/policies").json()["policies"]
    assert pol["id"] in {p["id"] for p in listed}
    r = client.call("PUT", f"/qos/policies/{pol['id']}/{BW}/{bw['id']}",
                    {"bandwidth_limit_rule": {"max_kbps": 20000}})
    assert r.status_code == 200 and r.json()["bandwidth_limit_rule"]["max_kbps"] == 20000
    got = client.call("GET", f"/qos/policies/{pol['id']}/{BW}/{bw['id']}").json()
    assert got["bandwidth_limit_rule"]["max_kbps"] == 20000
    assert len(client.call("GET", f"/qos/policies/{pol['id']}/{BW}").json()[BW]) == 1
    assert client.call("DELETE",
                       f"/qos/policies/{pol['id']}/dscp_marking_rules/{dscp['id']}").status_code == 204
    after = stored(api, "qos_policies", pol["id"])
    assert after["_key"] == key and len(after["rules"]) == 2
    assert client.call("DELETE", f"/qos/policies/{pol['id']}").status_code == 204
    assert client.call("GET", f"/qos/policies/{pol['id']}").status_code == 404


@pytest.mark.parametrize("kind, body, field", [
    ("dscp_marking_rules", {"dscp_mark": 27}, "dscp_mark"),
    ("dscp_marking_rules", {"dscp_mark": "26"}, "dscp_mark"),
    (BW, {"max_kbps": 0}, "max_kbps"),
    (BW, {"max_kbps": 100, "direction": "sideways"}, "direction"),
    (BW, {"max_burst_kbps": 100}, "max_kbps"),
    ("packet_rate_limit_rules", {"max_kpps": -1}, "max_kpps"),
    (BW, {"max_kbps": 100, "bogus": 1}, "bogus"),
])
def test_bad_rules_are_400_naming_the_field_and_write_nothing(api, client, kind, body, field):
    pol = qos_policy(client, name="p")
    r = client.call("POST", f"/qos/policies/{pol['id']}/{kind}", {kind[:-1]: body})
    assert r.status_code == 400, r.text
    assert field in error(r)["message"]
    assert stored(api, "qos_policies", pol["id"])["rules"] == []


def test_one_rule_per_direction_and_one_dscp_rule(client):
    pol = qos_policy(client, name="p")
    add_rule(client, pol["id"], BW, max_kbps=100, direction="egress")
    add_rule(client, pol["id"], BW, max_kbps=100, direction="ingress")
    r = client.call("POST", f"/qos/policies/{pol['id']}/{BW}",
                    {"bandwidth_limit_rule": {"max_kbps": 5, "direction": "egress"}})
    assert r.status_code == 409 and "egress" in error(r)["message"]
    add_rule(client, pol["id"], "dscp_marking_rules", dscp_mark=0)
    r = client.call("POST", f"/qos/policies/{pol['id']}/dscp_marking_rules",
                    {"dscp_marking_rule": {"dscp_mark": 8}})
    assert r.status_code == 409


def test_qos_policy_id_on_ports_and_networks_and_in_use(client):
    pol = qos_policy(client, name="p")
    net = client.network(name="n", qos_policy_id=pol["id"])
    assert net["qos_policy_id"] == pol["id"]
    port = client.port(net["id"])
    assert port["qos_policy_id"] is None
    other = qos_policy(client, name="o")
    r = client.call("PUT", f"/ports/{port['id']}", {"port": {"qos_policy_id": other["id"]}})
    assert r.status_code == 200 and r.json()["port"]["qos_policy_id"] == other["id"]
    r = client.call("DELETE", f"/qos/policies/{other['id']}")
    assert r.status_code == 409 and error(r)["type"] == "QosPolicyInUse"
    missing = "00000000-0000-0000-0000-00000000dead"
    r = client.call("PUT", f"/ports/{port['id']}", {"port": {"qos_policy_id": missing}})
    assert r.status_code == 404 and error(r)["type"] == "QosPolicyNotFound"
    r = client.call("PUT", f"/ports/{port['id']}", {"port": {"qos_policy_id": "nope"}})
    assert r.status_code == 400 and "qos_policy_id" in error(r)["message"]
    r = client.call("PUT", f"/networks/{net['id']}", {"network": {"qos_policy_id": None}})
    assert r.status_code == 200 and r.json()["network"]["qos_policy_id"] is None


def test_a_projects_default_policy_goes_on_its_new_networks(client):
    r = client.call("GET", "/qos/policies", params={"is_default": "true"})
    for p in r.json()["policies"]:
        client.call("PUT", f"/qos/policies/{p['id']}", {"policy": {"is_default": False}})
    pol = qos_policy(client, name="default", is_default=True)
    r = client.call("POST", "/qos/policies", {"policy": {"name": "second", "is_default": True}})
    assert r.status_code == 409
    assert client.network(name="gets-default")["qos_policy_id"] == pol["id"]
    client.call("PUT", f"/qos/policies/{pol['id']}", {"policy": {"is_default": False}})


def test_rule_types_and_extensions(client):
    types = client.call("GET", "/qos/rule-types").json()["rule_types"]
    assert {t["type"] for t in types} == {"bandwidth_limit", "packet_rate_limit", "dscp_marking"}
    detail = client.call("GET", "/qos/rule-types/dscp_marking").json()["rule_type"]
    assert 26 in detail["drivers"][0]["supported_parameters"][0]["parameter_values"]
    assert client.call("GET", "/qos/rule-types/nope").status_code == 404
    aliases = {e["alias"] for e in client.call("GET", "/extensions").json()["extensions"]}
    assert {"qos", "qos-bw-limit-direction", "qos-pps"} <= aliases
