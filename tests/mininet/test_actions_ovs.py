"""Every action and instruction kind on a real Open vSwitch: install, read back,
diff, and an audit that sends nothing.

A bridge (netdev datapath, OpenFlow13, fail_mode=secure) connects to
flow_driver.py, which runs vmflow's own os-ken app, OFChannel, reconciler
and codec. It installs FLOWS (each kind, in the shapes the stateful
firewall, DVR and NAT will use, on matches with the fields they need), reads
them back with flow-stats, diffs them against the desired set, audits with
the same reconciler and syncs once more with a fresh one (a restart). OVS
normalises what it is given; if codec.canonical() did not predict that
normalisation, the audit would "repair" the flow forever. Each kind is
checked on its own below, and also in ovs-ofctl's own words, so the
switch really holds the action meant and not something that merely
decodes the same.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller import codec, pipeline
from controller.flow import (Flow, apply, conjunction, ct, ct_clear, ct_state, dec_ttl, flow,
                             goto, group, move, nat, output, pop_vlan, push_vlan, resubmit,
                             set_field, to_controller, write_metadata)
from harness import free_port  # tests/mininet is on sys.path (tests/conftest.py)

pytestmark = pytest.mark.mininet
OFCTL = ["ovs-ofctl", "-O", "OpenFlow13"]
DRIVER = Path(__file__).resolve().parent / "flow_driver.py"
APP = 0x7A   # an app id no real app uses, in vmflow's cookie space
GROUP_ID = 4
T = pipeline.table_id
IP = {"eth_type": 0x800}
TCP = {"eth_type": 0x800, "ip_proto": 6}
UDP = {"eth_type": 0x800, "ip_proto": 17}


def f(table, priority, match, *instructions) -> Flow:
    return flow(APP, table, priority, match, *instructions)


# kind -> (flows, strings ovs-ofctl dump-flows must show for them)
KINDS: dict[str, tuple[list[Flow], list[str]]] = {
    "output": ([
        f("output", 100, {"reg7": 1}, apply(output(1))),
        f("output", 101, {"reg7": 2}, apply(output("in_port"))),
        f("output", 102, {"reg7": 3}, apply(output("controller"))),
    ], ["reg7=0x1 actions=output:1", "actions=IN_PORT", "actions=CONTROLLER:65535"]),
    "set_field": ([
        f("classify", 100, {"in_port": 1}, apply(set_field("reg6", 7), set_field("reg15", 1)),
          write_metadata(5), goto("port_security")),
        f("classify", 101, {"in_port": 2}, apply(set_field("reg5", (0x30, 0xF0)))),
        f("routing", 100, {**IP, "eth_dst": "fa:16:3e:00:00:aa"},
          apply(set_field("eth_src", "FA:16:3E:00:00:01"), set_field("eth_dst", "fa:16:3e:00:00:02"),
                set_field("ipv4_src", "192.0.2.1"), set_field("ipv4_dst", "10.0.0.2"),
                set_field("ip_dscp", 46))),
        f("routing", 101, {**TCP, "tcp_dst": 80}, apply(set_field("tcp_dst", 8080))),
        f("routing", 102, {**UDP, "udp_dst": 53}, apply(set_field("udp_src", 5353))),
        f("output", 110, {"reg7": 10},
          apply(set_field("tunnel_id", 5000), set_field("tun_ipv4_dst", "192.0.2.7"),
                set_field("eth_dst", ("02:00:00:00:00:00", "02:00:00:00:00:00")),
                set_field("metadata", (0x10, 0xFF)), output(2))),
    ], ["set_field:0x7->reg6", "set_field:0x30/0xf0->reg5", "set_field:fa:16:3e:00:00:01->eth_src",
        "set_field:192.0.2.1->ip_src", "set_field:46->ip_dscp", "set_field:8080->tcp_dst",
        "set_field:0x1388->tun_id", "set_field:192.0.2.7->tun_dst"]),
    "push_vlan": ([
        f("output", 120, {"reg7": 20},
          apply(push_vlan(), set_field("vlan_vid", 0x1000 | 101), output(2))),
    ], ["push_vlan:0x8100,set_field:4197->vlan_vid,output:2"]),
    "pop_vlan": ([
        f("classify", 110, {"in_port": 2, "vlan_vid": 0x1000 | 101},
          apply(pop_vlan()), write_metadata(2), goto("l2_lookup")),
    ], ["dl_vlan=101 actions=pop_vlan"]),
    "dec_ttl": ([
        f("routing", 110, {**IP, "ipv4_dst": "10.1.0.0/16"},
          apply(dec_ttl(), set_field("eth_src", "fa:16:3e:00:00:01")), goto("l2_lookup")),
    ], ["nw_dst=10.1.0.0/16 actions=dec_ttl"]),
    "resubmit": ([
        f("l2_lookup", 100, {"metadata": 3, "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
          apply(set_field("reg7", 1), resubmit("ingress_firewall"),
                set_field("reg7", 2), resubmit("ingress_firewall"))),
    ], [f"resubmit(,{T('ingress_firewall')})"]),
    "move": ([
        f("routing", 120, IP, apply(move("eth_src", 0, "eth_dst", 0, 48),
                                    move("reg6", 0, "reg7", 16, 16))),
    ], ["move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]", "move:NXM_NX_REG6[0..15]->NXM_NX_REG7[16..31]"]),
    "conjunction": ([
        # A conjunctive match: source in a remote group (clause 1) and
        # destination port in a list (clause 2), then the rule on conj_id.
        f("egress_firewall", 200, {**IP, "reg6": 1, "ipv4_dst": "10.0.0.5"},
          apply(conjunction(7, 1, 2))),
        f("egress_firewall", 200, {**IP, "reg6": 1, "ipv4_dst": "10.0.0.6"},
          apply(conjunction(7, 1, 2), conjunction(8, 1, 3))),
        f("egress_firewall", 200, {**TCP, "tcp_dst": (0x400, 0xFC00)},
          apply(conjunction(7, 2, 2), conjunction(8, 3, 3))),
        f("egress_firewall", 200, {**TCP, "tcp_dst": 22}, apply(conjunction(8, 2, 3))),
        f("egress_firewall", 201, {**IP, "conj_id": 7}, goto("routing")),
        f("egress_firewall", 201, {**IP, "conj_id": 8}, goto("routing")),
    ], ["actions=conjunction(7,1/2)", "conjunction(7,2/2),conjunction(8,3/3)", "conj_id=7"]),
    "ct": ([
        # Send through conntrack in a zone from the sender's register, look again.
        f("egress_firewall", 100, {**IP, "ct_state": ct_state("-trk")},
          apply(ct(zone="reg5", table="egress_firewall"))),
        f("egress_firewall", 101, {**IP, "ct_state": ct_state("-trk"), "ipv4_src": "10.2.0.0/16"},
          apply(ct(zone=5, table="routing"))),
        f("egress_firewall", 110, {**IP, "ct_state": ct_state("+trk+inv")}),
        f("egress_firewall", 111, {**IP, "ct_state": ct_state("+trk+est-rel-inv"), "ct_zone": 5},
          goto("routing")),
        f("egress_firewall", 112, {**IP, "ct_state": ct_state("+trk+rel+rpl"),
                                   "ct_mark": (0x1, 0x1)}, goto("routing")),
        f("egress_firewall", 120, {**TCP, "ct_state": ct_state("+trk+new"), "reg5": 9,
                                   "ipv4_src": ("10.0.0.0", "255.255.255.0"),
                                   "tcp_dst": (0x400, 0xFC00)},
          apply(ct(commit=True, zone="reg5")), goto("routing")),
        f("egress_firewall", 121, {**UDP, "ct_state": ct_state("+trk+new"), "udp_dst": 53,
                                   "ip_dscp": 46},
          apply(ct(commit=True, zone=9, exec=[set_field("ct_mark", 1),
                                              set_field("ct_label", 1 << 100)])),
          goto("routing")),
        f("egress_firewall", 122, {**IP, "ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0,
                                   "ct_state": ct_state("+trk+new"),
                                   "ct_label": (1 << 127, 1 << 127)},
          apply(ct(commit=True, zone=9, exec=[set_field("ct_mark", (0x2, 0x2)),
                                              set_field("ct_label", (1 << 127, 1 << 127))]))),
    ], ["ct(table=20,zone=NXM_NX_REG5[0..15])", "ct(commit,zone=NXM_NX_REG5[0..15])",
        "ct(table=30,zone=5)", "ct_state=+inv+trk", "ct(commit,zone=9,exec(set_field:0x1->ct_mark",
        "set_field:0x2/0x2->ct_mark"]),
    "ct-nat": ([
        f("routing", 200, {**IP, "ct_state": ct_state("-trk")},
          apply(ct(zone=3, nat=nat(), table="routing"))),
        f("routing", 201, {**IP, "ct_state": ct_state("+trk+new"), "ipv4_src": "10.0.0.0/24"},
          apply(ct(commit=True, zone=3, nat=nat("src", "192.0.2.1", "192.0.2.9", 1024, 65535))),
          goto("l2_lookup")),
        f("routing", 202, {**IP, "ct_state": ct_state("+trk+new"), "ipv4_dst": "192.0.2.50"},
          apply(ct(commit=True, zone=3, nat=nat("dst", "10.0.0.5"),
                   exec=[set_field("ct_mark", 3)])), goto("l2_lookup")),
        f("routing", 203, {**TCP, "ct_state": ct_state("+trk+new"), "ipv4_dst": "192.0.2.51",
                           "tcp_dst": 2222},
          apply(ct(commit=True, zone="reg4", nat=nat("dst", "10.0.0.6", 0, 22),
                   table="l2_lookup"))),
    ], ["ct(table=30,zone=3,nat)", "nat(src=192.0.2.1-192.0.2.9:1024-65535)",
        "nat(dst=10.0.0.5),exec(set_field:0x3->ct_mark)", "nat(dst=10.0.0.6:22)"]),
    "ct-edges": ([
        # Shapes OVS might have rewritten: an address range of one, a port
        # range of one, a port without a range, zone 0, and everything at once.
        f("routing", 220, {**TCP, "ct_state": ct_state("+trk+new"), "ipv4_dst": "192.0.2.60"},
          apply(ct(commit=True, zone=0, nat=nat("dst", "10.0.0.7", "10.0.0.7", 80, 80)))),
        f("routing", 221, {**TCP, "ct_state": ct_state("+trk+new"), "ipv4_dst": "192.0.2.61"},
          apply(ct(commit=True, zone=1, nat=nat("src", "192.0.2.1", 0, 5000)))),
        f("routing", 222, {**TCP, "ct_state": ct_state("+trk+new"), "ipv4_dst": "192.0.2.62"},
          apply(ct(commit=True, zone="reg3", table="l2_lookup",
                   nat=nat("src", "192.0.2.1", "192.0.2.2", 1, 2),
                   exec=[set_field("ct_label", (5, 0xFF)), set_field("ct_mark", 0)]))),
        f("output", 140, {"reg7": 40}, apply(push_vlan(), set_field("vlan_vid", 0x1000 | 7),
                                             output(1), pop_vlan(), output(2))),
    ], ["ct(commit,nat(dst=10.0.0.7:80))", "nat(src=192.0.2.1:5000)",
        "nat(src=192.0.2.1-192.0.2.2:1-2),exec(set_field:0x5/0xff->ct_label,set_field:0->ct_mark)"]),
    "ct_clear": ([
        f("routing", 210, {**IP, "ipv4_dst": "10.9.0.0/16"}, apply(ct_clear()), goto("l2_lookup")),
    ], ["actions=ct_clear"]),
    "group": ([
        f("output", 130, {"reg7": 30}, apply(group(GROUP_ID))),
    ], [f"actions=group:{GROUP_ID}"]),
    "meter": ([
        f("services", 100, {"reg6": 1, "eth_type": 0x806}, *to_controller(1)),
    ], ["actions=controller(meter_id=1)"]),
    "instructions": ([
        # An empty apply-actions is not reported back: canonical() drops it.
        f("port_security", 100, {"reg6": 1}, apply(), write_metadata(0x1F, 0x0F),
          goto("services")),
        f("port_security", 0, {}),
    ], ["write_metadata:0xf/0xf,goto_table:10", "priority=0 actions=drop"]),
    "match-fields": ([
        f("ingress_firewall", 100, {f"reg{i}": i + 1 for i in range(16)}, goto("output")),
        f("ingress_firewall", 101, {**UDP, "udp_src": (0x1000, 0xF000), "ipv4_src": "0.0.0.0/0"},
          goto("output")),
        f("ingress_firewall", 102, {**IP, "ct_state": ct_state("+trk"), "ct_zone": 3,
                                    "ct_mark": 5, "ct_label": 1 << 64}, goto("output")),
    ], ["reg15=0x10", "udp,tp_src=0x1000/0xf000",
        "ct_state=+trk,ct_zone=3,ct_mark=0x5,ct_label=0x10000000000000000,ip"]),
}
FLOWS = [fl for flows, _texts in KINDS.values() for fl in flows]


class Bridge:
    def __init__(self, tmp: Path):
        self.run = f"{random.randrange(16**5):05x}"
        self.name = f"act{self.run}"
        self.dpid = 0xAC7000000000 | int(self.run, 16)
        self.ports = [f"act{self.run}p{n}" for n in (1, 2)]
        self.tmp = tmp
        self.port = free_port()

    def create(self) -> None:
        sh("ovs-vsctl", "add-br", self.name, "--", "set", "bridge", self.name,
           "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure",
           f"other-config:datapath-id={self.dpid:016x}")
        for p in self.ports:
            sh("ovs-vsctl", "add-port", self.name, p, "--", "set", "interface", p, "type=internal")

    def add_group(self) -> None:
        # Groups are not the reconciler's: the group a flow uses must exist
        # first. (Set the controller before: OVS dropped a group added
        # before set-controller here.)
        sh(*OFCTL, "add-group", self.name, f"group_id={GROUP_ID},type=all,bucket=output:1")
        assert f"group_id={GROUP_ID}," in sh(*OFCTL, "dump-groups", self.name)

    def delete(self) -> None:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", self.name], check=False)

    def dump(self) -> str:
        return sh(*OFCTL, "dump-flows", self.name, "--no-stats",
                  f"cookie={pipeline.COOKIE_SPACE:#x}/{pipeline.COOKIE_SPACE_MASK:#x}")


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def installed(mininet_ready, tmp_path_factory):
    """Run the driver against a fresh bridge once; every test reads its result."""
    tmp = tmp_path_factory.mktemp("actions")
    br = Bridge(tmp)
    flows_path, result_path = tmp / "flows.py", tmp / "result.json"
    flows_path.write_text(repr([(fl.table, fl.priority, fl.match, fl.instructions, fl.cookie)
                                for fl in FLOWS]))
    log = open(tmp / "driver.log", "w")
    proc = None
    try:
        br.create()
        sh("ovs-vsctl", "set-controller", br.name, f"tcp:127.0.0.1:{br.port}")
        br.add_group()
        proc = subprocess.Popen([sys.executable, str(DRIVER), str(br.port), hex(br.dpid),
                                 str(flows_path), str(result_path)],
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline and not result_path.exists() and proc.poll() is None:
            time.sleep(0.1)
        if not result_path.exists():
            pytest.fail(f"driver gave no result:\n{(tmp / 'driver.log').read_text()[-3000:]}")
        result = json.loads(result_path.read_text())
        assert result["error"] is None, "\n".join(result.get("refused", [])) + result["error"]
        yield result, br.dump()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        br.delete()


def test_switch_holds_exactly_the_desired_flows(installed):
    result, _dump = installed
    assert result["differences"] == [], "\n".join(
        f"{d['op']}:\n  desired {d['desired']}\n  read    {d['read']}" for d in result["differences"])
    assert result["read_flows"] == len(FLOWS)
    # every flow and the one meter went out in the first sync
    assert result["first_stats"]["flow_mods"] == len(FLOWS)
    assert result["first_stats"]["meter_mods"] == 1


def test_audit_and_restart_send_nothing(installed):
    result, _dump = installed
    assert (result["audit_sent"], result["audit_flow_mods"], result["audit_meter_mods"]) == (0, 0, 0)
    assert result["audit_repairs"] == 0
    assert result["restart_sent"] == 0


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kind_reads_back_canonical_and_as_ovs_prints_it(installed, kind):
    result, dump = installed
    flows, texts = KINDS[kind]
    for fl in flows:
        c = codec.canonical(fl)
        assert result["read_back"].get(repr(c.key)) == repr(c.instructions), fl
    for text in texts:
        assert text in dump, f"{text!r} not in:\n{dump}"
