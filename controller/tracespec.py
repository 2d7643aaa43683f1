"""The packet `vmflow trace` walks: ovs-ofctl-like text, filled from the sender.

parse_spec reads the common fields of ovs-ofctl's flow syntax (protocol
shorthands arp, ip, icmp, tcp, udp; dl_src, dl_dst, dl_type, nw_src,
nw_dst, nw_proto, nw_ttl, tp_src, tp_dst, icmp_type, icmp_code, arp_op,
arp_sha, arp_spa, arp_tha, arp_tpa, vlan) or OXM names (eth_dst, ipv4_dst,
tcp_dst, ...) into packet fields. fill_packet completes them from the
sending port and the store: its MAC and IP as the source, the MAC of the
port owning nw_dst in the same network as the destination, broadcast or
multicast MACs for such addresses, an ARP request's broadcast destination,
ICMP echo, an ephemeral source port.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Optional

from apps.addresses import fixed_ipv4s, own_ipv4s, pair_ipv4s
from controller.packetfields import ETH_ARP, ETH_IP, make_packet
from topology.view import TopologyView

BROADCAST = "ff:ff:ff:ff:ff:ff"

_SHORTHANDS = {"ip": (ETH_IP, None), "icmp": (ETH_IP, 1), "tcp": (ETH_IP, 6),
               "udp": (ETH_IP, 17), "arp": (ETH_ARP, None)}
_L4_PREFIX = {6: "tcp", 17: "udp"}
_ALIASES = {"dl_src": "eth_src", "dl_dst": "eth_dst", "dl_type": "eth_type",
            "dl_vlan": "vlan", "ip_src": "nw_src", "ip_dst": "nw_dst",
            "icmp_type": "icmpv4_type", "icmp_code": "icmpv4_code", "ttl": "nw_ttl"}


def parse_spec(text: str) -> dict[str, Any]:
    """ovs-ofctl-like flow text -> packet fields (OXM names). ValueError
    naming the part it cannot read."""
    tokens = [t.strip() for t in re.split(r"[,\s]+", text or "") if t.strip()]
    fields: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for tok in tokens:
        if "=" not in tok:
            if tok not in _SHORTHANDS:
                raise ValueError(f"unknown protocol {tok!r} (known: {', '.join(_SHORTHANDS)})")
            eth_type, proto = _SHORTHANDS[tok]
            _put(fields, "eth_type", eth_type, tok)
            if proto is not None:
                _put(fields, "ip_proto", proto, tok)
            continue
        key, _, value = tok.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if not value:
            raise ValueError(f"{key}: no value")
        rest.append((key, value.strip()))
    for key, value in rest:
        if key == "eth_type":
            _put(fields, "eth_type", int(value, 0), key)
    for key, value in rest:
        if key == "eth_type":
            continue
        if key == "in_port":
            raise ValueError("in_port: the port is given by --from")
        if key == "vlan":
            fields["vlan"] = int(value, 0)
        elif key in ("nw_src", "nw_dst"):
            arp = fields.get("eth_type") == ETH_ARP
            name = ("arp_spa" if key == "nw_src" else "arp_tpa") if arp else \
                ("ipv4_src" if key == "nw_src" else "ipv4_dst")
            fields[name] = value
        elif key == "nw_proto":
            if fields.get("eth_type") == ETH_ARP:
                fields["arp_op"] = int(value, 0)
            else:
                _put(fields, "ip_proto", int(value, 0), key)
        elif key in ("tp_src", "tp_dst"):
            prefix = _L4_PREFIX.get(fields.get("ip_proto"))
            if prefix is None:
                raise ValueError(f"{key}: needs tcp or udp")
            fields[f"{prefix}_{key[3:]}"] = int(value, 0)
        else:
            fields[key] = value
    for prefix, number in (("tcp_", 6), ("udp_", 17), ("icmpv4_", 1)):
        for key in [k for k in fields if k.startswith(prefix)]:
            _put(fields, "ip_proto", number, key)
    if "ip_proto" in fields or any(k.startswith(("ipv4_", "tcp_", "udp_", "icmpv4_"))
                                   for k in fields):
        fields.setdefault("eth_type", ETH_IP)
    if any(k.startswith("arp_") for k in fields):
        fields.setdefault("eth_type", ETH_ARP)
    make_packet(fields)   # the field names and values are checked here
    return fields


def _put(fields: dict, name: str, value: int, because: str) -> None:
    have = fields.setdefault(name, value)
    if have != value:
        raise ValueError(f"{because}: contradicts {name}={have:#x}")


def fill_packet(fields: dict[str, Any], in_port: int, port: Optional[dict],
                view: TopologyView) -> dict[str, Any]:
    """The traced packet with what the user left out taken from the sending
    port (None: an uplink) and the destination's port in the sender's
    network, so that the walk means something. ValueError says what is
    missing."""
    out = dict(fields)
    out["in_port"] = in_port
    out.setdefault("eth_type", ETH_IP)
    if port is not None:
        out.setdefault("eth_src", port["mac_address"])
    elif "eth_src" not in out:
        raise ValueError("a packet from an uplink needs dl_src")
    network = port["network_id"] if port is not None else None
    own_ip = (own_ipv4s(port) or [None])[0] if port is not None else None

    def mac_of(ip: str) -> Optional[str]:
        return _mac_owning(view, network, ip) if network else None

    if out["eth_type"] == ETH_ARP:
        out.setdefault("arp_op", 1)
        out.setdefault("arp_sha", out["eth_src"])
        if own_ip:
            out.setdefault("arp_spa", own_ip)
        if "arp_spa" not in out or "arp_tpa" not in out:
            raise ValueError("an ARP packet needs nw_src and nw_dst (arp_spa/arp_tpa)")
        if int(out["arp_op"]) == 1:
            out.setdefault("arp_tha", "00:00:00:00:00:00")
            out.setdefault("eth_dst", BROADCAST)
        else:
            dst = out.get("eth_dst") or mac_of(str(out["arp_tpa"]))
            if dst is None:
                raise ValueError(f"ARP reply to {out['arp_tpa']}: no port of the network has "
                                 "that address; give dl_dst")
            out.setdefault("eth_dst", dst)
            out.setdefault("arp_tha", dst)
    elif out["eth_type"] == ETH_IP:
        if own_ip:
            out.setdefault("ipv4_src", own_ip)
        if "ipv4_src" not in out:
            raise ValueError("an IP packet needs nw_src (the port has no IPv4 address)")
        if "ipv4_dst" not in out:
            if "eth_dst" not in out:
                raise ValueError("an IP packet needs nw_dst or dl_dst")
            out["ipv4_dst"] = _ip_owning(view, network, str(out["eth_dst"])) or "0.0.0.0"
        if "eth_dst" not in out:
            dst = str(out["ipv4_dst"])
            try:
                addr = ipaddress.IPv4Address(dst)
            except ValueError:
                raise ValueError(f"nw_dst {dst}: not an IPv4 address") from None
            if dst == "255.255.255.255" or _is_subnet_broadcast(view, network, dst):
                out["eth_dst"] = BROADCAST
            elif addr.is_multicast:
                # RFC 1112: the low 23 bits of the group under 01:00:5e.
                low = int(addr) & 0x7FFFFF
                out["eth_dst"] = "01:00:5e:%02x:%02x:%02x" % (low >> 16, (low >> 8) & 0xFF,
                                                               low & 0xFF)
            else:
                mac = mac_of(dst)
                if mac is None:
                    raise ValueError(f"nw_dst {dst}: no port of the sender's network has that "
                                     "address; give dl_dst")
                out["eth_dst"] = mac
        proto = out.get("ip_proto")
        if proto == 6:
            out.setdefault("tcp_src", 32768)
            out.setdefault("tcp_dst", 0)
        elif proto == 17:
            out.setdefault("udp_src", 32768)
            out.setdefault("udp_dst", 0)
        elif proto == 1:
            out.setdefault("icmpv4_type", 8)
            out.setdefault("icmpv4_code", 0)
    elif "eth_dst" not in out:
        raise ValueError("give dl_dst")
    return out


def _mac_owning(view: TopologyView, network: str, ip: str) -> Optional[str]:
    ports = sorted(view.ports_by_network.get(network, {}).values(),
                   key=lambda p: (p.get("_key") or 0, p["id"]))
    for p in ports:
        if ip in fixed_ipv4s(p):
            return p["mac_address"]
    for p in ports:
        for pair, addr in pair_ipv4s(p):
            if addr == ip:
                return pair.get("mac_address") or p["mac_address"]
    return None


def _ip_owning(view: TopologyView, network: Optional[str], mac: str) -> Optional[str]:
    for p in view.ports_by_network.get(network, {}).values() if network else ():
        if p.get("mac_address", "").lower() == mac.lower():
            return (fixed_ipv4s(p) or [None])[0]
    return None


def _is_subnet_broadcast(view: TopologyView, network: Optional[str], ip: str) -> bool:
    for s in view.subnets_by_network.get(network, {}).values() if network else ():
        try:
            net = ipaddress.ip_network(s.get("cidr", ""), strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.prefixlen < 31 and str(net.broadcast_address) == ip:
            return True
    return False
