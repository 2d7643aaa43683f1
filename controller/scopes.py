"""Scope kinds: the units the compiler keeps flows by, and what dirties them.

A switch's desired flows are the union of its scopes' flows. A scope is
(kind, id): ("switch", "") for per-switch flows, ("network", id) for each
network present on the switch's host, ("port", id) for each port of those
networks. A kind declares, in one registration:

    on_switch(view, sw)    every scope of the kind present on a switch, with its document
    lookup(view, sw, id)   the document if the scope is present on the switch, else None
    hosts(view, id)        the hosts whose switches may have it (None: every switch)
    watches                store kind -> fn(view, old, new) -> ids of the kind that
                           a change of that store kind dirties
    children               (kind, fn(view, id) -> ids): scopes that appear and leave
                           with this one (a network's ports)
    parent                 fn(doc) -> the scope this one belongs to, or None

Apps compute a kind's flows in a method named `<kind>_flows(view, sw, doc)`.
A new feature adds a kind (or a watch on an existing one: a security group's
rules dirtying the ports that use it) here, and nothing else changes: the
controller asks the registry what a store change dirties and on which
switches, and the compiler asks it what is present.

A store kind that no kind watches dirties nothing: no flow depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from topology.store.base import Document
from topology.view import TopologyView

Scope = tuple   # (kind name, id)
SWITCH_SCOPE: Scope = ("switch", "")

Watch = Callable[[TopologyView, Optional[Document], Optional[Document]], Iterable[str]]


@dataclass
class ScopeKind:
    name: str
    on_switch: Callable[[TopologyView, object], Iterable[tuple[str, Optional[Document]]]]
    lookup: Callable[[TopologyView, object, str], Optional[Document]]
    hosts: Callable[[TopologyView, str], Optional[Iterable[str]]]
    parent: Callable[[Document], Optional[Scope]] = lambda doc: None
    children: Optional[tuple[str, Callable[[TopologyView, str], Iterable[str]]]] = None
    watches: dict[str, list[Watch]] = field(default_factory=dict)

    def watch(self, store_kind: str) -> Callable[[Watch], Watch]:
        """Register fn as telling which scopes of this kind a change of
        store_kind dirties (a decorator, so an app declares its own)."""
        def register(fn: Watch) -> Watch:
            self.watches.setdefault(store_kind, []).append(fn)
            return fn
        return register


KINDS: dict[str, ScopeKind] = {}

# Store kinds whose change recomputes every scope on the switches of the
# hosts a function names (a host's uplink map touches all of its flows).
REBUILDS: dict[str, Callable[[Optional[Document], Optional[Document]], Iterable[str]]] = {}


def register(kind: ScopeKind) -> ScopeKind:
    if kind.name in KINDS:
        raise ValueError(f"scope kind {kind.name!r} registered twice")
    KINDS[kind.name] = kind
    return kind


def dirtied(view: TopologyView, store_kind: str, old: Optional[Document],
            new: Optional[Document]) -> set[Scope]:
    """Every scope a change of one document dirties (view already updated)."""
    out: set[Scope] = set()
    for kind in KINDS.values():
        for fn in kind.watches.get(store_kind, ()):
            out.update((kind.name, sid) for sid in fn(view, old, new))
    return out


def _docs(old, new) -> list[Document]:
    return [d for d in (old, new) if d]


# -- switch ----------------------------------------------------------------
register(ScopeKind(
    name="switch",
    on_switch=lambda view, sw: [("", None)],
    lookup=lambda view, sw, sid: None,
    hosts=lambda view, sid: None,
))
REBUILDS["hosts"] = lambda old, new: [d["name"] for d in _docs(old, new)]


# -- network: present where one of its ports is bound ------------------------
def _networks_on(view: TopologyView, sw) -> Iterable[tuple[str, Document]]:
    if sw.host is None:
        return ()
    return [(nid, view.networks[nid]) for nid in view.networks_on_host(sw.host_name)
            if nid in view.networks]


def _network_here(view: TopologyView, sw, nid: str) -> Optional[Document]:
    if sw.host is None or not view.network_on_host(nid, sw.host_name):
        return None
    return view.networks.get(nid)


NETWORK = register(ScopeKind(
    name="network",
    on_switch=_networks_on,
    lookup=_network_here,
    hosts=lambda view, nid: view.hosts_of_network(nid),
    children=("port", lambda view, nid: list(view.ports_by_network.get(nid, {}))),
))


@NETWORK.watch("networks")
def _network_changed(view, old, new):
    return [d["id"] for d in _docs(old, new)]


@NETWORK.watch("subnets")
@NETWORK.watch("ports")
def _networks_of(view, old, new):
    # A port joining or leaving changes its network's flood set.
    return {d["network_id"] for d in _docs(old, new)}


# -- port: every port of a network present on the switch, local or remote ---
def _ports_on(view: TopologyView, sw) -> Iterable[tuple[str, Document]]:
    out = []
    for nid, _net in _networks_on(view, sw):
        out.extend(view.ports_by_network.get(nid, {}).items())
    return out


def _port_here(view: TopologyView, sw, pid: str) -> Optional[Document]:
    port = view.ports.get(pid)
    if port is None or _network_here(view, sw, port["network_id"]) is None:
        return None
    return port


PORT = register(ScopeKind(
    name="port",
    on_switch=_ports_on,
    lookup=_port_here,
    hosts=lambda view, pid: (view.hosts_of_network(view.ports[pid]["network_id"])
                             if pid in view.ports else ()),
    parent=lambda doc: ("network", doc["network_id"]),
))


@PORT.watch("ports")
def _port_changed(view, old, new):
    return [d["id"] for d in _docs(old, new)]


@PORT.watch("networks")
@PORT.watch("subnets")
def _ports_of_network(view, old, new):
    # A port's flows carry its network's key and follow its admin state.
    nets = {d["id"] if "network_id" not in d else d["network_id"] for d in _docs(old, new)}
    return [pid for n in nets for pid in view.ports_by_network.get(n, {})]


@PORT.watch("instances")
def _ports_of_instance(view, old, new):
    ids = {d["id"] for d in _docs(old, new)}
    return [p["id"] for p in view.ports.values() if p.get("device_id") in ids]
