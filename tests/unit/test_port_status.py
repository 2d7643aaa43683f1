"""controller/port_status.py: which ports are ACTIVE, and the write-back."""
from __future__ import annotations

from types import SimpleNamespace

from l2_fixtures import cloud_docs, make_view, pid, plugged_switch, port, put

from controller.port_status import ACTIVE, DOWN, changes, wanted_statuses, write
from topology.store import SqliteStore


def switch(view, dpid, *, busy=False, in_sync=True):
    return SimpleNamespace(view=plugged_switch(view, dpid), busy=busy,
                           reconciler=SimpleNamespace(in_sync=in_sync))


def test_active_where_plugged_and_installed_down_elsewhere():
    view = make_view()
    put(view, "ports", port(9, "n1", None, device_owner="network:dhcp"))
    put(view, "ports", port(5, "n1", "h1"))        # bound to h1, interface absent
    h1 = switch(view, 0xA1)
    del h1.view.ports_by_name["tap" + pid(5)[:11]]
    got = wanted_statuses(view, [h1])               # h2 not connected
    assert got == {pid(1): ACTIVE, pid(2): ACTIVE, pid(4): ACTIVE, pid(3): DOWN,
                   pid(5): DOWN, pid(9): ACTIVE}
    # a switch still installing is not ACTIVE yet
    assert set(wanted_statuses(view, [switch(view, 0xA1, busy=True)]).values()) == {DOWN, ACTIVE}
    assert wanted_statuses(view, [switch(view, 0xA1, busy=True)])[pid(1)] == DOWN
    # ... but a port already ACTIVE stays so while its switch installs another
    # port's change (no DOWN/ACTIVE flap of every port on every change)
    put(view, "ports", {**view.ports[pid(1)], "status": ACTIVE})
    assert wanted_statuses(view, [switch(view, 0xA1, busy=True)])[pid(1)] == ACTIVE
    assert wanted_statuses(view, [switch(view, 0xA1, busy=True)])[pid(2)] == DOWN
    assert wanted_statuses(view, [switch(view, 0xA1, busy=True, in_sync=False)])[pid(1)] == DOWN
    put(view, "ports", port(1, "n1", "h1", admin_state_up=False))
    assert wanted_statuses(view, [h1])[pid(1)] == DOWN


def test_only_differences_are_written_in_one_transaction_keeping_the_rest(tmp_path):
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    docs = cloud_docs()
    with store.transaction() as t:
        for body in docs["ports"].values():
            t.put("ports", body["id"], {**body, "status": DOWN, "revision_number": 3,
                                        "project_id": "p"},
                  project_id="p", parent_id=body["network_id"])
    view = make_view()
    for body in docs["ports"].values():
        put(view, "ports", {**body, "status": DOWN})
    todo = changes(view, {pid(1): ACTIVE, pid(2): DOWN})
    assert todo == {pid(1): ACTIVE}
    rev = store.revision()
    assert write(store, todo, now="2026-11-27T00:00:00Z") == 1
    assert store.revision() == rev + 1
    with store.read() as r:
        doc = r.get("ports", pid(1))
        assert (doc["status"], doc["revision_number"], doc["updated_at"]) == \
            (ACTIVE, 4, "2026-11-27T00:00:00Z")
        assert doc["mac_address"] == docs["ports"][pid(1)]["mac_address"]
        assert [d["id"] for d in r.list("ports", project_id="p")]   # ownership kept
    assert write(store, todo) == 0          # already so: nothing written


def test_a_router_interface_is_active_once_a_host_in_sync_serves_its_router():
    """Neutron's DVR interface port is ACTIVE once a host hosts the router."""
    from test_dvr_behaviour import cloud
    view = cloud()
    interfaces = ("r1-na", "r1-nb", "r2-nd", "r2-ne")

    def h(dpid, **kw):
        sw = switch(view, dpid, **kw)
        sw.view.ports_by_name["up"] = 100
        return sw

    # no switch connected: no host routes for any router
    got = wanted_statuses(view, [])
    assert {i: got[i] for i in interfaces} == dict.fromkeys(interfaces, DOWN)
    # h2 has ports on nb only: r1 is served there, r2 (nd, ne: ports on h1 only) is not
    got = wanted_statuses(view, [h(0xA2)])
    assert {i: got[i] for i in interfaces} == {"r1-na": ACTIVE, "r1-nb": ACTIVE,
                                               "r2-nd": DOWN, "r2-ne": DOWN}
    assert wanted_statuses(view, [h(0xA1)])["r2-nd"] == ACTIVE
    # still installing: not yet
    assert wanted_statuses(view, [h(0xA2, busy=True)])["r1-na"] == DOWN
    assert wanted_statuses(view, [h(0xA2, in_sync=False)])["r1-na"] == DOWN
    # the router down, the interface down, or its network down: DOWN
    put(view, "routers", {**view.routers["r1"], "admin_state_up": False})
    assert wanted_statuses(view, [h(0xA2)])["r1-na"] == DOWN
    put(view, "routers", {**view.routers["r1"], "admin_state_up": True})
    put(view, "ports", {**view.ports["r1-na"], "admin_state_up": False})
    got = wanted_statuses(view, [h(0xA2)])
    assert got["r1-na"] == DOWN and got["r1-nb"] == ACTIVE
    put(view, "networks", {**view.networks["nb"], "admin_state_up": False})
    assert wanted_statuses(view, [h(0xA2)])["r1-nb"] == DOWN
