"""Subnets: defaults, pools, overlaps, the DHCP port, in-use deletes."""
from __future__ import annotations

from apihelpers import error


def test_defaults_and_dhcp_port(client):
    net = client.network()
    sub = client.subnet(net["id"], "10.30.0.0/24", dns_nameservers=["8.8.8.8"],
                        host_routes=[{"destination": "10.99.0.0/16", "nexthop": "10.30.0.254"}])
    assert sub["gateway_ip"] == "10.30.0.1"
    assert sub["allocation_pools"] == [{"start": "10.30.0.2", "end": "10.30.0.254"}]
    assert sub["enable_dhcp"] is True and sub["ip_version"] == 4
    ports = client.call("GET", f"/ports?network_id={net['id']}").json()["ports"]
    assert len(ports) == 1
    dhcp = ports[0]
    assert dhcp["device_owner"] == "network:dhcp"
    assert dhcp["device_id"] == f"dhcp{net['id']}"
    assert dhcp["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.30.0.2"}]
    assert client.call("GET", f"/networks/{net['id']}").json()["network"]["subnets"] == [sub["id"]]

    second = client.subnet(net["id"], "10.31.0.0/24")
    dhcp = client.call("GET", f"/ports/{dhcp['id']}").json()["port"]
    assert {ip["ip_address"] for ip in dhcp["fixed_ips"]} == {"10.30.0.2", "10.31.0.2"}
    # The DHCP port alone never blocks a subnet delete; it loses that address.
    assert client.call("DELETE", f"/subnets/{second['id']}").status_code == 204
    dhcp = client.call("GET", f"/ports/{dhcp['id']}").json()["port"]
    assert dhcp["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.30.0.2"}]
    assert client.call("DELETE", f"/networks/{net['id']}").status_code == 204


def test_enable_dhcp_later_and_off_again(client):
    net = client.network()
    sub = client.subnet(net["id"], "10.32.0.0/24", enable_dhcp=False)
    assert client.call("GET", f"/ports?network_id={net['id']}").json()["ports"] == []
    client.call("PUT", f"/subnets/{sub['id']}", {"subnet": {"enable_dhcp": True}})
    ports = client.call("GET", f"/ports?network_id={net['id']}&device_owner=network:dhcp").json()["ports"]
    assert [p["fixed_ips"][0]["ip_address"] for p in ports] == ["10.32.0.2"]
    client.call("PUT", f"/subnets/{sub['id']}", {"subnet": {"enable_dhcp": False}})
    assert client.call("GET", f"/ports?network_id={net['id']}").json()["ports"] == []
    client.call("DELETE", f"/networks/{net['id']}")


def test_null_gateway_and_explicit_pools(client):
    net = client.network()
    sub = client.subnet(net["id"], "10.33.0.0/24", gateway_ip=None, enable_dhcp=False,
                        allocation_pools=[{"start": "10.33.0.100", "end": "10.33.0.110"}])
    assert sub["gateway_ip"] is None
    assert sub["allocation_pools"] == [{"start": "10.33.0.100", "end": "10.33.0.110"}]
    port = client.port(net["id"])
    assert 100 <= int(port["fixed_ips"][0]["ip_address"].rsplit(".", 1)[1]) <= 110
    client.call("DELETE", f"/ports/{port['id']}")
    client.call("DELETE", f"/networks/{net['id']}")


def test_overlap_same_network_refused_other_network_allowed(client):
    a, b = client.network(), client.network()
    client.subnet(a["id"], "10.34.0.0/24")
    r = client.call("POST", "/subnets", {"subnet": {"network_id": a["id"], "cidr": "10.34.0.128/25"}})
    assert r.status_code == 400 and "cidr" in error(r)["message"]
    client.subnet(b["id"], "10.34.0.0/24")
    for n in (a, b):
        client.call("DELETE", f"/networks/{n['id']}")


def test_subnet_with_port_is_in_use(client):
    net = client.network()
    sub = client.subnet(net["id"], "10.35.0.0/24")
    port = client.port(net["id"])
    r = client.call("DELETE", f"/subnets/{sub['id']}")
    assert r.status_code == 409 and error(r)["type"] == "SubnetInUse"
    client.call("DELETE", f"/ports/{port['id']}")
    assert client.call("DELETE", f"/subnets/{sub['id']}").status_code == 204
    client.call("DELETE", f"/networks/{net['id']}")


def test_gateway_update_checks_pools(client):
    net = client.network()
    sub = client.subnet(net["id"], "10.36.0.0/24", enable_dhcp=False)
    r = client.call("PUT", f"/subnets/{sub['id']}", {"subnet": {"gateway_ip": "10.36.0.50"}})
    assert r.status_code == 400 and "allocation_pools" in error(r)["message"]
    r = client.call("PUT", f"/subnets/{sub['id']}", {"subnet": {
        "gateway_ip": "10.36.0.254", "allocation_pools": [{"start": "10.36.0.1", "end": "10.36.0.253"}]}})
    assert r.status_code == 200 and r.json()["subnet"]["gateway_ip"] == "10.36.0.254"
    r = client.call("PUT", f"/subnets/{sub['id']}", {"subnet": {"cidr": "10.37.0.0/24"}})
    assert r.status_code == 400 and "cidr" in error(r)["message"]
    client.call("DELETE", f"/networks/{net['id']}")
