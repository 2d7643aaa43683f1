"""Flows per host for distributed routing: R routers x N networks x P ports.

    .venv/bin/python bench/dvr_flows.py [--routers 10] [--networks 10] [--ports 100] [--hosts 10]

Every router has N networks (one /24 subnet each, an interface on each);
every network has P VM ports spread round-robin over the hosts. Computes
every host's desired flows with the controller's compiler and every default
app (security groups included: each port in its project's default group),
and reports flows per host, how many of them are the dvr app's, and the
time of the full computation.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

from controller.app import APP_IDS, SwitchView
from controller.compiler import FlowCompiler, SwitchFlows
from controller.pipeline import decode_cookie
from controller.runtime import load_apps
from topology.config import new_conf
from topology.view import TopologyView, interface_name

SG = "5e000000-0000-4000-8000-000000000001"


def docs(routers: int, networks: int, ports: int, hosts: int) -> dict:
    out = {k: {} for k in ("hosts", "networks", "subnets", "ports", "routers",
                           "security_groups", "security_group_rules")}
    for h in range(hosts):
        name = f"host{h}"
        out["hosts"][name] = {"id": name, "name": name, "datapath_id": f"{h + 1:016x}",
                              "dvr_mac": f"fa:16:3f:00:{h // 256:02x}:{h % 256:02x}",
                              "physical_networks": {"physnet1": "uplink"}}
    out["security_groups"][SG] = {"id": SG, "_key": 1, "stateful": True}
    from topology.secgroup_rules import normalise
    rules = ({"direction": "ingress", "ethertype": "IPv4", "remote_group_id": SG},
             {"direction": "egress", "ethertype": "IPv4"})
    for i, rule in enumerate(rules, start=1):
        out["security_group_rules"][f"rule{i}"] = {**normalise(rule), "id": f"rule{i}",
                                                   "_key": i, "security_group_id": SG}
    pkey = 0
    for r in range(routers):
        rid = f"router{r}"
        out["routers"][rid] = {"id": rid, "_key": r + 1, "admin_state_up": True, "routes": []}
        for n in range(networks):
            nkey = r * networks + n + 1
            nid, sid = f"net{nkey}", f"sub{nkey}"
            prefix = f"10.{nkey // 256}.{nkey % 256}"
            out["networks"][nid] = {"id": nid, "_key": nkey, "admin_state_up": True,
                                    "provider:network_type": "vlan",
                                    "provider:physical_network": "physnet1",
                                    "provider:segmentation_id": nkey}
            out["subnets"][sid] = {"id": sid, "network_id": nid, "cidr": f"{prefix}.0/24",
                                   "gateway_ip": f"{prefix}.1"}
            for p in range(ports + 1):
                pkey += 1
                iface = p == ports
                pid = f"port{pkey}"
                out["ports"][pid] = {
                    "id": pid, "_key": pkey, "network_id": nid,
                    "mac_address": f"fa:16:3e:{pkey >> 16:02x}:{(pkey >> 8) & 255:02x}:{pkey & 255:02x}",
                    "fixed_ips": [{"subnet_id": sid,
                                   "ip_address": f"{prefix}.1" if iface else f"{prefix}.{p + 10}"}],
                    "allowed_address_pairs": [], "admin_state_up": True,
                    "binding:host_id": "" if iface else f"host{pkey % hosts}",
                    "device_owner": "network:router_interface_distributed" if iface
                    else "compute:nova",
                    "device_id": rid if iface else "", "port_security_enabled": not iface,
                    "security_groups": [] if iface else [SG]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routers", type=int, default=10)
    ap.add_argument("--networks", type=int, default=10)
    ap.add_argument("--ports", type=int, default=100)
    ap.add_argument("--hosts", type=int, default=10)
    args = ap.parse_args()
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    compiler = FlowCompiler(load_apps(conf))
    view = TopologyView(1, docs(args.routers, args.networks, args.ports, args.hosts))
    dvr_id = APP_IDS["dvr"]
    t0 = time.perf_counter()
    per_host = {}
    for h in view.hosts.values():
        names = {interface_name(p): i for i, p in enumerate(view.ports_on_host(h["name"]), 1)}
        sw = SwitchView(int(h["datapath_id"], 16), h, {**names, "uplink": 60000})
        memo = SwitchFlows()
        compiler.refresh(view, sw, memo)
        by_app = Counter(decode_cookie(f.cookie)[0] for f in memo.desired.values())
        per_host[h["name"]] = (len(memo.desired), by_app[dvr_id])
    took = time.perf_counter() - t0
    assert compiler.errors == 0 and compiler.violations == 0 and compiler.conflicts == 0
    totals = sorted(t for t, _ in per_host.values())
    dvr = sorted(d for _, d in per_host.values())
    print(f"{args.routers} routers x {args.networks} networks x {args.ports} ports, "
          f"{args.hosts} hosts ({len(view.ports)} ports)")
    print(f"flows per host: min {totals[0]}, max {totals[-1]}; of them dvr's: "
          f"min {dvr[0]}, max {dvr[-1]}")
    print(f"full computation of every host: {took:.2f} s")


if __name__ == "__main__":
    main()
