"""apps/nat.py through the packet walker: floating IPs and port forwarding.

    c1 (external_mac fa:16:3f:e0:00:01), c2 (fa:16:3f:e0:00:02), uplink 100 on physnet1
    router r (key 7): tenant n 10.1.0.0/24 (vlan 201), gateway on ext 203.0.113.0/24
    (vlan 300, router:external, gateway_ip 203.0.113.1)
    vm1 n c1 .11 (floating IP 203.0.113.10), vm2 n c2 .12, vm3 m 10.2.0.0/24 c1 .11
    outside host 203.0.113.100 (fa:16:3e:99:99:99), learned
"""
from __future__ import annotations

import pytest
from behaviour import Switch, all_apps
from l2_fixtures import plugged_switch, put
from test_secgroup_behaviour import sg

from apps.dvr import DvrApp
from apps.nat import BINDINGS, NatApp, _masked_ranges, binding_id
from apps.secgroup import SecGroupApp
from controller.app import PacketIn
from controller.external_status import ExternalWriter
from controller.packetfields import make_packet, parse_ct_state
from controller.pipeline import external_zone
from topology.view import TopologyView

EXT_MAC = {"c1": "fa:16:3f:e0:00:01", "c2": "fa:16:3f:e0:00:02", "c3": "fa:16:3f:e0:00:03",
           "c4": "fa:16:3f:e0:00:04"}
DVR = {"c1": "fa:16:3f:00:00:c1", "c2": "fa:16:3f:00:00:c2", "c3": "fa:16:3f:00:00:c3",
       "c4": "fa:16:3f:00:00:c4"}
GW_IP = "203.0.113.2"
GW_PORT_MAC = "fa:16:3e:00:00:03"
FIP = "203.0.113.10"
OUTSIDE, OUTSIDE_MAC = "203.0.113.100", "fa:16:3e:99:99:99"
GW_MAC = "fa:16:3e:11:11:11"
ROUTER_KEY = 7


def _port(name, key, net, ip, host="", **extra):
    body = {"id": name, "_key": key, "network_id": net,
            "mac_address": f"fa:16:3e:00:00:{key:02x}",
            "fixed_ips": [{"subnet_id": "s" + net, "ip_address": ip}],
            "allowed_address_pairs": [], "admin_state_up": True, "binding:host_id": host,
            "binding:profile": {"interface_name": "tap-" + name}, "device_owner": "compute:nova",
            "device_id": "", "port_security_enabled": False, "security_groups": []}
    body.update(extra)
    return body


def cloud() -> TopologyView:
    hosts = {h: {"id": h, "name": h, "datapath_id": f"{0xC0 + i:016x}", "dvr_mac": DVR[h],
                 "external_mac": EXT_MAC[h], "physical_networks": {"physnet1": "up"},
                 "is_gateway": h in ("c3", "c4"), "admin_state_up": h != "c4"}
             for i, h in ((1, "c1"), (2, "c2"), (3, "c3"), (4, "c4"))}
    nets = {"n": (11, 201), "m": (12, 202), "ext": (13, 300)}
    networks = {n: {"id": n, "_key": k, "admin_state_up": True, "provider:network_type": "vlan",
                    "provider:physical_network": "physnet1", "provider:segmentation_id": v,
                    "router:external": n == "ext"} for n, (k, v) in nets.items()}
    subnets = {"sn": {"id": "sn", "network_id": "n", "cidr": "10.1.0.0/24", "gateway_ip": "10.1.0.1"},
               "sm": {"id": "sm", "network_id": "m", "cidr": "10.2.0.0/24", "gateway_ip": "10.2.0.1"},
               "sext": {"id": "sext", "network_id": "ext", "cidr": "203.0.113.0/24",
                        "gateway_ip": "203.0.113.1"}}
    ri = dict(device_owner="network:router_interface_distributed", device_id="r")
    ports = [_port("r-n", 1, "n", "10.1.0.1", **ri), _port("r-m", 2, "m", "10.2.0.1", **ri),
             _port("r-gw", 3, "ext", "203.0.113.2", device_owner="network:router_gateway",
                   device_id="r", project_id=""),
             _port("vm1", 11, "n", "10.1.0.11", "c1"), _port("vm2", 12, "n", "10.1.0.12", "c2"),
             _port("vm3", 13, "m", "10.2.0.11", "c1")]
    routers = {"r": {"id": "r", "_key": ROUTER_KEY, "admin_state_up": True, "routes": [],
                     "external_gateway_info": {"network_id": "ext", "enable_snat": True,
                                               "external_fixed_ips": [{"subnet_id": "sext",
                                                                       "ip_address": "203.0.113.2"}]}}}
    fips = {"f1": {"id": "f1", "_key": 1, "floating_network_id": "ext",
                   "floating_ip_address": FIP, "port_id": "vm1", "fixed_ip_address": "10.1.0.11",
                   "router_id": "r", "status": "DOWN", "project_id": "p"}}
    bindings = {binding_id("ext", OUTSIDE): {"id": binding_id("ext", OUTSIDE), "network_id": "ext",
                                              "ip_address": OUTSIDE, "mac_address": OUTSIDE_MAC}}
    return TopologyView(1, {"hosts": hosts, "networks": networks, "subnets": subnets,
                            "ports": {p["id"]: p for p in ports}, "routers": routers,
                            "floatingips": fips, BINDINGS: bindings})


def switch(view, host) -> Switch:
    sw = plugged_switch(view, 0xC0 + int(host[1]))
    return Switch(view, sw, all_apps() + [SecGroupApp(), DvrApp(), NatApp()])


@pytest.fixture
def view():
    return cloud()


def from_outside(h: Switch, dst_mac, dst_ip, **kw):
    return h.receive(vlan=300, eth_src=OUTSIDE_MAC, eth_dst=dst_mac, ipv4_src=OUTSIDE,
                     ipv4_dst=dst_ip, **kw)


def arp_for(h: Switch, ip):
    return h.walker.walk(make_packet({"in_port": 100, "vlan": 300, "eth_src": OUTSIDE_MAC,
                                      "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806,
                                      "arp_op": 1, "arp_sha": OUTSIDE_MAC, "arp_spa": OUTSIDE,
                                      "arp_tpa": ip}))


def test_flows_are_well_formed(view):
    for host in ("c1", "c2"):
        assert switch(view, host).problems() == []


def test_arp_for_the_floating_ip_is_answered_only_by_its_host(view):
    c1, c2 = switch(view, "c1"), switch(view, "c2")
    t = arp_for(c1, FIP)
    [out] = t.outputs
    assert out.port == 100 and out.vlans == [300]
    assert out.packet["arp_op"] == "2" and out.packet["arp_sha"] == EXT_MAC["c1"]
    assert out.packet["eth_src"] == EXT_MAC["c1"] and out.packet["eth_dst"] == OUTSIDE_MAC
    assert out.packet["arp_spa"] == FIP and out.packet["arp_tpa"] == OUTSIDE
    assert len(t.controller) == 1          # a copy, to learn the asker
    t2 = arp_for(c2, FIP)
    assert not t2.outputs and not t2.controller


def test_inbound_is_dnatted_in_the_router_zone_and_routed_to_the_vm(view):
    c1 = switch(view, "c1")
    vm1 = view.ports["vm1"]
    t = from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=1, nw_ttl=64)
    assert t.ports == [c1.ofport(vm1)]
    [dnat] = [c for c in t.ct if c.table == "nat_in"]
    assert dnat.zone == external_zone(ROUTER_KEY) and dnat.commit
    assert dnat.nat[0] == "dst" and dnat.nat[1] == "10.1.0.11"
    out = t.outputs[0].packet
    assert out["eth_dst"] == vm1["mac_address"] and out["eth_src"] == view.ports["r-n"]["mac_address"]
    assert out["nw_ttl"] == "63" and out["ipv4_src"] == OUTSIDE


def test_router_zones_never_meet_port_zones():
    from topology.api.kinds.ports import PORT_KEY_MAX
    assert external_zone(1) > PORT_KEY_MAX and external_zone(0xFFFFFF) <= 0xFFFF


def test_inbound_on_another_host_or_mac_is_dropped(view):
    c1, c2 = switch(view, "c1"), switch(view, "c2")
    assert from_outside(c2, EXT_MAC["c2"], FIP, ip_proto=1).dropped
    assert from_outside(c2, EXT_MAC["c1"], FIP, ip_proto=1).dropped
    assert from_outside(c1, EXT_MAC["c1"], "203.0.113.11", ip_proto=1).dropped


def test_ingress_firewall_sees_the_outside_source(view):
    sg(view, "web", "in:allow tcp 22", "out:allow any")
    vm1 = {**view.ports["vm1"], "port_security_enabled": True, "security_groups": ["web"]}
    put(view, "ports", vm1)
    c1 = switch(view, "c1")
    ok = from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=6, tcp_dst=22, ct=["new", "new"])
    assert ok.ports == [c1.ofport(vm1)]
    fw = [c for c in ok.ct if c.zone == vm1["_key"]]
    assert fw and fw[0].table == "ingress_firewall"
    denied = from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=6, tcp_dst=80, ct=["new", "new"])
    assert denied.dropped and denied.dropped_at == "ingress_rules"


def test_outbound_is_snatted_to_the_floating_ip_with_the_external_mac(view):
    c1 = switch(view, "c1")
    vm1 = view.ports["vm1"]
    t = c1.send(vm1, eth_dst=view.ports["r-n"]["mac_address"], ipv4_dst=OUTSIDE, ip_proto=1,
                nw_ttl=64)
    [out] = t.outputs
    assert out.port == 100 and out.vlans == [300]
    assert out.packet["eth_src"] == EXT_MAC["c1"] and out.packet["eth_dst"] == OUTSIDE_MAC
    assert out.packet["nw_ttl"] == "63"
    [snat] = [c for c in t.ct if c.table == "routing"]
    assert snat.zone == external_zone(ROUTER_KEY) and snat.commit
    assert snat.nat[0] == "src" and snat.nat[1] == FIP


def test_outbound_off_subnet_goes_to_the_gateway_once_learned(view):
    c1 = switch(view, "c1")
    vm1 = view.ports["vm1"]
    gw = view.ports["r-n"]["mac_address"]
    t = c1.send(vm1, eth_dst=gw, ipv4_dst="198.51.100.7", ip_proto=1)
    assert t.controller and not t.outputs          # the controller ARPs for 203.0.113.1
    put(view, BINDINGS, {"id": binding_id("ext", "203.0.113.1"), "network_id": "ext",
                         "ip_address": "203.0.113.1", "mac_address": GW_MAC})
    c1 = switch(view, "c1")
    [out] = c1.send(vm1, eth_dst=gw, ipv4_dst="198.51.100.7", ip_proto=1).outputs
    assert out.packet["eth_dst"] == GW_MAC and out.port == 100


def test_connected_subnets_are_routed_not_natted(view):
    c1 = switch(view, "c1")
    t = c1.send(view.ports["vm1"], eth_dst=view.ports["r-n"]["mac_address"], ipv4_dst="10.2.0.11",
                ip_proto=1)
    assert t.ports == [c1.ofport(view.ports["vm3"])]
    assert not [c for c in t.ct if c.nat]


def test_a_vm_without_floating_ip_goes_to_the_snat_host_untranslated(view):
    c2 = switch(view, "c2")
    t = c2.send(view.ports["vm2"], eth_dst=view.ports["r-n"]["mac_address"], ipv4_dst=OUTSIDE,
                ip_proto=1, nw_ttl=64)
    [out] = t.outputs
    assert not [c for c in t.ct if c.nat]
    assert out.port == 100 and out.vlans == [201]
    assert out.packet["eth_dst"] == GW_PORT_MAC and out.packet["eth_src"] == DVR["c2"]
    assert out.packet["nw_ttl"] == "63"


def from_c2_to_snat(h, **kw):
    return h.receive(vlan=201, eth_src=DVR["c2"], eth_dst=GW_PORT_MAC, ipv4_src="10.1.0.12",
                     ipv4_dst=OUTSIDE, ip_proto=1, nw_ttl=63, **kw)


def test_the_snat_host_translates_to_the_gateway_address(view):
    c3 = switch(view, "c3")
    assert c3.problems() == []
    t = from_c2_to_snat(c3)
    [out] = t.outputs
    assert out.port == 100 and out.vlans == [300]
    assert out.packet["eth_src"] == GW_PORT_MAC and out.packet["eth_dst"] == OUTSIDE_MAC
    [c] = [c for c in t.ct if c.nat]
    assert c.commit and c.zone == external_zone(ROUTER_KEY)
    assert c.nat[:2] == ("src", GW_IP) and c.nat[3:5] == (1024, 65535)
    assert out.packet["nw_ttl"] == "63"         # one router hop, counted on c2
    # another gateway host, not the snat host, does nothing with it
    assert from_c2_to_snat(switch(view, "c4")).dropped


def test_replies_come_back_through_conntrack_and_nothing_starts_from_outside(view):
    c3, c2 = switch(view, "c3"), switch(view, "c2")
    vm2 = view.ports["vm2"]
    reply = from_outside(c3, GW_PORT_MAC, GW_IP, ip_proto=1, ct="+trk+est")
    [c] = [c for c in reply.ct if c.table == "nat_in"]
    assert not c.commit and c.nat == ("nat",) and c.zone == external_zone(ROUTER_KEY)
    # the walker records nat without doing it: the recirculated pass, as
    # conntrack hands it back, un-SNATed to vm2
    from controller.pipeline import REG_NAT_PORT
    after = {"in_port": 100, "eth_src": OUTSIDE_MAC, "eth_dst": GW_PORT_MAC, "ipv4_src": OUTSIDE,
             "ipv4_dst": "10.1.0.12", "ip_proto": 1, "nw_ttl": 64, "metadata": 13,
             REG_NAT_PORT: 0x80000000 | ROUTER_KEY}
    reply = c3.walker.walk(make_packet({**after, "ct_state": parse_ct_state("+trk+est")}), table="nat_in")
    [out] = reply.outputs
    assert out.port == 100 and out.vlans == [201]
    assert out.packet["eth_src"] == DVR["c3"] and out.packet["eth_dst"] == vm2["mac_address"]
    # c2 takes the DVR-routed frame to the VM
    back = c2.receive(vlan=201, eth_src=DVR["c3"], eth_dst=vm2["mac_address"],
                      ipv4_src=OUTSIDE, ipv4_dst="10.1.0.12", ip_proto=1)
    assert back.ports == [c2.ofport(vm2)]
    new = c3.walker.walk(make_packet({**after, "ct_state": parse_ct_state("+trk+new")}), table="nat_in")
    assert new.dropped and not new.outputs


def test_arp_for_the_gateway_address_only_on_the_snat_host(view):
    t = arp_for(switch(view, "c3"), GW_IP)
    assert t.outputs[0].packet["arp_sha"] == GW_PORT_MAC
    for h in ("c1", "c2", "c4"):
        assert not arp_for(switch(view, h), GW_IP).outputs


def test_snat_moves_when_its_host_goes_down_and_is_reported_without_one(view):
    from apps.nat import routers_without_snat_host, snat
    assert snat(view, view.routers["r"]).host == "c3"
    put(view, "hosts", {**view.hosts["c4"], "admin_state_up": True})
    put(view, "hosts", {**view.hosts["c3"], "admin_state_up": False})
    assert snat(view, view.routers["r"]).host == "c4"
    c4 = switch(view, "c4")
    assert from_c2_to_snat(c4).ports == [100]
    assert from_c2_to_snat(switch(view, "c3")).dropped
    put(view, "hosts", {**view.hosts["c4"], "is_gateway": False})
    assert routers_without_snat_host(view) == ["r"]
    t = switch(view, "c2").send(view.ports["vm2"], eth_dst=view.ports["r-n"]["mac_address"],
                                ipv4_dst=OUTSIDE, ip_proto=1)
    assert not t.outputs


def test_snat_host_placement_is_deterministic_and_moves_only_what_it_must():
    from topology.placement import snat_host
    hosts = [{"id": f"h{i}", "is_gateway": True} for i in range(5)]
    placed = {k: snat_host({"_key": k}, hosts) for k in range(1, 200)}
    assert placed == {k: snat_host({"_key": k}, list(reversed(hosts))) for k in range(1, 200)}
    assert len(set(placed.values())) == 5
    fewer = [h for h in hosts if h["id"] != "h2"]
    for k, h in placed.items():
        if h != "h2":
            assert snat_host({"_key": k}, fewer) == h
    assert snat_host({"_key": 1}, [{"id": "x", "is_gateway": True, "admin_state_up": False}]) is None


def test_a_host_without_external_mac_has_no_floating_ip_flows(view):
    put(view, "hosts", {**view.hosts["c1"], "external_mac": None})
    c1 = switch(view, "c1")
    assert not arp_for(c1, FIP).outputs
    assert from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=1).dropped


def test_moving_the_floating_ip_moves_its_flows(view):
    put(view, "floatingips", {**view.docs["floatingips"]["f1"], "port_id": "vm2",
                              "fixed_ip_address": "10.1.0.12"})
    c1, c2 = switch(view, "c1"), switch(view, "c2")
    assert not arp_for(c1, FIP).outputs
    assert arp_for(c2, FIP).outputs[0].packet["arp_sha"] == EXT_MAC["c2"]
    assert from_outside(c2, EXT_MAC["c2"], FIP, ip_proto=1).ports == [c2.ofport(view.ports["vm2"])]


def _pf(view, key, proto, ext, internal, port="vm1", ip="10.1.0.11"):
    put(view, "floatingips", {**view.docs["floatingips"]["f1"], "port_id": None,
                              "fixed_ip_address": None})
    body = {"id": f"pf{key}", "_key": key, "floatingip_id": "f1", "protocol": proto,
            "internal_port_id": port, "internal_ip_address": ip,
            "internal_port_range": internal, "external_port_range": ext}
    if ":" not in internal or internal.split(":")[0] == internal.split(":")[1]:
        body["internal_port"] = int(internal.split(":")[0])
        body["external_port"] = int(ext.split(":")[0])
    put(view, "port_forwardings", body)


def test_port_forwarding_maps_an_external_port_to_an_internal_one(view):
    _pf(view, 1, "tcp", "2222:2222", "22:22")
    c1 = switch(view, "c1")
    assert c1.problems() == []
    t = from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=6, tcp_dst=2222)
    assert t.ports == [c1.ofport(view.ports["vm1"])]
    [dnat] = [c for c in t.ct if c.table == "nat_in"]
    assert dnat.nat[:2] == ("dst", "10.1.0.11") and dnat.nat[3:5] == (22, 22)
    assert from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=6, tcp_dst=22).dropped
    assert from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=17, udp_dst=2222).dropped
    back = c1.send(view.ports["vm1"], eth_dst=view.ports["r-n"]["mac_address"], ipv4_dst=OUTSIDE,
                   ip_proto=6, tcp_src=22, tcp_dst=40000)
    assert back.ports == [100] and back.outputs[0].packet["eth_src"] == EXT_MAC["c1"]
    other = c1.send(view.ports["vm1"], eth_dst=view.ports["r-n"]["mac_address"], ipv4_dst=OUTSIDE,
                    ip_proto=6, tcp_src=5555, tcp_dst=80)
    [out] = other.outputs                        # not a forwarding's reply: SNAT, via c3
    assert out.packet["eth_dst"] == GW_PORT_MAC and out.vlans == [201]


def test_port_forwarding_udp_ranges(view):
    _pf(view, 2, "udp", "5000:5003", "6000:6003")
    c1 = switch(view, "c1")
    assert c1.problems() == []
    for i in range(4):
        t = from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=17, udp_dst=5000 + i)
        [dnat] = [c for c in t.ct if c.table == "nat_in"]
        assert dnat.nat[3:5] == (6000 + i, 6000 + i)
    assert from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=17, udp_dst=5004).dropped
    _pf(view, 3, "tcp", "8000:8015", "8000:8015")
    c1 = switch(view, "c1")
    assert from_outside(c1, EXT_MAC["c1"], FIP, ip_proto=6, tcp_dst=8009).ports


def test_masked_ranges_cover_exactly():
    for lo, hi in ((1, 1), (22, 22), (5000, 5003), (1000, 2000), (1, 65535)):
        covered = set()
        for m in _masked_ranges(lo, hi):
            v, mask = (m, 0xFFFF) if isinstance(m, int) else m
            covered |= {p for p in range(lo - 64 if lo > 64 else 0, min(hi + 64, 65535) + 1)
                        if p & mask == v}
        assert covered == set(range(lo, hi + 1)) | (covered - set(range(lo, hi + 1))) \
            and not covered - set(range(lo, hi + 1))


# -- the controller side: learning, asking, status, announcing -------------------
class _Sw:
    def __init__(self, swview, seen):
        self.view, self.busy = swview, False
        self.reconciler = type("R", (), {"in_sync": True})()
        self.memo = type("M", (), {"by_scope": seen})()


def _arp_frame(op, sha, spa, tpa, vlan=300):
    import struct
    eth = bytes.fromhex("ffffffffffff") + bytes.fromhex(sha.replace(":", ""))
    eth += struct.pack("!HH", 0x8100, vlan) + struct.pack("!H", 0x0806)
    return eth + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + bytes.fromhex(sha.replace(":", "")) \
        + bytes(int(x) for x in spa.split(".")) + b"\0" * 6 + bytes(int(x) for x in tpa.split("."))


def test_controller_learns_the_asker_and_asks_for_unknown_neighbours(view):
    app = NatApp()
    sw = plugged_switch(view, 0xC1)
    pkt = PacketIn(0xC1, 100, _arp_frame(1, GW_MAC, "203.0.113.1", FIP), None, sw, view)
    assert list(app.packet_in(pkt)) == []
    assert app.take_learned() == {("ext", "203.0.113.1"): GW_MAC}
    import struct
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20, 0, 0, 64, 1, 0, bytes([203, 0, 113, 10]),
                     bytes([198, 51, 100, 7]))
    frame = bytes.fromhex("fa163e000001" + "fa163f0000c1") + b"\x08\x00" + ip
    [out] = app.packet_in(PacketIn(0xC1, 1, frame, None, sw, view))
    assert out.port == 100
    assert out.data[12:16] == bytes.fromhex("8100012c")          # vlan 300
    arp = out.data[18:46]
    assert arp[8:14] == bytes.fromhex(EXT_MAC["c1"].replace(":", ""))
    assert arp[24:28] == bytes([203, 0, 113, 1])                  # the gateway_ip
    assert list(app.packet_in(PacketIn(0xC1, 1, frame, None, sw, view))) == []   # not twice at once


def test_status_active_only_where_installed_and_one_garp_per_move(view):
    c1 = _Sw(plugged_switch(view, 0xC1), {("floatingip", "f1"): ("flow",)})
    c2 = _Sw(plugged_switch(view, 0xC2), {})
    w = ExternalWriter(store=None)
    updates, garps = w.due(view, [c1, c2])
    assert updates == {"f1": "ACTIVE"}
    [(dpid, port, frame)] = garps
    assert dpid == 0xC1 and port == 100
    assert frame[32:36] == frame[42:46] == bytes([203, 0, 113, 10])  # spa == tpa: gratuitous
    put(view, "floatingips", {**view.docs["floatingips"]["f1"], "status": "ACTIVE"})
    assert w.due(view, [c1, c2]) == ({}, [])
    put(view, "floatingips", {**view.docs["floatingips"]["f1"], "port_id": "vm2",
                              "fixed_ip_address": "10.1.0.12"})
    assert w.due(view, [c1, c2]) == ({"f1": "DOWN"}, [])       # c2 not installed yet
    c2.memo.by_scope[("floatingip", "f1")] = ("flow",)
    updates, [(dpid, _, _)] = w.due(view, [c1, c2])
    assert updates == {} and dpid == 0xC2      # the store still says ACTIVE; c2 announces
    put(view, "floatingips", {**view.docs["floatingips"]["f1"], "port_id": None})
    assert w.due(view, [c1, c2])[0] == {"f1": "DOWN"}


# -- MTU: too big from outside gets ICMP fragmentation needed ----------------------
def test_too_big_from_outside_goes_to_the_controller(view):
    put(view, "networks", {**view.networks["n"], "mtu": 1400})
    c1 = switch(view, "c1")
    assert c1.problems() == []
    pkt = {"in_port": 100, "vlan": 300, "eth_src": OUTSIDE_MAC, "eth_dst": EXT_MAC["c1"],
           "ipv4_src": OUTSIDE, "ipv4_dst": FIP, "ip_proto": 1}
    big = c1.walker.walk(make_packet(pkt), frame_len=1514)
    assert big.controller and not big.outputs
    assert big.controller[0].meter == view.ports["vm1"]["_key"]
    fits = c1.walker.walk(make_packet(pkt), frame_len=1414)
    assert fits.ports == [c1.ofport(view.ports["vm1"])]
    # on the snat host, for replies to the gateway address, too
    c3 = switch(view, "c3")
    pkt = {**pkt, "eth_dst": GW_PORT_MAC, "ipv4_dst": GW_IP}
    assert c3.walker.walk(make_packet(pkt), frame_len=1415).controller


def test_the_controller_answers_fragmentation_needed(view):
    import struct
    put(view, "networks", {**view.networks["n"], "mtu": 1400})
    app = NatApp()
    sw = plugged_switch(view, 0xC1)
    payload = b"x" * 1480
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, 0x4000, 64, 17, 0,
                     bytes([203, 0, 113, 100]), bytes([203, 0, 113, 10])) + payload
    frame = bytes.fromhex(EXT_MAC["c1"].replace(":", "") + OUTSIDE_MAC.replace(":", "")) \
        + b"\x08\x00" + ip
    [out] = app.packet_in(PacketIn(0xC1, 100, frame, None, sw, view))
    assert out.port == 100
    data = out.data
    assert data[:6] == bytes.fromhex(OUTSIDE_MAC.replace(":", ""))
    assert data[12:16] == bytes.fromhex("8100012c")
    ip_out = data[18:]
    assert ip_out[12:16] == bytes([203, 0, 113, 10]) and ip_out[16:20] == bytes([203, 0, 113, 100])
    icmp = ip_out[20:]
    assert icmp[0] == 3 and icmp[1] == 4 and struct.unpack("!H", icmp[6:8])[0] == 1400
    assert icmp[8:8 + 28] == ip[:28]                      # the original header + 8 bytes
    from apps.nat import _checksum
    assert _checksum(ip_out[:20]) == 0 and _checksum(icmp[:8 + 28]) == 0


def test_check_pkt_larger_round_trips_the_codec():
    from os_ken.ofproto import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
    from controller import actions, nxext
    a = nxext.check_pkt_larger(1414, "reg3", 0)
    buf = bytearray()
    actions.encode_action(parser, ofp, a).serialize(buf, 0)
    assert len(buf) == 24
    assert actions.decode_action(ofp, parser.OFPAction.parser(bytes(buf), 0)) == a


def test_the_snat_host_asks_for_neighbours_from_the_gateway_port(view):
    import struct
    view.docs[BINDINGS].clear()
    app = NatApp()
    sw = plugged_switch(view, 0xC3)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20, 0, 0, 64, 1, 0, bytes([203, 0, 113, 2]),
                     bytes([203, 0, 113, 100]))
    frame = bytes.fromhex("fa163e000001" + GW_PORT_MAC.replace(":", "")) + b"\x08\x00" + ip
    [out] = app.packet_in(PacketIn(0xC3, 100, frame, None, sw, view))
    arp = out.data[18:46]
    assert out.data[6:12] == arp[8:14] == bytes.fromhex(GW_PORT_MAC.replace(":", ""))
    assert arp[14:18] == bytes([203, 0, 113, 2]) and arp[24:28] == bytes([203, 0, 113, 100])


def test_deleting_the_snat_host_moves_snat(view):
    from apps.nat import snat
    from topology.store.base import Change
    put(view, "hosts", {**view.hosts["c4"], "admin_state_up": True})
    assert snat(view, view.routers["r"]).host == "c3"
    view.apply(Change(view.revision + 1, "hosts", "c3", "delete", None))
    assert snat(view, view.routers["r"]).host == "c4"
    assert from_c2_to_snat(switch(view, "c4")).ports == [100]
