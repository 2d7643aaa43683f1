"""The core's switch-event inbox: coalesced per switch, so bounded, and never
losing an event that still matters."""
from __future__ import annotations

import queue
import threading
import time

import pytest

from controller.events import SwitchEvents


def drain(q: SwitchEvents) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_a_flapping_interface_keeps_one_event_the_latest():
    q = SwitchEvents()
    superseded = sum(q.put(("port", 1, "tap1", None if i % 2 else 7)) for i in range(10001))
    assert len(q) == 1 and superseded == 10000 and q.coalesced == 10000
    assert drain(q) == [("port", 1, "tap1", 7)]


def test_a_flood_over_many_switches_is_bounded_by_switches_times_interfaces():
    q = SwitchEvents()
    for flap in range(20):
        for dpid in range(50):
            for n in range(30):
                q.put(("port", dpid, f"tap{n}", flap))
    assert len(q) == 50 * 30
    assert {ev[3] for ev in drain(q)} == {19}


def test_connect_supersedes_everything_queued_for_that_switch_only():
    q = SwitchEvents()
    ch_old, ch_new = object(), object()
    q.put(("port", 1, "tap1", 3))
    q.put(("disconnect", 1, ch_old))
    q.put(("port", 2, "tap9", 4))
    assert q.put(("connect", 1, ch_new, {"tap1": 5})) == 2
    assert drain(q) == [("port", 2, "tap9", 4), ("connect", 1, ch_new, {"tap1": 5})]


def test_order_within_a_switch_is_kept():
    q = SwitchEvents()
    ch = object()
    evs = [("connect", 1, ch, {}), ("port", 1, "a", 1), ("port", 1, "b", 2),
           ("disconnect", 1, ch)]
    for ev in evs:
        q.put(ev)
    assert drain(q) == evs


def test_port_event_moves_behind_what_came_after_its_earlier_self():
    q = SwitchEvents()
    ch = object()
    q.put(("port", 1, "a", 1))
    q.put(("disconnect", 1, ch))
    q.put(("port", 1, "a", 2))
    assert drain(q) == [("disconnect", 1, ch), ("port", 1, "a", 2)]


def test_disconnects_of_different_channels_are_both_kept():
    # A late disconnect of a stale channel must not hide the current one's.
    q = SwitchEvents()
    a, b = object(), object()
    q.put(("disconnect", 1, b))
    q.put(("disconnect", 1, a))
    assert drain(q) == [("disconnect", 1, b), ("disconnect", 1, a)]


def test_get_times_out_and_none_wakes_a_waiting_reader():
    q = SwitchEvents()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - t0 >= 0.04
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    got = []
    reader = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    reader.start()
    time.sleep(0.05)
    q.put(None)
    reader.join(5)
    assert got == [None]
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        SwitchEvents().put(("bogus", 1))


def test_core_counts_coalesced_events_as_no_longer_pending(tmp_path):
    from test_reconciler import FakeSwitch
    from test_reconciler_core import h1_ports, settle, write

    from apps.l2 import L2App
    from controller.core import Controller
    from l2_fixtures import cloud_docs
    from topology.config import new_conf
    from topology.store import SqliteStore

    conf = new_conf()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    conf.set_override("store_poll_interval", 0.01, group="controller")
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    docs = cloud_docs()
    for kind in ("hosts", "networks", "ports"):
        for body in docs[kind].values():
            write(store, kind, body)
    ctl = Controller(conf, store, [L2App(conf)], status_interval=0.05)
    ports = h1_ports()
    name = next(n for n in ports if n.startswith("tap"))
    ctl.switch_connected(0xA1, FakeSwitch(), ports)
    for i in range(1001):   # the core is not running yet: a flapping interface piles up
        ctl.port_changed(0xA1, name, None if i % 2 else 40 + i)
    assert ctl.pending_events == 2 and len(ctl._events) == 2
    ctl.start()
    try:
        st = settle(ctl, store)
        assert st["pending_events"] == 0
        assert st["switches"]["00000000000000a1"]["ports"][name] == 40 + 1000
    finally:
        ctl.stop()
