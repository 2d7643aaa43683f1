"""Drops counted by a flow's own packet counter, read from the switch.

Some drops are worth a count an operator can see: a frame from the fabric
whose source is in the DVR MAC range but no host's registered DVR MAC (a
misconfigured or spoofing host). The flow that drops them counts them, so
nothing needs a packet-in: each counted drop is named here with the stage
its flows sit in, their cookie and their priority, and a narrowed
flow-stats request (that table, that exact cookie) sums the packet counters
of the flows at that priority. OVS indexes flows by exact cookie, so the
request costs the switch little whatever its flow count.

    dvr_unknown_mac   classify, the dvr app's per-switch cookie, priority
                      115: the drop of an unregistered DVR-range source on an
                      uplink (apps/dvr.py PRIO_DVR_UNKNOWN; its drop of other
                      hosts' external MACs at 116 shares the cookie and is
                      not counted)

`vmflow status` shows each switch's counts (read by the status thread every
status interval, outside the controller lock) and their totals among the
counters, and /metrics serves the same reading (controller/metrics.py): one
flow-stats request per switch per status interval, whoever looks.
"""
from __future__ import annotations

import logging
from typing import Iterable

from controller.app import APP_IDS
from controller.pipeline import make_cookie

LOG = logging.getLogger(__name__)

COUNTED: dict[str, tuple[str, int, int]] = {
    "dvr_unknown_mac": ("classify", make_cookie(APP_IDS["dvr"]), 115),
}


def read(channel) -> dict[str, int]:
    """name -> packets dropped, for one switch; {} for a channel that cannot
    read flow counters (the tests' fakes)."""
    reader = getattr(channel, "read_flow_packets", None)
    if reader is None:
        return {}
    return {name: reader(table, cookie, priority=priority)
            for name, (table, cookie, priority) in COUNTED.items()}


class DropCounts:
    """The last reading per switch, refreshed by the status thread."""

    def __init__(self) -> None:
        self.by_dpid: dict[int, dict[str, int]] = {}

    def refresh(self, switches: Iterable) -> None:
        seen = set()
        for sw in switches:
            seen.add(sw.dpid)
            if not sw.connected:
                continue
            try:
                self.by_dpid[sw.dpid] = read(sw.channel)
            except Exception as e:   # a switch leaving mid-read keeps its last figures
                LOG.debug("drop counters of %016x: %s", sw.dpid, e)
        for dpid in set(self.by_dpid) - seen:
            del self.by_dpid[dpid]

    def totals(self) -> dict[str, int]:
        out = {name: 0 for name in COUNTED}
        for counts in self.by_dpid.values():
            for name, n in counts.items():
                out[name] = out.get(name, 0) + n
        return out
