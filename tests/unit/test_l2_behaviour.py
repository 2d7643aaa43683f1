"""What the apps' flows do to packets, through the walker: where a packet
ends up, never which instructions got it there (tests/unit/behaviour.py).

The cloud of tests/unit/l2_fixtures.py:
    h1 (0xA1): p1, p2 in n1 (vlan 101), p4 in n2 (flat); uplink up1 (ofport 100)
    h2 (0xA2): p3 in n1; uplink up2 (ofport 100)
"""
from __future__ import annotations

import pytest

import dhcp_arp_fixtures as da
from behaviour import Switch, arp_answered, owner_app
from l2_fixtures import cloud_docs, make_view, pid, plugged_switch, port, put

BROADCAST = "ff:ff:ff:ff:ff:ff"


@pytest.fixture
def view():
    return make_view()


def sw(view, dpid) -> Switch:
    return Switch(view, plugged_switch(view, dpid))


def P(view, n):
    return view.ports[pid(n)]


def ipv4_to(dst_port, **extra):
    fields = {"eth_dst": dst_port["mac_address"],
              "ipv4_dst": dst_port["fixed_ips"][0]["ip_address"], "tcp_dst": 22}
    fields.update(extra)
    return fields


def test_ovs_would_accept_every_flow(view):
    for dpid in (0xA1, 0xA2):
        assert sw(view, dpid).problems() == []


# -- unicast -----------------------------------------------------------------------

def test_ipv4_to_a_vm_on_the_same_host_reaches_only_its_port(view):
    h1 = sw(view, 0xA1)
    p1, p2 = P(view, 1), P(view, 2)
    t = h1.send(p1, **ipv4_to(p2))
    assert t.ports == [h1.ofport(p2)], t.verdict
    assert t.outputs[0].vlans == []


def test_ipv4_to_a_vm_on_another_host_leaves_by_the_uplink_tagged(view):
    h1, h2 = sw(view, 0xA1), sw(view, 0xA2)
    p1, p3 = P(view, 1), P(view, 3)
    t = h1.send(p1, **ipv4_to(p3))
    assert t.ports == [h1.uplink()], t.verdict
    assert t.outputs[0].vlans == [101]
    # ... and on h2, that frame, still tagged, reaches p3 untagged.
    leaving = t.outputs[0].packet
    t2 = h2.receive(vlan=101, eth_src=leaving["eth_src"], eth_dst=leaving["eth_dst"],
                    ipv4_src=leaving["ipv4_src"], ipv4_dst=leaving["ipv4_dst"], tcp_dst=22)
    assert t2.ports == [h2.ofport(p3)], t2.verdict
    assert t2.outputs[0].vlans == []


def test_a_flat_network_leaves_untagged(view):
    docs = cloud_docs()
    extra = port(5, "n2", "h2")
    docs["ports"][extra["id"]] = extra
    v = make_view(docs)
    h1 = sw(v, 0xA1)
    t = h1.send(v.ports[pid(4)], **ipv4_to(extra))
    assert t.ports == [h1.uplink()] and t.outputs[0].vlans == [], t.verdict


def test_no_way_into_another_network(view):
    h1 = sw(view, 0xA1)
    # p4 is on n2: p1 (n1) addressing p4's MAC gets nowhere.
    t = h1.send(P(view, 1), **ipv4_to(P(view, 4)))
    assert t.dropped and t.dropped_at == "l2_lookup", t.verdict


def test_an_unknown_destination_mac_is_dropped_in_l2_lookup(view):
    h1 = sw(view, 0xA1)
    t = h1.send(P(view, 1), eth_dst="fa:16:3e:99:99:99", ipv4_dst="10.0.0.99", tcp_dst=22)
    assert t.dropped and t.dropped_at == "l2_lookup", t.verdict


def test_a_frame_from_the_uplink_with_an_unknown_vlan_is_dropped_at_classify(view):
    h1 = sw(view, 0xA1)
    p1 = P(view, 1)
    t = h1.receive(vlan=999, eth_src="fa:16:3e:00:00:03", eth_dst=p1["mac_address"],
                   ipv4_src="10.0.0.3", ipv4_dst="10.0.0.1")
    assert t.dropped and t.dropped_at == "classify", t.verdict
    t = h1.receive(vlan=101, eth_src="fa:16:3e:00:00:03", eth_dst=p1["mac_address"],
                   ipv4_src="10.0.0.3", ipv4_dst="10.0.0.1")
    assert t.ports == [h1.ofport(p1)], t.verdict


def test_an_unplugged_or_disabled_port_sends_nothing(view):
    p1 = P(view, 1)
    put(view, "ports", dict(p1, admin_state_up=False))
    h1 = Switch(view, plugged_switch(make_view(), 0xA1))   # still plugged at ofport 1
    t = h1.send(view.ports[pid(1)], **ipv4_to(P(view, 2)))
    assert t.dropped and t.dropped_at == "classify", t.verdict


# -- port security -------------------------------------------------------------------

def test_a_spoofed_source_ip_is_dropped_at_port_security(view):
    h1 = sw(view, 0xA1)
    t = h1.send(P(view, 1), **ipv4_to(P(view, 2), ipv4_src="10.0.0.2"))
    assert t.dropped and t.dropped_at == "port_security", t.verdict


def test_a_spoofed_source_mac_is_dropped_at_port_security(view):
    h1 = sw(view, 0xA1)
    t = h1.send(P(view, 1), **ipv4_to(P(view, 2), eth_src="fa:16:3e:00:00:77"))
    assert t.dropped and t.dropped_at == "port_security", t.verdict


def test_an_allowed_address_pair_may_send(view):
    p1 = P(view, 1)
    put(view, "ports", dict(p1, allowed_address_pairs=[
        {"ip_address": "10.0.0.100"}, {"ip_address": "10.1.0.0/16", "mac_address": "fa:16:3e:aa:aa:aa"}]))
    h1 = sw(view, 0xA1)
    p1, p2 = P(view, 1), P(view, 2)
    assert h1.send(p1, **ipv4_to(p2, ipv4_src="10.0.0.100")).ports == [h1.ofport(p2)]
    t = h1.send(p1, **ipv4_to(p2, ipv4_src="10.1.2.3", eth_src="fa:16:3e:aa:aa:aa"))
    assert t.ports == [h1.ofport(p2)], t.verdict
    # The pair's address with the port's own MAC is not the pair.
    t = h1.send(p1, **ipv4_to(p2, ipv4_src="10.1.2.3"))
    assert t.dropped and t.dropped_at == "port_security"


def test_port_security_off_lets_any_source_through(view):
    put(view, "ports", dict(P(view, 1), port_security_enabled=False))
    h1 = sw(view, 0xA1)
    p2 = P(view, 2)
    t = h1.send(P(view, 1), **ipv4_to(p2, ipv4_src="10.9.9.9", eth_src="fa:16:3e:77:77:77"))
    assert t.ports == [h1.ofport(p2)], t.verdict


# -- broadcast ---------------------------------------------------------------------

def test_a_broadcast_reaches_every_local_port_of_its_network_and_the_uplink(view):
    h1 = sw(view, 0xA1)
    p1, p2, p4 = P(view, 1), P(view, 2), P(view, 4)
    t = h1.send(p1, eth_dst=BROADCAST, ipv4_dst="10.0.0.255", udp_dst=9999)
    ports = sorted(t.ports)
    assert ports == sorted([h1.ofport(p2), h1.uplink()]), t.verdict
    assert h1.ofport(p1) not in ports and h1.ofport(p4) not in ports
    assert t.output_to(h1.uplink()).vlans == [101]
    assert t.output_to(h1.ofport(p2)).vlans == []
    # Every copy is the frame as sent.
    assert all(o.packet["eth_dst"] == BROADCAST and o.packet["ipv4_src"] == "10.0.0.1"
               for o in t.outputs)
    # The copy for p2 passed p2's ingress_firewall, as a unicast to p2 does.
    assert "ingress_firewall" in t.output_to(h1.ofport(p2)).path
    assert "ingress_firewall" in h1.send(p1, **ipv4_to(p2)).outputs[0].path


def test_a_broadcast_from_the_uplink_reaches_the_local_ports_only(view):
    h1 = sw(view, 0xA1)
    p1, p2 = P(view, 1), P(view, 2)
    t = h1.receive(vlan=101, eth_src="fa:16:3e:00:00:03", eth_dst=BROADCAST,
                   ipv4_src="10.0.0.3", ipv4_dst="10.0.0.255", udp_dst=9999)
    assert sorted(t.ports) == sorted([h1.ofport(p1), h1.ofport(p2)]), t.verdict
    assert all(o.vlans == [] and "ingress_firewall" in o.path for o in t.outputs)


def test_a_multicast_is_flooded_like_a_broadcast(view):
    h1 = sw(view, 0xA1)
    t = h1.send(P(view, 1), eth_dst="01:00:5e:00:00:fb", ipv4_dst="224.0.0.251", udp_dst=5353)
    assert sorted(t.ports) == sorted([h1.ofport(P(view, 2)), h1.uplink()]), t.verdict


# -- ARP -----------------------------------------------------------------------------

def arp(sender, target_ip, op=1, **extra):
    fields = {"eth_dst": BROADCAST, "arp_op": op, "arp_sha": sender["mac_address"],
              "arp_spa": sender["fixed_ips"][0]["ip_address"], "arp_tha": "00:00:00:00:00:00",
              "arp_tpa": target_ip}
    fields.update(extra)
    return fields


def test_an_arp_request_is_answered_and_reaches_no_vm(view):
    h1 = sw(view, 0xA1)
    p1, p2 = P(view, 1), P(view, 2)
    t = h1.send(p1, **arp(p1, "10.0.0.2"))
    assert arp_answered(t, p1, h1.ofport(p1), p2["mac_address"]), t.verdict
    # Whatever goes to the controller is rate-limited per port.
    assert all(o.meter is not None for o in t.controller)


def test_an_arp_request_with_a_spoofed_sender_is_dropped_at_port_security(view):
    h1 = sw(view, 0xA1)
    t = h1.send(P(view, 1), **arp(P(view, 1), "10.0.0.2", arp_spa="10.0.0.2"))
    assert t.dropped and t.dropped_at == "port_security", t.verdict


def test_a_gratuitous_arp_for_an_own_address_is_flooded(view):
    h1 = sw(view, 0xA1)
    t = h1.send(P(view, 1), **arp(P(view, 1), "10.0.0.1"))
    assert sorted(t.ports) == sorted([h1.ofport(P(view, 2)), h1.uplink()]), t.verdict
    assert not t.controller


def test_an_arp_reply_reaches_the_asker(view):
    h1 = sw(view, 0xA1)
    p1, p2 = P(view, 1), P(view, 2)
    t = h1.send(p1, **arp(p1, "10.0.0.2", op=2, eth_dst=p2["mac_address"],
                          arp_tha=p2["mac_address"]))
    assert t.ports == [h1.ofport(p2)], t.verdict


def test_an_arp_request_from_a_real_frame(view):
    v = da.make_view()
    s = Switch(v, da.switch(v, 1))
    vm1 = v.ports["port-vm1-aaaaaaaa"]
    t = s.send_frame(s.ofport(vm1), da.arp_request())
    assert arp_answered(t, vm1, s.ofport(vm1), da.VM2_MAC), t.verdict
    # ARP for the metadata address is the metadata app's.
    t = s.send_frame(s.ofport(vm1), da.arp_request(target_ip="169.254.169.254"))
    assert [owner_app(o) for o in t.controller] == ["metadata"], t.verdict


# -- DHCP and metadata ---------------------------------------------------------------------

def test_a_dhcp_discover_goes_to_the_controller():
    v = da.make_view()
    s = Switch(v, da.switch(v, 1))
    vm1 = v.ports["port-vm1-aaaaaaaa"]
    t = s.send_frame(s.ofport(vm1), da.dhcp_client(1))
    assert not t.outputs and [owner_app(o) for o in t.controller] == ["dhcp"], t.verdict


def test_a_dhcp_discover_from_a_spoofed_mac_is_dropped():
    v = da.make_view()
    s = Switch(v, da.switch(v, 1))
    vm1 = v.ports["port-vm1-aaaaaaaa"]
    t = s.send_frame(s.ofport(vm1), da.dhcp_client(1, chaddr="fa:16:3e:00:00:77"))
    assert t.dropped and t.dropped_at == "port_security", t.verdict


def test_a_dhcp_server_packet_from_a_vm_is_dropped():
    v = da.make_view()
    s = Switch(v, da.switch(v, 1))
    vm1 = v.ports["port-vm1-aaaaaaaa"]
    frame = da.dhcp_client(2, src_ip=da.VM_IP, sport=67, dport=68)
    t = s.send_frame(s.ofport(vm1), frame)
    assert t.dropped and t.dropped_at == "services", t.verdict


def test_metadata_tcp_goes_to_the_controller(view):
    h1 = sw(view, 0xA1)
    t = h1.send(P(view, 1), eth_dst="fa:16:3e:00:00:fe", ipv4_dst="169.254.169.254", tcp_dst=80)
    assert not t.outputs and [owner_app(o) for o in t.controller] == ["metadata"], t.verdict
    # Another port of 169.254.169.254 is not the metadata service.
    t = h1.send(P(view, 1), eth_dst="fa:16:3e:00:00:fe", ipv4_dst="169.254.169.254", tcp_dst=81)
    assert t.dropped and not t.controller, t.verdict


# -- the trace records who did what ------------------------------------------------------

def test_every_step_names_its_stage_and_owner(view):
    h1 = sw(view, 0xA1)
    t = h1.send(P(view, 1), **ipv4_to(P(view, 2)))
    tables = [s.table for s in t.steps]
    assert tables[0] == "classify" and "port_security" in tables
    for s in t.steps:
        assert s.flow is not None and s.doc
        assert s.owner is not None      # a vmflow cookie: app, resource kind, key
