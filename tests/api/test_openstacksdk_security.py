"""openstacksdk, unchanged, drives security groups, vmflow's rule fields and address groups."""
from __future__ import annotations

import pytest
from openstack import exceptions

pytestmark = pytest.mark.filterwarnings("ignore:::openstack.*")


def test_rules_and_address_groups_through_sdk(conn):
    sg = conn.network.create_security_group(name="sdk-fw", stateful=False)
    assert sg.stateful is False and len(sg.security_group_rules) == 2
    ag = conn.network.create_address_group(name="sdk-ag", addresses=["10.8.0.7/24"])
    assert ag.addresses == ["10.8.0.0/24"]
    ag = conn.network.add_addresses_to_address_group(ag, ["10.9.0.0/16"])
    assert ag.addresses == ["10.8.0.0/24", "10.9.0.0/16"]
    ag = conn.network.remove_addresses_from_address_group(ag, ["10.8.0.0/24"])
    assert ag.addresses == ["10.9.0.0/16"]
    with pytest.raises(exceptions.BadRequestException):
        conn.network.add_addresses_to_address_group(ag, ["10.9.0.0/16"])

    rule = conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", protocol="icmp", port_range_min=8,
        port_range_max=0, remote_address_group_id=ag.id)
    assert rule.remote_address_group_id == ag.id and rule.port_range_min == 8
    with pytest.raises(exceptions.ConflictException):
        conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", protocol="1", port_range_min=8,
            port_range_max=0, remote_address_group_id=ag.id)
    with pytest.raises(exceptions.BadRequestException):
        conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", protocol="tcp", port_range_min=80,
            port_range_max=22)
    with pytest.raises(exceptions.ConflictException):
        conn.network.delete_address_group(ag)

    # vmflow's own fields ride along in the same body; the SDK hands them back raw
    raw = conn.network.post("/security-group-rules", json={"security_group_rule": {
        "security_group_id": sg.id, "rule": "in:deny 10.0.0.0/8 tcp 22,80", "priority": 5}})
    assert raw.status_code == 201
    got = conn.network.get_security_group_rule(raw.json()["security_group_rule"]["id"])
    assert (got.direction, got.protocol, got.remote_ip_prefix) == ("ingress", "tcp", "10.0.0.0/8")
    listed = {r.id for r in conn.network.security_group_rules(security_group_id=sg.id)}
    assert {rule.id, got.id} <= listed

    conn.network.delete_security_group_rule(rule)
    conn.network.delete_address_group(ag)
    conn.network.delete_security_group(sg)
    with pytest.raises(exceptions.ResourceNotFound):
        conn.network.get_address_group(ag.id)
