"""Addresses as the store writes them -> the forms flows and packets need.

One copy of each conversion, shared by l2, arp, dhcp and metadata, so that
"is this an IPv4 address of the port" has one answer everywhere. Parsing is
strict (netaddr with INET_PTON: no "10.1", no leading zeros): a value the
store should never hold is treated as absent, never guessed at.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

import netaddr

from topology.store.base import Document


def mac_bytes(mac: str) -> bytes:
    """"fa:16:3e:00:00:01" (or with dashes) -> 6 bytes; ValueError otherwise."""
    text = str(mac).replace(":", "").replace("-", "")
    packed = bytes.fromhex(text)
    if len(packed) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return packed


def ipv4(text) -> Optional[str]:
    """A single IPv4 address in canonical text; None for IPv6, a CIDR or junk."""
    try:
        addr = netaddr.IPAddress(str(text), flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return str(addr) if addr.version == 4 else None


def ipv4_packed(text) -> Optional[bytes]:
    """ipv4() as the 4 bytes ARP and IP headers carry."""
    addr = ipv4(text)
    return netaddr.IPAddress(addr).packed if addr else None


def ipv4_cidr(text) -> Optional[str]:
    """An IPv4 address or CIDR as a flow match value: "a.b.c.d" for an
    address or a /32, "net/len" otherwise; None for IPv6 or junk."""
    addr, slash, plen = str(text).partition("/")
    addr = ipv4(addr)
    if addr is None or not slash:
        return addr
    if not plen.isdigit() or not 0 <= int(plen) <= 32:
        return None
    net = netaddr.IPNetwork(f"{addr}/{int(plen)}")
    return str(net.ip) if net.prefixlen == 32 else str(net.cidr)


def single_ipv4(text) -> Optional[str]:
    """The one IPv4 address an address or a /32 names (a wider CIDR is a
    range, not an address)."""
    value = ipv4_cidr(text)
    return value if value is not None and "/" not in value else None


def fixed_ipv4s(port: Document) -> list[str]:
    """The port's fixed IPv4 addresses, in the port's order."""
    out = []
    for fip in port.get("fixed_ips") or ():
        if isinstance(fip, Mapping):
            ip = ipv4(fip.get("ip_address"))
            if ip is not None and ip not in out:
                out.append(ip)
    return out


def pair_ipv4s(port: Document) -> Iterable[tuple[Mapping, str]]:
    """(pair, address) for every allowed address pair naming a single IPv4 address."""
    for pair in port.get("allowed_address_pairs") or ():
        if isinstance(pair, Mapping):
            ip = single_ipv4(pair.get("ip_address") or "")
            if ip is not None:
                yield pair, ip


def own_ipv4s(port: Document) -> list[str]:
    """Every single IPv4 address the port may send from: fixed IPs, then
    single-address pairs, without duplicates."""
    out = fixed_ipv4s(port)
    for _, ip in pair_ipv4s(port):
        if ip not in out:
            out.append(ip)
    return out
