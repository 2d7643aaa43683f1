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
    core = SimpleNamespace(dispatcher=SimpleNamespace(submit=lambda *a: submitted.append(a)))
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
