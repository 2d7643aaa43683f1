"""The flow monitor's wire format (against bytes Open vSwitch 3.1 sent and
`ovs-ofctl -O OpenFlow13 monitor` sends), and drift reported by it repaired
by the switch's worker at once, without the audit."""
from __future__ import annotations

import threading
import time

import pytest
from l2_fixtures import cloud_docs
from test_reconciler import FakeSwitch
from test_reconciler_core import conf, h1_ports, settle, store, write  # noqa: F401  (fixtures)

from apps.l2 import L2App
from controller import flowmon, pipeline
from controller.core import Controller
from controller.ofchannel import OFChannel
from controller.reconciler import ChannelError

# The body ovs-ofctl -O OpenFlow13 monitor BRIDGE watch: sends (flags 0x3f),
# after the multipart and experimenter headers, as captured from its socket.
OFCTL_REQUEST = bytes.fromhex("00000000003f0004ffffffffff000000" "0001000400000000")
# Two updates OVS 3.1 sent after another connection's add-flow and del-flows:
# ADDED table=3 priority=5 cookie=0x1234 reg0=1; then DELETED (reason delete)
# for cookie 0x99 (no match fields) and for the first.
ADDED = bytes.fromhex("0028000000000005000000000" "00c0300000000000000123400"
                      "01000c00010004000000010000" "0000")
DELETED_BOTH = bytes.fromhex(
    "0020000100020007000000000004030000000000000000990001000400000000"
    "00280001000200050000000000" "0c030000000000000012340001000c000100040000000100000000")


def test_request_is_what_ovs_ofctl_sends_but_without_initial_actions_or_own():
    assert flowmon.request_body(0, 0x3F) == OFCTL_REQUEST
    body = flowmon.request_body()
    assert body[4:6] == (flowmon.NXFMF_ADD | flowmon.NXFMF_DELETE | flowmon.NXFMF_MODIFY).to_bytes(2, "big")
    assert not int.from_bytes(body[4:6], "big") & flowmon.NXFMF_OWN


def test_updates_parse():
    (u,) = flowmon.parse_updates(ADDED)
    assert (u.event, u.table, u.priority, u.cookie) == (flowmon.NXFME_ADDED, 3, 5, 0x1234)
    a, b = flowmon.parse_updates(DELETED_BOTH)
    assert (a.event, a.reason, a.table, a.priority, a.cookie) == (1, 2, 3, 7, 0x99)
    assert (b.event, b.cookie) == (1, 0x1234)
    abbrev = bytes.fromhex("0008000300000042")
    assert flowmon.parse_updates(abbrev)[0].xid == 0x42
    assert flowmon.parse_updates(b"") == []


@pytest.mark.parametrize("bad", [b"\x00", bytes.fromhex("0004000000000000"),
                                 bytes.fromhex("0010000900000000" "0000000000000000"),
                                 ADDED[:-8], bytes.fromhex("0008000000000000")])
def test_malformed_updates_raise(bad):
    with pytest.raises(flowmon.Malformed):
        flowmon.parse_updates(bad)


def test_only_our_cookie_space_is_ours():
    ours = pipeline.COOKIE_SPACE | 5
    assert flowmon.Update(0, cookie=ours).ours
    assert not flowmon.Update(0, cookie=0x1234).ours
    assert not flowmon.Update(flowmon.NXFME_ABBREV, xid=1).ours


class MonitoredSwitch(FakeSwitch):
    def __init__(self, refuse=False):
        super().__init__()
        self.refuse = refuse
        self.monitors = 0

    def start_monitor(self):
        if self.refuse:
            raise ChannelError("OFPBRC_BAD_EXPERIMENTER")
        self.monitors += 1


@pytest.fixture
def ctl(conf, store, tmp_path):  # noqa: F811
    # The audit at 3600 s (conf): only drift reports can repair here.
    c = Controller(conf, store, [L2App(conf)], status_path=None)
    c.start()
    yield c
    c.stop()


def test_drift_report_repairs_at_once_and_counts(ctl, store):  # noqa: F811
    sw = MonitoredSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    st = settle(ctl, store)["switches"]["00000000000000a1"]
    assert sw.monitors == 1 and st["monitor"] == "active" and st["drift_reports"] == 0
    want = dict(sw.flows)
    gone = sorted(want)[:3]
    for k in gone:   # deleted behind our back
        del sw.flows[k]
    ctl.drift_reported(0xA1, sw, 3)
    st = settle(ctl, store)["switches"]["00000000000000a1"]
    assert sw.flows == want
    assert st["repairs"] == 3 and st["drift_reports"] == 3 and st["drift_rereads"] == 1
    assert st["audits"] == 0 and st["in_sync"]


def test_a_report_for_another_channel_is_ignored(ctl, store):  # noqa: F811
    sw = MonitoredSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    settle(ctl, store)
    ctl.drift_reported(0xA1, MonitoredSwitch(), 5)   # a stale connection's
    ctl.drift_reported(0xB2, sw, 5)                  # no such switch
    st = settle(ctl, store)["switches"]["00000000000000a1"]
    assert st["drift_reports"] == 0 and st["drift_rereads"] == 0


def test_a_paused_monitor_is_not_in_sync_and_resuming_rereads(ctl, store):  # noqa: F811
    sw = MonitoredSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    settle(ctl, store)
    ctl.monitor_paused(0xA1, sw, True)
    st = ctl.status()
    assert st["switches"]["00000000000000a1"]["monitor"] == "paused"
    assert not st["switches"]["00000000000000a1"]["in_sync"] and not st["synced"]
    k = sorted(sw.flows)[0]
    del sw.flows[k]
    ctl.monitor_paused(0xA1, sw, False)
    st = settle(ctl, store)["switches"]["00000000000000a1"]
    assert k in sw.flows and st["monitor"] == "active" and st["repairs"] == 1


def test_a_refused_monitor_leaves_the_audit_in_charge(ctl, store):  # noqa: F811
    sw = MonitoredSwitch(refuse=True)
    ctl.switch_connected(0xA1, sw, h1_ports())
    st = settle(ctl, store)["switches"]["00000000000000a1"]
    assert st["monitor"] == "failed" and st["in_sync"] and sw.flows


def test_a_reading_older_than_the_drift_is_not_adopted(ctl, store):  # noqa: F811
    """An audit reading taken before a hand deletion would hide it."""
    sw = MonitoredSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    settle(ctl, store)
    want = dict(sw.flows)
    switch = ctl.switches[0xA1]
    reading = switch.reconciler.read()   # before the deletion
    k = sorted(sw.flows)[0]
    del sw.flows[k]
    ctl.drift_reported(0xA1, sw, 1)
    switch.poke(audit=True, reading=reading)
    settle(ctl, store)
    assert sw.flows == want


class _Dp:
    """Just enough of an os-ken datapath for OFChannel's monitor request."""

    def __init__(self):
        from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser
        self.ofproto, self.ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser
        self.id, self.xid, self.sent = 1, 0, []

    def set_xid(self, msg):
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg):
        msg.serialize()
        self.sent.append(msg)
        return True


def test_channel_sends_the_request_and_waits_for_its_reply():
    dp = _Dp()
    ch = OFChannel(dp, timeout=5)
    done = threading.Event()

    def start():
        ch.start_monitor()
        done.set()
    threading.Thread(target=start, daemon=True).start()
    deadline = time.time() + 5
    while not dp.sent and time.time() < deadline:
        time.sleep(0.01)
    (msg,) = dp.sent
    buf = bytes(msg.buf)
    assert buf[1] == dp.ofproto.OFPT_MULTIPART_REQUEST
    assert buf[16:24] == bytes.fromhex("4f4e46000000074e") and buf[24:] == flowmon.request_body()

    class Reply:
        xid, flags, body = msg.xid, 0, None
    assert ch.deliver(Reply())
    assert done.wait(5)
    Reply.xid = 0
    assert not ch.deliver(Reply())   # an update: nobody waits on xid 0
