"""The pure part of controller/cluster.py: who is master of which switch."""
from collections import Counter

import pytest

from controller.cluster import MASTER, SLAVE, Plan, master_for, parse_endpoints

DPIDS = range(1, 2001)


def test_exactly_one_master_per_switch_and_every_controller_agrees():
    live = frozenset({"c1", "c2", "c3"})
    plans = [Plan(c, live) for c in sorted(live)]
    for d in DPIDS:
        masters = [p.me for p in plans if p.role(d) == MASTER]
        assert masters == [master_for(d, live)]


def test_master_does_not_depend_on_the_order_of_the_live_set():
    for d in DPIDS:
        assert master_for(d, ["a", "b", "c"]) == master_for(d, ["c", "a", "b"])


def test_spread_is_roughly_even():
    counts = Counter(master_for(d, ["c1", "c2", "c3"]) for d in DPIDS)
    assert set(counts) == {"c1", "c2", "c3"}
    assert min(counts.values()) > len(DPIDS) / 3 * 0.8


def test_a_controller_leaving_moves_only_its_own_switches():
    before = {d: master_for(d, ["c1", "c2", "c3"]) for d in DPIDS}
    after = {d: master_for(d, ["c1", "c3"]) for d in DPIDS}
    for d in DPIDS:
        if before[d] != "c2":
            assert after[d] == before[d]
        else:
            assert after[d] in ("c1", "c3")


def test_a_controller_joining_takes_only_switches_it_now_wins():
    before = {d: master_for(d, ["c1", "c2"]) for d in DPIDS}
    after = {d: master_for(d, ["c1", "c2", "c3"]) for d in DPIDS}
    moved = [d for d in DPIDS if before[d] != after[d]]
    assert moved and all(after[d] == "c3" for d in moved)


def test_no_live_controller_no_master_and_a_lone_one_is_master_of_all():
    assert master_for(7, []) is None
    assert all(Plan("a", frozenset({"a"})).role(d) == MASTER for d in DPIDS)


def test_a_controller_not_in_the_live_set_is_slave_everywhere():
    # Counted out (its lease lost): it must write nowhere, even where its
    # hash would win.
    p = Plan("a", frozenset({"b"}))
    assert all(p.role(d) == SLAVE for d in DPIDS)
    assert all(Plan("a").role(d) == SLAVE for d in DPIDS)


def test_moved_lists_the_switches_whose_role_changed():
    old = Plan("c1", frozenset({"c1", "c2", "c3"}))
    new = Plan("c1", frozenset({"c1", "c3"}))
    moved = old.moved(new, DPIDS)
    assert moved
    for d in moved:
        assert old.role(d) == SLAVE and new.role(d) == MASTER
        assert master_for(d, old.live) == "c2"


def test_parse_endpoints():
    assert parse_endpoints("127.0.0.1:2379, http://10.0.0.2:2379/") == [
        ("127.0.0.1", 2379), ("10.0.0.2", 2379)]
    for bad in ("", "host", "host:0", "host:x", ":2379"):
        with pytest.raises(ValueError, match=r"\[cluster\] etcd"):
            parse_endpoints(bad)
