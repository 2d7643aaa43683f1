"""apps/secgroup.py through the packet walker: which packets a port's
security groups admit, in both directions, whatever the flows look like.

    h1: p1 (10.0.0.1), p2 (10.0.0.2), p4 (n2); h2: p3 (10.0.0.3)
"""
from __future__ import annotations

import pytest
from behaviour import Switch, all_apps
from l2_fixtures import make_view, pid, plugged_switch, port, put

from apps.secgroup import SecGroupApp
from controller.compiler import FlowCompiler, SwitchFlows
from topology.secgroup_rules import normalise

KEYS = iter(range(100, 100000))
CLIENTS = "c11e0000-0000-4000-8000-000000000001"
MEMBERS = "3e3be000-0000-4000-8000-000000000002"
AG = "a9000000-0000-4000-8000-000000000003"


def apps():
    return all_apps() + [SecGroupApp()]


def sg(view, gid, *rules, stateful=True):
    put(view, "security_groups", {"id": gid, "_key": next(KEYS), "stateful": stateful})
    for text in rules:
        add(view, gid, text)


def add(view, gid, text, **fields):
    body = normalise({"rule": text, **fields} if isinstance(text, str) else text)
    rid = f"{gid}-r{next(KEYS)}"
    put(view, "security_group_rules", {**body, "id": rid, "_key": int(rid.rsplit("r", 1)[1]),
                                       "security_group_id": gid})
    return rid


def member(view, n, host, *groups, net="n1", **extra):
    put(view, "ports", port(n, net, host, security_groups=list(groups), **extra))
    return view.ports[pid(n)]


def switch(view, dpid=0xA1) -> Switch:
    return Switch(view, plugged_switch(view, dpid), apps())


def tcp(h, src, dst, dport, ct="new", **kw):
    return h.send(src, eth_dst=dst["mac_address"], ipv4_dst=dst["fixed_ips"][0]["ip_address"],
                  ip_proto=6, tcp_dst=dport, ct=ct, **kw)


@pytest.fixture
def view():
    v = make_view()
    sg(v, "open", "in:allow any", "out:allow any")
    for n, host in ((1, "h1"), (2, "h1"), (3, "h2")):
        member(v, n, host, "open")
    member(v, 4, "h1", "open", net="n2")
    return v


def test_port_lists_and_ranges_admit_what_they_list(view):
    sg(view, "web", "in:allow tcp 22,80", "in:allow tcp 8000-8080")
    a, b = view.ports[pid(1)], member(view, 2, "h1", "web")
    h = switch(view)
    for p in (22, 80, 8000, 8042, 8080):
        assert tcp(h, a, b, p).ports == [h.ofport(b)], p
    for p in (21, 81, 7999, 8081, 443):
        assert tcp(h, a, b, p).dropped_at == "ingress_rules", p
    assert not h.problems()


def test_icmp_type_and_code(view):
    sg(view, "ping", "in:allow icmp 8/0")
    a, b = view.ports[pid(1)], member(view, 2, "h1", "ping")
    h = switch(view)

    def icmp(t, c):
        return h.send(a, eth_dst=b["mac_address"], ipv4_dst="10.0.0.2", ip_proto=1,
                      icmpv4_type=t, icmpv4_code=c)
    assert icmp(8, 0).ports == [h.ofport(b)]
    assert icmp(8, 1).dropped and icmp(13, 0).dropped


def test_deny_at_a_smaller_priority_wins_and_a_tie_goes_to_deny(view):
    sg(view, "prio")
    add(view, "prio", "in:allow tcp 22", priority=50)
    add(view, "prio", "in:deny 10.0.0.1/32 tcp 22", priority=10)
    add(view, "prio", "in:allow tcp 80", priority=20)
    add(view, "prio", "in:deny tcp 80", priority=20)
    a, c, b = view.ports[pid(1)], view.ports[pid(3)], member(view, 2, "h1", "prio")
    h = switch(view)
    assert tcp(h, a, b, 22).dropped
    assert tcp(h, a, b, 80).dropped
    # from h2, p3's packets reach b after the uplink: same verdict on b's host
    t = h.receive(vlan=101, eth_src=c["mac_address"], eth_dst=b["mac_address"],
                  ipv4_src="10.0.0.3", ipv4_dst="10.0.0.2", ip_proto=6, tcp_dst=22)
    assert t.ports == [h.ofport(b)]


def test_an_allow_at_a_smaller_priority_beats_a_deny_all(view):
    sg(view, "allow-first", {"direction": "ingress", "ethertype": "IPv4", "action": "deny",
                             "priority": 10})
    add(view, "allow-first", "in:allow 10.0.0.1/32 tcp 5001", priority=5)
    a, b = view.ports[pid(1)], member(view, 2, "h1", "allow-first")
    h = switch(view)
    assert tcp(h, a, b, 5001).ports == [h.ofport(b)]
    assert tcp(h, a, b, 5002).dropped


def test_established_passes_while_its_rule_applies_and_is_cut_without_it(view):
    sg(view, "live")
    rid = add(view, "live", "in:allow tcp 5001")
    a, b = view.ports[pid(1)], member(view, 2, "h1", "live")
    key = view.docs["security_group_rules"][rid]["_key"]
    h = switch(view)
    # The sender's side admitted it by "open"'s egress rule; b's by rid.
    out_key = next(r["_key"] for r in view.rules_by_group["open"].values()
                   if r["direction"] == "egress")
    t = h.walker.walk({"in_port": h.ofport(a), "eth_src": a["mac_address"],
                       "eth_dst": b["mac_address"], "ipv4_src": "10.0.0.1",
                       "ipv4_dst": "10.0.0.2", "ip_proto": 6, "tcp_dst": 5001,
                       "ct_mark": out_key}, ct="est")
    assert t.dropped_at == "ingress_rules"   # b's zone: marked by out_key, not b's rule
    t = h.walker.walk({"in_port": h.uplink(), "vlan": 101, "eth_src": "fa:16:3e:00:00:03",
                       "eth_dst": b["mac_address"], "ipv4_src": "10.0.0.3",
                       "ipv4_dst": "10.0.0.2", "ip_proto": 6, "tcp_dst": 5001,
                       "ct_mark": key}, ct="est")
    assert t.ports == [h.ofport(b)]
    # the rule removed: the same established packet is cut
    from topology.store.base import Change
    view.apply(Change(view.revision + 1, "security_group_rules", rid, "delete", None))
    h = switch(view)
    t = h.walker.walk({"in_port": h.uplink(), "vlan": 101, "eth_src": "fa:16:3e:00:00:03",
                       "eth_dst": b["mac_address"], "ipv4_src": "10.0.0.3",
                       "ipv4_dst": "10.0.0.2", "ip_proto": 6, "tcp_dst": 5001,
                       "ct_mark": key}, ct="est")
    assert t.dropped_at == "ingress_rules"


def test_invalid_is_dropped_and_related_passes(view):
    sg(view, "closed")
    a, b = view.ports[pid(1)], member(view, 2, "h1", "closed")
    h = switch(view)
    assert tcp(h, a, b, 22, ct="inv").dropped_at == "egress_rules"
    assert tcp(h, a, b, 22, ct="rel").ports == [h.ofport(b)]


def test_stateful_replies_need_no_inbound_rule(view):
    sg(view, "out-only", "out:allow any")
    a = member(view, 1, "h1", "out-only")
    c = view.ports[pid(3)]                     # on h2: its packets come by the uplink
    h = switch(view)
    out_key = next(iter(view.rules_by_group["out-only"].values()))["_key"]
    assert tcp(h, a, c, 5001).ports == [h.uplink()]           # a's connection out

    def from_c(**kw):
        return h.receive(vlan=101, eth_src=c["mac_address"], eth_dst=a["mac_address"],
                         ipv4_src="10.0.0.3", ipv4_dst="10.0.0.1", ip_proto=6, **kw)
    # the reply is established in a's zone, marked by a's egress rule
    assert from_c(tcp_src=5001, tcp_dst=40000, ct_mark=out_key, ct="est,rpl").ports == \
        [h.ofport(a)]
    # an unsolicited connection in is refused
    assert from_c(tcp_dst=5001).dropped_at == "ingress_rules"


def test_remote_group_admits_members_only_with_conjunctions(view):
    sg(view, CLIENTS, "out:allow any")
    sg(view, "srv", {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                     "ports": "5001,6000-6001", "remote_group_id": CLIENTS})
    a = member(view, 1, "h1", CLIENTS)
    b = member(view, 2, "h1", "srv")
    c = member(view, 3, "h2", "open")
    h = switch(view)
    assert tcp(h, a, b, 5001).ports == [h.ofport(b)]
    assert tcp(h, a, b, 6001).ports == [h.ofport(b)]
    assert tcp(h, a, b, 6002).dropped
    t = h.receive(vlan=101, eth_src=c["mac_address"], eth_dst=b["mac_address"],
                  ipv4_src="10.0.0.3", ipv4_dst="10.0.0.2", ip_proto=6, tcp_dst=5001)
    assert t.dropped_at == "ingress_rules"
    # c joins "clients": admitted
    member(view, 3, "h2", CLIENTS)
    h = switch(view)
    t = h.receive(vlan=101, eth_src=c["mac_address"], eth_dst=b["mac_address"],
                  ipv4_src="10.0.0.3", ipv4_dst="10.0.0.2", ip_proto=6, tcp_dst=5001)
    assert t.ports == [h.ofport(b)]
    assert not h.problems()


def test_address_group_as_remote(view):
    put(view, "address_groups", {"id": AG, "_key": 9, "addresses": ["10.0.0.3/32"]})
    sg(view, "srv", {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                     "ports": "22", "remote_address_group_id": AG})
    a, b = view.ports[pid(1)], member(view, 2, "h1", "srv")
    h = switch(view)
    assert tcp(h, a, b, 22).dropped
    t = h.receive(vlan=101, eth_src="fa:16:3e:00:00:03", eth_dst=b["mac_address"],
                  ipv4_src="10.0.0.3", ipv4_dst="10.0.0.2", ip_proto=6, tcp_dst=22)
    assert t.ports == [h.ofport(b)]


def test_no_groups_means_no_ipv4_in_or_out_but_services_still_answer(view):
    a = member(view, 1, "h1")                 # port security on, no groups
    b = view.ports[pid(2)]
    h = switch(view)
    assert tcp(h, a, b, 22).dropped_at == "egress_rules"
    assert tcp(h, b, a, 22).dropped_at == "ingress_rules"
    dhcp = h.send(a, eth_dst="ff:ff:ff:ff:ff:ff", ipv4_src="0.0.0.0",
                  ipv4_dst="255.255.255.255", ip_proto=17, udp_src=68, udp_dst=67)
    assert dhcp.controller and not dhcp.outputs
    meta = h.send(a, eth_dst="fa:16:3e:ff:ff:ff", ipv4_dst="169.254.169.254", ip_proto=6,
                  tcp_dst=80)
    assert meta.controller
    arp = h.send(a, eth_type=0x0806, arp_op=1, eth_dst="ff:ff:ff:ff:ff:ff",
                 arp_sha=a["mac_address"], arp_spa="10.0.0.1", arp_tpa="10.0.0.2")
    assert not arp.dropped


def test_port_security_off_means_no_firewall(view):
    a = member(view, 1, "h1", port_security_enabled=False)
    b = member(view, 2, "h1", port_security_enabled=False)
    h = switch(view)
    assert tcp(h, a, b, 23).ports == [h.ofport(b)]
    assert not any(step.table.endswith("_rules") for step in tcp(h, a, b, 23).steps)


def test_stateless_group_checks_every_packet_without_conntrack(view):
    sg(view, "stateless", "in:allow tcp 22", "out:allow any", stateful=False)
    a, b = view.ports[pid(1)], member(view, 2, "h1", "stateless")
    h = switch(view)
    t = tcp(h, a, b, 22)
    assert t.ports == [h.ofport(b)]
    assert {c.zone for c in t.ct} == {1}        # only the sender's (stateful) zone
    assert tcp(h, a, b, 23).dropped_at == "ingress_rules"


def test_a_broadcast_reaches_only_receivers_that_admit_it(view):
    sg(view, "udp", "in:allow udp 9999")
    sg(view, "closed")
    a = view.ports[pid(1)]
    b = member(view, 2, "h1", "udp")
    put(view, "ports", port(5, "n1", "h1", security_groups=["closed"]))
    h = switch(view)
    t = h.send(a, eth_dst="ff:ff:ff:ff:ff:ff", ipv4_dst="10.0.0.255", ip_proto=17,
               udp_dst=9999)
    assert h.ofport(b) in t.ports
    assert h.ofport(view.ports[pid(5)]) not in t.ports
    assert h.uplink() in t.ports             # the remote receivers' own hosts decide


def test_flows_grow_as_rules_plus_members_not_their_product():
    view = make_view()
    sg(view, MEMBERS)
    for n in range(10, 110):                  # 100 members on h2
        put(view, "ports", port(n, "n1", "h2", security_groups=[MEMBERS]))
    sg(view, "srv")
    for p in range(20):
        add(view, "srv", {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                          "ports": str(1000 + p), "remote_group_id": MEMBERS})
    put(view, "ports", port(1, "n1", "h1", security_groups=["srv"]))
    compiler = FlowCompiler([SecGroupApp()])
    memo = SwitchFlows()
    compiler.refresh(view, plugged_switch(view, 0xA1), memo)
    rule_flows = [f for f in memo.desired.values() if f.table == "ingress_rules"]
    # 20 rules x 100 members would be 2,000; here: clause flows per rule (20),
    # one conj flow per rule (20), one address flow per member (100), the
    # established flows (20) and the state verdicts
    assert len(rule_flows) < 200, len(rule_flows)
    assert compiler.violations == 0 and compiler.errors == 0
