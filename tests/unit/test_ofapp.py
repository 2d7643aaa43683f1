"""The os-ken app: packet-ins go straight to the dispatcher from the
datapath's receive thread; every other event still takes os-ken's queue."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from os_ken.controller.handler import MAIN_DISPATCHER
from os_ken.ofproto import ofproto_v1_3 as OFP
from os_ken.ofproto import ofproto_v1_3_parser as PARSER

from controller import ofapp
from os_ken.controller import ofp_event  # after controller.ofapp: os-ken's import order


@pytest.fixture
def app(monkeypatch):
    submitted = []
    core = SimpleNamespace(dispatcher=SimpleNamespace(submit=lambda *a: submitted.append(a)),
                           answers_packet_in=lambda dpid: True, packet_in_not_master=0)
    monkeypatch.setattr(ofapp, "CORE", core)
    a = ofapp.VmflowOFApp()
    a.submitted = submitted
    return a


DP = SimpleNamespace(id=5, ofproto=OFP, ofproto_parser=PARSER)


def packet_in(match, cookie=77, data=b"frame"):
    return PARSER.OFPPacketIn(DP, buffer_id=OFP.OFP_NO_BUFFER, total_len=len(data), reason=0,
                              table_id=10, cookie=cookie, match=match, data=data)


def test_packet_in_is_submitted_in_the_callers_thread_not_queued(app):
    app._send_event(ofp_event.EventOFPPacketIn(packet_in(PARSER.OFPMatch(in_port=4))),
                    MAIN_DISPATCHER)
    assert app.submitted == [(5, 4, 77, b"frame")]
    assert app.events.qsize() == 0


def test_packet_in_without_in_port_is_ignored(app):
    app._send_event(ofp_event.EventOFPPacketIn(packet_in(PARSER.OFPMatch())), MAIN_DISPATCHER)
    assert app.submitted == [] and app.events.qsize() == 0


def test_other_events_still_go_through_os_kens_queue(app):
    status = PARSER.OFPPortStatus(DP, reason=OFP.OFPPR_ADD, desc=None)
    app._send_event(ofp_event.EventOFPPortStatus(status), MAIN_DISPATCHER)
    assert app.submitted == []
    assert app.events.qsize() == 1


class StateDp:
    """A datapath as _state_change sees it."""

    def __init__(self, dpid):
        self.id = dpid
        self.ofproto = OFP
        self.ofproto_parser = PARSER
        self.ports = {}
        self.closed = 0

    def close(self):
        self.closed += 1


class Owners:
    def __init__(self):
        self.by_dpid = {}

    def owner(self, dpid):
        return self.by_dpid.get(dpid)


@pytest.fixture
def conn_app(monkeypatch):
    events = []
    core = SimpleNamespace(dispatcher=None,
                           switch_connected=lambda dpid, ch, ports: events.append(("c", dpid, ch)),
                           switch_disconnected=lambda dpid, ch: events.append(("d", dpid, ch)))
    owners = Owners()
    monkeypatch.setattr(ofapp, "CORE", core)
    monkeypatch.setattr(ofapp, "CONNECTIONS", owners)
    a = ofapp.VmflowOFApp()
    return a, events, owners


def state(dp, st):
    ev = ofp_event.EventOFPStateChange(dp)
    ev.state = st
    return ev


def test_a_main_for_a_connection_that_does_not_own_its_dpid_is_ignored(conn_app):
    app, events, owners = conn_app
    real, stale = StateDp(1), StateDp(1)
    owners.by_dpid[1] = real
    app._state_change(state(stale, MAIN_DISPATCHER))
    assert events == [] and 1 not in app.channels
    app._state_change(state(real, MAIN_DISPATCHER))
    assert [e[:2] for e in events] == [("c", 1)] and app.channels[1].dp is real


def test_a_replaced_channel_is_failed_and_its_connection_closed(conn_app):
    from os_ken.controller.handler import DEAD_DISPATCHER
    app, events, owners = conn_app
    old, new = StateDp(1), StateDp(1)
    owners.by_dpid[1] = old
    app._state_change(state(old, MAIN_DISPATCHER))
    old_ch = app.channels[1]
    waiting = []
    old_ch._waiters[5] = SimpleNamespace(errors=waiting, done=SimpleNamespace(set=lambda: None))
    owners.by_dpid[1] = new
    app._state_change(state(new, MAIN_DISPATCHER))
    assert old.closed == 1, "the replaced switch's connection must be closed"
    assert waiting == ["disconnected"], "what waited on the replaced channel must fail now"
    # Its late DEAD finds another channel: nothing more happens.
    app._state_change(state(old, DEAD_DISPATCHER))
    assert [e[0] for e in events] == ["c", "c"] and app.channels[1].dp is new
