"""The controller's status file: what is connected, claimed, in sync, and counted.

Written atomically (temp file + rename) every status_interval by the
controller; read by `vmflow status` and by tests. Its path is
[controller] status_file, by default `controller-status.json` next to the
SQLite store file. Shape:

    {"pid": 123, "time": 1763800000.0, "revision": 42, "store_ok": true,
     "store_last_read": 1763799999.5,   # wall time of the last successful store read
     "store_read_age": 0.5,             # seconds since then (null: never read)
     "synced": true,      # no switch event pending and every switch in sync with revision
     "pending_events": 0,
     "counters": {"changes": 7, "packet_in": 3, "switch_events_coalesced": 0,
                  "unsolicited_errors": 0, ...},
     "app_errors": {"arp": 1},            # per app: flow computations that raised
     "unclaimed": ["00000000000000aa"],   # connected, no host claims it
     "refused_dpids": {"0000000000000001": {"refused": 3, "last_address": "10.0.0.9:40112",
                         "last_at": ..., "kept_address": "10.0.0.1:51234", ...}},
     "switches": {"0000000000000001": {
         "host": "h1", "claimed": true, "busy": false, "in_sync": true,
         "ports": {"tap1234": 3}, "desired_flows": 12, "installed_flows": 12,
         "flow_mods": 12, "meter_mods": 1, "bundles": 1, "reads": 1,
         "repairs": 0, "audits": 0, "drift_rereads": 0, "errors": 0,
         "monitor": "active", "drift_reports": 0, "connected_at": ...,
         "unsolicited_errors": {"type=2,code=4": 1}}},
     "snat": {"routers": {"ROUTER_ID": "HOST_ID"},  # where each router's SNAT runs
              "no_gateway_host": ["ROUTER_ID"]}}    # wants SNAT, no gateway host up

`vmflow status` adds "running" (the pid is alive), "age" (seconds since the
file was written) and "stale": true when the controller is gone or has not
written it for STALE_S; a stale file's synced, store_ok and in_sync read
false, since nothing is known to hold any more.

flow_mods counts every flow-mod sent to the switch since it connected to
this controller process, so a restart with unchanged state shows 0.

Where the less obvious counts come from:
- switches.*.monitor: the switch's flow monitor (controller/flowmon.py):
  "active", "paused" (by the switch; in_sync is false until it resumes and
  the switch is re-read), "failed" (refused: drift waits for the audit) or
  null (a channel without one). drift_reports counts the flow updates in
  our cookie space someone else made; drift_rereads the re-reads they
  caused; repairs what those re-reads and the audits found different.
- switches.*.unsolicited_errors: OpenFlow errors from that switch for an
  xid nobody waited on (a refused packet-out, a late error for a timed-out
  request), per "type=T,code=C" (controller/ofchannel.py); counters'
  unsolicited_errors is their sum over connected switches.
- app_errors: per app, how often its flow computation raised and the
  compiler kept that scope's previous flows (controller/compiler.py);
  counters' compile_errors is their sum. A packet-in an app raised on is
  counted as "<app>.errors" among the counters (controller/dispatch.py).
- counters' ofp_*: the OpenFlow listener (controller/ofconn.py):
  ofp_connections and ofp_half_open now; since start ofp_accepted,
  ofp_half_open_rejected (closed at accept, over [openflow] max_half_open),
  ofp_handshake_timeouts, ofp_tls_failures, ofp_duplicate_dpid_refused (a
  second connection for a datapath id whose connection still answers echo
  requests), ofp_duplicate_dpid_replaced (the holder did not answer, or
  lacked the certificate its host pins) and ofp_cert_pin_refused (a
  certificate other than the host's switch_cert_sha256).
- refused_dpids: per datapath id with refusals, how many, the last refused
  connection's address, certificate (SHA-256, with TLS) and reason, and the
  connection kept, if any.
- store_ok: the last store read succeeded and is less than
  follower.STALE_S old; a read still waiting on a locked store counts as
  failing once it is that late.
- switches.*.dropped and counters' dropped_*: drops a flow's own packet
  counter counts, per switch and in total (controller/dropcounts.py), e.g.
  dvr_unknown_mac: frames from the fabric with an unregistered source in the
  DVR MAC range. Read every status interval; a switch that cannot be read
  keeps its last figures.
- counters' switch_events_coalesced: connect/port/disconnect events that a
  later one for the same switch or interface superseded before the core
  applied them (controller/events.py).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Optional


# `vmflow status` calls a file older than this stale (the controller writes
# it every status_interval, 1 s by default) and then claims no sync.
STALE_S = 10.0


def default_path(conf) -> Optional[str]:
    explicit = conf.controller.status_file
    if explicit:
        return explicit
    url = conf.store
    if url.startswith("sqlite:///"):
        return os.path.join(os.path.dirname(url[len("sqlite:///"):]) or ".",
                            "controller-status.json")
    return None


def build_status(ctl) -> dict[str, Any]:
    switches = {}
    unclaimed = []
    unsolicited_total = 0
    for dpid, sw in sorted(ctl.switches.items()):
        r = sw.reconciler
        name = f"{dpid:016x}"
        if sw.view.host is None:
            unclaimed.append(name)
        role = getattr(sw, "role", None)
        slave = role is not None and role != "master"
        switches[name] = {
            "host": sw.view.host_name,
            # Several controllers: "master" or "slave" as the switch confirmed
            # (null for a lone controller). A slave writes nothing, so its
            # in_sync is null: the master's status says.
            "role": role,
            "want_role": getattr(sw, "want_role", None),
            "generation": getattr(sw, "generation", None),
            "master_since": getattr(sw, "master_since", None),
            "claimed": sw.view.host is not None,
            "busy": sw.busy,
            # Not while drift is reported and not yet repaired (busy), nor
            # while a paused monitor may be missing some.
            "in_sync": None if slave else (r.in_sync and not sw.busy
                                           and sw.monitor != "paused"),
            "monitor": sw.monitor,
            "drift_reports": sw.drift_reports,
            "ports": dict(sw.view.ports_by_name),
            "desired_flows": len(sw.memo.desired),
            "installed_flows": len(r.installed) if r.installed is not None else None,
            "meters": len(r.meters) if r.meters is not None else None,
            "connected_at": sw.connected_at,
            "last_sync": r.last_sync,
            **r.stats,
        }
        drops = getattr(ctl, "drop_counts", None)
        if drops is not None and dpid in drops.by_dpid:
            switches[name]["dropped"] = dict(drops.by_dpid[dpid])
        # Tests drive the core with fake channels that keep no such count.
        snapshot = getattr(sw.channel, "unsolicited_snapshot", None)
        if snapshot is not None:
            errors = snapshot()
            switches[name]["unsolicited_errors"] = errors
            unsolicited_total += sum(errors.values())
    counters = dict(ctl.counters)
    if ctl.dispatcher is not None:
        counters.update(ctl.dispatcher.counters_snapshot())
    counters["compile_errors"] = ctl.compiler.errors
    counters["pipeline_violations"] = ctl.compiler.violations
    counters["flow_conflicts"] = ctl.compiler.conflicts
    writer = getattr(ctl, "port_status", None)
    if writer is not None:
        counters["port_status_written"] = writer.written
        counters["port_status_errors"] = writer.errors
    ext = getattr(ctl, "external_status", None)
    if ext is not None:
        counters["floatingip_status_written"] = ext.written
        counters["floatingip_garps"] = ext.garps
        counters["external_status_errors"] = ext.errors
    counters["unsolicited_errors"] = unsolicited_total
    drops = getattr(ctl, "drop_counts", None)
    if drops is not None:
        counters.update({f"dropped_{k}": n for k, n in drops.totals().items()})
    counters["packet_in_not_master"] = getattr(ctl, "packet_in_not_master", 0)
    events = getattr(ctl, "_events", None)
    counters["switch_events_coalesced"] = events.coalesced if events is not None else 0
    # Set by runtime.serve(); tests that drive the core directly have none.
    conns = getattr(ctl, "ofconns", None)
    ofp = conns.snapshot() if conns is not None else {"counters": {}, "refused_dpids": {}}
    counters.update(ofp["counters"])
    now = time.time()
    follower = getattr(ctl, "follower", None)
    last_read = follower.last_read if follower is not None else None
    return {
        "pid": os.getpid(),
        "time": now,
        "revision": ctl.view.revision if ctl.view is not None else None,
        "store_ok": ctl.store_ok,
        "store_last_read": last_read,
        "store_read_age": None if last_read is None else round(now - last_read, 3),
        "pending_events": ctl.pending_events,
        "synced": (ctl.view is not None and ctl.pending_events == 0
                   and all(s["in_sync"] or (s["in_sync"] is None and not s["busy"])
                           for s in switches.values())),
        "counters": counters,
        "app_errors": dict(ctl.compiler.app_errors),
        "unclaimed": unclaimed,
        "refused_dpids": ofp["refused_dpids"],
        "switches": switches,
        "cluster": ctl.cluster.status() if getattr(ctl, "cluster", None) is not None else None,
        "snat": _snat_status(ctl.view),
    }


def _snat_status(view) -> dict[str, Any]:
    """Where each router's SNAT runs; routers that want SNAT with no gateway
    host up are named under no_gateway_host (their VMs cannot reach out)."""
    if view is None:
        return {"routers": {}, "no_gateway_host": []}
    from apps.nat import snat
    placed, missing = {}, []
    for rid, router in sorted(view.routers.items()):
        s = snat(view, router)
        if s is None:
            continue
        placed[rid] = s.host
        if s.host is None:
            missing.append(rid)
    return {"routers": placed, "no_gateway_host": missing}


def write_status(path: str, status: dict[str, Any]) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".controller-status.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(status, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_status(path: str) -> Optional[dict[str, Any]]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
