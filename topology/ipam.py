"""Addresses: subnet arithmetic, pool checks, and IP and MAC allocation.

Allocation never scans every port. An IP is taken by claiming
("ip:<subnet_id>", address) in the caller's transaction; random probes into
the pools find a free one in a few indexed lookups even when a pool is mostly
used, and only a pool with almost nothing left falls back to reading that one
subnet's claimed addresses.

/31 and /32 subnets follow RFC 3021: no network or broadcast address is
reserved, so a /31 has two usable addresses and a /32 has one.
"""
from __future__ import annotations

import random
from typing import Iterable, Optional

import netaddr

from topology.store.base import Conflict, ReadTxn, Txn
from topology.validation import Invalid

RANDOM_PROBES = 24
MAC_ATTEMPTS = 16


def ip_namespace(subnet_id: str) -> str:
    return f"ip:{subnet_id}"


def to_int(addr: str) -> int:
    a, b, c, d = addr.split(".")
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)


def to_str(value: int) -> str:
    return f"{value >> 24 & 255}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def host_range(cidr: str) -> tuple[int, int]:
    """First and last usable host address of an IPv4 subnet, as integers."""
    net = netaddr.IPNetwork(cidr)
    if net.prefixlen >= 31:
        return net.first, net.last
    return net.first + 1, net.last - 1


def in_cidr(addr: str, cidr: str) -> bool:
    net = netaddr.IPNetwork(cidr)
    return net.first <= to_int(addr) <= net.last


def default_gateway(cidr: str) -> Optional[str]:
    """The first host; a /32 has no room for a gateway besides its one address."""
    if netaddr.IPNetwork(cidr).prefixlen == 32:
        return None
    return to_str(host_range(cidr)[0])


def check_gateway(cidr: str, gateway: Optional[str]) -> None:
    if gateway is None:
        return
    first, last = host_range(cidr)
    if not first <= to_int(gateway) <= last:
        raise Invalid("gateway_ip", f"gateway {gateway} is not a usable address of subnet {cidr}")


def default_pools(cidr: str, gateway: Optional[str]) -> list[dict]:
    """The whole host range minus the gateway."""
    first, last = host_range(cidr)
    if gateway is None or not first <= to_int(gateway) <= last:
        return [_pool(first, last)]
    gw = to_int(gateway)
    pools = []
    if first < gw:
        pools.append(_pool(first, gw - 1))
    if gw < last:
        pools.append(_pool(gw + 1, last))
    return pools


def _pool(start: int, end: int) -> dict:
    return {"start": to_str(start), "end": to_str(end)}


def check_pools(cidr: str, gateway: Optional[str], pools: list[dict]) -> list[dict]:
    """Pools inside the subnet's host range, not overlapping each other or the gateway."""
    first, last = host_range(cidr)
    spans = []
    for pool in pools:
        start, end = to_int(pool["start"]), to_int(pool["end"])
        if start > end:
            raise Invalid("allocation_pools",
                          f"pool {pool['start']}-{pool['end']}: start is after end")
        if start < first or end > last:
            raise Invalid("allocation_pools",
                          f"pool {pool['start']}-{pool['end']} spans beyond the usable "
                          f"addresses of subnet {cidr}")
        spans.append((start, end))
    spans.sort()
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        if s2 <= e1:
            raise Invalid("allocation_pools",
                          f"pools {to_str(s1)}-{to_str(e1)} and {to_str(s2)}-{to_str(e2)} overlap")
    if gateway is not None:
        gw = to_int(gateway)
        for s, e in spans:
            if s <= gw <= e:
                raise Invalid("allocation_pools",
                              f"gateway ip {gateway} conflicts with allocation pool "
                              f"{to_str(s)}-{to_str(e)}")
    return [_pool(s, e) for s, e in spans]


def in_pools(addr: str, pools: Iterable[dict]) -> bool:
    value = to_int(addr)
    return any(to_int(p["start"]) <= value <= to_int(p["end"]) for p in pools)


def _spans(subnet: dict) -> list[tuple[int, int]]:
    return [(to_int(p["start"]), to_int(p["end"])) for p in subnet["allocation_pools"]]


class PoolExhausted(Exception):
    def __init__(self, subnet_id: str):
        super().__init__(f"No more IP addresses available on subnet {subnet_id}")
        self.subnet_id = subnet_id


def allocate_ip(txn: Txn, subnet: dict, owner: str, held: frozenset[str] = frozenset()) -> str:
    """Claim a free address from the subnet's pools for owner.

    `held` are addresses owner already has here: claiming one again would
    succeed silently (same owner), so they are skipped.
    """
    spans = _spans(subnet)
    total = sum(e - s + 1 for s, e in spans)
    if total == 0:
        raise PoolExhausted(subnet["id"])
    ns = ip_namespace(subnet["id"])
    for _ in range(min(RANDOM_PROBES, total)):
        n = random.randrange(total)
        for s, e in spans:
            if n <= e - s:
                addr = to_str(s + n)
                break
            n -= e - s + 1
        if addr in held:
            continue
        try:
            # Claim straight away: one statement when the address is free,
            # which is the common case.
            txn.claim(ns, addr, owner)
            return addr
        except Conflict:
            continue
    return _claim_first_free(txn, subnet, owner, txn.claimed_keys(ns))


def first_free_ip(txn: Txn, subnet: dict, owner: str) -> str:
    """Claim the lowest free pool address, as Neutron does for its DHCP port."""
    ns = ip_namespace(subnet["id"])
    for s, e in _spans(subnet):
        for value in range(s, min(e, s + RANDOM_PROBES) + 1):
            if txn.claim_owner(ns, to_str(value)) is None:
                txn.claim(ns, to_str(value), owner)
                return to_str(value)
    return _claim_first_free(txn, subnet, owner, txn.claimed_keys(ns))


def _claim_first_free(txn: Txn, subnet: dict, owner: str, taken: set[str]) -> str:
    for s, e in _spans(subnet):
        for value in range(s, e + 1):
            addr = to_str(value)
            if addr not in taken:
                txn.claim(ip_namespace(subnet["id"]), addr, owner)
                return addr
    raise PoolExhausted(subnet["id"])


def claim_ip(txn: Txn, subnet: dict, addr: str, owner: str) -> None:
    """Take a requested address: inside the subnet, not its gateway, not taken (Conflict)."""
    first, last = host_range(subnet["cidr"])
    if not first <= to_int(addr) <= last:
        raise Invalid("fixed_ips", f"IP address {addr} is not a valid IP for subnet {subnet['id']}")
    if addr == subnet.get("gateway_ip"):
        raise Conflict(ip_namespace(subnet["id"]), addr, f"subnet:{subnet['id']} (gateway)")
    txn.claim(ip_namespace(subnet["id"]), addr, owner)


def ip_owner(txn: ReadTxn, subnet_id: str, addr: str) -> Optional[str]:
    return txn.claim_owner(ip_namespace(subnet_id), addr)


def random_mac(base: str) -> str:
    """Keep the base's first three octets, randomise the rest (as Neutron's base_mac)."""
    head = base.lower().split(":")[:3]
    tail = [f"{random.getrandbits(8):02x}" for _ in range(3)]
    return ":".join(head + tail)


def allocate_mac(txn: Txn, base: str, namespace: str, owner: str) -> str:
    for _ in range(MAC_ATTEMPTS):
        mac = random_mac(base)
        try:
            txn.claim(namespace, mac, owner)
            return mac
        except Conflict:
            continue
    raise Conflict(namespace, "*", "nobody")
