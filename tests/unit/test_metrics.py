"""controller/metrics.py: what /metrics shows, from a controller's own figures."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from controller.compiler import SwitchFlows
from controller.dropcounts import DropCounts
from controller.metrics import ControllerCollector, change_histogram, parse_listen
from controller.reconciler import MeterSpec, SwitchReconciler
from test_reconciler import FakeSwitch, fl, index


class MeteredFake(FakeSwitch):
    def read_meter_stats(self):
        return {7: (120, 7200), 0x100003: (5, 7500)}

    def unsolicited_snapshot(self):
        return {"type=2,code=4": 2}

    def read_flow_packets(self, table, cookie, priority=None):
        from controller.dropcounts import COUNTED
        return 17 if (table, cookie, priority) == COUNTED["dvr_unknown_mac"] else 0


def scrape(ctl) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ControllerCollector(ctl))
    return generate_latest(reg).decode()


def test_switch_reconciler_packet_in_meter_and_store_figures():
    channel = MeteredFake()
    rec = SwitchReconciler(0xA1, channel, MeterSpec(200, 100))
    rec.sync(index(fl(1), fl(2)))
    sw = SimpleNamespace(dpid=0xA1, channel=channel, reconciler=rec, memo=SwitchFlows(),
                         connected=True, view=SimpleNamespace(host_name="h1"))
    latency = change_histogram()
    latency.observe(0.03)
    dispatcher = SimpleNamespace(counters_snapshot=lambda: {
        "arp.packet_in.received": 10, "arp.packet_in.answered": 9,
        "arp.packet_in.dropped_queue": 1, "dhcp.ack": 3, "metadata.http.status_200": 4,
        "packet_in": 10})
    drop_counts = DropCounts()
    drop_counts.refresh([sw])       # the status thread's reading, which /metrics serves
    ctl = SimpleNamespace(switches={0xA1: sw}, change_latency=latency, dispatcher=dispatcher,
                          counters=Counter(changes=5), view=SimpleNamespace(revision=40),
                          store=SimpleNamespace(revision=lambda: 42), drop_counts=drop_counts)
    text = scrape(ctl)
    want = [
        'vmflow_switch_connected{dpid="00000000000000a1",host="h1"} 1.0',
        'vmflow_switch_role{dpid="00000000000000a1",role="equal"} 1.0',
        'vmflow_switch_flows_installed{dpid="00000000000000a1"} 2.0',
        'vmflow_switch_flow_mods_total{dpid="00000000000000a1"} 2.0',
        'vmflow_switch_repairs_total{dpid="00000000000000a1"} 0.0',
        'vmflow_switch_openflow_errors_total{dpid="00000000000000a1",kind="unsolicited"} 2.0',
        'vmflow_meter_packets_dropped_total{dpid="00000000000000a1",meter_id="7",'
        'purpose="packet_in"} 120.0',
        'vmflow_meter_bytes_dropped_total{dpid="00000000000000a1",meter_id="1048579",'
        'purpose="qos"} 7500.0',
        'vmflow_change_to_commit_seconds_count 1.0',
        'vmflow_dropped_packets_total{dpid="00000000000000a1",reason="dvr_unknown_mac"} 17.0',
        'vmflow_packet_in_total{app="arp",outcome="received"} 10.0',
        'vmflow_packet_in_total{app="arp",outcome="dropped_queue"} 1.0',
        'vmflow_app_events_total{app="dhcp",event="ack"} 3.0',
        'vmflow_app_events_total{app="metadata",event="http.status_200"} 4.0',
        'vmflow_controller_events_total{event="changes"} 5.0',
        'vmflow_store_revision 42.0',
        'vmflow_change_feed_lag 2.0',
    ]
    missing = [w for w in want if w not in text]
    assert not missing, (missing, text)
    assert "vmflow_switch_last_sync_duration_seconds{" in text


def test_listen_address():
    assert parse_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    for bad in ("9100", "host:", "h:99999"):
        try:
            parse_listen(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_every_dashboard_query_names_a_metric_that_exists():
    import json
    import re
    from pathlib import Path
    dash = json.loads((Path(__file__).resolve().parents[2] / "conf" / "grafana-vmflow.json")
                      .read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    named = {m for e in exprs for m in re.findall(r"\bvmflow_[a-z_]+", e)}
    channel = MeteredFake()
    rec = SwitchReconciler(0xA1, channel, MeterSpec(200, 100))
    rec.sync(index(fl(1)))
    sw = SimpleNamespace(dpid=0xA1, channel=channel, reconciler=rec, memo=SwitchFlows(),
                         connected=True, view=SimpleNamespace(host_name="h1"))
    latency = change_histogram()
    latency.observe(0.1)
    ctl = SimpleNamespace(switches={0xA1: sw}, change_latency=latency, counters=Counter(x=1),
                          dispatcher=SimpleNamespace(counters_snapshot=lambda: {
                              "arp.packet_in.received": 1, "dhcp.ack": 1}),
                          view=SimpleNamespace(revision=1), store=SimpleNamespace(revision=lambda: 1),
                          drop_counts=DropCounts())
    ctl.drop_counts.refresh([sw])
    exported = {line.split("{")[0].split(" ")[0] for line in scrape(ctl).splitlines()
                if line and not line.startswith("#")}
    assert named and not named - exported, sorted(named - exported)
