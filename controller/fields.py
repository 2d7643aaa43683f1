"""Match and set-field values in the one spelling Open vSwitch reports back.

Field names are os-ken's OXM/NXM names (in_port, eth_dst, ipv4_src, reg6,
ct_state, conj_id, ...). A masked value is a (value, mask) tuple; an IPv4
field also takes "a.b.c.d/len". OVS drops a mask that is all ones, clears
value bits outside the mask and drops a field whose mask is all zeros;
canonical_value() and canonical_match() apply the same rules, so a desired
flow and the same flow read back from the switch compare equal.

The conntrack state bits live here too, so every app spells
ct_state the same way: ct_state("+trk+est") == (CT_TRK | CT_EST, CT_TRK | CT_EST).
"""
from __future__ import annotations

import functools
import ipaddress
from typing import Any, Iterable

# ct_state bits (OVS's CS_* in lib/packets.h, the order ovs-ofctl prints them).
CT_NEW = 0x01
CT_EST = 0x02
CT_REL = 0x04
CT_RPL = 0x08
CT_INV = 0x10
CT_TRK = 0x20
CT_SNAT = 0x40
CT_DNAT = 0x80
CT_STATE_BITS: dict[str, int] = {"new": CT_NEW, "est": CT_EST, "rel": CT_REL, "rpl": CT_RPL,
                                 "inv": CT_INV, "trk": CT_TRK, "snat": CT_SNAT,
                                 "dnat": CT_DNAT}

MAC_FIELDS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha"})
IPV4_FIELDS = frozenset({"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa",
                         "tun_ipv4_src", "tun_ipv4_dst"})
# Bit widths of integer fields, to recognise an all-ones mask. A field not
# listed keeps whatever mask it is given.
INT_WIDTH: dict[str, int] = {
    "in_port": 32, "metadata": 64, "tunnel_id": 64, "pkt_mark": 32,
    "vlan_vid": 13, "vlan_pcp": 3, "eth_type": 16,
    "ip_proto": 8, "ip_dscp": 6, "ip_ecn": 2, "arp_op": 16,
    "tcp_src": 16, "tcp_dst": 16, "udp_src": 16, "udp_dst": 16,
    "sctp_src": 16, "sctp_dst": 16, "tcp_flags": 12,
    "icmpv4_type": 8, "icmpv4_code": 8,
    "ct_state": 32, "ct_zone": 16, "ct_mark": 32, "ct_label": 128, "conj_id": 32,
    **{f"reg{i}": 32 for i in range(16)},
}
ALL_ONES64 = 0xFFFFFFFFFFFFFFFF
# os-ken's names for the Nicira (NXM) headers of fields that also have an
# OpenFlow OXM header. OVS answers in NXM inside Nicira actions (reg_load2,
# reg_move), so "eth_dst_nxm" comes back where "eth_dst" was sent.
NXM_ALIASES: dict[str, str] = {
    f"{name}_nxm": name for name in (
        "in_port", "eth_dst", "eth_src", "eth_type", "ip_proto", "ipv4_src", "ipv4_dst",
        "tcp_src", "tcp_dst", "udp_src", "udp_dst", "icmpv4_type", "icmpv4_code", "arp_op",
        "arp_spa", "arp_tpa", "arp_sha", "arp_tha", "tunnel_id", "ipv6_src", "ipv6_dst",
        "icmpv6_type", "icmpv6_code", "ip_ecn", "tcp_flags")}


def field_name(name: str) -> str:
    """The OXM name of a field a switch reported under its NXM name."""
    return NXM_ALIASES.get(name, name)
# The mask of a wildcarded field, in each spelling canonical_value produces.
_ZERO_MASKS = frozenset({0, "0.0.0.0", "00:00:00:00:00:00"})


def ct_state(spec: str) -> tuple[int, int]:
    """"+trk+est-rel" -> (value, mask), as ovs-ofctl's ct_state= reads it."""
    value = mask = 0
    rest = spec.replace(" ", "")
    if not rest:
        raise ValueError("empty ct_state")
    while rest:
        sign, rest = rest[0], rest[1:]
        if sign not in "+-":
            raise ValueError(f"ct_state {spec!r}: expected + or - before each flag")
        name = ""
        while rest and rest[0] not in "+-":
            name, rest = name + rest[0], rest[1:]
        bit = CT_STATE_BITS.get(name)
        if bit is None:
            raise ValueError(f"ct_state {spec!r}: unknown flag {name!r}")
        mask |= bit
        if sign == "+":
            value |= bit
    return (value, mask)


def mac_int(text: str) -> int:
    return int(text.replace(":", "").replace("-", ""), 16)


def mac_text(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def canonical_value(field: str, value: Any) -> Any:
    """One spelling per value: lower-case MACs, dotted IPv4, masks only when partial."""
    if type(value) is int:
        return value   # the common case, and already canonical
    if isinstance(value, list):
        value = tuple(value)
    return _canonical_cached(field, value)


@functools.lru_cache(maxsize=1 << 16)
def _canonical_cached(field: str, value: Any) -> Any:
    # Computed flows repeat the same MACs, addresses and masks over many
    # switches; parsing each once keeps a 10,000-port recompute fast.
    if field in IPV4_FIELDS and isinstance(value, str) and "/" in value:
        net = ipaddress.IPv4Network(value, strict=False)
        value = (str(net.network_address), str(net.netmask))
    if field in MAC_FIELDS:
        if isinstance(value, tuple):
            v, m = mac_int(value[0]), mac_int(value[1])
            if m == (1 << 48) - 1:
                return mac_text(v)
            return (mac_text(v & m), mac_text(m))
        return mac_text(mac_int(value))
    if field in IPV4_FIELDS:
        if isinstance(value, tuple):
            v, m = int(ipaddress.IPv4Address(value[0])), int(ipaddress.IPv4Address(value[1]))
            if m == 0xFFFFFFFF:
                return str(ipaddress.IPv4Address(v))
            return (str(ipaddress.IPv4Address(v & m)), str(ipaddress.IPv4Address(m)))
        return str(ipaddress.IPv4Address(value))
    if isinstance(value, tuple):
        v, m = int(value[0]), int(value[1])
        width = INT_WIDTH.get(field, 64)
        if m == (1 << width) - 1 or (field == "metadata" and m == ALL_ONES64):
            return v
        return (v & m, m)
    return value


def canonical_match(match: Iterable[tuple[str, Any]]) -> tuple:
    out = []
    for k, v in match:
        v = canonical_value(k, v)
        if type(v) is tuple and v[1] in _ZERO_MASKS:
            continue   # a wildcard: OVS does not report the field at all
        out.append((k, v))
    out.sort()
    return tuple(out)


def port_masks(lo: int, hi: int) -> list:
    """The fewest (value, mask) matches of a 16-bit port field covering lo..hi.

    Each is an aligned power-of-two block, as Neutron's OVS firewall
    splits a port range; a block of one port is a plain value. 0..65535 is
    one all-wildcard (0, 0), which canonical_match drops.
    """
    if not 0 <= lo <= hi <= 0xFFFF:
        raise ValueError(f"bad port range {lo}-{hi}")
    out: list = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        mask = 0xFFFF & ~(size - 1)
        out.append(lo if mask == 0xFFFF else (lo, mask))
        lo += size
    return out
