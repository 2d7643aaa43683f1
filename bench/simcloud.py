"""A simulated cloud for the controller benchmarks (bench/compute.py, bench/restart.py).

N ports over H hosts and networks of P ports each. Ports are spread round
robin over the hosts, so every network is present on every host: each
switch sees every port (its own as local, the rest as remote), the worst
case for per-switch flow computation. Every port is "plugged": its switch
reports its interface.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.app import SwitchView  # noqa: E402
from topology.view import TopologyView, interface_name  # noqa: E402


GROUP = "5e000000-0000-4000-8000-000000000001"
ADDRESSES = "ad000000-0000-4000-8000-000000000002"


def security_docs() -> dict:
    """One stateful group every port is in, with Neutron's default rules (in
    from the group itself, out to anywhere), a port list, a range, ICMP, a
    deny, and an address group as a remote."""
    from topology.secgroup_rules import normalise
    rules = [{"direction": "ingress", "ethertype": "IPv4", "remote_group_id": GROUP},
             {"direction": "egress", "ethertype": "IPv4"},
             {"rule": "in:allow tcp 22,80,443"}, {"rule": "in:allow tcp 8000-8080"},
             {"rule": "in:allow icmp 8/0"}, {"rule": "in:deny 192.0.2.0/24 any", "priority": 5},
             {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp", "ports": "53",
              "remote_address_group_id": ADDRESSES}]
    out = {}
    for i, r in enumerate(rules, start=1):
        rid = f"{i:08x}-0000-4000-8000-00000000r{i:03d}"
        out[rid] = {**normalise(r), "id": rid, "_key": i, "security_group_id": GROUP}
    return {"security_groups": {GROUP: {"id": GROUP, "_key": 1, "name": "default",
                                        "stateful": True}},
            "security_group_rules": out,
            "address_groups": {ADDRESSES: {"id": ADDRESSES, "_key": 1,
                                           "addresses": ["10.250.0.0/24", "10.251.0.1/32"]}}}


def docs(ports: int, hosts: int, per_network: int = 100, groups: bool = False) -> dict:
    """groups: every port in one security group (security_docs)."""
    nets = {}
    out_ports = {}
    host_docs = {f"h{i}": {"id": f"h{i}", "name": f"h{i}", "datapath_id": f"{i + 1:016x}",
                           "physical_networks": {"physnet1": "uplink"}} for i in range(hosts)}
    for n in range(ports):
        net = n // per_network
        nid = f"net{net:05d}"
        if nid not in nets:
            nets[nid] = {"id": nid, "_key": net + 1, "name": nid, "admin_state_up": True,
                         "provider:network_type": "vlan", "provider:physical_network": "physnet1",
                         "provider:segmentation_id": 100 + net}
        pid = f"{n:08x}-0000-4000-8000-{n:012x}"
        out_ports[pid] = {
            "id": pid, "_key": n + 1, "network_id": nid,
            "mac_address": "fa:16:3e:%02x:%02x:%02x" % (n >> 16 & 255, n >> 8 & 255, n & 255),
            "fixed_ips": [{"subnet_id": f"sub-{nid}",
                           "ip_address": f"10.{net >> 8 & 255}.{net & 255}.{n % per_network + 2}"}],
            "allowed_address_pairs": [], "admin_state_up": True,
            "binding:host_id": f"h{n % hosts}", "device_owner": "compute:nova",
            "device_id": f"vm-{n}", "port_security_enabled": True,
            "security_groups": [GROUP] if groups else []}
    subnets = {f"sub-{nid}": {"id": f"sub-{nid}", "network_id": nid, "ip_version": 4,
                              "cidr": f"10.{(net['_key'] - 1) >> 8 & 255}.{(net['_key'] - 1) & 255}.0/24",
                              "gateway_ip": None, "enable_dhcp": True, "dns_nameservers": [],
                              "host_routes": [], "allocation_pools": []}
               for nid, net in nets.items()}
    out = {"hosts": host_docs, "networks": nets, "ports": out_ports, "subnets": subnets}
    if groups:
        out.update(security_docs())
    return out


def switch_ports(view: TopologyView, host: str) -> dict[str, int]:
    names = [interface_name(p) for p in view.ports_on_host(host)]
    ports = {name: i for i, name in enumerate(names, start=1)}
    ports["uplink"] = len(ports) + 1
    return ports


def switches(view: TopologyView) -> list[SwitchView]:
    return [SwitchView(int(h["datapath_id"], 16), h, switch_ports(view, h["name"]))
            for h in view.hosts.values()]
