"""Desired flows per switch, memoised per scope.

A switch's desired set is the union of its scopes' flows (controller/scopes.py
declares the scope kinds: switch, network, port, ...). Each scope's flows are
kept, so a change recomputes only the scopes it touches and the desired set
is patched, not rebuilt: only the keys where a scope's old and new flows
differ are touched, and those keys are what the switch's next sync is handed
(take_delta), so the cost of a change does not grow with the size of the
switch's tables. Pure: no OpenFlow here.

Every flow an app returns is held to the pipeline's declaration
(controller/pipeline.py): a stage it may not write, a priority outside its
band, a goto the stage does not allow, or a flow two apps both want is
counted and logged. The table misses come from the declaration itself.

Apps may also want meters with their own spec (controller/meters.py Meter,
returned among a scope's flows): the memo keeps them per scope next to the
flows, and a scope whose meters changed but whose flows did not hands the
reconciler meter changes only.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from controller import pipeline, scopes
from controller.app import App, SwitchView
from controller.codec import canonical
from controller.flow import Flow, flow, goto, meters_of
from controller.meters import Meter, MeterSpec
from controller.scopes import SWITCH_SCOPE, Scope
from topology.view import TopologyView

LOG = logging.getLogger(__name__)


@dataclass
class Dirty:
    """What a batch of changes touched on one switch. all_=True recomputes everything."""
    all_: bool = False
    scopes: set = field(default_factory=set)

    def merge(self, other: "Dirty") -> None:
        self.all_ |= other.all_
        self.scopes |= other.scopes


def scopes_of(view: TopologyView, sw: SwitchView) -> dict[Scope, Optional[dict]]:
    """Every scope present on a switch, with its document."""
    out: dict[Scope, Optional[dict]] = {SWITCH_SCOPE: None}
    if sw.host is None:
        return out
    for kind in scopes.KINDS.values():
        if kind.name == "switch":
            continue
        for sid, doc in kind.on_switch(view, sw):
            out[(kind.name, sid)] = doc
    return out


FlowKey = tuple   # Flow.key: (table, priority, match)


class SwitchFlows:
    """One switch's memo: flows per scope, their union keyed by identity, and
    which keys of that union changed since the reconciler last took them.

    Two scopes may produce a flow with the same key. The key stays desired
    while any of them still produces it. Should their flows differ, clause
    flows of conjunctive matches (nothing but conjunction actions) are merged
    into one flow with every scope's conjunctions, as OVS wants them;
    otherwise the one of the smallest scope wins. Either way the union never
    depends on the order the scopes were computed in.
    """

    def __init__(self) -> None:
        self.by_scope: dict[Scope, tuple[Flow, ...]] = {}
        self.desired: dict[FlowKey, Flow] = {}
        # Scopes present on the switch -> the scope they belong to (None: none).
        self.seen: dict[Scope, Optional[Scope]] = {}
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
        # Meters apps want with their own spec: per scope, and per id the
        # scopes wanting it (the smallest scope's spec wins a disagreement).
        self.meters_by_scope: dict[Scope, dict[int, MeterSpec]] = {}
        self._meter_wanters: dict[int, dict[Scope, MeterSpec]] = {}

    def set_meters(self, scope: Scope, meters: dict[int, MeterSpec]) -> bool:
        old = self.meters_by_scope.get(scope, {})
        if old == meters:
            return False
        for mid in set(old) | set(meters):
            if old.get(mid) == meters.get(mid):
                continue
            wanters = self._meter_wanters.setdefault(mid, {})
            if mid in meters:
                wanters[scope] = meters[mid]
            else:
                wanters.pop(scope, None)
                if not wanters:
                    del self._meter_wanters[mid]
            self._changed_meters.add(mid)
        if meters:
            self.meters_by_scope[scope] = dict(meters)
        else:
            self.meters_by_scope.pop(scope, None)
        return True

    def meter_specs(self) -> dict[int, MeterSpec]:
        """The meters apps want with their own spec."""
        return {mid: w[min(w)] for mid, w in self._meter_wanters.items()}

    def set_scope(self, scope: Scope, flows: tuple[Flow, ...],
                  meters: Optional[dict[int, MeterSpec]] = None) -> bool:
        changed_meters = self.set_meters(scope, meters or {})
        old = self.by_scope.get(scope, ())
        if old == flows:
            return changed_meters
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
        self._set(key, _resolve(shared))

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
            self._set(key, _resolve(shared))

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
        """Meter ids the desired flows use, and those apps want with a spec."""
        if self._meter_refs is not None:
            return set(self._meter_refs) | set(self._meter_wanters)
        return {m for f in self.desired.values() for m in _meters_of(f)} | set(self._meter_wanters)

    def take_all(self) -> dict[FlowKey, Flow]:
        """A copy of the whole desired set; changes are tracked from here on."""
        if self._meter_refs is None:
            self._meter_refs = Counter(m for f in self.desired.values() for m in _meters_of(f))
        self._changed = {}
        self._changed_meters = set()
        return dict(self.desired)

    def take_delta(self) -> Optional[tuple[dict[FlowKey, Optional[Flow]], dict]]:
        """What changed since the last take: ({key: flow, or None if no longer
        desired}, {meter id: its spec if an app wants it, else whether a
        desired flow still uses it}); None if only take_all will do."""
        if self._changed is None:
            return None
        assert self._meter_refs is not None
        flows = {k: self.desired.get(k) for k in self._changed}
        specs = self.meter_specs()
        meters = {m: specs.get(m, m in self._meter_refs) for m in sorted(self._changed_meters)}
        self._changed = {}
        self._changed_meters = set()
        return flows, meters


def _conjunctions(f: Flow) -> Optional[tuple]:
    """The conjunction actions of a clause flow, or None if it is not one."""
    if len(f.instructions) != 1 or f.instructions[0][0] != "apply":
        return None
    actions = f.instructions[0][1:]
    if not actions or any(a[0] != "conjunction" for a in actions):
        return None
    return actions


def _resolve(shared: dict) -> Flow:
    """The desired flow for a key several scopes produce."""
    first = shared[min(shared)]
    merged: set = set()
    for f in shared.values():
        actions = _conjunctions(f)
        if actions is None:
            return first
        merged.update(actions)
    return Flow(first.table, first.priority, first.match, (("apply",) + tuple(sorted(merged)),),
                first.cookie)


_meters_of = meters_of   # one definition: meter instructions and metered controller actions


def miss_flows() -> tuple[Flow, ...]:
    """Every stage's table miss, from the pipeline's declaration."""
    out = []
    for stage in pipeline.PIPELINE:
        if stage.metered:
            continue    # reached by resubmit only, where a miss already does nothing
        instructions = (goto(stage.miss),) if stage.miss else ()
        out.append(canonical(flow(pipeline.PIPELINE_APP_ID, stage.name, 0, {}, *instructions)))
    return tuple(out)


MISSES = miss_flows()
# A bridge no host claims forwards nothing: classify's miss alone.
UNCLAIMED = tuple(f for f in MISSES if f.table == "classify")


class FlowCompiler:
    def __init__(self, apps: Iterable[App]):
        self.apps = list(apps)
        self.errors = 0
        self.app_errors: dict[str, int] = {}   # app name -> failed computations
        # Flows that break the pipeline's declaration, and keys two apps
        # both produced in one scope: counted, logged once per shape.
        self.violations = 0
        self.conflicts = 0
        self._checked: dict[tuple, list[str]] = {}
        self._methods: dict[str, list[tuple[App, Callable]]] = {}

    def _check(self, app: App, f: Flow) -> None:
        # Apps repeat a few shapes over thousands of flows: hashing the
        # instructions (in C) is cheaper than walking them (in Python).
        shape = (app.app_id, f.table, f.priority, f.instructions)
        problems = self._checked.get(shape)
        if problems is None:
            if len(self._checked) > 100_000:
                self._checked.clear()   # bounded: flood flows are many shapes
            problems = self._checked[shape] = pipeline.check(app.name, f.table, f.priority,
                                                             f.instructions)
            for p in problems:
                LOG.error("pipeline declaration broken: %s", p)
        if problems:
            self.violations += 1

    def _computers(self, kind: str) -> list[tuple[App, Callable]]:
        """(app, its `<kind>_flows`) for every app that has one."""
        got = self._methods.get(kind)
        if got is None:
            got = self._methods[kind] = [(app, getattr(app, f"{kind}_flows"))
                                         for app in self.apps
                                         if getattr(app, f"{kind}_flows", None) is not None]
        return got

    def compute(self, view: TopologyView, sw: SwitchView, scope: Scope, doc,
                prev: tuple[Flow, ...] = ()) -> tuple[Flow, ...]:
        """The scope's flows from every app; `prev` is what the scope had
        before, whose flows an app that fails now keeps."""
        return self.compute_scope(view, sw, scope, doc, prev)[0]

    def compute_scope(self, view: TopologyView, sw: SwitchView, scope: Scope, doc,
                      prev: tuple[Flow, ...] = (), prev_meters: Optional[dict] = None
                      ) -> tuple[tuple[Flow, ...], dict[int, MeterSpec]]:
        """The scope's flows and the meters apps want there. An app that
        fails keeps its previous flows and the scope its previous meters."""
        out: list[Flow] = []
        meters: dict[int, MeterSpec] = {}
        failed = False
        kind = scope[0]
        if kind == "switch":
            out.extend(MISSES if sw.host is not None else UNCLAIMED)
        for app, method in self._computers(kind):
            try:
                for f in (method(view, sw) if kind == "switch" else method(view, sw, doc)):
                    if isinstance(f, Meter):
                        meters[f.meter_id] = f.spec
                        continue
                    f = canonical(f)
                    self._check(app, f)
                    out.append(f)
            except Exception:
                # One app's bug must not take the others' flows away, nor its
                # own: an empty result would have the reconciler delete them
                # from the switch (ARP fail-open). The scope keeps that app's
                # previous flows (told apart by the app id in the cookie)
                # until it computes again; the error is counted.
                failed = True
                self.errors += 1
                self.app_errors[app.name] = self.app_errors.get(app.name, 0) + 1
                out = [f for f in out if _app_id_of(f.cookie) != app.app_id]
                kept = [f for f in prev if _app_id_of(f.cookie) == app.app_id]
                out.extend(kept)
                LOG.exception("app %s failed computing %s on %016x; keeping its %d previous "
                              "flow(s) there", app.name, scope, sw.dpid, len(kept))
        if len(self.apps) > 1:
            self._conflicts(scope, out)
        if failed and prev_meters:
            meters = {**prev_meters, **meters}
        # Apps are pure and deterministic, so an unchanged scope yields an
        # equal tuple and the memo comparison in set_scope is cheap.
        return tuple(out), meters

    def _conflicts(self, scope: Scope, flows: list[Flow]) -> None:
        """Two apps wanting the same (table, priority, match) is a design
        error: which one wins would depend on app order. Counted and logged."""
        if len({(f.table, f.priority, f.match) for f in flows}) == len(flows):
            return
        seen: dict[tuple, int] = {}
        for f in flows:
            other = seen.setdefault(f.key, f.cookie)
            if other != f.cookie and _app_id_of(other) != _app_id_of(f.cookie):
                self.conflicts += 1
                LOG.error("apps %d and %d both want flow %s in scope %s",
                          _app_id_of(other), _app_id_of(f.cookie), f.key, scope)

    def refresh(self, view: TopologyView, sw: SwitchView, memo: SwitchFlows,
                dirty: Optional[Dirty] = None) -> bool:
        """Bring memo up to date; dirty None recomputes every scope. True if anything changed."""
        if dirty is None or dirty.all_ or sw.host is None:
            return self._refresh_all(view, sw, memo)
        return self._refresh_touched(view, sw, memo, dirty)

    def _set(self, view, sw, memo: SwitchFlows, scope: Scope, doc) -> bool:
        flows, meters = self.compute_scope(view, sw, scope, doc, memo.by_scope.get(scope, ()),
                                           memo.meters_by_scope.get(scope))
        changed = memo.set_scope(scope, flows, meters)
        memo.seen[scope] = scopes.KINDS[scope[0]].parent(doc) if doc is not None else None
        return changed

    def _drop(self, memo: SwitchFlows, scope: Scope) -> bool:
        del memo.seen[scope]
        return memo.drop_scope(scope)

    def _refresh_all(self, view: TopologyView, sw: SwitchView, memo: SwitchFlows) -> bool:
        present = scopes_of(view, sw)
        changed = False
        for scope in [s for s in memo.seen if s not in present]:
            changed |= self._drop(memo, scope)
        for scope, doc in present.items():
            changed |= self._set(view, sw, memo, scope, doc)
        return changed

    def _refresh_touched(self, view: TopologyView, sw: SwitchView, memo: SwitchFlows,
                         dirty: Dirty) -> bool:
        """Recompute only the dirty scopes, without walking every scope of the
        switch: a scope that appears brings its children with it, one that
        leaves takes them away."""
        changed = False
        todo = list(dirty.scopes)
        done: set[Scope] = set()
        while todo:
            scope = todo.pop()
            if scope in done:
                continue
            done.add(scope)
            kind = scopes.KINDS[scope[0]]
            was = scope in memo.seen
            doc = kind.lookup(view, sw, scope[1]) if scope != SWITCH_SCOPE else None
            if doc is None and scope != SWITCH_SCOPE:
                if was:
                    changed |= self._drop(memo, scope)
                    if kind.children:
                        todo.extend(s for s, parent in memo.seen.items() if parent == scope)
                continue
            changed |= self._set(view, sw, memo, scope, doc)
            if not was and kind.children:
                child_kind, ids = kind.children
                todo.extend((child_kind, cid) for cid in ids(view, scope[1]))
        return changed


def _app_id_of(cookie: int) -> int:
    decoded = pipeline.decode_cookie(cookie)
    return decoded[0] if decoded else -1
