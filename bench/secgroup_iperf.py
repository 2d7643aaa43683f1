"""iperf3 TCP between two VMs on real OVS: no firewall, a 10-rule group and
a 1,000-rule group, in the same run, as ratios to no firewall.

    sudo .venv/bin/python bench/secgroup_iperf.py [--seconds 5] [--rounds 2]

Two VMs on one host (the userspace datapath does the work either way); the
receiver's port is, in turn: port security off (no firewall at all), in a
group of 10 rules (the 10th admits iperf3's port), in a group of 1,000 rules
(the 1,000th admits it). The sender is in a group that allows all egress, so
its own zone runs ct() in the firewalled rounds too. Rounds alternate the
three setups to spread the machine's noise over them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "mininet"))

from harness import Cloud  # noqa: E402

PORT = 5201


def group(cloud: Cloud, name: str, n_rules: int) -> dict:
    g = cloud.api.create("security_groups", name=name)
    rules = [{"security_group_id": g["id"], "direction": "ingress", "ethertype": "IPv4",
              "protocol": "tcp", "ports": str(10000 + i)} for i in range(n_rules - 1)]
    rules.append({"security_group_id": g["id"], "direction": "ingress", "ethertype": "IPv4",
                  "protocol": "tcp", "ports": str(PORT)})
    cloud.api.request("POST", "/v2.0/security-group-rules", {"security_group_rules": rules})
    return g


def iperf(client, server, seconds: float) -> float:
    """Mbit/s received."""
    p = client.run(["iperf3", "-c", server.ip, "-p", str(PORT), "-t", str(int(seconds)), "-J",
                    "--connect-timeout", "3000"], timeout=seconds + 30)
    data = json.loads(p.stdout)
    if "error" in data:
        raise SystemExit(f"iperf3: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cloud = Cloud.start(Path(tempfile.mkdtemp(prefix="vmflow-iperf-")))
    try:
        h1 = cloud.add_host("h1")
        net = cloud.add_network("n", cidr="10.0.0.0/24", vlan=100)
        g10, g1000 = group(cloud, "ten", 10), group(cloud, "thousand", 1000)
        a = cloud.add_vm(h1, net, "a")
        b = cloud.add_vm(h1, net, "b", port_security_enabled=False, security_groups=[])
        setups = {
            "no firewall": dict(port_security_enabled=False, security_groups=[]),
            "10 rules": dict(port_security_enabled=True, security_groups=[g10["id"]]),
            "1,000 rules": dict(port_security_enabled=True, security_groups=[g1000["id"]]),
        }
        b.popen(["iperf3", "-s", "-p", str(PORT)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)     # ended with the VM
        got: dict[str, list[float]] = {k: [] for k in setups}
        for _ in range(args.rounds):
            for name, fields in setups.items():
                b.update_port(**fields)
                cloud.wait_controller_synced([h1], timeout=60)
                # the status file trails the switch by up to a second: wait
                # until the bridge's flows stop changing
                cloud.wait_flows_stable([h1], quiet=1.5, timeout=60)
                print(f"  running {name}", flush=True)
                got[name].append(iperf(a, b, args.seconds))
        base = statistics.median(got["no firewall"])
        print(f"iperf3 TCP, {args.seconds:.0f} s x {args.rounds} rounds, same host "
              "(userspace datapath)")
        for name, values in got.items():
            med = statistics.median(values)
            print(f"  {name:>12}: {med:8.0f} Mbit/s  ({med / base:.2f} of no firewall; "
                  f"runs {', '.join(f'{v:.0f}' for v in values)})")
    finally:
        cloud.close()


if __name__ == "__main__":
    main()
