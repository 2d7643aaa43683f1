"""The firewall's flow economy and compile times (apps/secgroup.py), no switch.

    .venv/bin/python bench/secgroup_flows.py

With the controller's own compiler on a simulated two-host cloud:
1. flows per port and per rule for a server port whose group has R rules
   over a remote group of M members (10, 100, 1,000) on the other host:
   what is installed (conjunctive matches), against the cross product a
   compiler without conjunctions would install (R x M x port ranges);
2. the time to apply a 1,000-rule group to 100 ports (recompute of the
   host's switch after the ports join the group);
3. the time for one member joining a 1,000-member remote group to take
   effect in the desired flows of the host that refers to it (the
   incremental recompute the controller does for that change), and which
   flows change.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.secgroup import SecGroupApp  # noqa: E402
from controller import scopes  # noqa: E402
from controller.app import SwitchView  # noqa: E402
from controller.compiler import Dirty, FlowCompiler, SwitchFlows  # noqa: E402
from controller.fields import port_masks  # noqa: E402
from topology.secgroup_rules import normalise  # noqa: E402
from topology.store.base import Change  # noqa: E402
from topology.view import TopologyView, interface_name  # noqa: E402

SERVER, CLIENTS = "5e000000-0000-4000-8000-000000000001", "c1000000-0000-4000-8000-000000000002"
FIREWALL_TABLES = ("egress_firewall", "egress_rules", "ingress_firewall", "ingress_rules")


def port(n: int, host: str, group: str) -> dict:
    return {"id": f"{n:08x}-0000-4000-8000-{n:012x}", "_key": n, "network_id": "net",
            "mac_address": "fa:16:3e:%02x:%02x:%02x" % (n >> 16 & 255, n >> 8 & 255, n & 255),
            "fixed_ips": [{"ip_address": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}],
            "allowed_address_pairs": [], "admin_state_up": True, "binding:host_id": host,
            "device_owner": "compute:nova", "port_security_enabled": True,
            "security_groups": [group]}


def rules(group: str, count: int, remote: str | None, key0: int) -> dict:
    out = {}
    for i in range(count):
        body = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                "ports": f"{1000 + 2 * i},{20000 + i}-{20000 + i + 7}"}
        if remote:
            body["remote_group_id"] = remote
        rid = f"r-{group[:4]}-{i}"
        out[rid] = {**normalise(body), "id": rid, "_key": key0 + i, "security_group_id": group}
    return out


def cloud(members: int, n_rules: int, servers: int = 1, remote: bool = True) -> dict:
    hosts = {h: {"id": h, "name": h, "datapath_id": f"{i + 1:016x}",
                 "physical_networks": {"physnet1": "up"}} for i, h in enumerate(("h1", "h2"))}
    ports = [port(n, "h1", SERVER) for n in range(1, servers + 1)]
    ports += [port(100_000 + n, "h2", CLIENTS) for n in range(members)]
    return {"hosts": hosts,
            "networks": {"net": {"id": "net", "_key": 1, "admin_state_up": True,
                                 "provider:network_type": "vlan",
                                 "provider:physical_network": "physnet1",
                                 "provider:segmentation_id": 100}},
            "ports": {p["id"]: p for p in ports},
            "security_groups": {SERVER: {"id": SERVER, "_key": 1, "stateful": True},
                                CLIENTS: {"id": CLIENTS, "_key": 2, "stateful": True}},
            "security_group_rules": {
                **rules(SERVER, n_rules, CLIENTS if remote else None, 1),
                **normalise_egress(CLIENTS)}}


def normalise_egress(group: str) -> dict:
    rid = "r-clients-out"
    return {rid: {**normalise({"direction": "egress", "ethertype": "IPv4"}), "id": rid,
                  "_key": 900_000, "security_group_id": group}}


def h1(view: TopologyView) -> SwitchView:
    host = view.hosts["h1"]
    names = [interface_name(p) for p in view.ports_on_host("h1")]
    return SwitchView(1, host, {**{n: i for i, n in enumerate(names, 1)}, "up": 9999})


def firewall_flows(memo: SwitchFlows) -> int:
    return sum(1 for f in memo.desired.values() if f.table in FIREWALL_TABLES)


def economy() -> None:
    print("1. flows on the server's host, one server port, R rules of 2 port ranges "
          "(1 + 8 ports) over a remote group of M members on the other host")
    print(f"   {'M':>5} {'R':>4} {'installed':>10} {'per rule':>9} {'cross product':>14}")
    for members in (10, 100, 1000):
        for n_rules in (1, 10):
            view = TopologyView(1, cloud(members, n_rules))
            memo = SwitchFlows()
            FlowCompiler([SecGroupApp()]).refresh(view, h1(view), memo)
            installed = firewall_flows(memo)
            masks = len(port_masks(1000, 1000)) + len(port_masks(20000, 20007))
            cross = n_rules * members * masks
            print(f"   {members:>5} {n_rules:>4} {installed:>10} {installed / n_rules:>9.1f} "
                  f"{cross:>14}")
    view = TopologyView(1, cloud(0, 10, remote=False))
    memo = SwitchFlows()
    FlowCompiler([SecGroupApp()]).refresh(view, h1(view), memo)
    print(f"   no remote group, R=10: {firewall_flows(memo)} flows")
    for ports in (1, 10, 100):
        data = cloud(0, 10, servers=ports, remote=False)
        view = TopologyView(1, data)
        memo = SwitchFlows()
        FlowCompiler([SecGroupApp()]).refresh(view, h1(view), memo)
        print(f"   the same group on {ports:>3} ports: {firewall_flows(memo)} flows")


def apply_big_group() -> None:
    data = cloud(10, 1000, servers=100)
    for p in data["ports"].values():
        if p["binding:host_id"] == "h1":
            p["security_groups"] = []
    view = TopologyView(1, data)
    sw = h1(view)
    compiler = FlowCompiler([SecGroupApp()])
    memo = SwitchFlows()
    compiler.refresh(view, sw, memo)
    memo.take_all()
    t0 = time.perf_counter()
    dirty = Dirty()
    for p in [p for p in view.ports.values() if p["binding:host_id"] == "h1"]:
        new = {**p, "security_groups": [SERVER]}
        old = view.apply(Change(view.revision + 1, "ports", p["id"], "put", new))
        dirty.scopes |= scopes.dirtied(view, "ports", old, new)
    compiler.refresh(view, sw, memo, dirty)
    elapsed = time.perf_counter() - t0
    delta, _ = memo.take_delta()
    print(f"2. a 1,000-rule group applied to 100 ports on one host: recompute {elapsed:.2f} s, "
          f"{len(delta)} flows to install")


def member_joins() -> None:
    view = TopologyView(1, cloud(1000, 10))
    sw = h1(view)
    compiler = FlowCompiler([SecGroupApp()])
    memo = SwitchFlows()
    compiler.refresh(view, sw, memo)
    memo.take_all()
    times, changed = [], []
    for n in range(20):
        p = port(200_000 + n, "h2", CLIENTS)
        t0 = time.perf_counter()
        old = view.apply(Change(view.revision + 1, "ports", p["id"], "put", p))
        dirty = Dirty(scopes=scopes.dirtied(view, "ports", old, p))
        compiler.refresh(view, sw, memo, dirty)
        times.append((time.perf_counter() - t0) * 1000)
        delta, _ = memo.take_delta()
        changed.append(len(delta))
    print(f"3. one member joins a 1,000-member remote group (10 rules refer to it): "
          f"p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms to recompute h1; "
          f"{statistics.median(changed):.0f} flow(s) change (OVN's address set: 11-12 ms for "
          f"+-1 IP in 10k)")


if __name__ == "__main__":
    economy()
    apply_big_group()
    member_joins()
