"""Every action and instruction kind: build, encode to bytes with os-ken, parse
back with os-ken's parser, decode, and get the canonical form again."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from wire import wire_round_trip
from controller import actions, codec, fields, nxext, pipeline
from controller.flow import (CT_EST, CT_NEW, CT_REL, CT_TRK, apply, conjunction, ct,
                             ct_clear, ct_state, dec_ttl, flow, goto, group, meter, move, nat,
                             output, pop_vlan, push_vlan, resubmit, set_field, to_controller,
                             write_metadata)



IP = {"eth_type": 0x800}
TCP = {"eth_type": 0x800, "ip_proto": 6}

# One flow per action kind (and variant) the pipeline will use.
ACTION_FLOWS = {
    "output": flow(1, "output", 10, {"reg7": 1}, apply(output(3), output("in_port"))),
    "output-controller": flow(1, "services", 10, {}, apply(output("controller"))),
    "controller-metered": flow(1, "services", 11, {}, *to_controller(7)),
    "set_field-reg": flow(1, "classify", 10, {"in_port": 1}, apply(set_field("reg6", 7))),
    "set_field-reg-masked": flow(1, "classify", 11, {"in_port": 1},
                                 apply(set_field("reg5", (0x30, 0xF0)))),
    "set_field-mac": flow(1, "routing", 10, IP, apply(set_field("eth_src", "FA:16:3E:00:00:01"),
                                                      set_field("eth_dst", "fa:16:3e:00:00:02"))),
    "set_field-mac-masked": flow(1, "routing", 11, IP,
                                 apply(set_field("eth_dst", ("02:00:00:00:00:00",
                                                             "02:00:00:00:00:00")))),
    "set_field-ipv4": flow(1, "routing", 12, IP, apply(set_field("ipv4_src", "10.0.0.1"),
                                                       set_field("ipv4_dst", "10.0.0.2"))),
    "set_field-dscp": flow(1, "routing", 13, IP, apply(set_field("ip_dscp", 46))),
    "set_field-tcp": flow(1, "routing", 14, TCP, apply(set_field("tcp_dst", 8080))),
    "set_field-tunnel": flow(1, "output", 11, {}, apply(set_field("tunnel_id", 5000),
                                                        set_field("tun_ipv4_dst", "192.0.2.7"))),
    "set_field-metadata-masked": flow(1, "classify", 12, {},
                                      apply(set_field("metadata", (0x10, 0xFF)))),
    "push_vlan": flow(1, "output", 12, {}, apply(push_vlan(), set_field("vlan_vid", 0x1000 | 5),
                                                 output(2))),
    "pop_vlan": flow(1, "classify", 13, {"vlan_vid": 0x1000 | 5}, apply(pop_vlan())),
    "dec_ttl": flow(1, "routing", 15, IP, apply(dec_ttl())),
    "resubmit": flow(1, "l2_lookup", 10, {}, apply(resubmit("ingress_firewall"),
                                                    resubmit("output"))),
    "move": flow(1, "routing", 16, IP, apply(move("eth_src", 0, "eth_dst", 0, 48),
                                             move("reg6", 0, "reg7", 16, 16))),
    "conjunction": flow(1, "egress_firewall", 10, {**TCP, "tcp_dst": 22},
                        apply(conjunction(7, 1, 2), conjunction(8, 2, 3))),
    "ct-immediate": flow(1, "egress_firewall", 1, IP, apply(ct(zone=5, table="egress_firewall"))),
    "ct-register": flow(1, "egress_firewall", 2, IP, apply(ct(zone="reg5", table="egress_firewall"))),
    "ct-commit": flow(1, "egress_firewall", 3, IP, apply(ct(commit=True, zone="reg5"))),
    "ct-exec": flow(1, "egress_firewall", 4, IP,
                    apply(ct(commit=True, zone=9, exec=[set_field("ct_mark", 1),
                                                        set_field("ct_label", 1 << 100)]))),
    "ct-exec-masked": flow(1, "egress_firewall", 5, IP,
                           apply(ct(commit=True, zone=9,
                                    exec=[set_field("ct_mark", (0x2, 0x2)),
                                          set_field("ct_label", (1 << 127, 1 << 127))]))),
    "ct-nat": flow(1, "routing", 1, IP, apply(ct(zone=3, nat=nat(), table="routing"))),
    "ct-snat": flow(1, "routing", 2, IP,
                    apply(ct(commit=True, zone=3, nat=nat("src", "192.0.2.1", "192.0.2.9",
                                                          1024, 65535)))),
    "ct-dnat-one": flow(1, "routing", 3, IP,
                        apply(ct(commit=True, zone=3, nat=nat("dst", "10.0.0.5"),
                                 exec=[set_field("ct_mark", 3)]))),
    "ct-dnat-port": flow(1, "routing", 4, TCP,
                         apply(ct(commit=True, zone="reg4", nat=nat("dst", "10.0.0.5", 0, 22),
                                  table="l2_lookup"))),
    "ct_clear": flow(1, "routing", 5, IP, apply(ct_clear())),
    "group": flow(1, "output", 13, {}, apply(group(4))),
    "check_pkt_larger": flow(1, "classify", 15, {"in_port": 1},
                             apply(nxext.check_pkt_larger(1414, "reg3", 0))),
    "set_field-in_port": flow(1, "classify", 16, {"in_port": 1}, apply(set_field("in_port", 0))),
    "instructions": flow(1, "classify", 14, {"in_port": 9}, meter(3), apply(output(1)),
                         write_metadata(0x1F, 0xF), goto("port_security")),
}


@pytest.mark.parametrize("name", sorted(ACTION_FLOWS))
def test_every_kind_round_trips_through_the_wire(name):
    f = ACTION_FLOWS[name]
    back = wire_round_trip(f)
    assert back == codec.canonical(f)
    assert not any(a[0] == "unknown" for ins in back.instructions for a in ins[1:]
                   if ins[0] == "apply")


def test_every_registered_kind_has_a_round_trip_case():
    used = {a[0] for f in ACTION_FLOWS.values() for ins in f.instructions if ins[0] == "apply"
            for a in ins[1:]}
    assert used == set(actions.ACTIONS)
    used_ins = {ins[0] for f in ACTION_FLOWS.values() for ins in f.instructions}
    assert used_ins == set(actions.INSTRUCTIONS)


def test_registries_are_one_entry_per_kind_and_refuse_a_second():
    with pytest.raises(ValueError, match="registered twice"):
        @actions.register_action
        class Again(actions.ActionSpec):
            kind = "output"


def test_canonical_forms():
    c = actions.canonical_action
    assert c(("output", 0xFFFFFFFD)) == ("output", "controller")
    assert c(("set_field", "eth_src", "FA:16:3E:00:00:0A")) == \
        ("set_field", "eth_src", "fa:16:3e:00:00:0a")
    assert c(("set_field", "reg5", (0xFFFFFFFF, 0xFFFFFFFF))) == ("set_field", "reg5", 0xFFFFFFFF)
    assert c(("set_field", "ct_mark", (0xFF, 0x0F))) == ("set_field", "ct_mark", (0x0F, 0x0F))
    # nat addresses normalised; "not given" is 0 whichever way it was said
    assert c(("ct", 1, 3, None, ("src", "192.0.2.1", "0.0.0.0", 0, 0), [])) == \
        ("ct", True, 3, None, ("src", "192.0.2.1", 0, 0, 0), ())
    assert c(("ct", False, "reg5", None, None, ())) == ("ct", False, "reg5", None, None, ())


def test_empty_apply_is_dropped_and_instructions_sorted():
    ins = actions.canonical_instructions([goto("output"), apply(), meter(2)])
    assert ins == (("meter", 2), ("goto", "output"))


def test_instruction_kinds_without_an_encoder_are_refused():
    for kind in ("clear", "write_actions"):
        with pytest.raises(ValueError, match="unknown instruction"):
            actions.canonical_instructions([(kind,)])


def test_unknown_action_kind_is_refused_early():
    with pytest.raises(ValueError, match="unknown action kind"):
        codec.canonical(flow(1, "output", 1, {}, apply(("outptu", 1))))


def test_builders_refuse_what_ovs_would_refuse():
    with pytest.raises(ValueError):
        conjunction(1, 0, 2)       # clauses count from 1
    with pytest.raises(ValueError):
        conjunction(1, 1, 1)       # OVS needs at least 2 clauses
    with pytest.raises(ValueError):
        ct(exec=[set_field("ct_mark", 1)])   # exec needs commit
    with pytest.raises(ValueError):
        ct(commit=True, exec=[set_field("reg0", 1)])
    with pytest.raises(ValueError):
        ct(nat=nat("src", "10.0.0.1"))       # a NAT range is applied on commit
    with pytest.raises(ValueError):
        ct(zone=70000)
    with pytest.raises(ValueError):
        nat("src")
    with pytest.raises(KeyError):
        resubmit("nowhere")
    with pytest.raises(ValueError):
        output("nowhere")


def test_foreign_shapes_decode_as_unknown_so_the_diff_replaces_them():
    forced = parser.NXActionCT(flags=2, zone_src="", zone_ofs_nbits=0, recirc_table=0xFF,
                               alg=0, actions=[])
    assert actions.decode_action(ofp, forced)[0] == "unknown"
    ftp = parser.NXActionCT(flags=1, zone_src="", zone_ofs_nbits=0, recirc_table=0xFF,
                            alg=21, actions=[])
    assert actions.decode_action(ofp, ftp)[0] == "unknown"
    assert actions.decode_action(ofp, parser.NXActionResubmit(in_port=3))[0] == "unknown"
    assert actions.decode_action(ofp, parser.OFPActionPushVlan(0x88A8))[0] == "unknown"
    write = parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [parser.OFPActionOutput(1)])
    assert actions.decode_instruction(ofp, write)[0] == "unknown"


def test_ct_zone_from_part_of_a_register_reads_back_distinct():
    obj = parser.NXActionCT(flags=0, zone_src="reg5", zone_ofs_nbits=(16 << 6) | 15,
                            recirc_table=0xFF, alg=0, actions=[])
    assert actions.decode_action(ofp, obj)[2] == "reg5[16..31]"


def test_table_outside_the_map_reads_back_as_tableN():
    obj = parser.NXActionResubmitTable(in_port=actions.NX_RESUBMIT_IN_PORT, table_id=200)
    assert actions.decode_action(ofp, obj) == ("resubmit", "table200")
    assert actions.decode_instruction(ofp, parser.OFPInstructionGotoTable(201)) == \
        ("goto", "table201")


# -- match fields ------------------------------------------------------------
def test_ct_state_flags():
    assert ct_state("+trk+est") == (CT_TRK | CT_EST, CT_TRK | CT_EST)
    assert ct_state("+trk-new+rel") == (CT_TRK | CT_REL, CT_TRK | CT_NEW | CT_REL)
    assert ct_state("-trk") == (0, CT_TRK)
    for bad in ("", "trk", "+trk+bogus"):
        with pytest.raises(ValueError):
            ct_state(bad)


MATCHES = {
    "ct_state": {**IP, "ct_state": ct_state("+trk+new-est")},
    "ct_state-inv": {"ct_state": ct_state("+trk+inv")},
    "ct_state-rpl": {"ct_state": ct_state("+trk+est+rpl")},
    "ct_zone": {**IP, "ct_zone": 7},
    "ct_mark": {**IP, "ct_mark": 5},
    "ct_mark-masked": {**IP, "ct_mark": (0x13, 0x03)},
    "ct_label": {**IP, "ct_label": 1 << 100},
    "ct_label-masked": {**IP, "ct_label": (1 << 127 | 5, 1 << 127)},
    "conj_id": {"conj_id": 77},
    "regs": {f"reg{i}": i + 1 for i in range(16)},
    "reg-masked": {"reg3": (0xABCD, 0xFF00)},
    "ip_dscp": {**IP, "ip_dscp": 46},
    "ip_proto": {**IP, "ip_proto": 17},
    "tcp-ports": {**TCP, "tcp_src": 1024, "tcp_dst": 22},
    "tcp-port-range": {**TCP, "tcp_dst": (0x400, 0xFC00)},
    "udp-port-range": {**IP, "ip_proto": 17, "udp_dst": (0x1000, 0xF000)},
    "icmp": {**IP, "ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0},
    "ipv4-prefix": {**IP, "ipv4_src": "10.1.0.0/16", "ipv4_dst": ("10.0.0.9", "255.255.255.0")},
    "ipv4-full-mask": {**IP, "ipv4_src": ("10.0.0.9", "255.255.255.255")},
}


@pytest.mark.parametrize("name", sorted(MATCHES))
def test_match_fields_round_trip(name):
    f = flow(1, "egress_firewall", 10, MATCHES[name], goto("routing"))
    assert wire_round_trip(f) == codec.canonical(f)


def test_match_canonical_rules():
    m = fields.canonical_match
    assert m([("ct_state", (0xFF, CT_TRK))]) == (("ct_state", (CT_TRK, CT_TRK)),)
    assert m([("ct_zone", (5, 0xFFFF))]) == (("ct_zone", 5),)
    assert m([("tcp_dst", (22, 0xFFFF))]) == (("tcp_dst", 22),)
    assert m([("ct_label", (3, (1 << 128) - 1))]) == (("ct_label", 3),)
    # an all-zero mask is a wildcard: OVS drops the field
    assert m([("ipv4_src", "0.0.0.0/0"), ("reg1", (5, 0)), ("in_port", 1)]) == \
        (("in_port", 1),)


def test_port_range_masks_cover_exactly_the_range():
    for lo, hi in [(1, 65535), (0, 65535), (22, 22), (1000, 1999), (1024, 2047), (5, 6)]:
        covered = set()
        for v in fields.port_masks(lo, hi):
            value, mask = v if isinstance(v, tuple) else (v, 0xFFFF)
            hits = {p for p in range(lo - 3 if lo > 3 else 0, min(hi + 4, 65536))
                    if p & mask == value}
            assert not covered & hits
            covered |= hits
        assert covered == set(range(lo, hi + 1))
    assert fields.port_masks(0, 65535) == [(0, 0)]
    assert fields.port_masks(22, 22) == [22]


# -- property-style -----------------------------------------------------------
tables = st.sampled_from([t.name for t in pipeline.PIPELINE])
ipv4 = st.integers(1, 0xFFFFFFFE).map(lambda i: f"{i >> 24}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
ports16 = st.integers(0, 0xFFFF)
regs = st.sampled_from([f"reg{i}" for i in range(16)])


@st.composite
def nats(draw):
    kind = draw(st.sampled_from([None, "src", "dst"]))
    if kind is None:
        return nat()
    lo = draw(st.integers(1, 0xFFFF))
    port_max = draw(st.one_of(st.just(0), st.integers(lo, 0xFFFF)))
    port_min = draw(st.one_of(st.just(0), st.just(lo))) if port_max else \
        draw(st.one_of(st.just(0), st.just(lo)))
    return nat(kind, draw(ipv4), draw(st.one_of(st.just(0), ipv4)), port_min, port_max)


@st.composite
def cts(draw):
    commit = draw(st.booleans())
    n = draw(st.one_of(st.none(), nats()))
    if n is not None and n != ("nat",):
        commit = True
    exec_ = []
    if commit:
        if draw(st.booleans()):
            exec_.append(set_field("ct_mark", draw(st.one_of(
                st.integers(0, 0xFFFFFFFF),
                st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(1, 0xFFFFFFFF))))))
        if draw(st.booleans()):
            exec_.append(set_field("ct_label", draw(st.integers(0, (1 << 128) - 1))))
    return ct(commit=commit, zone=draw(st.one_of(st.integers(0, 0xFFFF), regs)),
              table=draw(st.one_of(st.none(), tables)), nat=n, exec=exec_)


action = st.one_of(
    st.integers(1, 0xFFFFFF00).map(output),
    st.sampled_from(["controller", "in_port", "local"]).map(output),
    st.tuples(regs, st.integers(0, 0xFFFFFFFF)).map(lambda t: set_field(*t)),
    st.tuples(regs, st.integers(0, 0xFFFFFFFF), st.integers(1, 0xFFFFFFFF))
      .map(lambda t: set_field(t[0], (t[1], t[2]))),
    st.just(push_vlan()), st.just(pop_vlan()), st.just(dec_ttl()), st.just(ct_clear()),
    tables.map(resubmit),
    st.tuples(regs, st.integers(0, 15), regs, st.integers(0, 15), st.integers(1, 16))
      .map(lambda t: move(*t)),
    st.integers(0, 0xFFFFFFFF).map(group),
    cts(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(action, min_size=1, max_size=6))
def test_any_action_list_round_trips(acts):
    f = flow(1, "routing", 7, IP, apply(*acts))
    assert wire_round_trip(f) == codec.canonical(f)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.integers(1, 64).flatmap(
    lambda n: st.tuples(st.integers(1, n), st.just(n))).filter(lambda t: t[1] >= 2))
def test_any_conjunction_round_trips(conj_id, clause_n):
    f = flow(1, "egress_firewall", 7, IP, apply(conjunction(conj_id, *clause_n)))
    assert wire_round_trip(f) == codec.canonical(f)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["ct_state", "ct_mark", "reg0", "reg9", "tcp_dst", "ct_zone"]),
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), min_size=1))
def test_any_masked_match_round_trips(match):
    m = {**TCP, **{k: (v if k != "ct_zone" else v[0]) for k, v in match.items()}}
    f = flow(1, "egress_firewall", 7, m, goto("routing"))
    assert wire_round_trip(f) == codec.canonical(f)


def test_nxm_field_names_ovs_answers_with_read_as_the_oxm_names_sent():
    # Seen on OVS 3.1: a masked set_field of eth_dst (reg_load2) and a move of
    # eth_src come back under the NXM headers.
    load = parser.NXActionRegLoad2(dst="eth_dst_nxm", value="02:00:00:00:00:00",
                                   mask="02:00:00:00:00:00")
    assert actions.decode_action(ofp, load) == \
        ("set_field", "eth_dst", ("02:00:00:00:00:00", "02:00:00:00:00:00"))
    mv = parser.NXActionRegMove(src_field="eth_src_nxm", dst_field="eth_dst_nxm", n_bits=48)
    assert actions.decode_action(ofp, mv) == ("move", "eth_src", 0, "eth_dst", 0, 48)


def test_a_value_that_does_not_parse_reads_as_unknown_instead_of_failing():
    odd = parser.NXActionRegLoad2(dst="vlan_tci", value="not-a-number", mask="x")
    assert actions.decode_action(ofp, odd)[0] == "unknown"
