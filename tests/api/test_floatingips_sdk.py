"""openstacksdk, unchanged, drives floating IPs, port forwardings and router
gateways (what Terraform, Ansible and the openstack CLI are built on)."""
from __future__ import annotations

import pytest
from openstack import exceptions

pytestmark = pytest.mark.filterwarnings("ignore:::openstack.*")


def test_router_gateway_set_and_unset_through_sdk(conn):
    ext = conn.network.create_network(name="sdk-ext", is_router_external=True,
                                      provider_network_type="vlan",
                                      provider_physical_network="ext",
                                      provider_segmentation_id=3900)
    esub = conn.network.create_subnet(network_id=ext.id, cidr="100.64.10.0/24", ip_version=4,
                                      is_dhcp_enabled=False)
    router = conn.network.create_router(name="sdk-gw")
    # the proxy layer: openstack router set --external-gateway
    router = conn.network.update_router(router, external_gateway_info={"network_id": ext.id})
    info = router.external_gateway_info
    assert info["network_id"] == ext.id and info["enable_snat"] is True
    assert info["external_fixed_ips"][0]["subnet_id"] == esub.id
    # the cloud layer, with SNAT off and a chosen address
    router = conn.update_router(router.id, ext_gateway_net_id=ext.id, enable_snat=False,
                                ext_fixed_ips=[{"subnet_id": esub.id,
                                                "ip_address": "100.64.10.20"}])
    assert router.external_gateway_info["enable_snat"] is False
    assert router.external_gateway_info["external_fixed_ips"] == [
        {"subnet_id": esub.id, "ip_address": "100.64.10.20"}]
    gw_ports = list(conn.network.ports(device_id=router.id, device_owner="network:router_gateway"))
    assert [p.fixed_ips[0]["ip_address"] for p in gw_ports] == ["100.64.10.20"]
    # openstack router unset --external-gateway sends {}
    router = conn.network.update_router(router, external_gateway_info={})
    assert router.external_gateway_info is None
    assert list(conn.network.ports(device_id=router.id,
                                   device_owner="network:router_gateway")) == []
    with pytest.raises(exceptions.BadRequestException):
        conn.network.update_router(router, external_gateway_info={"network_id": "x"})
    conn.network.delete_router(router)
    conn.network.delete_subnet(esub)
    conn.network.delete_network(ext)


def test_floating_ips_and_port_forwardings_through_sdk(conn):
    ext = conn.network.create_network(name="sdk-ext2", is_router_external=True,
                                      provider_network_type="vlan",
                                      provider_physical_network="ext",
                                      provider_segmentation_id=3901)
    conn.network.create_subnet(network_id=ext.id, cidr="100.64.11.0/24", ip_version=4,
                               is_dhcp_enabled=False)
    router = conn.network.create_router(name="sdk-fip-router",
                                        external_gateway_info={"network_id": ext.id})
    net = conn.network.create_network(name="sdk-fip-net")
    sub = conn.network.create_subnet(network_id=net.id, cidr="10.72.0.0/24", ip_version=4)
    conn.network.add_interface_to_router(router, subnet=sub.id)
    port = conn.network.create_port(network_id=net.id, name="sdk-vm")

    fip = conn.network.create_ip(floating_network_id=ext.id, description="sdk")
    assert fip.status == "DOWN" and fip.port_id is None
    assert fip.floating_ip_address.startswith("100.64.11.")
    fip = conn.network.update_ip(fip, port_id=port.id)
    assert fip.port_id == port.id and fip.router_id == router.id
    assert fip.fixed_ip_address == port.fixed_ips[0]["ip_address"]
    assert fip.port_details["mac_address"] == port.mac_address
    assert conn.network.get_ip(fip.id).floating_ip_address == fip.floating_ip_address
    assert [x.id for x in conn.network.ips(port_id=port.id)] == [fip.id]
    assert [x.id for x in conn.network.ips(router_id=router.id)] == [fip.id]
    with pytest.raises(exceptions.ConflictException):
        conn.network.create_port_forwarding(
            floatingip_id=fip.id, internal_port_id=port.id,
            internal_ip_address=port.fixed_ips[0]["ip_address"], internal_port=22,
            external_port=2222, protocol="tcp")
    fip = conn.network.update_ip(fip, port_id=None)
    assert fip.port_id is None and fip.status == "DOWN"

    pf = conn.network.create_port_forwarding(
        floatingip_id=fip.id, internal_port_id=port.id,
        internal_ip_address=port.fixed_ips[0]["ip_address"], internal_port=22,
        external_port=2222, protocol="tcp", description="ssh")
    assert pf.internal_port == 22 and pf.external_port == 2222 and pf.protocol == "tcp"
    got = conn.network.get_port_forwarding(pf, fip)
    assert got.internal_port_id == port.id and got.description == "ssh"
    assert [x.id for x in conn.network.port_forwardings(fip, protocol="tcp")] == [pf.id]
    pf = conn.network.update_port_forwarding(pf, fip, external_port=2022)
    assert pf.external_port == 2022
    with pytest.raises(exceptions.ConflictException):
        conn.network.create_port_forwarding(
            floatingip_id=fip.id, internal_port_id=port.id,
            internal_ip_address=port.fixed_ips[0]["ip_address"], internal_port=23,
            external_port=2022, protocol="tcp")
    conn.network.delete_port_forwarding(pf, fip, ignore_missing=False)
    assert list(conn.network.port_forwardings(fip)) == []

    conn.network.delete_ip(fip, ignore_missing=False)
    with pytest.raises(exceptions.ResourceNotFound):
        conn.network.get_ip(fip.id)
    conn.network.delete_port(port)
    conn.network.remove_interface_from_router(router, subnet=sub.id)
    conn.network.delete_router(router)


def test_cloud_layer_floating_ips(conn):
    """conn.create_floating_ip / list / delete, as Ansible's and Terraform's paths use."""
    ext = conn.network.create_network(name="sdk-ext3", is_router_external=True,
                                      provider_network_type="vlan",
                                      provider_physical_network="ext",
                                      provider_segmentation_id=3902)
    conn.network.create_subnet(network_id=ext.id, cidr="100.64.12.0/24", ip_version=4,
                               is_dhcp_enabled=False)
    assert ext.id in {n["id"] for n in conn.get_external_ipv4_floating_networks()}
    fip = conn.create_floating_ip(network=ext.id)
    assert fip["floating_ip_address"].startswith("100.64.12.") and fip["status"] == "DOWN"
    assert fip["id"] in {x["id"] for x in conn.list_floating_ips()}
    assert conn.delete_floating_ip(fip["id"]) is True
    assert conn.network.find_ip(fip["id"]) is None
