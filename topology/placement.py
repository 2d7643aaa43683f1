"""Where a router's centralized SNAT runs: one pure function the API and the
controller share, so the router's `vmflow:snat_host` and the flows never
disagree (EXTERNAL_SCHEMA.md).

Rendezvous (highest random weight) hashing of the router's `_key` over the
ids of the hosts with `is_gateway` and `admin_state_up`: deterministic from
the store, and when a gateway host leaves only the routers it held move.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Optional

from topology.store.base import Document


def gateway_hosts(hosts: Iterable[Document]) -> list[str]:
    """The ids of the hosts that may carry SNAT, sorted."""
    return sorted(h["id"] for h in hosts
                  if h.get("is_gateway") and h.get("admin_state_up", True) is not False)


def _weight(router_key: int, host_id: str) -> bytes:
    return hashlib.sha256(f"{router_key}/{host_id}".encode()).digest()


def snat_host(router: Document, hosts: Iterable[Document]) -> Optional[str]:
    """The id of the host where `router`'s SNAT runs, or None when no host
    is a gateway host that is up."""
    candidates = gateway_hosts(hosts)
    if not candidates:
        return None
    return max(candidates, key=lambda h: _weight(router["_key"], h))
