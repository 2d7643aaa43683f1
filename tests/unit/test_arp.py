"""ARP proxy: the pure responder, the address table, the flows and the app."""
from __future__ import annotations

import dpkt

from apps.arp import ArpApp, address_table, arp_reply
from controller.app import APP_IDS
from controller.flow import app_cookie
from dhcp_arp_fixtures import (DHCP_IP, DHCP_MAC, PAIR_MAC, VM2_IP, VM2_MAC, VM_IP, VM_MAC,
                               Counter, arp_request, ip, mac, make_view, packet_in, port_doc,
                               switch)


def not_responders(flows) -> list:
    return [f for f in flows if f.priority != 102]


def responders(view, sw) -> list:
    """Every responder on a switch: the network's (pairs) and each port's (fixed IPs)."""
    app = ArpApp()
    out = list(app.network_flows(view, sw, view.networks["net-1"]))
    for port in view.ports_by_network["net-1"].values():
        out += app.port_flows(view, sw, port)
    return [f for f in out if f.priority == 102]


def test_address_table_knows_fixed_ips_pairs_and_dhcp_port():
    table = address_table(make_view(), "net-1")
    assert table[ip(VM_IP)] == mac(VM_MAC)
    assert table[ip(VM2_IP)] == mac(VM2_MAC)
    assert table[ip(DHCP_IP)] == mac(DHCP_MAC)
    assert table[ip("10.0.0.100")] == mac(PAIR_MAC)         # pair with its own MAC
    assert table[ip("10.0.0.101")] == mac(VM_MAC)           # /32 pair, port's MAC
    assert ip("10.0.1.0") not in table                      # a /24 pair is a range
    assert ip("169.254.169.254") not in table               # the metadata app's
    assert address_table(make_view(), "other-net") == {}


def test_fixed_ip_wins_over_someone_elses_pair():
    extra = port_doc("port-vm3-dddddddd", 7, "fa:16:3e:00:00:07", "10.0.0.7",
                     pairs=[{"ip_address": VM2_IP}])
    table = address_table(make_view(extra_ports=[extra]), "net-1")
    assert table[ip(VM2_IP)] == mac(VM2_MAC)


def test_reply_to_request_for_a_neighbour():
    reply, outcome = arp_reply(arp_request(target_ip=VM2_IP), address_table(make_view(), "net-1"))
    assert outcome == "replied"
    eth = dpkt.ethernet.Ethernet(reply)
    assert eth.dst == mac(VM_MAC) and eth.src == mac(VM2_MAC) and eth.type == 0x0806
    a = eth.data
    assert a.op == 2
    assert (a.sha, a.spa, a.tha, a.tpa) == (mac(VM2_MAC), ip(VM2_IP), mac(VM_MAC), ip(VM_IP))


def test_unknown_target_own_address_gratuitous_and_replies_get_no_answer():
    table = address_table(make_view(), "net-1")
    assert arp_reply(arp_request(target_ip="10.0.0.77"), table) == (None, "unknown_target")
    # DAD probe for its own address (sender 0.0.0.0) must not see a conflict
    assert arp_reply(arp_request(sender_ip="0.0.0.0", target_ip=VM_IP), table,
                     mac(VM_MAC)) == (None, "own_address")
    assert arp_reply(arp_request(target_ip=VM_IP), table) == (None, "gratuitous")
    assert arp_reply(arp_request(op=2), table) == (None, "not_request")


def test_malformed_frames():
    table = address_table(make_view(), "net-1")
    good = arp_request()
    assert arp_reply(b"", table) == (None, "malformed")
    assert arp_reply(good[:30], table) == (None, "malformed")
    ipv4 = good[:12] + b"\x08\x00" + good[14:]
    assert arp_reply(ipv4, table) == (None, "malformed")
    bad_hln = bytearray(good)
    bad_hln[14 + 4] = 8
    assert arp_reply(bytes(bad_hln), table) == (None, "malformed")


def test_port_flows_only_for_local_vm_ports():
    view = make_view()
    app = ArpApp()
    sw1 = switch(view, 1)
    flows = [f for f in app.port_flows(view, sw1, view.ports["port-vm1-aaaaaaaa"])
             if f.priority == 100]
    assert len(flows) == 1
    f = flows[0]
    assert f.table == "services" and f.cookie == app_cookie(APP_IDS["arp"], "ports", 5)
    assert dict(f.match) == {"reg6": 5, "eth_type": 0x0806, "arp_op": 1}
    assert f.instructions == (("apply", ("controller", 5)),)
    assert not_responders(app.port_flows(view, sw1, view.ports["port-vm2-bbbbbbbb"])) == []  # on h2
    assert not_responders(app.port_flows(view, sw1, view.ports["port-dhcp-cccccc"])) == []   # not plugged
    assert {dict(f.match)["reg6"] for f in not_responders(
        app.port_flows(view, switch(view, 2), view.ports["port-vm2-bbbbbbbb"]))} == {6}
    unplugged = switch(view, 1)
    unplugged.ports_by_name.clear()
    assert not_responders(app.port_flows(view, unplugged, view.ports["port-vm1-aaaaaaaa"])) == []


def test_app_answers_through_packet_out_and_counts():
    view = make_view()
    app = ArpApp()
    rt = Counter()
    app.bind(rt)
    outs = list(app.packet_in(packet_in(view, arp_request(target_ip=DHCP_IP), in_port=9)))
    assert len(outs) == 1 and outs[0].port == 9
    assert dpkt.ethernet.Ethernet(outs[0].data).data.sha == mac(DHCP_MAC)
    assert list(app.packet_in(packet_in(view, arp_request(target_ip="10.0.0.200")))) == []
    assert list(app.packet_in(packet_in(view, arp_request(), port_id=None))) == []
    assert list(app.packet_in(packet_in(view, b"\x00" * 5))) == []
    assert rt.counts == {"replied": 1, "unknown_target": 1, "unknown_port": 1,
                         "malformed": 1}


def test_app_sees_store_changes():
    from topology.store.base import Change
    view = make_view()
    app = ArpApp()
    app.bind(Counter())
    assert list(app.packet_in(packet_in(view, arp_request(target_ip="10.0.0.9")))) == []
    new = port_doc("port-vm9-eeeeeeee", 9, "fa:16:3e:00:00:09", "10.0.0.9")
    view.apply(Change(2, "ports", new["id"], "put", new))
    outs = list(app.packet_in(packet_in(view, arp_request(target_ip="10.0.0.9"))))
    assert dpkt.ethernet.Ethernet(outs[0].data).data.sha == mac("fa:16:3e:00:00:09")


def test_gratuitous_requests_for_own_addresses_go_on_into_the_network():
    """One flow per own address (fixed IP, single-address pairs; a /24 pair
    is a range, not an address), above the to-controller flow."""
    view = make_view()
    flows = list(ArpApp().port_flows(view, switch(view, 1), view.ports["port-vm1-aaaaaaaa"]))
    announce = sorted((f for f in flows if f.priority == 105), key=lambda f: dict(f.match)["arp_spa"])
    assert [dict(f.match) for f in announce] == [
        {"reg6": 5, "eth_type": 0x0806, "arp_op": 1, "arp_spa": a, "arp_tpa": a}
        for a in ("10.0.0.100", "10.0.0.101", VM_IP)]
    assert all(f.table == "services" and f.priority > 100 for f in announce)
    assert all(f.instructions == (("goto", "egress_firewall"),) for f in announce)
    # The metadata app's ARP flow (110) only matches 169.254.169.254: no overlap.
    assert all(dict(f.match)["arp_tpa"] != "169.254.169.254" for f in announce)


def test_a_network_port_plugged_here_gets_flows_like_a_vm():
    """The single "is this port local" rule (controller/locality.is_local):
    device_owner does not matter once a port is plugged into this switch,
    except for the ports nothing plugs: a distributed router's interface is
    answered by every host's routing flows (apps/dvr.py), never as a VM; its
    address is answered like any port's."""
    gateway = port_doc("port-rtr-dddddddd", 8, "fa:16:3e:00:00:08", "10.0.0.1",
                       owner="network:router_gateway", device="r1")
    view = make_view(extra_ports=[gateway])
    flows = not_responders(ArpApp().port_flows(view, switch(view, 1),
                                               view.ports["port-rtr-dddddddd"]))
    # to the controller, and for its own address: asked (104), announced (105)
    assert {dict(f.match)["reg6"] for f in flows} == {8} and len(flows) == 3
    dvr = port_doc("port-rtr-dddddddd", 8, "fa:16:3e:00:00:08", "10.0.0.1",
                   owner="network:router_interface_distributed", device="r1")
    view = make_view(extra_ports=[dvr])
    assert not_responders(ArpApp().port_flows(view, switch(view, 1),
                                              view.ports["port-rtr-dddddddd"])) == []


def test_shared_address_conversions_are_strict():
    """apps/addresses.py: one copy of the conversions l2, arp, dhcp and
    metadata use; junk is absent (None / ValueError), never guessed."""
    import pytest

    from apps.addresses import ipv4, ipv4_cidr, mac_bytes, own_ipv4s, single_ipv4
    assert mac_bytes("FA-16-3E-00-00-05") == mac(VM_MAC)
    for bad in ("fa:16:3e:00:00", "fa:16:3e:00:00:05:06", "zz:16:3e:00:00:05", ""):
        with pytest.raises(ValueError):
            mac_bytes(bad)
    assert ipv4("10.0.0.5") == "10.0.0.5"
    assert [ipv4(t) for t in ("10.1", "10.0.0.05", "fe80::1", "10.0.0.0/24", None)] == [None] * 5
    assert ipv4_cidr("10.0.1.7/24") == "10.0.1.0/24" and ipv4_cidr("10.0.0.9/32") == "10.0.0.9"
    assert [ipv4_cidr(t) for t in ("10.0.0.1/33", "fe80::/64", "10.0.0.1/x")] == [None] * 3
    assert single_ipv4("10.0.0.9/32") == "10.0.0.9" and single_ipv4("10.0.1.0/24") is None
    p = make_view().ports["port-vm1-aaaaaaaa"]
    assert own_ipv4s(p) == [VM_IP, "10.0.0.100", "10.0.0.101"]


# -- in-switch responders ------------------------------------------------------

def _run_actions(frame: bytes, actions: tuple, in_port: int) -> tuple[bytes, object]:
    """Apply a responder's actions to a frame as OVS would: (frame, output port)."""
    eth = dpkt.ethernet.Ethernet(frame)
    a = eth.data
    fields = {"eth_src": eth.src, "eth_dst": eth.dst, "arp_op": a.op, "arp_sha": a.sha,
              "arp_spa": a.spa, "arp_tha": a.tha, "arp_tpa": a.tpa}
    out = None
    for act in actions:
        if act[0] == "move":
            _, src, src_ofs, dst, dst_ofs, n_bits = act
            assert src_ofs == dst_ofs == 0 and n_bits == 8 * len(fields[src])
            fields[dst] = fields[src]
        elif act[0] == "set_field":
            value = act[2]
            if act[1] in ("eth_src", "arp_sha"):
                value = mac(value)
            elif act[1] == "arp_spa":
                value = ip(value)
            fields[act[1]] = value
        elif act == ("output", "in_port"):
            out = in_port
        else:
            raise AssertionError(f"unexpected action {act}")
    reply = dpkt.arp.ARP(hrd=a.hrd, pro=a.pro, hln=6, pln=4, op=fields["arp_op"],
                         sha=fields["arp_sha"], spa=fields["arp_spa"],
                         tha=fields["arp_tha"], tpa=fields["arp_tpa"])
    return bytes(dpkt.ethernet.Ethernet(dst=fields["eth_dst"], src=fields["eth_src"],
                                        type=eth.type, data=reply)), out


def test_one_responder_per_known_address_of_the_network():
    """Fixed IPs in their port's scope (local, remote and the DHCP port's
    alike), pair addresses in the network's; one per address in all."""
    view = make_view()
    flows = responders(view, switch(view, 1))
    table = address_table(view, "net-1")
    assert len(flows) == len(table) == 5
    assert {ip(dict(f.match)["arp_tpa"]) for f in flows} == set(table)
    for f in flows:
        match = dict(f.match)
        assert f.table == "services"
        assert set(match) == {"metadata", "eth_type", "arp_op", "arp_tpa"}
        assert match["metadata"] == 1 and match["arp_op"] == 1
    by_ip = {dict(f.match)["arp_tpa"]: f.cookie for f in flows}
    assert by_ip[VM2_IP] == app_cookie(APP_IDS["arp"], "ports", 6)          # remote port
    assert by_ip[DHCP_IP] == app_cookie(APP_IDS["arp"], "ports", 2)         # never plugged
    assert by_ip["10.0.0.100"] == app_cookie(APP_IDS["arp"], "networks", 1)  # a pair
    # Between the to-controller flow (100) and a port's own-address flow (104).
    own = [f for f in ArpApp().port_flows(view, switch(view, 1), view.ports["port-vm1-aaaaaaaa"])
           if f.priority == 104]
    assert sorted(dict(f.match)["arp_tpa"] for f in own) == ["10.0.0.100", "10.0.0.101", VM_IP]
    assert all(f.instructions == (("apply", ("controller", 5)),) for f in own)


def test_a_pair_address_that_is_someone_s_fixed_ip_is_answered_once():
    extra = port_doc("port-vm3-dddddddd", 7, "fa:16:3e:00:00:07", "10.0.0.7",
                     pairs=[{"ip_address": VM2_IP}])
    view = make_view(extra_ports=[extra])
    flows = [f for f in responders(view, switch(view, 1)) if dict(f.match)["arp_tpa"] == VM2_IP]
    assert len(flows) == 1 and ("set_field", "eth_src", VM2_MAC) in flows[0].instructions[0]


def test_the_switch_answers_as_the_proxy_does():
    """The responder's actions, applied to a request, give byte for byte the
    reply the packet-in proxy sends, for every address (fixed IPs, pairs
    with and without their own MAC, the DHCP port) and for a DAD probe."""
    view = make_view()
    table = address_table(view, "net-1")
    flows = {dict(f.match)["arp_tpa"]: f for f in responders(view, switch(view, 2))}
    for target in ("10.0.0.100", "10.0.0.101", DHCP_IP, VM_IP):
        for sender_ip in (VM2_IP, "0.0.0.0"):
            request = arp_request(sender_mac=VM2_MAC, sender_ip=sender_ip, target_ip=target)
            (instruction,) = flows[target].instructions
            frame, port = _run_actions(request, instruction[1:], in_port=11)
            want, outcome = arp_reply(request, table, mac(VM2_MAC))
            assert outcome == "replied" and port == 11
            assert frame == want, (target, sender_ip)


def test_no_responders_on_an_unclaimed_switch_or_a_disabled_network():
    from controller.app import SwitchView
    view = make_view()
    assert responders(view, SwitchView(dpid=9, host=None)) == []
    view.networks["net-1"]["admin_state_up"] = False
    assert responders(view, switch(view, 1)) == []


def test_responders_follow_store_changes():
    from topology.store.base import Change
    view = make_view()
    sw = switch(view, 1)
    before = {dict(f.match)["arp_tpa"] for f in responders(view, sw)}
    new = port_doc("port-vm9-eeeeeeee", 9, "fa:16:3e:00:00:09", "10.0.0.9",
                   pairs=[{"ip_address": "10.0.0.90"}])
    view.apply(Change(2, "ports", new["id"], "put", new))
    after = {dict(f.match)["arp_tpa"] for f in responders(view, sw)}
    assert after - before == {"10.0.0.9", "10.0.0.90"}
