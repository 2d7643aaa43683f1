"""An app that raises while computing a scope keeps that scope's previous
flows (so the reconciler does not delete them from the switch), and the
failure is counted and logged; the other apps' flows still follow changes."""
from __future__ import annotations

import logging

from l2_fixtures import make_view, pid, plugged_switch, port, put

from controller.app import App
from apps.l2 import L2App
from controller.compiler import Dirty, FlowCompiler, SwitchFlows
from controller.flow import flow, goto
from controller.pipeline import decode_cookie


class FlakyArp(App):
    """Stands in for the ARP app: one flow per port, from its MAC; raises when broken."""
    name = "arp"

    def __init__(self):
        self.broken = False

    def port_flows(self, view, sw, port_doc):
        if self.broken:
            raise RuntimeError("deliberate app bug")
        return [flow(self.app_id, "services", 100,
                     {"eth_type": 0x0806, "eth_src": port_doc["mac_address"]},
                     goto("egress_firewall"))]


def arp_flows(memo, app):
    return sorted((f for f in memo.desired.values() if decode_cookie(f.cookie)[0] == app.app_id),
                  key=lambda f: repr(f.match))


def l2_macs(memo):
    return {dict(f.match).get("eth_src") for f in memo.desired.values()
            if decode_cookie(f.cookie)[0] == L2App().app_id}


def setup():
    arp = FlakyArp()
    compiler = FlowCompiler([L2App(), arp])
    view = make_view()
    sw = plugged_switch(view, 0xA1)
    memo = SwitchFlows()
    compiler.refresh(view, sw, memo)
    return arp, compiler, view, sw, memo


def test_failing_app_keeps_the_scopes_previous_flows_on_an_incremental_change(caplog):
    arp, compiler, view, sw, memo = setup()
    before = arp_flows(memo, arp)
    assert len(before) == 4   # p1, p2, p3 (remote, same network) and p4
    caplog.set_level(logging.ERROR, logger="controller.compiler")

    arp.broken = True
    put(view, "ports", port(1, "n1", "h1", mac_address="fa:16:3e:00:01:01"))
    assert compiler.refresh(view, sw, memo, Dirty(scopes={("port", pid(1)), ("network", "n1")}))

    assert arp_flows(memo, arp) == before        # nothing of arp's to delete on the switch
    assert "fa:16:3e:00:01:01" in l2_macs(memo)  # l2 still followed the change
    assert compiler.errors >= 1 and compiler.app_errors == {"arp": compiler.errors}
    assert any("keeping its 1 previous flow(s)" in r.getMessage() for r in caplog.records)


def test_failing_app_keeps_every_scopes_flows_on_a_full_recompute():
    arp, compiler, view, sw, memo = setup()
    before = arp_flows(memo, arp)
    arp.broken = True
    compiler.refresh(view, sw, memo)
    assert arp_flows(memo, arp) == before
    assert compiler.app_errors["arp"] == 4


def test_app_that_recovers_computes_again():
    arp, compiler, view, sw, memo = setup()
    arp.broken = True
    put(view, "ports", port(1, "n1", "h1", mac_address="fa:16:3e:00:01:01"))
    compiler.refresh(view, sw, memo, Dirty(scopes={("port", pid(1))}))
    arp.broken = False
    compiler.refresh(view, sw, memo, Dirty(scopes={("port", pid(1))}))
    macs = {dict(f.match)["eth_src"] for f in arp_flows(memo, arp)}
    assert "fa:16:3e:00:01:01" in macs and "fa:16:3e:00:00:01" not in macs


def test_a_scope_never_computed_gets_nothing_from_the_failing_app():
    arp, compiler, view, sw, memo = setup()
    arp.broken = True
    put(view, "ports", port(5, "n1", "h1"))
    compiler.refresh(view, sw, memo, Dirty(scopes={("port", pid(5)), ("network", "n1")}))
    macs = {dict(f.match)["eth_src"] for f in arp_flows(memo, arp)}
    assert "fa:16:3e:00:00:05" not in macs and len(macs) == 4
    assert compiler.app_errors["arp"] == 1
