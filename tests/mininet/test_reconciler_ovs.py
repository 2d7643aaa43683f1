"""The reconciler on a real Open vSwitch bridge, without the API or Mininet.

A bridge (netdev datapath, OpenFlow13, fail_mode=secure) with internal ports
standing for VM taps and the uplink connects to a `vmflow controller`
process on a random port; the store is a temporary SQLite file written
directly. Checked: the switch gets exactly the desired flows, a restart
(SIGTERM or SIGKILL) sends zero flow-mods and leaves the table identical,
hand edits are repaired by the audit, and a store change reaches the switch.
"""
from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from controller.app import APP_IDS, SwitchView  # noqa: E402
from apps.l2 import L2App  # noqa: E402
from controller.compiler import FlowCompiler, SwitchFlows  # noqa: E402
from controller.pipeline import (COOKIE_APP_SHIFT, COOKIE_SPACE, COOKIE_SPACE_MASK,  # noqa: E402
                                 decode_cookie, table_id)
from harness import free_port  # noqa: E402  (tests/mininet is on sys.path: tests/conftest.py)
from topology.store import SqliteStore  # noqa: E402
from topology.view import TopologyView, interface_name  # noqa: E402

pytestmark = pytest.mark.mininet
OFCTL = ["ovs-ofctl", "-O", "OpenFlow13"]
# l2 owns app id 1 (controller/app.py APP_IDS); foreign flows use a cookie outside our space.
L2_COOKIE = COOKIE_SPACE | (APP_IDS["l2"] << COOKIE_APP_SHIFT)
OUTPUT = table_id("output")


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def our_flows(bridge: str) -> list[str]:
    """Our flows as ovs-ofctl prints them, without counters, sorted."""
    out = sh(*OFCTL, "dump-flows", bridge, "--no-stats", f"cookie={COOKIE_SPACE:#x}/{COOKIE_SPACE_MASK:#x}")
    return sorted(line.strip() for line in out.splitlines() if "cookie=" in line)


class Rig:
    def __init__(self, tmp: Path, conf: str = "[controller]\naudit_interval = 2\n"):
        self.run = f"{random.randrange(16**5):05x}"
        self.bridge = f"rc{self.run}"
        self.dpid = 0xC0DE00000000 | int(self.run, 16)
        self.db = tmp / "db.sqlite"
        self.status_path = tmp / "controller-status.json"
        self.conf_path = tmp / "vmflow.conf"
        self.conf_path.write_text(conf)
        self.port = free_port()
        self.proc = None
        self.logs = []
        self.store = SqliteStore(str(self.db))
        self.uplink = f"rcu{self.run}"

    def pid(self, n: int) -> str:
        # The interface name is "tap" + id[:11]: unique per run and port.
        return f"{self.run}{n:02d}0-aaaa-bbbb-cccc-000000000000"

    def port_doc(self, n, net, host, **extra):
        body = {"id": self.pid(n), "_key": n, "network_id": net,
                "mac_address": f"fa:16:3e:00:01:{n:02x}",
                "fixed_ips": [{"subnet_id": "s", "ip_address": f"10.0.0.{n}"}],
                "allowed_address_pairs": [], "admin_state_up": True,
                "binding:host_id": host, "device_owner": "compute:nova",
                "port_security_enabled": True}
        body.update(extra)
        return body

    def put(self, kind, body, parent=None):
        with self.store.transaction() as t:
            t.put(kind, body["id"], body, parent_id=parent)

    def fill(self):
        self.put("hosts", {"id": "h1", "name": "h1", "datapath_id": f"{self.dpid:016x}",
                           "physical_networks": {"physnet1": self.uplink}})
        self.put("networks", {"id": "n1", "_key": 1, "name": "n1", "admin_state_up": True,
                              "provider:network_type": "vlan",
                              "provider:physical_network": "physnet1",
                              "provider:segmentation_id": 101})
        for n, host in ((1, "h1"), (2, "h1"), (3, "h2")):
            self.put("ports", self.port_doc(n, "n1", host), parent="n1")

    def make_bridge(self):
        sh("ovs-vsctl", "add-br", self.bridge, "--", "set", "bridge", self.bridge,
           "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure",
           f"other-config:datapath-id={self.dpid:016x}")
        for name in [interface_name(self.port_doc(n, "n1", "h1")) for n in (1, 2)] + [self.uplink]:
            sh("ovs-vsctl", "add-port", self.bridge, name, "--", "set", "interface", name,
               "type=internal")
        sh("ovs-vsctl", "set-controller", self.bridge, f"tcp:127.0.0.1:{self.port}")

    def start(self):
        log = open(self.db.parent / f"controller-{len(self.logs)}.log", "w")
        self.logs.append(log.name)
        if self.status_path.exists():
            self.status_path.unlink()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "controller", "--config", str(self.conf_path),
             "--store", f"sqlite:///{self.db}", "--ofp-listen", f"127.0.0.1:{self.port}"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def status(self):
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None

    def switch(self, timeout=20.0, **want):
        """Wait for our switch's status entry to be synced (and match `want`)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status()
            sw = st and st["switches"].get(f"{self.dpid:016x}")
            if sw and st["synced"] and st["revision"] == self.store.revision() and \
                    all(sw.get(k) == v for k, v in want.items()):
                return sw
            time.sleep(0.1)
        raise AssertionError(f"switch not synced with {want}: {self.status()}\n"
                             + Path(self.logs[-1]).read_text()[-3000:])

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(15)

    def expected(self) -> dict:
        """The desired flows, computed in this process from the same store."""
        rev, data = self.store.snapshot()
        view = TopologyView(rev, data)
        ports = {}
        for line in sh(*OFCTL, "show", self.bridge).splitlines():
            m = re.match(r"\s*(\d+)\((.+)\):", line)
            if m:
                ports[m.group(2)] = int(m.group(1))
        memo = SwitchFlows()
        FlowCompiler([L2App()]).refresh(view, SwitchView(self.dpid, view.host_for_dpid(self.dpid),
                                                         ports), memo)
        return memo.desired

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", self.bridge], check=False)


@contextlib.contextmanager
def running_rig(tmp_path, **kw):
    r = Rig(tmp_path, **kw)
    try:
        r.fill()
        r.make_bridge()
        r.start()
        yield r
    finally:
        r.close()


@pytest.fixture
def rig(tmp_path):
    with running_rig(tmp_path) as r:
        yield r


def l2_only(flows):
    """Flows owned by l2 (cookie app 1): other apps loaded by the controller add theirs."""
    return sorted(f for f in flows if f"cookie={L2_COOKIE >> COOKIE_APP_SHIFT:#x}" in f)


def l2_expected(rig):
    return [f for f in rig.expected().values() if decode_cookie(f.cookie)[0] == APP_IDS["l2"]]


def test_switch_gets_desired_flows_restart_sends_none_and_audit_repairs(rig):
    sw = rig.switch()
    installed = our_flows(rig.bridge)
    assert len(l2_only(installed)) == len(l2_expected(rig))
    assert sw["flow_mods"] == sw["installed_flows"] == sw["desired_flows"] == len(installed)
    # VLAN translation in and the remote port's tagged output, as OVS prints them
    assert any(f"dl_vlan=101 actions=pop_vlan,write_metadata:0x1,goto_table:{table_id('l2_lookup')}" in f
               for f in installed)
    # l2_lookup decides "the uplink"; only output pushes the tag
    assert any(f"dl_dst=fa:16:3e:00:01:03 actions=set_field:0x80000000->reg7,"
               f"goto_table:{table_id('pre_output')}" in f for f in installed)
    assert any("reg7=0x80000000,metadata=0x1 actions=push_vlan:0x8100,set_field:4197->vlan_vid"
               in f for f in installed), installed

    # SIGTERM: a clean exit, then a restart that changes nothing.
    assert rig.stop(signal.SIGTERM) == 0
    rig.start()
    sw = rig.switch(flow_mods=0, meter_mods=0)
    assert our_flows(rig.bridge) == installed

    # SIGKILL: the same.
    rig.stop(signal.SIGKILL)
    rig.start()
    rig.switch(flow_mods=0, meter_mods=0)
    assert our_flows(rig.bridge) == installed

    # Drift: delete one of ours, add one in our cookie space; the audit repairs both.
    sh(*OFCTL, "del-flows", rig.bridge, f"table={OUTPUT},reg7=1")
    sh(*OFCTL, "add-flow", rig.bridge,
       f"table={OUTPUT},priority=7,cookie={L2_COOKIE | 0x42:#x},reg7=99,actions=output:1")
    sh(*OFCTL, "add-flow", rig.bridge, f"table={OUTPUT},priority=7,cookie=0x42,reg7=98,actions=drop")
    deadline = time.time() + 10
    while time.time() < deadline and our_flows(rig.bridge) != installed:
        time.sleep(0.2)
    assert our_flows(rig.bridge) == installed
    # The status file is rewritten once a second, so the count can trail the
    # repair it describes by that much.
    deadline = time.time() + 5
    while time.time() < deadline and rig.switch()["repairs"] < 2:
        time.sleep(0.2)
    assert rig.switch()["repairs"] >= 2
    # the foreign flow (cookie outside our space) is left alone
    assert "cookie=0x42" in sh(*OFCTL, "dump-flows", rig.bridge, f"table={OUTPUT}")


def test_store_change_reaches_the_switch(rig):
    rig.switch()
    rig.put("ports", rig.port_doc(4, "n1", "h2"), parent="n1")
    rig.switch()
    assert any("dl_dst=fa:16:3e:00:01:04" in f for f in our_flows(rig.bridge))
    with rig.store.transaction() as t:
        t.delete("ports", rig.pid(1))
    rig.switch()
    flows = our_flows(rig.bridge)
    assert not any("dl_dst=fa:16:3e:00:01:01" in f for f in flows)
    assert not any("reg6=0x1" in f for f in flows)
    assert len(l2_only(flows)) == len(l2_expected(rig))


def test_unclaimed_bridge_is_listed_and_gets_only_drop(rig):
    rig.switch()
    (rig.db.parent / "other").mkdir()
    other = Rig(rig.db.parent / "other")   # only for its unique names; no controller
    other.port = rig.port
    try:
        sh("ovs-vsctl", "add-br", other.bridge, "--", "set", "bridge", other.bridge,
           "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure",
           f"other-config:datapath-id={other.dpid:016x}")
        sh("ovs-vsctl", "set-controller", other.bridge, f"tcp:127.0.0.1:{rig.port}")
        deadline = time.time() + 15
        st = None
        while time.time() < deadline:
            st = rig.status()
            if st and f"{other.dpid:016x}" in st["unclaimed"] and st["synced"]:
                break
            time.sleep(0.1)
        assert f"{other.dpid:016x}" in st["unclaimed"]
        flows = our_flows(other.bridge)
        assert len(flows) == 1 and "priority=0 actions=drop" in flows[0]
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", other.bridge], check=False)


@pytest.fixture
def rig60(tmp_path):
    """A rig with the audit at its default 60 s: only the flow monitor can repair fast."""
    with running_rig(tmp_path, conf="[controller]\n") as r:
        yield r


def repaired_within(rig, installed, limit=3.0) -> float:
    """Seconds until our flows on the bridge are `installed` again."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if our_flows(rig.bridge) == installed:
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"not repaired in {limit}s: {len(our_flows(rig.bridge))} flows "
                         f"of {len(installed)}")


def test_hand_edits_are_repaired_within_a_second_by_the_flow_monitor(rig60):
    rig = rig60
    sw = rig.switch(monitor="active")
    audits = sw["audits"]   # the next audit is 60 s away
    # Our own bundles are not reported back as drift (no NXFMF_OWN).
    rig.put("ports", rig.port_doc(4, "n1", "h2"), parent="n1")
    sw = rig.switch()
    assert sw["drift_reports"] == 0 and sw["drift_rereads"] == 0 and sw["repairs"] == 0
    installed = our_flows(rig.bridge)
    assert len(installed) == sw["installed_flows"] > 10

    # Everything deleted by hand, foreign flows too.
    sh(*OFCTL, "add-flow", rig.bridge, f"table={OUTPUT},priority=7,cookie=0x42,reg7=98,actions=drop")
    sh(*OFCTL, "del-flows", rig.bridge)
    took = repaired_within(rig, installed)
    print(f"del-flows of {len(installed)} flows repaired in {took:.3f}s")
    assert took < 1.0
    deadline = time.time() + 3   # the status file trails by up to status_interval
    while time.time() < deadline and rig.switch()["repairs"] < len(installed):
        time.sleep(0.1)
    sw = rig.switch()
    assert sw["repairs"] >= len(installed) and sw["drift_reports"] >= len(installed)
    assert sw["drift_rereads"] >= 1 and sw["audits"] == audits and sw["in_sync"]
    # a foreign flow is not ours to restore
    assert "cookie=0x42" not in sh(*OFCTL, "dump-flows", rig.bridge)

    # One flow added in our cookie space, one changed, one outside it.
    repairs = sw["repairs"]
    sh(*OFCTL, "add-flow", rig.bridge,
       f"table={OUTPUT},priority=7,cookie={L2_COOKIE | 0x42:#x},reg7=99,actions=output:1")
    took = repaired_within(rig, installed)
    print(f"a hand-added flow in our cookie space removed in {took:.3f}s")
    assert took < 1.0
    sh(*OFCTL, "add-flow", rig.bridge, f"table={OUTPUT},priority=7,cookie=0x43,reg7=97,actions=drop")
    victim = next(f for f in installed if "reg7=0x1," in f or "reg7=0x1 " in f)
    m = re.search(r"cookie=(0x[0-9a-f]+), table=(\d+), .*?priority=(\d+),(\S+) actions=", victim)
    sh(*OFCTL, "mod-flows", "--strict", rig.bridge,
       f"table={m.group(2)},priority={m.group(3)},{m.group(4)},actions=drop")
    took = repaired_within(rig, installed)
    print(f"a hand-modified flow restored in {took:.3f}s")
    assert took < 1.0
    deadline = time.time() + 3
    while time.time() < deadline and rig.switch()["repairs"] < repairs + 2:
        time.sleep(0.1)
    assert rig.switch()["repairs"] >= repairs + 2
    assert "cookie=0x43" in sh(*OFCTL, "dump-flows", rig.bridge, f"table={OUTPUT}")
