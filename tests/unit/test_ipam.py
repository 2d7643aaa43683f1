"""IPAM edge cases: full pools, /31 and /32, addresses outside pools, re-use."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topology import ipam
from topology.store import SqliteStore
from topology.store.base import Conflict
from topology.validation import Invalid


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "s.db"))
    yield s
    s.close()


def subnet(cidr, gateway="default", pools=None, id="s1"):
    gw = ipam.default_gateway(cidr) if gateway == "default" else gateway
    return {"id": id, "cidr": cidr, "gateway_ip": gw,
            "allocation_pools": pools if pools is not None else ipam.default_pools(cidr, gw)}


def test_defaults_for_a_24():
    assert ipam.default_gateway("10.0.0.0/24") == "10.0.0.1"
    assert ipam.default_pools("10.0.0.0/24", "10.0.0.1") == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    # a gateway in the middle splits the range
    assert ipam.default_pools("10.0.0.0/24", "10.0.0.100") == [
        {"start": "10.0.0.1", "end": "10.0.0.99"}, {"start": "10.0.0.101", "end": "10.0.0.254"}]
    assert ipam.default_pools("10.0.0.0/24", None) == [{"start": "10.0.0.1", "end": "10.0.0.254"}]


def test_slash_31_and_32_have_no_network_or_broadcast_address():
    assert ipam.host_range("10.0.0.4/31") == (ipam.to_int("10.0.0.4"), ipam.to_int("10.0.0.5"))
    assert ipam.default_gateway("10.0.0.4/31") == "10.0.0.4"
    assert ipam.default_pools("10.0.0.4/31", "10.0.0.4") == [{"start": "10.0.0.5", "end": "10.0.0.5"}]
    assert ipam.default_gateway("10.0.0.9/32") is None
    assert ipam.default_pools("10.0.0.9/32", None) == [{"start": "10.0.0.9", "end": "10.0.0.9"}]
    ipam.check_gateway("10.0.0.4/31", "10.0.0.5")
    with pytest.raises(Invalid):
        ipam.check_gateway("10.0.0.9/32", "10.0.0.10")


def test_slash_32_allocates_its_one_address_then_is_full(store):
    s = subnet("10.0.0.9/32")
    with store.transaction() as txn:
        assert ipam.allocate_ip(txn, s, "port:a") == "10.0.0.9"
        with pytest.raises(ipam.PoolExhausted):
            ipam.allocate_ip(txn, s, "port:b")


def test_full_pool_then_reuse_after_release(store):
    s = subnet("10.0.0.0/29")
    with store.transaction() as txn:
        got = {ipam.allocate_ip(txn, s, f"port:{i}") for i in range(5)}
    assert got == {f"10.0.0.{i}" for i in range(2, 7)}
    with store.transaction() as txn:
        with pytest.raises(ipam.PoolExhausted):
            ipam.allocate_ip(txn, s, "port:x")
    with store.transaction() as txn:
        txn.release_owner("port:3")
    with store.transaction() as txn:
        freed = {f"10.0.0.{i}" for i in range(2, 7)} - {
            a for a in txn.claimed_keys(ipam.ip_namespace("s1"))}
        assert ipam.allocate_ip(txn, s, "port:y") in freed


def test_requested_address_outside_pools_but_inside_cidr(store):
    s = subnet("10.0.0.0/24", pools=[{"start": "10.0.0.10", "end": "10.0.0.20"}])
    with store.transaction() as txn:
        ipam.claim_ip(txn, s, "10.0.0.200", "port:a")
        assert txn.claim_owner("ip:s1", "10.0.0.200") == "port:a"
        with pytest.raises(Conflict):
            ipam.claim_ip(txn, s, "10.0.0.200", "port:b")
        with pytest.raises(Conflict):
            ipam.claim_ip(txn, s, "10.0.0.1", "port:b")  # the gateway
        for outside in ("10.0.1.1", "10.0.0.0", "10.0.0.255"):
            with pytest.raises(Invalid):
                ipam.claim_ip(txn, s, outside, "port:b")


def test_allocation_skips_what_the_owner_already_holds(store):
    s = subnet("10.0.0.0/30")  # one pool address: .2
    with store.transaction() as txn:
        assert ipam.allocate_ip(txn, s, "port:a") == "10.0.0.2"
        with pytest.raises(ipam.PoolExhausted):
            ipam.allocate_ip(txn, s, "port:a", held=frozenset({"10.0.0.2"}))


def test_first_free_takes_the_lowest(store):
    s = subnet("10.0.0.0/24")
    with store.transaction() as txn:
        ipam.claim_ip(txn, s, "10.0.0.2", "port:a")
        ipam.claim_ip(txn, s, "10.0.0.3", "port:a")
        assert ipam.first_free_ip(txn, s, "port:dhcp") == "10.0.0.4"


def test_dense_pool_falls_back_to_a_scan(store):
    s = subnet("10.0.0.0/22")
    with store.transaction() as txn:
        for value in range(ipam.to_int("10.0.0.2"), ipam.to_int("10.0.3.254")):
            txn.claim("ip:s1", ipam.to_str(value), "port:bulk")
        # one address left: random probes almost surely miss it, the scan finds it
        assert ipam.allocate_ip(txn, s, "port:last") == "10.0.3.254"


@pytest.mark.parametrize("pools,gateway,why", [
    ([{"start": "10.0.0.20", "end": "10.0.0.10"}], "10.0.0.1", "start is after end"),
    ([{"start": "10.0.0.0", "end": "10.0.0.10"}], None, "beyond"),
    ([{"start": "10.0.0.250", "end": "10.0.0.255"}], None, "beyond"),
    ([{"start": "10.0.0.2", "end": "10.0.0.9"}, {"start": "10.0.0.9", "end": "10.0.0.12"}], None, "overlap"),
    ([{"start": "10.0.0.1", "end": "10.0.0.9"}], "10.0.0.5", "conflicts"),
])
def test_bad_pools(pools, gateway, why):
    with pytest.raises(Invalid) as e:
        ipam.check_pools("10.0.0.0/24", gateway, pools)
    assert e.value.field == "allocation_pools" and why in e.value.reason


def test_pools_are_returned_sorted():
    pools = [{"start": "10.0.0.50", "end": "10.0.0.60"}, {"start": "10.0.0.2", "end": "10.0.0.9"}]
    assert ipam.check_pools("10.0.0.0/24", "10.0.0.1", pools) == sorted(pools, key=lambda p: ipam.to_int(p["start"]))


def test_mac_keeps_base_prefix_and_is_unique(store):
    with store.transaction() as txn:
        macs = {ipam.allocate_mac(txn, "fa:16:3e:00:00:00", "mac", f"port:{i}") for i in range(200)}
    assert len(macs) == 200 and all(m.startswith("fa:16:3e:") for m in macs)


@settings(max_examples=60, deadline=None)
@given(prefix=st.integers(min_value=24, max_value=32), base=st.integers(0, 255), data=st.data())
def test_allocations_stay_in_pools_and_never_repeat(tmp_path_factory, prefix, base, data):
    cidr = f"10.{base}.0.0/{prefix}"
    s = subnet(cidr)
    size = sum(ipam.to_int(p["end"]) - ipam.to_int(p["start"]) + 1 for p in s["allocation_pools"])
    count = data.draw(st.integers(0, min(size, 40)))
    store = SqliteStore(str(tmp_path_factory.mktemp("h") / "s.db"))
    with store.transaction() as txn:
        got = [ipam.allocate_ip(txn, s, f"port:{i}") for i in range(count)]
    store.close()
    assert len(set(got)) == count
    assert all(ipam.in_pools(a, s["allocation_pools"]) for a in got)
    assert s["gateway_ip"] not in got
