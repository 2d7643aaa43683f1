"""The switch's flow monitor: Open vSwitch tells us at once when a flow is
added, deleted or modified by someone else, so drift is repaired in
milliseconds instead of at the next audit.

OVS implements Nicira's flow monitor (NXST_FLOW_MONITOR); under OpenFlow
1.3 it is carried as the ONF experimenter multipart ONFMP_FLOW_MONITOR
(experimenter 0x4F4E4600, type 1870), which is what `ovs-ofctl -O
OpenFlow13 monitor BRIDGE watch:` sends. The request body is Nicira's
monitor request with an OpenFlow 1.3 match (an ofp_match header and OXM
fields); updates come back as multipart replies with xid 0, each body an
array of Nicira flow updates. os-ken builds the request message but parses
neither the request's exact wire form nor the updates, so both are here.

The monitor is asked without NXFMF_OWN: OVS then never reports the changes
made on the monitoring connection itself, bundles included, so the
reconciler's own flow-mods do not look like drift. Should one be reported
anyway, the worker's re-read compares the switch with its belief and finds
nothing to repair, so the cost is one read, never a wrong repair.

All pure: bytes in, values out (tests/unit/test_flowmon.py).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

from controller import pipeline

ONF_EXPERIMENTER = 0x4F4E4600
ONFMP_FLOW_MONITOR = 1870          # the multipart type, request and updates
ONFT_FLOW_MONITOR_PAUSED = 1871    # OVS stopped sending updates (its buffer is full)
ONFT_FLOW_MONITOR_RESUMED = 1872   # and started again: what came between is unknown

# nx_flow_monitor_request.flags
NXFMF_INITIAL = 1 << 0
NXFMF_ADD = 1 << 1
NXFMF_DELETE = 1 << 2
NXFMF_MODIFY = 1 << 3
NXFMF_ACTIONS = 1 << 4
NXFMF_OWN = 1 << 5
FLAGS = NXFMF_ADD | NXFMF_DELETE | NXFMF_MODIFY

# nx_flow_update_header.event
NXFME_ADDED = 0
NXFME_DELETED = 1
NXFME_MODIFIED = 2
NXFME_ABBREV = 3
EVENTS = {NXFME_ADDED: "added", NXFME_DELETED: "deleted", NXFME_MODIFIED: "modified",
          NXFME_ABBREV: "abbrev"}

# id, flags, match_len, out_port, table_id, pad[3]; then the match, padded to 8
_REQUEST = struct.Struct("!IHHIB3x")
_EMPTY_MATCH = struct.pack("!HH4x", 1, 4)   # ofp_match: OFPMT_OXM, no fields
OFPP_ANY = 0xFFFFFFFF
OFPTT_ALL = 0xFF

_HEADER = struct.Struct("!HH")                 # length, event
_FULL = struct.Struct("!HHHHHBxQ")             # reason, priority, idle, hard, match_len, table, cookie
_ABBREV = struct.Struct("!I")                  # xid


def request_body(monitor_id: int = 0, flags: int = FLAGS) -> bytes:
    """One monitor request for every flow of every table, as OVS expects it
    under OpenFlow 1.3 (the bytes `ovs-ofctl -O OpenFlow13 monitor` sends)."""
    return _REQUEST.pack(monitor_id, flags, 4, OFPP_ANY, OFPTT_ALL) + _EMPTY_MATCH


@dataclass(frozen=True)
class Update:
    event: int
    table: Optional[int] = None
    priority: Optional[int] = None
    cookie: Optional[int] = None
    reason: Optional[int] = None
    xid: Optional[int] = None

    @property
    def ours(self) -> bool:
        """A flow in vmflow's cookie space: the only flows it repairs."""
        return self.cookie is not None and \
            self.cookie & pipeline.COOKIE_SPACE_MASK == pipeline.COOKIE_SPACE


class Malformed(ValueError):
    """Bytes that are not an array of flow updates."""


def parse_updates(data: bytes) -> list[Update]:
    """The flow updates in one monitor reply's body (after the experimenter header)."""
    out: list[Update] = []
    off = 0
    while off < len(data):
        if len(data) - off < _HEADER.size:
            raise Malformed(f"{len(data) - off} byte(s) left over after {len(out)} update(s)")
        length, event = _HEADER.unpack_from(data, off)
        if length < _HEADER.size + _ABBREV.size or length % 8 or off + length > len(data):
            raise Malformed(f"flow update of length {length} at offset {off}")
        body = off + _HEADER.size
        if event == NXFME_ABBREV:
            out.append(Update(event, xid=_ABBREV.unpack_from(data, body)[0]))
        elif event in (NXFME_ADDED, NXFME_DELETED, NXFME_MODIFIED):
            if length < _HEADER.size + _FULL.size:
                raise Malformed(f"full flow update of length {length}")
            reason, priority, _idle, _hard, _mlen, table, cookie = _FULL.unpack_from(data, body)
            out.append(Update(event, table, priority, cookie, reason))
        else:
            raise Malformed(f"unknown flow update event {event}")
        off += length
    return out
