"""`vmflow trace` and `vmflow explain`: the packet walker and cookies, for people.

    vmflow trace --host h1 --from vm-a 'tcp,nw_dst=10.0.0.5,tp_dst=22'
    vmflow explain 0x766d010100000005
    ovs-ofctl -O OpenFlow13 dump-flows br-int | vmflow explain

trace reads the store, takes the host's interface -> ofport map from the
running controller's status file (controller/status.py), computes the
host's desired flows with the real compiler and apps, walks the packet
through them (controller/walker.py), and prints each stage it passed: the
flow it matched, the app and the resource that wanted that flow (from the
cookie, named from the store), the stage's doc, and the verdict, as
ovn-trace does.

The packet is ovs-ofctl-like text, completed from the sending port
(controller/tracespec.py), or a captured frame walked as it is (--frame HEX).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from typing import Any, Iterable, Optional

from controller import pipeline
from controller.app import APP_IDS, SwitchView
from controller.packetfields import make_packet, packet_from_frame
from controller.tracespec import fill_packet, parse_spec
from controller.walker import Output, Trace, Walker

class TraceError(Exception):
    """Bad input or missing state; the message says which."""


# -- the store side ----------------------------------------------------------------
class Topology:
    """A store snapshot, its TopologyView, and names for what flows mention."""

    def __init__(self, revision: int, data: dict):
        from topology.view import TopologyView
        self.data = data
        self.view = TopologyView(revision, data)
        self._by_key: dict[str, dict[int, dict]] = {}

    def by_key(self, kind: str, key: int) -> Optional[dict]:
        index = self._by_key.get(kind)
        if index is None:
            index = self._by_key[kind] = {doc["_key"]: doc for doc in self.data.get(kind, {}).values()
                                          if isinstance(doc.get("_key"), int)}
        return index.get(key)

    def resource_text(self, kind: Optional[str], key: int) -> str:
        if kind is None:
            return "the switch" if not key else f"key {key}"
        doc = self.by_key(kind, key)
        noun = kind[:-1] if kind.endswith("s") else kind
        if doc is None:
            return f"{noun} key {key} (not in the store)"
        return f"{noun} {_doc_name(doc)}"


def _doc_name(doc: dict) -> str:
    name, ident = doc.get("name"), doc.get("id")
    if name and name != ident:
        return f"{name} ({ident})"
    return str(ident)


def load_topology(conf) -> Topology:
    from topology.store import open_store
    url = conf.store
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///"):]):
        raise TraceError(f"no store at {url}")
    store = open_store(url)
    try:
        revision, data = store.snapshot()
    finally:
        store.close()
    return Topology(revision, data)


def app_names() -> dict[int, str]:
    names = {v: k for k, v in APP_IDS.items()}
    names.setdefault(pipeline.PIPELINE_APP_ID, "pipeline")   # the table misses
    return names


def owner_text(cookie: int, topo: Optional[Topology]) -> str:
    decoded = pipeline.decode_cookie(cookie)
    if decoded is None:
        return f"not vmflow's (cookie {cookie:#x})"
    app_id, kind, key = decoded
    app = app_names().get(app_id, f"app {app_id}")
    if kind is None and not key:
        return f"{app}, per switch"
    if topo is None:
        return f"{app}, {kind or 'resource'} key {key}"
    return f"{app}, {topo.resource_text(kind, key)}"


def switch_ports(conf, dpid_hex: str, status_path: Optional[str]) -> dict[str, int]:
    """interface name -> ofport of a connected switch, from the controller's status file."""
    from controller.status import default_path, read_status
    path = status_path or default_path(conf)
    status = read_status(path) if path else None
    if status is None:
        raise TraceError(f"no controller status at {path}: the port numbers come from a "
                         "running controller (or give --status FILE)")
    sw = (status.get("switches") or {}).get(dpid_hex)
    if sw is None:
        raise TraceError(f"the controller (status {path}) has no switch {dpid_hex} connected")
    # The walk is of what the controller wants; say when the switch may differ.
    running = False
    if status.get("pid"):
        try:
            os.kill(int(status["pid"]), 0)
            running = True
        except OSError:
            pass
    if not running:
        print(f"vmflow trace: warning: the controller that wrote {path} is not running; "
              "port numbers may be stale", file=sys.stderr)
    elif sw.get("in_sync") is False:
        print(f"vmflow trace: warning: switch {dpid_hex} is not in sync with the store yet: "
              "its flows may differ from the ones walked", file=sys.stderr)
    return {name: int(n) for name, n in (sw.get("ports") or {}).items()}


def find_host(topo: Topology, text: str) -> dict:
    from topology.view import parse_dpid
    host = topo.view.host_by_name.get(text)
    if host is None:
        try:
            host = topo.view.host_by_dpid.get(parse_dpid(text))
        except ValueError:
            host = None
    if host is None:
        known = ", ".join(sorted(topo.view.host_by_name)) or "none"
        raise TraceError(f"--host {text}: no such host (known: {known})")
    return host


class Origin:
    """Where the traced packet enters: a VM port, or an uplink."""

    def __init__(self, in_port: int, port: Optional[dict] = None, physnet: Optional[str] = None,
                 interface: str = ""):
        self.in_port, self.port, self.physnet, self.interface = in_port, port, physnet, interface

    def text(self) -> str:
        if self.port is not None:
            return f"port {_doc_name(self.port)}, {self.interface} ofport {self.in_port}"
        return f"uplink of {self.physnet}, {self.interface} ofport {self.in_port}"


def find_origin(topo: Topology, host: dict, ports: dict[str, int], text: str) -> Origin:
    from topology.view import interface_name
    uplinks = host.get("physical_networks") or {}
    for physnet, iface in uplinks.items():
        if text in (physnet, iface):
            if iface not in ports:
                raise TraceError(f"--from {text}: the uplink {iface} is not plugged into "
                                 f"host {host['name']}'s bridge")
            return Origin(ports[iface], physnet=physnet, interface=iface)
    all_ports = list(topo.view.ports.values())
    candidates = [p for p in all_ports if p["id"] == text]
    if not candidates:
        candidates = [p for p in all_ports if p.get("name") == text or interface_name(p) == text]
    if not candidates and len(text) >= 4:
        candidates = [p for p in all_ports if p["id"].startswith(text)]
    if len(candidates) > 1:
        here = [p for p in candidates if p.get("binding:host_id") == host["name"]]
        candidates = here or candidates
    if not candidates:
        raise TraceError(f"--from {text}: no such port (a port id, id prefix, name, interface "
                         f"name, or a physical network of host {host['name']})")
    if len(candidates) > 1:
        raise TraceError(f"--from {text}: {len(candidates)} ports match: "
                         + ", ".join(p["id"] for p in candidates))
    port = candidates[0]
    bound = port.get("binding:host_id")
    if bound != host["name"]:
        raise TraceError(f"--from {text}: port {port['id']} is bound to "
                         f"{bound or 'no host'}, not {host['name']}")
    iface = interface_name(port)
    if iface not in ports:
        raise TraceError(f"--from {text}: interface {iface} of port {port['id']} is not "
                         f"plugged into host {host['name']}'s bridge")
    return Origin(ports[iface], port=port, interface=iface)


def host_flows(conf, topo: Topology, host: dict, ports: dict[str, int]) -> list:
    """The host's desired flows, from the real compiler and the configured apps."""
    from controller.compiler import FlowCompiler, SwitchFlows
    from controller.runtime import AppLoadError, load_apps
    from topology.view import parse_dpid
    try:
        apps = load_apps(conf)
    except AppLoadError as e:
        raise TraceError(str(e)) from None
    sw = SwitchView(parse_dpid(host["datapath_id"]), host, dict(ports))
    memo = SwitchFlows()
    compiler = FlowCompiler(apps)
    compiler.refresh(topo.view, sw, memo)
    if compiler.errors:
        raise TraceError(f"apps failed computing the flows: {compiler.app_errors}")
    return list(memo.desired.values())


# -- rendering ------------------------------------------------------------------------
def port_text(port, host: dict, ports: dict[str, int], topo: Topology) -> str:
    if not isinstance(port, int):
        return str(port)
    names = [n for n, p in ports.items() if p == port]
    if not names:
        return f"ofport {port}"
    iface = names[0]
    for physnet, up in (host.get("physical_networks") or {}).items():
        if up == iface:
            return f"ofport {port} = uplink of {physnet} ({iface})"
    doc = topo.view.port_by_interface.get((host["name"], iface))
    if doc is not None:
        return f"ofport {port} = port {_doc_name(doc)} ({iface})"
    return f"ofport {port} ({iface})"


def render(trace: Trace, *, host: dict, origin: Origin, packet_text: str, ct: list[str],
           ports: dict[str, int], topo: Topology, docs: bool = True) -> str:
    lines = [f"vmflow trace on host {host['name']} (datapath {host['datapath_id']})",
             f"from {origin.text()}",
             f"packet: {packet_text}",
             f"conntrack answers: {', '.join(ct)}", ""]
    seen_docs: set[str] = set()
    for step in trace.steps:
        pad = "    " * step.depth
        if step.recirculation:
            lines.append(f"{pad}--- {step.recirculation} ---")
        number = step.number
        head = f"{pad}{number if number is not None else '?':>2}. {step.table}"
        if step.flow is None:
            lines.append(f"{head}: no flow matched")
        else:
            lines.append(f"{head}, priority {step.priority}: {step.match}")
            if step.conjunction is not None:
                lines.append(f"{pad}    found by conjunction {step.conjunction}: "
                             + "; ".join(f"{f.priority} {_m(f)}" for f in step.conj_flows))
            lines.append(f"{pad}    wanted by {owner_text(step.flow.cookie, topo)}")
        if docs and step.doc and step.table not in seen_docs:
            seen_docs.add(step.table)
            lines += textwrap.wrap(step.doc, 96, initial_indent=f"{pad}    # ",
                                   subsequent_indent=f"{pad}    # ")
        miss_doc = _miss_doc(step)
        if docs and miss_doc:
            lines += textwrap.wrap("Table miss: " + miss_doc, 96, initial_indent=f"{pad}    # ",
                                   subsequent_indent=f"{pad}    # ")
        if step.actions:
            lines.append(f"{pad}    -> " + ", ".join(step.actions))
    lines.append("")
    lines += verdict_lines(trace, host, ports, topo)
    for e in trace.errors:
        lines.append(f"warning: {e}")
    return "\n".join(lines)


def _miss_doc(step) -> str:
    """The stage's table-miss doc, when the step hit the miss (the flow the
    compiler writes from the stage's declaration, or no flow at all)."""
    stage = pipeline.STAGES.get(step.table)
    if stage is None or not stage.miss_doc:
        return ""
    if step.flow is None:
        return stage.miss_doc
    owner = pipeline.decode_cookie(step.flow.cookie)
    if owner is not None and owner[0] == pipeline.PIPELINE_APP_ID and not step.flow.match:
        return stage.miss_doc
    return ""


def _m(f) -> str:
    from controller.packetfields import match_text
    return match_text(f.match)


def verdict_lines(trace: Trace, host: dict, ports: dict[str, int], topo: Topology) -> list[str]:
    if trace.dropped:
        d = trace.first_drop
        why = f": {d.reason}" if d else ""
        return [f"verdict: dropped in {trace.dropped_at}{why}"]
    out = []
    for o in trace.outputs:
        tag = f", vlan {'.'.join(map(str, o.vlans))}" if o.vlans else ", untagged"
        via = f", through meter{'s' if len(o.meters) > 1 else ''} " \
              f"{', '.join(map(str, o.meters))}" if o.meters else ""
        out.append(f"verdict: output to {port_text(o.port, host, ports, topo)}{tag}{via}")
    for o in trace.controller:
        via = f" through meter {o.meter}" if o.meter else ""
        out.append(f"verdict: to the controller{via}, for "
                   f"{owner_text(o.flow.cookie, topo).split(',')[0]}")
    return out


def trace_json(trace: Trace, *, host: dict, origin: Origin, packet: dict,
               ports: dict[str, int], topo: Topology) -> dict:
    def out(o: Output) -> dict:
        return {"port": o.port, "vlan": o.vlans, "table": o.table, "path": list(o.path),
                "name": port_text(o.port, host, ports, topo), "meter": o.meter,
                "meters": list(o.meters),
                "owner": owner_text(o.flow.cookie, topo)}
    return {
        "host": host["name"], "datapath_id": host["datapath_id"], "in_port": origin.in_port,
        "packet": {k: v for k, v in packet.items()},
        "steps": [{"table": s.table, "number": s.number, "depth": s.depth,
                   "priority": s.priority, "match": s.match,
                   "owner": owner_text(s.flow.cookie, topo) if s.flow else None,
                   "cookie": hex(s.flow.cookie) if s.flow else None,
                   "actions": s.actions, "conjunction": s.conjunction,
                   "recirculation": s.recirculation} for s in trace.steps],
        "verdict": {"dropped": trace.dropped, "dropped_at": trace.dropped_at,
                    "reason": trace.first_drop.reason if trace.dropped and trace.drops else None,
                    "outputs": [out(o) for o in trace.outputs],
                    "controller": [out(o) for o in trace.controller],
                    "text": trace.verdict},
        "errors": trace.errors,
    }


# -- the commands ---------------------------------------------------------------------
def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    if command == "trace":
        p.add_argument("--host", required=True, help="host name (or datapath id)")
        p.add_argument("--from", dest="from_", required=True, metavar="PORT",
                       help="port id, id prefix, name or interface name; or a physical "
                            "network name for a packet coming in by the uplink")
        p.add_argument("--ct-state", action="append", metavar="STATE",
                       help="what conntrack answers each ct() in turn (new, est, rel, inv, "
                            "est+rpl, ...; the last repeats); default new")
        p.add_argument("--status", metavar="FILE",
                       help="the controller's status file (default: as `vmflow status`)")
        p.add_argument("--format", choices=("text", "json"), default="text")
        p.add_argument("--no-docs", action="store_true", help="leave out the stage docs")
        p.add_argument("--frame", metavar="HEX",
                       help="the packet as a whole Ethernet frame in hex (e.g. from "
                            "tcpdump -xx), instead of FLOW")
        p.add_argument("flow", metavar="FLOW", nargs="?",
                       help="the packet, e.g. 'tcp,nw_dst=10.0.0.5,tp_dst=22'")
    else:
        p.add_argument("cookies", nargs="*", metavar="COOKIE",
                       help="flow cookies (0x... or decimal); none or '-': dump-flows "
                            "lines on stdin")


def run(command: str, conf, args: argparse.Namespace) -> int:
    try:
        return run_trace(conf, args) if command == "trace" else run_explain(conf, args)
    except TraceError as e:
        print(f"vmflow {command}: {e}", file=sys.stderr)
        return 2


def run_trace(conf, args: argparse.Namespace) -> int:
    if (args.flow is None) == (args.frame is None):
        raise TraceError("give the packet as FLOW or as --frame HEX (one of them)")
    frame = None
    fields: dict[str, Any] = {}
    if args.frame is not None:
        try:
            frame = bytes.fromhex(re.sub(r"[\s:]", "", args.frame))
        except ValueError:
            raise TraceError("--frame: not hex") from None
    else:
        try:
            fields = parse_spec(args.flow)
        except ValueError as e:
            raise TraceError(f"FLOW: {e}") from None
    ct = args.ct_state or ["new"]
    try:
        from controller.packetfields import parse_ct_state
        for s in ct:
            parse_ct_state(s)
    except ValueError as e:
        raise TraceError(f"--ct-state: {e}") from None
    topo = load_topology(conf)
    host = find_host(topo, args.host)
    dpid_hex = f"{_dpid(host):016x}"
    ports = switch_ports(conf, dpid_hex, args.status)
    origin = find_origin(topo, host, ports, args.from_)
    try:
        if frame is not None:
            pkt = packet_from_frame(frame, origin.in_port)
        else:
            pkt = make_packet(fill_packet(fields, origin.in_port, origin.port, topo.view))
    except ValueError as e:
        raise TraceError(f"{'--frame' if frame is not None else 'FLOW'}: {e}") from None
    flows = host_flows(conf, topo, host, ports)
    trace = Walker(flows).walk(pkt, ct=ct)
    if args.format == "json":
        print(json.dumps(trace_json(trace, host=host, origin=origin, packet=pkt.snapshot(),
                                    ports=ports, topo=topo), indent=1, sort_keys=True))
    else:
        print(render(trace, host=host, origin=origin, packet_text=pkt.text(), ct=ct,
                     ports=ports, topo=topo, docs=not args.no_docs))
    return 0


def _dpid(host: dict) -> int:
    from topology.view import parse_dpid
    return parse_dpid(host["datapath_id"])


_COOKIE_RE = re.compile(r"cookie=(0x[0-9a-fA-F]+|\d+)")
_TABLE_RE = re.compile(r"table=(\d+)")


def explain_cookie(cookie: int, topo: Optional[Topology]) -> str:
    decoded = pipeline.decode_cookie(cookie)
    if decoded is None:
        return f"{cookie:#x}: not vmflow's"
    return f"{cookie:#x}: {owner_text(cookie, topo)}"


def explain_lines(lines: Iterable[str], topo: Optional[Topology]) -> list[str]:
    """dump-flows lines, each followed by who owns it and the stage it is in."""
    out = []
    for line in lines:
        line = line.rstrip("\n")
        m = _COOKIE_RE.search(line)
        if not m:
            continue   # a reply header, or a blank line
        cookie = int(m.group(1), 0)
        t = _TABLE_RE.search(line)
        stage = ""
        if t:
            name = pipeline.table_name(int(t.group(1)))
            stage = f" [table {t.group(1)}: {name or 'not in the pipeline'}]"
        out.append(line.strip())
        out.append(f"    {owner_text(cookie, topo)}{stage}")
    return out


def run_explain(conf, args: argparse.Namespace) -> int:
    try:
        topo = load_topology(conf)
    except TraceError as e:
        print(f"vmflow explain: {e}; resources are shown by key", file=sys.stderr)
        topo = None
    cookies = [c for c in args.cookies if c != "-"]
    if cookies:
        for text in cookies:
            try:
                cookie = int(text, 0)
            except ValueError:
                raise TraceError(f"COOKIE {text!r}: not a number (0x... or decimal)") from None
            print(explain_cookie(cookie, topo))
        return 0
    for line in explain_lines(sys.stdin, topo):
        print(line)
    return 0
