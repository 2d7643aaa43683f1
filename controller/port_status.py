"""Port status written back to the store: what Nova and Terraform wait for.

A port is ACTIVE when its interface is present on the switch of the host it
is bound to, that switch is connected and claimed, and the switch's worker
has installed everything desired (in sync, and not busy; a port already
ACTIVE stays so while its switch installs another change); the DHCP port, served
by the controller itself, is ACTIVE. A distributed router's interface is
ACTIVE once some host serves the router, as Neutron's DVR port is once one
of its host bindings is: the router is up, the interface and its network
are up, and a host with a bound port on one of the router's networks (where
apps/dvr.py puts the routing flows) has all its flows installed. Anything
else is DOWN: unplugged, unbound, admin down, or its host's switch
disconnected.

The controller compares that with the status the store has and writes the
differences in one transaction, every status interval, on a thread of its
own: never on the packet path, and never one write per port. A write goes
through the same store as the API's, with revision_number and updated_at
moved as the API moves them, so `If-Match` and tools that poll see the
change. A document the API changed meanwhile is read again inside the
transaction, so only `status` is ever written over.
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional

from controller.locality import is_active, local_ofport
from topology.store.base import Document, Store, StoreError, stamp
from topology.view import TopologyView

LOG = logging.getLogger(__name__)

ACTIVE, DOWN = "ACTIVE", "DOWN"


def wanted_statuses(view: TopologyView, switches: Iterable) -> dict[str, str]:
    """port id -> the status it should have, for every port in the view.

    `switches` are the connected switches (core.Switch); a port is ACTIVE
    only on one whose flows are all installed."""
    out = {pid: DOWN for pid in view.ports}
    for pid, port in view.ports.items():
        if port.get("device_owner") == "network:dhcp":
            out[pid] = ACTIVE
    for sw in switches:
        host = sw.view.host
        if host is None or not sw.reconciler.in_sync:
            continue
        # While the switch installs a change, a port it already serves keeps
        # ACTIVE and only ports not yet ACTIVE wait for the install. Marking
        # every port of a busy host DOWN and back flipped each one for every
        # other port's change: at 500 ports, 280 status writes per port, and
        # the controller followed every one of them (bench/vs_ovn.py).
        def settled(doc):
            return not sw.busy or doc.get("status") == ACTIVE
        for port in view.ports_on_host(host["name"]):
            if local_ofport(view, sw.view, port) is not None and settled(port):
                out[port["id"]] = ACTIVE
        for pid in served_interfaces(view, host["name"]):
            if settled(view.ports.get(pid, {})):
                out[pid] = ACTIVE
    return out


def served_interfaces(view: TopologyView, host_name: str) -> set[str]:
    """The router interface ports whose router this host routes for."""
    out = set()
    for rid in {r for n in view.bound_networks_on_host(host_name)
                for r in view.routers_of_network(n)}:
        if not is_active(view.routers.get(rid)):
            continue
        out |= {pid for pid, port in view.router_ports.get(rid, {}).items()
                if is_active(port) and is_active(view.networks.get(port["network_id"]))}
    return out


def changes(view: TopologyView, wanted: dict[str, str]) -> dict[str, str]:
    """The ports whose stored status differs from the wanted one."""
    return {pid: status for pid, status in wanted.items()
            if view.ports.get(pid, {}).get("status") != status}


def write_statuses(store: Store, kind: str, updates: dict[str, str], *,
                   parent_field: Optional[str] = None, now: Optional[str] = None) -> int:
    """Write `updates` (id -> status) to documents of `kind` in one
    transaction; return how many changed. Each document is read again inside
    it, so a change the API made meanwhile is kept and only `status` (with
    revision_number and updated_at, as the API moves them) is written over.
    Shared with the floating IP statuses (external_status.py)."""
    when = now or stamp()

    def body(txn) -> int:
        written = 0
        for id_, status in updates.items():
            doc: Optional[Document] = txn.get(kind, id_)
            if doc is None or doc.get("status") == status:
                continue
            doc = {**doc, "status": status, "updated_at": when,
                   "revision_number": doc.get("revision_number", 0) + 1}
            txn.put(kind, id_, doc, project_id=doc.get("project_id"),
                    parent_id=doc.get(parent_field) if parent_field else None)
            written += 1
        return written
    return store.run(body)


def write(store: Store, updates: dict[str, str], now: Optional[str] = None) -> int:
    """Write port statuses in one transaction; return how many changed."""
    return write_statuses(store, "ports", updates, parent_field="network_id", now=now)


class PortStatusWriter:
    """Called by the controller's status thread with its lock held only to
    compute; the store write happens after, without it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.written = 0
        self.errors = 0

    def due(self, view: Optional[TopologyView], switches: Iterable) -> dict[str, str]:
        if view is None:
            return {}
        return changes(view, wanted_statuses(view, switches))

    def flush(self, updates: dict[str, str]) -> None:
        if not updates:
            return
        try:
            self.written += write(self.store, updates)
        except StoreError as e:
            # Tried again next round: the view still shows the old status.
            self.errors += 1
            LOG.warning("port status: %d update(s) not written: %s", len(updates), e)
