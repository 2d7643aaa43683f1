"""OFChannel against a fake datapath: errors are kept only for xids someone
waits on; every other error is counted and logged (rate-limited), not stored."""
from __future__ import annotations

import logging
import struct
from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller import ofchannel
from controller.ofchannel import OFChannel
from controller.reconciler import ChannelError, MeterSpec

OFP = ofproto_v1_3
PARSER = ofproto_v1_3_parser


class FakeDatapath:
    """Enough of os-ken's Datapath for OFChannel; `respond(msg)` plays the switch."""

    def __init__(self, respond=None):
        self.id = 0xAB
        self.ofproto = OFP
        self.ofproto_parser = PARSER
        self.xid = 0
        self.sent: list = []
        self.respond = respond

    def set_xid(self, msg):
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg):
        self.sent.append(msg)
        if self.respond is not None:
            self.respond(msg)
        return True

    def send(self, buf):
        """Raw bytes (packet_out packs its own); respond() gets the xid and bytes."""
        raw = SimpleNamespace(xid=struct.unpack_from("!I", buf, 4)[0], buf=bytes(buf))
        self.sent.append(raw)
        if self.respond is not None:
            self.respond(raw)
        return True


def error(xid: int, type_: int = OFP.OFPET_BAD_REQUEST, code: int = 1):
    msg = PARSER.OFPErrorMsg(None, type_=type_, code=code, data=b"")
    msg.xid = xid
    return msg


def barrier_reply(xid: int):
    msg = PARSER.OFPBarrierReply(None)
    msg.xid = xid
    return msg


def test_unsolicited_errors_are_counted_per_kind_not_stored(caplog):
    ch = OFChannel(FakeDatapath())
    caplog.set_level(logging.ERROR, logger="controller.ofchannel")
    for i in range(5000):
        ch.deliver_error(error(100000 + i, code=1))
        ch.deliver_error(error(200000 + i, type_=OFP.OFPET_BAD_ACTION, code=4))
    assert ch.unsolicited_errors == {
        f"type={OFP.OFPET_BAD_REQUEST},code=1": 5000,
        f"type={OFP.OFPET_BAD_ACTION},code=4": 5000,
    }
    assert ch._watched == {} and ch._waiters == {}
    # Rate-limited: 10,000 errors within the interval log one line.
    logged = [r for r in caplog.records if "nobody waits on" in r.getMessage()]
    assert len(logged) == 1


def test_error_kinds_are_bounded_too():
    ch = OFChannel(FakeDatapath())
    for code in range(1000):
        ch.deliver_error(error(code + 1, code=code))
    assert len(ch.unsolicited_errors) == ofchannel.MAX_ERROR_KINDS + 1
    assert sum(ch.unsolicited_errors.values()) == 1000
    assert ch.unsolicited_errors["other"] == 1000 - ofchannel.MAX_ERROR_KINDS


def test_next_log_after_the_interval_says_how_many_were_suppressed(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ofchannel.time, "monotonic", lambda: clock[0])
    ch = OFChannel(FakeDatapath())
    caplog.set_level(logging.ERROR, logger="controller.ofchannel")
    for i in range(7):
        ch.deliver_error(error(i + 1))
    clock[0] += ofchannel.UNSOLICITED_LOG_S
    ch.deliver_error(error(99))
    logged = [r.getMessage() for r in caplog.records if "nobody waits on" in r.getMessage()]
    assert len(logged) == 2
    assert "6 more since the last" in logged[1]


def test_packet_out_refused_by_the_switch_is_counted():
    refused = []
    dp = FakeDatapath(respond=lambda m: refused.append(m.xid))
    ch = OFChannel(dp)
    ch.packet_out(3, b"\x00" * 60)
    ch.deliver_error(error(refused[0], type_=OFP.OFPET_BAD_ACTION, code=OFP.OFPBAC_BAD_OUT_PORT))
    assert ch.unsolicited_errors == {
        f"type={OFP.OFPET_BAD_ACTION},code={OFP.OFPBAC_BAD_OUT_PORT}": 1}


@pytest.mark.parametrize("port,data", [
    (3, b"\x00" * 60),
    (OFP.OFPP_MAX, bytes(range(256)) * 5 + b"odd"),
    (1, b""),
])
def test_packet_out_bytes_are_exactly_os_kens(port, data):
    """The hand-packed PACKET_OUT equals os-ken's serialisation of the same
    message (buffer none, in_port CONTROLLER, one output action, max_len 0)."""
    dp = FakeDatapath()
    dp.xid = 41
    OFChannel(dp).packet_out(port, data)
    ref = PARSER.OFPPacketOut(dp, buffer_id=OFP.OFP_NO_BUFFER, in_port=OFP.OFPP_CONTROLLER,
                              actions=[PARSER.OFPActionOutput(port, 0)], data=data)
    ref.set_xid(42)
    ref.serialize()
    assert dp.sent[0].buf == bytes(ref.buf)


def test_packet_out_xids_share_the_requests_sequence_and_wrap():
    dp = FakeDatapath()
    ch = OFChannel(dp)
    dp.xid = OFP.MAX_XID - 1
    ch.packet_out(1, b"a")
    ch.packet_out(1, b"b")
    ch.send(PARSER.OFPBarrierRequest(dp))
    assert [m.xid for m in dp.sent] == [OFP.MAX_XID, 0, 1]


def test_packet_out_to_a_closed_datapath_raises():
    dp = FakeDatapath()
    dp.send = lambda buf: False
    with pytest.raises(ChannelError, match="disconnected"):
        OFChannel(dp).packet_out(1, b"x")


def test_meter_mod_error_still_fails_the_batch_and_leaves_nothing_watched():
    ch = None

    def switch(msg):
        if isinstance(msg, PARSER.OFPMeterMod):
            ch.deliver_error(error(msg.xid, type_=OFP.OFPET_METER_MOD_FAILED, code=1))
        elif isinstance(msg, PARSER.OFPBarrierRequest):
            ch.deliver(barrier_reply(msg.xid))

    ch = OFChannel(FakeDatapath(respond=switch), timeout=2)
    with pytest.raises(ChannelError, match="meter mod failed"):
        ch.meter_mods([("add", 1, MeterSpec(200, 100))])
    assert ch._watched == {}
    assert not ch.unsolicited_errors
    # A late second error for that xid is no longer kept for anyone.
    late_xid = ch.dp.sent[0].xid
    ch.deliver_error(error(late_xid, type_=OFP.OFPET_METER_MOD_FAILED, code=1))
    assert ch._watched == {}
    assert sum(ch.unsolicited_errors.values()) == 1


def test_meter_mods_succeed_without_errors():
    ch = None

    def switch(msg):
        if isinstance(msg, PARSER.OFPBarrierRequest):
            ch.deliver(barrier_reply(msg.xid))

    ch = OFChannel(FakeDatapath(respond=switch), timeout=2)
    ch.meter_mods([("add", 1, MeterSpec(200, 100)), ("delete", 2, None)])
    assert [type(m).__name__ for m in ch.dp.sent] == ["OFPMeterMod", "OFPMeterMod",
                                                       "OFPBarrierRequest"]
    assert ch._watched == {}


def test_read_flow_packets_asks_one_table_and_exact_cookie_and_sums_the_counters():
    holder = {}

    def respond(msg):
        holder["req"] = msg
        reply = SimpleNamespace(xid=msg.xid, flags=0, body=[
            SimpleNamespace(packet_count=3, priority=115),
            SimpleNamespace(packet_count=4, priority=115),
            SimpleNamespace(packet_count=50, priority=116)])
        holder["ch"].deliver(reply)

    ch = holder["ch"] = OFChannel(FakeDatapath(respond))
    assert ch.read_flow_packets("classify", 0x766D060000000000, priority=115) == 7
    assert ch.read_flow_packets("classify", 0x766D060000000000) == 57
    req = holder["req"]
    assert (req.table_id, req.cookie, req.cookie_mask) == (0, 0x766D060000000000, 2 ** 64 - 1)


def test_read_flow_packets_gives_up_after_its_own_short_timeout():
    ch = OFChannel(FakeDatapath(lambda msg: None), timeout=30)
    with pytest.raises(ChannelError):
        ch.read_flow_packets("classify", 1, timeout=0.05)
