"""topology.placement.snat_host: deterministic, spread, and minimal movement."""
from __future__ import annotations

from collections import Counter

from topology.placement import snat_host


def _hosts(n, **kw):
    return [{"id": f"host-{i:02d}", "is_gateway": True, "admin_state_up": True, **kw}
            for i in range(n)]


def test_no_eligible_host_is_none():
    router = {"_key": 7}
    assert snat_host(router, []) is None
    assert snat_host(router, [{"id": "c1", "is_gateway": False}]) is None
    assert snat_host(router, [{"id": "g", "is_gateway": True, "admin_state_up": False}]) is None


def test_only_gateway_hosts_in_service_and_missing_admin_state_counts_as_up():
    hosts = [{"id": "c1", "is_gateway": False}, {"id": "g1", "is_gateway": True},
             {"id": "g2", "is_gateway": True, "admin_state_up": False}]
    assert all(snat_host({"_key": k}, hosts) == "g1" for k in range(1, 50))


def test_deterministic_whatever_the_order():
    hosts = _hosts(5)
    for key in range(1, 100):
        first = snat_host({"_key": key}, hosts)
        assert snat_host({"_key": key}, list(reversed(hosts))) == first
        assert snat_host({"_key": key}, iter(hosts)) == first


def test_routers_spread_over_hosts():
    hosts = _hosts(4)
    counts = Counter(snat_host({"_key": key}, hosts) for key in range(1, 2001))
    assert set(counts) == {h["id"] for h in hosts}
    assert min(counts.values()) > 350  # 500 each when even


def test_losing_a_host_moves_only_its_routers():
    hosts = _hosts(4)
    before = {key: snat_host({"_key": key}, hosts) for key in range(1, 1001)}
    gone = "host-02"
    after = {key: snat_host({"_key": key}, [h for h in hosts if h["id"] != gone])
             for key in before}
    moved = [key for key in before if before[key] != after[key]]
    assert moved and all(before[key] == gone for key in moved)
    assert all(after[key] != gone for key in before)
    # taking it out of service is the same as deleting it
    down = [dict(h, admin_state_up=h["id"] != gone) for h in hosts]
    assert {key: snat_host({"_key": key}, down) for key in before} == after
