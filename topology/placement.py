"""Where a router's centralized SNAT runs: one pure function shared by the
API (which shows it as `vmflow:snat_host`) and the controller (which puts the
router's SNAT flows there), so the two never disagree.

Rendezvous (highest random weight) hashing of the router's `_key` over the
hosts that may carry SNAT (`is_gateway` and `admin_state_up`): every router
lands on one of them, deterministically from the store alone, and when a
gateway host goes away or is taken out of service only the routers that were
on it move; the others stay where they are.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Optional, Union

Document = Mapping
Hosts = Union[Iterable[Document], Mapping[str, Document]]


def eligible(host: Document) -> bool:
    """A host that may carry routers' SNAT."""
    return bool(host.get("is_gateway")) and host.get("admin_state_up", True) is not False


def _weight(router_key: int, host_id: str) -> bytes:
    # A cryptographic hash only for its spread and for being the same in every
    # process (Python's hash() of a str is salted per process).
    return hashlib.sha256(f"{router_key}/{host_id}".encode()).digest()


def snat_host(router: Document, hosts: Hosts) -> Optional[str]:
    """The id of the host that runs this router's SNAT, or None when no host may.

    `hosts` is the host documents (a list, or a dict of id -> document). The
    answer depends only on the router's `_key` and the eligible hosts' ids.
    """
    docs = hosts.values() if isinstance(hosts, Mapping) else hosts
    ids = sorted(h["id"] for h in docs if eligible(h))
    if not ids:
        return None
    key = int(router.get("_key") or 0)
    # max over sorted ids: a (never expected) tie of weights is still decided the same way
    return max(ids, key=lambda host_id: _weight(key, host_id))
