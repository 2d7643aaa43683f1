"""Packet-in dispatch: routing by cookie, a bounded queue that never blocks
the OpenFlow receive path, apps that raise, and a stop that never blocks."""
from __future__ import annotations

import logging
import threading
import time

from controller.app import App, PacketOut, SwitchView
from controller.dispatch import Dispatcher
from controller.flow import app_cookie


class FakeApp(App):
    def __init__(self, name: str, reply_port: int, fail_first: int = 0,
                 gate: threading.Event | None = None):
        self.name = name
        self.reply_port = reply_port
        self.fail_first = fail_first
        self.gate = gate
        self.seen: list = []
        self.entered = threading.Event()

    def packet_in(self, pkt):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.seen.append((pkt.dpid, pkt.in_port, pkt.data))
        if len(self.seen) <= self.fail_first:
            raise RuntimeError("deliberate app bug")
        return [PacketOut(self.reply_port, b"reply-" + pkt.data)]


def make(apps, queue_size=16, known_dpids=(1,)):
    sent = []

    def lookup(dpid, in_port):
        if dpid not in known_dpids:
            return None, None, None
        return SwitchView(dpid, None), None, object()

    d = Dispatcher(apps, queue_size=queue_size, lock=threading.RLock(), lookup=lookup,
                   send_packet=lambda dpid, port, data: sent.append((dpid, port, data)),
                   call_later=lambda s, fn: None)
    return d, sent


def wait_for(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_routes_by_the_cookies_app_id():
    arp, dhcp = FakeApp("arp", 7), FakeApp("dhcp", 8)
    d, sent = make([arp, dhcp])
    d.start()
    try:
        d.submit(1, 3, app_cookie(arp.app_id) | 0x1234, b"a")
        d.submit(1, 4, app_cookie(dhcp.app_id), b"d")
        assert wait_for(lambda: len(sent) == 2)
    finally:
        d.stop()
    assert arp.seen == [(1, 3, b"a")]
    assert dhcp.seen == [(1, 4, b"d")]
    assert sorted(sent) == [(1, 7, b"reply-a"), (1, 8, b"reply-d")]
    c = d.counters_snapshot()
    assert c["packet_in"] == 2 and c["packet_out"] == 2


def test_unknown_app_id_and_foreign_cookie_are_counted(caplog):
    arp = FakeApp("arp", 7)
    d, sent = make([arp])
    caplog.set_level(logging.ERROR, logger="controller.dispatch")
    d.handle(1, 3, app_cookie(7), b"x")      # nat's id: no such app loaded
    d.handle(1, 3, 0xDEAD, b"y")             # not a vmflow cookie at all
    assert d.counters_snapshot()["packet_in_unowned"] == 2
    assert arp.seen == [] and sent == []
    assert any("no app loaded owns it" in r.getMessage() for r in caplog.records)


def test_unknown_switch_is_counted():
    arp = FakeApp("arp", 7)
    d, sent = make([arp], known_dpids=())
    d.handle(9, 3, app_cookie(arp.app_id), b"x")
    assert d.counters_snapshot()["packet_in_unknown_switch"] == 1
    assert arp.seen == [] and sent == []


def test_full_queue_drops_and_counts_without_blocking_the_receive_path(caplog):
    gate = threading.Event()
    arp = FakeApp("arp", 7, gate=gate)
    d, sent = make([arp], queue_size=4)
    caplog.set_level(logging.WARNING, logger="controller.dispatch")
    d.start()
    try:
        d.submit(1, 3, app_cookie(arp.app_id), b"0")
        assert arp.entered.wait(5)            # the loop is now stuck in the app
        # Were submit to wait for room, it would wait for the gated app and
        # nothing would be dropped.
        for i in range(1, 101):
            d.submit(1, 3, app_cookie(arp.app_id), b"%d" % i)
        c = d.counters_snapshot()
        assert c["packet_in"] == 1 + 4
        assert c["packet_in_dropped"] == 96
        drops = [r for r in caplog.records if "packet-in queue full" in r.getMessage()]
        assert len(drops) == 1               # rate-limited, not one line per packet
        gate.set()
        assert wait_for(lambda: len(sent) == 5)
    finally:
        gate.set()
        d.stop()
    assert [s[2] for s in sent] == [b"reply-0", b"reply-1", b"reply-2", b"reply-3", b"reply-4"]


def test_concurrent_submits_from_several_switches_keep_the_bound():
    """Each switch's receive thread submits; the queue never holds more than
    queue_size packets, and every packet is either queued or counted dropped."""
    gate = threading.Event()
    arp = FakeApp("arp", 7, gate=gate)
    d, sent = make([arp], queue_size=32, known_dpids=range(8))
    d.start()
    try:
        d.submit(0, 3, app_cookie(arp.app_id), b"first")
        assert arp.entered.wait(5)
        go = threading.Barrier(8)

        def switch(dpid):
            go.wait()
            for i in range(500):
                d.submit(dpid, 3, app_cookie(arp.app_id), b"%d" % i)

        threads = [threading.Thread(target=switch, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        c = d.counters_snapshot()
        assert c["packet_in"] == 1 + 32
        assert c["packet_in_dropped"] == 8 * 500 - 32
        gate.set()
        assert wait_for(lambda: len(sent) == 33)
    finally:
        gate.set()
        d.stop()


def test_app_exception_is_counted_logged_and_the_loop_goes_on(caplog):
    arp = FakeApp("arp", 7, fail_first=2)
    d, sent = make([arp])
    caplog.set_level(logging.ERROR, logger="controller.dispatch")
    d.start()
    try:
        for i in range(3):
            d.submit(1, 3, app_cookie(arp.app_id), b"%d" % i)
        assert wait_for(lambda: len(sent) == 1)
    finally:
        d.stop()
    assert len(arp.seen) == 3
    assert sent == [(1, 7, b"reply-2")]
    assert d.counters_snapshot()["arp.errors"] == 2
    failures = [r for r in caplog.records if "failed on a packet-in" in r.getMessage()]
    assert len(failures) == 1                # once per (app, exception type)
    assert failures[0].exc_info is not None


def test_stop_never_blocks_on_a_full_queue():
    gate = threading.Event()
    arp = FakeApp("arp", 7, gate=gate)
    d, sent = make([arp], queue_size=16)
    d.start()
    try:
        d.submit(1, 3, app_cookie(arp.app_id), b"first")
        assert arp.entered.wait(5)
        for i in range(16):
            d.submit(1, 3, app_cookie(arp.app_id), b"%d" % i)
        assert d.counters_snapshot()["packet_in"] == 17      # the queue is full
        stopper = threading.Thread(target=d.stop, daemon=True)
        stopper.start()
        stopper.join(1.0)
        assert not stopper.is_alive(), "stop() blocked on the full queue"
        gate.set()
        d._thread.join(5)
        assert not d._thread.is_alive()
    finally:
        gate.set()
    # The loop stopped after the packet it was on; the queued ones were not served.
    assert arp.seen == [(1, 3, b"first")]
