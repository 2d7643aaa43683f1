"""Port forwardings of floating IPs (Neutron's floating-ip-port-forwarding,
with port ranges and descriptions)."""
from __future__ import annotations

from apihelpers import error
from exthelpers import external_network, fip, router_with_gateway, tenant_subnet, world


def _pf(client, fip_id, **attrs):
    return client.call("POST", f"/floatingips/{fip_id}/port_forwardings",
                       {"port_forwarding": attrs})


def _ssh(port, **kw):
    return dict(protocol="tcp", internal_port_id=port["id"],
                internal_ip_address=port["fixed_ips"][0]["ip_address"],
                internal_port=22, external_port=2222, **kw)


def test_port_forwarding_lifecycle(client):
    w = world(client, "192.0.2.0/26", "10.90.1.0/24")
    f = fip(client, w["ext"]["id"]).json()["floatingip"]
    got = _pf(client, f["id"], **_ssh(w["port"], description="ssh"))
    assert got.status_code == 201, got.text
    pf = got.json()["port_forwarding"]
    assert pf == {"id": pf["id"], "protocol": "tcp", "internal_port_id": w["port"]["id"],
                  "internal_ip_address": w["port"]["fixed_ips"][0]["ip_address"],
                  "internal_port": 22, "external_port": 2222, "internal_port_range": "22:22",
                  "external_port_range": "2222:2222", "description": "ssh"}
    # the floating IP now goes through the forwarding's router and shows it
    shown = client.call("GET", f"/floatingips/{f['id']}").json()["floatingip"]
    assert shown["router_id"] == w["router"]["id"] and shown["port_id"] is None
    assert shown["port_forwardings"] == [{"protocol": "tcp", "internal_port": 22,
                                          "external_port": 2222,
                                          "internal_ip_address": pf["internal_ip_address"]}]
    assert client.call("GET", f"/floatingips/{f['id']}/port_forwardings/{pf['id']}").json()[
        "port_forwarding"] == pf
    # ranges: equal lengths, or one internal port for an external range
    r1 = _pf(client, f["id"], protocol="udp", internal_port_id=w["port"]["id"],
             internal_ip_address=pf["internal_ip_address"], internal_port_range="3000:3010",
             external_port_range="4000:4010")
    assert r1.status_code == 201, r1.text
    assert r1.json()["port_forwarding"]["internal_port"] is None
    r2 = _pf(client, f["id"], protocol="tcp", internal_port_id=w["port"]["id"],
             internal_ip_address=pf["internal_ip_address"], internal_port_range="8080",
             external_port_range="8000:8009")
    assert r2.status_code == 201, r2.text
    assert r2.json()["port_forwarding"]["internal_port"] == 8080
    assert r2.json()["port_forwarding"]["internal_port_range"] == "8080:8080"
    # the same external port on the other protocol is another forwarding
    assert _pf(client, f["id"], **dict(_ssh(w["port"]), protocol="udp",
                                       internal_port=23)).status_code == 201
    # list, with filters
    listed = client.call("GET", f"/floatingips/{f['id']}/port_forwardings").json()
    assert len(listed["port_forwardings"]) == 4
    for query, n in (("protocol=udp", 2), ("external_port=2222", 2),
                     (f"internal_port_id={w['port']['id']}", 4),
                     ("external_port_range=4000:4010", 1)):
        got = client.call("GET", f"/floatingips/{f['id']}/port_forwardings?{query}")
        assert len(got.json()["port_forwardings"]) == n, query
    got = client.call("GET", f"/floatingips/{f['id']}/port_forwardings?bogus=1")
    assert got.status_code == 400 and "bogus" in error(got)["message"]
    # update: a new external port; a conflicting one changes nothing
    got = client.call("PUT", f"/floatingips/{f['id']}/port_forwardings/{pf['id']}",
                      {"port_forwarding": {"external_port": 2022}})
    assert got.status_code == 200, got.text
    assert got.json()["port_forwarding"]["external_port_range"] == "2022:2022"
    got = client.call("PUT", f"/floatingips/{f['id']}/port_forwardings/{pf['id']}",
                      {"port_forwarding": {"external_port": 8005}})
    assert got.status_code == 409
    got = client.call("GET", f"/floatingips/{f['id']}/port_forwardings/{pf['id']}")
    assert got.json()["port_forwarding"]["external_port"] == 2022
    # delete: the last one gone, the floating IP holds no router
    for x in client.call("GET", f"/floatingips/{f['id']}/port_forwardings").json()[
            "port_forwardings"]:
        got = client.call("DELETE", f"/floatingips/{f['id']}/port_forwardings/{x['id']}")
        assert got.status_code == 204
    assert client.call("GET", f"/floatingips/{f['id']}/port_forwardings/{pf['id']}"
                       ).status_code == 404
    assert client.call("GET", f"/floatingips/{f['id']}").json()["floatingip"]["router_id"] is None


def test_port_forwarding_refusals(client):
    w = world(client, "192.0.2.64/26", "10.90.2.0/24")
    port = w["port"]
    f = fip(client, w["ext"]["id"]).json()["floatingip"]
    assert _pf(client, f["id"], **_ssh(port)).status_code == 201
    # the same external port and protocol, or an overlapping range: 409
    dup = _pf(client, f["id"], **dict(_ssh(port), internal_port=23))
    assert dup.status_code == 409 and error(dup)["type"] == "PortForwardingConflict"
    over = _pf(client, f["id"], protocol="tcp", internal_port_id=port["id"],
               internal_ip_address=port["fixed_ips"][0]["ip_address"],
               internal_port_range="5000:5009", external_port_range="2220:2229")
    assert over.status_code == 409
    # the same internal socket twice, even from another floating IP
    f2 = fip(client, w["ext"]["id"]).json()["floatingip"]
    same = _pf(client, f2["id"], **dict(_ssh(port), external_port=2200))
    assert same.status_code == 409
    # bad input: 400 naming the field
    ip = port["fixed_ips"][0]["ip_address"]
    not_its = "10.90.2.250" if ip != "10.90.2.250" else "10.90.2.251"   # addresses are random
    base = dict(protocol="tcp", internal_port_id=port["id"], internal_ip_address=ip)
    for attrs, field in (
            (dict(base, protocol="icmp", internal_port=1, external_port=1), "protocol"),
            (dict(base, internal_port=0, external_port=1), "internal_port"),
            (dict(base, internal_port=1, external_port=70000), "external_port"),
            (dict(base, internal_port=1), "external_port"),
            (dict(base, external_port=1), "internal_port"),
            (dict(base, internal_port=1, internal_port_range="1:2", external_port=3),
             "internal_port_range"),
            (dict(base, internal_port_range="10:20", external_port_range="30:35"),
             "internal_port_range"),
            (dict(base, internal_port_range="20:10", external_port_range="30:40"),
             "internal_port_range"),
            (dict(base, internal_port_range="a:b", external_port_range="30:40"),
             "internal_port_range"),
            (dict(base, internal_ip_address=not_its, internal_port=1, external_port=9),
             "internal_ip_address"),
            (dict(base, internal_port_id="x", internal_port=1, external_port=9),
             "internal_port_id"),
            (dict(base, internal_port=1, external_port=9, floatingip_id=f["id"]),
             "floatingip_id"),
            (dict(base, internal_port=1, external_port=9, project_id="other"), "project_id"),
    ):
        got = _pf(client, f2["id"], **attrs)
        assert got.status_code == 400, (attrs, got.text)
        assert field in error(got)["message"], (attrs, error(got)["message"])
    assert client.call("GET", f"/floatingips/{f2['id']}/port_forwardings").json()[
        "port_forwardings"] == []
    # the internal port's subnet must reach the floating IP's network
    lonely_net, lonely_sub = tenant_subnet(client, "10.90.3.0/24")
    lonely = client.port(lonely_net["id"])
    got = _pf(client, f2["id"], **_ssh(lonely))
    assert got.status_code == 404 and error(got)["type"] == "ExternalGatewayForFloatingIPNotFound"
    assert f"not reachable from subnet {lonely_sub['id']}" in error(got)["message"]
    # forwardings of one floating IP go through one router
    r2 = router_with_gateway(client, w["ext"])
    client.call("PUT", f"/routers/{r2['id']}/add_router_interface", {"subnet_id": lonely_sub["id"]})
    got = _pf(client, f["id"], **dict(_ssh(lonely), external_port=2300))
    assert got.status_code == 400 and "internal_port_id" in error(got)["message"]
    # a floating IP with forwardings cannot be bound to a port ...
    got = client.call("PUT", f"/floatingips/{f['id']}", {"floatingip": {"port_id": port["id"]}})
    assert got.status_code == 409 and error(got)["type"] == "FipInUseByPortForwarding"
    # ... and a bound one takes no forwardings
    bound = fip(client, w["ext"]["id"], port_id=lonely["id"]).json()["floatingip"]
    got = _pf(client, bound["id"], **dict(_ssh(port), external_port=2400))
    assert got.status_code == 409 and error(got)["type"] == "FloatingIPPortAlreadyAssociated"
    # a port with a floating IP of its own is no forwarding's target
    got = _pf(client, f2["id"], **dict(_ssh(lonely), external_port=2500))
    assert got.status_code == 409 and error(got)["type"] == "PortHasBindingFloatingIP"
    # the router's interface and gateway are needed by the forwarding
    got = client.call("PUT", f"/routers/{w['router']['id']}/remove_router_interface",
                      {"subnet_id": w["subnet"]["id"]})
    assert got.status_code == 409 and error(got)["type"] == "RouterInterfaceInUseByFloatingIP"
    got = client.call("PUT", f"/routers/{w['router']['id']}",
                      {"router": {"external_gateway_info": None}})
    assert got.status_code == 409
    # unknown floating IP / forwarding
    assert _pf(client, "0c8f6a4e-2a0e-4b35-9d7e-1c2b3a4d5e6f", **_ssh(port)).status_code == 404
    got = client.call("GET", f"/floatingips/{f['id']}/port_forwardings/"
                             "0c8f6a4e-2a0e-4b35-9d7e-1c2b3a4d5e6f")
    assert got.status_code == 404 and error(got)["type"] == "PortForwardingNotFound"


def test_forwardings_go_with_their_port_and_their_floating_ip(client):
    w = world(client, "192.0.2.128/26", "10.90.4.0/24")
    f = fip(client, w["ext"]["id"]).json()["floatingip"]
    pf = _pf(client, f["id"], **_ssh(w["port"])).json()["port_forwarding"]
    # deleting the internal port deletes its forwardings (Neutron's way)
    assert client.call("DELETE", f"/ports/{w['port']['id']}").status_code == 204
    assert client.call("GET", f"/floatingips/{f['id']}/port_forwardings/{pf['id']}"
                       ).status_code == 404
    shown = client.call("GET", f"/floatingips/{f['id']}").json()["floatingip"]
    assert shown["port_forwardings"] == [] and shown["router_id"] is None
    # deleting the floating IP deletes its forwardings
    p2 = client.port(w["net"]["id"])
    pf2 = _pf(client, f["id"], **_ssh(p2)).json()["port_forwarding"]
    assert client.call("DELETE", f"/floatingips/{f['id']}").status_code == 204
    # the internal socket is free again for another floating IP
    f2 = fip(client, w["ext"]["id"]).json()["floatingip"]
    got = _pf(client, f2["id"], **_ssh(p2))
    assert got.status_code == 201, got.text
    assert got.json()["port_forwarding"]["id"] != pf2["id"]
    # and with nothing through it the router lets its interface go... after the forwarding
    client.call("DELETE", f"/floatingips/{f2['id']}")
    got = client.call("PUT", f"/routers/{w['router']['id']}/remove_router_interface",
                      {"subnet_id": w["subnet"]["id"]})
    assert got.status_code == 200, got.text


def test_another_projects_port_is_not_a_target(make_api):
    from apihelpers import Client
    tokens = {"admin-token": {"project_id": "ops", "role": "admin"},
              "alice-token": {"project_id": "alice", "role": "member"},
              "bob-token": {"project_id": "bob", "role": "member"}}
    server = make_api(auth=tokens)
    admin = Client(server.url, "admin-token")
    alice, bob = Client(server.url, "alice-token"), Client(server.url, "bob-token")
    ext, _ = external_network(admin, "192.0.2.192/26")
    wa_router = router_with_gateway(alice, ext)
    na, _ = tenant_subnet(alice, "10.91.1.0/24", wa_router)
    pa = alice.port(na["id"])
    rb = router_with_gateway(bob, ext)
    nb, _ = tenant_subnet(bob, "10.91.2.0/24", rb)
    pb = bob.port(nb["id"])
    fa = fip(alice, ext["id"]).json()["floatingip"]
    assert _pf(alice, fa["id"], **_ssh(pa)).status_code == 201
    got = _pf(alice, fa["id"], **dict(_ssh(pb), external_port=2000))
    assert got.status_code == 404 and error(got)["type"] == "PortNotFound"
    # bob sees neither alice's floating IP nor its forwardings
    assert bob.call("GET", f"/floatingips/{fa['id']}/port_forwardings").status_code == 404
    assert _pf(bob, fa["id"], **dict(_ssh(pb), external_port=2001)).status_code == 404
