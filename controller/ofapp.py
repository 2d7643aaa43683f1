"""The os-ken application: OpenFlow events in, to the Controller (core.py).

os-ken instantiates this class itself (AppManager.run_apps), so the
controller it reports to is handed over through the module-level CORE,
set by runtime.serve() before run_apps. Handlers here never block: replies
are matched to waiting workers by xid (ofchannel.py), everything else is
queued for the core or the dispatcher.

Packet-ins skip os-ken's per-app event queue: os-ken hands every event to
an app through a queue and a thread of the app's own, and the dispatcher
(dispatch.py) has its bounded queue and thread anyway, so packet-ins went
through two handoffs where one does. `_send_event` (called in the
datapath's receive thread) hands them straight to the dispatcher's
non-blocking submit. That also keeps a packet-in flood from filling
os-ken's queue, whose semaphore would block the receive thread and with it
the replies the reconciler waits on.
"""
from __future__ import annotations

import logging
import struct
import threading

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, HANDSHAKE_DISPATCHER,
                                       MAIN_DISPATCHER, set_ev_cls)
from os_ken.ofproto import ofproto_v1_3

from controller import flowmon
from controller.ofchannel import OFChannel

LOG = logging.getLogger(__name__)

_MP_HEADER = 16   # ofp_header and the multipart reply's type, flags and pad

CORE = None          # controller.core.Controller, set by runtime.serve()
CONNECTIONS = None   # controller.ofconn.Connections, set by runtime.serve()


def port_name(port) -> str:
    name = port.name
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name.rstrip("\x00")


class VmflowOFApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.core = CORE
        self.channels: dict[int, OFChannel] = {}
        self._lock = threading.Lock()

    def _send_event(self, ev, state):
        # os-ken only sends us the events our handlers registered for, in
        # the states they registered (get_observers), so a packet-in here is
        # one _packet_in wants, in MAIN_DISPATCHER.
        if ev.__class__ is ofp_event.EventOFPPacketIn:
            self._packet_in(ev)
        else:
            super()._send_event(ev, state)

    def _channel(self, dp):
        with self._lock:
            ch = self.channels.get(dp.id)
        return ch if ch is not None and ch.dp is dp else None

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            # The listener admitted one connection per datapath id
            # (ofconn.Connections.admit); a MAIN that reaches us after its
            # connection lost the id, or died, is stale.
            if CONNECTIONS is not None and CONNECTIONS.owner(dp.id) is not dp:
                return
            ch = OFChannel(dp)
            with self._lock:
                old = self.channels.get(dp.id)
                self.channels[dp.id] = ch
            if old is not None and old.dp is not dp:
                # Its DEAD, if still to come, will not find it: fail what
                # waits on it now (a worker would wait out its timeout), and
                # never forget a connection without closing it (a switch
                # left connected to a controller that ignores it never
                # reconnects).
                old.close()
                old.dp.close()
            # os-ken read the port descriptions before entering MAIN.
            ports = {port_name(p): no for no, p in dp.ports.items()
                     if no <= dp.ofproto.OFPP_MAX}
            self.core.switch_connected(dp.id, ch, ports)
        elif ev.state == DEAD_DISPATCHER:
            with self._lock:
                ch = self.channels.get(dp.id)
                if ch is None or ch.dp is not dp:
                    return
                del self.channels[dp.id]
            ch.close()
            self.core.switch_disconnected(dp.id, ch)

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPMeterConfigStatsReply,
                 ofp_event.EventOFPMeterStatsReply,
                 ofp_event.EventOFPBarrierReply, ofp_event.EventONFBundleCtrlMsg,
                 ofp_event.EventOFPRoleReply],
                MAIN_DISPATCHER)
    def _reply(self, ev):
        ch = self._channel(ev.msg.datapath)
        if ch is not None:
            ch.deliver(ev.msg)

    @set_ev_cls(ofp_event.EventOFPExperimenterStatsReply, MAIN_DISPATCHER)
    def _experimenter_reply(self, ev):
        """The flow monitor's reply to its request, or its updates (xid 0):
        a change by someone else in vmflow's cookie space is drift, handed
        to the core to repair now (flowmon.py)."""
        msg = ev.msg
        ch = self._channel(msg.datapath)
        if ch is None or ch.deliver(msg):
            return
        # The raw bytes, not os-ken's body: it parses no flow updates.
        buf = bytes(msg.buf[:msg.msg_len])
        exp, exp_type = struct.unpack_from("!II", buf, _MP_HEADER)
        if exp != flowmon.ONF_EXPERIMENTER or exp_type != flowmon.ONFMP_FLOW_MONITOR:
            return
        try:
            updates = flowmon.parse_updates(buf[_MP_HEADER + 8:])
        except flowmon.Malformed as e:
            # What changed is unknown: re-read, as for any drift.
            LOG.warning("switch %016x: unreadable flow monitor update (%s)", msg.datapath.id, e)
            self.core.drift_reported(msg.datapath.id, ch, 1)
            return
        ours = sum(1 for u in updates if u.ours)
        if ours:
            self.core.drift_reported(msg.datapath.id, ch, ours)

    @set_ev_cls(ofp_event.EventOFPExperimenter, MAIN_DISPATCHER)
    def _experimenter(self, ev):
        msg = ev.msg
        if msg.experimenter != flowmon.ONF_EXPERIMENTER or msg.exp_type not in (
                flowmon.ONFT_FLOW_MONITOR_PAUSED, flowmon.ONFT_FLOW_MONITOR_RESUMED):
            return
        ch = self._channel(msg.datapath)
        if ch is not None:
            self.core.monitor_paused(msg.datapath.id, ch,
                                     msg.exp_type == flowmon.ONFT_FLOW_MONITOR_PAUSED)

    @set_ev_cls(ofp_event.EventOFPErrorMsg,
                [HANDSHAKE_DISPATCHER, CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        ch = self._channel(ev.msg.datapath)
        if ch is not None:
            ch.deliver_error(ev.msg)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp = dp.ofproto
        name = port_name(msg.desc)
        if msg.reason == ofp.OFPPR_DELETE:
            self.core.port_changed(dp.id, name, None)
        else:
            self.core.port_changed(dp.id, name, msg.desc.port_no)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        in_port = msg.match.get("in_port")
        if in_port is None or self.core.dispatcher is None:
            return
        if not self.core.answers_packet_in(msg.datapath.id):
            # Several controllers: OVS sends packet-ins to the master (and,
            # until roles are set, to every controller as EQUAL); only the
            # master answers, so a VM never gets two replies.
            self.core.packet_in_not_master += 1
            return
        self.core.dispatcher.submit(msg.datapath.id, in_port, msg.cookie, msg.data)
