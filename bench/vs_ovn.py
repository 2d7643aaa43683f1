"""vmflow side by side with OVN on the same machine and the same Open vSwitch.

    sudo .venv/bin/python bench/vs_ovn.py --ports 100

Runs one workload on vmflow, then on OVN (Debian's ovn-central/ovn-host), one
after the other, never on the same bridge, and prints one table: row, vmflow,
OVN, ratio (vmflow / OVN). Every VM is a network namespace with a veth whose
switch side is on the system's bridge, made the same way for both sides
(static IP, checksum offload off, a static neighbour entry for the peer it
pings, so the first ping measures the switch, not ARP timers).

1. Port wiring. An anchor port first, then --ports ports one at a time, all
   on one network / logical switch and in one 10-rule security group / port
   group with ACLs. The switch side of each port is plugged before the API
   call (the "VM plugged before its port exists" order). For each port, a
   ping to the anchor (every 10 ms) starts before the API call; reported:
   - API call -> flows installed. OVN: the Interface's
     external_ids:ovn-installed-ts, which ovn-controller writes once the
     port's flows are on the switch. vmflow writes no such mark, so the same
     moment is taken from OVS itself: the last flow-table change OVS reports
     (`ovs-ofctl monitor watch:`, harness.FlowMonitor) before the bridge's
     table stays quiet for 0.25 s after the first reply;
   - API call -> first ping reply (ping -D timestamps);
   - control plane CPU-seconds per port over the whole wiring phase:
     vmflow's controller (and API) processes against ovn-controller and
     ovn-northd (and the NB/SB ovsdb-servers).
   The API call is vmflow's POST /v2.0/ports and, for OVN, one ovn-nbctl
   transaction that creates the logical switch port with addresses, port
   security and DHCP options and adds it to the switch and the port group
   (what Neutron's OVN driver writes for a port).
2. Flows per port on the bridge at --ports ports ((bridge flows - flows
   before any port) / ports) with the 10-rule group, with one more rule whose
   remote is a group of 100 members, and with no group at all.
3. Unchanged restart under a 100/s ping between two ports: vmflow's
   controller SIGTERM + start; OVN `ovn-ctl --restart stop_controller` then
   `start_controller`. Reported: pings lost and the longest gap between two
   replies (ping -D), the time from the stop to the steady state (the new
   controller process synced / connected, and the flow table quiet for 1 s),
   and the flow-table changes OVS reports meanwhile (each flow added, deleted
   or modified, as the flow monitor sees them: a flow-mod adding or deleting
   one flow is one change, a delete-all is one change per flow).
4. DHCP from many namespaces at once (udhcpc, one 4-message exchange each,
   a script that changes nothing): exchanges per second and p99 of one
   exchange (from the client's start to its exit, so the process start is in
   it on both sides). vmflow answers by packet-in to its central controller,
   metered per port by an OpenFlow meter (200 pps, burst 100:
   [controller] controller_rate_pps / controller_burst); OVN answers in
   ovn-controller's pinctrl thread on the hypervisor, with no CoPP meter
   (OVN's default: none unless `ovn-nbctl copp-add` sets one).
5. iperf3 TCP between two ports with the stateful firewall (10-rule group)
   on both, as a ratio to two namespaces on a plain NORMAL bridge measured
   right before, in the same run.

OVN's daemons run from their own directories (OVN_RUNDIR/OVN_DBDIR/
OVN_LOGDIR under a temp dir), with their own integration bridge
(external_ids:ovn-bridge). The Open_vSwitch external_ids OVN needs are set at
the start and put back as they were at the end, with OVN's daemons stopped
and everything this run made removed, also after a failure.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "mininet"))

from convergence import percentile  # noqa: E402
from harness import Cloud, FlowMonitor, parse_ping, sh, wait_for  # noqa: E402
from secgroup_iperf import PORT as IPERF_PORT  # noqa: E402

OVN_CTL = "/usr/share/ovn/scripts/ovn-ctl"
CIDR, PREFIXLEN, GATEWAY = "10.64.0.0/16", 16, "10.64.0.1"
DHCP_SERVER_MAC = "fa:16:3e:00:00:01"
# Open_vSwitch external_ids OVN needs (system-id is already set by ovs-ctl
# and left alone: vmflow's harness and other users share it).
OVN_KEYS = ("ovn-remote", "ovn-encap-type", "ovn-encap-ip", "ovn-bridge",
            "ovn-bridge-datapath-type")
# The 10 rules of the group every port is in (ingress; plus egress to
# anywhere, which Neutron's default group has): iperf3's port among them.
INGRESS_RULES = [("icmp", None), ("tcp", "22"), ("tcp", "80"), ("tcp", "443"),
                 ("tcp", str(IPERF_PORT)), ("tcp", "8000-8080"), ("udp", "53"),
                 ("udp", "123"), ("tcp", "3306")]
REMOTE_PORT, REMOTE_MEMBERS = 9000, 100
QUIET = 0.25


# ---------------------------------------------------------------------------
# pure helpers (tests/unit/test_bench_vs_ovn.py)


def first_reply_time(ping_output: str) -> Optional[float]:
    """The wall-clock time of the first echo reply in `ping -D` output."""
    m = re.search(r"^\[(\d+\.\d+)\] \d+ bytes from", ping_output, re.M)
    return float(m.group(1)) if m else None


def reply_times(ping_output: str) -> list[float]:
    """The wall-clock times of every echo reply in `ping -D` output."""
    return [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", ping_output, re.M)]


def longest_gap(times: list[float]) -> Optional[float]:
    """The longest time between two consecutive replies (the outage a ping saw)."""
    if len(times) < 2:
        return None
    return max(b - a for a, b in zip(times, times[1:]))


def cpu_seconds(stat_line: str, ticks: int = 100) -> float:
    """utime + stime of a /proc/PID/stat line, in seconds."""
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def count_flows(dump: str) -> int:
    """Flows in `ovs-ofctl dump-flows` output (headers left out)."""
    return sum(1 for line in dump.splitlines() if "actions=" in line)


def summary(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) < 1:
        digits = max(digits, 3)
    return f"{value:,.{digits}f}"


def format_table(rows: list[tuple[str, Optional[float], Optional[float]]],
                 markdown: bool = False) -> str:
    """rows of (label, vmflow, ovn) -> a table with the ratio vmflow / OVN."""
    head = ("row", "vmflow", "OVN", "ratio")
    body = [(label, fmt(v), fmt(o), fmt(ratio(v, o), 2)) for label, v, o in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(4)]
    out = []
    for r in [head] + body:
        out.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def table_rows(vm: dict, ovn: dict) -> list[tuple[str, Optional[float], Optional[float]]]:
    """The table's rows from the two sides' results (same keys)."""
    rows = []
    for key, label in (("install", "API -> flows installed"), ("ping", "API -> first ping")):
        for stat in ("p50", "p99", "max"):
            rows.append((f"{label} {stat} (ms)", vm[key][stat], ovn[key][stat]))
    rows += [
        ("controller CPU-s / port", vm["cpu_ctl"], ovn["cpu_ctl"]),
        ("control plane CPU-s / port (with API/DBs)", vm["cpu_all"], ovn["cpu_all"]),
        ("ports not wired within 10 s", vm["failures"], ovn["failures"]),
        ("flows / port, 10-rule group", vm["fpp_sg10"], ovn["fpp_sg10"]),
        (f"flows / port, + remote-group rule ({REMOTE_MEMBERS} members)",
         vm["fpp_remote"], ovn["fpp_remote"]),
        ("flows / port, no group", vm["fpp_none"], ovn["fpp_none"]),
        ("restart: pings lost (of ~1,000 at 100/s)", vm["restart_lost"], ovn["restart_lost"]),
        ("restart: longest ping gap (ms)", vm["restart_gap"], ovn["restart_gap"]),
        ("restart: stop -> controller back, flows quiet (s)", vm["restart_steady"],
         ovn["restart_steady"]),
        ("restart: flow-table changes", vm["restart_changes"], ovn["restart_changes"]),
        ("DHCP exchanges / s", vm["dhcp_rate"], ovn["dhcp_rate"]),
        ("DHCP exchange p50 (ms)", vm["dhcp_p50"], ovn["dhcp_p50"]),
        ("DHCP exchange p99 (ms)", vm["dhcp_p99"], ovn["dhcp_p99"]),
        ("DHCP exchanges failed", vm["dhcp_failed"], ovn["dhcp_failed"]),
        ("iperf3 TCP with firewall (Mbit/s)", vm["iperf"], ovn["iperf"]),
        ("iperf3, plain NORMAL same run (Mbit/s)", vm["iperf_normal"], ovn["iperf_normal"]),
        ("iperf3 with firewall / NORMAL", ratio(vm["iperf"], vm["iperf_normal"]),
         ratio(ovn["iperf"], ovn["iperf_normal"])),
    ]
    return rows


# ---------------------------------------------------------------------------
# namespaces


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Ns:
    """A VM: a network namespace whose eth0 is a veth to `ifname` in the root namespace."""
    name: str
    ifname: str
    mac: str
    ip: str

    def argv(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name] + args

    def run(self, args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(args), capture_output=True, text=True, timeout=timeout)

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(args), text=True, **kw)

    def neigh(self, other: "Ns") -> None:
        sh(["ip", "-n", self.name, "neigh", "replace", other.ip, "lladdr", other.mac,
            "dev", "eth0", "nud", "permanent"])


class Bed:
    """Namespaces, veths and bridges this run made; close() removes them."""

    def __init__(self):
        self.prefix = "ovb%04x" % random.randrange(0x10000)
        self.ns: list[Ns] = []
        self.bridges: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.n = 0

    def make_ns(self, mac: str, ip: str) -> Ns:
        self.n += 1
        ns = Ns(f"{self.prefix}-n{self.n}", f"{self.prefix}-p{self.n}", mac, ip)
        inside = f"{self.prefix}-i{self.n}"
        self.ns.append(ns)
        sh(["ip", "netns", "add", ns.name])
        sh(["ip", "link", "add", ns.ifname, "type", "veth", "peer", "name", inside,
            "netns", ns.name])
        sh(["ethtool", "-K", ns.ifname, "tx", "off", "rx", "off"], check=False)
        sh(["ip", "link", "set", ns.ifname, "up"])
        batch = (f"link set {inside} name eth0\nlink set eth0 address {mac}\n"
                 f"addr add {ip}/{PREFIXLEN} dev eth0\nlink set eth0 up\nlink set lo up\n")
        sh(["ip", "-n", ns.name, "-batch", "-"], input=batch)
        sh(ns.argv(["ethtool", "-K", "eth0", "tx", "off", "rx", "off"]), check=False)
        return ns

    def plug(self, bridge: str, nss: list[Ns], ext: Callable[[Ns], list[str]] = lambda n: []):
        """Add the namespaces' veths to `bridge`, 100 per ovs-vsctl call."""
        for i in range(0, len(nss), 100):
            cmd = ["ovs-vsctl", "--timeout=120"]
            for n in nss[i:i + 100]:
                cmd += ["--", "add-port", bridge, n.ifname]
                if ext(n):
                    cmd += ["--", "set", "interface", n.ifname] + ext(n)
            sh(cmd, timeout=180)

    def add_bridge(self, name: str, *settings: str) -> str:
        self.bridges.append(name)
        sh(["ovs-vsctl", "--timeout=20", "add-br", name, "--", "set", "bridge", name,
            "datapath_type=netdev", *settings])
        return name

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for br in self.bridges:
            sh(["ovs-vsctl", "--timeout=60", "--if-exists", "del-br", br], check=False, timeout=90)
        for ns in self.ns:
            sh(["ip", "link", "del", ns.ifname], check=False)
            sh(["ip", "netns", "del", ns.name], check=False)


def mac_of(j: int) -> str:
    return "fa:16:3e:%02x:%02x:%02x" % (0x40 | (j >> 16), (j >> 8) & 0xFF, j & 0xFF)


def ip_of(j: int) -> str:
    return f"10.64.{(j + 10) >> 8}.{(j + 10) & 0xFF}"


def proc_cpu(pids: list[int]) -> float:
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            total += cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), ticks)
        except (OSError, ValueError):
            pass
    return total


def descendants(pid: int) -> list[int]:
    out, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    st = (d / "stat").read_text()
                except OSError:
                    continue
                if int(st[st.rindex(")") + 2:].split()[1]) == parent:
                    out.append(int(d.name))
                    todo.append(int(d.name))
    return out


class _Owner:
    """What harness.FlowMonitor wants of a Cloud, for bridges no Cloud owns."""

    def __init__(self):
        self._monitors: list[FlowMonitor] = []

    def _record_child(self, pid: int) -> None:
        pass


def last_change(mon: FlowMonitor, mark: int, t0: float, quiet: float = QUIET,
                limit: float = 5.0) -> Optional[float]:
    """Wait until `mon` has seen no change for `quiet` s since its last change
    after event index `mark` (at most `limit` s after t0); the monotonic time
    of that last change, or None if there was none."""
    end = t0 + limit
    while True:
        with mon.cond:
            evs = mon.events[mark:]
        last = evs[-1][0] if evs else None
        now = time.monotonic()
        if last is not None and now - last >= quiet or now >= end:
            return last
        time.sleep(0.02)


def wait_quiet(mon: FlowMonitor, quiet: float = 1.0, limit: float = 120) -> None:
    """Wait until the bridge's flow table has not changed for `quiet` s from now."""
    start = time.monotonic()
    while True:
        with mon.cond:
            last = mon.events[-1][0] if mon.events else start
        now = time.monotonic()
        if now - max(last, start) >= quiet or now - start >= limit:
            return
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# the two sides: same steps, side-specific hooks


class Side:
    name = ""
    bridge = ""

    def __init__(self, bed: Bed, workdir: Path):
        self.bed, self.workdir = bed, workdir
        self.ports: list[Ns] = []

    # hooks
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def create_port(self, j: int, ns: Ns) -> None: ...
    def installed(self, j: int, ns: Ns, t0_wall: float, t0_mono: float,
                  mark: int) -> Optional[float]: ...
    def cpu_pids(self) -> tuple[list[int], list[int]]: ...
    def settle(self) -> None: ...
    def set_config(self, config: str) -> None: ...
    def restart(self) -> float: ...  # returns the monotonic time it is back

    def ext_ids(self, ns: Ns) -> list[str]:
        return []

    def notes(self) -> str:
        """Side-specific counters worth printing under the table."""
        return ""

    def flow_count(self) -> int:
        return count_flows(sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", self.bridge],
                              timeout=60))


def start_monitor(side: Side, tries: int = 3) -> FlowMonitor:
    for i in range(tries):
        try:
            return FlowMonitor(side.owner, side.bridge)
        except Exception as e:  # harness.HarnessError: no initial reply in 10 s
            if i == tries - 1:
                raise
            log(f"{side.name}: {e}; again")


def ping_first(ns: Ns, target: Ns, limit: float = 10) -> subprocess.Popen:
    return ns.popen(["ping", "-D", "-n", "-i", "0.01", "-c", "1", "-w", str(int(limit)),
                     target.ip])


def wire(side: Side, n_ports: int) -> dict:
    """Phase 1: anchor + n_ports, one at a time."""
    bed = side.bed
    nss = [bed.make_ns(mac_of(j), ip_of(j)) for j in range(n_ports + 1)]
    log(f"{side.name}: {len(nss)} namespaces made; plugging")
    anchor = nss[0]
    sh(["ip", "-n", anchor.name, "-batch", "-"],
       input="".join(f"neigh replace {n.ip} lladdr {n.mac} dev eth0 nud permanent\n"
                     for n in nss[1:]))
    for n in nss[1:]:
        n.neigh(anchor)
    # The monitor starts before the plugging: its initial dump then is small
    # and quick, even on a busy machine.
    mon = start_monitor(side)
    side.monitor = mon
    side.baseline = side.flow_count()
    bed.plug(side.bridge, nss, side.ext_ids)
    side.ports = nss
    side.create_port(0, anchor)
    side.settle()
    ctl_pids, all_pids = side.cpu_pids()
    cpu0 = (proc_cpu(ctl_pids), proc_cpu(all_pids))
    install, ping, failures = [], [], 0
    log(f"{side.name}: wiring {n_ports} ports")
    for j in range(1, n_ports + 1):
        ns = nss[j]
        p = ping_first(ns, anchor)
        time.sleep(0.03)  # ping is up and sending before the API call
        mark = len(mon.events)
        t0_wall, t0_mono = time.time(), time.monotonic()
        side.create_port(j, ns)
        try:
            out = p.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            out = p.communicate()[0]
        reply = first_reply_time(out)
        done = side.installed(j, ns, t0_wall, t0_mono, mark)
        if reply is None or done is None:
            failures += 1
        if reply is not None:
            ping.append((reply - t0_wall) * 1000)
        if done is not None:
            install.append(done * 1000)
        if j % 50 == 0:
            log(f"{side.name}: {j} ports; last install {install[-1] if install else 0:.0f} ms, "
                f"ping {ping[-1] if ping else 0:.0f} ms; {failures} failed")
    side.settle()
    cpu1 = (proc_cpu(side.cpu_pids()[0]), proc_cpu(side.cpu_pids()[1]))
    return {"install": summary(install), "ping": summary(ping), "failures": failures,
            "cpu_ctl": (cpu1[0] - cpu0[0]) / n_ports, "cpu_all": (cpu1[1] - cpu0[1]) / n_ports}


def flows_per_port(side: Side, n_ports: int) -> int:
    side.settle()
    return (side.flow_count() - side.baseline) / (n_ports + 1)


def iperf_between(a: Ns, b: Ns, seconds: int) -> Optional[float]:
    a.neigh(b)
    b.neigh(a)
    server = b.popen(["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        p = a.run(["iperf3", "-c", b.ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                   "--connect-timeout", "3000"], timeout=seconds + 30)
        try:
            data = json.loads(p.stdout)
        except ValueError:
            return None
        if "error" in data:
            log(f"iperf3: {data['error']}")
            return None
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def normal_pair(bed: Bed) -> tuple[Ns, Ns]:
    br = bed.add_bridge(f"{bed.prefix}-nrm", "fail_mode=standalone",
                        "other-config:disable-in-band=true")
    a = bed.make_ns("fa:16:3e:7f:00:01", "10.64.255.1")
    b = bed.make_ns("fa:16:3e:7f:00:02", "10.64.255.2")
    bed.plug(br, [a, b])
    return a, b


def iperf_phase(side: Side, normal: tuple[Ns, Ns], seconds: int, rounds: int) -> dict:
    """Alternates plain NORMAL and the side's pipeline, `rounds` times each,
    so the machine's noise falls on both; medians."""
    base, got = [], []
    for _ in range(rounds):
        base.append(iperf_between(*normal, seconds))
        got.append(iperf_between(side.ports[1], side.ports[2], seconds))
    base = [x for x in base if x is not None]
    got = [x for x in got if x is not None]
    return {"iperf": statistics.median(got) if got else None,
            "iperf_normal": statistics.median(base) if base else None}


def dhcp_phase(side: Side, clients: int, rounds: int) -> dict:
    nss = side.ports[1:clients + 1]
    lat = []
    start = time.monotonic()
    ok = 0
    for _ in range(rounds):
        procs = []
        for ns in nss:
            procs.append((time.monotonic(), ns.popen(
                ["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1",
                 "-s", "/bin/true"], stdout=subprocess.DEVNULL)))
        pending = dict(enumerate(procs))
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for i, (t0, p) in list(pending.items()):
                if p.poll() is not None:
                    del pending[i]
                    if p.returncode == 0:
                        ok += 1
                        lat.append((time.monotonic() - t0) * 1000)
            time.sleep(0.005)
        for _t0, p in pending.values():
            p.kill()
            p.wait()
    wall = time.monotonic() - start
    return {"dhcp_rate": ok / wall, "dhcp_p99": percentile(lat, 99) if lat else None,
            "dhcp_p50": percentile(lat, 50) if lat else None,
            "dhcp_failed": clients * rounds - ok}


def restart_phase(side: Side, seconds: float = 10) -> dict:
    a, b = side.ports[1], side.ports[2]
    a.neigh(b)
    b.neigh(a)
    mon = side.monitor
    count = int(seconds * 100)
    p = a.popen(["ping", "-D", "-n", "-i", "0.01", "-W", "1", "-c", str(count), b.ip])
    time.sleep(2)
    mark = len(mon.events)
    t_stop, t_stop_wall = time.monotonic(), time.time()
    back = side.restart()
    back_wall = time.time() - (time.monotonic() - back)
    last = last_change(mon, mark, t_stop, quiet=1.0, limit=seconds)
    if last is not None:
        wait_quiet(mon)
        with mon.cond:
            last = mon.events[-1][0]
    out = p.communicate(timeout=seconds + 20)[0]
    tx, rx = parse_ping(out)
    with mon.cond:
        changes = len(mon.events) - mark
    steady = max(back, last or back) - t_stop
    times = reply_times(out)
    gap = longest_gap(times)
    if gap is not None:
        i = max(range(1, len(times)), key=lambda k: times[k] - times[k - 1])
        log(f"{side.name}: restart: longest ping gap {gap * 1000:.0f} ms from "
            f"{times[i - 1] - t_stop_wall:+.2f} s after the stop; controller back at "
            f"{back_wall - t_stop_wall:+.2f} s")
    return {"restart_lost": tx - rx, "restart_tx": tx, "restart_steady": steady,
            "restart_gap": None if gap is None else gap * 1000,
            "restart_changes": changes}


def run_side(side: Side, args, normal: tuple[Ns, Ns]) -> dict:
    side.start()
    try:
        r = wire(side, args.ports)
        r["notes"] = side.notes()
        if r["notes"]:
            log(f"{side.name}: {r['notes']}")
        r["fpp_sg10"] = flows_per_port(side, args.ports)
        log(f"{side.name}: iperf3")
        r.update(iperf_phase(side, normal, args.iperf_seconds, args.iperf_rounds))
        log(f"{side.name}: DHCP")
        r.update(dhcp_phase(side, min(args.ports, args.dhcp_clients), args.dhcp_rounds))
        log(f"{side.name}: restart")
        r.update(restart_phase(side))
        log(f"{side.name}: remote-group rule")
        side.set_config("remote")
        r["fpp_remote"] = flows_per_port(side, args.ports)
        log(f"{side.name}: no group")
        side.set_config("none")
        r["fpp_none"] = flows_per_port(side, args.ports)
        log(f"{side.name}: {r}")
        return r
    finally:
        side.stop()


# ---------------------------------------------------------------------------
# vmflow


class VmflowSide(Side):
    name = "vmflow"

    def start(self) -> None:
        self.cloud = Cloud.start(self.workdir / "vmflow", {"DEFAULT": {"log_level": "WARNING"}})
        self.owner = self.cloud
        self.host = self.cloud.add_host("h1")
        self.host.wait_connected()
        self.bridge = self.host.bridge
        self.net = self.cloud.add_network("n", cidr=CIDR, vlan=100, enable_dhcp=True)
        api = self.cloud.api
        self.sg = api.create("security_groups", name="sg10")
        have = len(api.list("security_group_rules", security_group_id=self.sg["id"]))
        rules = []
        for proto, ports in INGRESS_RULES:
            r = {"security_group_id": self.sg["id"], "direction": "ingress",
                 "ethertype": "IPv4", "protocol": proto}
            if ports:
                r["ports"] = ports
            rules.append(r)
        while have + len(rules) < 10:
            rules.append({"security_group_id": self.sg["id"], "direction": "egress",
                          "ethertype": "IPv4"})
        rules = rules[:max(0, 10 - have)]
        api.request("POST", "/v2.0/security-group-rules", {"security_group_rules": rules})
        self.members = api.create("security_groups", name="members")
        self.port_ids: dict[int, str] = {}
        self.cloud.wait_controller_synced([self.host], timeout=60)

    def stop(self) -> None:
        self.cloud.close()

    def create_port(self, j: int, ns: Ns) -> None:
        groups = [self.sg["id"]] + ([self.members["id"]] if 1 <= j <= REMOTE_MEMBERS else [])
        doc = self.cloud.api.create(
            "ports", network_id=self.net.id, mac_address=ns.mac, name=f"p{j}",
            fixed_ips=[{"subnet_id": self.net.subnet["id"], "ip_address": ns.ip}],
            security_groups=groups,
            **{"binding:host_id": self.host.name,
               "binding:profile": {"interface_name": ns.ifname}})
        self.port_ids[j] = doc["id"]

    def installed(self, j, ns, t0_wall, t0_mono, mark):
        last = last_change(self.monitor, mark, t0_mono)
        return None if last is None else last - t0_mono

    def notes(self) -> str:
        c = self.cloud.status()["counters"]
        return (f"vmflow after wiring: {c.get('port_status_written', 0):,} port status "
                f"writes, {c.get('changes', 0):,} store changes followed")

    def cpu_pids(self):
        ctl = [self.cloud.controller.pid]
        return ctl, ctl + descendants(self.cloud.api_proc.pid)

    def settle(self) -> None:
        # In sync as of a store read after now, i.e. after every change made
        # before this call, then the flow table quiet.
        t = time.time()

        def caught_up():
            self.cloud.controller.assert_running()
            st = self.cloud.status()
            return (st.get("store_last_read") or 0) > t and \
                self.cloud.controller_synced([self.host])
        wait_for(caught_up, 180, 0.1, "the controller to catch up with the store")
        wait_quiet(self.monitor, quiet=1.5)

    def set_config(self, config: str) -> None:
        api = self.cloud.api
        if config == "remote":
            api.create("security_group_rules", security_group_id=self.sg["id"],
                       direction="ingress", ethertype="IPv4", protocol="tcp",
                       ports=str(REMOTE_PORT), remote_group_id=self.members["id"])
        elif config == "none":
            for j, pid in self.port_ids.items():
                api.update("ports", pid, security_groups=[])

    def restart(self) -> float:
        self.cloud.controller.stop()
        self.cloud.controller.start()
        # status() refuses the file until the new process has written it
        self.cloud.wait_controller_synced([self.host], timeout=60)
        return time.monotonic()


# ---------------------------------------------------------------------------
# OVN


class OvnSide(Side):
    name = "OVN"

    def __init__(self, bed: Bed, workdir: Path):
        super().__init__(bed, workdir)
        self.dir = workdir / "ovn"
        self.env = dict(os.environ, OVN_RUNDIR=str(self.dir / "run"),
                        OVN_DBDIR=str(self.dir / "db"), OVN_LOGDIR=str(self.dir / "log"))
        self.bridge = f"{bed.prefix}-ovn"
        self.owner = _Owner()
        self.saved: dict[str, Optional[str]] = {}
        self.started = False

    def ctl(self, *args: str) -> None:
        p = subprocess.run([OVN_CTL, *args], env=self.env, capture_output=True, text=True,
                           timeout=120)
        if p.returncode:
            raise RuntimeError(f"ovn-ctl {' '.join(args)}: {p.stdout}{p.stderr}")

    def nbctl(self, *args: str, timeout: float = 60) -> str:
        return sh(["ovn-nbctl", f"--db=unix:{self.dir}/run/ovnnb_db.sock", *args],
                  timeout=timeout)

    def _ext(self, key: str) -> Optional[str]:
        out = sh(["ovs-vsctl", "--if-exists", "get", "open", ".", f"external_ids:{key}"],
                 check=False).strip()
        return out.strip('"') if out else None

    def start(self) -> None:
        for d in ("run", "db", "log"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        self.saved = {k: self._ext(k) for k in OVN_KEYS}
        # ovn-controller adds a Datapath record (its ct-zone bookkeeping) to
        # Open_vSwitch.datapaths: removed at the end unless it was there before.
        self.had_datapath = "netdev=" in sh(["ovs-vsctl", "get", "open", ".", "datapaths"],
                                           check=False)
        self.started = True
        self.ctl("start_northd")
        values = {"ovn-remote": f"unix:{self.dir}/run/ovnsb_db.sock",
                  "ovn-encap-type": "geneve", "ovn-encap-ip": "127.0.0.1",
                  "ovn-bridge": self.bridge, "ovn-bridge-datapath-type": "netdev"}
        sh(["ovs-vsctl", "set", "open", "."] + [f"external_ids:{k}=\"{v}\""
                                                 for k, v in values.items()])
        self.bed.bridges.append(self.bridge)
        self.ctl("start_controller")
        wait_for(lambda: subprocess.run(["ovs-vsctl", "br-exists", self.bridge]).returncode == 0,
                 30, 0.2, f"ovn-controller to create {self.bridge}")
        self.nbctl("ls-add", "ls")
        self.dhcp = self.nbctl("dhcp-options-create", CIDR).strip() or \
            self.nbctl("--bare", "--columns=_uuid", "find", "dhcp_options",
                       f"cidr=\"{CIDR}\"").strip()
        self.nbctl("dhcp-options-set-options", self.dhcp, "lease_time=3600",
                   f"router={GATEWAY}", f"server_id={GATEWAY}",
                   f"server_mac={DHCP_SERVER_MAC}")
        # Neutron's OVN driver: a drop group every port is in, and the
        # security group's port group with allow-related ACLs above it.
        self.nbctl("pg-add", "pg_drop", "--", "pg-add", "pg_sg", "--", "pg-add", "pg_members")
        self.nbctl("acl-add", "pg_drop", "from-lport", "1001", "inport == @pg_drop && ip", "drop",
                   "--", "acl-add", "pg_drop", "to-lport", "1001", "outport == @pg_drop && ip",
                   "drop")
        acls = ["--", "acl-add", "pg_sg", "from-lport", "1002", "inport == @pg_sg && ip4",
                "allow-related"]
        for proto, ports in INGRESS_RULES:
            m = f"outport == @pg_sg && ip4 && {proto}" if proto != "icmp" else \
                "outport == @pg_sg && ip4 && icmp4"
            if ports:
                lo, _, hi = ports.partition("-")
                m += f" && {proto}.dst == {lo}" if not hi else \
                    f" && {proto}.dst >= {lo} && {proto}.dst <= {hi}"
            acls += ["--", "acl-add", "pg_sg", "to-lport", "1002", m, "allow-related"]
        self.nbctl(*acls[1:])
        wait_for(lambda: self._chassis_up(), 30, 0.2, "the chassis to register")

    def _chassis_up(self) -> bool:
        out = sh(["ovn-sbctl", f"--db=unix:{self.dir}/run/ovnsb_db.sock", "--bare",
                  "--columns=name", "list", "chassis"], check=False)
        return bool(out.strip())

    def ext_ids(self, ns: Ns) -> list[str]:
        return [f"external_ids:iface-id=lsp{ns.ifname.rsplit('-p', 1)[1]}"]

    def create_port(self, j: int, ns: Ns) -> None:
        name = f"lsp{ns.ifname.rsplit('-p', 1)[1]}"
        addr = f"\"{ns.mac} {ns.ip}\""
        groups = ["pg_drop", "pg_sg"] + (["pg_members"] if 1 <= j <= REMOTE_MEMBERS else [])
        cmd = ["--", "--id=@p", "create", "logical_switch_port", f"name={name}",
               f"addresses={addr}", f"port_security={addr}", f"dhcpv4_options={self.dhcp}",
               "--", "add", "logical_switch", "ls", "ports", "@p"]
        for g in groups:
            cmd += ["--", "add", "port_group", g, "ports", "@p"]
        self.nbctl(*cmd[1:])
        self.lsps = getattr(self, "lsps", []) + [name]

    def installed(self, j, ns, t0_wall, t0_mono, mark):
        def ts():
            out = sh(["ovs-vsctl", "--if-exists", "get", "interface", ns.ifname,
                      "external_ids:ovn-installed-ts"], check=False).strip().strip('"')
            return int(out) if out.isdigit() else None
        try:
            got = wait_for(ts, 10, 0.02, "ovn-installed-ts")
        except AssertionError:
            return None
        return got / 1000 - t0_wall

    def _pid(self, name: str) -> Optional[int]:
        try:
            return int((self.dir / "run" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def cpu_pids(self):
        ctl = [p for p in (self._pid("ovn-controller"), self._pid("ovn-northd")) if p]
        dbs = [p for p in (self._pid("ovnnb_db"), self._pid("ovnsb_db")) if p]
        return ctl, ctl + dbs

    def settle(self) -> None:
        self.nbctl("--wait=hv", "--timeout=120", "sync", timeout=150)
        wait_quiet(self.monitor, quiet=1.5)

    def set_config(self, config: str) -> None:
        if config == "remote":
            self.nbctl("acl-add", "pg_sg", "to-lport", "1002",
                       f"outport == @pg_sg && ip4 && ip4.src == $pg_members_ip4 && "
                       f"tcp.dst == {REMOTE_PORT}", "allow-related")
        elif config == "none":
            self.nbctl("clear", "port_group", "pg_sg", "ports", "--",
                       "clear", "port_group", "pg_members", "ports", "--",
                       "clear", "port_group", "pg_drop", "ports")

    def restart(self) -> float:
        self.ctl("--restart", "stop_controller")
        self.ctl("start_controller")

        def answering():
            pid = self._pid("ovn-controller")
            if not pid:
                return False
            p = subprocess.run(["ovn-appctl", "-t", str(self.dir / "run" /
                                                          f"ovn-controller.{pid}.ctl"),
                                "connection-status"], capture_output=True, text=True)
            return p.stdout.strip() == "connected"
        wait_for(answering, 30, 0.05, "ovn-controller to reconnect")
        return time.monotonic()

    def stop(self) -> None:
        if not self.started:
            return
        for m in self.owner._monitors:
            m.stop()
        for args in (("stop_controller",), ("stop_northd",)):
            try:
                self.ctl(*args)
            except Exception as e:  # keep tearing down
                log(f"ovn-ctl {args}: {e}")
        # anything ovn-ctl left (a daemon that did not exit) ends by its pidfile
        for name in ("ovn-controller", "ovn-northd", "ovnnb_db", "ovnsb_db"):
            pid = self._pid(name)
            if pid and Path(f"/proc/{pid}").exists():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        restore = ["ovs-vsctl", "--timeout=20"]
        for k, v in self.saved.items():
            if v is None:
                restore += ["--", "remove", "open", ".", "external_ids", k]
            else:
                restore += ["--", "set", "open", ".", f"external_ids:{k}=\"{v}\""]
        if not self.had_datapath:
            restore += ["--", "remove", "open", ".", "datapaths", "netdev"]
        sh(restore, check=False)
        sh(["ovs-vsctl", "--timeout=60", "--if-exists", "del-br", self.bridge], check=False,
           timeout=90)
        self.started = False


# ---------------------------------------------------------------------------


def versions() -> str:
    ovn = sh(["ovn-controller", "--version"], check=False).splitlines()[:1]
    ovs = sh(["ovs-vswitchd", "--version"], check=False).splitlines()[:1]
    return f"{(ovn or ['ovn ?'])[0]}; {(ovs or ['ovs ?'])[0]}"


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=100)
    ap.add_argument("--dhcp-clients", type=int, default=50)
    ap.add_argument("--dhcp-rounds", type=int, default=3)
    ap.add_argument("--iperf-seconds", type=int, default=5)
    ap.add_argument("--iperf-rounds", type=int, default=2)
    ap.add_argument("--only", choices=("vmflow", "ovn"), help="run one side (for debugging)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    args = ap.parse_args(argv)
    if args.ports < 2:
        ap.error("--ports must be at least 2")
    t_start = time.monotonic()
    load0 = os.getloadavg()
    results = {}
    bed = Bed()
    with tempfile.TemporaryDirectory(prefix="vmflow-vsovn-") as d:
        try:
            normal = normal_pair(bed)
            sides = [VmflowSide(bed, Path(d)), OvnSide(bed, Path(d))]
            for side in sides:
                if args.only and side.name.lower() != args.only:
                    continue
                log(f"--- {side.name}")
                results[side.name] = run_side(side, args, normal)
        finally:
            bed.close()
    load1 = os.getloadavg()
    empty = {k: None for k in results.get("vmflow", results.get("OVN", {}))}
    vm = results.get("vmflow") or {**empty, "install": summary([]), "ping": summary([])}
    ovn = results.get("OVN") or {**empty, "install": summary([]), "ping": summary([])}
    rows = table_rows(vm, ovn)
    print(f"vmflow vs OVN, {args.ports} ports, one bridge each (userspace datapath); "
          f"{versions()}")
    print(f"load average at start {load0[0]:.2f}, at end {load1[0]:.2f}; "
          f"run took {time.monotonic() - t_start:.0f} s")
    print(format_table(rows))
    for r in results.values():
        if r.get("notes"):
            print(r["notes"])
    if args.markdown:
        print()
        print(format_table(rows, markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
