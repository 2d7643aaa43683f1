"""Desired flows per switch, memoised per scope.

A switch's desired set is the union of its scopes' flows (apps/base.py):
("switch",), ("network", id) for every network with a port bound to the
switch's host, and ("port", id) for every port of those networks. Each
scope's flows are kept, so a change recomputes only the scopes it touches
and the desired set is patched, not rebuilt: only the keys where a scope's
old and new flows differ are touched, and those keys are what the switch's
next sync is handed (take_delta), so the cost of a change does not grow
with the size of the switch's tables. Pure: no OpenFlow here.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional

from apps.base import App, SwitchView
from controller import pipeline
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


FlowKey = tuple   # Flow.key: (table, priority, match)


class SwitchFlows:
    """One switch's memo: flows per scope, their union keyed by identity, and
    which keys of that union changed since the reconciler last took them.

    Two scopes may produce a flow with the same key. The key stays desired
    while any of them still produces it; should their flows differ, the one
    of the smallest scope wins, so the union never depends on the order the
    scopes were computed in.
    """

    def __init__(self) -> None:
        self.by_scope: dict[Scope, tuple[Flow, ...]] = {}
        self.desired: dict[FlowKey, Flow] = {}
        # Scopes present on the switch -> their network id (None: switch scope).
        self.seen: dict[Scope, Optional[str]] = {}
        # Who produces each desired key: one scope (the common case), or,
        # for keys two or more scopes produce, every such scope's flow.
        self._owner: dict[FlowKey, Scope] = {}
        self._shared: dict[FlowKey, dict[Scope, Flow]] = {}
        # Keys changed since the last take; meter id -> how many desired
        # flows use it (the meters to install), and the ids whose use began
        # or ended since the last take. None until the first take_all: until
        # then only the whole set is of use, and a full computation is
        # spared the bookkeeping.
        self._changed: Optional[dict[FlowKey, None]] = None
        self._meter_refs: Optional[Counter] = None
        self._changed_meters: set[int] = set()

    def set_scope(self, scope: Scope, flows: tuple[Flow, ...]) -> bool:
        old = self.by_scope.get(scope, ())
        if old == flows:
            return False
        # Only what differs between the scope's old and new flows is touched.
        if old:
            new_by_key = {f.key: f for f in flows}
            old_by_key = {f.key: f for f in old}
            for k in old_by_key:
                if k not in new_by_key:
                    self._release(k, scope)
            for k, f in new_by_key.items():
                if old_by_key.get(k) != f:
                    self._claim(k, scope, f)
        else:
            # A new scope (every scope of a full computation): keys no other
            # scope has, the common case, skip the general path.
            owner, desired, changed = self._owner, self.desired, self._changed
            for f in flows:
                k = f.key
                if k in owner or k in self._shared:
                    self._claim(k, scope, f)   # also a key repeated in this scope: last wins
                    continue
                owner[k] = scope
                desired[k] = f
                if changed is not None:
                    changed[k] = None
                    for m in _meters_of(f):
                        self._count_meter(m, +1)
        if flows:
            self.by_scope[scope] = flows
        else:
            self.by_scope.pop(scope, None)
        return True

    def drop_scope(self, scope: Scope) -> bool:
        return self.set_scope(scope, ())

    def _claim(self, key: FlowKey, scope: Scope, f: Flow) -> None:
        shared = self._shared.get(key) if self._shared else None
        if shared is None:
            owner = self._owner.get(key)
            if owner is None or owner == scope:
                self._owner[key] = scope
                self._set(key, f)
                return
            shared = self._shared[key] = {owner: self.desired[key]}
            del self._owner[key]
        shared[scope] = f
        self._set(key, shared[min(shared)])

    def _release(self, key: FlowKey, scope: Scope) -> None:
        shared = self._shared.get(key) if self._shared else None
        if shared is None:
            del self._owner[key]
            self._set(key, None)
            return
        del shared[scope]
        if len(shared) == 1:
            ((last, f),) = shared.items()
            del self._shared[key]
            self._owner[key] = last
            self._set(key, f)
        else:
            self._set(key, shared[min(shared)])

    def _set(self, key: FlowKey, f: Optional[Flow]) -> None:
        cur = self.desired.get(key)
        if cur is f or (cur is not None and f is not None and cur == f):
            return
        if f is None:
            del self.desired[key]
        else:
            self.desired[key] = f
        if self._changed is not None:
            self._changed[key] = None
            if cur is not None:
                for m in _meters_of(cur):
                    self._count_meter(m, -1)
            if f is not None:
                for m in _meters_of(f):
                    self._count_meter(m, +1)

    def _count_meter(self, meter_id: int, n: int) -> None:
        refs = self._meter_refs
        assert refs is not None
        left = refs[meter_id] + n
        if left:
            refs[meter_id] = left
        else:
            del refs[meter_id]
        if left == (1 if n > 0 else 0):
            self._changed_meters.add(meter_id)   # came into use, or went out of it

    def meters(self) -> set[int]:
        """Meter ids the desired flows use."""
        if self._meter_refs is not None:
            return set(self._meter_refs)
        return {m for f in self.desired.values() for m in _meters_of(f)}

    def take_all(self) -> dict[FlowKey, Flow]:
        """A copy of the whole desired set; changes are tracked from here on."""
        if self._meter_refs is None:
            self._meter_refs = Counter(m for f in self.desired.values() for m in _meters_of(f))
        self._changed = {}
        self._changed_meters = set()
        return dict(self.desired)

    def take_delta(self) -> Optional[tuple[dict[FlowKey, Optional[Flow]], dict[int, bool]]]:
        """What changed since the last take: ({key: flow, or None if no longer
        desired}, {meter id: still used}); None if only take_all will do."""
        if self._changed is None:
            return None
        assert self._meter_refs is not None
        flows = {k: self.desired.get(k) for k in self._changed}
        meters = {m: m in self._meter_refs for m in sorted(self._changed_meters)}
        self._changed = {}
        self._changed_meters = set()
        return flows, meters


def _meters_of(f: Flow) -> list[int]:
    return [ins[1] for ins in f.instructions if ins[0] == "meter"]


class FlowCompiler:
    def __init__(self, apps: Iterable[App]):
        self.apps = list(apps)
        self.errors = 0
        self.app_errors: dict[str, int] = {}   # app name -> failed computations

    def compute(self, view: TopologyView, sw: SwitchView, scope: Scope, doc,
                prev: tuple[Flow, ...] = ()) -> tuple[Flow, ...]:
        """The scope's flows from every app; `prev` is what the scope had
        before, whose flows an app that fails now keeps."""
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
                # One app's bug must not take the others' flows away, nor its
                # own: an empty result would have the reconciler delete them
                # from the switch (ARP fail-open). The scope keeps that app's
                # previous flows (told apart by the app id in the cookie)
                # until it computes again; the error is counted.
                self.errors += 1
                self.app_errors[app.name] = self.app_errors.get(app.name, 0) + 1
                kept = [f for f in prev if _app_id_of(f.cookie) == app.app_id]
                out.extend(kept)
                LOG.exception("app %s failed computing %s on %016x; keeping its %d previous "
                              "flow(s) there", app.name, scope, sw.dpid, len(kept))
        # Apps are pure and deterministic, so an unchanged scope yields an
        # equal tuple and the memo comparison in set_scope is cheap.
        return tuple(out)

    def refresh(self, view: TopologyView, sw: SwitchView, memo: SwitchFlows,
                dirty: Optional[Dirty] = None) -> bool:
        """Bring memo up to date; dirty None recomputes every scope. True if anything changed."""
        if dirty is None or dirty.all_ or sw.host is None:
            return self._refresh_all(view, sw, memo)
        return self._refresh_touched(view, sw, memo, dirty)

    def _refresh_all(self, view: TopologyView, sw: SwitchView, memo: SwitchFlows) -> bool:
        scopes = scopes_of(view, sw)
        changed = False
        for scope in [s for s in memo.by_scope if s not in scopes]:
            changed |= memo.drop_scope(scope)
        for scope, doc in scopes.items():
            changed |= memo.set_scope(scope, self.compute(view, sw, scope, doc,
                                                          memo.by_scope.get(scope, ())))
        memo.seen = {scope: _network_of(scope, doc) for scope, doc in scopes.items()}
        return changed

    def _refresh_touched(self, view: TopologyView, sw: SwitchView, memo: SwitchFlows,
                         dirty: Dirty) -> bool:
        """Recompute only what dirty names, without walking every port of the switch."""
        here = {n for n in view.networks_on_host(sw.host_name) if n in view.networks}
        changed = False
        nets = set(dirty.networks) | dirty.network_scopes
        for pid in dirty.ports:
            doc = view.ports.get(pid)
            if doc is not None:
                nets.add(doc["network_id"])
            seen_net = memo.seen.get(("port", pid))
            if seen_net is not None:
                nets.add(seen_net)
        done: set[Scope] = set()
        for net in nets:
            scope = ("network", net)
            was, now = scope in memo.seen, net in here
            if was and not now:
                for s in [s for s, n in memo.seen.items() if n == net]:
                    changed |= memo.drop_scope(s)
                    del memo.seen[s]
                    done.add(s)
            elif now and (not was or net in dirty.networks or net in dirty.network_scopes):
                network = view.networks[net]
                changed |= memo.set_scope(scope, self.compute(view, sw, scope, network,
                                                              memo.by_scope.get(scope, ())))
                memo.seen[scope] = net
                if not was or net in dirty.networks:
                    for port in view.ports_by_network.get(net, {}).values():
                        ps = ("port", port["id"])
                        changed |= memo.set_scope(ps, self.compute(view, sw, ps, port,
                                                                   memo.by_scope.get(ps, ())))
                        memo.seen[ps] = net
                        done.add(ps)
        for pid in dirty.ports:
            scope = ("port", pid)
            if scope in done:
                continue
            doc = view.ports.get(pid)
            if doc is not None and doc["network_id"] in here:
                changed |= memo.set_scope(scope, self.compute(view, sw, scope, doc,
                                                              memo.by_scope.get(scope, ())))
                memo.seen[scope] = doc["network_id"]
            elif scope in memo.seen:
                changed |= memo.drop_scope(scope)
                del memo.seen[scope]
        return changed


def _app_id_of(cookie: int) -> int:
    decoded = pipeline.decode_cookie(cookie)
    return decoded[0] if decoded else -1


def _network_of(scope: Scope, doc) -> Optional[str]:
    if scope[0] == "network":
        return scope[1]
    if scope[0] == "port":
        return doc["network_id"]
    return None
