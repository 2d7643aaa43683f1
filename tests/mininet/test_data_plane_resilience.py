"""Issue 16: traffic between VMs that already talk survives a controller
pause (ARP answered in the switch); what a flow-preserving OVS restart
(`ovs-ctl restart`) costs, with the controller up and with it stopped.

    h1: a, b        h2: c        one VLAN network, static addresses

The VMs re-validate their neighbours far more often than a kernel's
defaults do (reachable time ~1 s, first probe after 1 s), so a pause of a
few seconds already needs ARP answers: the kernel's unicast re-probes, and
after a cache flush its broadcast requests.

The OVS restart test restarts ovs-vswitchd. On the machine's own OVS, which
every test uses, it takes /tmp/ovs-restart.lock exclusively (so it never
overlaps another scenario); with OVS_RUNDIR (and OVS_DBDIR, OVS_LOGDIR)
naming a private OVS it needs no lock. It is marked `ovs_restart` (deselect
with -m "not ovs_restart") and always leaves ovs-vswitchd running.
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import time

import pytest

from controller.pipeline import PIPELINE, table_id
from harness import OFCTL, parse_ping, sh, wait_for

pytestmark = pytest.mark.mininet

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
# OVS's own variables (ovs-lib, ovs-vsctl and the rest read them): set, they
# point this test, its harness and ovs-ctl at a private OVS (README "OVS
# restarts" runs one in a network namespace of its own), whose restart
# disturbs no one and needs no machine-wide lock.
OVS_LOG = os.path.join(os.environ.get("OVS_LOGDIR", "/var/log/openvswitch"), "ovs-vswitchd.log")
PRIVATE_OVS = os.environ.get("OVS_RUNDIR", "/var/run/openvswitch").rstrip("/") not in (
    "/var/run/openvswitch", "/run/openvswitch")
RESTART_LOCK = "/tmp/ovs-restart.lock"
PAUSE = 30
RESPONDER_PRIORITY = 102   # apps/arp.py


def eager_neighbours(vm, eager: bool = True) -> None:
    """Make the VM's kernel re-check its neighbours every second or so
    (eager=False: the kernel's defaults again)."""
    values = (1000, 1) if eager else (30000, 5)
    for key, value in zip(("base_reachable_time_ms", "delay_first_probe_time"), values):
        vm.run(["sysctl", "-qw", f"net.ipv4.neigh.eth0.{key}={value}"], check=True)


def pin_neighbour(vm, other) -> None:
    """A permanent neighbour entry on vm for other (no ARP, ever)."""
    route = vm.run(["ip", "-o", "route", "get", other.ip], check=True).stdout
    dev = re.search(r" dev (\S+)", route).group(1)
    vm.run(["ip", "neigh", "replace", other.ip, "lladdr", other.mac, "nud", "permanent",
            "dev", dev], check=True)


def responder_packets(host) -> int:
    """Packets the host's in-switch ARP responders answered."""
    out = sh(OFCTL + ["--no-names", "dump-flows", host.bridge,
                      f"table={table_id('services')},arp"])
    return sum(int(m.group(1)) for line in out.splitlines()
               if f"priority={RESPONDER_PRIORITY}," in line
               for m in [re.search(r"n_packets=(\d+)", line)] if m)


def start_pings(src, targets, seconds: float) -> list:
    count = int(seconds * 10)
    return [(t, src.popen(["ping", "-n", "-D", "-i", "0.1", "-W", "1", "-c", str(count), t.ip]))
            for t in targets]


def ping_results(pings, timeout: float, gaps: dict | None = None) -> dict:
    """(sent, received) per target; `gaps` gets, per target, the outages
    as (time of the last reply before, time of the first reply after),
    None where the run began or ended without a reply."""
    out = {}
    for target, p in pings:
        stdout, _ = p.communicate(timeout=timeout)
        out[target.name] = parse_ping(stdout)
        if gaps is not None:
            answered = {int(m.group(2)): float(m.group(1)) for m in
                        re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)",
                                    stdout, re.M)}
            seqs = sorted(answered)
            spans = []
            if not seqs or seqs[0] > 1:
                spans.append((None, answered[seqs[0]] if seqs else None))
            spans += [(answered[p_], answered[n]) for p_, n in zip(seqs, seqs[1:]) if n - p_ > 1]
            if seqs and seqs[-1] < out[target.name][0]:
                spans.append((answered[seqs[-1]], None))
            gaps[target.name] = spans
    return out


@pytest.fixture
def trio(cloud):
    cloud.h1, cloud.h2 = cloud.add_host("h1"), cloud.add_host("h2")
    net = cloud.add_network("n1", cidr="10.0.7.0/24", vlan=307)
    a = cloud.add_vm(cloud.h1, net, "a")
    b = cloud.add_vm(cloud.h1, net, "b")
    c = cloud.add_vm(cloud.h2, net, "c")
    cloud.wait_controller_synced(timeout=30)
    for vm in (a, b, c):
        eager_neighbours(vm)
    a.wait_ping(b, 15)
    a.wait_ping(c, 15)
    b.wait_ping(c, 15)
    return cloud, a, b, c


def test_controller_pause_loses_no_ping(trio):
    """A 30 s SIGSTOP of the controller: a pings b (same host) and c (other
    host) at 10/s throughout, a's neighbour cache is flushed half-way
    (broadcast requests then, not only unicast re-probes), and not one ping
    is lost. The switches' responders did the answering."""
    cloud, a, b, c = trio
    answered = {h.name: responder_packets(h) for h in (cloud.h1, cloud.h2)}
    pings = start_pings(a, (b, c), PAUSE + 4)
    c_pings = start_pings(c, (b,), PAUSE + 4)
    time.sleep(1.5)
    pid = cloud.controller.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE / 2)
        a.arp_flush()
        c.arp_flush()
        time.sleep(PAUSE / 2)
    finally:
        os.kill(pid, signal.SIGCONT)
    results = ping_results(pings + c_pings, PAUSE + 30)
    for name, (sent, received) in results.items():
        assert sent == PAUSE * 10 + 40 and received == sent, \
            f"ping to {name}: {received} of {sent} answered across a {PAUSE} s pause: {results}"
    for h in (cloud.h1, cloud.h2):
        assert responder_packets(h) > answered[h.name] + 10, \
            f"{h.name}'s responders answered nothing: {answered} -> {responder_packets(h)}"
    cloud.controller.assert_running()


def delete_responders(host) -> int:
    """Delete the host's responder flows by hand, strictly (the per-port
    flows in the same table stay); return how many there were."""
    out = sh(OFCTL + ["--no-names", "dump-flows", host.bridge,
                      f"table={table_id('services')},arp"])
    n = 0
    for line in out.splitlines():
        m = re.search(rf"priority={RESPONDER_PRIORITY},(\S+) actions=", line)
        if m:
            sh(OFCTL + ["--strict", "del-flows", host.bridge,
                        f"table={table_id('services')},priority={RESPONDER_PRIORITY},{m.group(1)}"])
            n += 1
    return n


def test_without_responders_a_pause_loses_pings(trio):
    """Control, and the measure of the packet-in proxy alone: the same kind
    of pause with the responder flows deleted by hand (the stopped
    controller cannot restore them) loses pings once the kernels re-probe
    their neighbours."""
    cloud, a, b, c = trio
    pings = start_pings(a, (b, c), 12)
    time.sleep(1.5)
    pid = cloud.controller.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        assert all(delete_responders(h) >= 3 for h in (cloud.h1, cloud.h2))
        time.sleep(10)
    finally:
        os.kill(pid, signal.SIGCONT)
    results = ping_results(pings, 30)
    lost = {name: sent - received for name, (sent, received) in results.items()}
    print(f"packet-in proxy alone, controller stopped 10 s: lost {lost} of 120 each")
    assert all(n > 0 for n in lost.values()), results


def meter_packets(host) -> int:
    """Packets that went through any of the host's meters."""
    out = sh(OFCTL + ["meter-stats", host.bridge])
    return sum(int(n) for n in re.findall(r"packet_in_count:(\d+)", out))


def ovs_running() -> bool:
    return subprocess.run(["ovs-appctl", "-t", "ovs-vswitchd", "version"],
                          capture_output=True, timeout=10).returncode == 0


METERED_TABLES = {s.number for s in PIPELINE if s.metered}


def metered_flows(host_or_flows) -> set[str]:
    """The flows of the metered tables (egress_meter, ingress_meter), from a
    host's bridge or from a flow_set."""
    flows = host_or_flows if isinstance(host_or_flows, set) else flow_set(host_or_flows)
    return {f for f in flows
            if (m := re.search(r"\btable=(\d+),", f)) and int(m.group(1)) in METERED_TABLES}


def flow_set(host) -> set[str]:
    """The bridge's flows without counters, as ovs-save itself dumps them."""
    out = sh(OFCTL + ["--no-names", "--no-stats", "dump-flows", host.bridge])
    return {line.strip() for line in out.splitlines() if "actions=" in line}


# Where `ovs-ctl restart` spends its time: the first trace line of each step
# (bash -x with a timestamp), each searched after the one before it.
OVS_CTL_STEPS = (
    ("save flows", r"ovs_save save-flows"),
    ("stop ovsdb-server", r"stop_daemon ovsdb-server"),
    ("stop ovs-vswitchd", r"stop_daemon ovs-vswitchd"),
    ("its pidfile check's sleep 2", r"^sleep 2$"),
    ("start ovs-vswitchd", r"start_daemon .*ovs-vswitchd"),
    ("restore flows", r"restore_flows"),
    ("clear flow-restore-wait", r"flow_restore_complete"),
)


def restart_ovs() -> tuple[float, dict, str]:
    """`ovs-ctl restart` traced: (wall seconds, {step: seconds from the
    start}, the trace). The trace runs ovs-ctl's own code under bash -x."""
    t0 = time.time()
    r = subprocess.run(
        ["bash", "-c", r'PS4="+ \${EPOCHREALTIME} "; set -x; . "$0" "$@"', OVS_CTL,
         "restart", "--system-id=random", "--no-monitor"],
        capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    lines = r.stderr.splitlines()
    steps, at = {}, 0
    for name, pattern in OVS_CTL_STEPS:
        for i in range(at, len(lines)):
            m = re.match(r"\++ (\d+\.\d+) (.*)", lines[i])
            if m and re.search(pattern, m.group(2)):
                steps[name] = round(float(m.group(1)) - t0, 2)
                at = i
                break
    steps["end"] = round(took, 2)
    return took, steps, r.stderr


def outage(spans, t0: float) -> float:
    """Seconds without a reply across the restart: the gaps, summed."""
    return round(sum((b - a) for a, b in spans if a is not None and b is not None
                     and b > t0), 2)


@pytest.mark.ovs_restart
def test_ovs_restart_cost_with_the_controller_up_and_stopped(trio, tmp_path):
    """`ovs-ctl restart` (ovs-save, flow-restore-wait) under a 10/s ping,
    with the controller up, then with it stopped (SIGSTOP) through the
    restart and 10 s after it.

    On the userspace datapath the forwarding process itself restarts, so
    every bridge on the machine stops forwarding for a few seconds whatever
    its controller does. Two hosts on the fabric (a standalone NORMAL bridge
    with no controller) measure that outage in the same restart, and the
    VMs go at most 0.3 s (3 ping intervals) longer without a reply than
    they do, with the controller up and with it stopped.

    That holds because the host bridges name the controller as a *service*
    controller (harness.connect, README "OVS restarts"): ovs-vswitchd adds a
    bridge's controllers only once flow-restore-wait is cleared, and adding
    a *primary* controller flushes the bridge's flows, the ones ovs-save
    had just restored. With the controller stopped, the restored flows are
    all there is: the test checks they equal the flows before the restart.

    A third host's VM d has QoS bandwidth limits both ways. ovs-save
    restores no meters, and OVS refuses a flow that names a missing meter;
    the restore goes table by table and stops at the first refusal. vmflow
    passes QoS meters by resubmit into the last tables of its pipeline
    (egress_meter, ingress_meter), so everything else on d's bridge is back
    first and d's traffic flows, unmetered, until the controller re-adds the
    meters: d is held to the same bound as b and c, and its bridge's
    restored flows equal the ones before the restart but for the metered
    tables.
    """
    cloud, a, b, c = trio
    x1 = cloud.add_external("x1", "192.168.77.1")
    x2 = cloud.add_external("x2", "192.168.77.2")
    wait_for(lambda: x1.ping(x2), 10, 0.2, "the fabric's hosts to ping")
    # A third host whose VM has bandwidth limits both ways (meters, apps/qos.py),
    # far above what a ping needs.
    h3 = cloud.add_host("h3")
    d = cloud.add_vm(h3, cloud.networks["n1"], "d")
    pol = cloud.api.request("POST", "/v2.0/qos/policies", {"policy": {"name": "roomy"}})["policy"]
    for direction in ("egress", "ingress"):
        cloud.api.request("POST", f"/v2.0/qos/policies/{pol['id']}/bandwidth_limit_rules",
                          {"bandwidth_limit_rule": {"max_kbps": 100_000,
                                                    "direction": direction}})
    d.update_port(qos_policy_id=pol["id"])
    wait_for(lambda: len(metered_flows(h3)) == 2, 15, 0.2,
             lambda: f"d's two meter flows, one per direction (have {metered_flows(h3)})")
    cloud.wait_controller_synced(timeout=30)
    a.wait_ping(d, 15)
    # Every pinger and answerer knows the other's MAC for good: after a
    # 5 s outage the kernel re-resolves its neighbours, at moments of its
    # own choosing, and that lands on top of the forwarding outage this
    # measures (CI saw b come back 0.6 s after x2 in one run, and 0.3 s
    # before it in another).
    for one, other in ((a, b), (a, c), (a, d), (x1, x2)):
        pin_neighbour(one, other)
        pin_neighbour(other, one)
    report = {}
    with open(RESTART_LOCK, "w") as lock:
        if not PRIVATE_OVS:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for phase in ("controller up", "controller stopped"):
                before = {h.name: flow_set(h) for h in (cloud.h1, cloud.h2, h3)}
                # Stopped: long enough to see d come back with the controller.
                seconds = 20 if phase == "controller up" else 25
                pings = start_pings(a, (b, c, d), seconds) + start_pings(x1, (x2,), seconds)
                time.sleep(3)
                pid = cloud.controller.pid
                if phase == "controller stopped":
                    os.kill(pid, signal.SIGSTOP)
                events = {}
                log_from = os.path.getsize(OVS_LOG)
                kept = {}
                try:
                    events["restart"] = time.time()
                    took, steps, trace = restart_ovs()
                    (tmp_path / f"ovs-ctl-{phase.replace(' ', '-')}.trace").write_text(trace)
                    events["restarted"] = time.time()
                    if phase == "controller stopped":
                        time.sleep(2)
                        # Nobody but ovs-save wrote these flows.
                        kept = {h.name: flow_set(h) for h in (cloud.h1, cloud.h2, h3)}
                        time.sleep(8)
                finally:
                    if phase == "controller stopped":
                        os.kill(pid, signal.SIGCONT)
                        events["sigcont"] = time.time()
                gaps: dict = {}
                results = ping_results(pings, 60, gaps)
                lost = {name: sent - received for name, (sent, received) in results.items()}
                base = events["restart"]
                report[phase] = {
                    "restart_s": round(took, 2), "ovs_ctl_steps_s": steps,
                    f"lost_of_{seconds * 10}": lost,
                    "outage_s": {n: outage(g, base) for n, g in gaps.items()},
                    "events_s": {k: round(v - base, 1) for k, v in events.items()},
                    "gaps_s": {n: [tuple(None if t is None else round(t - base, 1) for t in sp)
                                   for sp in g] for n, g in gaps.items()},
                    "bridges_on_the_machine": len(sh("ovs-vsctl list-br").split()),
                    "trace": str(tmp_path),
                    "qos_bridge_restore_refused": "OFPMMFC_INVALID_METER" in trace}
                print(f"ovs-ctl restart, {phase}: {report[phase]}")
                # ovs-save's restore of each host bridge was accepted whole.
                with open(OVS_LOG, errors="replace") as log:
                    log.seek(log_from)
                    text = log.read()
                for h in (cloud.h1, cloud.h2):
                    assert re.search(rf"{h.bridge}<->unix#\d+: \d+ flow_mods .*adds", text), \
                        text[-3000:]
                    assert not re.search(rf"{h.bridge}<->unix#\d+: .*INVALID_METER", text)
                    # A service controller: adding it never flushed the bridge.
                    assert re.search(rf"{h.bridge}: added service controller \"tcp:", text), \
                        text[-3000:]
                assert all(results[n][0] == seconds * 10 for n in results), results
                if kept:
                    for h in (cloud.h1, cloud.h2):
                        assert kept[h.name] == before[h.name], \
                            (h.name, sorted(before[h.name] ^ kept[h.name])[:10])
                    # The QoS bridge: all but its metered tables, whose first
                    # flow ovs-save's restore could not add.
                    assert kept["h3"] == before["h3"] - metered_flows(before["h3"]), \
                        sorted(before["h3"] ^ kept["h3"])[:10]
                    assert metered_flows(before["h3"]) and not metered_flows(kept["h3"])
                refused = re.findall(r"OFPMMFC_INVALID_METER\s+OFPT_FLOW_MOD \(OF1\.3\) "
                                     r"\(xid=\w+\): ADD table:(\d+)", trace)
                assert refused and {int(t) for t in refused} <= METERED_TABLES, trace[-3000:]
                # Compared as time without a reply, not as pings lost: the
                # fabric's veths queue a few requests in the kernel through
                # the outage and forward them late, which counts as received
                # (CI once saw x2 lose 36 pings over a 4.87 s gap and b 43
                # over 4.59 s).
                outages = report[phase]["outage_s"]
                for vm in ("b", "c", "d"):
                    assert outages[vm] <= outages["x2"] + 0.3, report[phase]
                    if phase == "controller stopped":
                        # Back long before the controller is.
                        assert gaps[vm] and gaps[vm][-1][1] is not None \
                            and gaps[vm][-1][1] < events["sigcont"] - 5, report[phase]
                status = cloud.wait_controller_synced(timeout=30, since=events["restart"])
                # Metered again once the controller is back.
                assert len(metered_flows(h3)) == 2
                # What the controller wrote on reconnect: the meters (ovs-save
                # restores none), and flows only where the restore differs.
                report[phase]["resync"] = {
                    sw.get("host"): {k: sw.get(k) for k in ("flow_mods", "meter_mods", "bundles",
                                                            "installed_flows")}
                    for sw in status.get("switches", {}).values()}
                print(f"ovs-ctl restart, {phase}, controller's resync: {report[phase]['resync']}")
        finally:
            if not ovs_running():
                subprocess.run([OVS_CTL, "start", "--system-id=random", "--no-monitor"],
                               capture_output=True, timeout=120)
    assert ovs_running()
    # Metered again: ovs-save restores no meters, so the controller re-adds
    # them on reconnect; a's requests for an unknown address go to the
    # controller through a's meter, whose counters then move.
    before = meter_packets(cloud.h1)
    a.run(["arping", "-c", "3", "-w", "2", "-i", "eth0", "10.0.7.99"], timeout=15)
    wait_for(lambda: meter_packets(cloud.h1) >= before + 3, 5, 0.2,
             "a's ARP requests to go through its meter")
    print(f"ovs-ctl restart: {report}")
