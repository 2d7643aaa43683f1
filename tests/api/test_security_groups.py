"""Security groups, rules and address groups through the real API (gunicorn)."""
from __future__ import annotations

import uuid

import pytest

from apihelpers import ApiProcess, Client, error

RULES = "/security-group-rules"


def rule_body(**attrs) -> dict:
    return {"security_group_rule": attrs}


def create_rule(client, **attrs) -> dict:
    return client.create("security-group-rules", "security_group_rule", **attrs)


def group(client, name="g", **attrs) -> dict:
    return client.create("security-groups", "security_group", name=name, **attrs)


def stored(api, kind, id):
    store = api.open_store()
    try:
        with store.read() as r:
            return r.get(kind, id)
    finally:
        store.close()


def claimed(api, namespace) -> set[str]:
    store = api.open_store()
    try:
        with store.read() as r:
            return r.claimed_keys(namespace)
    finally:
        store.close()


def test_default_group_has_neutrons_rules_with_compact_form(client):
    got = client.call("GET", "/security-groups?name=default&project_id=admin")
    groups = got.json()["security_groups"]
    assert got.status_code == 200 and len(groups) == 1
    default = groups[0]
    shown = sorted((x["direction"], x["ethertype"], x["remote_group_id"], x["rule"],
                    x["action"], x["priority"], x["belongs_to_default_sg"])
                   for x in default["security_group_rules"])
    gid = default["id"]
    assert shown == [
        ("egress", "IPv4", None, "out:allow any", "allow", 1, True),
        ("egress", "IPv6", None, "out:allow ipv6 any", "allow", 1, True),
        ("ingress", "IPv4", gid, f"in:allow group:{gid} any", "allow", 1, True),
        ("ingress", "IPv6", gid, f"in:allow ipv6 group:{gid} any", "allow", 1, True),
    ]
    assert all("_key" not in x for x in default["security_group_rules"]) and "_key" not in default


def test_new_group_egress_allow_all_and_stateless(client):
    sg = group(client, "stateless", stateful=False)
    assert sg["stateful"] is False
    assert sorted(x["rule"] for x in sg["security_group_rules"]) == ["out:allow any",
                                                                      "out:allow ipv6 any"]
    assert all(x["belongs_to_default_sg"] is False for x in sg["security_group_rules"])
    assert client.call("DELETE", f"/security-groups/{sg['id']}").status_code == 204


@pytest.mark.parametrize("text,fields", [
    ("in:allow 0.0.0.0/0 tcp 22,80,3389",
     dict(protocol="tcp", ports="22,80,3389", port_range_min=None, remote_ip_prefix="0.0.0.0/0",
          normalized_cidr="0.0.0.0/0", action="allow", direction="ingress")),
    ("out:deny any", dict(direction="egress", action="deny", protocol=None, ports=None)),
    ("in:deny 10.0.0.0/8 udp 123",
     dict(protocol="udp", port_range_min=123, port_range_max=123, ports="123", action="deny")),
    ("in:allow 10.1.2.3/16 tcp 8000-8080",
     dict(ports="8000-8080", port_range_min=8000, port_range_max=8080,
          remote_ip_prefix="10.1.2.3/16", normalized_cidr="10.1.0.0/16")),
    ("in:allow icmp 8/0", dict(protocol="icmp", port_range_min=8, port_range_max=0)),
])
def test_compact_form_creates_the_rule_and_shows_it_back(client, text, fields):
    sg = group(client)
    rule = create_rule(client, security_group_id=sg["id"], rule=text, priority=10)
    assert rule["rule"] == text and rule["priority"] == 10
    for name, value in fields.items():
        assert rule[name] == value, name
    again = client.call("GET", f"{RULES}/{rule['id']}").json()["security_group_rule"]
    assert again == rule
    client.call("DELETE", f"/security-groups/{sg['id']}")


def test_ports_list_is_normalised_and_filterable(client):
    sg = group(client)
    rule = create_rule(client, security_group_id=sg["id"], direction="ingress", protocol="tcp",
                       ports="8080,22,8000-8079, 23", action="deny", priority=50)
    assert rule["ports"] == "22-23,8000-8080"
    assert rule["rule"] == "in:deny tcp 22-23,8000-8080"
    assert (rule["port_range_min"], rule["port_range_max"]) == (None, None)
    got = client.call("GET", f"{RULES}?security_group_id={sg['id']}&action=deny").json()
    assert [x["id"] for x in got["security_group_rules"]] == [rule["id"]]
    neutron = create_rule(client, security_group_id=sg["id"], direction="ingress",
                          protocol="udp", port_range_min=53, port_range_max=53)
    assert neutron["ports"] == "53" and neutron["action"] == "allow" and neutron["priority"] == 1
    assert neutron["rule"] == "in:allow udp 53"
    client.call("DELETE", f"/security-groups/{sg['id']}")


@pytest.mark.parametrize("attrs,field", [
    (dict(direction="ingress", protocol="tcp", ports="80-22"), "ports"),
    (dict(direction="ingress", protocol="tcp", ports="70000"), "ports"),
    (dict(direction="ingress", action="maybe"), "action"),
    (dict(direction="ingress", priority=0), "priority"),
    (dict(direction="ingress", priority=101), "priority"),
    (dict(rule="in:allow tcp 22 33 44"), "rule"),
    (dict(rule="inbound allow tcp"), "rule"),
    (dict(rule="in:allow tcp 22", direction="egress"), "direction"),
    (dict(direction="ingress", protocol="tcp", port_range_min=90, port_range_max=80), "port_range_min"),
    (dict(direction="ingress", protocol="icmp", port_range_min=8, port_range_max=300), "port_range_max"),
    (dict(direction="ingress", protocol="icmp", port_range_max=0), "port_range_min"),
    (dict(direction="ingress", port_range_min=1, port_range_max=2), "protocol"),
    (dict(direction="ingress", protocol="bogus"), "protocol"),
    (dict(direction="ingress", remote_ip_prefix="fd00::/8"), "ethertype"),
    (dict(direction="ingress", remote_ip_prefix="300.0.0.0/8"), "remote_ip_prefix"),
    (dict(protocol="tcp"), "direction"),
    (dict(direction="ingress", protocol="tcp", ports="22", bogus=1), "bogus"),
])
def test_malformed_rule_is_400_naming_the_field_and_writes_nothing(client, api, attrs, field):
    sg = group(client)
    before = api.revision()
    r = client.call("POST", RULES, rule_body(security_group_id=sg["id"], **attrs))
    assert r.status_code == 400, r.text
    assert field in error(r)["message"]
    assert api.revision() == before
    client.call("DELETE", f"/security-groups/{sg['id']}")


def test_bulk_create_is_all_or_nothing(client, api):
    sg = group(client)
    before = api.revision()
    r = client.call("POST", RULES, {"security_group_rules": [
        {"security_group_id": sg["id"], "rule": "in:allow tcp 22"},
        {"security_group_id": sg["id"], "rule": "in:allow tcp 99999"}]})
    assert r.status_code == 400 and api.revision() == before
    r = client.call("POST", RULES, {"security_group_rules": [
        {"security_group_id": sg["id"], "rule": "in:allow tcp 22"},
        {"security_group_id": sg["id"], "rule": "in:deny udp 53", "priority": 5}]})
    assert r.status_code == 201
    assert [x["rule"] for x in r.json()["security_group_rules"]] == ["in:allow tcp 22", "in:deny udp 53"]
    client.call("DELETE", f"/security-groups/{sg['id']}")


def test_duplicates_are_409_as_neutron(client):
    sg = group(client)
    first = create_rule(client, security_group_id=sg["id"], direction="ingress", protocol="tcp",
                        port_range_min=22, port_range_max=22)
    for same in (dict(direction="ingress", protocol="6", port_range_min=22, port_range_max=22),
                 dict(rule="in:allow tcp 22"),
                 dict(rule="in:allow 0.0.0.0/0 tcp 22")):
        r = client.call("POST", RULES, rule_body(security_group_id=sg["id"], **same))
        assert r.status_code == 409 and error(r)["type"] == "SecurityGroupRuleExists", same
        assert first["id"] in error(r)["message"]
    # a different action or priority is another rule
    create_rule(client, security_group_id=sg["id"], rule="in:deny tcp 22")
    create_rule(client, security_group_id=sg["id"], rule="in:allow tcp 22", priority=2)
    # the egress defaults are there already
    r = client.call("POST", RULES, rule_body(security_group_id=sg["id"], rule="out:allow any"))
    assert r.status_code == 409
    client.call("DELETE", f"/security-groups/{sg['id']}")


def test_remote_group_must_exist_and_remotes_exclude_each_other(client):
    sg = group(client)
    missing = str(uuid.uuid4())
    r = client.call("POST", RULES, rule_body(security_group_id=sg["id"], direction="ingress",
                                             remote_group_id=missing))
    assert r.status_code == 404 and error(r)["type"] == "SecurityGroupNotFound"
    r = client.call("POST", RULES, rule_body(security_group_id=sg["id"], direction="ingress",
                                             remote_address_group_id=missing))
    assert r.status_code == 404 and error(r)["type"] == "AddressGroupNotFound"
    r = client.call("POST", RULES, rule_body(security_group_id=sg["id"], direction="ingress",
                                             remote_group_id=sg["id"], remote_ip_prefix="10.0.0.0/8"))
    assert r.status_code == 400 and "remote_ip_prefix" in error(r)["message"]
    r = client.call("POST", RULES, rule_body(security_group_id=sg["id"], direction="ingress",
                                             remote_group_id=sg["id"],
                                             remote_address_group_id=missing))
    assert r.status_code == 400 and "remote_address_group_id" in error(r)["message"]
    rule = create_rule(client, security_group_id=sg["id"], rule=f"in:allow group:{sg['id']} tcp 22")
    assert rule["remote_group_id"] == sg["id"]
    client.call("DELETE", f"/security-groups/{sg['id']}")


def test_deleting_a_group_cascades_to_rules_naming_it_as_remote(client):
    a, b = group(client, "a"), group(client, "b")
    rule = create_rule(client, security_group_id=a["id"], direction="ingress", remote_group_id=b["id"])
    assert client.call("DELETE", f"/security-groups/{b['id']}").status_code == 204
    assert client.call("GET", f"{RULES}/{rule['id']}").status_code == 404
    client.call("DELETE", f"/security-groups/{a['id']}")


def test_address_groups_lifecycle(client, api):
    ag = client.create("address-groups", "address_group", name="office",
                       addresses=["10.0.0.5/24", "192.168.1.1/32", "10.0.0.0/24", "fd00::1/64"])
    assert ag["addresses"] == ["10.0.0.0/24", "192.168.1.1/32", "fd00::/64"]
    assert "_key" not in ag and stored(api, "address_groups", ag["id"])["_key"] >= 1
    path = f"/address-groups/{ag['id']}"
    r = client.call("PUT", f"{path}/add_addresses", {"addresses": ["172.16.0.0/12"]})
    assert r.status_code == 200
    assert r.json()["address_group"]["addresses"] == [
        "10.0.0.0/24", "172.16.0.0/12", "192.168.1.1/32", "fd00::/64"]
    r = client.call("PUT", f"{path}/add_addresses", {"addresses": ["10.0.0.9/24"]})
    assert r.status_code == 400 and error(r)["type"] == "AddressesAlreadyExist"
    r = client.call("PUT", f"{path}/remove_addresses", {"addresses": ["8.8.8.8/32"]})
    assert r.status_code == 404 and error(r)["type"] == "AddressesNotFound"
    r = client.call("PUT", f"{path}/add_addresses", {"addresses": ["not-an-address"]})
    assert r.status_code == 400 and "addresses" in error(r)["message"]
    r = client.call("PUT", f"{path}/remove_addresses", {"addresses": ["192.168.1.1/32", "fd00::/64"]})
    assert r.status_code == 200
    assert r.json()["address_group"]["addresses"] == ["10.0.0.0/24", "172.16.0.0/12"]
    r = client.call("PUT", path, {"address_group": {"addresses": []}})
    assert r.status_code == 400
    r = client.call("PUT", path, {"address_group": {"name": "hq"}})
    assert r.status_code == 200 and r.json()["address_group"]["name"] == "hq"

    sg = group(client)
    rule = create_rule(client, security_group_id=sg["id"],
                       rule=f"in:allow address-group:{ag['id']} tcp 443")
    assert rule["remote_address_group_id"] == ag["id"]
    r = client.call("DELETE", path)
    assert r.status_code == 409 and error(r)["type"] == "AddressGroupInUse"
    client.call("DELETE", f"{RULES}/{rule['id']}")
    key = stored(api, "address_groups", ag["id"])["_key"]
    assert client.call("DELETE", path).status_code == 204
    assert str(key) not in claimed(api, "address-group-key")
    client.call("DELETE", f"/security-groups/{sg['id']}")


def test_stateful_and_stateless_groups_do_not_mix_on_a_port(client):
    net = client.network(name="sgmix")
    client.subnet(net["id"], "10.90.0.0/24")
    stateful, stateless = group(client, "on"), group(client, "off", stateful=False)
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"],
                                                "security_groups": [stateful["id"], stateless["id"]]}})
    assert r.status_code == 409 and "stateful" in error(r)["message"]
    port = client.port(net["id"], security_groups=[stateless["id"]])
    r = client.call("PUT", f"/security-groups/{stateless['id']}",
                    {"security_group": {"stateful": True}})
    assert r.status_code == 409 and error(r)["type"] == "SecurityGroupInUse"
    client.call("DELETE", f"/ports/{port['id']}")
    r = client.call("PUT", f"/security-groups/{stateless['id']}",
                    {"security_group": {"stateful": True}})
    assert r.status_code == 200 and r.json()["security_group"]["stateful"] is True
    for sg in (stateful, stateless):
        client.call("DELETE", f"/security-groups/{sg['id']}")
    client.call("DELETE", f"/networks/{net['id']}")


def test_rules_only_change_their_description(client):
    sg = group(client)
    rule = create_rule(client, security_group_id=sg["id"], rule="in:allow tcp 22")
    r = client.call("PUT", f"{RULES}/{rule['id']}", {"security_group_rule": {"description": "ssh"}})
    assert r.status_code == 200 and r.json()["security_group_rule"]["description"] == "ssh"
    r = client.call("PUT", f"{RULES}/{rule['id']}", {"security_group_rule": {"priority": 5}})
    assert r.status_code == 400 and "priority" in error(r)["message"]
    client.call("DELETE", f"/security-groups/{sg['id']}")


def test_keys_are_allocated_freed_and_survive_a_restart(tmp_path):
    server = ApiProcess(tmp_path, workers=1)
    try:
        client = Client(server.url)
        sg = group(client)
        rules = [create_rule(client, security_group_id=sg["id"], rule=f"in:allow tcp {p}")
                 for p in (22, 80, 443)]
        keys = {x["id"]: stored(server, "security_group_rules", x["id"])["_key"] for x in rules}
        group_key = stored(server, "security_groups", sg["id"])["_key"]
        all_rule_keys = {str(stored(server, "security_group_rules", x["id"])["_key"])
                         for x in sg["security_group_rules"]} | {str(k) for k in keys.values()}
        assert len(all_rule_keys) == 5 and all_rule_keys <= claimed(server, "security-group-rule-key")
        gone = rules[0]["id"]
        assert client.call("DELETE", f"{RULES}/{gone}").status_code == 204
        assert str(keys[gone]) not in claimed(server, "security-group-rule-key")
    finally:
        server.stop()
    server = ApiProcess(tmp_path, workers=1)
    try:
        client = Client(server.url)
        for rule in rules[1:]:
            assert stored(server, "security_group_rules", rule["id"])["_key"] == keys[rule["id"]]
        assert stored(server, "security_groups", sg["id"])["_key"] == group_key
        # a freed key is not handed out again straight away
        new = create_rule(client, security_group_id=sg["id"], rule="in:allow tcp 8080")
        new_key = stored(server, "security_group_rules", new["id"])["_key"]
        assert new_key not in keys.values()
        assert client.call("DELETE", f"/security-groups/{sg['id']}").status_code == 204
        assert str(new_key) not in claimed(server, "security-group-rule-key")
        assert str(group_key) not in claimed(server, "security-group-key")
    finally:
        server.stop()
