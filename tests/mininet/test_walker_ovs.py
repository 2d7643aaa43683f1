"""The walker's semantics against Open vSwitch itself.

Hand-written flows using what the apps will use next (conntrack with a
zone from a register and recirculation, conjunctive matches, resubmit
floods, VLAN push, dec_ttl, Nicira move, masked metadata) are installed on
a real bridge nobody else programs; for each packet, the walker's verdict
must be what `ovs-appctl ofproto/trace` says, with the same conntrack
answers (its --ct-next) as the walker's ct states.

The bridge is a harness host left unconnected: ports 1 (its uplink veth),
2 and 3 (internal ports made here).
"""
from __future__ import annotations

import re

import pytest

from controller.flow import Flow, apply, goto, make_match, output, set_field, write_metadata
from controller.packetfields import CT_FLAGS, match_value, to_int
from controller.pipeline import make_cookie, table_id
from controller.walker import Walker, flow_problems
from harness import sh

pytestmark = pytest.mark.mininet

COOKIE = make_cookie(1, "ports", 1)
A_MAC, B_MAC = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
TRK, NEW, EST, INV = CT_FLAGS["trk"], CT_FLAGS["new"], CT_FLAGS["est"], CT_FLAGS["inv"]
IP = 0x0800


def F(table, priority, match, *instructions) -> Flow:
    return Flow(table, priority, make_match(match), tuple(instructions), COOKIE)


def ct(commit, zone, table=None, exec_=()):
    return ("ct", commit, zone, table, None, exec_)


FLOWS = [
    # classify: port 1 is "VM A" (reg6 = 0x10005: zone 5 in the low 16 bits).
    F("classify", 100, {"in_port": 1}, apply(set_field("reg6", 0x10005)),
      write_metadata(0x1, 0xFF), goto("egress_firewall")),
    # egress_firewall: track, then est passes, new must match conjunction 7.
    F("egress_firewall", 300, {"eth_type": IP, "ct_state": (0, TRK)},
      apply(ct(False, "reg6", "egress_firewall"))),
    F("egress_firewall", 290, {"eth_type": IP, "ct_state": (TRK | INV, TRK | INV)}),
    F("egress_firewall", 280, {"eth_type": IP, "ct_state": (TRK | EST, TRK | EST)},
      goto("l2_lookup")),
    F("egress_firewall", 270, {"eth_type": IP, "ct_state": (TRK | NEW, TRK | NEW), "conj_id": 7},
      apply(ct(True, "reg6", None, (("set_field", "ct_mark", 3),))), goto("l2_lookup")),
    F("egress_firewall", 270, {"eth_type": IP, "ct_state": (TRK | NEW, TRK | NEW),
                               "ipv4_src": "10.0.0.1"}, apply(("conjunction", 7, 1, 2))),
    F("egress_firewall", 270, {"eth_type": IP, "ct_state": (TRK | NEW, TRK | NEW),
                               "ipv4_src": "10.0.0.0/30"}, apply(("conjunction", 7, 1, 2))),
    F("egress_firewall", 270, {"eth_type": IP, "ct_state": (TRK | NEW, TRK | NEW), "ip_proto": 6,
                               "tcp_dst": 22}, apply(("conjunction", 7, 2, 2))),
    F("egress_firewall", 270, {"eth_type": IP, "ct_state": (TRK | NEW, TRK | NEW), "ip_proto": 6,
                               "tcp_dst": (80, 0xFFF0)}, apply(("conjunction", 7, 2, 2))),
    # l2_lookup: a flood as resubmits per receiver, then the tagged uplink copy.
    F("l2_lookup", 100, {"metadata": (0x1, 0xFF), "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
      apply(set_field("reg7", 1), ("resubmit", "output"), set_field("reg7", 2),
            ("resubmit", "output"), ("push_vlan",), set_field("vlan_vid", 0x1000 | 101),
            output(3))),
    F("l2_lookup", 100, {"metadata": (0x1, 0xFF), "eth_dst": B_MAC},
      apply(set_field("reg7", 2), ("move", "reg6", 0, "reg7", 8, 8)), goto("output")),
    F("output", 100, {"reg7": 1}, apply(output(1))),
    F("output", 100, {"reg7": 2, "eth_type": IP}, apply(("dec_ttl",), output(2))),
    F("output", 100, {"reg7": 0x502, "eth_type": IP}, apply(("dec_ttl",), output(2))),
]


def test_the_flows_are_ones_ovs_takes():
    assert flow_problems(FLOWS) == []


# -- Flow values -> ovs-ofctl text (just what FLOWS uses) ---------------------------------
_NAMES = {"ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "ip_proto": "nw_proto"}


def _match_text(field, value) -> str:
    name = _NAMES.get(field, field)
    if field == "ct_state":
        v, m = match_value(field, value)
        return "ct_state=" + "".join(("+" if v & bit else "-") + flag
                                      for flag, bit in CT_FLAGS.items() if m & bit)
    if isinstance(value, tuple):
        return f"{name}={value[0]}/{value[1]}"
    return f"{name}={value}"


def _field_ref(name: str, ofs: int, n: int) -> str:
    return f"{name}[{ofs}..{ofs + n - 1}]"


def _action_text(a) -> str:
    kind = a[0]
    if kind == "output":
        return f"output:{a[1]}"
    if kind == "set_field":
        return f"set_field:{to_int(a[1], a[2])}->{a[1]}"
    if kind == "push_vlan":
        return "push_vlan:0x8100"
    if kind in ("pop_vlan", "dec_ttl", "ct_clear"):
        return kind
    if kind == "resubmit":
        return f"resubmit(,{table_id(a[1])})"
    if kind == "move":
        _, src, so, dst, do, n = a
        return f"move:{_field_ref(src, so, n)}->{_field_ref(dst, do, n)}"
    if kind == "conjunction":
        return f"conjunction({a[1]},{a[2]}/{a[3]})"
    if kind == "ct":
        _, commit, zone, table, _nat, exec_ = a
        parts = ["commit"] if commit else []
        parts.append(f"zone={_field_ref(zone, 0, 16)}" if isinstance(zone, str) else f"zone={zone}")
        if table:
            parts.append(f"table={table_id(table)}")
        if exec_:
            parts.append("exec(" + ",".join(f"set_field:{v}->{f}" for _, f, v in exec_) + ")")
        return f"ct({','.join(parts)})"
    raise AssertionError(f"no ovs-ofctl text for {a!r}")


def ofctl_line(f: Flow) -> str:
    match = ",".join(_match_text(k, v) for k, v in f.match)
    acts = []
    for ins in f.instructions:
        if ins[0] == "apply":
            acts += [_action_text(a) for a in ins[1:]]
        elif ins[0] == "write_metadata":
            acts.append(f"write_metadata:{ins[1]:#x}/{ins[2]:#x}")
        elif ins[0] == "goto":
            acts.append(f"goto_table:{table_id(ins[1])}")
    return (f"table={table_id(f.table)},priority={f.priority},cookie={f.cookie:#x},"
            f"{match + ',' if match else ''}actions={','.join(acts) or 'drop'}")


# -- OVS's verdict -------------------------------------------------------------------
def _split(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return [p for p in parts + [cur.strip()] if p]


def ovs_verdict(bridge: str, flow: str, ct_states: list[str], odp: dict[int, int], vlans_in=()):
    argv = ["ovs-appctl", "ofproto/trace", bridge, flow]
    for s in ct_states:
        argv += ["--ct-next", s]
    out = sh(argv)
    outs = []
    # One "Datapath actions:" per pass (the first, then one per recirculation).
    for line in re.findall(r"^Datapath actions: (.*)$", out, re.M):
        vlans = list(vlans_in)
        for a in _split(line):
            if a.startswith("push_vlan("):
                vlans.insert(0, int(re.search(r"vid=(\d+)", a).group(1)))
            elif a == "pop_vlan":
                vlans.pop(0)
            elif a.isdigit():
                outs.append((odp[int(a)], tuple(vlans)))
    return sorted(outs), out


@pytest.fixture
def bridge(cloud):
    host = cloud.add_host("w1", register=False, connect=False)
    br = host.bridge
    for n in (2, 3):
        name = f"{cloud.prefix}-t{n}"
        sh(["ovs-vsctl", "--timeout=20", "add-port", br, name, "--", "set", "interface", name,
            "type=internal", f"ofport_request={n}"])
    assert host.ofport(host.uplink) == 1
    text = "\n".join(ofctl_line(f) for f in FLOWS) + "\n"
    sh(["ovs-ofctl", "-O", "OpenFlow13", "replace-flows", br, "-"], input=text)
    installed = sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", br])
    assert installed.count("cookie=") == len(FLOWS), installed
    odp = {}
    dpif = sh(["ovs-appctl", "dpif/show"])
    section = re.search(rf"^  {re.escape(br)}:\n((?:    .*\n?)*)", dpif, re.M)
    for m in re.finditer(r"^    \S+ (\d+)/(\d+):", section.group(1), re.M):
        odp[int(m.group(2))] = int(m.group(1))
    return br, odp


CASES = [
    # (name, packet fields, ct states, expected outputs [(port, vlans)])
    ("new ssh from an allowed source", dict(ipv4_src="10.0.0.1", tcp_dst=22), ["new"],
     [(2, ())]),
    ("new http-ish (masked port) from a /30", dict(ipv4_src="10.0.0.2", tcp_dst=85), ["new"],
     [(2, ())]),
    ("new to a port no clause allows", dict(ipv4_src="10.0.0.1", tcp_dst=23), ["new"], []),
    ("new from a source no clause allows", dict(ipv4_src="10.0.0.9", tcp_dst=22), ["new"], []),
    ("established passes whatever the port", dict(ipv4_src="10.0.0.9", tcp_dst=23), ["est"],
     [(2, ())]),
    ("invalid is dropped", dict(ipv4_src="10.0.0.1", tcp_dst=22), ["inv"], []),
    ("TTL 1 dies at dec_ttl", dict(ipv4_src="10.0.0.1", tcp_dst=22, nw_ttl=1), ["est"], []),
    ("a flood: resubmitted copies and the tagged uplink", dict(
        ipv4_src="10.0.0.1", ipv4_dst="10.0.0.255", eth_dst="ff:ff:ff:ff:ff:ff", udp_dst=9),
     ["est"], [(2, ()), (3, (101,))]),
]


@pytest.mark.parametrize("name,fields,states,expected", CASES, ids=[c[0] for c in CASES])
def test_walker_agrees_with_ofproto_trace(bridge, name, fields, states, expected):
    br, odp = bridge
    pkt = {"in_port": 1, "eth_src": A_MAC, "eth_dst": B_MAC, "ipv4_dst": "10.0.0.2", **fields}
    if "udp_dst" not in pkt:
        pkt.setdefault("tcp_src", 40000)
    t = Walker(FLOWS).walk(pkt, ct=states)
    ours = sorted((o.port, tuple(o.vlans)) for o in t.outputs)
    proto = "udp" if "udp_dst" in pkt else "tcp"
    ovs_flow = ",".join([f"in_port=1,{proto}", f"dl_src={pkt['eth_src']}",
                         f"dl_dst={pkt['eth_dst']}", f"nw_src={pkt['ipv4_src']}",
                         f"nw_dst={pkt['ipv4_dst']}", f"nw_ttl={pkt.get('nw_ttl', 64)}"]
                        + [f"{k}={v}" for k, v in pkt.items()
                           if k in ("tcp_src", "tcp_dst", "udp_dst")])
    theirs, text = ovs_verdict(br, ovs_flow, [f"trk,{s}" for s in states], odp)
    assert ours == theirs, (f"walker: {ours} ({t.verdict}; errors {t.errors})\n"
                            f"OVS: {theirs}\n{text}")
    assert ours == expected, t.verdict
    assert not t.errors, t.errors
