"""Ports: MAC and IP allocation, requested addresses, security groups, binding."""
from __future__ import annotations

from apihelpers import error


def setup_net(client, cidr):
    net = client.network()
    sub = client.subnet(net["id"], cidr, enable_dhcp=False)
    return net, sub


def test_allocation_and_reuse_after_delete(client):
    net, sub = setup_net(client, "10.40.0.0/29")  # pool .2-.6: five addresses
    ports = [client.port(net["id"]) for _ in range(5)]
    addrs = {p["fixed_ips"][0]["ip_address"] for p in ports}
    assert addrs == {f"10.40.0.{i}" for i in range(2, 7)}
    assert len({p["mac_address"] for p in ports}) == 5
    assert all(p["mac_address"].startswith("fa:16:3e:") for p in ports)
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"],
                                                "fixed_ips": [{"subnet_id": sub["id"]}]}})
    assert r.status_code == 409 and error(r)["type"] == "IpAddressGenerationFailure"
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"]}})
    assert r.status_code == 409 and error(r)["type"] == "IpAddressGenerationFailure"
    bare = client.network()
    bare_port = client.port(bare["id"])
    assert bare_port["fixed_ips"] == []  # no subnet, no address
    freed = ports[2]["fixed_ips"][0]["ip_address"]
    client.call("DELETE", f"/ports/{ports[2]['id']}")
    again = client.port(net["id"])
    assert again["fixed_ips"][0]["ip_address"] == freed
    for p in ports[:2] + ports[3:] + [again]:
        client.call("DELETE", f"/ports/{p['id']}")
    client.call("DELETE", f"/networks/{net['id']}")
    client.call("DELETE", f"/ports/{bare_port['id']}")
    assert client.call("DELETE", f"/networks/{bare['id']}").status_code == 204


def test_requested_address_mac_and_conflicts(client):
    net, sub = setup_net(client, "10.41.0.0/24")
    p = client.port(net["id"], mac_address="fa:16:3e:aa:bb:cc",
                    fixed_ips=[{"ip_address": "10.41.0.77"}])
    assert p["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.41.0.77"}]
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"], "mac_address": "FA:16:3E:AA:BB:CC"}})
    assert r.status_code == 409 and error(r)["type"] == "MacAddressInUse"
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"],
                                                "fixed_ips": [{"ip_address": "10.41.0.77"}]}})
    assert r.status_code == 409 and error(r)["type"] == "IpAddressAlreadyAllocated"
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"],
                                                "fixed_ips": [{"ip_address": "10.41.0.1"}]}})
    assert r.status_code == 409  # the gateway
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"],
                                                "fixed_ips": [{"ip_address": "10.99.0.1"}]}})
    assert r.status_code == 400 and "fixed_ips" in error(r)["message"]
    client.call("DELETE", f"/ports/{p['id']}")
    client.call("DELETE", f"/networks/{net['id']}")


def test_update_fixed_ips_keeps_own_and_releases_old(client):
    net, sub = setup_net(client, "10.42.0.0/24")
    p = client.port(net["id"], fixed_ips=[{"ip_address": "10.42.0.10"}])
    r = client.call("PUT", f"/ports/{p['id']}", {"port": {"fixed_ips": [
        {"ip_address": "10.42.0.10"}, {"subnet_id": sub["id"], "ip_address": "10.42.0.11"}]}})
    assert r.status_code == 200
    r = client.call("PUT", f"/ports/{p['id']}", {"port": {"fixed_ips": [{"ip_address": "10.42.0.11"}]}})
    assert r.json()["port"]["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.42.0.11"}]
    q = client.port(net["id"], fixed_ips=[{"ip_address": "10.42.0.10"}])  # released above
    for x in (p, q):
        client.call("DELETE", f"/ports/{x['id']}")
    client.call("DELETE", f"/networks/{net['id']}")


def test_default_security_group_and_port_security(client):
    net, _ = setup_net(client, "10.43.0.0/24")
    p = client.port(net["id"])
    groups = client.call("GET", "/security-groups?name=default&project_id=admin").json()["security_groups"]
    assert len(groups) == 1 and p["security_groups"] == [groups[0]["id"]]
    rules = groups[0]["security_group_rules"]
    assert sorted((r["direction"], r["ethertype"], r["remote_group_id"] is not None) for r in rules) == [
        ("egress", "IPv4", False), ("egress", "IPv6", False),
        ("ingress", "IPv4", True), ("ingress", "IPv6", True)]
    assert all(r["remote_group_id"] in (None, groups[0]["id"]) for r in rules)
    q = client.port(net["id"], port_security_enabled=False)
    assert q["security_groups"] == [] and q["port_security_enabled"] is False
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"], "port_security_enabled": False,
                                                "security_groups": [groups[0]["id"]]}})
    assert r.status_code == 400
    r = client.call("DELETE", f"/security-groups/{groups[0]['id']}")
    assert r.status_code == 409 and error(r)["type"] == "SecurityGroupInUse"
    r = client.call("PUT", f"/ports/{p['id']}", {"port": {"port_security_enabled": False}})
    assert r.status_code == 400
    r = client.call("PUT", f"/ports/{p['id']}", {"port": {"port_security_enabled": False,
                                                          "security_groups": []}})
    assert r.status_code == 200
    for x in (p, q):
        client.call("DELETE", f"/ports/{x['id']}")
    client.call("DELETE", f"/networks/{net['id']}")


def test_binding_pairs_and_profile(client):
    net, _ = setup_net(client, "10.44.0.0/24")
    p = client.port(net["id"], **{"binding:host_id": "compute1",
                                  "binding:profile": {"interface_name": "vm1-eth0"},
                                  "device_id": "d1", "device_owner": "compute:nova",
                                  "allowed_address_pairs": [{"ip_address": "10.44.0.200"},
                                                            {"ip_address": "10.44.1.0/24",
                                                             "mac_address": "fa:16:3e:00:00:01"}]})
    assert p["binding:host_id"] == "compute1" and p["binding:vif_type"] == "ovs"
    assert p["allowed_address_pairs"] == [
        {"ip_address": "10.44.0.200", "mac_address": p["mac_address"]},
        {"ip_address": "10.44.1.0/24", "mac_address": "fa:16:3e:00:00:01"}]
    assert p["status"] == "DOWN" and p["admin_state_up"] is True
    r = client.call("POST", "/ports", {"port": {"network_id": net["id"],
                                                "binding:profile": {"interface_name": "x" * 20}}})
    assert r.status_code == 400 and "binding:profile.interface_name" in error(r)["message"]
    got = client.call("GET", "/ports?binding:host_id=compute1&device_owner=compute:nova").json()["ports"]
    assert [x["id"] for x in got] == [p["id"]]
    client.call("DELETE", f"/ports/{p['id']}")
    client.call("DELETE", f"/networks/{net['id']}")


def test_security_group_rules(client):
    sg = client.create("security-groups", "security_group", name="web")
    assert len(sg["security_group_rules"]) == 2  # Neutron's egress defaults
    rule = {"security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp",
            "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}
    client.create("security-group-rules", "security_group_rule", **rule)
    r = client.call("POST", "/security-group-rules", {"security_group_rule": rule})
    assert r.status_code == 409 and error(r)["type"] == "SecurityGroupRuleExists"
    bad = dict(rule, port_range_min=90)
    r = client.call("POST", "/security-group-rules", {"security_group_rule": bad})
    assert r.status_code == 400 and "port_range_min" in error(r)["message"]
    r = client.call("POST", "/security-group-rules", {"security_group_rule": dict(rule, protocol="bogus")})
    assert r.status_code == 400 and "protocol" in error(r)["message"]
    r = client.call("POST", "/security-group-rules", {"security_group_rule": dict(
        rule, remote_ip_prefix=None, remote_group_id=sg["id"], ethertype="IPv6")})
    assert r.status_code == 201
    shown = client.call("GET", f"/security-groups/{sg['id']}").json()["security_group"]
    assert len(shown["security_group_rules"]) == 4
    assert client.call("DELETE", f"/security-groups/{sg['id']}").status_code == 204
    left = client.call("GET", f"/security-group-rules?security_group_id={sg['id']}").json()
    assert left["security_group_rules"] == []
