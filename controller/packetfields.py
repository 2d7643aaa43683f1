"""A packet as the flow tables see it: named header fields, for the walker.

Field names are os-ken's OXM names, as in flow matches (controller/flow.py):
in_port, eth_src, eth_dst, eth_type, vlan_vid, ip_proto, ipv4_src, tcp_dst,
arp_op, metadata, reg6, ct_state, ... plus nw_ttl, which OpenFlow 1.3 cannot
match but dec_ttl changes. Inside a Packet every value is an int (MACs as
48-bit, IPv4 addresses as 32-bit numbers); text is only for people.

A field exists only when the packet's headers give it: tcp_dst needs an IPv4
packet whose ip_proto is 6, arp_spa needs an ARP packet (OpenFlow calls these
prerequisites). Registers, metadata and the conntrack fields always exist
and start at 0. vlan_vid is 0 (OFPVID_NONE) for an untagged packet and
0x1000 | VID for a tagged one, as in a match.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Mapping, Optional

import dpkt

from controller.fields import CT_STATE_BITS, INT_WIDTH, IPV4_FIELDS, MAC_FIELDS

ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
OFPVID_PRESENT = 0x1000

# Bit widths, for masks and Nicira move: controller/fields.py's, plus the
# address fields and the TTL dec_ttl changes.
WIDTHS: dict[str, int] = {
    **INT_WIDTH,
    **{f: 48 for f in MAC_FIELDS},
    **{f: 32 for f in IPV4_FIELDS},
    "nw_ttl": 8,
}

# Fields that are always present, starting at 0 (pipeline and conntrack metadata).
ZERO_DEFAULT = frozenset({"metadata", "tunnel_id", "ct_state", "ct_zone", "ct_mark",
                          "ct_label", "pkt_mark", "conj_id", *(f"reg{i}" for i in range(16))})

# field -> what the packet must have for the field to exist: (field, allowed values).
_IP = (("eth_type", frozenset({ETH_IP})),)
PREREQUISITES: dict[str, tuple[tuple[str, frozenset], ...]] = {
    "ipv4_src": _IP, "ipv4_dst": _IP, "nw_ttl": _IP,
    "ip_proto": (("eth_type", frozenset({ETH_IP, ETH_IPV6})),),
    "ip_dscp": (("eth_type", frozenset({ETH_IP, ETH_IPV6})),),
    "ip_ecn": (("eth_type", frozenset({ETH_IP, ETH_IPV6})),),
    "tcp_src": _IP + (("ip_proto", frozenset({6})),),
    "tcp_dst": _IP + (("ip_proto", frozenset({6})),),
    "udp_src": _IP + (("ip_proto", frozenset({17})),),
    "udp_dst": _IP + (("ip_proto", frozenset({17})),),
    "icmpv4_type": _IP + (("ip_proto", frozenset({1})),),
    "icmpv4_code": _IP + (("ip_proto", frozenset({1})),),
    **{f: (("eth_type", frozenset({ETH_ARP})),)
       for f in ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")},
}

# ct_state bits by name, in the order ovs-ofctl prints them.
CT_FLAGS: dict[str, int] = CT_STATE_BITS

# Header fields a packet dict may carry; anything else is a typo.
HEADER_FIELDS = frozenset(WIDTHS) - ZERO_DEFAULT - {"vlan_vid", "vlan_pcp"}

_PROTO_OF = {"tcp": 6, "udp": 17, "icmpv4": 1}


def field_width(field: str) -> int:
    try:
        return WIDTHS[field]
    except KeyError:
        raise ValueError(f"unknown field {field!r}") from None


def to_int(field: str, value: Any) -> int:
    """A field value (or mask) as the switch holds it."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: not a value: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if field in MAC_FIELDS:
        raw = text.replace(":", "").replace("-", "")
        if len(raw) != 12:
            raise ValueError(f"{field}: not a MAC address: {value!r}")
        return int(raw, 16)
    if field in IPV4_FIELDS:
        try:
            return int(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError(f"{field}: not an IPv4 address: {value!r}") from None
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"{field}: not a number: {value!r}") from None


def to_text(field: str, value: int) -> str:
    if field in MAC_FIELDS:
        raw = f"{value:012x}"
        return ":".join(raw[i:i + 2] for i in range(0, 12, 2))
    if field in IPV4_FIELDS:
        return str(ipaddress.IPv4Address(value))
    if field == "ct_state":
        return ct_state_text(value)
    if field in ("metadata", "ct_label", "ct_mark", "eth_type") or field.startswith("reg"):
        return hex(value)
    return str(value)


def match_value(field: str, value: Any) -> tuple[int, int]:
    """A match's value (plain, or a (value, mask) pair, in text or ints) as
    (value, mask) ints."""
    full = (1 << WIDTHS.get(field, 64)) - 1
    if isinstance(value, (tuple, list)):
        v, m = to_int(field, value[0]), to_int(field, value[1])
        return v & m, m
    if isinstance(value, str) and field in IPV4_FIELDS and "/" in value:
        net = ipaddress.IPv4Network(value, strict=False)
        return int(net.network_address), int(net.netmask)
    return to_int(field, value), full


def parse_ct_state(text: str | int) -> int:
    """ "est", "+est+rpl", "est,rpl", "trk|new" or a number -> ct_state bits.
    Tracked (+trk) is implied: the state comes from a ct() action."""
    if isinstance(text, int):
        return text | CT_FLAGS["trk"]
    bits = CT_FLAGS["trk"]
    for part in str(text).replace("+", ",").replace("|", ",").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part not in CT_FLAGS:
            raise ValueError(f"ct state: unknown flag {part!r} (known: {', '.join(CT_FLAGS)})")
        bits |= CT_FLAGS[part]
    return bits


def ct_state_text(bits: int) -> str:
    if not bits:
        return "-trk"
    return "".join("+" + name for name, bit in CT_FLAGS.items() if bits & bit)


class Packet:
    """Mutable header fields plus the VLAN tag stack (outermost first)."""

    __slots__ = ("fields", "vlans")

    def __init__(self, fields: Optional[Mapping[str, int]] = None,
                 vlans: Iterable[int] = ()):
        self.fields: dict[str, int] = dict(fields or {})
        self.vlans: list[int] = list(vlans)

    def copy(self) -> "Packet":
        return Packet(self.fields, self.vlans)

    def has_prerequisites(self, field: str) -> bool:
        for need, allowed in PREREQUISITES.get(field, ()):
            if self.fields.get(need) not in allowed:
                return False
        return True

    def get(self, field: str) -> Optional[int]:
        """The field's value, or None when the packet has no such field."""
        if field == "vlan_vid":
            return OFPVID_PRESENT | self.vlans[0] if self.vlans else 0
        if field == "vlan_pcp":
            return self.fields.get("vlan_pcp", 0) if self.vlans else None
        if not self.has_prerequisites(field):
            return None
        value = self.fields.get(field)
        if value is None and (field in ZERO_DEFAULT):
            return 0
        return value

    def set(self, field: str, value: int) -> None:
        """Set a field; ValueError when the packet cannot have it."""
        width = field_width(field)
        value &= (1 << width) - 1
        if field == "vlan_vid":
            if not self.vlans:
                raise ValueError("set_field vlan_vid on a packet without a VLAN tag")
            self.vlans[0] = value & 0xFFF
            return
        if not self.has_prerequisites(field):
            raise ValueError(f"set_field {field} on a packet without that header")
        self.fields[field] = value

    def snapshot(self) -> dict[str, Any]:
        """The header fields as text, for a verdict or a trace line."""
        out: dict[str, Any] = {}
        for f in sorted(self.fields):
            if self.get(f) is not None and f not in ZERO_DEFAULT:
                out[f] = to_text(f, self.fields[f])
        if self.vlans:
            out["vlan"] = list(self.vlans)
        return out

    def text(self) -> str:
        return packet_text(self)

    def __repr__(self) -> str:
        return f"Packet({self.text()})"


_ORDER = ("in_port", "eth_src", "eth_dst", "vlan", "eth_type", "arp_op", "arp_sha", "arp_spa",
          "arp_tha", "arp_tpa", "ipv4_src", "ipv4_dst", "ip_proto", "nw_ttl", "tcp_src",
          "tcp_dst", "udp_src", "udp_dst", "icmpv4_type", "icmpv4_code")


def packet_text(pkt: Packet) -> str:
    snap = pkt.snapshot()
    parts = []
    for f in _ORDER:
        if f == "vlan" and "vlan" in snap:
            parts.append("vlan=" + ".".join(str(v) for v in snap["vlan"]))
        elif f in snap:
            parts.append(f"{f}={snap[f]}")
    parts += [f"{f}={v}" for f, v in snap.items() if f not in _ORDER]
    return ",".join(parts)


def make_packet(fields: Mapping[str, Any]) -> Packet:
    """A Packet from a dict of fields (text or ints). "vlan" (a VID or a
    list of VIDs, outermost first) tags it. Missing eth_type and ip_proto
    are implied by the fields given (tcp_dst -> IPv4, ip_proto 6); a field
    that contradicts another is a ValueError naming it."""
    fields = dict(fields)
    vlans: list[int] = []
    if "vlan" in fields:
        v = fields.pop("vlan")
        vlans = [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        if any(not 0 <= x <= 0xFFF for x in vlans):
            raise ValueError(f"vlan: VID out of range: {v!r}")
    if "vlan_vid" in fields:
        vid = to_int("vlan_vid", fields.pop("vlan_vid"))
        if vid & OFPVID_PRESENT:
            vlans = [vid & 0xFFF] + vlans[1:]
    for name in fields:
        if name not in WIDTHS:
            raise ValueError(f"unknown packet field {name!r}")
    ints = {name: to_int(name, value) for name, value in fields.items()}
    for name in list(ints):
        for proto, number in _PROTO_OF.items():
            if name.startswith(proto + "_"):
                _imply(ints, "ip_proto", number, name)
                _imply(ints, "eth_type", ETH_IP, name)
        if name in ("ipv4_src", "ipv4_dst", "ip_proto", "nw_ttl"):
            _imply(ints, "eth_type", ETH_IP, name)
        if name.startswith("arp_"):
            _imply(ints, "eth_type", ETH_ARP, name)
    if ints.get("eth_type") == ETH_IP:
        ints.setdefault("nw_ttl", 64)
    pkt = Packet(ints, vlans)
    for name in ints:
        if not pkt.has_prerequisites(name):
            raise ValueError(f"{name}: the packet has no such header "
                             f"(eth_type {ints.get('eth_type')}, ip_proto {ints.get('ip_proto')})")
    return pkt


def _imply(ints: dict[str, int], field: str, value: int, because: str) -> None:
    have = ints.setdefault(field, value)
    if have != value:
        raise ValueError(f"{because}: needs {field}={value:#x}, the packet has {have:#x}")


def packet_from_frame(frame: bytes, in_port: Optional[int] = None) -> Packet:
    """The fields of a real Ethernet frame (dpkt); ValueError if it is not one."""
    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.Error, ValueError, IndexError, KeyError, TypeError) as e:
        raise ValueError(f"not an Ethernet frame: {e}") from None
    tags = getattr(eth, "vlan_tags", None) or []
    # dpkt leaves the outer TPID in eth.type; a match sees the inner ethertype.
    fields: dict[str, int] = {"eth_src": int.from_bytes(eth.src, "big"),
                              "eth_dst": int.from_bytes(eth.dst, "big"),
                              "eth_type": tags[-1].type if tags else eth.type}
    if in_port is not None:
        fields["in_port"] = in_port
    vlans = [tag.id for tag in tags]
    if vlans:
        fields["vlan_pcp"] = tags[0].pri
    body = eth.data
    if isinstance(body, dpkt.arp.ARP):
        fields.update(arp_op=body.op, arp_sha=int.from_bytes(body.sha, "big"),
                      arp_spa=int.from_bytes(body.spa, "big"),
                      arp_tha=int.from_bytes(body.tha, "big"),
                      arp_tpa=int.from_bytes(body.tpa, "big"))
    elif isinstance(body, dpkt.ip.IP):
        fields.update(ipv4_src=int.from_bytes(body.src, "big"),
                      ipv4_dst=int.from_bytes(body.dst, "big"),
                      ip_proto=body.p, nw_ttl=body.ttl,
                      ip_dscp=body.tos >> 2, ip_ecn=body.tos & 3)
        l4 = body.data
        if isinstance(l4, dpkt.tcp.TCP):
            fields.update(tcp_src=l4.sport, tcp_dst=l4.dport)
        elif isinstance(l4, dpkt.udp.UDP):
            fields.update(udp_src=l4.sport, udp_dst=l4.dport)
        elif isinstance(l4, dpkt.icmp.ICMP):
            fields.update(icmpv4_type=l4.type, icmpv4_code=l4.code)
    return Packet(fields, vlans)


def match_text(match: Iterable[tuple[str, Any]]) -> str:
    """A flow match the way a person reads it (OXM names, masks as v/m)."""
    parts = []
    for field, value in match:
        if isinstance(value, (tuple, list)):
            if field == "ct_state":
                parts.append(f"ct_state={_ct_match_text(*match_value(field, value))}")
            else:
                parts.append(f"{field}={_value_text(field, value[0])}/{_value_text(field, value[1])}")
        else:
            parts.append(f"{field}={_value_text(field, value)}")
    return ",".join(parts) or "(any)"


def _value_text(field: str, value: Any) -> str:
    if isinstance(value, int) and (field in MAC_FIELDS or field in IPV4_FIELDS
                                   or field in ("metadata", "eth_type") or field.startswith("reg")):
        return to_text(field, value)
    return str(value)


def _ct_match_text(value: int, mask: int) -> str:
    return "".join(("+" if value & bit else "-") + name
                   for name, bit in CT_FLAGS.items() if mask & bit)
