"""controller/dropcounts.py: drops counted by their flow's packet counter."""
from __future__ import annotations

from types import SimpleNamespace

from apps.dvr import PRIO_DVR_UNKNOWN, DvrApp
from controller.dropcounts import COUNTED, DropCounts, read
from test_dvr_behaviour import cloud, switch


class Channel:
    def __init__(self, packets):
        self.packets = packets
        self.asked = []

    def read_flow_packets(self, table, cookie, priority=None):
        self.asked.append((table, cookie, priority))
        if self.packets is None:
            raise ConnectionError("gone")
        return self.packets


def test_the_counted_flows_are_the_unknown_mac_drops_alone():
    """The count reads the flows of (table, cookie, priority): only the drop
    of an unregistered DVR-range source may be them."""
    table, cookie, priority = COUNTED["dvr_unknown_mac"]
    assert priority == PRIO_DVR_UNKNOWN and DvrApp().app_id == cookie >> 40 & 0xFF
    view = cloud()
    view.hosts["h1"]["external_mac"] = "fa:16:3f:00:e0:01"
    for host in ("h1", "h2"):
        flows = [f for f in switch(view, host).flows
                 if (f.table, f.cookie, f.priority) == (table, cookie, priority)]
        assert flows and all(f.instructions == () and
                             dict(f.match)["eth_src"] == ("fa:16:3f:00:00:00", "ff:ff:ff:00:00:00")
                             for f in flows), flows


def test_read_asks_for_each_counted_drop_and_fakes_without_counters_give_nothing():
    ch = Channel(5)
    assert read(ch) == {"dvr_unknown_mac": 5}
    assert ch.asked == [COUNTED["dvr_unknown_mac"]]
    assert read(object()) == {}


def test_refresh_keeps_the_last_figures_of_a_switch_that_fails_and_forgets_gone_ones():
    counts = DropCounts()
    a = SimpleNamespace(dpid=1, connected=True, channel=Channel(3))
    b = SimpleNamespace(dpid=2, connected=True, channel=Channel(4))
    counts.refresh([a, b])
    assert counts.totals() == {"dvr_unknown_mac": 7}
    a.channel.packets = None
    b.channel.packets = 6
    counts.refresh([a, b])
    assert counts.by_dpid == {1: {"dvr_unknown_mac": 3}, 2: {"dvr_unknown_mac": 6}}
    counts.refresh([b])
    assert counts.totals() == {"dvr_unknown_mac": 6}
