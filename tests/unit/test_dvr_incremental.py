"""Distributed routing's scope rules: incremental recompute equals a full one.

A router brings its networks to every host of any of them, and every host
recognises every other host's DVR MAC; if a store change missed a scope
those facts touch, a switch would drift from what a restart computes.
Random sequences of interface, VM port, router and host changes check it.

    h1 (up1), h2 (up2), h3 (no switch); n1 vlan 101 (s1 10.0.0.0/24),
    n2 flat (s2 10.9.0.0/24), n3 vlan 103 (s3 10.3.0.0/24); router r1
"""
from __future__ import annotations

import random

import pytest
from l2_fixtures import host, network, port
from test_reconciler import FakeSwitch
from test_reconciler_core import conf, h1_ports, settle, store, write  # noqa: F401

from apps.dvr import DvrApp
from apps.l2 import L2App
from controller.compiler import FlowCompiler, SwitchFlows
from controller.core import Controller

SUBNETS = {"n1": ("s1", "10.0.0"), "n2": ("s2", "10.9.0"), "n3": ("s3", "10.3.0")}


@pytest.fixture
def dvr_ctl(conf, store, tmp_path):   # noqa: F811
    write(store, "networks", network("n3", 3, "vlan", 103))
    for nid, (sid, prefix) in SUBNETS.items():
        write(store, "subnets", {"id": sid, "network_id": nid, "cidr": f"{prefix}.0/24",
                                 "gateway_ip": f"{prefix}.1"})
    write(store, "routers", {"id": "r1", "_key": 1, "admin_state_up": True, "routes": []})
    c = Controller(conf, store, [L2App(conf), DvrApp(conf)],
                   status_path=str(tmp_path / "status.json"), status_interval=0.05)
    c.start()
    yield c
    c.stop()


def full(ctl, dpid):
    memo = SwitchFlows()
    FlowCompiler([L2App(), DvrApp()]).refresh(ctl.view, ctl.switches[dpid].view, memo)
    return memo.desired


def vm(n, net, host_name, rnd):
    sid, prefix = SUBNETS[net]
    return port(n, net, host_name, fixed_ips=[{"subnet_id": sid, "ip_address": f"{prefix}.{n + 10}"}],
                admin_state_up=rnd.random() > 0.1)


def interface(net, up=True):
    sid, prefix = SUBNETS[net]
    return port(40 + int(net[1]), net, "", device_owner="network:router_interface_distributed",
                device_id="r1", fixed_ips=[{"subnet_id": sid, "ip_address": f"{prefix}.1"}],
                admin_state_up=up)


@pytest.mark.parametrize("seed", range(4))
def test_random_routing_changes_keep_incremental_equal_to_full(dvr_ctl, store, seed):   # noqa: F811
    ctl, rnd = dvr_ctl, random.Random(seed)
    sws = {0xA1: FakeSwitch(), 0xA2: FakeSwitch()}
    ctl.switch_connected(0xA1, sws[0xA1], h1_ports())
    ctl.switch_connected(0xA2, sws[0xA2], {"up2": 100})
    settle(ctl, store)
    checked_with_routes = 0
    for step in range(40):
        action = rnd.random()
        if action < 0.3:
            net = rnd.choice(list(SUBNETS))
            if rnd.random() < 0.6:
                write(store, "ports", interface(net, up=rnd.random() > 0.2))
            else:
                with store.transaction() as t:
                    t.delete("ports", interface(net)["id"])
        elif action < 0.65:
            n = rnd.randrange(1, 9)
            write(store, "ports", vm(n, rnd.choice(list(SUBNETS)), rnd.choice(["h1", "h2", "h3", None]),
                                     rnd))
        elif action < 0.8:
            routes = rnd.choice([[], [{"destination": "192.168.0.0/16", "nexthop": "10.9.0.15"}]])
            write(store, "routers", {"id": "r1", "_key": 1, "routes": routes,
                                     "admin_state_up": rnd.random() > 0.15})
        else:
            name = rnd.choice(["h1", "h2", "h3"])
            dpid, up = {"h1": (0xA1, "up1"), "h2": (0xA2, "up2"), "h3": (0xA3, "up3")}[name]
            ext = rnd.choice([None, f"fa:16:3f:01:{rnd.randrange(256):02x}:{dpid & 0xff:02x}"])
            write(store, "hosts", {**host(name, dpid, up),
                                   "dvr_mac": f"fa:16:3f:00:{rnd.randrange(256):02x}:{dpid & 0xff:02x}",
                                   **({"external_mac": ext} if ext else {})})
        if step % 5 == 4:
            settle(ctl, store)
            for dpid, fake in sws.items():
                want = full(ctl, dpid)
                assert ctl.switches[dpid].memo.desired == want, (seed, step)
                assert fake.flows == want, (seed, step)
                checked_with_routes += any(f.table == "routing" and f.priority >= 1000 for f in want.values())
    assert checked_with_routes, "no check saw a routing flow: the sequence tested nothing"
