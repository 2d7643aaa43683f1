"""Flow values <-> OpenFlow 1.3 bytes, and the canonical form OVS reports back."""

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from wire import DP, wire_round_trip
from controller import codec, pipeline
from controller.flow import (Flow, apply, flow, goto, output, pop_vlan, push_vlan, set_field,
                             to_controller, write_metadata)



FLOWS = [
    flow(1, "classify", 100, {"in_port": 3},
         apply(set_field("reg6", 7)), write_metadata(5), goto("port_security")),
    flow(1, "classify", 100, {"in_port": 4, "vlan_vid": 0x1000 | 101},
         apply(pop_vlan()), write_metadata(2), goto("l2_lookup")),
    flow(1, "l2_lookup", 50, {"metadata": 2, "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
         apply(output(1), output(2), push_vlan(), set_field("vlan_vid", 0x1000 | 101), output(4))),
    flow(1, "port_security", 100, {"reg6": 7, "eth_src": "fa:16:3e:00:00:01", "eth_type": 0x800,
                                   "ipv4_src": "10.1.0.0/24"}, goto("services")),
    flow(1, "port_security", 100, {"reg6": 7, "eth_src": "fa:16:3e:00:00:01", "eth_type": 0x806,
                                   "arp_sha": "fa:16:3e:00:00:01", "arp_spa": "10.0.0.1"},
         goto("services")),
    flow(2, "services", 100, {"reg6": 7, "eth_type": 0x806, "arp_op": 1}, *to_controller(7)),
    flow(1, "output", 0, {}),
]


@pytest.mark.parametrize("f", FLOWS, ids=lambda f: f"{f.table}-{f.priority}")
def test_wire_round_trip_is_identity_on_canonical_flows(f):
    assert wire_round_trip(f) == codec.canonical(f)


def test_canonical_normalises_like_ovs():
    f = Flow("l2_lookup", 10,
             (("eth_dst", ("FA:16:3E:00:00:01", "ff:ff:ff:ff:ff:ff")),
              ("metadata", (0x1F, 0x0F)),
              ("ipv4_src", ("10.0.0.9", "255.255.255.0"))),
             (("goto", "ingress_firewall"), ("apply",), ("write_metadata", 0x1F, 0x0F),
              ("apply", ("output", 0xFFFFFFFD))),
             pipeline.COOKIE_SPACE)
    c = codec.canonical(f)
    # full mask dropped, value bits outside the mask cleared, sorted fields
    assert c.match == (("eth_dst", "fa:16:3e:00:00:01"),
                       ("ipv4_src", ("10.0.0.0", "255.255.255.0")),
                       ("metadata", (0x0F, 0x0F)))
    # execution order, empty apply gone, named controller port
    assert c.instructions == (("apply", ("output", "controller")),
                              ("write_metadata", 0x0F, 0x0F),
                              ("goto", "ingress_firewall"))


def test_cidr_32_is_a_plain_address():
    assert codec.canonical_value("ipv4_src", "10.0.0.1/32") == "10.0.0.1"
    assert codec.canonical_value("arp_spa", "10.0.0.0/8") == ("10.0.0.0", "255.0.0.0")


def test_delete_and_modify_are_strict_and_filtered_on_our_cookie():
    f = FLOWS[0]
    d = codec.flow_mod(DP, f, "delete")
    m = codec.flow_mod(DP, f, "modify")
    assert d.command == ofp.OFPFC_DELETE_STRICT and d.cookie_mask == codec.ALL_ONES64
    assert m.command == ofp.OFPFC_MODIFY_STRICT and m.cookie == f.cookie
    assert d.table_id == pipeline.table_id("classify") and d.priority == 100


def test_unknown_table_found_on_a_switch_can_be_deleted():
    f = Flow("table7", 1, (), (), pipeline.COOKIE_SPACE)
    assert codec.flow_mod(DP, f, "delete").table_id == 7


def test_flow_stats_request_narrows_to_our_cookie_space():
    req = codec.flow_stats_request(DP)
    assert (req.cookie, req.cookie_mask) == (pipeline.COOKIE_SPACE, pipeline.COOKIE_SPACE_MASK)
    assert req.table_id == ofp.OFPTT_ALL
