"""Router gateways on external networks (Neutron's router external_gateway_info
with ext-gw-mode), their gateway ports, SNAT placement shown on the router,
and hosts' external MACs."""
from __future__ import annotations

import pytest

from apihelpers import Client, error
from exthelpers import external_network, router_with_gateway, tenant_subnet

GATEWAY_OWNER = "network:router_gateway"


def _gateway_ports(client, router_id):
    ports = client.call("GET", f"/ports?device_id={router_id}").json()["ports"]
    return [p for p in ports if p["device_owner"] == GATEWAY_OWNER]


def test_gateway_set_on_create_allocates_an_ip_and_a_port(client):
    ext, sub = external_network(client, "198.51.100.0/24")
    r = router_with_gateway(client, ext)
    info = r["external_gateway_info"]
    assert info["network_id"] == ext["id"] and info["enable_snat"] is True
    [ip] = info["external_fixed_ips"]
    assert ip["subnet_id"] == sub["id"] and ip["ip_address"].startswith("198.51.100.")
    [port] = _gateway_ports(client, r["id"])
    assert port["network_id"] == ext["id"] and port["project_id"] == ""
    assert port["fixed_ips"] == [ip] and port["binding:host_id"] == ""
    assert port["mac_address"].startswith("fa:16:3e")
    assert "vmflow:snat_host" in r
    # shown the same by GET and in lists
    got = client.call("GET", f"/routers/{r['id']}").json()["router"]
    assert got["external_gateway_info"] == info
    # the gateway port goes with its router only
    gone = client.call("DELETE", f"/ports/{port['id']}")
    assert gone.status_code == 409 and error(gone)["type"] == "L3PortInUse"
    # the external subnet and network cannot go while a gateway is on them
    for path in (f"/subnets/{sub['id']}", f"/networks/{ext['id']}"):
        got = client.call("DELETE", path)
        assert got.status_code == 409, (path, got.text)
    got = client.call("PUT", f"/networks/{ext['id']}", {"network": {"router:external": False}})
    assert got.status_code == 409 and error(got)["type"] == "ExternalNetworkInUse"
    # deleting the router removes its gateway port and frees the IP
    assert client.call("DELETE", f"/routers/{r['id']}").status_code == 204
    assert client.call("GET", f"/ports/{port['id']}").status_code == 404
    again = client.create("routers", "router", external_gateway_info={
        "network_id": ext["id"], "external_fixed_ips": [{"ip_address": ip["ip_address"]}]})
    assert again["external_gateway_info"]["external_fixed_ips"] == [ip]
    assert client.call("DELETE", f"/routers/{again['id']}").status_code == 204
    assert client.call("DELETE", f"/networks/{ext['id']}").status_code == 204


def test_gateway_requested_ip_and_conflicts_write_nothing(client):
    ext, sub = external_network(client, "198.51.101.0/24")
    r = client.create("routers", "router", name="req", external_gateway_info={
        "network_id": ext["id"], "enable_snat": False,
        "external_fixed_ips": [{"subnet_id": sub["id"], "ip_address": "198.51.101.10"}]})
    assert r["external_gateway_info"] == {
        "network_id": ext["id"], "enable_snat": False,
        "external_fixed_ips": [{"subnet_id": sub["id"], "ip_address": "198.51.101.10"}]}
    routers_before = len(client.call("GET", "/routers").json()["routers"])
    ports_before = len(client.call("GET", f"/ports?network_id={ext['id']}").json()["ports"])
    taken = client.call("POST", "/routers", {"router": {"name": "taken", "external_gateway_info": {
        "network_id": ext["id"], "external_fixed_ips": [{"ip_address": "198.51.101.10"}]}}})
    assert taken.status_code == 409 and error(taken)["type"] == "IpAddressAlreadyAllocated"
    # the subnet's own gateway address is not the router's to take either
    gw = client.call("POST", "/routers", {"router": {"external_gateway_info": {
        "network_id": ext["id"], "external_fixed_ips": [{"ip_address": "198.51.101.1"}]}}})
    assert gw.status_code == 409
    assert len(client.call("GET", "/routers").json()["routers"]) == routers_before
    assert len(client.call("GET", f"/ports?network_id={ext['id']}").json()["ports"]) == ports_before
    # an update that fails leaves the router as it was
    bad = client.call("PUT", f"/routers/{r['id']}", {"router": {"name": "renamed",
        "external_gateway_info": {"network_id": ext["id"],
                                  "external_fixed_ips": [{"ip_address": "198.51.101.1"}]}}})
    assert bad.status_code == 409
    got = client.call("GET", f"/routers/{r['id']}").json()["router"]
    assert got["name"] == "req" and got["external_gateway_info"]["external_fixed_ips"][0][
        "ip_address"] == "198.51.101.10"
    # moving the gateway IP on the same network keeps the port, frees the old IP
    [port] = _gateway_ports(client, r["id"])
    moved = client.call("PUT", f"/routers/{r['id']}", {"router": {"external_gateway_info": {
        "network_id": ext["id"], "external_fixed_ips": [{"ip_address": "198.51.101.11"}]}}})
    assert moved.status_code == 200, moved.text
    [port2] = _gateway_ports(client, r["id"])
    assert port2["id"] == port["id"]
    assert port2["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "198.51.101.11"}]
    # the info without external_fixed_ips keeps the address; enable_snat is back to its default
    same = client.call("PUT", f"/routers/{r['id']}", {"router": {"external_gateway_info": {
        "network_id": ext["id"]}}}).json()["router"]["external_gateway_info"]
    assert same["enable_snat"] is True
    assert same["external_fixed_ips"][0]["ip_address"] == "198.51.101.11"
    other = client.create("routers", "router", external_gateway_info={
        "network_id": ext["id"], "external_fixed_ips": [{"ip_address": "198.51.101.10"}]})
    assert other["external_gateway_info"]["external_fixed_ips"][0]["ip_address"] == "198.51.101.10"


NETS: dict[str, tuple] = {}


@pytest.mark.parametrize("info,field", [
    ({"network_id": "not-a-uuid"}, "external_gateway_info.network_id"),
    ({"enable_snat": True}, "external_gateway_info.network_id"),
    ({"network_id": "EXT", "bogus": 1}, "external_gateway_info"),
    ({"network_id": "EXT", "enable_snat": "maybe"}, "external_gateway_info.enable_snat"),
    ({"network_id": "EXT", "external_fixed_ips": [{"ip_address": "300.1.1.1"}]},
     "external_gateway_info.external_fixed_ips"),
    ({"network_id": "EXT", "external_fixed_ips": [{"ip_address": "10.9.9.9"}]},
     "external_gateway_info.external_fixed_ips"),
    ({"network_id": "EXT", "external_fixed_ips": [{"subnet_id": "TENANT_SUBNET"}]},
     "external_gateway_info.external_fixed_ips"),
    ({"network_id": "EXT", "external_fixed_ips": "198.51.102.5"},
     "external_gateway_info.external_fixed_ips"),
    ({"network_id": "TENANT"}, "external_gateway_info.network_id"),
    ("gateway", "external_gateway_info"),
])
def test_gateway_bad_input_is_a_400_naming_the_field(client, info, field):
    # Made once per API server (the suite runs on SQLite and on etcd).
    made = NETS.get(client.url)
    if made is None:
        ext, _ = external_network(client, "198.51.102.0/24")
        tenant, tsub = tenant_subnet(client, "10.70.0.0/24")
        made = NETS[client.url] = (ext, tenant, tsub)
    ext, tenant, tsub = made
    if isinstance(info, dict):
        info = {k: (ext["id"] if val == "EXT" else tenant["id"] if val == "TENANT" else val)
                for k, val in info.items()}
        if "external_fixed_ips" in info and isinstance(info["external_fixed_ips"], list):
            info["external_fixed_ips"] = [
                {k: (tsub["id"] if val == "TENANT_SUBNET" else val) for k, val in ip.items()}
                for ip in info["external_fixed_ips"]]
    before = len(client.call("GET", "/routers").json()["routers"])
    got = client.call("POST", "/routers", {"router": {"external_gateway_info": info}})
    assert got.status_code == 400, got.text
    assert field in error(got)["message"]
    assert len(client.call("GET", "/routers").json()["routers"]) == before


def test_unknown_network_is_a_404(client):
    got = client.call("POST", "/routers", {"router": {"external_gateway_info": {
        "network_id": "6f1c4c02-5d4e-4b8e-9d43-1f0f2a2b9e11"}}})
    assert got.status_code == 404 and error(got)["type"] == "NetworkNotFound"


def test_gateway_cleared_replaced_and_removed(client):
    ext1, _ = external_network(client, "198.51.103.0/24")
    ext2, sub2 = external_network(client, "198.51.104.0/24")
    r = router_with_gateway(client, ext1)
    [old] = _gateway_ports(client, r["id"])
    # replace: a new port on the new network, the old one gone
    got = client.call("PUT", f"/routers/{r['id']}",
                      {"router": {"external_gateway_info": {"network_id": ext2["id"]}}})
    assert got.status_code == 200, got.text
    info = got.json()["router"]["external_gateway_info"]
    assert info["network_id"] == ext2["id"]
    assert info["external_fixed_ips"][0]["subnet_id"] == sub2["id"]
    assert client.call("GET", f"/ports/{old['id']}").status_code == 404
    [new] = _gateway_ports(client, r["id"])
    assert new["network_id"] == ext2["id"]
    # clear with {} (openstack router unset --external-gateway) and with null
    for cleared in ({}, None):
        got = client.call("PUT", f"/routers/{r['id']}",
                          {"router": {"external_gateway_info": cleared}})
        assert got.status_code == 200 and got.json()["router"]["external_gateway_info"] is None
        assert got.json()["router"]["vmflow:snat_host"] is None
        assert _gateway_ports(client, r["id"]) == []
        client.call("PUT", f"/routers/{r['id']}",
                    {"router": {"external_gateway_info": {"network_id": ext2["id"]}}})
    # with every gateway gone the external networks can go
    assert client.call("DELETE", f"/routers/{r['id']}").status_code == 204
    for net in (ext1, ext2):
        assert client.call("DELETE", f"/networks/{net['id']}").status_code == 204


def _host(client, name, dpid, **attrs):
    return client.create("hosts", "host", name=name, datapath_id=dpid, **attrs)


def test_snat_host_and_error_status_follow_the_gateway_hosts(make_api):
    c = Client(make_api().url)
    ext, _ = external_network(c, "198.51.105.0/24")
    r = router_with_gateway(c, ext)
    # no gateway host at all: a clear status, not a silent black hole
    assert r["status"] == "ERROR" and r["vmflow:snat_host"] is None
    listed = c.call("GET", "/routers").json()["routers"]
    assert [x["status"] for x in listed if x["id"] == r["id"]] == ["ERROR"]
    # filtered as shown
    assert [x["id"] for x in c.call("GET", "/routers?status=ERROR").json()["routers"]] == [r["id"]]
    # without SNAT nothing is missing
    nosnat = c.create("routers", "router", external_gateway_info={
        "network_id": ext["id"], "enable_snat": False})
    assert nosnat["status"] == "ACTIVE"
    plain = c.create("routers", "router")
    assert plain["status"] == "ACTIVE" and plain["vmflow:snat_host"] is None
    _host(c, "c1", 1)
    assert c.call("GET", f"/routers/{r['id']}").json()["router"]["status"] == "ERROR"
    g1 = _host(c, "g1", 2, is_gateway=True)
    g2 = _host(c, "g2", 3, is_gateway=True)
    got = c.call("GET", f"/routers/{r['id']}").json()["router"]
    assert got["status"] == "ACTIVE" and got["vmflow:snat_host"] in (g1["id"], g2["id"])
    first = got["vmflow:snat_host"]
    assert c.call("GET", "/routers?status=ERROR").json()["routers"] == []
    on_first = c.call("GET", f"/routers?vmflow:snat_host={first}").json()["routers"]
    assert r["id"] in {x["id"] for x in on_first}
    assert {x["vmflow:snat_host"] for x in on_first} == {first}
    # deterministic: the same answer every time, from every worker
    for _ in range(6):
        assert c.call("GET", f"/routers/{r['id']}").json()["router"]["vmflow:snat_host"] == first
    # its host out of service: the router moves to the other one
    assert c.call("PUT", f"/hosts/{first}", {"host": {"admin_state_up": False}}).status_code == 200
    other = g2["id"] if first == g1["id"] else g1["id"]
    assert c.call("GET", f"/routers/{r['id']}").json()["router"]["vmflow:snat_host"] == other
    assert c.call("DELETE", f"/hosts/{other}").status_code == 204
    got = c.call("GET", f"/routers/{r['id']}").json()["router"]
    assert got["status"] == "ERROR" and got["vmflow:snat_host"] is None
    assert c.call("PUT", f"/hosts/{first}", {"host": {"admin_state_up": True}}).status_code == 200
    assert c.call("GET", f"/routers/{r['id']}").json()["router"]["vmflow:snat_host"] == first


def test_hosts_external_mac_and_admin_state(client):
    h = _host(client, "extmac-host", "0xe1")
    assert h["admin_state_up"] is True
    assert h["external_mac"].startswith("fa:16:3f") and h["external_mac"] != h["dvr_mac"]
    h2 = _host(client, "extmac-host2", "0xe2")
    assert h2["external_mac"] != h["external_mac"]
    for body in ({"host": {"name": "x", "datapath_id": "0xe3", "external_mac": "fa:16:3f:01:02:03"}},):
        got = client.call("POST", "/hosts", body)
        assert got.status_code == 400 and "external_mac" in error(got)["message"]
    got = client.call("PUT", f"/hosts/{h['id']}", {"host": {"external_mac": "fa:16:3f:01:02:03"}})
    assert got.status_code == 400 and "external_mac" in error(got)["message"]
    got = client.call("PUT", f"/hosts/{h['id']}", {"host": {"admin_state_up": "sometimes"}})
    assert got.status_code == 400 and "admin_state_up" in error(got)["message"]
    got = client.call("PUT", f"/hosts/{h['id']}", {"host": {"admin_state_up": False}})
    assert got.status_code == 200 and got.json()["host"]["admin_state_up"] is False
    assert got.json()["host"]["external_mac"] == h["external_mac"]
    listed = client.call("GET", f"/hosts?external_mac={h['external_mac']}").json()["hosts"]
    assert [x["id"] for x in listed] == [h["id"]]
    for x in (h, h2):
        assert client.call("DELETE", f"/hosts/{x['id']}").status_code == 204


TOKENS = {"admin-token": {"project_id": "ops", "role": "admin"},
          "alice-token": {"project_id": "alice", "role": "member"}}


def test_member_sets_a_gateway_but_not_snat_or_its_address(make_api):
    server = make_api(auth=TOKENS)
    admin, alice = Client(server.url, "admin-token"), Client(server.url, "alice-token")
    ext, sub = external_network(admin, "198.51.106.0/24")
    r = router_with_gateway(alice, ext)
    assert r["project_id"] == "alice" and r["external_gateway_info"]["network_id"] == ext["id"]
    # the gateway port is no tenant's: alice does not see it
    assert alice.call("GET", f"/ports?device_id={r['id']}").json()["ports"] == []
    assert len(_gateway_ports(admin, r["id"])) == 1
    for key, value in (("enable_snat", False),
                       ("external_fixed_ips", [{"ip_address": "198.51.106.50"}])):
        body = {"external_gateway_info": {"network_id": ext["id"], key: value}}
        got = alice.call("PUT", f"/routers/{r['id']}", {"router": body})
        assert got.status_code == 403, got.text
        assert f"external_gateway_info:{key}" in error(got)["message"]
        got = alice.call("POST", "/routers", {"router": body})
        assert got.status_code == 403
    # alice's own network is not external
    mine = alice.network(name="mine")
    alice.subnet(mine["id"], "10.71.0.0/24")
    got = alice.call("PUT", f"/routers/{r['id']}",
                     {"router": {"external_gateway_info": {"network_id": mine["id"]}}})
    assert got.status_code == 400 and "external_gateway_info.network_id" in error(got)["message"]
    # an admin may set both
    got = admin.call("PUT", f"/routers/{r['id']}", {"router": {"external_gateway_info": {
        "network_id": ext["id"], "enable_snat": False,
        "external_fixed_ips": [{"ip_address": "198.51.106.50"}]}}})
    assert got.status_code == 200, got.text
