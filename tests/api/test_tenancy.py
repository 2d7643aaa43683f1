"""Issue 8's tenancy holes, through a real gunicorn with token auth and two projects.

alice owns a shared network (an admin made it shared for her); bob is a
member of another project who may use it, but only as Neutron lets him: an
address from it and nothing that would let his port impersonate others or
bypass filtering. Each refusal is a 403 that writes nothing.
"""
from __future__ import annotations

import uuid

import pytest

from apihelpers import ApiProcess, Client, error

TOKENS = {"admin-token": {"project_id": "ops", "role": "admin"},
          "alice-token": {"project_id": "alice", "role": "member"},
          "bob-token": {"project_id": "bob", "role": "member"}}


@pytest.fixture(scope="module")
def token_api(tmp_path_factory):
    server = ApiProcess(tmp_path_factory.mktemp("tenancy"), workers=2, auth=TOKENS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clients(token_api):
    return tuple(Client(token_api.url, t) for t in ("admin-token", "alice-token", "bob-token"))


@pytest.fixture(scope="module")
def shared(clients):
    admin, alice, bob = clients
    net = admin.network(name="alice-shared", project_id="alice", shared=True)
    sub = admin.subnet(net["id"], "10.91.0.0/24", project_id="alice")
    return net, sub


def refused(api, client, method, path, body, rule):
    before = api.revision()
    r = client.call(method, path, body)
    assert r.status_code == 403, r.text
    err = error(r)
    assert err["type"] == "PolicyNotAuthorized" and rule in err["message"], err
    assert api.revision() == before


# -- hole 2: a member's port on another project's shared network ------------------------

@pytest.mark.parametrize("attrs,rule", [
    ({"port_security_enabled": False}, "create_port:port_security_enabled"),
    ({"allowed_address_pairs": [{"ip_address": "0.0.0.0/0"}]}, "create_port:allowed_address_pairs"),
    ({"mac_address": "fa:16:3e:aa:bb:cc"}, "create_port:mac_address"),
    ({"fixed_ips": [{"ip_address": "10.91.0.50"}]}, "create_port:fixed_ips:ip_address"),
    ({"device_owner": "network:dhcp"}, "create_port:device_owner"),
    ({"device_owner": "network:router_interface"}, "create_port:device_owner"),
], ids=["port-security-off", "address-pairs", "mac", "ip", "dhcp-owner", "router-owner"])
def test_member_port_on_others_shared_network_is_403(token_api, clients, shared, attrs, rule):
    admin, alice, bob = clients
    net, sub = shared
    refused(token_api, bob, "POST", "/ports", {"port": {"network_id": net["id"], **attrs}}, rule)
    # the network's owner may, on her own network
    port = alice.port(net["id"], **attrs)
    alice.call("DELETE", f"/ports/{port['id']}")


def test_member_port_on_shared_network_gets_an_address_and_nothing_more(token_api, clients, shared):
    admin, alice, bob = clients
    net, sub = shared
    port = bob.port(net["id"], fixed_ips=[{"subnet_id": sub["id"]}], device_owner="compute:nova",
                    name="bob-vm")
    assert port["project_id"] == "bob" and port["port_security_enabled"] is True
    assert port["fixed_ips"][0]["subnet_id"] == sub["id"]
    path = f"/ports/{port['id']}"
    refused(token_api, bob, "PUT", path, {"port": {"port_security_enabled": False}},
            "update_port:port_security_enabled")
    refused(token_api, bob, "PUT", path, {"port": {"allowed_address_pairs": [{"ip_address": "0.0.0.0/0"}]}},
            "update_port:allowed_address_pairs")
    refused(token_api, bob, "PUT", path, {"port": {"fixed_ips": [{"ip_address": "10.91.0.77"}]}},
            "update_port:fixed_ips:ip_address")
    refused(token_api, bob, "PUT", path, {"port": {"device_owner": "network:dhcp"}},
            "update_port:device_owner")
    r = bob.call("PUT", path, {"port": {"name": "renamed"}})
    assert r.status_code == 200 and r.json()["port"]["name"] == "renamed"
    # an admin may do all of it
    r = admin.call("PUT", path, {"port": {"allowed_address_pairs": [{"ip_address": "10.91.0.200"}]}})
    assert r.status_code == 200, r.text
    assert bob.call("DELETE", path).status_code == 204


def test_member_on_own_network_keeps_every_port_attribute(clients):
    admin, alice, bob = clients
    net = bob.network(name="bob-own")
    bob.subnet(net["id"], "10.92.0.0/24")
    port = bob.port(net["id"], port_security_enabled=False, mac_address="fa:16:3e:12:34:56",
                    fixed_ips=[{"ip_address": "10.92.0.9"}])
    assert port["mac_address"] == "fa:16:3e:12:34:56" and port["port_security_enabled"] is False


# -- hole 3: admin-only attributes are hidden from members --------------------------------

ADMIN_NETWORK_ATTRS = ("provider:network_type", "provider:physical_network",
                       "provider:segmentation_id")
ADMIN_PORT_ATTRS = ("binding:host_id", "binding:profile", "binding:vif_type",
                    "binding:vif_details")


def test_provider_and_binding_attributes_are_hidden_from_members(clients, shared):
    admin, alice, bob = clients
    net, sub = shared
    own = alice.network(name="alice-own")
    for shown in (own, alice.call("GET", f"/networks/{own['id']}").json()["network"],
                  bob.call("GET", f"/networks/{net['id']}").json()["network"],
                  *bob.call("GET", "/networks").json()["networks"]):
        assert not set(ADMIN_NETWORK_ATTRS) & set(shown), shown
        assert shown["status"] == "ACTIVE"
    assert set(ADMIN_NETWORK_ATTRS) <= set(admin.call("GET", f"/networks/{own['id']}").json()["network"])

    port = bob.port(net["id"])
    admin.call("PUT", f"/ports/{port['id']}", {"port": {"binding:host_id": "compute7"}})
    for shown in (port, bob.call("GET", f"/ports/{port['id']}").json()["port"],
                  *bob.call("GET", "/ports").json()["ports"]):
        assert not set(ADMIN_PORT_ATTRS) & set(shown), shown
    got = bob.call("GET", f"/ports/{port['id']}?fields=binding:host_id&fields=id").json()["port"]
    assert got == {"id": port["id"]}
    assert admin.call("GET", f"/ports/{port['id']}").json()["port"]["binding:host_id"] == "compute7"
    # nor can a member probe them with filters or sorting
    r = bob.call("GET", "/ports?binding:host_id=compute7")
    assert r.status_code == 400 and "binding:host_id" in error(r)["message"]
    r = bob.call("GET", "/networks?provider:segmentation_id=1000")
    assert r.status_code == 400 and "provider:segmentation_id" in error(r)["message"]
    r = bob.call("GET", "/networks?sort_key=provider:segmentation_id")
    assert r.status_code == 400
    r = alice.call("PUT", f"/networks/{own['id']}", {"network": {"provider:segmentation_id": 1234}})
    assert r.status_code == 403 and "provider:segmentation_id" in error(r)["message"]
    bob.call("DELETE", f"/ports/{port['id']}")


# -- hole 4: a subnet on another project's shared network -----------------------------------

def test_subnet_on_others_shared_network_is_403_not_404(token_api, clients, shared):
    admin, alice, bob = clients
    net, sub = shared
    refused(token_api, bob, "POST", "/subnets",
            {"subnet": {"network_id": net["id"], "cidr": "10.93.0.0/24"}}, "create_subnet")
    refused(token_api, bob, "PUT", f"/subnets/{sub['id']}", {"subnet": {"name": "x"}},
            "update_subnet")
    refused(token_api, bob, "DELETE", f"/subnets/{sub['id']}", None, "delete_subnet")
    # a network bob cannot see at all stays a 404
    private = alice.network(name="alice-private")
    r = bob.call("POST", "/subnets", {"subnet": {"network_id": private["id"], "cidr": "10.94.0.0/24"}})
    assert r.status_code == 404 and error(r)["type"] == "NetworkNotFound"


# -- hole 1: instances are the compute service's ------------------------------------------

def test_members_cannot_create_instances_so_no_id_is_squatted(token_api, clients):
    admin, alice, bob = clients
    wanted = str(uuid.uuid4())
    refused(token_api, bob, "POST", "/instances", {"instance": {"id": wanted}}, "create_instance")
    inst = admin.create("instances", "instance", id=wanted, project_id="alice", hostname="a1")
    assert inst["project_id"] == "alice"
    assert bob.call("GET", f"/instances/{wanted}").status_code == 404
    r = alice.call("GET", f"/instances/{wanted}")
    assert r.status_code == 200 and r.json()["instance"]["hostname"] == "a1"
    # a port of bob's naming alice's instance is allowed (Neutron does not
    # check device_id) but the metadata service will not serve it to him:
    # tests/unit/test_view_tenancy.py and tests/mininet/test_metadata_tenancy.py
    net = bob.network(name="bob-md")
    port = bob.port(net["id"], device_id=wanted, device_owner="compute:nova")
    assert port["device_id"] == wanted


def test_policy_table_compiles_and_names_every_rule_neutron_style():
    from topology.api import policy
    policy.validate()
    assert policy.RULES["create_port:port_security_enabled"] == "rule:admin_or_network_owner"
    assert policy.RULES["create_instance"] == "rule:admin_only"


def test_members_read_their_own_quota_and_set_none(token_api, clients):
    admin, alice, bob = clients
    assert bob.call("GET", "/quotas/bob").status_code == 200
    assert bob.call("GET", "/quotas/bob/details").status_code == 200
    assert bob.call("GET", "/quotas/alice").status_code == 403
    refused(token_api, bob, "PUT", "/quotas/bob", {"quota": {"network": 1000}}, "update_quota")
    refused(token_api, bob, "DELETE", "/quotas/bob", None, "delete_quota")
    r = admin.call("PUT", "/quotas/bob", {"quota": {"security_group": 50}})
    assert r.status_code == 200
    assert bob.call("GET", "/quotas/bob").json()["quota"]["security_group"] == 50
    assert [q["project_id"] for q in bob.call("GET", "/quotas").json()["quotas"]] == ["bob"]


def test_a_member_cannot_route_into_another_projects_subnet(token_api, clients, shared):
    """bob's router must not get an interface on alice's subnet, shared or
    not: that would join alice's network to bob's router. Nothing is written."""
    admin, alice, bob = clients
    net, sub = shared
    private = admin.network(name="alice-private", project_id="alice")
    private_sub = admin.subnet(private["id"], "10.92.0.0/24", project_id="alice")
    r = bob.call("POST", "/routers", {"router": {"name": "bob-r"}})
    assert r.status_code == 201, r.text
    router = r.json()["router"]
    for subnet in (sub, private_sub):
        before = token_api.revision()
        r = bob.call("PUT", f"/routers/{router['id']}/add_router_interface",
                     {"subnet_id": subnet["id"]})
        assert r.status_code == 404, r.text
        assert token_api.revision() == before
