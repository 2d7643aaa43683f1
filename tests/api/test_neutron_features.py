"""Issue 8, the Neutron features tools send: tags, revisions, paging and
filters, segmentation id updates, extensions, availability zones, quotas and
status, through a real gunicorn."""
from __future__ import annotations

import json
import re
import uuid

import pytest

from apihelpers import error

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    body = r.json()
    return [d["id"] for d in next(v for k, v in body.items() if not k.endswith("_links"))]


# -- tags -----------------------------------------------------------------------------

def test_tags_on_create_and_through_the_tags_resource(api, client):
    net = client.network(name=unique("t"), tags=["red", "blue"])
    assert sorted(net["tags"]) == ["blue", "red"]
    path = f"/networks/{net['id']}/tags"
    r = client.call("PUT", f"{path}/green")
    assert r.status_code == 201
    assert client.call("GET", f"{path}/green").status_code == 204
    r = client.call("GET", f"{path}/purple")
    assert r.status_code == 404 and error(r)["type"] == "TagNotFound"
    assert sorted(client.call("GET", path).json()["tags"]) == ["blue", "green", "red"]
    r = client.call("PUT", path, {"tags": ["one", "two"]})
    assert r.status_code == 200 and sorted(r.json()["tags"]) == ["one", "two"]
    assert client.call("DELETE", f"{path}/one").status_code == 204
    assert client.call("DELETE", f"{path}/one").status_code == 404
    shown = client.call("GET", f"/networks/{net['id']}").json()["network"]
    assert shown["tags"] == ["two"]
    assert shown["revision_number"] == net["revision_number"] + 3  # add, replace, remove
    assert client.call("DELETE", path).status_code == 204
    assert client.call("GET", f"/networks/{net['id']}").json()["network"]["tags"] == []
    # every taggable kind shows tags, [] when it has none
    sub = client.subnet(net["id"], "10.120.0.0/24", tags=["s"])
    assert sub["tags"] == ["s"]
    port = client.port(net["id"])
    assert port["tags"] == []
    assert client.call("PUT", f"/ports/{port['id']}/tags/p").status_code == 201
    sg = client.create("security-groups", "security_group", name=unique("sg"), tags=["g"])
    assert sg["tags"] == ["g"]


def test_tag_filters(client):
    mark = unique("m")
    nets = {name: client.network(name=name, tags=[mark, *tags]) for name, tags in
            (("a", ["x", "y"]), ("b", ["x"]), ("c", ["z"]))}

    def names(query):
        r = client.call("GET", f"/networks?{query}")
        assert r.status_code == 200, r.text
        return sorted(n["name"] for n in r.json()["networks"] if mark in n["tags"])

    assert names(f"tags={mark},x,y") == ["a"]
    assert names(f"tags={mark}&tags=x") == ["a", "b"]
    assert names(f"tags-any=y,z&tags={mark}") == ["a", "c"]
    assert names(f"tags={mark}&not-tags=x,y") == ["b", "c"]
    assert names(f"tags={mark}&not-tags-any=y,z") == ["b"]
    assert len(nets) == 3


@pytest.mark.parametrize("body", [{"tags": ["a,b"]}, {"tags": [""]}, {"tags": "red"},
                                  {"tags": ["x" * 256]}, {"tags": [5]}, {"tags": ["d", "d"]}])
def test_bad_tags_are_400_naming_tags_and_write_nothing(api, client, body):
    net = client.network(name=unique("bt"))
    before = api.revision()
    r = client.call("POST", "/networks", {"network": dict(body)})
    assert r.status_code == 400 and "tags" in error(r)["message"]
    r = client.call("PUT", f"/networks/{net['id']}/tags", body)
    assert r.status_code == 400 and "tags" in error(r)["message"]
    assert api.revision() == before


# -- revisions ------------------------------------------------------------------------

def test_revision_number_rises_and_if_match_is_honoured(api, client):
    net = client.network(name=unique("rev"))
    assert net["revision_number"] == 0
    for stamp in (net["created_at"], net["updated_at"]):
        assert RFC3339.match(stamp), stamp
    path = f"/networks/{net['id']}"
    r = client.call("PUT", path, {"network": {"name": "r1"}})
    assert r.json()["network"]["revision_number"] == 1
    client.subnet(net["id"], "10.121.0.0/24")  # a subnet added changes the network
    rev = client.call("GET", path).json()["network"]["revision_number"]
    assert rev == 2

    before = api.revision()
    r = client.call("PUT", path, {"network": {"name": "r2"}},
                    headers={"If-Match": f"revision_number={rev - 1}"})
    assert r.status_code == 412 and error(r)["type"] == "RevisionNumberConstraintFailed"
    r = client.call("DELETE", path, headers={"If-Match": "revision_number=0"})
    assert r.status_code == 412
    r = client.call("PUT", path, {"network": {"name": "r2"}}, headers={"If-Match": "etag-ish"})
    assert r.status_code == 400 and "If-Match" in error(r)["message"]
    assert api.revision() == before
    r = client.call("PUT", path, {"network": {"name": "r2"}},
                    headers={"If-Match": f"revision_number={rev}"})
    assert r.status_code == 200 and r.json()["network"]["revision_number"] == rev + 1


def test_a_rule_added_or_removed_raises_its_groups_revision(client):
    sg = client.create("security-groups", "security_group", name=unique("rv"))
    rule = client.create("security-group-rules", "security_group_rule", security_group_id=sg["id"],
                         direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22)
    shown = client.call("GET", f"/security-groups/{sg['id']}").json()["security_group"]
    assert shown["revision_number"] == sg["revision_number"] + 1
    assert client.call("DELETE", f"/security-group-rules/{rule['id']}").status_code == 204
    shown = client.call("GET", f"/security-groups/{sg['id']}").json()["security_group"]
    assert shown["revision_number"] == sg["revision_number"] + 2
    client.call("POST", "/security-group-rules", {"security_group_rules": [
        {"security_group_id": sg["id"], "direction": "ingress", "protocol": "udp",
         "port_range_min": p, "port_range_max": p} for p in (53, 123)]})
    shown = client.call("GET", f"/security-groups/{sg['id']}").json()["security_group"]
    assert shown["revision_number"] == sg["revision_number"] + 3   # once per request


def test_timestamps_are_rfc3339_on_every_kind(client):
    net = client.network(name=unique("ts"))
    docs = [net, client.subnet(net["id"], "10.122.0.0/24"), client.port(net["id"]),
            client.create("security-groups", "security_group", name=unique("ts")),
            client.create("instances", "instance", hostname="ts"),
            client.create("hosts", "host", name=unique("ts"), datapath_id=str(uuid.uuid4().int % 2**48))]
    for doc in docs:
        assert RFC3339.match(doc["created_at"]) and RFC3339.match(doc["updated_at"]), doc


# -- paging, sorting and filters ----------------------------------------------------------

def test_page_reverse_and_links(client):
    mark = unique("pg")
    made = [client.network(name=f"{mark}-{i}", tags=[mark])["id"] for i in range(5)]
    base = f"/networks?tags={mark}&sort_key=name&sort_dir=asc"
    assert ids(client.call("GET", base)) == made
    r = client.call("GET", f"{base}&limit=2")
    assert ids(r) == made[:2]
    assert r.json()["networks_links"][0]["rel"] == "next"
    assert ids(client.call("GET", f"{base}&limit=2&marker={made[1]}")) == made[2:4]
    # page_reverse: the page before the marker, in the asked order
    r = client.call("GET", f"{base}&limit=2&marker={made[3]}&page_reverse=True")
    assert ids(r) == made[1:3]
    assert r.json()["networks_links"][0]["rel"] == "previous"
    assert ids(client.call("GET", f"{base}&limit=2&page_reverse=true")) == made[3:]
    assert ids(client.call("GET", f"{base}&limit=2&marker={made[1]}&page_reverse=true")) == made[:1]
    desc = ids(client.call("GET", f"/networks?tags={mark}&sort_key=name&sort_dir=desc"))
    assert desc == made[::-1]


def test_fixed_ips_ip_address_substr(client):
    net = client.network(name=unique("ip"))
    sub = client.subnet(net["id"], "10.123.0.0/24")
    a = client.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.123.0.57"}])
    b = client.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.123.0.157"}])
    client.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.123.0.60"}])
    q = f"/ports?network_id={net['id']}&fixed_ips=ip_address_substr="
    assert sorted(ids(client.call("GET", q + "57"))) == sorted([a["id"], b["id"]])
    assert ids(client.call("GET", q + ".157")) == [b["id"]]
    assert ids(client.call("GET", "/ports?fixed_ips=ip_address=10.123.0.57")) == [a["id"]]


@pytest.mark.parametrize("query,field", [
    ("/networks?colour=blue", "colour"),
    ("/ports?fixed_ips=mac=fa:16:3e:00:00:01", "fixed_ips"),
    ("/ports?fixed_ips=10.0.0.1", "fixed_ips"),
    ("/networks?sort_key=colour", "colour"),
    ("/ports?sort_key=fixed_ips", "fixed_ips"),
    ("/networks?sort_key=name&sort_dir=sideways", "sort_dir"),
    ("/networks?page_reverse=maybe", "page_reverse"),
    ("/networks?limit=-1", "limit"),
    ("/availability_zones?colour=x", "colour"),
])
def test_unsupported_filters_and_sort_keys_are_400(client, query, field):
    r = client.call("GET", query)
    assert r.status_code == 400 and field in error(r)["message"], r.text


# -- provider:segmentation_id update -----------------------------------------------------

def test_segmentation_id_update_without_bound_ports(api, client):
    physnet = unique("pn")
    vlan = {"provider:network_type": "vlan", "provider:physical_network": physnet}
    net = client.network(**vlan, **{"provider:segmentation_id": 100})
    client.subnet(net["id"], "10.124.0.0/24")   # its DHCP port is not bound: no obstacle
    port = client.port(net["id"])
    path = f"/networks/{net['id']}"
    r = client.call("PUT", path, {"network": {"provider:segmentation_id": 101}})
    assert r.status_code == 200 and r.json()["network"]["provider:segmentation_id"] == 101
    # the old VLAN is free again, the new one taken
    other = client.network(**vlan, **{"provider:segmentation_id": 100})
    r = client.call("POST", "/networks", {"network": dict(vlan, **{"provider:segmentation_id": 101})})
    assert r.status_code == 409 and error(r)["type"] == "VlanIdInUse"
    r = client.call("PUT", path, {"network": {"provider:segmentation_id": 100}})
    assert r.status_code == 409 and error(r)["type"] == "VlanIdInUse"
    # a bound port pins it
    client.call("PUT", f"/ports/{port['id']}", {"port": {"binding:host_id": "compute1"}})
    before = api.revision()
    r = client.call("PUT", path, {"network": {"provider:segmentation_id": 102}})
    assert r.status_code == 409 and error(r)["type"] == "NetworkInUse"
    assert api.revision() == before
    assert client.call("GET", path).json()["network"]["provider:segmentation_id"] == 101
    flat = client.network(**{"provider:network_type": "flat", "provider:physical_network": physnet})
    r = client.call("PUT", f"/networks/{flat['id']}", {"network": {"provider:segmentation_id": 5}})
    assert r.status_code == 400 and "provider:segmentation_id" in error(r)["message"]
    assert other["provider:segmentation_id"] == 100


# -- extensions ---------------------------------------------------------------------------

def test_extensions_list_what_is_implemented_with_neutrons_names(client):
    exts = {e["alias"]: e["name"] for e in client.call("GET", "/extensions").json()["extensions"]}
    assert exts["binding"] == "Port Binding"                  # Nova looks for this name
    assert exts["ip-substring-filtering"] == "IP address substring filtering"
    for alias in ("standard-attr-tag", "tag-creation", "revision-if-match", "pagination",
                  "sorting", "filter-validation", "availability_zone",
                  "network_availability_zone", "quotas", "quota_details", "provider",
                  "security-group", "port-security", "allowed-address-pairs", "qos",
                  "router", "extraroute", "dvr"):
        assert alias in exts, alias
    for alias in ("dns-integration", "trunk", "segment",
                  "binding-extended", "quota-check-limit", "router_availability_zone"):
        assert alias not in exts, alias
        assert client.call("GET", f"/extensions/{alias}").status_code == 404
    assert client.call("GET", "/extensions/tag-creation").json()["extension"]["alias"] == "tag-creation"


# -- availability zones ---------------------------------------------------------------------

def test_availability_zones_from_hosts_and_network_hints(api, client):
    zone = unique("az")
    client.create("hosts", "host", name=unique("h"), datapath_id=str(uuid.uuid4().int % 2**48),
                  availability_zone=zone)
    host = client.create("hosts", "host", name=unique("h"), datapath_id=str(uuid.uuid4().int % 2**48))
    assert host["availability_zone"] == "nova"
    zones = client.call("GET", "/availability_zones").json()["availability_zones"]
    assert {"name": zone, "resource": "network", "state": "available"} in zones
    assert {"name": "nova", "resource": "network", "state": "available"} in zones
    only = client.call("GET", f"/availability_zones?name={zone}").json()["availability_zones"]
    assert [z["name"] for z in only] == [zone]
    assert client.call("GET", "/availability_zones?resource=router").json()["availability_zones"] == []

    net = client.network(name=unique("azn"), availability_zone_hints=[zone])
    assert net["availability_zone_hints"] == [zone] and net["availability_zones"] == [zone]
    plain = client.network(name=unique("azn"))
    assert plain["availability_zone_hints"] == [] and {zone, "nova"} <= set(plain["availability_zones"])
    before = api.revision()
    for hints in (["no-such-zone"], "nova", [5], ["a,b"]):
        r = client.call("POST", "/networks", {"network": {"availability_zone_hints": hints}})
        assert r.status_code == 400 and "availability_zone_hints" in error(r)["message"], r.text
    r = client.call("POST", "/hosts", {"host": {"name": "azbad", "datapath_id": "77",
                                                "availability_zone": ""}})
    assert r.status_code == 400 and "availability_zone" in error(r)["message"]
    assert api.revision() == before


# -- quotas --------------------------------------------------------------------------------

QUOTA_NAMES = {"network", "subnet", "port", "router", "floatingip", "security_group",
               "security_group_rule"}


def test_quotas_are_shown_set_and_enforced(api, client):
    project = unique("proj")
    q = client.call("GET", f"/quotas/{project}").json()["quota"]
    assert set(q) == QUOTA_NAMES and set(q.values()) == {-1}
    r = client.call("PUT", f"/quotas/{project}", {"quota": {"network": 2, "port": 3,
                                                             "security_group": 2,
                                                             "security_group_rule": 5,
                                                             "subnet": 1, "router": 4}})
    assert r.status_code == 200 and r.json()["quota"]["network"] == 2
    assert r.json()["quota"]["router"] == 4 and r.json()["quota"]["floatingip"] == -1
    assert client.call("GET", f"/quotas/{project}/default").json()["quota"]["network"] == -1

    n1 = client.network(project_id=project)
    client.network(project_id=project)
    before = api.revision()
    r = client.call("POST", "/networks", {"network": {"project_id": project}})
    assert r.status_code == 409 and error(r)["type"] == "OverQuota" and "network" in error(r)["message"]
    assert api.revision() == before

    client.subnet(n1["id"], "10.125.0.0/24", project_id=project, enable_dhcp=False)
    r = client.call("POST", "/subnets", {"subnet": {"network_id": n1["id"], "cidr": "10.126.0.0/24",
                                                    "project_id": project}})
    assert r.status_code == 409 and error(r)["type"] == "OverQuota"
    # a bulk create over the limit writes none of it
    r = client.call("POST", "/ports", {"ports": [{"network_id": n1["id"], "project_id": project}] * 4})
    assert r.status_code == 409 and error(r)["type"] == "OverQuota"
    assert api.revision() == before + 1
    client.call("POST", "/ports", {"ports": [{"network_id": n1["id"], "project_id": project}] * 3})

    sg = client.create("security-groups", "security_group", name="q", project_id=project)
    r = client.call("POST", "/security-groups", {"security_group": {"name": "q2", "project_id": project}})
    assert r.status_code == 409 and error(r)["type"] == "OverQuota"   # default + q
    # the default group's 4 rules and q's 2 egress rules are 6 already
    r = client.call("POST", "/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "project_id": project}})
    assert r.status_code == 409 and error(r)["type"] == "OverQuota"

    details = client.call("GET", f"/quotas/{project}/details").json()["quota"]
    assert details["network"] == {"limit": 2, "used": 2, "reserved": 0}
    assert details["port"]["used"] == 3 and details["router"]["used"] == 0
    assert details["floatingip"] == {"limit": -1, "used": 0, "reserved": 0}
    listed = client.call("GET", "/quotas").json()["quotas"]
    assert any(e["project_id"] == project and e["network"] == 2 for e in listed)

    assert client.call("DELETE", f"/quotas/{project}").status_code == 204
    assert client.call("GET", f"/quotas/{project}").json()["quota"]["network"] == -1
    client.network(project_id=project)


@pytest.mark.parametrize("body,field", [
    ({"quota": {"network": "many"}}, "network"),
    ({"quota": {"network": -2}}, "network"),
    ({"quota": {"port": True}}, "port"),
    ({"quota": {"volumes": 3}}, "volumes"),
    ({"quota": []}, "quota"),
])
def test_bad_quota_is_400_naming_the_field(api, client, body, field):
    before = api.revision()
    r = client.call("PUT", f"/quotas/{unique('p')}", body)
    assert r.status_code == 400 and field in error(r)["message"], r.text
    assert api.revision() == before


# -- status ---------------------------------------------------------------------------------

def test_network_is_active_and_a_port_shows_the_status_its_writer_stored(api, client):
    net = client.network(name=unique("st"))
    assert net["status"] == "ACTIVE"
    port = client.port(net["id"])
    assert port["status"] == "DOWN"
    # the controller writes status straight into the store; the API shows it
    store = api.open_store()
    try:
        with store.transaction() as txn:
            doc = txn.get("ports", port["id"])
            doc["status"] = "ACTIVE"
            doc["revision_number"] += 1
            txn.put("ports", doc["id"], doc, project_id=doc["project_id"], parent_id=doc["network_id"])
    finally:
        store.close()
    shown = client.call("GET", f"/ports/{port['id']}").json()["port"]
    assert shown["status"] == "ACTIVE" and shown["revision_number"] == 1
    assert port["id"] in ids(client.call("GET", f"/ports?network_id={net['id']}&status=ACTIVE"))
    # ...and keeps it through a client's update, which may not set it
    r = client.call("PUT", f"/ports/{port['id']}", {"port": {"name": "x"}})
    assert r.json()["port"]["status"] == "ACTIVE"
    r = client.call("PUT", f"/ports/{port['id']}", {"port": {"status": "DOWN"}})
    assert r.status_code == 400 and "status" in error(r)["message"]
    assert json.loads(json.dumps(shown))
