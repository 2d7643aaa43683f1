"""openstacksdk, unchanged, drives the API: auth_type none + endpoint override."""
from __future__ import annotations

import pytest
from openstack import exceptions

# The SDK warns about its own future API changes; they are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:::openstack.*")


def test_networks_subnets_ports_lifecycle(conn):
    net = conn.network.create_network(name="sdk-net")
    assert net.provider_network_type == "vlan" and net.mtu == 1500
    sub = conn.network.create_subnet(network_id=net.id, cidr="10.70.0.0/24", ip_version=4,
                                     name="sdk-sub", dns_nameservers=["10.70.0.53"])
    assert sub.gateway_ip == "10.70.0.1"
    assert sub.allocation_pools == [{"start": "10.70.0.2", "end": "10.70.0.254"}]

    port = conn.network.create_port(network_id=net.id, name="vm1",
                                    fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.70.0.40"}])
    assert port.fixed_ips == [{"subnet_id": sub.id, "ip_address": "10.70.0.40"}]
    assert port.mac_address.startswith("fa:16:3e:")
    assert len(port.security_group_ids) == 1

    names = {p.name for p in conn.network.ports(network_id=net.id)}
    assert names == {"vm1", ""}  # "" is the DHCP port
    assert conn.network.find_network("sdk-net").id == net.id
    assert [s.id for s in conn.network.subnets(network_id=net.id)] == [sub.id]

    port = conn.network.update_port(port, name="vm1-renamed", binding_host_id="compute1")
    assert port.name == "vm1-renamed" and port.binding_host_id == "compute1"
    net = conn.network.update_network(net, name="sdk-net-2")
    assert conn.network.get_network(net.id).name == "sdk-net-2"
    sub = conn.network.update_subnet(sub, name="sdk-sub-2")
    assert sub.name == "sdk-sub-2"

    with pytest.raises(exceptions.ConflictException):
        conn.network.delete_network(net)
    with pytest.raises(exceptions.BadRequestException):
        conn.network.create_port(network_id=net.id, mac_address="nonsense")

    conn.network.delete_port(port)
    conn.network.delete_subnet(sub)
    conn.network.delete_network(net)
    with pytest.raises(exceptions.ResourceNotFound):
        conn.network.get_network(net.id)
    assert conn.network.find_network("sdk-net-2") is None


def test_security_groups_through_sdk(conn):
    sg = conn.network.create_security_group(name="sdk-sg", description="d")
    rule = conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", protocol="tcp",
        port_range_min=22, port_range_max=22, remote_ip_prefix="10.0.0.0/8")
    assert rule.port_range_min == 22
    got = conn.network.get_security_group(sg.id)
    assert rule.id in {r["id"] for r in got.security_group_rules}
    conn.network.delete_security_group_rule(rule)
    conn.network.delete_security_group(sg)
    with pytest.raises(exceptions.ResourceNotFound):
        conn.network.get_security_group(sg.id)


def test_quotas_through_sdk_get_quota_and_update_quota(conn):
    project = "sdk-quota-project"
    quota = conn.network.get_quota(project)
    assert quota.networks == -1 and quota.ports == -1 and quota.routers == -1
    quota = conn.network.update_quota(quota, networks=1, ports=10, routers=3,
                                      floating_ips=4, security_groups=5,
                                      security_group_rules=20, subnets=2)
    got = conn.network.get_quota(project)
    assert (got.networks, got.ports, got.routers, got.floating_ips, got.security_groups,
            got.security_group_rules, got.subnets) == (1, 10, 3, 4, 5, 20, 2)
    details = conn.network.get_quota(project, details=True)
    assert details.networks == {"limit": 1, "used": 0, "reserved": 0}
    conn.network.create_network(name="q-net", project_id=project)
    with pytest.raises(exceptions.ConflictException) as err:
        conn.network.create_network(name="q-net-2", project_id=project)
    assert "Quota exceeded" in str(err.value)
    assert conn.network.get_quota(project, details=True).networks["used"] == 1
    conn.network.delete_quota(project)
    assert conn.network.get_quota(project).networks == -1


def test_tags_and_revision_through_sdk(conn):
    net = conn.network.create_network(name="sdk-tags")
    conn.network.set_tags(net, ["a", "b"])
    assert sorted(conn.network.get_network(net.id).tags) == ["a", "b"]
    assert [n.id for n in conn.network.networks(tags="a,b")] == [net.id]
    assert net.id not in [n.id for n in conn.network.networks(not_tags="a")]
    conn.network.remove_tag(net, "a")
    assert conn.network.get_network(net.id).tags == ["b"]
    # openstacksdk sends If-Match when asked to honour the revision it holds
    stale = conn.network.get_network(net.id)
    conn.network.update_network(net, name="sdk-tags-2")
    with pytest.raises(exceptions.HttpException) as err:
        conn.network.update_network(stale, name="sdk-tags-3", if_revision=stale.revision_number)
    assert err.value.status_code == 412
    conn.network.delete_network(net)
