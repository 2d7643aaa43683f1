"""Floating IPs (Neutron's /v2.0/floatingips): allocation, binding, the derived
router, filters, and every refusal."""
from __future__ import annotations

from apihelpers import Client, error
from exthelpers import count, external_network, fip, router_with_gateway, tenant_subnet, world


def test_floating_ip_lifecycle(client, api):
    w = world(client, "203.0.113.0/24", "10.80.1.0/24")
    got = fip(client, w["ext"]["id"], description="web", tags=["blue"])
    assert got.status_code == 201, got.text
    f = got.json()["floatingip"]
    assert f["floating_network_id"] == w["ext"]["id"] and f["status"] == "DOWN"
    assert f["port_id"] is None and f["fixed_ip_address"] is None and f["router_id"] is None
    assert f["floating_ip_address"].startswith("203.0.113.") and f["description"] == "web"
    assert f["tags"] == ["blue"] and f["port_forwardings"] == [] and f["port_details"] is None
    assert f["project_id"] == f["tenant_id"] and "_key" not in f and f["revision_number"] == 0
    # bind: fixed IP and router derived
    got = client.call("PUT", f"/floatingips/{f['id']}",
                      {"floatingip": {"port_id": w["port"]["id"]}})
    assert got.status_code == 200, got.text
    b = got.json()["floatingip"]
    assert b["port_id"] == w["port"]["id"] and b["router_id"] == w["router"]["id"]
    assert b["fixed_ip_address"] == w["port"]["fixed_ips"][0]["ip_address"]
    assert b["status"] == "DOWN" and b["port_details"]["mac_address"] == w["port"]["mac_address"]
    assert b["revision_number"] == 1
    # bound, the status is the controller's: the API leaves it as it is
    store = api.open_store()
    try:
        with store.transaction() as txn:
            doc = txn.get("floatingips", f["id"])
            doc["status"] = "ACTIVE"
            txn.put("floatingips", f["id"], doc, project_id=doc["project_id"])
    finally:
        store.close()
    got = client.call("PUT", f"/floatingips/{f['id']}", {"floatingip": {"description": "x"}})
    assert got.json()["floatingip"]["status"] == "ACTIVE"
    # unbind: DOWN, no router
    got = client.call("PUT", f"/floatingips/{f['id']}", {"floatingip": {"port_id": None}})
    u = got.json()["floatingip"]
    assert u["status"] == "DOWN" and u["port_id"] is None and u["router_id"] is None
    assert u["fixed_ip_address"] is None and u["description"] == "x"
    # create bound in one step
    f2 = fip(client, w["ext"]["id"], port_id=w["port"]["id"]).json()["floatingip"]
    assert f2["router_id"] == w["router"]["id"] and f2["status"] == "DOWN"
    # delete frees the address
    assert client.call("DELETE", f"/floatingips/{f['id']}").status_code == 204
    assert client.call("GET", f"/floatingips/{f['id']}").status_code == 404
    again = fip(client, w["ext"]["id"], floating_ip_address=f["floating_ip_address"])
    assert again.status_code == 201, again.text


def test_list_filters(client):
    w = world(client, "203.0.114.0/24", "10.80.2.0/24")
    ext2, _ = external_network(client, "203.0.115.0/24")
    bound = fip(client, w["ext"]["id"], port_id=w["port"]["id"], tags=["a", "b"]).json()["floatingip"]
    free = fip(client, w["ext"]["id"], tags=["b"]).json()["floatingip"]
    other = fip(client, ext2["id"], project_id="someone").json()["floatingip"]
    mine = {bound["id"], free["id"], other["id"]}

    def ids(query):
        got = client.call("GET", f"/floatingips?{query}")
        assert got.status_code == 200, got.text
        return {x["id"] for x in got.json()["floatingips"]} & mine

    assert ids(f"port_id={w['port']['id']}") == {bound["id"]}
    assert ids(f"floating_network_id={w['ext']['id']}") == {bound["id"], free["id"]}
    assert ids(f"floating_ip_address={free['floating_ip_address']}") == {free["id"]}
    assert ids(f"router_id={w['router']['id']}") == {bound["id"]}
    assert ids(f"fixed_ip_address={bound['fixed_ip_address']}") == {bound["id"]}
    assert ids("project_id=someone") == {other["id"]}
    assert ids("tenant_id=someone") == {other["id"]}
    assert ids("tags=a,b") == {bound["id"]}
    assert ids("tags-any=b") == {bound["id"], free["id"]}
    assert ids("not-tags=a") == {free["id"], other["id"]}
    assert ids("status=DOWN") == mine
    got = client.call("GET", f"/floatingips?floating_network_id={w['ext']['id']}"
                             "&fields=floating_ip_address&fields=id")
    assert all(set(x) == {"id", "floating_ip_address"} for x in got.json()["floatingips"])
    got = client.call("GET", "/floatingips?bogus=1")
    assert got.status_code == 400 and "bogus" in error(got)["message"]
    # tags through the tags API too
    assert client.call("PUT", f"/floatingips/{free['id']}/tags/c").status_code == 201
    assert ids("tags=c") == {free["id"]}


def test_bad_input_is_a_400_naming_the_field(client):
    w = world(client, "203.0.116.0/24", "10.80.3.0/24")
    tenant_net = w["net"]
    before = count(client, "/floatingips", "floatingips")
    cases = [
        ({"floating_network_id": "nope"}, "floating_network_id"),
        ({}, "floating_network_id"),
        ({"floating_network_id": tenant_net["id"]}, "floating_network_id"),
        ({"floating_network_id": w["ext"]["id"], "floating_ip_address": "203.0.116"},
         "floating_ip_address"),
        ({"floating_network_id": w["ext"]["id"], "floating_ip_address": "10.0.0.5"},
         "floating_ip_address"),
        ({"floating_network_id": w["ext"]["id"], "floating_ip_address": "203.0.116.255"},
         "floating_ip_address"),
        ({"floating_network_id": w["ext"]["id"], "subnet_id": w["subnet"]["id"]}, "subnet_id"),
        ({"floating_network_id": w["ext"]["id"], "port_id": "x"}, "port_id"),
        ({"floating_network_id": w["ext"]["id"], "fixed_ip_address": "10.80.3.5"}, "port_id"),
        ({"floating_network_id": w["ext"]["id"], "port_id": w["port"]["id"],
          "fixed_ip_address": "10.80.3.250"}, "fixed_ip_address"),
        ({"floating_network_id": w["ext"]["id"], "router_id": w["router"]["id"]}, "router_id"),
        ({"floating_network_id": w["ext"]["id"], "status": "ACTIVE"}, "status"),
        ({"floating_network_id": w["ext"]["id"], "description": 5}, "description"),
    ]
    for body, field in cases:
        got = client.call("POST", "/floatingips", {"floatingip": body})
        assert got.status_code == 400, (body, got.text)
        assert field in error(got)["message"], (body, error(got)["message"])
    # a port of the router itself is not a floating IP's target
    iface = [p for p in client.call("GET", f"/ports?device_id={w['router']['id']}").json()["ports"]
             if p["device_owner"] == "network:router_interface_distributed"][0]
    got = fip(client, w["ext"]["id"], port_id=iface["id"])
    assert got.status_code == 400 and "port_id" in error(got)["message"]
    assert count(client, "/floatingips", "floatingips") == before
    f = fip(client, w["ext"]["id"]).json()["floatingip"]
    for body, field in (({"floating_ip_address": "203.0.116.9"}, "floating_ip_address"),
                        ({"floating_network_id": w["ext"]["id"]}, "floating_network_id"),
                        ({"port_id": None, "fixed_ip_address": "10.80.3.5"}, "fixed_ip_address")):
        got = client.call("PUT", f"/floatingips/{f['id']}", {"floatingip": body})
        assert got.status_code == 400 and field in error(got)["message"], got.text
    got = fip(client, "5d9a0f3e-0c7c-4a8e-a0f4-0c3a9b1d6e21")
    assert got.status_code == 404 and error(got)["type"] == "NetworkNotFound"


def test_refusals_as_neutron(client):
    w = world(client, "203.0.117.0/24", "10.80.4.0/24")
    ext = w["ext"]
    # no router joins this subnet to the external network
    lonely_net, lonely_sub = tenant_subnet(client, "10.80.5.0/24")
    lonely = client.port(lonely_net["id"])
    before = count(client, "/floatingips", "floatingips")
    got = fip(client, ext["id"], port_id=lonely["id"])
    assert got.status_code == 404
    body = error(got)
    assert body["type"] == "ExternalGatewayForFloatingIPNotFound"
    assert body["message"].startswith(f"External network {ext['id']} is not reachable from "
                                      f"subnet {lonely_sub['id']}.")
    assert count(client, "/floatingips", "floatingips") == before
    # a router on the subnet, but its gateway is elsewhere: still not reachable
    ext2, _ = external_network(client, "203.0.118.0/24")
    r2 = router_with_gateway(client, ext2)
    client.call("PUT", f"/routers/{r2['id']}/add_router_interface", {"subnet_id": lonely_sub["id"]})
    got = fip(client, ext["id"], port_id=lonely["id"])
    assert got.status_code == 404 and error(got)["type"] == "ExternalGatewayForFloatingIPNotFound"
    # several IPv4 addresses: fixed_ip_address is required
    two = client.port(w["net"]["id"], fixed_ips=[{"subnet_id": w["subnet"]["id"]},
                                                 {"subnet_id": w["subnet"]["id"]}])
    got = fip(client, ext["id"], port_id=two["id"])
    assert got.status_code == 400 and "fixed_ip_address" in error(got)["message"]
    a, b = (ip["ip_address"] for ip in two["fixed_ips"])
    fa = fip(client, ext["id"], port_id=two["id"], fixed_ip_address=a).json()["floatingip"]
    # two floating IPs on one instance, one per fixed IP (seed 004)
    fb = fip(client, ext["id"], port_id=two["id"], fixed_ip_address=b).json()["floatingip"]
    assert (fa["fixed_ip_address"], fb["fixed_ip_address"]) == (a, b)
    # that fixed IP already has one on this network
    got = fip(client, ext["id"], port_id=two["id"], fixed_ip_address=a)
    assert got.status_code == 409 and error(got)["type"] == "FloatingIPPortAlreadyAssociated"
    free = fip(client, ext["id"]).json()["floatingip"]
    got = client.call("PUT", f"/floatingips/{free['id']}",
                      {"floatingip": {"port_id": two["id"], "fixed_ip_address": b}})
    assert got.status_code == 409 and error(got)["type"] == "FloatingIPPortAlreadyAssociated"
    assert client.call("GET", f"/floatingips/{free['id']}").json()["floatingip"]["port_id"] is None
    # rebinding a floating IP to its own fixed IP is no conflict with itself
    got = client.call("PUT", f"/floatingips/{fa['id']}",
                      {"floatingip": {"port_id": two["id"], "fixed_ip_address": a}})
    assert got.status_code == 200, got.text
    # the router's interface and gateway are needed by the bound floating IPs
    got = client.call("PUT", f"/routers/{w['router']['id']}/remove_router_interface",
                      {"subnet_id": w["subnet"]["id"]})
    assert got.status_code == 409 and error(got)["type"] == "RouterInterfaceInUseByFloatingIP"
    for info in (None, {"network_id": ext2["id"]}):
        got = client.call("PUT", f"/routers/{w['router']['id']}",
                          {"router": {"external_gateway_info": info}})
        assert got.status_code == 409, got.text
        assert error(got)["type"] == "RouterExternalGatewayInUseByFloatingIp"
    # the external network and subnet hold their floating IPs
    assert client.call("DELETE", f"/subnets/{w['ext_subnet']['id']}").status_code == 409
    assert client.call("DELETE", f"/networks/{ext['id']}").status_code == 409
    # deleting the port disassociates its floating IPs (Neutron's way)
    assert client.call("DELETE", f"/ports/{two['id']}").status_code == 204
    for f in (fa, fb):
        got = client.call("GET", f"/floatingips/{f['id']}").json()["floatingip"]
        assert got["port_id"] is None and got["status"] == "DOWN" and got["router_id"] is None
    # a port that loses the bound fixed IP loses the binding too
    p = client.port(w["net"]["id"])
    fp = fip(client, ext["id"], port_id=p["id"]).json()["floatingip"]
    got = client.call("PUT", f"/ports/{p['id']}", {"port": {"fixed_ips": [
        {"subnet_id": w["subnet"]["id"], "ip_address": "10.80.4.200"}]}})
    assert got.status_code == 200, got.text
    assert client.call("GET", f"/floatingips/{fp['id']}").json()["floatingip"]["port_id"] is None
    # with nothing bound the interface and gateway may go
    got = client.call("PUT", f"/routers/{w['router']['id']}/remove_router_interface",
                      {"subnet_id": w["subnet"]["id"]})
    assert got.status_code == 200, got.text


def test_an_exhausted_pool_is_a_409(client):
    ext, sub = external_network(client, "203.0.119.0/24", allocation_pools=[
        {"start": "203.0.119.10", "end": "203.0.119.11"}])
    got = [fip(client, ext["id"]) for _ in range(2)]
    assert [g.status_code for g in got] == [201, 201]
    over = fip(client, ext["id"])
    assert over.status_code == 409 and error(over)["type"] == "IpAddressGenerationFailure"
    taken = fip(client, ext["id"], floating_ip_address="203.0.119.10")
    assert taken.status_code == 409 and error(taken)["type"] == "IpAddressAlreadyAllocated"
    # the subnet's gateway is not a floating IP
    gw = fip(client, ext["id"], floating_ip_address="203.0.119.1")
    assert gw.status_code == 409
    # outside the pools but inside the subnet: an admin may take it, as in Neutron
    assert fip(client, ext["id"], floating_ip_address="203.0.119.50").status_code == 201


def test_floatingip_quota(client):
    ext, _ = external_network(client, "203.0.120.0/24")
    r = client.call("PUT", "/quotas/fipquota", {"quota": {"floatingip": 1}})
    assert r.status_code == 200, r.text
    assert fip(client, ext["id"], project_id="fipquota").status_code == 201
    over = fip(client, ext["id"], project_id="fipquota")
    assert over.status_code == 409 and error(over)["type"] == "OverQuota"
    details = client.call("GET", "/quotas/fipquota/details").json()["quota"]
    assert details["floatingip"] == {"limit": 1, "used": 1, "reserved": 0}


TOKENS = {"admin-token": {"project_id": "ops", "role": "admin"},
          "alice-token": {"project_id": "alice", "role": "member"},
          "bob-token": {"project_id": "bob", "role": "member"}}


def test_tenancy(make_api):
    server = make_api(auth=TOKENS)
    admin = Client(server.url, "admin-token")
    alice, bob = Client(server.url, "alice-token"), Client(server.url, "bob-token")
    ext, _ = external_network(admin, "203.0.121.0/24")

    def tenant(c, cidr):
        r = router_with_gateway(c, ext)
        net, _ = tenant_subnet(c, cidr, r)
        return r, c.port(net["id"])

    ra, pa = tenant(alice, "10.81.1.0/24")
    rb, pb = tenant(bob, "10.81.2.0/24")
    # a member takes floating IPs from an external network it does not own
    fa = fip(alice, ext["id"], port_id=pa["id"])
    assert fa.status_code == 201, fa.text
    fa = fa.json()["floatingip"]
    assert fa["project_id"] == "alice" and fa["router_id"] == ra["id"]
    # ... but not a chosen address: that is the operator's
    got = fip(alice, ext["id"], floating_ip_address="203.0.121.77")
    assert got.status_code == 403 and "floating_ip_address" in error(got)["message"]
    # another project's port is not there for alice
    got = fip(alice, ext["id"], port_id=pb["id"])
    assert got.status_code == 404 and error(got)["type"] == "PortNotFound"
    got = alice.call("PUT", f"/floatingips/{fa['id']}", {"floatingip": {"port_id": pb["id"]}})
    assert got.status_code == 404
    # nor another project's floating IP
    fb = fip(bob, ext["id"]).json()["floatingip"]
    for method, body in (("GET", None), ("PUT", {"floatingip": {"description": "x"}}),
                         ("DELETE", None)):
        assert alice.call(method, f"/floatingips/{fb['id']}", body).status_code == 404
    assert {f["id"] for f in alice.call("GET", "/floatingips").json()["floatingips"]} == {fa["id"]}
    assert len(admin.call("GET", "/floatingips").json()["floatingips"]) == 2
    # a floating IP in alice's name made by bob is refused
    got = fip(bob, ext["id"], project_id="alice")
    assert got.status_code == 400
    # an admin binds alice's floating IP to bob's port? Only within one project.
    got = admin.call("PUT", f"/floatingips/{fb['id']}", {"floatingip": {"port_id": pb["id"]}})
    assert got.status_code == 200 and got.json()["floatingip"]["router_id"] == rb["id"]


def test_metadata_public_ipv4_is_the_floating_ip(client, api):
    """The metadata service answers from the controller's view of the store:
    a bound floating IP is the port's public-ipv4."""
    import time
    from apps.metadata.documents import Context, ec2_meta_data
    from apps.metadata.tokens import TokenIssuer
    from topology.view import TopologyView
    w = world(client, "203.0.122.0/24", "10.80.6.0/24")
    f = fip(client, w["ext"]["id"], port_id=w["port"]["id"]).json()["floatingip"]
    store = api.open_store()
    try:
        view = TopologyView(*store.snapshot())
    finally:
        store.close()
    port = view.ports[w["port"]["id"]]
    ctx = Context(port=port, instance={"id": "vm", "project_id": port["project_id"]}, view=view,
                  tokens=TokenIssuer(b"k" * 32), now=time.time())
    assert ec2_meta_data(ctx).get("public-ipv4") == f["floating_ip_address"]
