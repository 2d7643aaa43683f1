"""Controller restart with 10,000 ports: time to verify every switch, flow-mods sent.

    .venv/bin/python bench/restart.py [--ports 10000] [--hosts 10]

Simulated datapaths: each of the --hosts switches is a channel that holds
the flows a previous controller run installed. Its flow-stats reply is
made of real os-ken OFPMatch / OFPInstruction objects parsed from the wire
bytes of those flows, so the measured time includes decoding them
(controller/codec.py); the TCP transfer of the replies is not included.
A real SQLite store holds the topology. A fresh Controller (core.py) then
starts, loads the store, gets every switch's connect, computes the desired
flows, reads each switch and diffs: the goal is 0 flow-mods and 0 meter-mods.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from types import SimpleNamespace

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from simcloud import docs, switches

from controller import codec
from controller.compiler import FlowCompiler, SwitchFlows
from controller.core import Controller
from controller.reconciler import MeterSpec, meters_used
from controller.runtime import load_apps
from topology.config import new_conf
from topology.store import SqliteStore
from topology.view import TopologyView

DP = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=1)


def as_stat(f):
    """A flow as the flow-stats entry os-ken would parse from the switch's reply."""
    mod = codec.flow_mod(DP, f, "add")
    mod.serialize()
    buf = bytes(mod.buf)
    start = ofp.OFP_FLOW_MOD_SIZE - ofp.OFP_MATCH_SIZE
    match = parser.OFPMatch.parser(buf, start)
    offset = start + match.length + (-match.length % 8)
    instructions = []
    while offset < len(buf):
        ins = parser.OFPInstruction.parser(buf, offset)
        instructions.append(ins)
        offset += ins.len
    return SimpleNamespace(table_id=mod.table_id, priority=f.priority, match=match,
                           instructions=instructions, cookie=f.cookie)


class SimSwitch:
    def __init__(self, stats, meters):
        self.stats = stats
        self.meters = meters
        self.sent_flow_mods = 0
        self.sent_meter_mods = 0

    def read_flows(self):
        return [codec.from_stats(ofp, s) for s in self.stats]

    def read_meters(self):
        return dict(self.meters)

    def meter_mods(self, ops):
        self.sent_meter_mods += len(ops)

    def bundle(self, ops):
        self.sent_flow_mods += len(ops)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=10000)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--no-groups", action="store_true",
                    help="ports in no security group (by default all in one, every kind "
                         "of rule and an address group present)")
    args = ap.parse_args()
    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    conf.set_override("audit_interval", 3600, group="controller")
    apps = load_apps(conf)
    data = docs(args.ports, args.hosts, groups=not args.no_groups)
    tmp = tempfile.mkdtemp(prefix="vmflow-bench-")
    store = SqliteStore(f"{tmp}/db.sqlite")
    with store.transaction() as t:
        for kind in [k for k in data if k != "ports"] + ["ports"]:
            for body in data[kind].values():
                parent = body.get("network_id") if kind in ("ports", "subnets") else \
                    body.get("security_group_id")
                t.put(kind, body["id"], body, parent_id=parent)

    # What the previous controller run left on each switch.
    view = TopologyView(1, data)
    spec = MeterSpec(conf.controller.controller_rate_pps, conf.controller.controller_burst)
    compiler = FlowCompiler(apps)
    sims, ports = {}, {}
    for sw in switches(view):
        memo = SwitchFlows()
        compiler.refresh(view, sw, memo)
        sims[sw.dpid] = SimSwitch([as_stat(f) for f in memo.desired.values()],
                                  {m: spec for m in meters_used(memo.desired.values())})
        ports[sw.dpid] = sw.ports_by_name
    total = sum(len(s.stats) for s in sims.values())

    t0 = time.perf_counter()
    ctl = Controller(conf, store, apps)
    ctl.start()
    for dpid, sim in sims.items():
        ctl.switch_connected(dpid, sim, ports[dpid])
    while True:
        st = ctl.status()
        if len(st["switches"]) == len(sims) and st["synced"]:
            break
        time.sleep(0.01)
    verify_s = time.perf_counter() - t0
    ctl.stop()
    flow_mods = sum(s["flow_mods"] for s in st["switches"].values())
    meter_mods = sum(s["meter_mods"] for s in st["switches"].values())
    assert flow_mods == sum(s.sent_flow_mods for s in sims.values())
    print(f"apps: {', '.join(a.name for a in apps)}")
    print(f"ports {args.ports}, switches {len(sims)}, installed flows {total}")
    print(f"restart: all switches verified in {verify_s:.2f} s; "
          f"flow-mods sent {flow_mods}, meter-mods sent {meter_mods}")
    if flow_mods or meter_mods:
        raise SystemExit("FAIL: a restart with unchanged state sent changes")


if __name__ == "__main__":
    main()
