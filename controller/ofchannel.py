"""A Channel (controller/reconciler.py) over a live os-ken datapath.

Requests are sent from the switch's worker thread and block until the
reply; os-ken's event thread hands replies and errors in via `deliver()` and
`deliver_error()`, matched by xid. Blocking in the event thread itself would
deadlock, which is why only workers call these methods.
"""
from __future__ import annotations

import itertools
import threading
from typing import Optional

from controller import codec
from controller.flow import Flow
from controller.reconciler import ChannelError, MeterSpec

TIMEOUT_S = 30.0


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
        self._errors_by_xid: dict[int, list] = {}
        self._bundle_ids = itertools.count(1)

    # -- sending -------------------------------------------------------
    def send(self, msg) -> int:
        """Send with a fresh xid (os-ken's xid counter is not thread-safe)."""
        with self._lock:
            self.dp.set_xid(msg)
            xid = msg.xid
        if not self.dp.send_msg(msg):
            raise ChannelError(f"switch {self.dp.id:016x} disconnected")
        return xid

    def _request(self, msg, *, expect_reply: bool = True) -> list:
        waiter = _Waiter()
        with self._lock:
            self.dp.set_xid(msg)
            self._waiters[msg.xid] = waiter
        try:
            if not self.dp.send_msg(msg):
                raise ChannelError(f"switch {self.dp.id:016x} disconnected")
            if not waiter.done.wait(self.timeout):
                raise ChannelError(f"switch {self.dp.id:016x}: no reply to {type(msg).__name__}")
            if waiter.errors:
                raise ChannelError(f"switch {self.dp.id:016x}: {type(msg).__name__} failed: "
                                   f"{_describe(waiter.errors[0])}")
            return waiter.replies
        finally:
            with self._lock:
                self._waiters.pop(msg.xid, None)

    # -- from the event thread -------------------------------------------
    def deliver(self, msg) -> None:
        with self._lock:
            waiter = self._waiters.get(msg.xid)
        if waiter is None:
            return
        waiter.replies.append(msg)
        more = getattr(msg, "flags", 0) & self.ofp.OFPMPF_REPLY_MORE \
            if hasattr(msg, "body") else 0
        if not more:
            waiter.done.set()

    def deliver_error(self, msg) -> None:
        with self._lock:
            waiter = self._waiters.get(msg.xid)
            if waiter is None:
                self._errors_by_xid.setdefault(msg.xid, []).append(msg)
        if waiter is not None:
            waiter.errors.append(msg)
            waiter.done.set()

    def close(self) -> None:
        """The switch went away: fail every pending request at once."""
        with self._lock:
            waiters = list(self._waiters.values())
        for w in waiters:
            w.errors.append("disconnected")
            w.done.set()

    def _take_errors(self, xids) -> list:
        with self._lock:
            found = []
            for x in xids:
                found += self._errors_by_xid.pop(x, [])
            return found

    def packet_out(self, port: int, data: bytes) -> None:
        ofp, parser = self.ofp, self.parser
        msg = parser.OFPPacketOut(self.dp, buffer_id=ofp.OFP_NO_BUFFER,
                                  in_port=ofp.OFPP_CONTROLLER,
                                  actions=[parser.OFPActionOutput(port, 0)], data=data)
        self.send(msg)

    def _barrier(self) -> None:
        self._request(self.parser.OFPBarrierRequest(self.dp))

    # -- Channel -----------------------------------------------------------
    def read_flows(self) -> list[Flow]:
        replies = self._request(codec.flow_stats_request(self.dp))
        return [codec.from_stats(self.ofp, s) for r in replies for s in r.body]

    def read_meters(self) -> dict[int, MeterSpec]:
        req = self.parser.OFPMeterConfigStatsRequest(self.dp, 0, self.ofp.OFPM_ALL)
        out: dict[int, MeterSpec] = {}
        for r in self._request(req):
            for m in r.body:
                drops = [b for b in m.bands if b.type == self.ofp.OFPMBT_DROP]
                if len(drops) == 1 and len(m.bands) == 1 and m.flags & self.ofp.OFPMF_PKTPS:
                    out[m.meter_id] = MeterSpec(drops[0].rate, drops[0].burst_size)
                else:
                    # Not a shape we install: a spec no desired one equals,
                    # so the diff rewrites or deletes it.
                    out[m.meter_id] = MeterSpec(-1, -1)
        return out

    def meter_mods(self, ops: list[tuple[str, int, Optional[MeterSpec]]]) -> None:
        ofp, parser = self.ofp, self.parser
        commands = {"add": ofp.OFPMC_ADD, "modify": ofp.OFPMC_MODIFY, "delete": ofp.OFPMC_DELETE}
        xids = []
        for op, mid, spec in ops:
            bands = [parser.OFPMeterBandDrop(rate=spec.rate, burst_size=spec.burst)] if spec else []
            flags = ofp.OFPMF_PKTPS | ofp.OFPMF_BURST if spec else 0
            xids.append(self.send(parser.OFPMeterMod(self.dp, commands[op], flags, mid, bands)))
        self._barrier()   # errors for earlier xids arrive before the barrier reply
        errors = self._take_errors(xids)
        if errors:
            raise ChannelError(f"switch {self.dp.id:016x}: meter mod failed: {_describe(errors[0])}")

    def bundle(self, ops: list[tuple[str, Flow]]) -> None:
        ofp, parser = self.ofp, self.parser
        bid = next(self._bundle_ids) & 0xFFFFFFFF
        flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        self._ctrl(bid, ofp.ONF_BCT_OPEN_REQUEST, flags)
        xids = []
        try:
            for op, f in ops:
                inner = codec.flow_mod(self.dp, f, op)
                xids.append(self.send(parser.ONFBundleAddMsg(self.dp, bid, flags, inner, [])))
            self._ctrl(bid, ofp.ONF_BCT_COMMIT_REQUEST, flags)
        except ChannelError:
            errors = self._take_errors(xids)
            if errors:
                raise ChannelError(f"switch {self.dp.id:016x}: bundle refused: "
                                   f"{_describe(errors[0])}") from None
            raise
        errors = self._take_errors(xids)
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
