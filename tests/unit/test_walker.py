"""The packet walker (controller/walker.py) on hand-written flows."""
from __future__ import annotations

import dpkt
import pytest

from controller import pipeline
from controller.flow import Flow, apply, goto, make_match, meter, output, set_field, write_metadata
from controller.packetfields import (CT_FLAGS, make_packet, packet_from_frame, parse_ct_state,
                                     to_int)
from controller.walker import MAX_RESUBMIT_DEPTH, Walker, flow_problems, walk

COOKIE = pipeline.make_cookie(1, "ports", 7)
MAC_A, MAC_B = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"


def F(table, priority, match=None, *instructions, cookie=COOKIE) -> Flow:
    return Flow(table, priority, make_match(match or {}), tuple(instructions), cookie)


def tcp(**extra):
    pkt = {"in_port": 9, "eth_src": MAC_A, "eth_dst": MAC_B, "ipv4_src": "10.0.0.1",
           "ipv4_dst": "10.0.0.2", "tcp_src": 1234, "tcp_dst": 22}
    pkt.update(extra)
    return pkt


# -- matching -------------------------------------------------------------------

def test_highest_priority_match_wins_and_miss_drops_in_that_table():
    flows = [F("classify", 10, {}, apply(output(9))),
             F("classify", 100, {"in_port": 1}, apply(output(2)))]
    assert walk(flows, tcp(in_port=1)).ports == [2]
    t = walk(flows, tcp(in_port=5))
    assert t.ports == [9]
    t = walk(flows[1:], tcp(in_port=5))
    assert t.dropped and t.dropped_at == "classify"
    assert "no flow matched" in t.drops[0].reason
    assert t.steps[0].flow is None


def test_masks_on_macs_addresses_and_registers():
    flows = [F("classify", 100, {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
               apply(output(1))),
             F("classify", 90, {"eth_type": 0x800, "ipv4_dst": "10.0.0.0/24"}, apply(output(2))),
             F("classify", 80, {"reg3": (0x10, 0xF0)}, apply(output(3)))]
    assert walk(flows, tcp(eth_dst="ff:ff:ff:ff:ff:ff", in_port=7)).ports == [1]
    assert walk(flows, tcp(ipv4_dst="10.0.0.200")).ports == [2]
    assert walk(flows, tcp(ipv4_dst="10.0.1.2")).dropped
    assert walk(flows, tcp(ipv4_dst="10.0.1.2", reg3=0x1F)).ports == [3]


def test_prerequisites_a_field_the_packet_lacks_never_matches():
    flows = [F("classify", 100, {"eth_type": 0x800, "ip_proto": 6, "tcp_dst": 22}, apply(output(1))),
             F("classify", 90, {"eth_type": 0x800, "ipv4_src": "10.0.0.1"}, apply(output(2))),
             F("classify", 80, {"arp_op": 1}, apply(output(3)))]
    udp = {"in_port": 1, "eth_src": MAC_A, "eth_dst": MAC_B, "ipv4_src": "10.0.0.1",
           "ipv4_dst": "10.0.0.2", "udp_dst": 22}
    assert walk(flows, udp).ports == [2]      # udp_dst 22 is not tcp_dst 22
    arp = {"in_port": 1, "eth_src": MAC_A, "eth_dst": "ff:ff:ff:ff:ff:ff", "arp_op": 1,
           "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2"}
    assert walk(flows, arp).ports == [3]      # an ARP packet has no ipv4_src
    # vlan_vid 0 is "untagged": a tagged frame does not match it.
    flows = [F("classify", 100, {"vlan_vid": 0}, apply(output(1))),
             F("classify", 100, {"vlan_vid": 0x1000 | 101}, apply(output(2)))]
    assert walk(flows, tcp()).ports == [1]
    assert walk(flows, tcp(vlan=101)).ports == [2]


def test_flow_problems_names_what_ovs_would_refuse():
    bad = [F("classify", 1, {"tcp_dst": 22}),
           F("classify", 2, {"eth_type": 0x800, "ip_proto": 17, "tcp_dst": 22}),
           F("classify", 3, {"eth_type": 0x806}, apply(set_field("ipv4_src", "1.2.3.4"))),
           F("l2_lookup", 4, {}, goto("classify")),
           F("classify", 5, {}, apply(("conjunction", 1, 1, 2), output(1))),
           F("classify", 6, {"in_port": 1}, apply(("pop_vlan",), set_field("vlan_vid", 0x1001))),
           F("classify", 7, {"eth_type": 0x806}, apply(("dec_ttl",),
                                                      ("ct", False, 1, None, None, ()))),
           F("classify", 8, {"eth_type": 0x800, "ct_state": (0x30, 0x30)},
             apply(("ct", True, 1, None, None, ()), ("move", "reg1", 0, "tcp_dst", 0, 16)))]
    problems = flow_problems(bad)
    assert len(problems) == 11, "\n".join(problems)
    assert "matches tcp_dst without eth_type, ip_proto" in problems[0]
    assert "without ip_proto" in problems[1]
    assert "set_field ipv4_src without eth_type" in problems[2]
    assert "does not go forward" in problems[3]
    assert "conjunction mixed" in problems[4]
    assert "pop_vlan without a VLAN match" in problems[5]
    assert "set_field vlan_vid without a VLAN" in problems[6]
    assert "dec_ttl without eth_type ip" in problems[7]
    assert "ct without eth_type ip" in problems[8]
    assert "ct(commit) of a +inv packet" in problems[9]
    assert "move tcp_dst without ip_proto" in problems[10]
    good = [F("classify", 1, {"eth_type": 0x800, "ip_proto": 6, "tcp_dst": 22},
              apply(set_field("ipv4_src", "1.2.3.4"), ("dec_ttl",),
                    ("ct", True, "reg6", "services", None, ())), goto("services")),
            F("classify", 2, {"in_port": 1, "vlan_vid": 0x1065},
              apply(("pop_vlan",), ("push_vlan",), set_field("vlan_vid", 0x1001)))]
    assert flow_problems(good) == []


# -- instructions -----------------------------------------------------------------

def test_registers_metadata_and_goto_carry_state_between_tables():
    flows = [F("classify", 100, {"in_port": 1}, apply(set_field("reg6", 5)),
               write_metadata(0x12, 0xFF), goto("port_security")),
             F("port_security", 100, {"reg6": 5, "metadata": (0x12, 0xFF)},
               write_metadata(0x300, 0xF00), goto("output")),
             F("output", 100, {"metadata": 0xF0312}, apply(output(4)))]
    t = walk(flows, tcp(in_port=1, metadata=0xF0000))
    assert t.ports == [4]
    assert [s.table for s in t.steps] == ["classify", "port_security", "output"]
    assert t.steps[0].actions == ["set_field:0x5->reg6", "write_metadata:0x12/0xff",
                                  "goto_table:port_security"]


def test_a_goto_backwards_is_refused():
    flows = [F("services", 100, {}, goto("classify")), F("classify", 1, {}, apply(output(1)))]
    t = walk(flows, tcp(), table="services")
    assert t.dropped and t.errors and "does not go forward" in t.errors[0]


def test_empty_instructions_drop_in_that_table():
    flows = [F("classify", 100, {}, goto("port_security")), F("port_security", 100, {})]
    t = walk(flows, tcp())
    assert t.dropped and t.dropped_at == "port_security"
    assert t.verdict.startswith("dropped in port_security")


def test_resubmit_runs_the_table_then_carries_on_with_its_changes():
    flows = [F("l2_lookup", 100, {}, apply(set_field("reg7", 1), ("resubmit", "output"),
                                           set_field("reg7", 2), ("resubmit", "output"),
                                           output(9))),
             F("output", 100, {"reg7": 1}, apply(set_field("eth_dst", MAC_A), output(1))),
             F("output", 100, {"reg7": 2}, apply(output(2)))]
    t = walk(flows, tcp(in_port=5), table="l2_lookup")
    assert t.ports == [1, 2, 9]
    # The rewrite made inside the first resubmit stays on the packet.
    assert t.output_to(9).packet["eth_dst"] == MAC_A
    assert [s.depth for s in t.steps] == [0, 1, 1]
    # Each copy knows the tables it passed.
    assert [o.path for o in t.outputs] == [("l2_lookup", "output"), ("l2_lookup", "output"),
                                           ("l2_lookup",)]


def test_resubmit_loop_stops_at_ovs_depth():
    flows = [F("output", 1, {}, apply(("resubmit", "output")))]
    t = walk(flows, tcp(), table="output")
    assert t.dropped
    assert any(f"deeper than {MAX_RESUBMIT_DEPTH}" in e for e in t.errors)


def test_vlan_push_set_pop_and_outputs_snapshot_the_packet():
    flows = [F("classify", 100, {"in_port": 1},
               apply(output(2), ("push_vlan",), set_field("vlan_vid", 0x1000 | 101), output(3))),
             F("classify", 100, {"in_port": 3, "vlan_vid": 0x1000 | 101},
               apply(("pop_vlan",), output(1)))]
    t = walk(flows, tcp(in_port=1))
    assert [(o.port, o.vlans) for o in t.outputs] == [(2, []), (3, [101])]
    t = walk(flows, tcp(in_port=3, vlan=101))
    assert [(o.port, o.vlans) for o in t.outputs] == [(1, [])]


def test_output_to_the_ingress_port_is_skipped_unless_in_port():
    flows = [F("classify", 100, {}, apply(output(1), output(2)))]
    t = walk(flows, tcp(in_port=1))
    assert t.ports == [2]
    assert "skipped" in t.steps[0].actions[0]
    # A flood whose every other copy is dropped: the drop named is not the
    # copy back to the sender.
    flows = [F("l2_lookup", 100, {}, apply(set_field("reg7", 1), ("resubmit", "output"),
                                           set_field("reg7", 2), ("resubmit", "ingress_firewall"))),
             F("ingress_firewall", 100, {}),
             F("output", 100, {"reg7": 1}, apply(output(1)))]
    t = walk(flows, tcp(in_port=1), table="l2_lookup")
    assert t.dropped and t.dropped_at == "ingress_firewall", t.drops
    assert t.drops[0].to_sender_only
    t = walk([F("classify", 100, {}, apply(output("in_port")))], tcp(in_port=1))
    assert t.ports == [1]


def test_controller_output_records_the_meter_and_owner():
    flows = [F("classify", 100, {}, meter(5), apply(output("controller")))]
    t = walk(flows, tcp())
    assert not t.dropped and t.outputs == []
    assert t.controller[0].meter == 5
    assert t.steps[0].owner == (1, "ports", 7)
    assert t.steps[0].doc == pipeline.TABLES["classify"].doc


def test_a_masked_set_field_sets_only_those_bits():
    flows = [F("classify", 100, {}, apply(set_field("reg3", (0x0500, 0xFF00))), goto("output")),
             F("output", 100, {"reg3": 0x12345678 & ~0xFF00 | 0x0500}, apply(output(1)))]
    t = walk(flows, tcp(reg3=0x12345678))
    assert t.ports == [1], t.steps[0].actions
    assert t.steps[0].actions[0] == "set_field:0x500/0xff00->reg3"


def test_move_copies_bits():
    flows = [F("classify", 100, {}, apply(("move", "reg1", 0, "reg2", 8, 8)),
               goto("output")),
             F("output", 100, {"reg2": 0xAB00}, apply(output(1)))]
    assert walk(flows, tcp(reg1=0x12AB)).ports == [1]


def test_dec_ttl_decrements_and_drops_at_one():
    flows = [F("classify", 100, {}, apply(("dec_ttl",), output(1)))]
    t = walk(flows, tcp(nw_ttl=5))
    assert t.output_to(1).packet["nw_ttl"] == "4"
    t = walk(flows, tcp(nw_ttl=1))
    assert t.dropped and t.dropped_at == "classify" and "TTL" in t.drops[0].reason
    arp = {"in_port": 9, "eth_src": MAC_A, "eth_dst": MAC_B, "arp_op": 2,
           "arp_spa": "10.0.0.1", "arp_tpa": "10.0.0.2"}
    assert walk(flows, arp).ports == [1]      # not IP: dec_ttl does nothing


def test_group_buckets_each_get_a_copy():
    flows = [F("classify", 100, {}, apply(("group", 7)))]
    buckets = [[set_field("eth_dst", MAC_A), output(1)], [output(2)]]
    t = Walker(flows, groups={7: buckets}).walk(tcp(in_port=9))
    assert t.ports == [1, 2]
    assert t.output_to(2).packet["eth_dst"] == MAC_B
    t = walk(flows, tcp())
    assert t.dropped and "group 7" in t.errors[0]


# -- conjunction ------------------------------------------------------------------

def conj_flows():
    return [
        F("egress_firewall", 200, {"conj_id": 10, "eth_type": 0x800}, apply(output(1))),
        F("egress_firewall", 150, {"eth_type": 0x800, "ipv4_src": "10.0.0.1"},
          apply(("conjunction", 10, 1, 2))),
        F("egress_firewall", 150, {"eth_type": 0x800, "ipv4_src": "10.0.0.3"},
          apply(("conjunction", 10, 1, 2), ("conjunction", 11, 1, 2))),
        F("egress_firewall", 150, {"eth_type": 0x800, "ip_proto": 6, "tcp_dst": 22},
          apply(("conjunction", 10, 2, 2))),
        F("egress_firewall", 1, {}, apply(output(99))),
    ]


def test_conjunction_matches_when_every_clause_has_a_flow():
    w = Walker(conj_flows())
    t = w.walk(tcp(), table="egress_firewall")
    assert t.ports == [1]
    assert t.steps[0].conjunction == 10 and len(t.steps[0].conj_flows) == 2
    assert w.walk(tcp(ipv4_src="10.0.0.3"), table="egress_firewall").ports == [1]
    # One clause missing: the conjunction does not match, the default does.
    assert w.walk(tcp(tcp_dst=80), table="egress_firewall").ports == [99]
    assert w.walk(tcp(ipv4_src="10.0.0.2"), table="egress_firewall").ports == [99]


def test_conjunction_below_an_ordinary_match_and_without_its_conj_id_flow():
    flows = conj_flows() + [F("egress_firewall", 160, {"eth_type": 0x800, "ipv4_dst": "10.0.0.2"},
                              apply(output(5)))]
    assert walk(flows, tcp(), table="egress_firewall").ports == [5]
    flows = conj_flows()[1:]   # no conj_id=10 flow: as if the conjunction had not matched
    assert walk(flows, tcp(), table="egress_firewall").ports == [99]


# -- conntrack --------------------------------------------------------------------

def ct_flows():
    est = parse_ct_state("est")
    new = parse_ct_state("new")
    return [
        F("egress_firewall", 100, {"ct_state": (0, CT_FLAGS["trk"]), "eth_type": 0x800},
          apply(("ct", False, "reg6", "egress_firewall", None, ()))),
        F("egress_firewall", 90, {"ct_state": (est, est), "eth_type": 0x800},
          goto("output")),
        F("egress_firewall", 90, {"ct_state": (new, new), "eth_type": 0x800},
          apply(("ct", True, "reg6", None, None, (("set_field", "ct_mark", 3),))), goto("output")),
        F("egress_firewall", 80, {"ct_state": (CT_FLAGS["trk"], CT_FLAGS["trk"])}),
        F("output", 100, {}, apply(output(2))),
    ]


def test_ct_recirculates_with_the_given_state_and_zone():
    t = walk(ct_flows(), tcp(reg6=0x10005), table="egress_firewall", ct="est")
    assert t.ports == [2]
    assert t.outputs[0].path == ("egress_firewall", "egress_firewall", "output")
    assert t.ct[0].zone == 5 and t.ct[0].recirculate_to == "egress_firewall"
    assert "recirculated by ct(zone=5)" in t.steps[1].recirculation
    assert t.steps[1].flow.priority == 90
    t = walk(ct_flows(), tcp(reg6=5), table="egress_firewall", ct="new")
    assert t.ports == [2] and [c.commit for c in t.ct] == [False, True]
    t = walk(ct_flows(), tcp(reg6=5), table="egress_firewall", ct="inv")
    assert t.dropped and t.dropped_at == "egress_firewall"
    assert "+inv+trk" in t.steps[1].recirculation


def test_ct_states_are_used_in_turn_and_commit_exec_sets_the_mark():
    flows = [
        F("egress_firewall", 100, {"ct_state": (0, CT_FLAGS["trk"])},
          apply(("ct", True, 1, "ingress_firewall", None, (("set_field", "ct_mark", 7),)))),
        F("ingress_firewall", 100, {"ct_mark": 7, "ct_zone": 1},
          apply(("ct_clear",), ("ct", False, 2, "output", ("dst", "10.0.0.9", 0, 0, 0), ()))),
        F("output", 100, {"ct_state": (parse_ct_state("est"), 0xFF), "ct_zone": 2},
          apply(output(3))),
    ]
    t = walk(flows, tcp(), table="egress_firewall", ct=["new", "est"])
    assert t.ports == [3], [s.actions for s in t.steps]
    assert [c.state for c in t.ct] == [parse_ct_state("new"), parse_ct_state("est")]
    assert t.ct[1].nat == ("dst", "10.0.0.9", 0, 0, 0)
    assert "nat(dst=10.0.0.9)" in t.steps[1].actions[1]


def test_ct_state_text():
    assert parse_ct_state("est") == CT_FLAGS["trk"] | CT_FLAGS["est"]
    assert parse_ct_state("+est+rpl") == parse_ct_state("est,rpl")
    with pytest.raises(ValueError, match="unknown flag 'bogus'"):
        parse_ct_state("bogus")


# -- packets ----------------------------------------------------------------------

def test_make_packet_implies_headers_and_names_bad_fields():
    pkt = make_packet({"tcp_dst": 22, "ipv4_dst": "10.0.0.2"})
    assert pkt.get("eth_type") == 0x800 and pkt.get("ip_proto") == 6 and pkt.get("nw_ttl") == 64
    assert pkt.get("udp_dst") is None and pkt.get("reg6") == 0 and pkt.get("vlan_vid") == 0
    with pytest.raises(ValueError, match="bogus"):
        make_packet({"bogus": 1})
    with pytest.raises(ValueError, match="udp_dst"):
        make_packet({"tcp_dst": 1, "udp_dst": 2})
    with pytest.raises(ValueError, match="ipv4_dst"):
        make_packet({"ipv4_dst": "10.0.0"})


def test_packet_from_a_real_frame():
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), ttl=9, p=6,
                    data=dpkt.tcp.TCP(sport=1234, dport=22))
    eth = dpkt.ethernet.Ethernet(src=bytes.fromhex("fa163e00000a"), dst=bytes.fromhex("fa163e00000b"),
                                 type=0x0800, data=ip)
    pkt = packet_from_frame(bytes(eth), in_port=3)
    assert pkt.get("tcp_dst") == 22 and pkt.get("nw_ttl") == 9 and pkt.get("in_port") == 3
    assert pkt.get("ipv4_src") == to_int("ipv4_src", "10.0.0.1")
    assert pkt.get("eth_dst") == to_int("eth_dst", MAC_B)
    tagged = dpkt.ethernet.Ethernet(src=eth.src, dst=b"\xff" * 6, type=0x0806,
                                    vlan_tags=[dpkt.ethernet.VLANtag8021Q(id=101)],
                                    data=dpkt.arp.ARP(op=1, sha=eth.src, spa=bytes([10, 0, 0, 1]),
                                                      tha=b"\0" * 6, tpa=bytes([10, 0, 0, 2])))
    pkt = packet_from_frame(bytes(tagged))
    assert pkt.vlans == [101] and pkt.get("vlan_vid") == 0x1000 | 101
    assert pkt.get("arp_op") == 1 and pkt.get("arp_tpa") == to_int("arp_tpa", "10.0.0.2")
    udp = dpkt.ethernet.Ethernet(src=eth.src, dst=eth.dst, type=0x0800,
                                 data=dpkt.ip.IP(src=b"\0" * 4, dst=b"\xff" * 4, p=17,
                                                 data=dpkt.udp.UDP(sport=68, dport=67)))
    pkt = packet_from_frame(bytes(udp))
    assert (pkt.get("udp_src"), pkt.get("udp_dst")) == (68, 67)
    with pytest.raises(ValueError):
        packet_from_frame(b"\x01\x02")
    # A walk takes the parsed frame as it is.
    flows = [F("classify", 100, {"eth_type": 0x800, "ip_proto": 17, "udp_dst": 67},
               apply(output("controller")))]
    assert walk(flows, pkt).controller
