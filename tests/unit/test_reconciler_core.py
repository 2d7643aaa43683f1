"""The controller core end to end without OpenFlow: a real SQLite store, the
store follower, the compiler and the reconciler against fake switches."""
from __future__ import annotations

import threading
import time

import pytest
from l2_fixtures import cloud_docs, pid, port
from test_reconciler import FakeSwitch

from apps.l2 import L2App
from controller.core import Controller
from controller.status import read_status
from topology.config import new_conf
from topology.store import SqliteStore, StoreError
from topology.view import interface_name

PARENT = {"ports": "network_id", "subnets": "network_id"}


def write(store, kind, body):
    with store.transaction() as t:
        t.put(kind, body["id"], body, parent_id=body.get(PARENT.get(kind, ""), None))


@pytest.fixture
def conf():
    c = new_conf()
    c(args=[], default_config_files=[], default_config_dirs=[])
    c.set_override("store_poll_interval", 0.01, group="controller")
    c.set_override("audit_interval", 3600, group="controller")
    return c


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "db.sqlite"))
    docs = cloud_docs()
    for kind in ("hosts", "networks", "ports"):
        for body in docs[kind].values():
            write(s, kind, body)
    return s


@pytest.fixture
def ctl(conf, store, tmp_path):
    c = Controller(conf, store, [L2App(conf)], status_path=str(tmp_path / "status.json"),
                   status_interval=0.05)
    c.start()
    yield c
    c.stop()


def h1_ports():
    names = sorted(interface_name(port(n, "n1", "h1")) for n in (1, 2, 4))
    return {**{n: i for i, n in enumerate(names, start=1)}, "up1": 100}


def settle(ctl, store, timeout=5.0):
    """Wait until every connect/port event is handled and every switch is in sync."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = ctl.status()
        if st["revision"] == store.revision() and st["synced"] and st["store_ok"] and all(
                not s["busy"] for s in st["switches"].values()):
            return st
        time.sleep(0.01)
    raise AssertionError(f"not settled: {ctl.status()}")


def macs_forwarded(sw: FakeSwitch):
    return {dict(f.match)["eth_dst"] for f in sw.flows.values()
            if f.table == "l2_lookup" and isinstance(dict(f.match).get("eth_dst"), str)}


def test_connect_installs_and_a_new_port_sends_only_its_flows(ctl, store):
    sw = FakeSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    st = settle(ctl, store)
    assert st["switches"]["00000000000000a1"]["claimed"]
    assert macs_forwarded(sw) == {"fa:16:3e:00:00:01", "fa:16:3e:00:00:02",
                                  "fa:16:3e:00:00:03", "fa:16:3e:00:00:04"}
    sw.log.clear()
    write(store, "ports", port(5, "n1", "h2"))      # remote port on n1
    settle(ctl, store)
    assert sw.log == [("flow", "add", next(f.key for f in sw.flows.values()
                                          if dict(f.match).get("eth_dst") == "fa:16:3e:00:00:05"))]


def test_deleted_port_loses_its_flows(ctl, store):
    sw = FakeSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    settle(ctl, store)
    with store.transaction() as t:
        t.delete("ports", pid(2))
    settle(ctl, store)
    assert "fa:16:3e:00:00:02" not in macs_forwarded(sw)
    assert not [f for f in sw.flows.values() if ("reg6", 2) in f.match]


def test_port_plugged_after_creation_and_rebound_host(ctl, store):
    sw1, sw2 = FakeSwitch(), FakeSwitch()
    ports = h1_ports()
    p2 = interface_name(port(2, "n1", "h1"))
    ofport = ports.pop(p2)
    ctl.switch_connected(0xA1, sw1, ports)
    ctl.switch_connected(0xA2, sw2, {"up2": 100})
    settle(ctl, store)
    assert "fa:16:3e:00:00:02" not in macs_forwarded(sw1)
    ctl.port_changed(0xA1, p2, ofport)                  # the VM plugs in
    settle(ctl, store)
    assert "fa:16:3e:00:00:02" in macs_forwarded(sw1)
    write(store, "ports", port(2, "n1", "h2"))          # live-migrated to h2
    settle(ctl, store)
    up = [f for f in sw1.flows.values() if dict(f.match).get("eth_dst") == "fa:16:3e:00:00:02"]
    assert [f.instructions for f in up] == [(("apply", ("set_field", "reg7", 0x80000000)),
                                              ("goto", "pre_output"))]
    assert not [f for f in sw1.flows.values() if ("reg6", 2) in f.match]


def test_unclaimed_switch_is_listed_then_claimed_by_a_new_host(ctl, store):
    sw = FakeSwitch()
    ctl.switch_connected(0xC3, sw, {"tap00000007-aa": 1, "up3": 2})
    st = settle(ctl, store)
    assert st["unclaimed"] == ["00000000000000c3"]
    assert [(f.table, f.instructions) for f in sw.flows.values()] == [("classify", ())]
    write(store, "hosts", {"id": "h3", "name": "h3", "datapath_id": "00000000000000c3",
                           "physical_networks": {"physnet1": "up3"}})
    write(store, "ports", port(7, "n1", "h3"))
    st = settle(ctl, store)
    assert st["unclaimed"] == []
    assert "fa:16:3e:00:00:07" in macs_forwarded(sw)


class SlowReadSwitch(FakeSwitch):
    """A switch whose flow read blocks, once armed, until released."""

    def __init__(self):
        super().__init__()
        self.armed = False
        self.reading = threading.Event()
        self.release = threading.Event()

    def read_flows(self):
        if self.armed:
            self.reading.set()
            self.release.wait(30)
        return super().read_flows()


def test_a_change_is_not_held_back_by_the_audit_reading_the_switch(ctl, store):
    sw = SlowReadSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    settle(ctl, store)
    sw.armed = True
    audit = threading.Thread(target=ctl.audit, daemon=True)
    audit.start()
    assert sw.reading.wait(10)
    write(store, "ports", port(5, "n1", "h2"))          # while the read is blocked
    deadline = time.time() + 10
    while "fa:16:3e:00:00:05" not in macs_forwarded(sw) and time.time() < deadline:
        time.sleep(0.01)
    assert "fa:16:3e:00:00:05" in macs_forwarded(sw)
    assert audit.is_alive() and not sw.release.is_set()  # the read is still under way
    sw.armed = False
    sw.release.set()
    audit.join(10)
    st = settle(ctl, store)
    # The reading predates the new flow; adopting it must not take the flow away.
    assert "fa:16:3e:00:00:05" in macs_forwarded(sw)
    assert st["switches"]["00000000000000a1"]["repairs"] == 0
    assert st["switches"]["00000000000000a1"]["audits"] == 1


def test_store_outage_leaves_switches_alone(ctl, store, monkeypatch):
    sw = FakeSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    settle(ctl, store)
    before = dict(sw.flows)
    sw.log.clear()

    def down(*a, **k):
        raise StoreError("unreachable")
    monkeypatch.setattr(store, "changes_since", down)
    monkeypatch.setattr(store, "snapshot", down)
    deadline = time.time() + 2
    while ctl.status()["store_ok"] and time.time() < deadline:
        time.sleep(0.01)
    assert not ctl.status()["store_ok"]
    ctl.audit()
    time.sleep(0.2)
    assert sw.flows == before and sw.log == []
    assert ctl.status()["counters"]["store_errors"] >= 1
    monkeypatch.undo()
    assert settle(ctl, store)["store_ok"]


def test_no_sync_before_the_first_view(conf, tmp_path):
    """A controller whose store is down at start must not flush the switch."""
    class Down(SqliteStore):
        def snapshot(self):
            raise StoreError("down")
    s = Down(str(tmp_path / "x.sqlite"))
    c = Controller(conf, s, [L2App(conf)])
    c.start()
    try:
        sw = FakeSwitch()
        sw.flows = {("output", 1, ()): None}
        c.switch_connected(0xA1, sw, {})
        time.sleep(0.3)
        assert sw.log == [] and sw.flows == {("output", 1, ()): None}
    finally:
        c.stop()


def test_a_new_default_security_group_recomputes_nothing(ctl, store, monkeypatch):
    """A project's first GET of security groups (or first port) creates its
    default group. Until a port uses a group no flow depends on it, so no
    switch is recomputed; before the scope registry every switch was."""
    ctl.switch_connected(0xA1, FakeSwitch(), h1_ports())
    settle(ctl, store)
    calls = []
    real = ctl.compiler.refresh
    monkeypatch.setattr(ctl.compiler, "refresh",
                        lambda *a, **k: calls.append(a[1].dpid) or real(*a, **k))
    write(store, "security_groups", {"id": "sg-default", "name": "default",
                                     "project_id": "p-new", "security_group_rules": []})
    write(store, "security_group_rules", {"id": "r1", "security_group_id": "sg-default",
                                          "direction": "egress", "ethertype": "IPv4"})
    settle(ctl, store)
    assert calls == []
    # while a port change still recomputes its switch
    write(store, "ports", port(2, "n1", "h1", name="renamed"))
    settle(ctl, store)
    assert calls == [0xA1]


def test_a_stalled_store_read_never_holds_the_controller_lock(ctl, store, monkeypatch):
    """The store is read before the lock is taken: packet-in services
    (which answer under ctl.lock) keep answering from the view while a read
    waits on a locked store, and the status says the store is stale."""
    from controller import follower as follower_mod
    sw = FakeSwitch()
    ctl.switch_connected(0xA1, sw, h1_ports())
    settle(ctl, store)
    entered, release = threading.Event(), threading.Event()
    real = store.changes_since

    def stalled(*a, **k):
        entered.set()
        release.wait(10)
        return real(*a, **k)
    monkeypatch.setattr(store, "changes_since", stalled)
    monkeypatch.setattr(follower_mod, "STALE_S", 0.3)
    ctl.follower.wake()
    try:
        assert entered.wait(5), "the core never read the feed"
        before = ctl.status()["store_last_read"]
        for _ in range(5):   # the lock stays free while the read waits
            assert ctl.lock.acquire(timeout=0.2)
            ctl.lock.release()
        time.sleep(0.4)
        st = ctl.status()   # the status takes the lock too
        assert st["store_ok"] is False
        assert st["store_last_read"] == before and st["store_read_age"] >= 0.3
        assert ctl.port_at(0xA1, 1)[1] is not None   # the view still answers
    finally:
        release.set()
    monkeypatch.undo()
    st = settle(ctl, store)
    assert st["store_ok"] and st["store_last_read"] > before


def test_follower_fetch_reads_and_apply_changes_the_view(store):
    from collections import Counter

    from controller.follower import RESYNC, StoreFollower
    f = StoreFollower(store, Counter())
    got = f.fetch()
    assert f.view is None and f.last_read is not None   # read, not applied yet
    assert f.apply(got) == RESYNC and f.view.revision == store.revision()
    assert f.healthy()
    write(store, "networks", {"id": "n9", "name": "n9", "_key": 9,
                              "provider:network_type": "flat",
                              "provider:physical_network": "physnet1"})
    got = f.fetch()
    assert len(got) == 1 and "n9" not in f.view.networks
    assert [c.body["id"] for c, _old in f.apply(got)] == ["n9"]
    assert "n9" in f.view.networks
    assert f.apply(f.fetch()) == []   # nothing new: still a successful read
    f.last_read -= 60
    assert not f.healthy()


def test_a_status_only_write_recomputes_nothing_and_a_real_change_does(ctl, store):
    """The controller's own status write-back comes back through the change
    feed; no flow depends on status or the store's stamps, so it must not
    recompute (at 500 ports it used to, hundreds of times per port)."""
    ctl.switch_connected(0xA1, FakeSwitch(), h1_ports())
    settle(ctl, store)
    refreshed = []
    real = ctl.compiler.refresh

    def counting(view, swview, memo, dirty=None):
        refreshed.append(dirty)
        return real(view, swview, memo, dirty)
    ctl.compiler.refresh = counting
    with store.read() as r:
        doc = r.get("ports", pid(1))
    status = "DOWN" if doc.get("status") == "ACTIVE" else "ACTIVE"
    write(store, "ports", {**doc, "status": status, "updated_at": "2026-11-27T00:00:00Z",
                           "revision_number": doc.get("revision_number", 0) + 7})
    settle(ctl, store)
    assert refreshed == []
    write(store, "ports", {**doc, "admin_state_up": False})
    settle(ctl, store)
    assert refreshed


def test_the_status_file_says_in_sync_as_soon_as_a_switch_is(conf, store, tmp_path):
    """A switch coming into sync is written to the status file at once, not
    a status interval later: `vmflow status`, and whatever waits on it after
    a restart, sees it within milliseconds."""
    path = tmp_path / "status.json"
    c = Controller(conf, store, [L2App(conf)], status_path=str(path), status_interval=30)
    c.start()
    try:
        wait_for_file = time.time() + 5
        while not path.exists() and time.time() < wait_for_file:
            time.sleep(0.01)
        time.sleep(0.2)   # the view is loaded; the first status round is done
        c.switch_connected(0xA1, FakeSwitch(), h1_ports())
        deadline = time.time() + 2
        while time.time() < deadline:
            sw = read_status(str(path)).get("switches", {}).get(f"{0xA1:016x}")
            if sw and sw["in_sync"] and not sw["busy"]:
                return
            time.sleep(0.01)
        raise AssertionError(f"not in the status file: {read_status(str(path))}")
    finally:
        c.stop()
