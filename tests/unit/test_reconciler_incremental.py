"""Incremental recompute equals a full recompute, whatever the change sequence.

The core turns each store change into the scopes it touches; if that rule
missed something, a switch's desired set would drift from what a restart
computes. Random sequences of port, network and host changes check it. The
workers send only what changed in the desired set (SwitchFlows.take_delta),
so the switches themselves must end up equal to the full computation too,
with audits reading the switches meanwhile.
"""
from __future__ import annotations

import random

import pytest
from l2_fixtures import network, port
from test_reconciler import FakeSwitch
from test_reconciler_core import conf, ctl, h1_ports, settle, store, write  # noqa: F401

from apps.l2 import L2App
from controller.compiler import FlowCompiler, SwitchFlows
from controller.flow import apply, flow, output
from controller.reconciler import meters_used


def full(ctl, dpid):
    sw = ctl.switches[dpid]
    memo = SwitchFlows()
    FlowCompiler([L2App()]).refresh(ctl.view, sw.view, memo)
    return memo.desired


@pytest.mark.parametrize("seed", range(4))
def test_random_changes_keep_incremental_equal_to_full(ctl, store, seed):   # noqa: F811
    rnd = random.Random(seed)
    sws = {0xA1: FakeSwitch(), 0xA2: FakeSwitch()}
    ctl.switch_connected(0xA1, sws[0xA1], h1_ports())
    ctl.switch_connected(0xA2, sws[0xA2], {"up2": 100})
    settle(ctl, store)
    for step in range(40):
        n = rnd.randrange(1, 9)
        action = rnd.random()
        if action < 0.5:
            write(store, "ports", port(n, rnd.choice(["n1", "n2"]) if n > 4 else
                                       ("n2" if n == 4 else "n1"),
                                       rnd.choice(["h1", "h2", "h3", None]),
                                       admin_state_up=rnd.random() > 0.2,
                                       port_security_enabled=rnd.random() > 0.3))
        elif action < 0.7:
            with store.transaction() as t:
                t.delete("ports", port(n, "n1", None)["id"])
        elif action < 0.85:
            write(store, "networks", network("n1", 1, "vlan", rnd.choice([101, 201])))
        else:
            name = f"tap{port(n, 'n1', None)['id'][:11]}"
            ctl.port_changed(0xA1, name, rnd.choice([None, 40 + n]))
        if step % 5 == 4:
            settle(ctl, store)
            for dpid, fake in sws.items():
                want = full(ctl, dpid)
                assert ctl.switches[dpid].memo.desired == want, (seed, step)
                assert fake.flows == want, (seed, step)


def test_random_changes_with_audits_keep_switches_equal_to_full(ctl, store):   # noqa: F811
    """The audit's reads run beside the workers' delta syncs; neither undoes the other."""
    rnd = random.Random(7)
    sws = {0xA1: FakeSwitch(), 0xA2: FakeSwitch()}
    ctl.switch_connected(0xA1, sws[0xA1], h1_ports())
    ctl.switch_connected(0xA2, sws[0xA2], {"up2": 100})
    settle(ctl, store)
    for step in range(30):
        n = rnd.randrange(1, 9)
        write(store, "ports", port(n, "n1", rnd.choice(["h1", "h2", None]),
                                   admin_state_up=rnd.random() > 0.2))
        if step % 3 == 0:
            ctl.audit()
        if step % 5 == 4:
            settle(ctl, store)
            for dpid, fake in sws.items():
                want = full(ctl, dpid)
                assert fake.flows == want, (step, dpid)
                assert ctl.switches[dpid].reconciler.installed == want, (step, dpid)


# -- the memo's bookkeeping, on its own ------------------------------------------

def _flow(key_n, content, meter=None):
    ins = ((("meter", meter),) if meter else ()) + (apply(output(content)),)
    return flow(1, "output", 100, {"reg7": key_n}, *ins)


def _rebuild(memo):
    """The union by the memo's rule: per key, the flow of the smallest scope producing it."""
    best = {}
    for scope in sorted(memo.by_scope, reverse=True):
        for f in {f.key: f for f in memo.by_scope[scope]}.values():
            best[f.key] = f
    return best


@pytest.mark.parametrize("seed", range(6))
def test_memo_union_refcounts_and_deltas_match_a_rebuild(seed):
    """Scopes that share keys (equal or conflicting flows), meters shared by
    flows, scopes dropped and re-added: the union equals a rebuild whatever the
    order, meter counts match it, and replaying the deltas on a copy of the
    first take_all gives the same union and the same meters."""
    rnd = random.Random(seed)
    scopes = [("switch",), ("network", "n1"), ("network", "n2")] + \
        [("port", f"p{i}") for i in range(6)]
    memo = SwitchFlows()
    replica = None
    replica_meters: set = set()
    for step in range(300):
        scope = rnd.choice(scopes)
        flows = tuple(_flow(rnd.randrange(12), rnd.randrange(3),
                            rnd.choice([None, None, 1, 2, 3]))
                      for _ in range(rnd.randrange(0, 5)))
        memo.set_scope(scope, flows)
        want = _rebuild(memo)
        assert memo.desired == want, step
        assert memo.meters() == meters_used(want.values()), step
        if step == 20:
            replica = memo.take_all()
            replica_meters = set(memo.meters())
        elif replica is not None and rnd.random() < 0.3:
            delta = memo.take_delta()
            assert delta is not None
            changed, meters = delta
            for k, f in changed.items():
                if f is None:
                    replica.pop(k, None)
                else:
                    replica[k] = f
            for m, still in meters.items():
                (replica_meters.add if still else replica_meters.discard)(m)
            assert replica == memo.desired, step
            assert replica_meters == memo.meters(), step


def test_memo_has_no_delta_before_the_first_take_all():
    memo = SwitchFlows()
    memo.set_scope(("switch",), (_flow(1, 1),))
    assert memo.take_delta() is None
    assert memo.take_all() == {_flow(1, 1).key: _flow(1, 1)}
    assert memo.take_delta() == ({}, {})
    memo.set_scope(("port", "p"), (_flow(1, 1), _flow(2, 2, meter=5)))   # key 1 now shared
    memo.set_scope(("switch",), ())                                      # still wanted by p
    assert memo.take_delta() == ({_flow(2, 2).key: _flow(2, 2, meter=5)}, {5: True})
