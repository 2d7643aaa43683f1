"""Incremental recompute equals a full recompute, whatever the change sequence.

The core turns each store change into the scopes it touches; if that rule
missed something, a switch's desired set would drift from what a restart
computes. Random sequences of port, network and host changes check it.
"""
from __future__ import annotations

import random

import pytest
from l2_fixtures import network, port
from test_reconciler import FakeSwitch
from test_reconciler_core import conf, ctl, h1_ports, settle, store, write  # noqa: F401

from apps.l2 import L2App
from controller.compiler import FlowCompiler, SwitchFlows


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
