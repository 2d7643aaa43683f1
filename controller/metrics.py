"""The controller's /metrics, in Prometheus' text format (prometheus_client).

Off unless [controller] metrics_listen names an address. Every figure is read
at scrape time from what the controller already keeps (the same sources as
its status file, controller/status.py), so nothing here is on a hot path:

    per switch    vmflow_switch_connected, _role, _flows_desired,
                  _flows_installed, _meters_installed, _last_sync_duration_seconds,
                  _repairs_total (what audits repaired), _openflow_errors_total
                  (refused changes and unsolicited errors), _flow_mods_total,
                  _meter_mods_total
    reconciler    vmflow_change_to_commit_seconds: a histogram of the time from
                  the controller reading a change (store feed or switch event)
                  to the switch confirming it (bundle committed, barrier)
    packet-in     vmflow_packet_in_total{app, outcome}: received, answered,
                  dropped_queue per app; vmflow_app_events_total{app, event}:
                  every count an app keeps (dhcp's ack, metadata's
                  http.status_200, ...); DHCP leases given are dhcp's "ack"
    meters        vmflow_meter_packets_dropped_total and _bytes_dropped_total
                  per switch, meter and purpose (qos, packet_in), read with
                  meter-stats requests at scrape time
    drops         vmflow_dropped_packets_total per switch and reason: drops a
                  flow's own packet counter counts (controller/dropcounts.py;
                  dvr_unknown_mac), as the status thread last read them
    store         vmflow_store_revision, vmflow_view_revision and
                  vmflow_change_feed_lag (revisions the controller has not
                  applied yet)

The role is "equal": the controller sends no role requests yet.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable, Optional

from prometheus_client import Histogram
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from controller import pipeline

LOG = logging.getLogger(__name__)

APP_COUNTER = re.compile(r"^([a-z0-9_]+)\.(.+)$")


def change_histogram() -> Histogram:
    """Unregistered: the collector below exports it with the rest."""
    return Histogram("vmflow_change_to_commit_seconds",
                     "Time from the controller reading a change to its bundle committed",
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                     registry=None)


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics_listen: {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class ControllerCollector:
    def __init__(self, ctl):
        self.ctl = ctl

    def collect(self) -> Iterable:
        ctl = self.ctl
        sw_gauges = {
            "connected": GaugeMetricFamily("vmflow_switch_connected",
                                           "1 for a switch connected to this controller",
                                           labels=["dpid", "host"]),
            "role": GaugeMetricFamily("vmflow_switch_role", "The controller's OpenFlow role",
                                      labels=["dpid", "role"]),
            "desired": GaugeMetricFamily("vmflow_switch_flows_desired", "Flows desired",
                                         labels=["dpid"]),
            "installed": GaugeMetricFamily("vmflow_switch_flows_installed",
                                           "Flows installed, as the reconciler believes",
                                           labels=["dpid"]),
            "meters": GaugeMetricFamily("vmflow_switch_meters_installed",
                                        "Meters in vmflow's ranges installed", labels=["dpid"]),
            "sync": GaugeMetricFamily("vmflow_switch_last_sync_duration_seconds",
                                      "How long the last sync took", labels=["dpid"]),
        }
        sw_counters = {
            "repairs": CounterMetricFamily("vmflow_switch_repairs",
                                           "Flows and meters audits found drifted and repaired",
                                           labels=["dpid"]),
            "errors": CounterMetricFamily("vmflow_switch_openflow_errors",
                                          "OpenFlow errors: refused changes and unsolicited",
                                          labels=["dpid", "kind"]),
            "flow_mods": CounterMetricFamily("vmflow_switch_flow_mods", "Flow-mods sent",
                                             labels=["dpid"]),
            "meter_mods": CounterMetricFamily("vmflow_switch_meter_mods", "Meter-mods sent",
                                              labels=["dpid"]),
        }
        dropped_pkts = CounterMetricFamily("vmflow_meter_packets_dropped",
                                           "Packets a meter's band dropped",
                                           labels=["dpid", "meter_id", "purpose"])
        dropped_bytes = CounterMetricFamily("vmflow_meter_bytes_dropped",
                                            "Bytes a meter's band dropped",
                                            labels=["dpid", "meter_id", "purpose"])
        dropped = CounterMetricFamily("vmflow_dropped_packets",
                                      "Packets dropped by a flow that counts them",
                                      labels=["dpid", "reason"])
        for dpid, sw in sorted(dict(ctl.switches).items()):
            name = f"{dpid:016x}"
            r = sw.reconciler
            sw_gauges["connected"].add_metric([name, sw.view.host_name or ""], 1)
            sw_gauges["role"].add_metric([name, "equal"], 1)
            sw_gauges["desired"].add_metric([name], len(sw.memo.desired))
            if r.installed is not None:
                sw_gauges["installed"].add_metric([name], len(r.installed))
            if r.meters is not None:
                sw_gauges["meters"].add_metric([name], len(r.meters))
            if r.last_sync_duration is not None:
                sw_gauges["sync"].add_metric([name], r.last_sync_duration)
            sw_counters["repairs"].add_metric([name], r.stats["repairs"])
            sw_counters["flow_mods"].add_metric([name], r.stats["flow_mods"])
            sw_counters["meter_mods"].add_metric([name], r.stats["meter_mods"])
            sw_counters["errors"].add_metric([name, "refused"], r.stats["errors"])
            snapshot = getattr(sw.channel, "unsolicited_snapshot", None)
            if snapshot is not None:
                sw_counters["errors"].add_metric([name, "unsolicited"], sum(snapshot().values()))
            for mid, (packets, nbytes) in sorted(self._meter_drops(sw).items()):
                purpose = pipeline.meter_purpose(mid) or "other"
                dropped_pkts.add_metric([name, str(mid), purpose], packets)
                dropped_bytes.add_metric([name, str(mid), purpose], nbytes)
            for reason, n in sorted(ctl.drop_counts.by_dpid.get(dpid, {}).items()):
                dropped.add_metric([name, reason], n)
        yield from sw_gauges.values()
        yield from sw_counters.values()
        yield dropped_pkts
        yield dropped_bytes
        yield dropped
        yield from ctl.change_latency.collect()
        yield from self._packet_in()
        yield from self._store()

    @staticmethod
    def _meter_drops(sw) -> dict[int, tuple[int, int]]:
        read = getattr(sw.channel, "read_meter_stats", None)
        if read is None or not sw.connected:
            return {}
        try:
            return read()
        except Exception as e:   # a switch leaving mid-scrape: no figures for it
            LOG.debug("meter stats of %016x: %s", sw.dpid, e)
            return {}

    def _packet_in(self) -> Iterable:
        counters = dict(self.ctl.dispatcher.counters_snapshot()) \
            if self.ctl.dispatcher is not None else {}
        counters.update(self.ctl.counters)
        per_app = CounterMetricFamily("vmflow_packet_in",
                                      "Packet-ins per app: received, answered, dropped_queue",
                                      labels=["app", "outcome"])
        events = CounterMetricFamily("vmflow_app_events", "Counts the apps keep",
                                     labels=["app", "event"])
        other = CounterMetricFamily("vmflow_controller_events", "The controller's own counts",
                                    labels=["event"])
        for key, n in sorted(counters.items()):
            m = APP_COUNTER.match(key)
            if m and m.group(2).startswith("packet_in."):
                per_app.add_metric([m.group(1), m.group(2)[len("packet_in."):]], n)
            elif m:
                events.add_metric([m.group(1), m.group(2)], n)
            else:
                other.add_metric([key], n)
        return (per_app, events, other)

    def _store(self) -> Iterable:
        ctl = self.ctl
        view = ctl.view
        applied = view.revision if view is not None else 0
        try:
            head: Optional[int] = ctl.store.revision()
        except Exception:
            head = None
        yield GaugeMetricFamily("vmflow_view_revision", "Store revision the controller applied",
                                value=applied)
        if head is not None:
            yield GaugeMetricFamily("vmflow_store_revision", "The store's revision", value=head)
            yield GaugeMetricFamily("vmflow_change_feed_lag",
                                    "Store revisions not applied yet", value=max(0, head - applied))


def serve(ctl, listen: str):
    """Start the /metrics HTTP server (its own thread); returns the server."""
    from prometheus_client import start_http_server
    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControllerCollector(ctl))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    LOG.info("metrics on http://%s:%d/metrics", host, port)
    return server
