"""auth_strategy = token: 401 without a known token, members confined to their project."""
from __future__ import annotations

import pytest
import requests

from apihelpers import Client, error

TOKENS = {"admin-token": {"project_id": "ops", "role": "admin"},
          "alice-token": {"project_id": "alice", "role": "member"},
          "bob-token": {"project_id": "bob", "role": "member"}}


@pytest.fixture(scope="module")
def token_api(tmp_path_factory):
    from apihelpers import ApiProcess
    server = ApiProcess(tmp_path_factory.mktemp("auth"), workers=2, auth=TOKENS)
    yield server
    server.stop()


def test_unauthenticated_is_401_but_discovery_is_open(token_api):
    assert requests.get(token_api.url + "/", timeout=5).status_code == 200
    for token in (None, "wrong"):
        r = Client(token_api.url, token).call("GET", "/networks")
        assert r.status_code == 401 and error(r)["type"] == "HTTPUnauthorized"
        assert "WWW-Authenticate" in r.headers


def test_members_see_and_change_only_their_project(token_api):
    admin, alice, bob = (Client(token_api.url, t) for t in ("admin-token", "alice-token", "bob-token"))
    net = alice.network(name="alice-net")
    assert net["project_id"] == "alice"
    # provider attributes are the operator's: a member gets 403
    r = alice.call("POST", "/networks", {"network": {"provider:network_type": "flat",
                                                     "provider:physical_network": "x"}})
    assert r.status_code == 403 and error(r)["type"] == "PolicyNotAuthorized"
    # another project's resources do not exist for bob
    assert bob.call("GET", f"/networks/{net['id']}").status_code == 404
    assert bob.call("DELETE", f"/networks/{net['id']}").status_code == 404
    assert net["id"] not in {n["id"] for n in bob.call("GET", "/networks").json()["networks"]}
    r = bob.call("POST", "/ports", {"port": {"network_id": net["id"]}})
    assert r.status_code == 404
    r = bob.call("POST", "/networks", {"network": {"project_id": "alice"}})
    assert r.status_code == 400
    # the admin sees everything and may act for any project
    assert admin.call("GET", f"/networks/{net['id']}").status_code == 200
    other = admin.network(project_id="bob")
    assert other["id"] in {n["id"] for n in bob.call("GET", "/networks").json()["networks"]}

    # a shared network is visible and usable, but not changeable, by other members
    shared = admin.network(shared=True)
    assert bob.call("GET", f"/networks/{shared['id']}").status_code == 200
    admin.subnet(shared["id"], "10.80.0.0/24")
    port = bob.port(shared["id"])
    assert port["project_id"] == "bob"
    r = bob.call("PUT", f"/networks/{shared['id']}", {"network": {"name": "mine"}})
    assert r.status_code == 403
    assert alice.call("GET", f"/ports/{port['id']}").status_code == 404
    groups = bob.call("GET", "/security-groups").json()["security_groups"]
    assert {g["project_id"] for g in groups} == {"bob"} and port["security_groups"] == [groups[0]["id"]]


def test_hosts_are_admin_only(token_api):
    admin, alice = Client(token_api.url, "admin-token"), Client(token_api.url, "alice-token")
    r = alice.call("POST", "/hosts", {"host": {"name": "c9", "datapath_id": 9}})
    assert r.status_code == 403
    assert alice.call("GET", "/hosts").status_code == 403
    assert admin.create("hosts", "host", name="c9", datapath_id=9)["datapath_id"] == "0000000000000009"
