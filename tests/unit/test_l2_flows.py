"""apps/l2.py: flows as pure values from a TopologyView, per the table docs."""
from __future__ import annotations

from l2_fixtures import make_view, pid, plugged_switch, port, put

from controller.app import SwitchView
from apps.l2 import L2App
from controller import codec
from controller.compiler import FlowCompiler, SwitchFlows
from topology.view import interface_name

APP = L2App()


def desired(view, sw):
    memo = SwitchFlows()
    FlowCompiler([APP]).refresh(view, sw, memo)
    return list(memo.desired.values())


def find(flows, table, **match):
    """Flows of a table whose match includes every given field (canonical values)."""
    want = {k: codec.canonical_value(k, v) for k, v in match.items()}
    return [f for f in flows if f.table == table and want.items() <= dict(f.match).items()]


def one(flows, table, **match):
    got = find(flows, table, **match)
    assert len(got) == 1, (table, match, got)
    return got[0]


def test_local_port_classified_with_port_key_and_network_metadata():
    view = make_view()
    sw = plugged_switch(view, 0xA1)
    ofport = sw.ofport(interface_name(view.ports[pid(1)]))
    f = one(desired(view, sw), "classify", in_port=ofport)
    assert f.instructions == (("apply", ("set_field", "reg6", 1)),
                              ("write_metadata", 1, 0xFFFFFFFFFFFFFFFF),
                              ("goto", "port_security"))


def test_vlan_uplink_translates_known_vlan_only():
    view = make_view()
    flows = desired(view, plugged_switch(view, 0xA1))
    f = one(flows, "classify", in_port=100, vlan_vid=0x1000 | 101)
    assert f.instructions[0] == ("apply", ("pop_vlan",))
    assert ("goto", "l2_lookup") in f.instructions
    # untagged on the uplink goes to the flat network; no other VLAN is known
    flat = one(flows, "classify", in_port=100, vlan_vid=0)
    assert ("write_metadata", 2, 0xFFFFFFFFFFFFFFFF) in flat.instructions
    assert len(find(flows, "classify", in_port=100)) == 2
    miss = [f for f in flows if f.table == "classify" and f.match == ()]
    assert [f.instructions for f in miss] == [()]   # any other VLAN: dropped


UPLINK = 0x80000000   # pipeline.OUT_KEY_UPLINK


def test_remote_port_goes_out_the_uplink_tagged_for_vlan():
    """l2_lookup decides "the uplink"; output pushes the tag and outputs."""
    view = make_view()
    flows = desired(view, plugged_switch(view, 0xA1))
    f = one(flows, "l2_lookup", metadata=1, eth_dst="fa:16:3e:00:00:03")
    assert f.instructions == (("apply", ("set_field", "reg7", UPLINK)), ("goto", "pre_output"))
    out = one(flows, "output", metadata=1, reg7=UPLINK)
    assert out.instructions == (("apply", ("push_vlan",), ("set_field", "vlan_vid", 0x1000 | 101),
                                 ("output", 100)),)


def test_remote_port_on_flat_network_goes_untagged():
    view = make_view()
    put(view, "ports", port(5, "n2", "h2"))
    flows = desired(view, plugged_switch(view, 0xA1))
    f = one(flows, "l2_lookup", metadata=2, eth_dst="fa:16:3e:00:00:05")
    assert f.instructions == (("apply", ("set_field", "reg7", UPLINK)), ("goto", "pre_output"))
    out = one(flows, "output", metadata=2, reg7=UPLINK)
    assert out.instructions == (("apply", ("output", 100)),)


def test_local_mac_goes_to_reg7_then_output():
    view = make_view()
    sw = plugged_switch(view, 0xA1)
    flows = desired(view, sw)
    f = one(flows, "l2_lookup", metadata=1, eth_dst="fa:16:3e:00:00:02")
    assert f.instructions == (("apply", ("set_field", "reg7", 2)), ("goto", "ingress_firewall"))
    out = one(flows, "output", reg7=2)
    assert out.instructions == (("apply", ("output", sw.ofport(interface_name(view.ports[pid(2)])))),)


def test_flood_is_a_copy_per_receiver_through_its_ingress_firewall():
    """No output in l2_lookup: each local receiver's copy passes its
    ingress_firewall, the uplink's goes last (the tag is pushed on it)."""
    view = make_view()
    sw = plugged_switch(view, 0xA1)
    f = one(desired(view, sw), "l2_lookup", metadata=1,
            eth_dst=("01:00:00:00:00:00", "01:00:00:00:00:00"))
    assert f.instructions == (("apply",
                               ("set_field", "reg7", 1), ("resubmit", "ingress_firewall"),
                               ("set_field", "reg7", 2), ("resubmit", "ingress_firewall"),
                               ("set_field", "reg7", UPLINK), ("resubmit", "pre_output")),)
    assert ("set_field", "reg7", 4) not in f.instructions[0]   # p4 is on n2


def test_port_security_allows_own_mac_and_ips_pairs_dhcp_and_probes():
    view = make_view()
    put(view, "ports", port(1, "n1", "h1", allowed_address_pairs=[
        {"ip_address": "10.9.0.0/24"}, {"ip_address": "10.8.0.1", "mac_address": "FA:16:3E:AA:AA:AA"}]))
    flows = find(desired(view, plugged_switch(view, 0xA1)), "port_security", reg6=1)
    allowed = {(dict(f.match).get("eth_src"), dict(f.match).get("ipv4_src"),
                dict(f.match).get("arp_spa")) for f in flows}
    assert allowed == {
        ("fa:16:3e:00:00:01", "10.0.0.1", None), ("fa:16:3e:00:00:01", None, "10.0.0.1"),
        ("fa:16:3e:00:00:01", ("10.9.0.0", "255.255.255.0"), None),
        ("fa:16:3e:00:00:01", None, ("10.9.0.0", "255.255.255.0")),
        ("fa:16:3e:aa:aa:aa", "10.8.0.1", None), ("fa:16:3e:aa:aa:aa", None, "10.8.0.1"),
        ("fa:16:3e:00:00:01", "0.0.0.0", None),      # DHCP from 0.0.0.0
        ("fa:16:3e:00:00:01", None, "0.0.0.0"),      # ARP probe
    }
    dhcp = one(flows, "port_security", ipv4_src="0.0.0.0")
    assert dict(dhcp.match)["udp_src"] == 68 and dict(dhcp.match)["udp_dst"] == 67
    for f in find(flows, "port_security", eth_type=0x806):
        assert dict(f.match)["arp_sha"] == dict(f.match)["eth_src"]
    assert all(f.instructions == (("goto", "services"),) for f in flows)


def test_port_security_disabled_passes_everything_from_the_port():
    view = make_view()
    put(view, "ports", port(2, "n1", "h1", port_security_enabled=False))
    flows = find(desired(view, plugged_switch(view, 0xA1)), "port_security", reg6=2)
    assert [f.match for f in flows] == [(("reg6", 2),)]


def test_unplugged_port_has_no_local_flows_but_still_floods_nowhere():
    view = make_view()
    sw = plugged_switch(view, 0xA1)
    del sw.ports_by_name[interface_name(view.ports[pid(2)])]
    flows = desired(view, sw)
    assert not find(flows, "port_security", reg6=2)
    assert not find(flows, "output", reg7=2)
    assert not find(flows, "l2_lookup", eth_dst="fa:16:3e:00:00:02")


def test_admin_down_port_and_dhcp_port_get_no_flows_anywhere():
    view = make_view()
    put(view, "ports", port(1, "n1", "h1", admin_state_up=False))
    put(view, "ports", port(9, "n1", None, device_owner="network:dhcp"))
    for dpid in (0xA1, 0xA2):
        flows = desired(view, plugged_switch(view, dpid))
        assert not find(flows, "l2_lookup", eth_dst="fa:16:3e:00:00:01")
        assert not find(flows, "l2_lookup", eth_dst="fa:16:3e:00:00:09")
        assert not find(flows, "port_security", reg6=1)


def test_unclaimed_switch_gets_only_the_drop_default():
    view = make_view()
    flows = desired(view, SwitchView(0xBEEF, None, {"tap00000001-aa": 1}))
    assert [(f.table, f.match, f.instructions) for f in flows] == [("classify", (), ())]


def test_default_chain_passes_the_empty_stages_and_drops_unknown_destinations():
    """The misses come from the pipeline's declaration, one per stage but the
    metered ones (reached by resubmit only, where a miss does nothing)."""
    from controller import pipeline
    view = make_view()
    flows = {f.table: f for f in desired(view, plugged_switch(view, 0xA1)) if f.priority == 0}
    assert set(flows) == {s.name for s in pipeline.PIPELINE if not s.metered}
    assert all(f.match == () for f in flows.values())
    assert flows["services"].instructions == (("goto", "egress_firewall"),)
    assert flows["egress_firewall"].instructions == (("goto", "routing"),)
    assert flows["routing"].instructions == (("goto", "l2_lookup"),)
    assert flows["ingress_firewall"].instructions == (("goto", "pre_output"),)
    assert flows["pre_output"].instructions == (("goto", "output"),)
    for table in ("classify", "port_security", "l2_lookup", "output"):
        assert flows[table].instructions == ()


def test_network_absent_from_a_host_gets_no_flows_there():
    view = make_view()
    flows = desired(view, plugged_switch(view, 0xA2))   # h2 has only p3 on n1
    assert not find(flows, "classify", in_port=100, vlan_vid=0)
    assert not find(flows, "l2_lookup", metadata=2)


def test_flows_are_identical_across_runs():
    a = sorted(desired(make_view(), plugged_switch(make_view(), 0xA1)), key=repr)
    b = sorted(desired(make_view(), plugged_switch(make_view(), 0xA1)), key=repr)
    assert a == b and a


def test_arp_requests_from_vms_fail_closed_in_services():
    """Below the arp app's per-port flows (100), l2 drops every ARP request
    that reaches services; other ARP (replies) passes the default."""
    flows = find(desired(make_view(), plugged_switch(make_view(), 0xA1)), "services")
    drop = [f for f in flows if f.priority != 0]
    assert [(dict(f.match), f.instructions) for f in drop] == [
        ({"eth_type": 0x0806, "arp_op": 1}, ())]
    assert 0 < drop[0].priority < 100
    # Only VM traffic reaches services: the uplink's classify flows skip it.
    uplink = find(desired(make_view(), plugged_switch(make_view(), 0xA1)), "classify", in_port=100)
    assert uplink and all(("goto", "l2_lookup") in f.instructions for f in uplink)
