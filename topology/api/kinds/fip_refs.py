"""What ports and routers must know about floating IPs and port forwardings.

A floating IP points at a port's fixed IP and at the router that joins that
IP's subnet to the floating IP's external network; a port forwarding points
at an internal port's fixed IP the same way. When a port goes, or loses an
address, or a router would lose what those need, these helpers keep the
floating IPs consistent in the same transaction (as Neutron disassociates a
floating IP from a deleted port and deletes its port forwardings), or say
what stands in the way. Only store documents are used here, so ports and
routers can call it without importing the floating IP kinds.
"""
from __future__ import annotations

from typing import Iterable, Optional

from topology.store.base import Document, Txn
from topology.api.kinds.base import now

FIPS, PFS = "floatingips", "port_forwardings"


def fip_owner(fip_id: str) -> str:
    return f"floatingip:{fip_id}"


def pf_owner(pf_id: str) -> str:
    return f"port_forwarding:{pf_id}"


def touch(doc: Document) -> None:
    doc["updated_at"] = now()
    doc["revision_number"] = doc.get("revision_number", 0) + 1


def save_fip(txn: Txn, fip: Document) -> None:
    txn.put(FIPS, fip["id"], fip, project_id=fip.get("project_id"))


def save_pf(txn: Txn, pf: Document) -> None:
    txn.put(PFS, pf["id"], pf, project_id=pf.get("project_id"), parent_id=pf["floatingip_id"])


def forwardings(txn, fip_id: str) -> list[Document]:
    return txn.list(PFS, parent_id=fip_id)


def unbind(fip: Document, has_forwardings: bool) -> None:
    """Disassociate (no save): unbound is DOWN, and its router goes unless
    port forwardings still route through it."""
    fip["port_id"] = None
    fip["fixed_ip_address"] = None
    if not has_forwardings:
        fip["router_id"] = None
    fip["status"] = "DOWN"


def delete_forwarding(txn: Txn, pf: Document) -> None:
    txn.release_owner(pf_owner(pf["id"]))
    txn.delete(PFS, pf["id"])


def after_forwardings_changed(txn: Txn, fip: Document) -> None:
    """The FIP shows its forwardings and holds their router while it has any."""
    if not fip.get("port_id") and not forwardings(txn, fip["id"]):
        fip["router_id"] = None
    touch(fip)
    save_fip(txn, fip)


def release_port(txn: Txn, port: Document, lost_ips: Optional[Iterable[str]] = None) -> None:
    """A port is deleted (lost_ips None) or loses these fixed IPs: floating IPs
    bound to them are disassociated and port forwardings to them deleted."""
    lost = None if lost_ips is None else set(lost_ips)
    for fip in txn.list(FIPS):
        if fip.get("port_id") == port["id"] and (lost is None or fip.get("fixed_ip_address") in lost):
            unbind(fip, bool(forwardings(txn, fip["id"])))
            touch(fip)
            save_fip(txn, fip)
    changed: dict[str, Document] = {}
    for pf in txn.list(PFS):
        if pf.get("internal_port_id") == port["id"] and (
                lost is None or pf.get("internal_ip_address") in lost):
            delete_forwarding(txn, pf)
            fip = txn.get(FIPS, pf["floatingip_id"])
            if fip is not None:
                changed[fip["id"]] = fip
    for fip in changed.values():
        after_forwardings_changed(txn, fip)


def using_router(txn, router_id: str) -> list[Document]:
    """Floating IPs whose traffic goes through this router's gateway."""
    return [f for f in txn.list(FIPS) if f.get("router_id") == router_id]


def using_subnets(txn, router_id: str, cidr_check) -> list[Document]:
    """Floating IPs through this router bound to, or forwarding to, an address
    for which cidr_check(address) is true."""
    out = []
    for fip in using_router(txn, router_id):
        addrs = [fip.get("fixed_ip_address")] if fip.get("port_id") else []
        addrs += [pf["internal_ip_address"] for pf in forwardings(txn, fip["id"])]
        if any(a and cidr_check(a) for a in addrs):
            out.append(fip)
    return out
