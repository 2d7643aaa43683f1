"""Floating IP status and learned neighbours, written back to the store.

Self-contained next to controller/port_status.py (ports): the same rules for
a write (one transaction per round, never on the packet path, revision and
updated_at moved as the API moves them, only `status` written over).

- A floating IP bound to a port is ACTIVE once its flows are installed on the
  port's host: that host's switch is connected, claimed, in sync, and has the
  floating IP's scope. Anything else is DOWN (EXTERNAL_SCHEMA.md).
- When a floating IP becomes ACTIVE on a host it was not announced from
  (bound, or moved to a VM on another host), that host sends a gratuitous
  ARP for it on the external network, so outside ARP caches follow at once.
- Neighbours the nat app learned on external networks become `mac_bindings`
  documents, which its next-hop flows are computed from.
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional

from apps.nat import BINDINGS, FIPS, arp_frame, binding_id, translation
from controller.locality import uplink_ofport
from controller.port_status import write_statuses
from topology.store.base import Store, StoreError, stamp
from topology.view import TopologyView

LOG = logging.getLogger(__name__)
ACTIVE, DOWN = "ACTIVE", "DOWN"


def wanted_fip_statuses(view: TopologyView, switches: Iterable) -> dict[str, tuple[str, Optional[object]]]:
    """fip id -> (status, the switch it is installed on, if ACTIVE)."""
    by_host = {}
    for sw in switches:
        host = sw.view.host
        if host is not None and not sw.busy and sw.reconciler.in_sync:
            by_host[host["name"]] = sw
    out = {}
    for fid, fip in view.docs[FIPS].items():
        t = translation(view, fip)
        sw = by_host.get(t.host) if t is not None else None
        ok = (sw is not None and sw.view.host.get("external_mac")
              and sw.memo.by_scope.get(("floatingip", fid))
              and uplink_ofport(sw.view, t.ext_net) is not None)
        out[fid] = (ACTIVE, sw) if ok else (DOWN, None)
    return out


def fip_host(view: TopologyView, fid: str) -> Optional[str]:
    """The host a floating IP's flows go on: that of the port it is bound to."""
    fip = view.docs[FIPS].get(fid)
    t = translation(view, fip) if fip is not None else None
    return t.host if t is not None else None


def write_bindings(store: Store, learned: dict[tuple[str, str], str]) -> int:
    when = stamp()

    def body(txn) -> int:
        for (net, ip), mac in learned.items():
            bid = binding_id(net, ip)
            old = txn.get(BINDINGS, bid)
            if old is not None and old.get("mac_address") == mac:
                continue
            txn.put(BINDINGS, bid, {"id": bid, "network_id": net, "ip_address": ip,
                                    "mac_address": mac, "updated_at": when},
                    parent_id=net)
        return len(learned)
    return store.run(body)


class ExternalWriter:
    """Called each round by the controller's external-status thread."""

    def __init__(self, store: Store, nat_app=None) -> None:
        self.store = store
        self.nat = nat_app
        self.announced: dict[str, tuple[str, str]] = {}   # fip id -> (host, port id)
        self.written = 0
        self.garps = 0
        self.errors = 0

    def due(self, view: Optional[TopologyView], switches: Iterable):
        """(status updates, gratuitous ARPs to send as (dpid, ofport, frame))."""
        if view is None:
            return {}, []
        updates, garps = {}, []
        for fid, (status, sw) in wanted_fip_statuses(view, switches).items():
            fip = view.docs[FIPS][fid]
            if fip.get("status") != status:
                updates[fid] = status
            if status != ACTIVE:
                self.announced.pop(fid, None)
                continue
            where = (sw.view.host_name, fip.get("port_id"))
            if self.announced.get(fid) == where:
                continue
            t = translation(view, fip)
            uplink = uplink_ofport(sw.view, t.ext_net)
            frame = arp_frame(t.ext_net, sw.view.host["external_mac"].lower(), t.address,
                              t.address, gratuitous=True)
            garps.append((sw.view.dpid, uplink, frame))
            self.announced[fid] = where
        return updates, garps

    def flush(self, updates: dict[str, str], garps: list, send) -> None:
        for dpid, port, frame in garps:
            try:
                send(dpid, port, frame)
                self.garps += 1
            except Exception as e:
                LOG.warning("gratuitous ARP on %016x not sent: %s", dpid, e)
        learned = self.nat.take_learned() if self.nat is not None else {}
        try:
            if updates:
                self.written += write_statuses(self.store, FIPS, updates)
            if learned:
                write_bindings(self.store, learned)
        except StoreError as e:
            self.errors += 1
            LOG.warning("external status: not written: %s", e)
            if self.nat is not None:
                with self.nat._lock:
                    for k, v in learned.items():
                        self.nat._learned.setdefault(k, v)
