"""The qos app: meters per port and direction, DSCP marking, policies as
desired meter values (a rate change is a meter-mod, not a flow-mod)."""
from __future__ import annotations

from behaviour import Switch, all_apps
from l2_fixtures import make_view, plugged_switch, put

from apps.qos import QosApp, meter_specs, policy_of
from controller.compiler import FlowCompiler, SwitchFlows
from controller.flow import goto
from controller.meters import EGRESS, INGRESS, KBPS, PKTPS, MeterSpec, qos_meter_id
from controller.reconciler import SwitchReconciler
from test_reconciler import SPEC, FakeSwitch

P1 = "00000001-aaaa-bbbb-cccc-000000000000"
P2 = "00000002-aaaa-bbbb-cccc-000000000000"


def policy(pid="q1", *rules):
    return {"id": pid, "_key": 1, "name": pid, "rules": list(rules)}


def bw(kbps, direction, burst=0):
    return {"type": "bandwidth_limit", "max_kbps": kbps, "max_burst_kbps": burst,
            "direction": direction}


def with_policy(view, port_id, pol, on_network=False):
    put(view, "qos_policies", pol)
    if on_network:
        put(view, "networks", {**view.networks["n1"], "qos_policy_id": pol["id"]})
    else:
        put(view, "ports", {**view.ports[port_id], "qos_policy_id": pol["id"]})


def h1(view):
    return Switch(view, plugged_switch(view, 0xA1), apps=all_apps() + [QosApp()])


def metered(t) -> list:
    return [s.meter for s in t.steps if s.meter]


def test_egress_is_metered_at_classify_and_ingress_before_output():
    view = make_view()
    with_policy(view, P1, policy("q1", bw(10000, "egress"), bw(5000, "ingress")))
    sw = h1(view)
    p1, p2 = view.ports[P1], view.ports[P2]
    out = sw.send(p1, eth_dst=p2["mac_address"], eth_type=0x800, ipv4_dst="10.0.0.2", ip_proto=6,
                  tcp_dst=80)
    assert out.ports == [sw.ofport(p2)]
    assert metered(out) == [qos_meter_id(1, EGRESS)]
    assert out.steps[0].table == "classify" and out.steps[1].table == "egress_meter"
    assert out.outputs[0].meters == (qos_meter_id(1, EGRESS),) and out.drops == []
    back = sw.send(p2, eth_dst=p1["mac_address"], eth_type=0x800, ipv4_dst="10.0.0.1",
                   ip_proto=6, tcp_dst=80)
    assert back.ports == [sw.ofport(p1)]
    assert metered(back) == [qos_meter_id(1, INGRESS)]
    assert [s.table for s in back.steps if s.meter] == ["ingress_meter"]
    assert back.outputs[0].meters == (qos_meter_id(1, INGRESS),)
    assert "pre_output" in back.outputs[0].path
    assert sw.problems() == []


def test_a_port_without_a_policy_passes_no_meter():
    view = make_view()
    with_policy(view, P1, policy("q1", bw(10000, "egress")))
    sw = h1(view)
    p1, p2 = view.ports[P1], view.ports[P2]
    t = sw.send(p2, eth_dst="fa:16:3e:00:00:03", eth_type=0x800, ipv4_dst="10.0.0.3")
    assert t.ports == [sw.uplink()] and metered(t) == []
    t = sw.send(p2, eth_dst=p1["mac_address"], eth_type=0x800, ipv4_dst="10.0.0.1")
    assert t.ports == [sw.ofport(p1)] and metered(t) == []


def test_dscp_is_set_on_egress_ipv4_only():
    view = make_view()
    with_policy(view, P1, policy("q1", {"type": "dscp_marking", "dscp_mark": 26}))
    sw = h1(view)
    p1, p2 = view.ports[P1], view.ports[P2]
    t = sw.send(p1, eth_dst=p2["mac_address"], eth_type=0x800, ipv4_dst="10.0.0.2", ip_dscp=0)
    assert int(t.outputs[0].packet["ip_dscp"]) == 26 and metered(t) == []
    arp = sw.send(p1, eth_dst="ff:ff:ff:ff:ff:ff", eth_type=0x806, arp_op=2,
                  arp_sha=p1["mac_address"], arp_spa="10.0.0.1", arp_tpa="10.0.0.2")
    assert "ip_dscp" not in arp.outputs[0].packet


def test_a_ports_policy_beats_its_networks():
    view = make_view()
    with_policy(view, P1, policy("net", bw(1000, "egress")), on_network=True)
    assert policy_of(view, view.ports[P2])["id"] == "net"
    with_policy(view, P1, policy("own", bw(2000, "egress")))
    assert policy_of(view, view.ports[P1])["id"] == "own"
    sw = h1(view)
    specs = {m: s for m, s in SwitchFlowsOf(view).meter_specs().items()}
    assert specs[qos_meter_id(1, EGRESS)].rate == 2000
    assert specs[qos_meter_id(2, EGRESS)].rate == 1000
    assert sw.problems() == []


def SwitchFlowsOf(view):
    memo = SwitchFlows()
    FlowCompiler(all_apps() + [QosApp()]).refresh(view, plugged_switch(view, 0xA1), memo)
    return memo


def test_specs_kbps_pktps_and_default_burst():
    specs = meter_specs(policy("q", bw(10000, "egress"), bw(3000, "ingress", burst=500),
                               {"type": "packet_rate_limit", "max_kpps": 2, "max_burst_kpps": 0,
                                "direction": "ingress"}))
    assert specs[EGRESS] == MeterSpec(10000, 8000, KBPS)
    assert specs[INGRESS] == MeterSpec(3000, 500, KBPS)     # bandwidth wins a direction
    only_pps = meter_specs(policy("q", {"type": "packet_rate_limit", "max_kpps": 1,
                                        "max_burst_kpps": 0, "direction": "egress"}))
    assert only_pps[EGRESS] == MeterSpec(1000, 800, PKTPS)


def test_a_rate_change_is_a_meter_modify_and_no_flow_mod():
    view = make_view()
    with_policy(view, P1, policy("q1", bw(10000, "egress")))
    sw = plugged_switch(view, 0xA1)
    compiler = FlowCompiler(all_apps() + [QosApp()])
    memo = SwitchFlows()
    compiler.refresh(view, sw, memo)
    fake = FakeSwitch()
    rec = SwitchReconciler(0xA1, fake, SPEC)
    rec.sync(memo.take_all(), meters=memo.meter_specs())
    mid = qos_meter_id(1, EGRESS)
    assert fake.meters[mid] == MeterSpec(10000, 8000, KBPS)
    fake.log.clear()
    flow_mods = rec.stats["flow_mods"]

    put(view, "qos_policies", policy("q1", bw(20000, "egress")))
    from controller.compiler import Dirty
    compiler.refresh(view, sw, memo, Dirty(scopes={("port", P1)}))
    flows, meters = memo.take_delta()
    assert flows == {} and meters == {mid: MeterSpec(20000, 16000, KBPS)}
    assert rec.sync_delta(flows, meters) == 1
    assert fake.log == [("meter", "modify", mid)] and rec.stats["flow_mods"] == flow_mods
    assert fake.meters[mid].rate == 20000

    # The policy goes away: its flows and then its meter leave.
    put(view, "ports", {**view.ports[P1], "qos_policy_id": None})
    compiler.refresh(view, sw, memo, Dirty(scopes={("port", P1)}))
    flows, meters = memo.take_delta()
    assert meters == {mid: False} and flows and all(f is None for f in flows.values())
    rec.sync_delta(flows, meters)
    assert mid not in fake.meters
    # A whole sync against the switch agrees: nothing left to send.
    assert rec.sync(memo.take_all(), meters=memo.meter_specs(), reread=True) == 0


def test_the_qos_app_keeps_to_the_declaration():
    view = make_view()
    with_policy(view, P1, policy("q1", bw(10000, "egress"), bw(1, "ingress"),
                                 {"type": "dscp_marking", "dscp_mark": 10}))
    compiler = FlowCompiler(all_apps() + [QosApp()])
    compiler.refresh(view, plugged_switch(view, 0xA1), SwitchFlows())
    assert compiler.violations == 0 and compiler.conflicts == 0 and compiler.errors == 0


def test_a_policy_change_dirties_the_ports_it_applies_to():
    from controller import scopes
    view = make_view()
    with_policy(view, P1, policy("own", bw(1, "egress")))
    with_policy(view, P1, policy("net", bw(1, "egress")), on_network=True)
    own = view.docs["qos_policies"]["own"]
    assert scopes.dirtied(view, "qos_policies", own, own) == {("port", P1)}
    net = view.docs["qos_policies"]["net"]
    on_n1 = {("port", pid) for pid, p in view.ports.items() if p["network_id"] == "n1"}
    assert scopes.dirtied(view, "qos_policies", net, net) == on_n1


def test_a_packet_between_two_metered_ports_passes_both_meters():
    view = make_view()
    with_policy(view, P1, policy("q1", bw(10000, "egress")))
    put(view, "qos_policies", policy("q2", bw(5000, "ingress")))
    put(view, "ports", {**view.ports[P2], "qos_policy_id": "q2"})
    sw = h1(view)
    p1, p2 = view.ports[P1], view.ports[P2]
    t = sw.send(p1, eth_dst=p2["mac_address"], eth_type=0x800, ipv4_dst="10.0.0.2")
    assert t.ports == [sw.ofport(p2)] and t.drops == []
    assert t.outputs[0].meters == (qos_meter_id(1, EGRESS), qos_meter_id(2, INGRESS))


def restored_by_ovs_save(flows):
    """What OVS 3.1's flow-preserving restart leaves on a bridge whose meters
    are gone: `ovs-ofctl replace-flows` (no bundle on an OpenFlow13 bridge)
    adds the saved flows table by table, highest priority first, and stops
    at the first one that names a meter (OFPMMFC_INVALID_METER)."""
    from controller.walker import table_number
    kept = []
    for f in sorted(flows, key=lambda f: (table_number(f.table), -f.priority)):
        if any(ins[0] == "meter" for ins in f.instructions):
            break
        kept.append(f)
    return kept


def test_after_a_restore_without_meters_metered_ports_still_forward_unmetered():
    """The meters live in the last tables, so everything a packet needs is
    restored before the restore stops at the first metered flow."""
    from controller.walker import Walker
    view = make_view()
    with_policy(view, P1, policy("q1", bw(10000, "egress"), bw(5000, "ingress"),
                                 {"type": "dscp_marking", "dscp_mark": 26}))
    sw = h1(view)
    p1, p2 = view.ports[P1], view.ports[P2]
    kept = restored_by_ovs_save(sw.flows)
    assert len(kept) < len(sw.flows)
    assert {f.table for f in sw.flows} - {f.table for f in kept} <= {"egress_meter",
                                                                     "ingress_meter"}
    sw.walker = Walker(kept)
    out = sw.send(p1, eth_dst=p2["mac_address"], eth_type=0x800, ipv4_dst="10.0.0.2",
                  ip_dscp=0)
    assert out.ports == [sw.ofport(p2)] and out.outputs[0].meters == ()
    assert int(out.outputs[0].packet["ip_dscp"]) == 26
    back = sw.send(p2, eth_dst=p1["mac_address"], eth_type=0x800, ipv4_dst="10.0.0.1")
    assert back.ports == [sw.ofport(p1)] and back.outputs[0].meters == ()


def test_a_meter_instruction_outside_a_metered_stage_is_a_problem():
    from controller import pipeline
    from controller.flow import meter
    assert pipeline.check("qos", "egress_meter", 100, (meter(0x100002),)) == []
    assert any("not a metered stage" in p
               for p in pipeline.check("qos", "pre_output", 200, (meter(0x100003),)))
    assert any("one instruction" in p
               for p in pipeline.check("qos", "egress_meter", 100,
                                       (meter(0x100002), goto("output"))))
    metered = [s.number for s in pipeline.PIPELINE if s.metered]
    assert metered and min(metered) > max(s.number for s in pipeline.PIPELINE if not s.metered)
