"""The harness itself: it builds what it says, and leaves nothing behind.

These run without vmflow (host bridges are not connected; flows are added by
hand), so a harness bug is told apart from a controller bug.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from controller.pipeline import COOKIE_APP_SHIFT, COOKIE_SPACE, table_id
from harness import (OFCTL, REGISTRY, Cloud, Network, Vm, random_mac, sh, sweep_stale,
                     wait_for)

pytestmark = pytest.mark.mininet


def _ours(prefix: str) -> list[str]:
    bridges = [b for b in sh("ovs-vsctl list-br").split() if b.startswith(prefix + "-")]
    links = [l.split(":")[1].strip().split("@")[0] for l in sh("ip -o link show").splitlines()
             if l.split(":")[1].strip().startswith(prefix + "-")]
    return sorted(set(bridges + links))  # a netdev bridge is also a tap device


@pytest.fixture
def bare(mininet_ready, tmp_path):
    c = Cloud(tmp_path)
    c._add_fabric()
    try:
        yield c
    finally:
        c.close()


def _vm(cloud, host, name, ip):
    net = Network(cloud, {"id": "n", "name": "n"},
                  {"id": "s", "cidr": "10.99.0.0/24", "gateway_ip": None})
    vm = Vm(cloud, name, host, net, None, f"tap{os.urandom(6).hex()[:11]}", random_mac(), ip,
            24, None)
    cloud.vms.append(vm)
    return cloud.plug(vm)


def test_vlan_trunk_through_fabric_and_teardown(bare):
    cloud = bare
    h1 = cloud.add_host("h1", register=False, connect=False)
    h2 = cloud.add_host("h2", register=False, connect=False)
    a, b = _vm(cloud, h1, "a", "10.99.0.1"), _vm(cloud, h2, "b", "10.99.0.2")
    # What the controller would do: VM port <-> uplink with VLAN 42 pushed/popped.
    for h, vm in ((h1, a), (h2, b)):
        up, tap = h.ofport(h.uplink), vm.ofport
        assert up and tap
        sh(OFCTL + ["add-flow", h.bridge, f"in_port={tap},actions=push_vlan:0x8100,"
                    f"set_field:{0x1000 | 42}->vlan_vid,output:{up}"])
        sh(OFCTL + ["add-flow", h.bridge, f"in_port={up},dl_vlan=42,actions=pop_vlan,output:{tap}"])
    # The NIC looks as promised.
    link = a.run(["ip", "-o", "link", "show", "eth0"]).stdout
    assert a.mac in link
    assert "10.99.0.1/24" in a.run(["ip", "-o", "addr", "show", "eth0"]).stdout
    assert "tx-checksumming: off" in a.run(["ethtool", "-k", "eth0"]).stdout
    with cloud.capture_fabric(h2, "icmp") as cap:
        assert a.ping(b, count=2)
    assert cap.vlans() == {42}
    assert len([l for l in cap.lines if "ICMP echo" in l]) == 4
    b.tcp_server(5001)
    assert a.tcp_check(b, 5001, size=300_000)
    prefix = cloud.prefix
    assert len(_ours(prefix)) >= 3
    cloud.close()
    assert _ours(prefix) == []
    assert not (REGISTRY / prefix).exists()
    for vm in (a, b):
        assert sh(["ip", "link", "show", vm.ifname], check=False) == ""


def test_sweep_removes_only_dead_runs(mininet_ready):
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive_pid = os.getpid()
    made = {}
    for tag, pid in (("dead", dead.pid), ("live", alive_pid)):
        prefix = "vmf%04x" % (int.from_bytes(os.urandom(2), "big"))
        br = f"{prefix}-b1"
        sh(["ovs-vsctl", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
            f"external_ids:vmflow-harness={prefix}:{pid}"])
        sh(["ip", "link", "add", f"{prefix}-u1", "type", "veth", "peer", "name", f"{prefix}-f1"])
        REGISTRY.mkdir(parents=True, exist_ok=True)
        (REGISTRY / prefix).write_text(json.dumps({"pid": pid, "children": []}))
        made[tag] = prefix
    try:
        sweep_stale()
        assert _ours(made["dead"]) == []
        assert not (REGISTRY / made["dead"]).exists()
        assert _ours(made["live"]) == sorted(
            [f"{made['live']}-b1", f"{made['live']}-u1", f"{made['live']}-f1"])
    finally:
        for prefix in made.values():
            sh(["ovs-vsctl", "--if-exists", "del-br", f"{prefix}-b1"], check=False)
            sh(["ip", "link", "del", f"{prefix}-u1"], check=False)
            (REGISTRY / prefix).unlink(missing_ok=True)


def test_wait_for_reports_timeout():
    with pytest.raises(AssertionError, match="timed out after 0.2s waiting for nothing"):
        wait_for(lambda: False, 0.2, 0.05, "nothing")
    assert wait_for(lambda: 7, 1) == 7


def test_flow_monitor_reports_changes_as_they_happen(bare):
    cloud = bare
    h = cloud.add_host("h1", register=False, connect=False)
    ours, lookup = f"cookie={COOKIE_SPACE | 1 << COOKIE_APP_SHIFT:#x}", table_id("l2_lookup")
    sh(OFCTL + ["add-flow", h.bridge, f"{ours},table={lookup},priority=5,"
                "dl_dst=02:00:00:00:00:01,actions=drop"])
    with cloud.flow_monitor(h) as mon:
        assert mon.changes() == []      # the initial table is not a change
        sh(OFCTL + ["--bundle", "add-flow", h.bridge, f"{ours},table={lookup},"
                    "priority=5,dl_dst=02:00:00:00:00:02,actions=drop"])
        sh(OFCTL + ["add-flow", h.bridge, f"cookie=0x99,table={lookup},priority=5,"
                    "dl_dst=02:00:00:00:00:03,actions=drop"])
        wait_for(lambda: len(mon.changes(ours=False)) == 2, 5, 0.05, "two monitor events")
        ours = mon.changes()
        assert len(ours) == 1 and "event=ADDED" in ours[0] and "02:00:00:00:00:02" in ours[0]


def test_external_hosts_on_the_fabric(bare):
    cloud = bare
    x1 = cloud.add_external("x1", "192.168.50.1", vlan=300)
    x2 = cloud.add_external("x2", "192.168.50.2", vlan=300)
    x3 = cloud.add_external("x3", "192.168.50.3", vlan=301)
    assert x1.ping(x2, count=2)
    assert x1.no_ping(x3, count=2)
