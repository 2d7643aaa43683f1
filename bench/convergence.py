"""Convergence benchmark: API port create -> its flows installed on real OVS.

    sudo .venv/bin/python bench/convergence.py [--ports 1000] [--bridges 10] [--store sqlite,etcd]

What it builds (with the Mininet harness, tests/mininet/harness.py): a real
`vmflow api` + `vmflow controller` on a fresh store (SQLite, or with
--store etcd a 3-member etcd cluster on loopback; each store named is
measured in turn, in one run), `--bridges` real
Open vSwitch bridges (userspace datapath, OpenFlow 1.3, each a registered
host), and `--bridges` VLAN networks. Port j lives on bridge j % bridges and in
network j // (ports / networks), so every network spans every bridge. Each
port's switch-side interface is an OVS internal port plugged in beforehand
and named by binding:profile.interface_name (the "VM plugged before its port
exists" order), so creating the port is the only thing that happens.

Ports are created one at a time. For each, the clock starts before the POST
and stops when the last of its flows is reported by OVS flow monitors
(`ovs-ofctl monitor BRIDGE watch:`) on every bridge:
  - on its own bridge, the classify flow for in_port=its ofport and the local
    l2_lookup flow for its MAC (table numbers from controller.pipeline);
  - on every other bridge where its network already has a port, the remote
    l2_lookup flow for its MAC (to the uplink).
The POST's own latency is reported separately. Nothing is faked: the
controller talks to real switches over TCP.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "mininet"))

from harness import Cloud, sh  # noqa: E402

from controller.pipeline import table_id  # noqa: E402

CLASSIFY, L2_LOOKUP = table_id("classify"), table_id("l2_lookup")


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def run(ports: int, bridges: int, workdir: Path, audit_interval: int = 60,
        apps: str = "") -> dict:
    controller = {"audit_interval": audit_interval}
    if apps:
        controller["apps"] = apps
    cloud = Cloud.start(workdir, {"DEFAULT": {"log_level": "WARNING"}, "controller": controller})
    monitors = []
    try:
        log(f"vmflow up (api :{cloud.api_port}, ofp :{cloud.ofp_port}); adding {bridges} hosts")
        hosts = [cloud.add_host(f"h{i}") for i in range(bridges)]
        for h in hosts:
            h.wait_connected()
        per_net = max(1, ports // bridges)
        nets = [cloud.add_network(f"n{k}", cidr=f"10.{100 + k}.0.0/22", vlan=200 + k)
                for k in range((ports + per_net - 1) // per_net)]
        # Interfaces first (plugged before their ports exist), one ovs-vsctl per bridge.
        ifname = lambda j: f"{cloud.prefix}-p{j}"  # noqa: E731
        by_bridge = defaultdict(list)
        for j in range(ports):
            by_bridge[j % bridges].append(j)
        log(f"plugging {ports} interfaces")
        t = time.monotonic()
        for b, js in by_bridge.items():
            cmd = ["ovs-vsctl", "--timeout=120"]
            for j in js:
                cmd += ["--", "add-port", hosts[b].bridge, ifname(j), "--", "set", "interface",
                        ifname(j), "type=internal"]
            sh(cmd, timeout=180)
        ofports = {}
        out = sh(["ovs-vsctl", "--format=csv", "--data=bare", "--no-headings",
                  "--columns=name,ofport", "list", "interface"], timeout=60)
        for line in out.splitlines():
            name, _, ofp = line.partition(",")
            if name.startswith(cloud.prefix + "-p"):
                ofports[name] = int(ofp)
        plug_s = time.monotonic() - t
        missing = [j for j in range(ports) if ofports.get(ifname(j), -1) <= 0]
        if missing:
            raise SystemExit(f"{len(missing)} interfaces got no ofport")
        log(f"plugged in {plug_s:.1f}s; waiting for the controller")
        cloud.wait_controller_synced(hosts, timeout=120)
        log("creating ports")
        monitors = [cloud.flow_monitor(h) for h in hosts]

        present: dict[int, set[int]] = defaultdict(set)  # network -> bridges with a port of it
        latencies, post_times, failures = [], [], 0
        t_all = time.monotonic()
        for j in range(ports):
            b, k = j % bridges, j // per_net
            net = nets[k]
            mac = "fa:16:3e:%02x:%02x:%02x" % (0x80 | (j >> 16), (j >> 8) & 0xFF, j & 0xFF)
            ip = str(net.cidr.network_address + 10 + j % per_net)
            want = {(b, CLASSIFY, rf"in_port={ofports[ifname(j)]}\b"),
                    (b, L2_LOOKUP, rf"dl_dst={mac}\b")}
            want |= {(ob, L2_LOOKUP, rf"dl_dst={mac}\b") for ob in present[k] if ob != b}
            marks = [len(m.events) for m in monitors]
            t0 = time.monotonic()
            cloud.api.create("ports", network_id=net.id, mac_address=mac, name=f"p{j}",
                             fixed_ips=[{"subnet_id": net.subnet["id"], "ip_address": ip}],
                             **{"binding:host_id": hosts[b].name,
                                "binding:profile": {"interface_name": ifname(j)}})
            post_times.append(time.monotonic() - t0)
            done_at = wait_flows(monitors, marks, want, deadline=t0 + 10)
            if done_at is None:
                failures += 1
            else:
                latencies.append(done_at - t0)
            present[k].add(b)
            if (j + 1) % 100 == 0:
                log(f"{j + 1} ports; last {latencies[-1] * 1000 if latencies else 0:.1f} ms; "
                    f"{failures} not converged")
        total_s = time.monotonic() - t_all
        st = cloud.status()
        flows_total = sum(s.get("installed_flows") or 0 for s in st["switches"].values())
        return {"ports": ports, "bridges": bridges, "networks": len(nets),
                "plug_s": plug_s, "total_s": total_s, "failures": failures,
                "lat": latencies, "post": post_times, "flows_total": flows_total}
    finally:
        for m in monitors:
            m.stop()
        cloud.close()


def wait_flows(monitors, marks, want, deadline):
    """Monotonic time at which every (bridge, table, regex) in want was seen, or None."""
    pending = set(want)
    last = 0.0
    while pending:
        progressed = False
        for (b, table, rx) in list(pending):
            m = monitors[b]
            with m.cond:
                evs = m.events[marks[b]:]
            for t, line in evs:
                if ("event=ADDED" in line or "event=MODIFIED" in line) \
                    and f"table={table} " in line and re.search(rx, line):
                    pending.discard((b, table, rx))
                    last = max(last, t)
                    progressed = True
                    break
        if not pending:
            break
        if time.monotonic() > deadline:
            return None
        if not progressed:
            m = monitors[next(iter(pending))[0]]
            with m.cond:
                m.cond.wait(0.01)
    return last


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    import faulthandler
    import signal
    faulthandler.register(signal.SIGUSR1)
    # SIGTERM (e.g. timeout) tears the test bed down like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=1000)
    ap.add_argument("--bridges", type=int, default=10)
    ap.add_argument("--apps", default="",
                    help="[controller] apps, e.g. l2,arp,dhcp,metadata (without the "
                         "firewall); default: the controller's default (all)")
    ap.add_argument("--audit-interval", type=int, default=60,
                    help="the controller's [controller] audit_interval (default 60, as shipped)")
    ap.add_argument("--store", default="sqlite",
                    help="comma-separated stores to measure in turn: sqlite, etcd")
    args = ap.parse_args()
    failures = 0
    for store in [s.strip() for s in args.store.split(",") if s.strip()]:
        if store not in ("sqlite", "etcd"):
            ap.error(f"--store: unknown store {store!r}")
        # The harness starts the cloud on a 3-member etcd cluster of its own.
        os.environ["VMFLOW_TEST_STORE"] = store
        with tempfile.TemporaryDirectory(prefix="vmflow-bench-") as d:
            r = run(args.ports, args.bridges, Path(d), args.audit_interval, args.apps)
        print(f"[{store}]")
        failures += report(r, args)
    return 0 if not failures else 1


def report(r: dict, args) -> int:
    lat = [x * 1000 for x in r["lat"]]
    post = [x * 1000 for x in r["post"]]
    print(f"convergence: {r['ports']} ports over {r['bridges']} real OVS bridges "
          f"(netdev, OF1.3), {r['networks']} vlan networks, audit every {args.audit_interval}s")
    print(f"  interfaces plugged in {r['plug_s']:.1f}s; ports created in {r['total_s']:.1f}s; "
          f"{r['flows_total']} flows installed in total")
    if lat:
        print(f"  API create -> flows installed: p50 {percentile(lat, 50):.1f} ms, "
              f"p90 {percentile(lat, 90):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
              f"max {max(lat):.1f} ms, mean {statistics.mean(lat):.1f} ms")
    print(f"  of which the POST itself: p50 {percentile(post, 50):.1f} ms, "
          f"p99 {percentile(post, 99):.1f} ms")
    print(f"  ports not converged within 10 s: {r['failures']}")
    return r["failures"]


if __name__ == "__main__":
    sys.exit(main())
