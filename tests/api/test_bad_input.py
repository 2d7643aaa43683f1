"""Bad input is a 400 in Neutron's shape naming the field, and writes nothing."""
from __future__ import annotations

import uuid

import pytest

from apihelpers import error


@pytest.fixture(scope="module")
def net(api):
    from apihelpers import Client
    c = Client(api.url)
    n = c.network()
    s = c.subnet(n["id"], "10.50.0.0/24")
    yield n, s
    c.call("DELETE", f"/networks/{n['id']}")


def vlan(**kw):
    return {"provider:network_type": "vlan", "provider:physical_network": "physnet9", **kw}


def substitute(obj, placeholder, value):
    if obj == placeholder:
        return value
    if isinstance(obj, dict):
        return {k: substitute(x, placeholder, value) for k, x in obj.items()}
    if isinstance(obj, list):
        return [substitute(x, placeholder, value) for x in obj]
    return obj


CASES = [
    # (collection, body, field the message must name)
    ("networks", {"network": {"mtu": "big"}}, "mtu"),
    ("networks", {"network": {"admin_state_up": "maybe"}}, "admin_state_up"),
    ("networks", {"network": {"name": 5}}, "name"),
    ("networks", {"network": {"colour": "blue"}}, "colour"),
    ("networks", {"network": {"status": "DOWN"}}, "status"),
    ("networks", {"network": vlan(**{"provider:segmentation_id": 0})}, "provider:segmentation_id"),
    ("networks", {"network": vlan(**{"provider:segmentation_id": 4095})}, "provider:segmentation_id"),
    ("networks", {"network": vlan(**{"provider:segmentation_id": True})}, "provider:segmentation_id"),
    ("networks", {"network": {"provider:network_type": "vxlan"}}, "provider:network_type"),
    ("networks", {"network": []}, "network"),
    ("networks", {"network": {"tags": ["a,b"]}}, "tags"),
    ("networks", {"network": {"tags": "a"}}, "tags"),
    ("networks", {"network": {"availability_zone_hints": ["no-such-zone"]}}, "availability_zone_hints"),
    ("networks", {"network": {"availability_zone_hints": "nova"}}, "availability_zone_hints"),
    ("ports", {"port": {"network_id": "NET", "tags": [""]}}, "tags"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24", "tags": [7]}}, "tags"),
    ("networks", {"netwrk": {}}, "network"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/33"}}, "cidr"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.5/24"}}, "cidr"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "fd00::/64"}}, "cidr"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24", "ip_version": 6}}, "ip_version"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24",
                            "gateway_ip": "10.61.0.1"}}, "gateway_ip"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24",
                            "gateway_ip": "10.60.0.300"}}, "gateway_ip"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24",
                            "allocation_pools": [{"start": "10.60.0.1", "end": "10.60.0.20"}]}},
     "allocation_pools"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24",
                            "allocation_pools": [{"start": "10.60.0.10", "end": "10.60.1.20"}]}},
     "allocation_pools"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24",
                            "allocation_pools": [{"start": "10.60.0.10", "end": "10.60.0.20"},
                                                 {"start": "10.60.0.15", "end": "10.60.0.30"}]}},
     "allocation_pools"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24",
                            "dns_nameservers": ["8.8.8"]}}, "dns_nameservers"),
    ("subnets", {"subnet": {"network_id": "NET", "cidr": "10.60.0.0/24",
                            "host_routes": [{"destination": "x", "nexthop": "10.60.0.9"}]}}, "host_routes"),
    ("subnets", {"subnet": {"cidr": "10.60.0.0/24"}}, "network_id"),
    ("ports", {"port": {"network_id": "NET", "mac_address": "fa:16:3e:zz:00:01"}}, "mac_address"),
    ("ports", {"port": {"network_id": "NET", "mac_address": "01:00:5e:00:00:01"}}, "mac_address"),
    ("ports", {"port": {"network_id": "NET", "fixed_ips": [{"ip_address": "10.50.0.999"}]}}, "fixed_ips"),
    ("ports", {"port": {"network_id": "NET", "fixed_ips": [{"ip_address": "10.50.1.5"}]}}, "fixed_ips"),
    ("ports", {"port": {"network_id": "NET", "fixed_ips": "10.50.0.5"}}, "fixed_ips"),
    ("ports", {"port": {"network_id": "NET", "allowed_address_pairs": [{"mac_address": "fa:16:3e:00:00:09"}]}},
     "allowed_address_pairs"),
    ("ports", {"port": {"network_id": "NET", "security_groups": ["not-a-uuid"]}}, "security_groups"),
    ("ports", {"port": {"network_id": "not-a-uuid"}}, "network_id"),
    ("hosts", {"host": {"name": "h", "datapath_id": "xyz"}}, "datapath_id"),
    ("hosts", {"host": {"name": "h", "datapath_id": "1", "physical_networks": {"p": "way-too-long-ifname"}}},
     "physical_networks"),
    ("hosts", {"host": {"name": "bad name!", "datapath_id": "1"}}, "name"),
    ("hosts", {"host": {"name": "h", "datapath_id": "1", "availability_zone": ""}}, "availability_zone"),
    ("hosts", {"host": {"name": "h", "datapath_id": "1", "availability_zone": ["a"]}}, "availability_zone"),
    ("instances", {"instance": {"user_data": "not base64!"}}, "user_data"),
    ("instances", {"instance": {"meta": {"k": 1}}}, "meta"),
    ("instances", {"instance": {"public_keys": ["k"]}}, "public_keys"),
]


@pytest.mark.parametrize("collection,body,field", CASES,
                         ids=[f"{c}-{f}-{i}" for i, (c, _, f) in enumerate(CASES)])
def test_rejected_with_field_named_and_nothing_written(api, client, net, collection, body, field):
    body = substitute(body, "NET", net[0]["id"])
    before = api.revision()
    r = client.call("POST", f"/{collection}", body)
    assert r.status_code == 400, r.text
    err = error(r)
    assert err["type"] == "HTTPBadRequest"
    assert field in err["message"]
    assert api.revision() == before


def test_malformed_json(api, client):
    before = api.revision()
    r = client.s.post(client.url + "/networks", data=b'{"network": {', timeout=10)
    assert r.status_code == 400 and "Malformed request body" in error(r)["message"]
    r = client.s.post(client.url + "/networks", data=b"", timeout=10)
    assert r.status_code == 400
    assert api.revision() == before


def test_bad_update_writes_nothing(api, client, net):
    before = api.revision()
    r = client.call("PUT", f"/networks/{net[0]['id']}", {"network": {"name": "ok", "mtu": 10}})
    assert r.status_code == 400 and "mtu" in error(r)["message"]
    r = client.call("PUT", f"/networks/{net[0]['id']}",
                    {"network": {"provider:segmentation_id": 4095}})
    assert r.status_code == 400 and "provider:segmentation_id" in error(r)["message"]
    r = client.call("PUT", f"/networks/{net[0]['id']}",
                    {"network": {"provider:network_type": "flat"}})
    assert r.status_code == 400 and "provider:network_type" in error(r)["message"]
    assert api.revision() == before
    assert client.call("GET", f"/networks/{net[0]['id']}").json()["network"]["name"] != "ok"


def test_unknown_ids_are_404(client):
    missing = str(uuid.uuid4())
    for path, type_ in (("networks", "NetworkNotFound"), ("ports", "PortNotFound"),
                        ("subnets", "SubnetNotFound"), ("hosts", "HostNotFound")):
        r = client.call("GET", f"/{path}/{missing}")
        assert r.status_code == 404 and error(r)["type"] == type_
    r = client.call("POST", "/ports", {"port": {"network_id": missing}})
    assert r.status_code == 404 and error(r)["type"] == "NetworkNotFound"
    r = client.call("GET", "/nonsense")
    assert r.status_code == 404 and error(r)["type"] == "HTTPNotFound"
