"""Issue 15 part 8 "Done when": `vmflow trace` on a real two-host cloud
explains an allowed and a dropped packet, and its verdict matches what
`ovs-appctl ofproto/trace` says for the same packet on the same bridge.

    h1 ── fabric ── h2
    n1 10.0.0.0/24 vlan 101: a .11 (h1), b .12 (h1), c .13 (h2)
    n2 10.0.2.0/24 vlan 102: d .21 (h1)

`vmflow trace` runs as the operator would run it: the CLI, as a
subprocess, with the cloud's config (its store, and the running
controller's status file for the port numbers). OVS's verdict is the
"Datapath actions:" line of ofproto/trace: drop, or outputs to datapath
ports (mapped back to OpenFlow ports with dpif/show) after VLAN pushes and
pops, or userspace() for the controller.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from harness import REPO, Cloud, Host, Vm, sh, wait_for

pytestmark = pytest.mark.mininet

CONVERGE = 15.0


@dataclass
class Topo:
    cloud: Cloud
    h1: Host
    h2: Host
    a: Vm
    b: Vm
    c: Vm
    d: Vm


@pytest.fixture(scope="module")
def topo(module_cloud) -> Topo:
    cloud = module_cloud
    h1, h2 = cloud.add_host("h1"), cloud.add_host("h2")
    n1 = cloud.add_network("n1", cidr="10.0.0.0/24", vlan=101)
    n2 = cloud.add_network("n2", cidr="10.0.2.0/24", vlan=102)
    t = Topo(cloud, h1, h2,
             a=cloud.add_vm(h1, n1, "a", ip="10.0.0.11"),
             b=cloud.add_vm(h1, n1, "b", ip="10.0.0.12"),
             c=cloud.add_vm(h2, n1, "c", ip="10.0.0.13"),
             d=cloud.add_vm(h1, n2, "d", ip="10.0.2.21"))
    h1.wait_connected()
    h2.wait_connected()
    t.a.wait_ping(t.c, CONVERGE)
    t.a.wait_ping(t.b, CONVERGE)
    cloud.wait_controller_synced()
    return t


# -- vmflow's side ---------------------------------------------------------------------

def vmflow(cloud: Cloud, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller.cli", *argv,
                           "--config", str(cloud.config_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def vmflow_trace(cloud: Cloud, host: Host, frm: str, flow: str, fmt: str = "json"):
    p = vmflow(cloud, "trace", "--host", host.name, "--from", frm, "--format", fmt, flow)
    assert p.returncode == 0, f"vmflow trace failed ({p.returncode}):\n{p.stderr}"
    return json.loads(p.stdout) if fmt == "json" else p.stdout


def vmflow_verdict(doc: dict):
    v = doc["verdict"]
    if v["dropped"]:
        return "drop"
    outs = sorted((o["port"], tuple(o["vlan"])) for o in v["outputs"])
    return (outs, bool(v["controller"]))


# -- OVS's side -----------------------------------------------------------------------

_OFCTL_NAMES = {"eth_src": "dl_src", "eth_dst": "dl_dst", "ipv4_src": "nw_src",
                "ipv4_dst": "nw_dst", "nw_ttl": "nw_ttl", "tcp_src": "tcp_src",
                "tcp_dst": "tcp_dst", "udp_src": "udp_src", "udp_dst": "udp_dst",
                "icmpv4_type": "icmp_type", "icmpv4_code": "icmp_code", "arp_op": "arp_op",
                "arp_spa": "arp_spa", "arp_tpa": "arp_tpa", "arp_sha": "arp_sha",
                "arp_tha": "arp_tha"}


def ofctl_flow(in_port: int, packet: dict) -> str:
    """The packet vmflow traced, in ofproto/trace's flow syntax."""
    eth_type = int(packet["eth_type"], 0)
    proto = {6: "tcp", 17: "udp", 1: "icmp"}.get(int(packet.get("ip_proto", "0")))
    parts = [f"in_port={in_port}", (proto or "ip") if eth_type == 0x800 else
             "arp" if eth_type == 0x806 else f"dl_type={eth_type:#x}"]
    for vid in packet.get("vlan", ()):
        parts.append(f"dl_vlan={vid}")
    for name, value in packet.items():
        if name in _OFCTL_NAMES:
            parts.append(f"{_OFCTL_NAMES[name]}={value}")
    return ",".join(parts)


def odp_ports(bridge: str) -> dict[int, int]:
    """Datapath port number -> OpenFlow port number, for one bridge."""
    out = sh(["ovs-appctl", "dpif/show"])
    ports, inside = {}, False
    for line in out.splitlines():
        if re.match(r"^  \S+:$", line):
            inside = line.strip() == f"{bridge}:"
            continue
        m = re.match(r"^    \S+ (\d+)/(\d+):", line)
        if inside and m:
            ports[int(m.group(2))] = int(m.group(1))
    return ports


def _split_actions(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def ovs_verdict(bridge: str, flow: str, vlans_in=()):
    """ofproto/trace's verdict in the same shape as vmflow_verdict, and its
    text; vlans_in: the VIDs the packet came in with, outermost first."""
    out = sh(["ovs-appctl", "ofproto/trace", bridge, flow])
    # One "Datapath actions:" line per pass: the first, then one per ct()
    # recirculation (conntrack answering trk|new, as vmflow trace's default).
    passes = re.findall(r"^Datapath actions: (.*)$", out, re.M)
    assert passes, out
    odp = odp_ports(bridge)
    outs, controller = [], False
    vlans = list(vlans_in)
    at_recirc = None        # the tags a recirculated packet carries
    for i, actions in enumerate(passes):
        if i and at_recirc is not None:
            vlans = list(at_recirc)
        for a in _split_actions(actions.strip()):
            if a.startswith("push_vlan("):
                vlans.insert(0, int(re.search(r"vid=(\d+)", a).group(1)))
            elif a == "pop_vlan":
                vlans.pop(0)
            elif a.startswith("recirc(") and at_recirc is None:
                at_recirc = list(vlans)
            elif "userspace(" in a and "controller(" in a:
                # userspace(...controller(...)), bare or inside sample(...,actions(...))
                # when the packet-in is metered by a controller(meter_id=N) action.
                controller = True
            elif a.isdigit():
                outs.append((odp[int(a)], tuple(vlans)))
            # meter(N), ct: not verdicts on their own
    if not outs and not controller:
        return "drop", out
    return (sorted(outs), controller), out


def check_same(topo: Topo, host: Host, frm: Vm | str, flow: str, expected=None):
    """Trace with vmflow and with OVS; both verdicts must agree (and be `expected`)."""
    cloud = topo.cloud
    ident = frm.port["id"] if isinstance(frm, Vm) else frm
    doc = vmflow_trace(cloud, host, ident, flow)
    ours = vmflow_verdict(doc)
    ovs_flow = ofctl_flow(doc["in_port"], doc["packet"])
    theirs, text = ovs_verdict(host.bridge, ovs_flow, doc["packet"].get("vlan", ()))
    assert ours == theirs, (f"vmflow: {ours}\nOVS ({ovs_flow}): {theirs}\n{text}\n"
                            f"vmflow steps: {json.dumps(doc['steps'], indent=1)}")
    if expected is not None:
        assert ours == expected, doc["verdict"]
    return doc


# -- the scenarios -------------------------------------------------------------------------

def test_allowed_unicast_on_the_same_host(topo):
    a, b = topo.a, topo.b
    doc = check_same(topo, topo.h1, a, f"tcp,nw_dst={b.ip},tp_dst=22",
                     ([(b.ofport, ())], False))
    assert doc["packet"]["eth_dst"] == b.mac and doc["packet"]["ipv4_src"] == a.ip


def test_allowed_unicast_to_another_host_is_tagged_on_the_uplink(topo):
    uplink = topo.h1.ofport(topo.h1.uplink)
    check_same(topo, topo.h1, topo.a, f"icmp,nw_dst={topo.c.ip}", ([(uplink, (101,))], False))


def test_in_from_the_uplink_on_the_receiving_host(topo):
    a, c = topo.a, topo.c
    flow = (f"udp,vlan=101,dl_src={a.mac},dl_dst={c.mac},nw_src={a.ip},nw_dst={c.ip},"
            "tp_dst=5000")
    check_same(topo, topo.h2, "physnet1", flow, ([(c.ofport, ())], False))


def test_a_broadcast_floods_its_network_only(topo):
    uplink = topo.h1.ofport(topo.h1.uplink)
    doc = check_same(topo, topo.h1, topo.a, "udp,nw_dst=10.0.0.255,tp_dst=9",
                     (sorted([(topo.b.ofport, ()), (uplink, (101,))]), False))
    # b's copy went through b's ingress_firewall, and the walk shows it.
    to_b = [o for o in doc["verdict"]["outputs"] if o["port"] == topo.b.ofport]
    assert "ingress_firewall" in to_b[0]["path"], to_b


def test_a_security_group_verdict_matches_ovs(topo):
    """A group admitting only tcp 22 from the network: 22 passes, 23 is
    dropped in ingress_rules, on vmflow's walk and on OVS's trace alike."""
    cloud = topo.cloud
    g = cloud.api.create("security_groups", name="ssh-only")
    cloud.api.create("security_group_rules", security_group_id=g["id"],
                     rule="in:allow 10.0.0.0/24 tcp 22")
    e = cloud.add_vm(topo.h1, topo.a.network, "e", ip="10.0.0.14", security_groups=[g["id"]])
    cloud.wait_controller_synced()
    # trace learns e's ofport from the status file, rewritten once a second
    wait_for(lambda: e.ifname in cloud.switch_status(topo.h1)["ports"], 5, 0.1,
             "e's interface in the controller's status")
    check_same(topo, topo.h1, topo.a, f"tcp,nw_dst={e.ip},tp_dst=22", ([(e.ofport, ())], False))
    doc = check_same(topo, topo.h1, topo.a, f"tcp,nw_dst={e.ip},tp_dst=23", "drop")
    assert doc["verdict"]["dropped_at"] == "ingress_rules"


def test_spoofed_source_is_dropped_at_port_security(topo):
    doc = check_same(topo, topo.h1, topo.a,
                     f"tcp,nw_src=10.0.0.99,nw_dst={topo.b.ip},tp_dst=22", "drop")
    assert doc["verdict"]["dropped_at"] == "port_security"
    # ... and the text explains it stage by stage, with the owner and the verdict.
    text = vmflow_trace(topo.cloud, topo.h1, topo.a.port["id"],
                        f"tcp,nw_src=10.0.0.99,nw_dst={topo.b.ip},tp_dst=22", fmt="text")
    assert f"from port a ({topo.a.port['id']})" in text
    assert ". classify, priority" in text and "wanted by l2" in text
    assert "# Baseline anti-spoofing" in text
    assert text.rstrip().splitlines()[-1].startswith("verdict: dropped in port_security")


def test_a_packet_to_another_network_is_dropped(topo):
    # d is in n2; a addressing d's MAC gets nowhere, on either side.
    doc = check_same(topo, topo.h1, topo.a,
                     f"ip,dl_dst={topo.d.mac},nw_dst={topo.d.ip}", "drop")
    assert doc["verdict"]["dropped_at"] == "l2_lookup"


def test_arp_requests_are_answered_by_the_proxy_or_in_the_switch(topo):
    # An address nobody has: only the controller can decide (it counts it).
    check_same(topo, topo.h1, topo.a, "arp,arp_tpa=10.0.0.99", ([], True))
    # A known one: the controller, or a reply made in the switch back out of
    # a's port; never another VM. Both sides must say the same.
    doc = check_same(topo, topo.h1, topo.a, f"arp,arp_tpa={topo.b.ip}")
    v = doc["verdict"]
    if v["outputs"]:
        assert [o["port"] for o in v["outputs"]] == [topo.a.ofport] and not v["controller"], v
    else:
        assert v["controller"], v


def test_explain_names_the_owner_of_every_installed_flow(topo):
    dump = sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", topo.h1.bridge])
    p = subprocess.run([sys.executable, "-m", "controller.cli", "explain",
                        "--config", str(topo.cloud.config_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=60, input=dump)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    flows = [l for l in dump.splitlines() if "cookie=" in l]
    assert len(lines) == 2 * len(flows) and flows
    owners = lines[1::2]
    assert all(re.match(r"    (pipeline|l2|arp|dhcp|metadata|secgroup|qos|dvr)\b.*\[table \d+: \w+\]$",
                        o) for o in owners), \
        "\n".join(o for o in owners if "not vmflow" in o or "[" not in o)
    # the firewall's flows name their security group rule, group or port
    assert any(o.startswith("    secgroup, security_group_rule ") for o in owners), owners
