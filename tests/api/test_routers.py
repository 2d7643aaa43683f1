"""Routers and router interfaces, as Neutron answers them (router, extraroute, dvr)."""
from __future__ import annotations

from apihelpers import error


def _two_subnets(client, a="10.61.1.0/24", b="10.61.2.0/24"):
    n1, n2 = client.network(name="r1"), client.network(name="r2")
    return n1, n2, client.subnet(n1["id"], a), client.subnet(n2["id"], b)


def test_router_lifecycle_and_interfaces(client):
    r = client.create("routers", "router", name="r", routes=[])
    assert r["status"] == "ACTIVE" and r["distributed"] is True and r["ha"] is False
    assert r["admin_state_up"] is True and r["external_gateway_info"] is None
    assert "_key" not in r
    n1, n2, s1, s2 = _two_subnets(client)
    got = client.call("PUT", f"/routers/{r['id']}/add_router_interface", {"subnet_id": s1["id"]})
    assert got.status_code == 200, got.text
    info = got.json()
    assert set(info) >= {"id", "subnet_id", "subnet_ids", "port_id", "network_id", "tenant_id"}
    assert info["id"] == r["id"] and info["subnet_id"] == s1["id"] and info["subnet_ids"] == [s1["id"]]
    assert info["network_id"] == n1["id"]
    port = client.call("GET", f"/ports/{info['port_id']}").json()["port"]
    assert port["device_owner"] == "network:router_interface_distributed"
    assert port["device_id"] == r["id"]
    assert port["fixed_ips"] == [{"subnet_id": s1["id"], "ip_address": s1["gateway_ip"]}]
    # by port: that port's address becomes the interface
    p2 = client.port(n2["id"], fixed_ips=[{"subnet_id": s2["id"], "ip_address": "10.61.2.254"}])
    info2 = client.call("PUT", f"/routers/{r['id']}/add_router_interface",
                        {"port_id": p2["id"]}).json()
    assert info2["port_id"] == p2["id"] and info2["subnet_id"] == s2["id"]
    p2 = client.call("GET", f"/ports/{p2['id']}").json()["port"]
    assert p2["device_owner"] == "network:router_interface_distributed"
    # static routes: the nexthop must be on a connected subnet
    bad = client.call("PUT", f"/routers/{r['id']}",
                      {"router": {"routes": [{"destination": "192.168.9.0/24",
                                              "nexthop": "10.99.0.5"}]}})
    assert bad.status_code == 400 and "nexthop" in error(bad)["message"]
    ok = client.call("PUT", f"/routers/{r['id']}",
                     {"router": {"routes": [{"destination": "192.168.9.0/24",
                                             "nexthop": "10.61.2.7"}]}})
    assert ok.status_code == 200 and ok.json()["router"]["routes"][0]["nexthop"] == "10.61.2.7"
    # interfaces hold their subnets and networks
    for path in (f"/routers/{r['id']}", f"/subnets/{s1['id']}", f"/networks/{n1['id']}",
                 f"/ports/{info['port_id']}"):
        got = client.call("DELETE", path)
        assert got.status_code == 409, (path, got.text)
    # the route needs s2's interface
    got = client.call("PUT", f"/routers/{r['id']}/remove_router_interface", {"subnet_id": s2["id"]})
    assert got.status_code == 409
    client.call("PUT", f"/routers/{r['id']}", {"router": {"routes": []}})
    for body in ({"subnet_id": s1["id"]}, {"port_id": p2["id"]}):
        got = client.call("PUT", f"/routers/{r['id']}/remove_router_interface", body)
        assert got.status_code == 200 and got.json()["id"] == r["id"]
    assert client.call("GET", f"/ports/{info['port_id']}").status_code == 404
    assert client.call("GET", f"/ports/{p2['id']}").status_code == 404
    assert client.call("DELETE", f"/subnets/{s1['id']}").status_code == 204
    assert client.call("DELETE", f"/routers/{r['id']}").status_code == 204
    assert client.call("GET", f"/routers/{r['id']}").status_code == 404


def test_router_refusals(client):
    r = client.create("routers", "router", name="refuse")
    n1, n2, s1, s2 = _two_subnets(client, "10.62.0.0/16", "10.62.5.0/24")
    assert client.call("PUT", f"/routers/{r['id']}/add_router_interface",
                       {"subnet_id": s1["id"]}).status_code == 200
    overlap = client.call("PUT", f"/routers/{r['id']}/add_router_interface", {"subnet_id": s2["id"]})
    assert overlap.status_code == 409 and "overlaps" in error(overlap)["message"]
    # nothing half-written: no interface port on n2
    assert not [p for p in client.call("GET", f"/ports?network_id={n2['id']}").json()["ports"]
                if p["device_owner"].startswith("network:router")]
    for body, field in (({"router": {"distributed": False}}, "distributed"),
                        ({"router": {"ha": True}}, "ha")):
        got = client.call("PUT", f"/routers/{r['id']}", body)
        assert got.status_code == 400 and field in error(got)["message"]
    got = client.call("POST", "/routers", {"router": {"routes": [{"destination": "1.2.3.0/24",
                                                                  "nexthop": "9.9.9.9"}]}})
    assert got.status_code == 400
    got = client.call("PUT", f"/routers/{r['id']}/add_router_interface", {})
    assert got.status_code == 400
    got = client.call("PUT", f"/routers/{r['id']}/add_router_interface",
                      {"subnet_id": "not-a-uuid"})
    assert got.status_code == 400 and "subnet_id" in error(got)["message"]
    # a second router on the same subnet: its gateway is taken
    r2 = client.create("routers", "router", name="second")
    got = client.call("PUT", f"/routers/{r2['id']}/add_router_interface", {"subnet_id": s1["id"]})
    assert got.status_code == 409
    listed = client.call("GET", "/routers").json()["routers"]
    assert {r["id"], r2["id"]} <= {x["id"] for x in listed}
    ext = {e["alias"] for e in client.call("GET", "/extensions").json()["extensions"]}
    assert {"router", "extraroute", "dvr"} <= ext
