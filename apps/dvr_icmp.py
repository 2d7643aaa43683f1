"""ICMP time-exceeded for a routed packet whose TTL would expire (RFC 792, RFC 1812).

The routing stage sends IPv4 for a router interface's MAC with TTL 0 or 1
to the controller (apps/dvr.py); `parse` checks the frame and says whether a
router may answer it at all, `reply` builds the answer: ICMP type 11 code 0
from the gateway address and MAC, quoting the original IP header and the
first 8 bytes of its payload, back to the sender.

RFC 1812 4.3.2.7 lists what never gets an ICMP error, so one error can never
cause another and a broadcast cannot make every router answer: an ICMP
error itself, a fragment other than the first, a packet whose source is not
one host (0.0.0.0, loopback, multicast, broadcast, class E), a packet to a
multicast or broadcast address or sent as a link-layer broadcast.

Pure functions of bytes; dpkt parses the Ethernet header and builds the
reply, the IP header is read from the raw bytes so that the quote is
exactly what the sender sent.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional

import dpkt

ETH_TYPE_IP = 0x0800
ETH_HEADER = 14
IPPROTO_ICMP = 1
ICMP_TIME_EXCEEDED = 11
ICMP_TTL_EXCEEDED_IN_TRANSIT = 0
# ICMP error messages (RFC 1812 4.3.2.7 and RFC 792): unreachable, source
# quench, redirect, time exceeded, parameter problem.
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
QUOTED_PAYLOAD = 8          # RFC 792: the internet header + 64 bits of data
REPLY_TTL = 64


@dataclass(frozen=True)
class Expired:
    """An IPv4 packet a router would have to drop for its TTL."""
    eth_src: bytes
    eth_dst: bytes
    ip_src: str
    ip_dst: str
    ttl: int
    quote: bytes             # the original IP header + up to 8 bytes of payload


def parse(frame: bytes) -> tuple[Optional[Expired], str]:
    """(the expired packet or None, outcome). The outcome is what the caller
    counts: "expired" (answer it), "malformed", "ttl_not_expired",
    "icmp_error", "fragment", "bad_source", "bad_destination". Never raises."""
    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.Error, ValueError, IndexError, KeyError, TypeError, struct.error):
        return None, "malformed"
    if eth.type != ETH_TYPE_IP or getattr(eth, "vlan_tags", None):
        return None, "malformed"
    raw = frame[ETH_HEADER:]
    if len(raw) < 20:
        return None, "malformed"
    ver_ihl, _tos, total, _id, off, ttl, proto = struct.unpack_from("!BBHHHBB", raw)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or total < ihl or len(raw) < ihl:
        return None, "malformed"
    if ttl > 1:
        return None, "ttl_not_expired"
    src = ipaddress.IPv4Address(raw[12:16])
    dst = ipaddress.IPv4Address(raw[16:20])
    if off & 0x1FFF:
        return None, "fragment"
    payload = raw[ihl:min(total, len(raw))]
    if proto == IPPROTO_ICMP and (not payload or payload[0] in ICMP_ERROR_TYPES):
        return None, "icmp_error"
    if (src.is_unspecified or src.is_loopback or src.is_multicast or src.is_reserved
            or src == ipaddress.IPv4Address("255.255.255.255")):
        return None, "bad_source"
    if dst.is_multicast or dst == ipaddress.IPv4Address("255.255.255.255") \
            or eth.dst == b"\xff" * 6 or eth.dst[0] & 1:
        return None, "bad_destination"
    quote = raw[:ihl] + payload[:QUOTED_PAYLOAD]
    return Expired(bytes(eth.src), bytes(eth.dst), str(src), str(dst), ttl, quote), "expired"


def reply(expired: Expired, gateway_mac: bytes, gateway_ip: str) -> bytes:
    """The time-exceeded frame from the gateway back to the sender."""
    icmp = dpkt.icmp.ICMP(type=ICMP_TIME_EXCEEDED, code=ICMP_TTL_EXCEEDED_IN_TRANSIT,
                          data=dpkt.icmp.ICMP.TimeExceed(data=expired.quote))
    ip = dpkt.ip.IP(src=ipaddress.IPv4Address(gateway_ip).packed,
                    dst=ipaddress.IPv4Address(expired.ip_src).packed,
                    p=IPPROTO_ICMP, ttl=REPLY_TTL, data=icmp)
    eth = dpkt.ethernet.Ethernet(dst=expired.eth_src, src=gateway_mac, type=ETH_TYPE_IP,
                                 data=ip)
    return bytes(eth)
