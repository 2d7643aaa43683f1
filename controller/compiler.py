"""Desired flows per switch, memoised per scope.

A switch's desired set is the union of its scopes' flows (apps/base.py):
("switch",), ("network", id) for every network with a port bound to the
switch's host, and ("port", id) for every port of those networks. Each
scope's flows are kept, so a change recomputes only the scopes it touches
and the desired set is patched, not rebuilt. Pure: no OpenFlow here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Optional

from apps.base import App, SwitchView
from controller.codec import canonical
from controller.flow import Flow
from topology.view import TopologyView

LOG = logging.getLogger(__name__)

Scope = tuple  # ("switch",) | ("network", id) | ("port", id)
SWITCH_SCOPE: Scope = ("switch",)


@dataclass
class Dirty:
    """What a batch of changes touched on one switch. all_=True recomputes everything."""
    all_: bool = False
    networks: set = field(default_factory=set)        # network scope and all its ports' scopes
    network_scopes: set = field(default_factory=set)  # the network scope only (e.g. flooding)
    ports: set = field(default_factory=set)

    def merge(self, other: "Dirty") -> None:
        self.all_ |= other.all_
        self.networks |= other.networks
        self.network_scopes |= other.network_scopes
        self.ports |= other.ports


def scopes_of(view: TopologyView, sw: SwitchView) -> dict[Scope, Optional[dict]]:
    """Every scope present on a switch, with its document."""
    scopes: dict[Scope, Optional[dict]] = {SWITCH_SCOPE: None}
    if sw.host is None:
        return scopes
    for net_id in view.networks_on_host(sw.host_name):
        network = view.networks.get(net_id)
        if network is None:
            continue  # a port whose network is gone: nothing to forward on
        scopes[("network", net_id)] = network
        for port in view.ports_by_network.get(net_id, {}).values():
            scopes[("port", port["id"])] = port
    return scopes


class SwitchFlows:
    """One switch's memo: flows per scope and their union keyed by identity."""

    def __init__(self) -> None:
        self.by_scope: dict[Scope, tuple[Flow, ...]] = {}
        self.desired: dict[tuple, Flow] = {}
        self.seen: set[Scope] = set()   # scopes present at the last refresh

    def set_scope(self, scope: Scope, flows: tuple[Flow, ...]) -> bool:
        old = self.by_scope.get(scope, ())
        if old == flows:
            return False
        for f in old:
            if self.desired.get(f.key) == f:
                del self.desired[f.key]
        for f in flows:
            self.desired[f.key] = f
        if flows:
            self.by_scope[scope] = flows
        else:
            self.by_scope.pop(scope, None)
        return True

    def drop_scope(self, scope: Scope) -> bool:
        return self.set_scope(scope, ())


class FlowCompiler:
    def __init__(self, apps: Iterable[App]):
        self.apps = list(apps)
        self.errors = 0

    def compute(self, view: TopologyView, sw: SwitchView, scope: Scope, doc) -> tuple[Flow, ...]:
        out: list[Flow] = []
        for app in self.apps:
            try:
                if scope[0] == "switch":
                    flows = app.switch_flows(view, sw)
                elif scope[0] == "network":
                    flows = app.network_flows(view, sw, doc)
                else:
                    flows = app.port_flows(view, sw, doc)
                out.extend(canonical(f) for f in flows)
            except Exception:
                # One app's bug must not take the others' flows away; its
                # scope keeps nothing from it and the error is counted.
                self.errors += 1
                LOG.exception("app %s failed computing %s on %016x", app.name, scope, sw.dpid)
        # Sorted so two runs compute equal tuples (cheap memo comparison).
        out.sort(key=lambda f: (f.table, f.priority, repr(f.match)))
        return tuple(out)

    def refresh(self, view: TopologyView, sw: SwitchView, memo: SwitchFlows,
                dirty: Optional[Dirty] = None) -> bool:
        """Bring memo up to date; dirty None recomputes every scope. True if anything changed."""
        scopes = scopes_of(view, sw)
        changed = False
        for scope in [s for s in memo.by_scope if s not in scopes]:
            changed |= memo.drop_scope(scope)
        for scope, doc in scopes.items():
            if (dirty is None or dirty.all_ or scope not in memo.seen
                    or _touched(scope, doc, dirty)):
                changed |= memo.set_scope(scope, self.compute(view, sw, scope, doc))
        memo.seen = set(scopes)
        return changed


def _touched(scope: Scope, doc, dirty: Dirty) -> bool:
    kind = scope[0]
    if kind == "switch":
        return False
    if kind == "network":
        return scope[1] in dirty.networks or scope[1] in dirty.network_scopes
    return scope[1] in dirty.ports or doc["network_id"] in dirty.networks
