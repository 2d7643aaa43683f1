"""Networks through a real gunicorn: provider attributes, uniqueness, in-use deletes."""
from __future__ import annotations

import uuid

from apihelpers import error


def vlan(physnet: str, vid: int, **kw) -> dict:
    return {"provider:network_type": "vlan", "provider:physical_network": physnet,
            "provider:segmentation_id": vid, **kw}


def test_version_discovery(api, client):
    import requests
    root = requests.get(api.url + "/").json()
    assert root["versions"][0]["id"] == "v2.0"
    assert root["versions"][0]["links"][0]["href"] == api.url + "/v2.0/"
    collections = {r["collection"] for r in client.call("GET", "/").json()["resources"]}
    assert {"networks", "subnets", "ports", "security-groups", "security-group-rules",
            "hosts", "instances"} <= collections


def test_create_show_update_delete(client):
    physnet = f"pn-{uuid.uuid4().hex[:8]}"
    net = client.network(name="a", **vlan(physnet, 10))
    assert net["provider:segmentation_id"] == 10
    assert net["mtu"] == 1500 and net["status"] == "ACTIVE" and net["subnets"] == []
    assert not any(k.startswith("_") for k in net)
    shown = client.call("GET", f"/networks/{net['id']}").json()["network"]
    assert shown["name"] == "a"
    r = client.call("PUT", f"/networks/{net['id']}", {"network": {"name": "b", "mtu": 9000}})
    assert r.status_code == 200 and r.json()["network"]["name"] == "b"
    assert r.json()["network"]["mtu"] == 9000
    assert client.call("DELETE", f"/networks/{net['id']}").status_code == 204
    r = client.call("GET", f"/networks/{net['id']}")
    assert r.status_code == 404 and error(r)["type"] == "NetworkNotFound"


def test_vlan_unique_per_physnet_and_released_on_delete(client):
    physnet = f"pn-{uuid.uuid4().hex[:8]}"
    net = client.network(**vlan(physnet, 20))
    r = client.call("POST", "/networks", {"network": vlan(physnet, 20)})
    assert r.status_code == 409 and error(r)["type"] == "VlanIdInUse"
    other = client.network(**vlan(physnet + "x", 20))  # another physnet may reuse the VLAN id
    client.call("DELETE", f"/networks/{net['id']}")
    again = client.network(**vlan(physnet, 20))
    assert again["provider:segmentation_id"] == 20
    for n in (other, again):
        client.call("DELETE", f"/networks/{n['id']}")


def test_one_flat_network_per_physnet(client):
    physnet = f"pn-{uuid.uuid4().hex[:8]}"
    flat = {"provider:network_type": "flat", "provider:physical_network": physnet}
    net = client.network(**flat)
    assert net["provider:segmentation_id"] is None
    r = client.call("POST", "/networks", {"network": flat})
    assert r.status_code == 409 and error(r)["type"] == "FlatNetworkInUse"
    r = client.call("POST", "/networks", {"network": dict(flat, **{"provider:segmentation_id": 5})})
    assert r.status_code == 400 and "provider:segmentation_id" in error(r)["message"]
    client.call("DELETE", f"/networks/{net['id']}")


def test_tenant_network_gets_vlan_from_ranges(client):
    a, b = client.network(name="t1"), client.network(name="t2")
    assert a["provider:network_type"] == "vlan"
    assert a["provider:physical_network"] == "physnet1"
    assert 1000 <= a["provider:segmentation_id"] <= 2999
    assert a["provider:segmentation_id"] != b["provider:segmentation_id"]
    for n in (a, b):
        client.call("DELETE", f"/networks/{n['id']}")


def test_delete_in_use_is_409_and_dhcp_port_goes_with_network(client):
    net = client.network()
    sub = client.subnet(net["id"], "10.20.0.0/24")
    port = client.port(net["id"])
    r = client.call("DELETE", f"/networks/{net['id']}")
    assert r.status_code == 409 and error(r)["type"] == "NetworkInUse"
    client.call("DELETE", f"/ports/{port['id']}")
    assert client.call("DELETE", f"/networks/{net['id']}").status_code == 204
    assert client.call("GET", f"/subnets/{sub['id']}").status_code == 404
    left = client.call("GET", f"/ports?network_id={net['id']}").json()["ports"]
    assert left == []


def test_list_filters_fields_and_paging(client):
    tag = uuid.uuid4().hex
    nets = [client.network(name=tag, admin_state_up=i % 2 == 0) for i in range(5)]
    got = client.call("GET", f"/networks?name={tag}").json()["networks"]
    assert {n["id"] for n in got} == {n["id"] for n in nets}
    down = client.call("GET", f"/networks?name={tag}&admin_state_up=False").json()["networks"]
    assert len(down) == 2
    slim = client.call("GET", f"/networks?name={tag}&fields=id&fields=name").json()["networks"]
    assert all(set(n) == {"id", "name"} for n in slim)
    page = client.call("GET", f"/networks?name={tag}&limit=2&sort_key=id").json()
    assert len(page["networks"]) == 2
    seen = [n["id"] for n in page["networks"]]
    import requests
    while "networks_links" in page:
        page = requests.get(page["networks_links"][0]["href"]).json()
        seen += [n["id"] for n in page["networks"]]
    assert seen == sorted(n["id"] for n in nets)
    r = client.call("GET", "/networks?colour=blue")
    assert r.status_code == 400 and "colour" in error(r)["message"]
    for n in nets:
        client.call("DELETE", f"/networks/{n['id']}")


def test_bulk_create_is_all_or_nothing(api, client):
    physnet = f"pn-{uuid.uuid4().hex[:8]}"
    before = api.revision()
    r = client.call("POST", "/networks", {"networks": [vlan(physnet, 30), vlan(physnet, 30)]})
    assert r.status_code == 409
    assert api.revision() == before
    r = client.call("POST", "/networks", {"networks": [vlan(physnet, 30), vlan(physnet, 31)]})
    assert r.status_code == 201 and len(r.json()["networks"]) == 2
    for n in r.json()["networks"]:
        client.call("DELETE", f"/networks/{n['id']}")
