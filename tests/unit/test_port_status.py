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
