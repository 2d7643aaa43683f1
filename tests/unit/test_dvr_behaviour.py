"""apps/dvr.py through the packet walker: where routed packets end up.

    h1 (dvr fa:16:3f:00:00:a1, uplink 100)    h2 (dvr fa:16:3f:00:00:a2, uplink 100)
    router r1: na 10.1.0.0/24 (vlan 201), nb 10.2.0.0/24 (vlan 202)
    a1 na h1 .11     b1 nb h1 .11     b2 nb h2 .12     app nb h2 .50 (appliance)
    c1 nc 10.3.0.0/24 (vlan 203) on h1, on no router
    router r2: nd 10.1.0.0/24 (vlan 204), ne 10.2.0.0/24 (vlan 205), the same
    CIDRs as r1's: d1 nd h1 .11, e1 ne h1 .11
"""
from __future__ import annotations

import pytest
from behaviour import Switch, all_apps
from l2_fixtures import plugged_switch, put

from apps.dvr import DvrApp
from apps.secgroup import SecGroupApp
from controller.compiler import FlowCompiler, SwitchFlows
from topology.view import TopologyView

DVR = {"h1": "fa:16:3f:00:00:a1", "h2": "fa:16:3f:00:00:a2"}
NETS = {"na": (11, 201, "10.1.0"), "nb": (12, 202, "10.2.0"), "nc": (13, 203, "10.3.0"),
        "nd": (14, 204, "10.1.0"), "ne": (15, 205, "10.2.0")}
KEYS = iter(range(1, 1000))


def _port(name, net, ip, host="", mac=None, **extra):
    key = next(KEYS)
    body = {"id": name, "_key": key, "network_id": net,
            "mac_address": mac or f"fa:16:3e:00:{key // 256:02x}:{key % 256:02x}",
            "fixed_ips": [{"subnet_id": "s" + net, "ip_address": ip}],
            "allowed_address_pairs": [], "admin_state_up": True, "binding:host_id": host,
            "binding:profile": {"interface_name": "tap-" + name}, "device_owner": "compute:nova",
            "device_id": "", "port_security_enabled": False, "security_groups": []}
    body.update(extra)
    return body


def _interface(router, net, ip):
    return _port(f"{router}-{net}", net, ip, device_owner="network:router_interface_distributed",
                 device_id=router)


def cloud() -> TopologyView:
    hosts = {h: {"id": h, "name": h, "datapath_id": f"{0xA0 + i:016x}", "dvr_mac": DVR[h],
                 "physical_networks": {"physnet1": "up"}} for i, h in ((1, "h1"), (2, "h2"))}
    networks = {n: {"id": n, "_key": k, "admin_state_up": True, "provider:network_type": "vlan",
                    "provider:physical_network": "physnet1", "provider:segmentation_id": vid}
                for n, (k, vid, _) in NETS.items()}
    subnets = {"s" + n: {"id": "s" + n, "network_id": n, "cidr": f"{p}.0/24",
                         "gateway_ip": f"{p}.1"} for n, (_, _, p) in NETS.items()}
    ports = [_interface("r1", "na", "10.1.0.1"), _interface("r1", "nb", "10.2.0.1"),
             _interface("r2", "nd", "10.1.0.1"), _interface("r2", "ne", "10.2.0.1"),
             _port("a1", "na", "10.1.0.11", "h1"), _port("b1", "nb", "10.2.0.11", "h1"),
             _port("b2", "nb", "10.2.0.12", "h2"), _port("c1", "nc", "10.3.0.11", "h1"),
             _port("app", "nb", "10.2.0.50", "h2"),
             _port("d1", "nd", "10.1.0.11", "h1"), _port("e1", "ne", "10.2.0.11", "h1")]
    routers = {r: {"id": r, "_key": k, "admin_state_up": True, "routes": []}
               for r, k in (("r1", 1), ("r2", 2))}
    routers["r1"]["routes"] = [{"destination": "192.168.50.0/24", "nexthop": "10.2.0.50"}]
    return TopologyView(1, {"hosts": hosts, "networks": networks, "subnets": subnets,
                            "ports": {p["id"]: p for p in ports}, "routers": routers})


def switch(view, host, extra=()) -> Switch:
    sw = plugged_switch(view, 0xA1 if host == "h1" else 0xA2)
    sw.ports_by_name["up"] = 100
    return Switch(view, sw, all_apps() + [DvrApp(), *extra])


@pytest.fixture
def view():
    return cloud()


def gw(view, router, net):
    return view.ports[f"{router}-{net}"]["mac_address"]


def ping(h: Switch, view, src, dst_ip, router="r1", **kw):
    port = view.ports[src]
    return h.send(port, eth_dst=gw(view, router, port["network_id"]), ipv4_dst=dst_ip,
                  ip_proto=1, **kw)


def test_routed_on_the_same_host_with_ttl_decremented(view):
    h1 = switch(view, "h1")
    assert h1.problems() == []
    t = ping(h1, view, "a1", "10.2.0.11", nw_ttl=64)
    assert t.ports == [h1.ofport(view.ports["b1"])]
    out = t.outputs[0].packet
    assert out["eth_src"] == gw(view, "r1", "nb") and out["eth_dst"] == view.ports["b1"]["mac_address"]
    assert out["nw_ttl"] == "63"
    back = ping(h1, view, "b1", "10.1.0.11")
    assert back.ports == [h1.ofport(view.ports["a1"])]
    assert back.outputs[0].packet["eth_src"] == gw(view, "r1", "na")


def test_switched_traffic_is_not_routed(view):
    h1 = switch(view, "h1")
    b1 = view.ports["b1"]
    t = h1.send(view.ports["a1"], eth_dst=b1["mac_address"], ipv4_dst="10.2.0.11", nw_ttl=64)
    assert t.dropped and not t.outputs      # a1 and b1 are on different networks
    t = h1.send(b1, eth_dst=view.ports["b2"]["mac_address"], ipv4_dst="10.2.0.12", nw_ttl=64)
    [out] = t.outputs
    assert out.port == 100 and out.packet["eth_src"] == b1["mac_address"]
    assert out.packet["nw_ttl"] == "64"


def test_routed_across_hosts_carries_the_dvr_mac_and_gets_the_gateway_back(view):
    h1, h2 = switch(view, "h1"), switch(view, "h2")
    b2 = view.ports["b2"]
    t = ping(h1, view, "a1", "10.2.0.12", nw_ttl=64)
    [out] = t.outputs
    assert out.port == 100 and out.vlans == [202]
    assert out.packet["eth_src"] == DVR["h1"] and out.packet["eth_dst"] == b2["mac_address"]
    assert out.packet["nw_ttl"] == "63"
    arrive = h2.receive(vlan=202, eth_src=DVR["h1"], eth_dst=b2["mac_address"],
                        ipv4_src="10.1.0.11", ipv4_dst="10.2.0.12", ip_proto=1, nw_ttl=63)
    assert arrive.ports == [h2.ofport(b2)]
    assert arrive.outputs[0].packet["eth_src"] == gw(view, "r1", "nb")
    # the reply, routed on h2 (which has no port on na: the router brings it)
    reply = ping(h2, view, "b2", "10.1.0.11")
    [out] = reply.outputs
    assert out.port == 100 and out.vlans == [201] and out.packet["eth_src"] == DVR["h2"]
    back = h1.receive(vlan=201, eth_src=DVR["h2"], eth_dst=view.ports["a1"]["mac_address"],
                      ipv4_src="10.2.0.12", ipv4_dst="10.1.0.11", ip_proto=1)
    assert back.ports == [h1.ofport(view.ports["a1"])]
    assert back.outputs[0].packet["eth_src"] == gw(view, "r1", "na")


def test_unknown_destinations_are_dropped_on_the_host(view):
    h1 = switch(view, "h1")
    for dst in ("10.3.0.11", "8.8.8.8", "10.2.0.99"):
        t = ping(h1, view, "a1", dst)
        assert t.dropped and not t.outputs, dst
    # nothing addressed to a gateway MAC leaves the host, IPv4 or not
    t = h1.send(view.ports["a1"], eth_dst=gw(view, "r1", "na"), eth_type=0x86DD)
    assert t.dropped and not t.outputs


def test_static_route_via_an_appliance(view):
    h1 = switch(view, "h1")
    app = view.ports["app"]
    t = ping(h1, view, "a1", "192.168.50.7", nw_ttl=64)
    [out] = t.outputs
    assert out.port == 100 and out.vlans == [202]
    assert out.packet["eth_dst"] == app["mac_address"] and out.packet["eth_src"] == DVR["h1"]
    assert out.packet["nw_ttl"] == "63"
    t = ping(h1, view, "a1", "192.168.51.7")
    assert t.dropped and not t.outputs


def test_overlapping_cidrs_behind_two_routers_stay_apart(view):
    h1 = switch(view, "h1")
    t = ping(h1, view, "d1", "10.2.0.11", router="r2")
    assert t.ports == [h1.ofport(view.ports["e1"])]
    t = ping(h1, view, "a1", "10.2.0.11")
    assert t.ports == [h1.ofport(view.ports["b1"])]
    # a1 using r2's gateway MAC gets nowhere
    t = h1.send(view.ports["a1"], eth_dst=gw(view, "r2", "nd"), ipv4_dst="10.2.0.11", ip_proto=1)
    assert t.dropped and not t.outputs


def test_removing_an_interface_stops_routing_to_its_subnet(view):
    h1 = switch(view, "h1")
    assert ping(h1, view, "a1", "10.2.0.11").ports
    from topology.store.base import Change
    view.apply(Change(view.revision + 1, "ports", "r1-nb", "delete", None))
    h1 = switch(view, "h1")
    t = ping(h1, view, "a1", "10.2.0.11")
    assert t.dropped and not t.outputs


def test_a_host_without_ports_on_a_router_network_has_no_routing(view):
    put(view, "hosts", {"id": "h3", "name": "h3", "datapath_id": f"{0xA3:016x}",
                        "dvr_mac": "fa:16:3f:00:00:a3", "physical_networks": {"physnet1": "up"}})
    put(view, "ports", _port("c3", "nc", "10.3.0.33", "h3"))
    sw = plugged_switch(view, 0xA3)
    h3 = Switch(view, sw, all_apps() + [DvrApp()])
    assert not [f for f in h3.flows if f.table == "routing" and f.priority >= 1000]


def test_firewall_runs_around_routing_and_the_flows_keep_to_the_pipeline(view):
    for name in ("a1", "b1"):
        view.ports[name].update(port_security_enabled=True, security_groups=["open"])
    put(view, "security_groups", {"id": "open", "_key": 9, "stateful": True})
    from topology.secgroup_rules import normalise
    for i, text in enumerate(("in:allow icmp", "out:allow any")):
        put(view, "security_group_rules", {**normalise({"rule": text}), "id": f"r{i}",
                                           "_key": 50 + i, "security_group_id": "open"})
    view._reindex()
    compiler = FlowCompiler(all_apps() + [DvrApp(), SecGroupApp()])
    memo = SwitchFlows()
    sw = plugged_switch(view, 0xA1)
    sw.ports_by_name["up"] = 100
    compiler.refresh(view, sw, memo)
    assert compiler.violations == 0 and compiler.conflicts == 0 and compiler.errors == 0
    h1 = switch(view, "h1", [SecGroupApp()])
    t = ping(h1, view, "a1", "10.2.0.11")
    assert t.ports == [h1.ofport(view.ports["b1"])]
    assert "ingress_rules" in t.outputs[0].path and "egress_rules" in t.outputs[0].path
    t = h1.send(view.ports["a1"], eth_dst=gw(view, "r1", "na"), ipv4_dst="10.2.0.11",
                tcp_dst=22)
    assert t.dropped and not t.outputs and t.dropped_at.startswith("ingress_")


def test_an_unregistered_dvr_mac_is_dropped_on_the_uplink(view):
    h2 = switch(view, "h2")
    b2 = view.ports["b2"]
    t = h2.receive(vlan=202, eth_src="fa:16:3f:00:00:77", eth_dst=b2["mac_address"],
                   ipv4_src="10.1.0.11", ipv4_dst="10.2.0.12", ip_proto=1)
    assert t.dropped and not t.outputs and t.dropped_at == "classify"
    # an ordinary frame from another host's VM still arrives
    t = h2.receive(vlan=202, eth_src=view.ports["b1"]["mac_address"], eth_dst=b2["mac_address"],
                   ipv4_src="10.2.0.11", ipv4_dst="10.2.0.12", ip_proto=1)
    assert t.ports == [h2.ofport(b2)]


def test_another_hosts_external_mac_is_dropped_by_its_own_flow_not_the_counted_one(view):
    """[api] external_base_mac shares the DVR range by default: a frame from a
    known host's external MAC that nothing took is no stranger's."""
    from apps.dvr import PRIO_DVR_EXTERNAL, PRIO_DVR_UNKNOWN
    view.hosts["h1"]["external_mac"] = "fa:16:3f:00:e0:01"
    h2 = switch(view, "h2")
    b2 = view.ports["b2"]
    t = h2.receive(vlan=202, eth_src="fa:16:3f:00:e0:01", eth_dst=b2["mac_address"],
                   ipv4_src="10.1.0.11", ipv4_dst="10.2.0.12", ip_proto=1)
    assert t.dropped and not t.outputs and t.steps[-1].flow.priority == PRIO_DVR_EXTERNAL
    t = h2.receive(vlan=202, eth_src="fa:16:3f:00:e0:02", eth_dst=b2["mac_address"],
                   ipv4_src="10.1.0.11", ipv4_dst="10.2.0.12", ip_proto=1)
    assert t.dropped and t.steps[-1].flow.priority == PRIO_DVR_UNKNOWN
    # a host's own external MAC, and one outside the range, get no such flow
    view.hosts["h2"]["external_mac"] = "fa:16:3f:00:e0:02"
    view.hosts["h1"]["external_mac"] = "fa:16:3e:00:e0:01"
    assert not [f for f in switch(view, "h2").flows if f.priority == PRIO_DVR_EXTERNAL]
