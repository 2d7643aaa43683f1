"""A Channel (controller/reconciler.py) over a live os-ken datapath.

Requests are sent from the switch's worker thread (and the audit thread's
reads and the status thread's drop counts, which may interleave with a
worker's bundle) and block until the
reply; os-ken's event thread hands replies and errors in via `deliver()` and
`deliver_error()`, matched by xid. Blocking in the event thread itself would
deadlock, which is why only those threads call these methods.

When the connection ends, the datapath's close hook (ofconn.py) closes the
channel in the receive thread: every request waiting fails at once, and so
does every request made afterwards, so a worker on a dead switch never
waits out TIMEOUT_S (which only bounds a live switch that does not answer).

An error is kept only for an xid someone waits on: a request's waiter, or
the xids a meter-mod batch or bundle watches until its barrier/commit. Any
other error (a packet-out the switch refused, a late error for a request
that timed out) is counted per (type, code) and logged at most once per
UNSOLICITED_LOG_S, never stored: a switch sending errors forever must not
grow memory.
"""
from __future__ import annotations

import itertools
import logging
import struct
import threading
import time
from collections import Counter
from typing import Optional

from controller import codec, flowmon
from controller.cluster import NotMaster, RoleStale
from controller.flow import Flow
from controller.meters import KBPS, PKTPS
from controller.reconciler import ChannelError, MeterSpec

LOG = logging.getLogger(__name__)

TIMEOUT_S = 30.0
UNSOLICITED_LOG_S = 10.0
# Distinct (type, code) pairs counted one by one; beyond, they share one
# "other" count, so even a switch inventing codes keeps the counter small.
MAX_ERROR_KINDS = 64

# A PACKET_OUT with one output action and no buffer, packed in one call:
# os-ken's OFPPacketOut + OFPActionOutput objects and their serialize()
# cost more than the app that answered the packet (bench/RESULTS.md).
# ofp_header, ofp_packet_out (buffer_id, in_port, actions_len), one
# ofp_action_output (type, len, port, max_len); the frame follows.
# tests/unit/test_ofchannel.py checks it byte for byte against os-ken.
_PACKET_OUT = struct.Struct("!BBHI" "IIH6x" "HHIH6x")
_PACKET_OUT_ACTIONS_LEN = 16


class _Waiter:
    def __init__(self) -> None:
        self.replies: list = []
        self.errors: list = []
        self.done = threading.Event()


class OFChannel:
    def __init__(self, datapath, timeout: float = TIMEOUT_S):
        self.dp = datapath
        self.ofp = datapath.ofproto
        self.parser = datapath.ofproto_parser
        self.timeout = timeout
        self._lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        # xid -> the list its errors go to, for xids sent without a waiter
        # whose errors someone collects (meter_mods, bundle); removed by
        # _unwatch when that operation ends.
        self._watched: dict[int, list] = {}
        self._bundle_ids = itertools.count(1)
        self.unsolicited_errors: Counter = Counter()   # "type=T,code=C" -> count
        self._unsolicited_logged_at = float("-inf")
        self._unsolicited_suppressed = 0
        self.closed = False
        add_close_hook = getattr(datapath, "add_close_hook", None)
        if add_close_hook is not None:
            add_close_hook(self.close)
        # The OpenFlow role this controller holds on the switch (cluster.py):
        # None when it is the only controller (every write allowed), else
        # "slave" until the switch confirmed a MASTER request.
        self.role: Optional[str] = None

    # -- roles (several controllers) -----------------------------------------
    @property
    def writable(self) -> bool:
        return self.role is None or self.role == "master"

    def _check_writable(self) -> None:
        """The one gate every write passes (bundle, meter_mods, packet_out).
        OVS refuses a slave's writes too (OFPBRC_IS_SLAVE); this keeps them
        from being sent at all."""
        if not self.writable:
            raise NotMaster(f"switch {self.dp.id:016x}: not master here, nothing written")

    def role_request(self, role: str, generation: int) -> int:
        """Ask the switch for `role` ("master" or "slave") with `generation`;
        the generation id the switch answered with. RoleStale when the switch
        has seen a newer one. Writes stop before a SLAVE request is sent and
        start only once a MASTER request is confirmed."""
        ofp = self.ofp
        code = {"master": ofp.OFPCR_ROLE_MASTER, "slave": ofp.OFPCR_ROLE_SLAVE}[role]
        if role != "master":
            self.role = role
        msg = self.parser.OFPRoleRequest(self.dp, code, generation & 0xFFFFFFFFFFFFFFFF)
        replies, errors = self._request_raw(msg)
        if errors:
            err = errors[0]
            if getattr(err, "type", None) == ofp.OFPET_ROLE_REQUEST_FAILED and \
                    getattr(err, "code", None) == ofp.OFPRRFC_STALE:
                raise RoleStale(f"switch {self.dp.id:016x}: generation {generation} is stale")
            raise ChannelError(f"switch {self.dp.id:016x}: role request failed: {_describe(err)}")
        reply = replies[-1]
        if reply.role != code:
            raise ChannelError(f"switch {self.dp.id:016x}: asked for role {code}, "
                               f"got {reply.role}")
        self.role = role
        return reply.generation_id

    # -- sending -------------------------------------------------------
    def send(self, msg, errors: Optional[list] = None) -> int:
        """Send with a fresh xid (os-ken's xid counter is not thread-safe).
        With `errors`, the switch's errors for this xid are appended to it
        until _unwatch(xid); without, they are only counted."""
        with self._lock:
            if self.closed:
                raise ChannelError(f"switch {self.dp.id:016x} disconnected")
            self.dp.set_xid(msg)
            xid = msg.xid
            if errors is not None:
                self._watched[xid] = errors
        if not self.dp.send_msg(msg):
            self._unwatch([xid])
            raise ChannelError(f"switch {self.dp.id:016x} disconnected")
        return xid

    def _unwatch(self, xids) -> None:
        with self._lock:
            for x in xids:
                self._watched.pop(x, None)

    def _request(self, msg, timeout: Optional[float] = None) -> list:
        replies, errors = self._request_raw(msg, timeout)
        if errors:
            raise ChannelError(f"switch {self.dp.id:016x}: {type(msg).__name__} failed: "
                               f"{_describe(errors[0])}")
        return replies

    def _request_raw(self, msg, timeout: Optional[float] = None) -> tuple[list, list]:
        """Send and wait: (replies, the switch's errors for it)."""
        waiter = _Waiter()
        with self._lock:
            if self.closed:
                raise ChannelError(f"switch {self.dp.id:016x} disconnected")
            self.dp.set_xid(msg)
            self._waiters[msg.xid] = waiter
        try:
            if not self.dp.send_msg(msg):
                raise ChannelError(f"switch {self.dp.id:016x} disconnected")
            if not waiter.done.wait(self.timeout if timeout is None else timeout):
                raise ChannelError(f"switch {self.dp.id:016x}: no reply to {type(msg).__name__}")
            return waiter.replies, waiter.errors
        finally:
            with self._lock:
                self._waiters.pop(msg.xid, None)

    # -- from the event thread -------------------------------------------
    def deliver(self, msg) -> bool:
        """Hand a reply to the request waiting on its xid; False when none waits."""
        with self._lock:
            waiter = self._waiters.get(msg.xid)
        if waiter is None:
            return False
        waiter.replies.append(msg)
        more = getattr(msg, "flags", 0) & self.ofp.OFPMPF_REPLY_MORE \
            if hasattr(msg, "body") else 0
        if not more:
            waiter.done.set()
        return True

    def deliver_error(self, msg) -> None:
        with self._lock:
            waiter = self._waiters.get(msg.xid)
            watched = self._watched.get(msg.xid) if waiter is None else None
            if watched is not None:
                watched.append(msg)
            elif waiter is None:
                self._count_unsolicited(msg)
        if waiter is not None:
            waiter.errors.append(msg)
            waiter.done.set()

    def _count_unsolicited(self, msg) -> None:
        """Called under self._lock."""
        kind = f"type={getattr(msg, 'type', '?')},code={getattr(msg, 'code', '?')}"
        if kind not in self.unsolicited_errors and len(self.unsolicited_errors) >= MAX_ERROR_KINDS:
            kind = "other"
        self.unsolicited_errors[kind] += 1
        now = time.monotonic()
        if now - self._unsolicited_logged_at < UNSOLICITED_LOG_S:
            self._unsolicited_suppressed += 1
            return
        suppressed, self._unsolicited_suppressed = self._unsolicited_suppressed, 0
        self._unsolicited_logged_at = now
        LOG.error("switch %016x: error for xid %d nobody waits on (packet-out or timed-out "
                  "request): %s; %d more since the last such message",
                  self.dp.id, msg.xid, _describe(msg), suppressed)

    def unsolicited_snapshot(self) -> dict[str, int]:
        """A copy of unsolicited_errors; the event thread adds to it under the lock."""
        with self._lock:
            return dict(self.unsolicited_errors)

    def close(self) -> None:
        """The switch went away: fail every pending request at once, and
        every later one (close may come from the receive thread's hook and
        from os-ken's DEAD event; the second is a no-op)."""
        with self._lock:
            self.closed = True
            waiters = list(self._waiters.values())
        for w in waiters:
            w.errors.append("disconnected")
            w.done.set()

    def packet_out(self, port: int, data: bytes) -> None:
        """Send `data` out of `port`; the switch's error for it, if any, is
        counted as unsolicited (deliver_error)."""
        self._check_writable()
        ofp = self.ofp
        with self._lock:
            # The same xid sequence as send()/set_xid, so a packet-out never
            # shares an xid with a request someone waits on.
            xid = self.dp.xid = (self.dp.xid + 1) & ofp.MAX_XID
        buf = _PACKET_OUT.pack(ofp.OFP_VERSION, ofp.OFPT_PACKET_OUT,
                               _PACKET_OUT.size + len(data), xid,
                               ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER, _PACKET_OUT_ACTIONS_LEN,
                               ofp.OFPAT_OUTPUT, _PACKET_OUT_ACTIONS_LEN, port, 0) + data
        if not self.dp.send(buf):
            raise ChannelError(f"switch {self.dp.id:016x} disconnected")

    def _barrier(self) -> None:
        self._request(self.parser.OFPBarrierRequest(self.dp))

    def start_monitor(self) -> None:
        """Have the switch report every flow change made by anyone else
        (controller/flowmon.py); ChannelError when it refuses."""
        self._request(self.parser.OFPExperimenterStatsRequest(
            self.dp, 0, flowmon.ONF_EXPERIMENTER, flowmon.ONFMP_FLOW_MONITOR,
            flowmon.request_body()))

    # -- Channel -----------------------------------------------------------
    def read_flows(self) -> list[Flow]:
        replies = self._request(codec.flow_stats_request(self.dp))
        return [codec.from_stats(self.ofp, s) for r in replies for s in r.body]

    def read_flow_packets(self, table: str, cookie: int, priority: Optional[int] = None,
                          timeout: float = 2.0) -> int:
        """The packets the flows of one table with exactly this cookie (and
        this priority, if given) counted (controller/dropcounts.py). A short
        timeout: the status thread reads it and must not stall on one slow
        switch."""
        ofp, parser = self.ofp, self.parser
        req = parser.OFPFlowStatsRequest(self.dp, 0, codec.table_number(table), ofp.OFPP_ANY,
                                         ofp.OFPG_ANY, cookie, 0xFFFFFFFFFFFFFFFF,
                                         parser.OFPMatch())
        return sum(s.packet_count for r in self._request(req, timeout) for s in r.body
                   if priority is None or s.priority == priority)

    def read_meters(self) -> dict[int, MeterSpec]:
        req = self.parser.OFPMeterConfigStatsRequest(self.dp, 0, self.ofp.OFPM_ALL)
        out: dict[int, MeterSpec] = {}
        for r in self._request(req):
            for m in r.body:
                drops = [b for b in m.bands if b.type == self.ofp.OFPMBT_DROP]
                unit = KBPS if m.flags & self.ofp.OFPMF_KBPS else \
                    PKTPS if m.flags & self.ofp.OFPMF_PKTPS else None
                if len(drops) == 1 and len(m.bands) == 1 and unit:
                    out[m.meter_id] = MeterSpec(drops[0].rate, drops[0].burst_size, unit)
                else:
                    # Not a shape we install: a spec no desired one equals,
                    # so the diff rewrites or deletes it.
                    out[m.meter_id] = MeterSpec(-1, -1)
        return out

    def read_meter_stats(self) -> dict[int, tuple[int, int]]:
        """Meter id -> (packets, bytes) its drop band dropped, for /metrics."""
        req = self.parser.OFPMeterStatsRequest(self.dp, 0, self.ofp.OFPM_ALL)
        out: dict[int, tuple[int, int]] = {}
        for r in self._request(req):
            for m in r.body:
                out[m.meter_id] = (sum(b.packet_band_count for b in m.band_stats),
                                   sum(b.byte_band_count for b in m.band_stats))
        return out

    def meter_mods(self, ops: list[tuple[str, int, Optional[MeterSpec]]]) -> None:
        ofp, parser = self.ofp, self.parser
        self._check_writable()
        commands = {"add": ofp.OFPMC_ADD, "modify": ofp.OFPMC_MODIFY, "delete": ofp.OFPMC_DELETE}
        xids: list[int] = []
        errors: list = []
        try:
            for op, mid, spec in ops:
                bands = [parser.OFPMeterBandDrop(rate=spec.rate, burst_size=spec.burst)] \
                    if spec else []
                unit = ofp.OFPMF_KBPS if spec and spec.unit == KBPS else ofp.OFPMF_PKTPS
                flags = unit | ofp.OFPMF_BURST if spec else 0
                xids.append(self.send(parser.OFPMeterMod(self.dp, commands[op], flags, mid,
                                                         bands), errors))
            self._barrier()   # errors for earlier xids arrive before the barrier reply
        finally:
            self._unwatch(xids)
        if errors:
            raise ChannelError(f"switch {self.dp.id:016x}: meter mod failed: {_describe(errors[0])}")

    def bundle(self, ops: list[tuple[str, Flow]]) -> None:
        self._check_writable()
        ofp, parser = self.ofp, self.parser
        bid = next(self._bundle_ids) & 0xFFFFFFFF
        flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        self._ctrl(bid, ofp.ONF_BCT_OPEN_REQUEST, flags)
        xids: list[int] = []
        errors: list = []
        try:
            for op, f in ops:
                inner = codec.flow_mod(self.dp, f, op)
                xids.append(self.send(parser.ONFBundleAddMsg(self.dp, bid, flags, inner, []),
                                      errors))
            self._ctrl(bid, ofp.ONF_BCT_COMMIT_REQUEST, flags)
        except ChannelError:
            if errors:
                raise ChannelError(f"switch {self.dp.id:016x}: bundle refused: "
                                   f"{_describe(errors[0])}") from None
            raise
        finally:
            self._unwatch(xids)
        if errors:
            raise ChannelError(f"switch {self.dp.id:016x}: bundle message refused: "
                               f"{_describe(errors[0])}")

    def _ctrl(self, bid: int, type_: int, flags: int) -> None:
        msg = self.parser.ONFBundleCtrlMsg(self.dp, bid, type_, flags, [])
        replies = self._request(msg)
        want = type_ + 1   # every *_REQUEST is answered by the matching *_REPLY
        if not replies or replies[-1].type != want:
            raise ChannelError(f"switch {self.dp.id:016x}: bundle control {type_} answered "
                               f"{[getattr(r, 'type', r) for r in replies]}")


def _describe(err) -> str:
    if isinstance(err, str):
        return err
    return f"error type={getattr(err, 'type', '?')} code={getattr(err, 'code', '?')}"
