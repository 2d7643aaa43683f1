"""Desired-flow computation for 10,000 ports over 10 simulated switches.

    .venv/bin/python bench/compute.py [--ports 10000] [--hosts 10] [--apps l2|all]

Measures, with the controller's own compiler (controller/compiler.py): a
full computation of every switch's desired set (what a controller start
does), its time and memory (tracemalloc: peak during, and retained by the
memo afterwards), and the incremental recompute of one port's change on
every switch that sees its network.
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

from simcloud import docs, switches

from controller.compiler import Dirty, FlowCompiler, SwitchFlows
from controller.runtime import load_apps
from topology.config import new_conf
from topology.store.base import Change
from topology.view import TopologyView


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=10000)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--apps", choices=["l2", "all"], default="all")
    ap.add_argument("--groups", action="store_true",
                    help="every port in one security group with every kind of rule")
    args = ap.parse_args()
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    apps = load_apps(conf)
    if args.apps == "l2":
        apps = [a for a in apps if a.name == "l2"]
    view = TopologyView(1, docs(args.ports, args.hosts, groups=args.groups))
    sws = switches(view)
    compiler = FlowCompiler(apps)

    def full() -> dict:
        memos = {}
        for sw in sws:
            memos[sw.dpid] = SwitchFlows()
            compiler.refresh(view, sw, memos[sw.dpid])
        return memos

    # Timed without tracemalloc (it slows allocation-heavy code severalfold),
    # then measured again with it for memory.
    t0 = time.perf_counter()
    memos = full()
    full_s = time.perf_counter() - t0
    flows = sum(len(m.desired) for m in memos.values())
    del memos
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    memos = full()
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # One port changes (a new allowed address pair): every switch recomputes
    # that port's scope and its network's scope only.
    port = next(iter(view.ports.values()))
    changed = dict(port, allowed_address_pairs=[{"ip_address": "192.0.2.7"}])
    samples = []
    for i in range(20):
        body = changed if i % 2 == 0 else port
        view.apply(Change(view.revision + 1, "ports", port["id"], "put", body))
        t0 = time.perf_counter()
        for sw in sws:
            compiler.refresh(view, sw, memos[sw.dpid],
                             Dirty(scopes={("port", port["id"]), ("network", port["network_id"])}))
        samples.append(time.perf_counter() - t0)
    samples.sort()

    print(f"apps: {', '.join(a.name for a in apps)}")
    print(f"ports {args.ports}, switches {len(sws)}, desired flows {flows} "
          f"({flows / len(sws):.0f} per switch)")
    print(f"full computation: {full_s:.2f} s ({full_s / len(sws) * 1000:.0f} ms per switch)")
    print(f"memory: peak {(peak - base) / 2**20:.1f} MiB, retained {(retained - base) / 2**20:.1f} MiB")
    print(f"one port change, all {len(sws)} switches: p50 {samples[len(samples) // 2] * 1000:.1f} ms, "
          f"max {samples[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
