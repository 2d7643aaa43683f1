"""Install a given desired flow set on one real switch through vmflow's own
OpenFlow stack, read it back, audit, and write what happened as JSON.

    python flow_driver.py PORT DPID FLOWS RESULT

Listens for OpenFlow 1.3 on 127.0.0.1:PORT with vmflow's os-ken app
(controller/ofapp.py). When the switch DPID connects, its OFChannel drives a
SwitchReconciler (controller/reconciler.py) exactly as the controller does:

    sync     the flows in FLOWS (a Python literal: a list of
             (table, priority, match, instructions, cookie)), canonicalised
             as the compiler does, plus the meters they use
    read     flow-stats, decoded by controller/codec.py
    audit    the same reconciler re-reads and diffs (must send nothing)
    restart  a fresh reconciler with no belief syncs (must send nothing)

RESULT gets the counts and every difference between desired and read back;
then the process exits. The scenario (test_actions_ovs.py) judges them.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import sys
import threading
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from controller import codec  # noqa: E402
from controller.flow import Flow  # noqa: E402
from controller.reconciler import ChannelError, MeterSpec, SwitchReconciler, diff_flows  # noqa: E402

METER = MeterSpec(rate=100, burst=10)


class DriverCore:
    """The part of controller.core.Controller that ofapp.py calls."""

    def __init__(self, dpid: int, desired: dict, result_path: Path):
        self.dpid = dpid
        self.desired = desired
        self.result_path = result_path
        self.dispatcher = None   # packet-ins are ignored
        self.started = False

    def switch_connected(self, dpid, channel, ports) -> None:
        if dpid != self.dpid or self.started:
            return
        self.started = True
        # Never block os-ken's event thread: replies arrive through it.
        threading.Thread(target=self.run, args=(channel,), daemon=True).start()

    def switch_disconnected(self, dpid, channel) -> None:
        pass

    def port_changed(self, dpid, name, port_no) -> None:
        pass

    def refused(self, channel) -> list[str]:
        """The flows the switch refuses, each sent in a bundle of its own."""
        out = []
        for f in self.desired.values():
            try:
                channel.bundle([("add", f)])
            except ChannelError as e:
                out.append(f"{f!r}: {e}")
        return out

    def run(self, channel) -> None:
        result: dict = {"error": None}
        try:
            rec = SwitchReconciler(self.dpid, channel, METER)
            try:
                result["first_sync"] = rec.sync(self.desired)
            except ChannelError:
                result["refused"] = self.refused(channel)
                raise
            result["first_stats"] = dict(rec.stats)
            read = {f.key: f for f in channel.read_flows()}
            result["read_flows"] = len(read)
            result["differences"] = [
                {"op": op, "desired": repr(self.desired.get(f.key)), "read": repr(read.get(f.key))}
                for op, f in diff_flows(self.desired, read)]
            result["read_back"] = {repr(k): repr(f.instructions) for k, f in read.items()}
            before = dict(rec.stats)
            result["audit_sent"] = rec.sync(self.desired, audit=True)
            result["audit_flow_mods"] = rec.stats["flow_mods"] - before["flow_mods"]
            result["audit_meter_mods"] = rec.stats["meter_mods"] - before["meter_mods"]
            result["audit_repairs"] = rec.stats["repairs"]
            fresh = SwitchReconciler(self.dpid, channel, METER)
            result["restart_sent"] = fresh.sync(self.desired)
        except Exception as e:   # reported to the test, which fails with it
            result["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        tmp = self.result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.rename(self.result_path)
        logging.shutdown()
        os._exit(0)


def main() -> None:
    port, dpid, flows_path, result_path = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    flows = [codec.canonical(Flow(*t)) for t in ast.literal_eval(Path(flows_path).read_text())]
    desired = {f.key: f for f in flows}
    if len(desired) != len(flows):
        raise SystemExit("two flows share a key (table, priority, match)")

    import os_ken.cfg
    from os_ken.base.app_manager import AppManager
    import os_ken.controller.controller  # noqa: F401  (after app_manager: import cycle)

    from controller import ofapp
    ofapp.CORE = DriverCore(int(dpid, 0), desired, Path(result_path))
    os_ken.cfg.CONF(args=["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", port],
                    project="os_ken", default_config_files=[])
    try:
        AppManager.run_apps(["controller.ofapp"])
    except AttributeError:
        pass   # run_apps' shutdown calls kill() on native threads (DESIGN.md)
    os._exit(1)   # os-ken stopped before the switch was done


if __name__ == "__main__":
    main()
